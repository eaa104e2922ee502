"""``compare``: runs.csv, summaries, per-user NDCG@10, resuming, failures, per-model overrides.

One comparison on the tiny dataset (SASRec and GRU4Rec × 2 seeds × 1 epoch, plus a model name that
does not exist) is shared by the end-to-end tests; the summary table (``report``: means, marks,
significance test) and its Markdown and LaTeX (``summary``) are checked on synthetic numbers.
"""
import contextlib
import csv
import io
import json
import os
import re
import socket
import subprocess
import sys

import numpy as np
import pytest
import yaml
from scipy.stats import wilcoxon

from recbole_linear.workflow.compare import command as compare
from recbole_linear.workflow.compare import runner as compare_runner
from recbole_linear.workflow.compare import report
from recbole_linear.workflow.compare import summary
from recbole_linear.config import create_config
from recbole_linear.errors import ConfigError
from tests.conftest import TINY_DATASET, tiny_cmd_args

SEEDS = (2020, 2021)
MODELS = ("SASRec", "GRU4Rec")
SASREC_LR = 0.0123  # SASRec's --model_config
SHARED_LR = 0.002  # the command line, for every model


def tiny_overrides(data_path, checkpoint_dir):
    # metric_decimal_place: RecBole rounds metrics; keep enough digits for exact checks
    return tiny_cmd_args(data_path, checkpoint_dir=checkpoint_dir, metric_decimal_place=10)


def run_compare(argv, cwd):
    """``cli_main`` in ``cwd``; (exit status, printed output)."""
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(printed):
        mp.chdir(cwd)
        status = compare.cli_main(argv)
    return status, printed.getvalue()


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def comparison(tiny_data_path, tmp_path_factory):
    folder = tmp_path_factory.mktemp("compare")
    (folder / "sasrec.yaml").write_text(f"learning_rate: {SASREC_LR}\n")
    # an activation RecBole's FeedForward lacks: the run fails when BERT4Rec is built (no up-front check knows it)
    (folder / "bert4rec.yaml").write_text("hidden_act: nope\n")
    argv = [
        f"--models={','.join(MODELS)},BERT4Rec",
        f"--seeds={','.join(map(str, SEEDS))}",
        f"--dataset={TINY_DATASET}",
        *tiny_overrides(tiny_data_path, folder / "checkpoints"),
        f"--learning_rate={SHARED_LR}",
        "--model_config",
        "SASRec=sasrec.yaml",
        "--model_config",
        "BERT4Rec=bert4rec.yaml",
    ]
    status, output = run_compare(argv, folder)
    out = folder / "saved" / "compare" / TINY_DATASET  # the default output folder: not the tracked results/
    return {"folder": folder, "out": out, "argv": argv, "status": status, "output": output}


def ok_rows(out):
    return [r for r in read_csv(out / "runs.csv") if r["status"] == "ok"]


# --- end to end --------------------------------------------------------------------------------
def test_one_row_per_run_and_failed_model_recorded(comparison):
    rows = read_csv(comparison["out"] / "runs.csv")
    assert len(rows) == 6
    assert {(r["model"], int(r["seed"])) for r in rows if r["status"] == "ok"} == {
        (m, s) for m in MODELS for s in SEEDS
    }
    failed = [r for r in rows if r["status"] == "failed"]
    assert [r["model"] for r in failed] == ["BERT4Rec", "BERT4Rec"]
    assert all(r["error"] == "KeyError: 'nope'" for r in failed)
    assert comparison["status"] == 1  # some run failed
    for row in ok_rows(comparison["out"]):
        assert row["builtin"] == "True"
        assert int(row["num_parameters"]) > 0 and int(row["epochs_trained"]) == 1
        assert float(row["seconds_per_epoch"]) > 0 and float(row["latency_ms_per_1k_users"]) > 0
        assert float(row["peak_rss_mb"]) > 50  # a process that imported torch
        assert int(row["evaluated_users"]) == 40  # every user of the tiny dataset is tested once
        # stored relative to the folder (it travels); named after the run and the folder
        assert not os.path.isabs(row["checkpoint"]) and os.path.isfile(comparison["out"] / row["checkpoint"])
        assert re.fullmatch(re.escape(row["run_id"]) + r"-[0-9a-f]{6}\.pth", os.path.basename(row["checkpoint"]))
        assert os.path.dirname(os.path.abspath(comparison["out"] / row["checkpoint"])) == str(comparison["folder"] / "checkpoints")
        assert row["train_all_positions"] == "False" and row["eval_mask_history"] == "False"
        assert float(row["best_valid_score"]) == float(row["valid_mrr@10"])  # RecBole's default valid_metric


def test_plan_and_progress_lines(comparison):
    lines = comparison["output"].splitlines()
    assert lines[0].startswith(f"compare: 3 models × 2 seeds = 6 runs on {TINY_DATASET} -> saved/compare/{TINY_DATASET}/")
    assert re.fullmatch(r"\[1/6\] SASRec seed=2020  test ndcg@10=0\.\d{4}  valid ndcg@10=0\.\d{4}  \d+\.\ds", lines[1])
    assert re.fullmatch(r"\[6/6\] BERT4Rec seed=2021  FAILED  KeyError: 'nope'  \d+\.\ds", lines[6])


