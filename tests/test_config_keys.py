"""Unknown config keys warn with the closest known key; compare and tune check everything first;
``--data_path`` means the same folder in every subcommand and for every dataset."""
import logging
import os
import shutil

import pytest
from recbole.data import create_dataset

from recbole_linear import known_keys
from recbole_linear.cli import main
from recbole_linear.config import create_config, override_config
from recbole_linear.known_keys import unknown_key_message
from recbole_linear.quick_start import check_dataset
from tests.conftest import TINY_DATASET, tiny_cmd_args


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(known_keys, "_warned", set())


def warnings_in(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "recbole_linear" and "unknown key" in r.getMessage()]


@pytest.mark.parametrize(
    "typo, suggestion",
    [("epoch", "epochs"), ("hiden_size", "hidden_size"), ("learing_rate", "learning_rate"),
     ("max_item_list_length", "MAX_ITEM_LIST_LENGTH"), ("lru_dropout", "lru_dropout_prob")],
)
def test_typo_names_the_closest_key(typo, suggestion):
    assert unknown_key_message(typo).startswith(f"unknown key '{typo}' (did you mean '{suggestion}'?)")


@pytest.mark.parametrize(
    "key",
    [
        "epochs", "kg_reverse_r", "repeatable",  # RecBole's overall, dataset and quick-start yamls
        "hidden_act", "time-aware",  # RecBole model yamls (SASRec, DiffRec)
        "nproc", "world_size", "offset", "neg_sampling", "valid_neg_sample_args",  # read only in RecBole's code
        "lru_dropout_prob", "conv_kernel_size", "linrec_causal",  # the plugin's model yamls
        "eval_mask_history", "train_all_positions", "optimizer_eps",  # the plugin's overall yaml and code
        "benchmark_filename", "log_wandb",
    ],
)
def test_keys_recbole_or_the_plugin_define_or_read_are_known(key):
    assert unknown_key_message(key) is None


def test_no_close_key_no_hint():
    assert unknown_key_message("zzzz_qqqq") == (
        "unknown key 'zzzz_qqqq': no RecBole or recbole-linear property file defines it and nothing reads it"
    )


def test_config_warns_once_per_unknown_key(caplog):
    caplog.set_level(logging.WARNING, logger="recbole_linear")
    create_config("LRURec", "ml-100k", config_dict={"epoch": 1, "epochs": 2}, cmd_args=["--hiden_size=32"])
    assert warnings_in(caplog) == [
        "recbole-linear: warning: unknown key 'epoch' (did you mean 'epochs'?): no RecBole or recbole-linear "
        "property file defines it and nothing reads it",
        "recbole-linear: warning: unknown key 'hiden_size' (did you mean 'hidden_size'?): no RecBole or "
        "recbole-linear property file defines it and nothing reads it",
    ]
    create_config("SASRec", "ml-100k", config_dict={"epoch": 1})  # e.g. the next tuning trial
    assert len(warnings_in(caplog)) == 2


def test_known_keys_do_not_warn(caplog):
    caplog.set_level(logging.WARNING, logger="recbole_linear")
    create_config("GLINTRU", "ml-100k", config_dict={"epochs": 1, "conv_kernel_size": 5, "eval_mask_history": True})
    assert warnings_in(caplog) == []


def test_typo_in_a_config_file_is_reported_even_when_another_value_fails(tiny_data_path, tmp_path, caplog, capsys,
                                                                         monkeypatch):
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.WARNING, logger="recbole_linear")
    (tmp_path / "typo.yaml").write_text("epoch: 1\n")
    status = main(["--model=SASRec", f"--dataset={TINY_DATASET}", f"--data_path={tiny_data_path}",
                   "--config_files=typo.yaml", "--MAX_ITEM_LIST_LENGTH=0"])
    assert status == 2 and "invalid value for 'MAX_ITEM_LIST_LENGTH'" in capsys.readouterr().err
    assert [m.split(":")[2].strip() for m in warnings_in(caplog)] == ["unknown key 'epoch' (did you mean 'epochs'?)"]


@pytest.mark.parametrize("subcommand", [[], ["compare", "--models=SASRec"], ["tune", "--model=SASRec"]],
                         ids=["run", "compare", "tune"])
