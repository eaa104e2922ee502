"""Hyperparameter tuning: .hyper files, the shipped spaces, results on disk, resume, Ray, CLI errors."""
import csv
import glob
import os
import subprocess
import sys

import pytest

from recbole_linear import paths
from recbole_linear.workflow.tune import space as hyper_space
from recbole_linear.workflow.tune import store as tune_store
from recbole_linear.workflow.tune import command as tuning
from recbole_linear.config import create_config, read_yaml
from recbole_linear.errors import ConfigError
from recbole_linear.quick_start import objective_function
from tests.conftest import ROOT, TINY_DATASET

SCRIPT = os.path.join(ROOT, "run_recbole_linear.py")
SHIPPED_MODELS = ["LRURec", "LinRec", "GLINTRU", "SASRec", "GRU4Rec", "BERT4Rec"]


class CountingObjective:
    """The plugin's objective, counting its calls; raises KeyboardInterrupt at call ``interrupt_at``."""

    def __init__(self, interrupt_at=None):
        self.calls = []
        self.results = []
        self.interrupt_at = interrupt_at

    def __call__(self, config_dict, config_file_list):
        self.calls.append((dict(config_dict), list(config_file_list or [])))
        if self.interrupt_at is not None and len(self.calls) == self.interrupt_at:
            raise KeyboardInterrupt
        result = objective_function(config_dict, config_file_list)
        self.results.append(result)
        return result


def write_hyper(folder, text, name="space.hyper"):
    path = os.path.join(str(folder), name)
    with open(path, "w") as f:
        f.write(text)
    return path


def read_trials(output_dir):
    with open(os.path.join(str(output_dir), "trials.csv"), newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def tiny_fixed(tiny_run_dict):
    return dict(tiny_run_dict, dataset=TINY_DATASET)


# --- the .hyper format ------------------------------------------------------------------
def test_params_file_reads_recbole_format_with_all_four_types(tmp_path):
    path = write_hyper(tmp_path, "# a comment\n\nlearning_rate loguniform -9.21,-4.61\n"
                                 "dropout_prob uniform 0.1 0.5\nhidden_size quniform 32,128,32\n"
                                 "mlp choice ['[64,64]', '[128]']\nweight_decay choice [0, 1e-6, 1e-4]\n")
    specs = {spec.name: spec for spec in hyper_space.read_params_file(path)}
    assert [s.kind for s in specs.values()] == ["loguniform", "uniform", "quniform", "choice", "choice"]
    assert specs["learning_rate"].args == (-9.21, -4.61)
    assert specs["dropout_prob"].args == (0.1, 0.5)  # space-separated bounds are accepted too
    assert specs["mlp"].args == ("[64,64]", "[128]")
    assert specs["weight_decay"].args == (0, 1e-6, 1e-4)
    # quniform over integers gives integers (hyperopt gives 64.0, which hidden_size cannot take)
    assert specs["hidden_size"].normalize(64.0) == 64 and isinstance(specs["hidden_size"].normalize(64.0), int)
    assert specs["dropout_prob"].normalize(0.25) == 0.25


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("learning_rate choice\n", "expected '<name> choice"),
        ("learning_rate choice [0.001, 0.01\n", "cannot parse the value list"),
        ("learning_rate choice 0.001\n", "needs a non-empty list"),
        ("learning_rate choice []\n", "needs a non-empty list"),
        ("learning_rate choice [0.1, 0.1]\n", "repeats a value"),
        ("learning_rate normal 0,1\n", "unknown type 'normal'"),
        ("learning_rate uniform 0.1\n", "'uniform' needs 2 numbers"),
        ("learning_rate uniform a,b\n", "'uniform' needs 2 numbers"),
        ("learning_rate uniform 0.5,0.1\n", "low < high"),
        ("hidden_size quniform 16,64,0\n", "positive step"),
        ("hidden_size quniform 16,64\n", "'quniform' needs 3 numbers"),
        ("1st choice [1]\n", "not a config key name"),
        ("valid_score choice [1]\n", "cannot be tuned"),
        ("epochs choice [1]\nepochs choice [2]\n", "defined twice"),
        ("# only a comment\n\n", "defines no parameter"),
    ],
)
def test_malformed_params_file_is_one_clear_error(tmp_path, text, fragment):
    path = write_hyper(tmp_path, text)
    with pytest.raises(hyper_space.ParamsFileError) as error:
        hyper_space.read_params_file(path)
    message = str(error.value)
    assert fragment in message and "\n" not in message
    if "line" in message:
        assert f"params file '{path}'" in message