def _summary_cells(summary_md, model):
    table = [line for line in summary_md.splitlines() if line.startswith("|")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    for line in table[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == model:
            return dict(zip(header, cells))
    raise AssertionError(f"{model} not in summary.md")


def _unmark(cell):
    return re.sub(r"\*\*|</?u>", "", cell)


def test_summary_means_equal_runs_csv(comparison):
    out = comparison["out"]
    rows = ok_rows(out)
    summary = (out / "summary.md").read_text()
    means = {}
    for model in MODELS:
        cells = _summary_cells(summary, model)
        assert cells["seeds"] == "2/2"
        for metric in ("ndcg@10", "recall@10", "mrr@10"):
            values = [float(r[f"test_{metric}"]) for r in rows if r["model"] == model]
            mean, std = (float(x) for x in _unmark(cells[metric]).split(" ± "))
            assert mean == pytest.approx(np.mean(values), abs=5e-5)
            assert std == pytest.approx(np.std(values, ddof=1), abs=5e-5)
            means[model, metric] = np.mean(values)
    # the better mean is bold, the other underlined
    for metric in ("ndcg@10", "mrr@10"):
        best = max(MODELS, key=lambda m: means[m, metric])
        second = min(MODELS, key=lambda m: means[m, metric])
        assert _summary_cells(summary, best)[metric].startswith("**")
        assert _summary_cells(summary, second)[metric].startswith("<u>")
    # significance against the best built-in model by test NDCG@10
    baseline = max(MODELS, key=lambda m: means[m, "ndcg@10"])
    other = min(MODELS, key=lambda m: means[m, "ndcg@10"])
    assert f"p vs {baseline}" in summary and "Wilcoxon signed-rank" in summary
    assert _summary_cells(summary, baseline)[f"p vs {baseline}"] == "—"
    p = float(_summary_cells(summary, other)[f"p vs {baseline}"])
    assert 0 <= p <= 1
    assert "BERT4Rec seed=2020: KeyError" in summary

    tex = (out / "summary.tex").read_text()
    assert "\\toprule" in tex and "\\bottomrule" in tex and "\\textbf{" in tex and "\\underline{" in tex
    for model in MODELS:
        line = next(line for line in tex.splitlines() if line.startswith(model + " &"))
        ndcg = float(np.mean([float(r["test_ndcg@10"]) for r in rows if r["model"] == model]))
        assert f"{ndcg:.4f}" in line and "$\\pm$" in line


def test_per_user_ndcg_mean_equals_recbole(comparison):
    out = comparison["out"]
    for row in ok_rows(out):
        with np.load(out / row["per_user_file"]) as data:
            users, ndcg = data["user"], data["ndcg@10"]
        assert len(users) == len(set(users)) == 40
        assert set(users) == {str(u) for u in range(1, 41)}  # external user tokens
        assert np.all((ndcg >= 0) & (ndcg <= 1))
        # every user has one target: NDCG is 0 or 1/log2(rank + 2) for a rank in 0..9
        allowed = np.concatenate([[0.0], 1 / np.log2(np.arange(10) + 2)])
        assert np.all(np.min(np.abs(ndcg[:, None] - allowed[None, :]), axis=1) < 1e-12)
        assert float(np.mean(ndcg)) == pytest.approx(float(row["test_ndcg@10"]), abs=1e-9)


def test_model_override_reaches_only_that_model(comparison):
    out = comparison["out"]
    for row in ok_rows(out):
        config = yaml.safe_load((out / row["config_file"]).read_text())
        assert config["model"] == row["model"] and config["seed"] == int(row["seed"])
        assert config["dataset"] == TINY_DATASET and config["hidden_size"] == 32
        expected = SASREC_LR if row["model"] == "SASRec" else SHARED_LR
        assert config["learning_rate"] == pytest.approx(expected)
        # the dumped config's paths are relative to its own folder, runs.csv's to the run folder
        config_dir = (out / row["config_file"]).parent
        assert os.path.normpath(config_dir / config["saved_model_file"]) == os.path.normpath(out / row["checkpoint"])
    hashes = {r["model"]: r["overrides_hash"] for r in ok_rows(out)}
    assert hashes["SASRec"] != hashes["GRU4Rec"]


def test_rerun_skips_finished_runs_and_retries_failed(comparison):
    out, folder = comparison["out"], comparison["folder"]
    before = {r["run_id"]: r for r in read_csv(out / "runs.csv")}
    checkpoints = {p.name: p.stat().st_mtime_ns for p in (folder / "checkpoints").iterdir()}
    status, output = run_compare(comparison["argv"], folder)
    assert "(4 done, skipped; 2 to run)" in output
    assert output.count("skipped (done in runs.csv)") == 4
    assert re.search(r"\[5/6\] BERT4Rec seed=2020  FAILED", output)  # failed runs are retried
    after = {r["run_id"]: r for r in read_csv(out / "runs.csv")}
    assert after.keys() == before.keys()
    for run_id, row in before.items():
        if row["status"] == "ok":
            assert after[run_id] == row
    assert {p.name: p.stat().st_mtime_ns for p in (folder / "checkpoints").iterdir()} == checkpoints
    assert status == 1


def test_model_settings_the_model_refuses_stop_the_command_before_any_run(tiny_data_path, tmp_path):
    """GLINTRU's own check (its check_config) runs for every model before the first run trains."""
    (tmp_path / "bad.yaml").write_text("n_heads: 3\n")  # 32 is not divisible by 3
    argv = [
        "--models=SASRec,GLINTRU", "--seeds=2020", f"--dataset={TINY_DATASET}", f"--output_dir={tmp_path / 'out'}",
        *tiny_overrides(tiny_data_path, tmp_path / "saved"), "--model_config", "GLINTRU=bad.yaml",
    ]
    with pytest.raises(ConfigError, match=r"^GLINTRU needs hidden_size divisible by n_heads \(got 32 and 3\)$"):
        run_compare(argv, tmp_path)
    assert not os.path.exists(tmp_path / "out") and not os.path.exists(tmp_path / "saved")


@pytest.mark.parametrize("override, got", [("--eval_step=0", "eval_step=0, epochs=1"), ("--eval_step=3", "eval_step=3, epochs=1")])
def test_runs_without_validation_stop_the_command_before_any_run(override, got, tiny_data_path, tmp_path):
    """compare keeps each run's best validated checkpoint: a run that would never validate is refused."""
    argv = [
        "--models=SASRec", "--seeds=2020", f"--dataset={TINY_DATASET}", f"--output_dir={tmp_path / 'out'}",
        *tiny_overrides(tiny_data_path, tmp_path / "saved"), override,
    ]
    with pytest.raises(ConfigError, match=rf"^SASRec: compare selects each run's checkpoint by validation: .*\(got {got}\)$"):
        run_compare(argv, tmp_path)
    assert not os.path.exists(tmp_path / "out")


def test_crashed_worker_fails_its_run_only(tmp_path, monkeypatch):
    """A worker killed from outside (as by the OOM killer) leaves no result: the run is failed, the next runs."""
    crash = "import os, signal; print('about to die', flush=True); os.kill(os.getpid(), signal.SIGKILL)"
    monkeypatch.setattr(compare_runner, "worker_command", lambda spec_file: [sys.executable, "-c", crash])
    runs = compare.plan_runs(["SASRec", "GRU4Rec"], [1], TINY_DATASET, None, [], {})
    lines = []
    rows = compare.run_comparison(runs, str(tmp_path / "out"), TINY_DATASET, ["SASRec", "GRU4Rec"], [1], lines.append)
    assert [r["status"] for r in rows] == ["failed", "failed"]
    assert rows[0]["error"] == "worker killed by signal 9: about to die"
    assert lines[1].startswith("[1/2] SASRec seed=1  FAILED  worker killed by signal 9")
    assert lines[2].startswith("[2/2] GRU4Rec seed=1  FAILED")
    assert len(read_csv(tmp_path / "out" / "runs.csv")) == 2
    assert not list((tmp_path / "out" / "logs").glob("*.json"))  # spec and result files cleaned up


def test_warnings_go_to_stderr_prefixed_once(tmp_path, monkeypatch, capsys):
    """A stale lock taken over and a cut runs.csv row: one 'compare: warning:' line each on stderr;
    stdout keeps the plan and progress lines."""
    from recbole_linear.workflow.common.folder_lock import LOCK_NAME

    worker = "import sys; sys.exit(3)"
    monkeypatch.setattr(compare_runner, "worker_command", lambda spec_file: [sys.executable, "-c", worker, spec_file])
    out = tmp_path / "out"
    out.mkdir()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (out / LOCK_NAME).write_text(json.dumps({"pid": gone.pid, "host": socket.gethostname(), "started": "then",
                                             "command": "compare"}))
    (out / "runs.csv").write_text("run_id,model,seed,status\nSASRec-se\n")
    runs = compare.plan_runs(["SASRec"], [1], TINY_DATASET, None, [], {})
    compare.run_comparison(runs, str(out), TINY_DATASET, ["SASRec"], [1], out=print)
    captured = capsys.readouterr()
    warnings = captured.err.strip().splitlines()
    assert len(warnings) == 2 and all(line.startswith("compare: warning: ") for line in warnings), warnings
    assert "compare: warning: compare:" not in captured.err
    assert warnings[0].startswith(f"compare: warning: taking over the stale lock of pid {gone.pid} ")
    assert "line 2 ('SASRec-se'): not a run row" in warnings[1]
    assert "compare: warning" not in captured.out and "[1/1] SASRec seed=1  FAILED" in captured.out


def test_a_rerun_appends_to_the_runs_log(tmp_path, monkeypatch):
    """A run that starts again (resumed after a kill, or retried) keeps what it logged before."""
    worker = "import sys; print('attempt of', sys.argv[1].rsplit('/', 1)[-1], flush=True); sys.exit(3)"
    monkeypatch.setattr(compare_runner, "worker_command", lambda spec_file: [sys.executable, "-c", worker, spec_file])
    runs = compare.plan_runs(["SASRec"], [1], TINY_DATASET, None, [], {})
    for _ in range(2):
        (row,) = compare.run_comparison(runs, str(tmp_path / "out"), TINY_DATASET, ["SASRec"], [1], lambda line: None)
        assert row["error"] == f"worker exited with status 3: attempt of {runs[0].run_id}.spec.json"
    with open(tmp_path / "out" / "logs" / f"{runs[0].run_id}.log", encoding="utf-8") as f:
        lines = f.read().splitlines()
    starts = [line for line in lines if line.startswith(compare_runner.ATTEMPT_MARK)]
    assert len(starts) == 2 and all(runs[0].run_id in line for line in starts)
    assert lines.count(f"attempt of {runs[0].run_id}.spec.json") == 2


# --- planning and arguments ------------------------------------------------------------------
def test_model_config_values_reach_recbole_config_with_their_types():
    model_config = {
        "learning_rate": 1e-3,
        "topk": [5, 10],
        "loss_type": "BPR",
        "reproducibility": False,
        "load_col": {"inter": ["user_id", "item_id"]},
        "clip_grad_norm": {"max_norm": 5.0},
        "benchmark_filename": None,
        "valid_metric": "NDCG@10",
    }
    sasrec, gru4rec = compare.plan_runs(
        ["SASRec", "GRU4Rec"], [7], TINY_DATASET, None, ["--learning_rate=0.5"], {"SASRec": model_config}
    )
    config = create_config("SASRec", TINY_DATASET, None, None, sasrec.cmd_args)
    for key, value in model_config.items():
        assert config[key] == value, key
    assert config["seed"] == 7
    assert create_config("GRU4Rec", TINY_DATASET, None, None, gru4rec.cmd_args)["learning_rate"] == 0.5
    assert gru4rec.builtin and sasrec.builtin


def test_run_identity_follows_settings(tmp_path):
    shared = tmp_path / "shared.yaml"
    shared.write_text("epochs: 3\n")
    plan = lambda overrides=(), configs=None: compare.plan_runs(  # noqa: E731
        ["LRURec", "SASRec"], [1, 2], TINY_DATASET, [str(shared)], list(overrides), configs or {}
    )
    first = plan()
    assert [r.run_id for r in first] == [r.run_id for r in plan()]  # deterministic
    assert first[0].run_id == f"LRURec-seed1-{first[0].overrides_hash}" and not first[0].builtin
    assert first[0].overrides_hash == first[1].overrides_hash  # the seed is not part of the hash
    changed = plan(configs={"LRURec": {"lru_dropout": 0.2}})
    assert changed[0].overrides_hash != first[0].overrides_hash  # LRURec's own config changed
    assert changed[2].run_id == first[2].run_id  # SASRec untouched
    assert plan(["--epochs=4"])[2].overrides_hash != first[2].overrides_hash
    # where the data and checkpoints lie is not what is trained: the same runs, found done elsewhere
    moved = plan(["--data_path=/elsewhere/datasets", "--checkpoint_dir=/elsewhere/saved"])
    assert [r.run_id for r in moved] == [r.run_id for r in first]
    shared.write_text("epochs: 5\n")
    assert plan()[2].overrides_hash != first[2].overrides_hash  # the file's contents count


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--models=SASRec", "--seed=3"], "use --seeds"),
        (["--models=SASRec", "--model=LRURec"], "use --models"),
        (["--models=SASRec", "--seeds=1,x"], "invalid seed 'x'"),
        (["--models=SASRec", "--model_config", "LRURec=a.yaml"], "not in --models"),
        (["--models=SASRec", "--model_config", "SASRec"], "expected MODEL=FILE"),
        (["--models=SASRec", "--model_config", "SASRec=missing.yaml"], "cannot read config file 'missing.yaml'"),
    ],
)
def test_bad_arguments_raise_config_error(argv, message, tmp_path):
    with pytest.raises(ConfigError, match=re.escape(message)):
        run_compare(argv, tmp_path)
    assert not (tmp_path / "results").exists() and not (tmp_path / "saved").exists()