def test_unknown_key_on_the_command_line_stops_before_anything_loads(subcommand, tmp_path, capsys, monkeypatch):
    """'--epoch=1' (for --epochs) would train RecBole's 300 epochs: on the command line it is an error,
    found before the dataset (which does not exist here) is even looked for."""
    monkeypatch.chdir(tmp_path)
    argv = subcommand or ["--model=SASRec"]
    status = main([*argv, "--dataset=nowhere", f"--data_path={tmp_path}", "--epoch=1", "--epochs=2"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(lines) == 1, lines
    assert lines[0].startswith("run_recbole_linear.py: error: unknown key '--epoch' (did you mean 'epochs'?)")
    assert "--allow_unknown_keys=epoch" in lines[0]
    assert os.listdir(tmp_path) == []  # no log, no output folder


def test_a_key_allowed_on_purpose_reaches_the_config_without_a_warning(tiny_data_path, tmp_path, caplog, monkeypatch):
    """A custom model's key: --allow_unknown_keys names it; here and in the processes started later."""
    from recbole_linear import cli

    monkeypatch.setattr(known_keys, "_allowed", set())
    monkeypatch.setenv(known_keys.ALLOWED_ENV, "")  # restored after the test
    caplog.set_level(logging.WARNING, logger="recbole_linear")
    configs = []

    def run(model, dataset, config_file_list, cmd_args, **kwargs):
        configs.append(create_config(model, dataset, config_file_list, cmd_args=cmd_args))

    monkeypatch.setattr(cli, "run", run)  # the run the command line calls
    assert main(["--model=SASRec", f"--dataset={TINY_DATASET}", f"--data_path={tiny_data_path}",
                 "--my_width=3", "--my_gate=True", "--allow_unknown_keys=my_width,my_gate"]) == 0
    assert configs[0]["my_width"] == 3 and configs[0]["my_gate"] is True
    assert warnings_in(caplog) == [] and os.environ[known_keys.ALLOWED_ENV] == "my_gate,my_width"


# --- compare and tune check before training ------------------------------------------------------
def _compare(argv, tmp_path, capsys):
    status = main(["compare", f"--output_dir={tmp_path / 'out'}", f"--dataset={TINY_DATASET}", *argv])
    return status, capsys.readouterr().err.strip().splitlines()


def test_compare_unknown_model_fails_before_training(tiny_data_path, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, lines = _compare(["--models=LRURec,NoSuchModel", "--seeds=1", *tiny_cmd_args(tiny_data_path)], tmp_path, capsys)
    assert status == 2 and len(lines) == 1 and "unknown model 'NoSuchModel'" in lines[0]
    assert not os.path.exists(tmp_path / "out") and not os.path.exists(tmp_path / "saved")


def test_compare_checks_each_model_settings_before_training(tiny_data_path, tmp_path, capsys, caplog, monkeypatch):
    """LinRec's bad n_heads fails the command before LRURec (first in the plan) trains; the typo warns once."""
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.WARNING, logger="recbole_linear")
    (tmp_path / "linrec.yaml").write_text("n_heads: 3\n")
    (tmp_path / "typo.yaml").write_text("epoch: 1\n")  # in a file, an unknown key warns
    args = ["--models=LRURec,LinRec", "--seeds=1,2", *tiny_cmd_args(tiny_data_path), "--config_files=typo.yaml",
            "--model_config", "LinRec=linrec.yaml"]
    status, lines = _compare(args, tmp_path, capsys)
    assert status == 2 and lines == [
        "run_recbole_linear.py: error: LinRec needs hidden_size divisible by n_heads (got 32 and 3)"
    ]
    assert len(warnings_in(caplog)) == 1 and "'epoch'" in warnings_in(caplog)[0]
    assert not os.path.exists(tmp_path / "out")


def test_compare_checks_the_dataset_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, lines = _compare(["--models=SASRec", "--seeds=1", f"--data_path={tmp_path / 'nowhere'}"], tmp_path, capsys)
    assert status == 2 and len(lines) == 1 and f"dataset '{TINY_DATASET}' not found" in lines[0]


def test_tune_checks_model_and_keys_before_training(tiny_data_path, tmp_path, capsys, caplog, monkeypatch):
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.WARNING, logger="recbole_linear")
    assert main(["tune", "--model=NoSuchModel", f"--dataset={TINY_DATASET}", f"--data_path={tiny_data_path}"]) == 2
    assert "unknown model 'NoSuchModel'" in capsys.readouterr().err
    (tmp_path / "typo.yaml").write_text("epoch: 1\n")  # in a file, an unknown key warns
    status = main(["tune", "--model=LinRec", f"--dataset={TINY_DATASET}", f"--data_path={tiny_data_path}",
                   "--config_files=typo.yaml", "--hidden_size=32", "--n_heads=3", f"--output_dir={tmp_path / 'hyper'}"])
    assert status == 2 and "LinRec needs hidden_size divisible by n_heads" in capsys.readouterr().err
    assert len(warnings_in(caplog)) == 1 and not os.path.exists(tmp_path / "hyper")


# --- data_path -----------------------------------------------------------------------------------
def test_data_path_is_the_parent_of_the_dataset_folder_for_every_dataset(tmp_path):
    assert create_config("SASRec", "tiny", cmd_args=[f"--data_path={tmp_path}"])["data_path"] == str(tmp_path / "tiny")
    assert create_config("SASRec", "ml-100k", cmd_args=[f"--data_path={tmp_path}"])["data_path"] == str(tmp_path / "ml-100k")
    bundled = create_config("SASRec", "ml-100k")["data_path"]
    assert os.path.isfile(os.path.join(bundled, "ml-100k.inter"))  # no data_path: RecBole's bundled copy


def test_ml_100k_from_a_users_folder_is_read(tmp_path):
    """A user's own ml-100k (here 3 users x 5 interactions) is what RecBole loads, not the bundled copy."""
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    rows = "".join(f"{u}\t{5 * u + t}\t4\t{t}\n" for u in range(1, 4) for t in range(5))  # 15 items: topk 10 fits
    (folder / "ml-100k.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + rows)
    config = create_config("SASRec", "ml-100k", cmd_args=[f"--data_path={tmp_path}"])
    check_dataset(config)
    assert create_dataset(config).inter_num == 15


def test_evaluate_data_path_means_what_run_data_path_means(tiny_data_path, tmp_path):
    """evaluate's --data_path override of a saved run's config gives the config a run would have."""
    shutil.copytree(os.path.join(tiny_data_path, TINY_DATASET), tmp_path / "elsewhere" / TINY_DATASET)
    saved_run = create_config("SASRec", TINY_DATASET, cmd_args=[f"--data_path={tmp_path / 'elsewhere'}"])
    assert saved_run["data_path"] == str(tmp_path / "elsewhere" / TINY_DATASET)
    moved = override_config(saved_run, [f"--data_path={tiny_data_path}"], ["data_path"])
    fresh = create_config("SASRec", TINY_DATASET, cmd_args=[f"--data_path={tiny_data_path}"])
    assert moved["data_path"] == fresh["data_path"] == os.path.join(tiny_data_path, TINY_DATASET)
    check_dataset(moved)


# keys the plugin's shared code reads that no property file may define: the DDP launcher sets them
# per process (RecBole's run_recboles does the same), or Config sets them while it is built
_SET_AT_RUN_TIME = {
    "local_rank", "nproc", "world_size", "ip", "port", "offset",  # the launcher, per process
    "single_spec", "ddp_backend_used", "verbose",  # Config / distributed.init_process_group
    "trial_index",  # a Ray trial's own config (tune_ray), not a RecBole config
}
# RecBole's own keys that RecBole itself reads with no default anywhere (Dataset: open(encoding=None))
_RECBOLE_WITHOUT_DEFAULT = {"encoding"}
# read by shared code, defined by each model's own file (every model has a loss_type; the key
# linrec_causal is read only when the model is LinRec)
_MODEL_FILE_KEYS = {"loss_type", "linrec_causal"}


def test_every_key_shared_code_reads_has_a_default_in_an_overall_file():
    """A key the trainer, the data checks or the workflow read for every model has its default in
    RecBole's or the plugin's overall/dataset defaults, not only in one model's yaml (LinRec and
    GLINT-RU once read ``optimizer_eps`` with no default anywhere but LRURec's file)."""
    import glob

    from recbole_linear import paths

    recbole_properties = os.path.join(known_keys._RECBOLE_DIR, "properties")
    defaults = set(known_keys._RUNTIME_KEYS)
    for pattern in ("overall.yaml", "dataset/sample.yaml", "quick_start_config/*.yaml"):
        defaults |= known_keys._yaml_keys(os.path.join(recbole_properties, pattern))
    defaults |= known_keys._yaml_keys(os.path.join(paths.properties_dir(), "overall.yaml"))
    shared_code = [p for p in glob.glob(os.path.join(known_keys._PLUGIN_DIR, "**", "*.py"), recursive=True)
                   if os.sep + "model" + os.sep not in p and not p.endswith("known_keys.py")]  # its docstring shows config["key"]
    read = set()
    for path in shared_code:
        with open(path, encoding="utf-8") as f:
            read |= set(known_keys._KEY_READ.findall(f.read()))
    assert {"optimizer_eps", "saved_model_file", "train_all_positions"} <= read  # the scan sees them
    assert sorted(read - defaults - _SET_AT_RUN_TIME - _MODEL_FILE_KEYS - _RECBOLE_WITHOUT_DEFAULT) == []


@pytest.mark.parametrize("model", ["LRURec", "LinRec", "GLINTRU"])
def test_every_key_a_model_reads_has_a_default_in_its_files(model):
    """Each plugin model's ``config[...]`` keys are defined by RecBole's or the plugin's defaults or
    the model's own yaml, so RecBole's own Config (stock ``run_recbole``) finds them all."""
    from recbole_linear import paths

    recbole_properties = os.path.join(known_keys._RECBOLE_DIR, "properties")
    defaults = set(known_keys._RUNTIME_KEYS)
    for pattern in ("overall.yaml", "dataset/sample.yaml"):
        defaults |= known_keys._yaml_keys(os.path.join(recbole_properties, pattern))
    for name in ("overall.yaml", os.path.join("model", f"{model}.yaml")):
        defaults |= known_keys._yaml_keys(os.path.join(paths.properties_dir(), name))
    with open(os.path.join(known_keys._PLUGIN_DIR, "model", f"{model.lower()}.py"), encoding="utf-8") as f:
        read = set(known_keys._KEY_READ.findall(f.read()))
    assert "hidden_size" in read
    assert sorted(read - defaults) == []