def test_default_params_file_is_the_models_hyper_file():
    assert hyper_space.resolve_params_file("GLINT-RU") == paths.hyper_file("GLINTRU")
    assert hyper_space.resolve_params_file("LRURec").endswith(os.path.join("properties", "hyper", "LRURec.hyper"))
    with pytest.raises(hyper_space.ParamsFileError, match="no search space for model 'Caser'"):
        hyper_space.resolve_params_file("Caser")


# --- the shipped search spaces ---------------------------------------------------------
def test_shipped_spaces_match_recbole_parser_and_the_paper_grid():
    from recbole.trainer.hyper_tuning import HyperTuning, _spacesize

    for model in SHIPPED_MODELS:
        path = paths.hyper_file(model)
        specs = hyper_space.read_params_file(path)
        recbole_space = HyperTuning._build_space_from_file(path)  # RecBole reads the same file
        assert list(recbole_space) == [spec.name for spec in specs]
        assert all(spec.kind == "choice" for spec in specs)  # exhaustive-searchable
        grid = 1
        for spec in specs:
            grid *= len(spec.args)
        assert grid == _spacesize(recbole_space) == 48, model  # the same budget for every model
        assert {s.name: s.args for s in specs}["learning_rate"] == (0.0005, 0.001, 0.005)
    lrurec = {s.name: s.args for s in hyper_space.read_params_file(paths.hyper_file("LRURec"))}
    assert lrurec["weight_decay"] == (0, 1e-6, 1e-4, 1e-2)
    assert lrurec["dropout_prob"] == (0.2, 0.4, 0.6, 0.8)
    assert hyper_space.tied_keys("LRURec", hyper_space.read_params_file(paths.hyper_file("LRURec"))) == {
        "lru_dropout_prob": "dropout_prob"}
    glintru_ties = hyper_space.tied_keys("GLINTRU", hyper_space.read_params_file(paths.hyper_file("GLINTRU")))
    assert glintru_ties["embedding_size"] == "hidden_size"


@pytest.mark.parametrize("model", SHIPPED_MODELS)
def test_shipped_space_is_valid_for_its_model(model, tiny_fixed, tmp_path):
    # prepare() checks every key against the model's config and every value in a full config
    run = tuning.prepare(model, TINY_DATASET, config_dict=tiny_fixed, output_dir=str(tmp_path / "out"))
    assert run.grid_size == 48 and run.max_evals == 48
    assert set(run.ties) <= set(create_config(model, TINY_DATASET, config_dict=tiny_fixed).final_config_dict)
    point = {spec.name: spec.args[-1] for spec in run.specs}
    params = run.effective_params(point)
    for tied, source in run.ties.items():
        assert params[tied] == params[source]


# --- validation before training --------------------------------------------------------
def _never_called(config_dict, config_file_list):
    raise AssertionError("a trial trained although the input was invalid")