# --- the summary table and its files on synthetic numbers ------------------------------------
@pytest.mark.parametrize("metric", ["recall@10", "mrr@10", "ndcg@10", "hit@10", "precision@10", "map@10", "auc"])
def test_ranking_metrics_are_bigger_is_better(metric):
    assert report.bigger_is_better(metric)


@pytest.mark.parametrize("metric", ["rmse", "mae", "logloss", "giniindex@10", "averagepopularity@10"])
def test_error_and_popularity_metrics_are_smaller_is_better(metric):
    assert not report.bigger_is_better(metric)


def test_rank_marks():
    assert report.rank_marks([0.1, 0.3, 0.2, None]) == {1: "best", 2: "second"}
    assert report.rank_marks([0.1, 0.3, 0.2], bigger=False) == {0: "best", 2: "second"}
    # equal as displayed (4 digits) share the mark; the next distinct value is second
    assert report.rank_marks([0.30001, 0.29999, 0.2, 0.1]) == {0: "best", 1: "best", 2: "second"}
    assert report.rank_marks([0.5]) == {0: "best"}


def _synthetic_rows(tmp_path, per_user):
    """Rows as runs.csv holds them, with per-user files; per_user: {(model, seed): (users, values)}."""
    os.makedirs(tmp_path / "per_user", exist_ok=True)
    rows = []
    for (model, seed), (users, values) in per_user.items():
        name = f"per_user/{model}-{seed}.npz"
        np.savez(tmp_path / name, user=np.asarray(users).astype(str), **{"ndcg@10": values})
        rows.append({
            "model": model, "seed": str(seed), "status": "ok", "builtin": str(model != "Ours"),
            "test_ndcg@10": str(np.mean(values)), "test_rmse": str(seed / 10 + (model == "Ours")),
            "num_parameters": "123456", "seconds_per_epoch": "1.5", "epochs_trained": "10",
            "latency_ms_per_1k_users": "12.34", "peak_rss_mb": "800", "per_user_file": name,
        })
    return rows


