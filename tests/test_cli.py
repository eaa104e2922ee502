"""The command line: 1-epoch runs on tiny data, and one clear line for each kind of bad input."""
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, TINY_DATASET, tiny_cmd_args

SCRIPT = os.path.join(ROOT, "run_recbole_linear.py")


def run_cli(args, cwd, timeout=600):
    return subprocess.run(
        [sys.executable, SCRIPT, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def tiny_args(data_path):
    return [f"--dataset={TINY_DATASET}", *tiny_cmd_args(data_path)]


@pytest.mark.parametrize("model", ["SASRec", "LRURec", "LinRec", "GLINTRU", "GLINT-RU"])
def test_one_epoch_run_ends_with_test_metrics_and_checkpoint(model, tiny_data_path, tmp_path):
    result = run_cli([f"--model={model}", *tiny_args(tiny_data_path)], cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "test result" in output and "ndcg@10" in output
    checkpoints = os.listdir(tmp_path / "saved")
    expected_name = "GLINTRU" if model == "GLINT-RU" else model
    assert len(checkpoints) == 1 and checkpoints[0].startswith(expected_name + "-")
    assert f"checkpoint" in output and checkpoints[0] in output
    # RecBole's log file and TensorBoard events are written as usual
    assert any(files for _, _, files in os.walk(tmp_path / "log"))
    assert os.path.isdir(tmp_path / "log_tensorboard")


def _assert_one_line_error(result, *fragments):
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_unknown_model(tmp_path):
    result = run_cli(["--model=NoSuchModel", "--epochs=1"], cwd=tmp_path)
    _assert_one_line_error(result, "unknown model 'NoSuchModel'", "LRURec", "SASRec")


def test_unknown_dataset(tmp_path):
    result = run_cli(["--model=SASRec", "--dataset=no-such-dataset"], cwd=tmp_path)
    _assert_one_line_error(result, "dataset 'no-such-dataset' not found", "no-such-dataset.inter")


def test_missing_atomic_file(tiny_data_path, tmp_path):
    empty = tmp_path / "data" / TINY_DATASET
    empty.mkdir(parents=True)
    result = run_cli(["--model=SASRec", f"--dataset={TINY_DATASET}", f"--data_path={tmp_path / 'data'}"], cwd=tmp_path)
    _assert_one_line_error(result, f"{TINY_DATASET}.inter")


def test_unreadable_config_file(tmp_path):
    result = run_cli(["--model=SASRec", "--config_files=missing.yaml other.yaml"], cwd=tmp_path)
    _assert_one_line_error(result, "cannot read config file 'missing.yaml'")


def test_malformed_config_file(tmp_path):
    (tmp_path / "bad.yaml").write_text("epochs: [1, 2\n")
    result = run_cli(["--model=SASRec", "--config_files=bad.yaml"], cwd=tmp_path)
    _assert_one_line_error(result, "bad.yaml", "not valid YAML")


@pytest.mark.parametrize(
    "override, key",
    [("--MAX_ITEM_LIST_LENGTH=0", "MAX_ITEM_LIST_LENGTH"), ("--MAX_ITEM_LIST_LENGTH=-3", "MAX_ITEM_LIST_LENGTH"),
     ("--learning_rate=0", "learning_rate"), ("--train_batch_size=abc", "train_batch_size")],
)
def test_invalid_values(override, key, tmp_path):
    result = run_cli(["--model=SASRec", override], cwd=tmp_path)
    _assert_one_line_error(result, f"invalid value for '{key}'")


def test_override_in_wrong_form(tmp_path):
    result = run_cli(["--model=SASRec", "--epochs", "3"], cwd=tmp_path)
    _assert_one_line_error(result, "--epochs", "--key=value")


def test_help_lists_subcommands_and_options(tmp_path):
    result = run_cli(["--help"], cwd=tmp_path)
    assert result.returncode == 0
    for option in ("--model", "--dataset", "--config_files", "--nproc", "--world_size", "--ip", "--port"):
        assert option in result.stdout
    # the subcommands, each with what it does, and how RecBole settings are given
    lines = result.stdout.splitlines()
    for subcommand in ("tune", "compare", "evaluate", "merge"):
        assert any(line.startswith(f"  {subcommand}  ") for line in lines), subcommand
        assert f"run_recbole_linear.py {subcommand} --" in result.stdout
    assert "{tune,compare,evaluate,merge}" in lines[2]
    assert "--key=value: every argument of this form" in result.stdout and "'--epochs 50' is refused" in result.stdout