@pytest.mark.parametrize(
    "space, options, fragment",
    [
        ("learning_rate choice [0.001, 0.01]\n", {"algo": "grid"}, "unknown algorithm 'grid'"),
        ("learning_rate choice [0.001, 0.01]\n", {"tool": "slurm"}, "unknown tool 'slurm'"),
        ("learning_rate choice [0.001, 0.01]\n", {"tool": "ray", "algo": "bayes"}, "--tool=ray runs"),
        ("learning_rate choice [0.001, 0.01]\n", {"max_evals": 0}, "--max_evals"),
        ("learning_rate uniform 0.001,0.01\n", {"algo": "exhaustive"}, "exhaustive search needs every parameter"),
        ("learnig_rate choice [0.001, 0.01]\n", {}, "'learnig_rate' (params file line 1) is not a config key"),
        ("dropout_prob choice [0.2, 1.5]\n", {}, "invalid value for 'dropout_prob'"),
        ("learning_rate choice [0.01, 0]\n", {}, "invalid value for 'learning_rate'"),
        ("hidden_size quniform 0,64,16\n", {"algo": "random"}, "invalid value for 'hidden_size'"),
        ("eval_step choice [1, 0]\n", {}, "tune selects each run's checkpoint by validation"),
        ("epochs choice [1, 2]\n", {"config_dict": {"eval_step": 2}}, "(got eval_step=2, epochs=1)"),
    ],
)
def test_bad_search_is_rejected_before_any_training(space, options, fragment, tiny_fixed, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fixed = dict(tiny_fixed, **options.pop("config_dict", {}))
    with pytest.raises(ConfigError) as error:
        tuning.tune("LRURec", TINY_DATASET, params_file=write_hyper(tmp_path, space), config_dict=fixed,
                    output_dir=str(tmp_path / "out"), objective=_never_called, **options)
    assert fragment in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()


# --- trials on disk ---------------------------------------------------------------------
def _record(lr, score):
    return {"params": {"learning_rate": lr}, "valid_score": score, "best_valid_result": {"mrr@10": score},
            "test_result": {"mrr@10": score / 2}, "num_parameters": 10, "epochs_trained": 1, "seconds": 0.5,
            "checkpoint": None, "finished_at": "2026-01-01T00:00:00"}


def test_store_keeps_finished_trials_and_drops_a_torn_last_line(tmp_path):
    path = str(tmp_path / "trials.csv")
    store = tune_store.TrialStore(path).load()
    store.add(_record(0.001, 0.25))
    store.add(_record(0.01, 0.5))
    with open(path, "a") as f:
        f.write('3,0.1,0.75,0.75,0.3,10,1,0.5,,2026-01-01T00:00:00,"{""learning_')  # killed mid-write
    reloaded = tune_store.TrialStore(path).load()
    assert [r["params"] for r in reloaded.records] == [{"learning_rate": 0.001}, {"learning_rate": 0.01}]
    assert reloaded.get(hyper_space.trial_key({"learning_rate": 0.01}))["test_result"] == {"mrr@10": 0.25}
    with open(path) as f:
        text = f.read()
    assert text.endswith("\n") and "learning_\n" not in text and len(read_trials(tmp_path)) == 2
    # a file written before the train_seconds column still loads, the value unknown
    with open(path) as f:
        rows = list(csv.DictReader(f))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[c for c in rows[0] if c != "train_seconds"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    reloaded = tune_store.TrialStore(path).load()
    assert [r["train_seconds"] for r in reloaded.records] == [None, None] and len(reloaded) == 2
    # a new parameter column rewrites the header, old rows get empty cells
    reloaded.add(dict(_record(0.1, 0.1), params={"learning_rate": 0.1, "dropout_prob": 0.2}))
    rows = read_trials(tmp_path)
    assert [row["dropout_prob"] for row in rows] == ["", "", "0.2"] and rows[2]["trial"] == "3"


def test_exhaustive_grid_results_and_rerun_trains_nothing(tiny_fixed, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    space = write_hyper(tmp_path, "learning_rate choice [0.001, 0.01]\n")
    output_dir = tmp_path / "out"
    objective = CountingObjective()
    summary = tuning.tune("LRURec", TINY_DATASET, params_file=space, config_dict=tiny_fixed, algo="exhaustive",
                          output_dir=str(output_dir), objective=objective)

    # every grid point trained once, with the fixed settings as RecBole's fixed_config_file_list
    fixed_file = str(output_dir / "fixed_config.yaml")
    assert sorted(c["learning_rate"] for c, _ in objective.calls) == [0.001, 0.01]
    assert all(files == [fixed_file] for _, files in objective.calls)
    assert len({c["saved_model_file"] for c, _ in objective.calls}) == 2
    assert read_yaml(fixed_file)["epochs"] == 1 and read_yaml(fixed_file)["model"] == "LRURec"

    # trials.csv: exactly those trials, with the objective's own scores
    rows = read_trials(output_dir)
    assert sorted(float(r["learning_rate"]) for r in rows) == [0.001, 0.01]
    for (config, _), result in zip(objective.calls, objective.results):
        row = next(r for r in rows if float(r["learning_rate"]) == config["learning_rate"])
        assert float(row["valid_score"]) == result["best_valid_score"]
        assert float(row["test_mrr@10"]) == result["test_result"]["mrr@10"]
        assert float(row["valid_ndcg@10"]) == result["best_valid_result"]["ndcg@10"]
        # stored relative to the folder (it can move), read back as a full path
        assert not os.path.isabs(row["checkpoint"]) and os.path.isfile(output_dir / row["checkpoint"])
    assert all(os.path.isabs(r["checkpoint"]) and os.path.isfile(r["checkpoint"])
               for r in tune_store.TrialStore(str(output_dir / "trials.csv")).load().records)

    # best_params.yaml: the best row's values, loadable as a config file
    best_row = max(rows, key=lambda r: float(r["valid_score"]))  # mrr@10: bigger is better
    best_file = str(output_dir / "best_params.yaml")
    assert read_yaml(best_file) == {"learning_rate": float(best_row["learning_rate"])}
    config = create_config("LRURec", TINY_DATASET, [best_file], tiny_fixed)  # tiny_fixed has no learning_rate
    assert config["learning_rate"] == float(best_row["learning_rate"])
    assert summary["best_params"] == {"learning_rate": float(best_row["learning_rate"])}

    # trials.md sorted by the validation metric; the HTML chart holds both scores
    md_rows = [line for line in (output_dir / "trials.md").read_text().splitlines() if line.startswith("| 1 ")
               or line.startswith("| 2 ")]
    md_scores = [float(line.split("|")[4]) for line in md_rows]
    assert md_scores == sorted((float(r["valid_score"]) for r in rows), reverse=True)
    html = (output_dir / "tuning.html").read_text()
    assert "plotly" in html and all(r["valid_score"] in html for r in rows)
    log = (output_dir / "tune.log").read_text()
    assert log.count("trial 1/2") == 1 and log.count("trial 2/2") == 1 and "time:" in log

    # a rerun into the same folder serves both trials from trials.csv: nothing trains
    csv_before = (output_dir / "trials.csv").read_text()
    rerun = CountingObjective()
    summary = tuning.tune("LRURec", TINY_DATASET, params_file=space, config_dict=tiny_fixed, algo="exhaustive",
                          output_dir=str(output_dir), objective=rerun)
    assert rerun.calls == [] and summary["trained"] == 0 and summary["skipped"] == 2
    assert (output_dir / "trials.csv").read_text() == csv_before
    assert (output_dir / "tune.log").read_text().count("skipped (stored as trial") == 2

    # other fixed settings cannot reuse the folder
    with pytest.raises(ConfigError, match=r"other fixed settings \(epochs: 1 -> 2\)"):
        tuning.tune("LRURec", TINY_DATASET, params_file=space, config_dict=dict(tiny_fixed, epochs=2),
                    output_dir=str(output_dir), objective=_never_called)


def test_interrupted_random_search_resumes_with_the_same_points(tiny_fixed, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # a continuous parameter: every point is new, so only seeding can make a rerun find them again
    space = write_hyper(tmp_path, "learning_rate loguniform -7,-4\ndropout_prob choice [0.2, 0.4]\n")
    output_dir = str(tmp_path / "out")
    options = dict(params_file=space, config_dict=tiny_fixed, algo="random", max_evals=2, output_dir=output_dir)

    interrupted = CountingObjective(interrupt_at=2)
    with pytest.raises(KeyboardInterrupt):
        tuning.tune("LRURec", TINY_DATASET, objective=interrupted, **options)
    first_row = read_trials(output_dir)
    assert len(first_row) == 1  # the finished trial stays on disk

    resumed = CountingObjective()
    summary = tuning.tune("LRURec", TINY_DATASET, objective=resumed, **options)
    assert summary["skipped"] == 1 and summary["trained"] == 1
    # the rerun trained exactly the point the interrupted run was training
    assert len(resumed.calls) == 1
    tuned = ("learning_rate", "dropout_prob", "lru_dropout_prob")
    assert {k: resumed.calls[0][0][k] for k in tuned} == {k: interrupted.calls[1][0][k] for k in tuned}
    rows = read_trials(output_dir)
    assert len(rows) == 2 and rows[0] == first_row[0]
    assert rows[0]["learning_rate"] != rows[1]["learning_rate"]
    # LRURec's paper tunes one dropout: lru_dropout_prob is tied to dropout_prob in every trial
    assert all(row["lru_dropout_prob"] == row["dropout_prob"] for row in rows)
    best_file = os.path.join(output_dir, "best_params.yaml")
    best = read_yaml(best_file)
    assert set(best) == set(tuned) and best["lru_dropout_prob"] == best["dropout_prob"]
    config = create_config("LRURec", TINY_DATASET, [best_file], tiny_fixed)
    assert {k: config[k] for k in tuned} == best
    assert best == max(summary["trials"], key=lambda r: r["valid_score"])["params"]


def test_trial_cut_off_mid_training_continues_from_its_last_epoch(tiny_fixed, tmp_path, monkeypatch):
    """A trial killed after an epoch leaves its resume file; the rerun of the tuning continues it
    from there (not from epoch 0) and removes the file once the trial is tested."""
    from recbole_linear import resume

    monkeypatch.chdir(tmp_path)
    space = write_hyper(tmp_path, "learning_rate choice [0.001]\n")
    output_dir = str(tmp_path / "out")
    options = dict(params_file=space, config_dict=dict(tiny_fixed, epochs=2, eval_step=1), output_dir=output_dir)
    original_save = resume.save

    def save_then_stop(trainer, epoch_idx, *rest):
        original_save(trainer, epoch_idx, *rest)
        raise KeyboardInterrupt

    monkeypatch.setattr(resume, "save", save_then_stop)
    cut_off = CountingObjective()
    with pytest.raises(KeyboardInterrupt):
        tuning.tune("LRURec", TINY_DATASET, objective=cut_off, **options)
    resume_file = cut_off.calls[0][0]["resume_file"]
    assert resume_file == resume.resume_file_for(cut_off.calls[0][0]["saved_model_file"])
    assert os.path.isfile(resume_file) and not os.path.exists(os.path.join(output_dir, "trials.csv"))

    monkeypatch.setattr(resume, "save", original_save)
    restored_epochs = []
    original_restore = resume.restore

    def recording_restore(trainer, state, train_data):
        restored_epochs.append(state["epoch"])
        original_restore(trainer, state, train_data)

    monkeypatch.setattr(resume, "restore", recording_restore)
    rerun = CountingObjective()
    summary = tuning.tune("LRURec", TINY_DATASET, objective=rerun, **options)
    assert restored_epochs == [0] and summary["trained"] == 1
    assert rerun.results[0]["epochs_trained"] == 2  # epoch 0 from the file, epoch 1 trained now
    assert not os.path.exists(resume_file)
    rows = read_trials(output_dir)
    assert len(rows) == 1
    # train_seconds spans both processes' epochs; seconds is the rerun's wall-clock only
    epoch_seconds = rerun.results[0]["epoch_train_seconds"]
    assert len(epoch_seconds) == 2 and all(t > 0 for t in epoch_seconds)
    assert float(rows[0]["train_seconds"]) == pytest.approx(sum(epoch_seconds), abs=1e-3)


# --- Ray ---------------------------------------------------------------------------------
def tiny_args(data_path):
    return [
        f"--dataset={TINY_DATASET}",
        f"--data_path={data_path}",
        "--load_col={'inter': ['user_id', 'item_id', 'timestamp']}",
        "--epochs=1",
        "--hidden_size=32",
        "--n_layers=1",
        "--MAX_ITEM_LIST_LENGTH=20",
        "--train_batch_size=64",
        "--eval_batch_size=64",
        "--show_progress=False",
    ]


def run_cli(args, cwd, timeout=600):
    return subprocess.run([sys.executable, SCRIPT, "tune", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_ray_runs_the_grid_and_its_trials_serve_a_local_rerun(tiny_data_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    space = write_hyper(tmp_path, "learning_rate choice [0.001, 0.01]\n")
    args = ["--model=LRURec", f"--params_file={space}", "--tool=ray", "--algo=exhaustive", "--cpus_per_trial=1",
            "--output_dir=out", *tiny_args(tiny_data_path)]
    result = run_cli(args, cwd=tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]

    rows = read_trials(tmp_path / "out")
    assert sorted(float(r["learning_rate"]) for r in rows) == [0.001, 0.01]
    best_row = max(rows, key=lambda r: float(r["valid_score"]))
    assert read_yaml(str(tmp_path / "out" / "best_params.yaml")) == {"learning_rate": float(best_row["learning_rate"])}
    assert (tmp_path / "out" / "trials.md").is_file() and (tmp_path / "out" / "tuning.html").is_file()
    # Ray's own files stay in the results folder: one folder per trial, RecBole's checkpoint inside
    trial_dirs = glob.glob(str(tmp_path / "out" / "ray" / "LRURec-*" / "trial_*"))
    assert len(trial_dirs) == 2
    for row in rows:
        assert row["checkpoint"].startswith("ray" + os.sep) and os.path.isfile(tmp_path / "out" / row["checkpoint"])

    # the same trials on the local tool: both served from trials.csv, nothing trains
    rerun = CountingObjective()
    summary = tuning.tune("LRURec", TINY_DATASET, params_file=space, cmd_args=tiny_args(tiny_data_path),
                          algo="exhaustive", output_dir="out", objective=rerun)
    assert rerun.calls == [] and summary["skipped"] == 2 and summary["trained"] == 0


# --- the command line ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "space, options, fragments",
    [
        (None, ["--params_file=missing.hyper"], ["params file 'missing.hyper' not found"]),
        ("learning_rate between 0.001 0.01\n", [], ["line 1", "unknown type 'between'"]),
        ("learning_rate choice [0.001, 0.01\n", [], ["line 1", "cannot parse the value list"]),
        ("learning_rate choice [0.001, 0.01]\n", ["--algo=grid"], ["unknown algorithm 'grid'", "exhaustive"]),
        ("learning_rate choice [0.001, 0.01]\n", ["--tool=ray", "--algo=bayes"], ["--tool=ray runs"]),
    ],
)
def test_cli_errors_are_one_line_with_exit_2(space, options, fragments, tiny_data_path, tmp_path):
    args = ["--model=LRURec", *tiny_args(tiny_data_path), *options]
    if space is not None:
        args.append(f"--params_file={write_hyper(tmp_path, space)}")
    result = run_cli(args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert not (tmp_path / "hyper_results").exists()


def test_tuning_log_writes_no_colour_codes_where_stderr_is_not_a_terminal(tmp_path, capsys):
    """stderr redirected to a file or a pipe (as here): plain lines, RecBole's set_color codes removed too."""
    from recbole.utils import set_color

    with tuning._TuneLogging(str(tmp_path)) as logger:
        logger.info(set_color("best of 1 trials", "yellow") + ": done")
        logger.warning("a warning")
    err = capsys.readouterr().err
    assert "\x1b" not in err, repr(err)
    assert err.splitlines()[0].endswith("INFO  best of 1 trials: done") and "WARNING  a warning" in err