def test_summary_table_marks_and_significance(tmp_path):
    rng = np.random.default_rng(0)
    users = np.arange(300)
    base = rng.random(300)
    per_user = {
        ("Ours", 1): (users, np.clip(base + 0.2, 0, 1)),
        ("Ours", 2): (users[::-1], np.clip(base + 0.1, 0, 1)[::-1]),  # another user order: paired by user
        ("BaseA", 1): (users, base),
        ("BaseA", 2): (users, base),
        ("BaseB", 1): (users, base * 0.5),
        ("BaseB", 2): (users, base * 0.5),
    }
    rows = _synthetic_rows(tmp_path, per_user) + [
        {"model": "Broken", "seed": "1", "status": "failed", "error": "ValueError: boom", "builtin": "True"}
    ]
    models = ["Ours", "BaseA", "BaseB", "Broken"]
    table = report.build_table(rows, models, str(tmp_path))
    assert table["baseline"] == "BaseA"  # best *built-in* by mean NDCG@10, not the best model
    entries = {e["model"]: e for e in table["entries"]}
    assert entries["Ours"]["metrics"]["ndcg@10"][2] == "best"
    assert entries["BaseA"]["metrics"]["ndcg@10"][2] == "second"
    assert entries["BaseB"]["metrics"]["ndcg@10"][2] is None
    # rmse: smaller is better -> the built-ins (0.15) beat Ours (1.15)
    assert entries["BaseA"]["metrics"]["rmse"][2] == "best" and entries["Ours"]["metrics"]["rmse"][2] == "second"
    ours_mean = (np.clip(base + 0.2, 0, 1) + np.clip(base + 0.1, 0, 1)) / 2
    assert entries["Ours"]["p"] == pytest.approx(wilcoxon(ours_mean, base).pvalue)
    assert entries["Ours"]["p"] < 1e-10 and entries["BaseA"]["p"] is None

    md = summary.to_markdown(table, "toy_set", [1, 2], [rows[-1]])
    line = next(l for l in md.splitlines() if l.startswith("| Ours"))
    mean = float(np.mean([np.mean(v) for (m, _), (_, v) in per_user.items() if m == "Ours"]))
    std = float(np.std([np.mean(v) for (m, _), (_, v) in per_user.items() if m == "Ours"], ddof=1))
    assert f"**{mean:.4f}** ± {std:.4f}" in line and "123.46K" in line and "| 2/2 |" in line
    assert "<u>" in next(l for l in md.splitlines() if l.startswith("| BaseA"))
    assert "| Broken | 0/1 |" in md and "- Broken seed=1: ValueError: boom" in md
    assert "p vs BaseA" in md and "Wilcoxon signed-rank" in md

    tex = summary.to_latex(table, "toy_set", [1, 2])
    assert "toy\\_set" in tex and "toy_set" not in tex
    assert f"\\textbf{{{mean:.4f}}} $\\pm$ {std:.4f}" in tex
    assert "\\underline{" in tex and "NDCG@10" in tex and "RMSE" in tex
    assert tex.count("\\\\") == 1 + len(models)  # header + one line per model


def test_missing_per_user_file_gives_na_and_names_the_run(tmp_path):
    rng = np.random.default_rng(1)
    users = np.arange(50)
    per_user = {
        ("Ours", 1): (users, rng.random(50)), ("Ours", 2): (users, rng.random(50)),
        ("Other", 1): (users, rng.random(50)), ("Other", 2): (users, rng.random(50)),
        ("BaseA", 1): (users, rng.random(50) + 0.5), ("BaseA", 2): (users, rng.random(50) + 0.5),
    }
    rows = _synthetic_rows(tmp_path, per_user)
    for row in rows:
        row["builtin"] = str(row["model"] == "BaseA")
        row["run_id"] = f"{row['model']}-seed{row['seed']}"
    os.remove(tmp_path / "per_user" / "Ours-2.npz")  # e.g. lost with the machine that ran it
    table = report.build_table(rows, ["Ours", "Other", "BaseA"], str(tmp_path))
    entries = {e["model"]: e for e in table["entries"]}
    assert np.isnan(entries["Ours"]["p"]) and 0 <= entries["Other"]["p"] <= 1
    assert table["missing_per_user"] == ["Ours-seed2"]
    md = summary.to_markdown(table, "toy_set", [1, 2])
    # the test across seeds needs only runs.csv, so it stands where the per-user one cannot
    ours_p_seeds = summary.format_p(entries["Ours"]["p_seeds"])
    assert next(l for l in md.splitlines() if l.startswith("| Ours")).endswith(f"| n/a | {ours_p_seeds} |")
    assert "per-user file of 1 run(s) is missing (Ours-seed2)" in md
    complete = summary.to_markdown(report.build_table(rows[2:], ["Other", "BaseA"], str(tmp_path)), "toy_set", [1, 2])
    assert "is missing" not in complete


def test_seed_test_compares_per_seed_means_and_needs_two_seeds_each(tmp_path):
    from scipy.stats import ttest_ind

    rng = np.random.default_rng(2)
    users = np.arange(200)
    base = rng.random(200)
    shifts = {("Ours", 1): 0.10, ("Ours", 2): 0.12, ("Ours", 3): 0.08,
              ("BaseA", 1): 0.0, ("BaseA", 2): 0.01, ("BaseA", 3): -0.02, ("Single", 1): -0.05}
    per_user = {key: (users, np.clip(base + shift, 0, 1)) for key, shift in shifts.items()}
    rows = _synthetic_rows(tmp_path, per_user)
    table = report.build_table(rows, ["Ours", "BaseA", "Single"], str(tmp_path))
    entries = {e["model"]: e for e in table["entries"]}
    means = {m: [float(r["test_ndcg@10"]) for r in rows if r["model"] == m] for m in ("Ours", "BaseA")}
    expected = ttest_ind(means["Ours"], means["BaseA"], equal_var=False).pvalue
    assert table["baseline"] == "BaseA" and table["seed_test"]
    assert entries["Ours"]["p_seeds"] == pytest.approx(expected) and 0 < expected < 0.05
    assert entries["Single"]["p_seeds"] is None and entries["BaseA"]["p_seeds"] is None  # one seed; the baseline
    md = summary.to_markdown(table, "toy_set", [1, 2, 3])
    assert "p across seeds" in md and "Welch's two-sided t-test" in md
    ours = next(l for l in md.splitlines() if l.startswith("| Ours"))
    assert ours.endswith(f"| {summary.format_p(entries['Ours']['p'])} | {summary.format_p(expected)} |")
    assert next(l for l in md.splitlines() if l.startswith("| Single")).endswith("| — |")
    tex = summary.to_latex(table, "toy_set", [1, 2, 3])
    assert "p_{\\mathrm{seeds}}" in tex and summary.format_p(expected) in tex

    # one seed per model: no column, and the Markdown is what it was before the test existed
    single = report.build_table([r for r in rows if r["seed"] == "1"], ["Ours", "BaseA"], str(tmp_path))
    assert not single["seed_test"]
    assert "p across seeds" not in summary.to_markdown(single, "toy_set", [1])
    assert "mathrm{seeds}" not in summary.to_latex(single, "toy_set", [1])


def test_seed_p_value_edge_cases():
    assert report.seed_p_value([0.1], [0.2, 0.3]) is None
    assert report.seed_p_value([0.1, 0.1], [0.1, 0.1]) == 1.0
    assert report.seed_p_value([0.1, 0.1], [0.2, 0.2]) == 0.0
    assert 0 < report.seed_p_value([0.1, 0.2], [0.15, 0.25]) < 1


def test_paired_p_value_pairs_by_user():
    rng = np.random.default_rng(1)
    users = np.array([f"u{i}" for i in range(50)])
    a, b = rng.random(50), rng.random(50)
    order = rng.permutation(50)
    p = report.paired_p_value(users[order], a[order], users, b)
    assert p == pytest.approx(wilcoxon(a, b).pvalue)
    # users only one side has are left out
    assert report.paired_p_value(users[:40], a[:40], users, b) == pytest.approx(wilcoxon(a[:40], b[:40]).pvalue)
    assert report.paired_p_value(users, a, users, a.copy()) == 1.0
    assert np.isnan(report.paired_p_value(users[:5], a[:5], users[5:10], b[5:10]))


def test_average_by_user():
    users, means = report.average_by_user([["b", "a"], ["a", "b"], ["c"]], [[1.0, 0.0], [1.0, 0.0], [0.5]])
    assert list(users) == ["a", "b", "c"]
    assert list(means) == [0.5, 0.5, 0.5]


def test_latex_escape():
    assert summary.latex_escape("ml_100k & 50%") == "ml\\_100k \\& 50\\%"


# --- per-user NDCG against RecBole's own collector and evaluator ------------------------------
class _TokenDataset:
    def id2token(self, field, ids):
        return np.array([f"user{i}" for i in ids])


def test_per_user_ndcg_matches_recbole_evaluator_with_ties_and_several_positives():
    import torch
    from recbole.data.interaction import Interaction
    from recbole.evaluator import Collector, Evaluator

    from recbole_linear.workflow.compare.per_user import PerUserNDCG

    config = create_config(
        "SASRec", TINY_DATASET, config_dict={"metrics": ["NDCG"], "topk": [5, 10, 20], "metric_decimal_place": 12}
    )
    collector, recorder = Collector(config), PerUserNDCG(config)
    generator = torch.Generator().manual_seed(0)
    n_items, user = 60, 0
    for batch_size in (7, 16, 3):
        scores = torch.randint(0, 6, (batch_size, n_items), generator=generator).float()  # many ties
        scores[:, 0] = -np.inf
        scores[torch.rand(batch_size, n_items, generator=generator) < 0.2] = -np.inf  # history
        n_positives = torch.randint(0, 4, (batch_size,), generator=generator)  # 0 to 3 targets per user
        positive_u = torch.repeat_interleave(torch.arange(batch_size), n_positives)
        positive_i = torch.randint(1, n_items, (len(positive_u),), generator=generator)
        interaction = Interaction({"user_id": torch.arange(user, user + batch_size)})
        user += batch_size
        batch_eval = recorder._wrap(lambda data: data, sampled=False)
        interaction, scores, positive_u, positive_i = batch_eval((interaction, scores, positive_u, positive_i))
        collector.eval_batch_collect(scores, interaction, positive_u, positive_i)  # what the trainer does
    result = Evaluator(config).evaluate(collector.get_data_struct())
    users, ndcg = recorder.result(_TokenDataset())
    assert list(users) == [f"user{i}" for i in range(26)]
    assert float(np.mean(ndcg)) == pytest.approx(result["ndcg@10"], abs=1e-11)
    assert result["ndcg@10"] > 0


def test_per_user_ndcg_on_sampled_evaluation_maps_rows_to_users():
    import torch
    from recbole.data.interaction import Interaction

    from recbole_linear.workflow.compare.per_user import PerUserNDCG

    config = create_config("SASRec", TINY_DATASET)
    recorder = PerUserNDCG(config)
    # two users, three sampled candidates each: rows of the interaction -> score rows by row_idx
    interaction = Interaction({"user_id": torch.tensor([5, 5, 5, 9, 9, 9])})
    row_idx = torch.tensor([0, 0, 0, 1, 1, 1])
    scores = torch.full((2, 20), -np.inf)
    scores[0, [3, 4, 7]] = torch.tensor([0.9, 0.5, 0.1])  # target 7 ranked third
    scores[1, [2, 8, 11]] = torch.tensor([0.2, 0.8, 0.3])  # target 8 ranked first
    positive_u, positive_i = torch.tensor([0, 1]), torch.tensor([7, 8])
    batch_eval = recorder._wrap(lambda data: (interaction, scores, positive_u, positive_i), sampled=True)
    batch_eval((interaction, row_idx, positive_u, positive_i))
    users, ndcg = recorder.result(_TokenDataset())
    assert list(users) == ["user5", "user9"]
    assert ndcg == pytest.approx([1 / np.log2(4), 1.0])


def test_per_user_save_writes_tokens_and_warns_only_when_the_mean_is_not_recboles(tmp_path):
    import logging

    import torch

    from recbole_linear.workflow.compare.per_user import PerUserNDCG

    config = create_config("SASRec", TINY_DATASET, config_dict={"metric_decimal_place": 4})
    recorder = PerUserNDCG(config)
    scores = torch.full((2, 20), -np.inf)
    scores[0, [3, 7]] = torch.tensor([0.9, 0.5])  # target 7 second: 1/log2(3)
    scores[1, [8]] = 1.0  # target 8 first: 1
    recorder._record(torch.tensor([4, 6]), scores, torch.tensor([0, 1]), torch.tensor([7, 8]))
    expected = (1 / np.log2(3) + 1.0) / 2

    class Captured(logging.Handler):
        def __init__(self):
            super().__init__()
            self.lines = []

        def emit(self, record):
            self.lines.append(record.getMessage())

    logger, handler = logging.getLogger("per-user-test"), Captured()
    logger.addHandler(handler)
    try:
        path = tmp_path / "sub" / "run.npz"
        users, values = recorder.save(str(path), _TokenDataset(), config, {"ndcg@10": round(expected, 4)}, logger)
        assert handler.lines == []  # RecBole's value is the per-user mean rounded to 4 places
        with np.load(path) as data:
            assert list(data["user"]) == ["user4", "user6"] == list(users)
            assert data["ndcg@10"] == pytest.approx([1 / np.log2(3), 1.0])
        recorder.save(str(path), _TokenDataset(), config, {"ndcg@10": round(expected, 4) + 0.001}, logger)
        assert len(handler.lines) == 1 and "differs from RecBole's" in handler.lines[0]
    finally:
        logger.removeHandler(handler)


def test_recorder_shadows_batch_eval_on_the_instance_only():
    from recbole_linear.workflow.compare.per_user import PerUserNDCG
    from recbole_linear.trainer import get_trainer

    from recbole.utils import ModelType

    trainer_class = get_trainer(ModelType.SEQUENTIAL, "SASRec")
    trainer = trainer_class.__new__(trainer_class)
    PerUserNDCG(create_config("SASRec", TINY_DATASET)).attach(trainer)
    assert trainer._full_sort_batch_eval.__name__ == "recording_batch_eval"
    assert trainer_class._full_sort_batch_eval.__name__ == "_full_sort_batch_eval"


def test_parallel_jobs_overlap_and_keep_plan_order(tmp_path, monkeypatch):
    """--jobs 2: two workers at once (their lifetimes overlap), runs.csv written by one thread, rows in plan order."""
    stamps = tmp_path / "stamps"
    stamps.mkdir()
    sleeper = (
        "import json, os, sys, time; spec = json.load(open(sys.argv[1])); start = time.time(); time.sleep(1.5); "
        f"open(os.path.join({str(stamps)!r}, spec['run_id']), 'w').write(f'{{start}} {{time.time()}} "
        "{os.environ.get(\"OMP_NUM_THREADS\")}'); sys.exit(3)"
    )
    monkeypatch.setattr(compare_runner, "worker_command", lambda spec_file: [sys.executable, "-c", sleeper, spec_file])
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    runs = compare.plan_runs(["SASRec", "GRU4Rec"], [1, 2], TINY_DATASET, None, [], {})
    lines = []
    rows = compare.run_comparison(
        runs, str(tmp_path / "out"), TINY_DATASET, ["SASRec", "GRU4Rec"], [1, 2], lines.append, jobs=2,
    )
    assert [(r["model"], r["seed"]) for r in rows] == [(run.model, run.seed) for run in runs]
    assert all(r["error"].startswith("worker exited with status 3") for r in rows)
    assert "4 to run, 2 at a time" in lines[0]
    assert len(read_csv(tmp_path / "out" / "runs.csv")) == 4
    intervals = {}
    for path in stamps.iterdir():
        start, end, threads = path.read_text().split()
        intervals[path.name] = (float(start), float(end))
        assert threads == "2"  # 4 cores / 2 jobs
    first, second = intervals[runs[0].run_id], intervals[runs[1].run_id]
    assert first[0] < second[1] and second[0] < first[1]  # the first two runs were alive together


def test_jobs_must_be_positive(tmp_path):
    with pytest.raises(ConfigError, match="--jobs"):
        compare.run_comparison([], str(tmp_path), TINY_DATASET, [], [], lambda line: None, jobs=0)


def test_validation_curve_reads_recboles_log_including_a_resumed_run(tmp_path):
    from recbole_linear.workflow.common.run_log import validation_curve

    log = tmp_path / "run.log"
    log.write_text(
        "==== 2026-12-01 10:00:00 compare worker started for X ====\n"
        "01 Dec 10:44    INFO  epoch 3 evaluating [time: 15.40s, valid_score: 0.085200]\n"
        "01 Dec 10:44    INFO  valid result: \n"
        "\x1b[1;34mrecall@10\x1b[0m : 0.0852    recall@20 : 0.1276    ndcg@10 : 0.046    ndcg@20 : 0.0566\n"
        "01 Dec 10:50    INFO  epoch 7 evaluating [time: 14.00s, valid_score: 0.117800]\n"
        "01 Dec 10:50    INFO  valid result: \n"
        "recall@10 : 0.1178    recall@20 : 0.1715    ndcg@10 : 0.0646    ndcg@20 : 0.0781\n"
        "==== 2026-12-01 11:00:00 compare worker started for X ====\n"  # resumed from epoch 3's save
        "01 Dec 11:05    INFO  epoch 7 evaluating [time: 14.10s, valid_score: 0.117900]\n"
        "01 Dec 11:05    INFO  valid result: \n"
        "recall@10 : 0.1179    recall@20 : 0.1716    ndcg@10 : 0.0647    ndcg@20 : 0.0782\n"
        "01 Dec 11:11    INFO  epoch 11 evaluating [time: 14.20s, valid_score: 0.120000]\n"
        "01 Dec 11:11    INFO  valid result: \n"
        "recall@10 : 0.12    recall@20 : 0.18    ndcg@10 : 0.066    ndcg@20 : 0.08\n",
        encoding="utf-8",
    )
    curve = validation_curve(log)
    assert [e["epoch"] for e in curve] == [3, 7, 11]
    assert curve[0] == {"epoch": 3, "seconds": 15.4, "valid_score": 0.0852, "recall@10": 0.0852,
                        "recall@20": 0.1276, "ndcg@10": 0.046, "ndcg@20": 0.0566}
    assert curve[1]["recall@10"] == 0.1179 and curve[2]["ndcg@10"] == 0.066  # the resumed epoch 7 counts
