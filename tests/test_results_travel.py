"""Results travel: run folders store paths relative to themselves, ``evaluate --runs`` skips runs
whose checkpoint is missing, and the committed ``results/`` folders are valid as they are."""
import csv
import glob
import os
import shutil

import pytest

from recbole_linear import run_recbole_linear
from recbole_linear.workflow.compare import command as compare
from recbole_linear.cli import main
from recbole_linear.workflow.common.run_table import load_runs, relative_path, resolve_path
from tests.conftest import ROOT, TINY_DATASET, TINY_SETTINGS

COMMITTED = sorted(glob.glob(os.path.join(ROOT, "results", "*", "runs.csv")))


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_default_output_folder_is_outside_the_tracked_results():
    assert compare.default_output_dir("ml-100k") == os.path.join("saved", "compare", "ml-100k")


def test_relative_and_resolved_paths(tmp_path):
    folder = tmp_path / "results" / "x"
    checkpoint = tmp_path / "saved" / "a.pth"
    assert relative_path(str(checkpoint), str(folder)) == os.path.join("..", "..", "saved", "a.pth")
    assert resolve_path(relative_path(str(checkpoint), str(folder)), str(folder)) == str(checkpoint)
    assert resolve_path("/elsewhere/b.pth", str(folder)) == "/elsewhere/b.pth"  # old absolute paths stay
    assert relative_path(None, str(folder)) == "" and resolve_path("", str(folder)) == ""


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: os.path.basename(os.path.dirname(p)))
def test_committed_runs_are_valid_and_store_no_machine_paths(path):
    folder = os.path.dirname(path)
    warnings = []
    rows, dropped = load_runs(path, warn=warnings.append)
    assert rows and not dropped and not warnings
    assert len(rows) == len(read_csv(path))  # one row per run
    for key in compare.PROTOCOL_KEYS:  # one regime and one protocol per table
        assert len({row[key] for row in rows}) == 1 and rows[0][key] in ("True", "False"), key
    for row in rows:
        assert row["status"] == "ok"
        for key in ("checkpoint", "config_file", "per_user_file", "log_file"):
            assert not os.path.isabs(row[key]), (key, row[key])
        # checkpoints are git-ignored: the cell says where the run kept it, relative to the folder
        assert row["checkpoint"].startswith(f"../../saved/{row['run_id']}") and row["checkpoint"].endswith(".pth")
        assert os.path.isfile(os.path.join(folder, row["config_file"]))
    evaluate_csv = os.path.join(folder, "evaluate.csv")
    if os.path.isfile(evaluate_csv):
        assert all(not os.path.isabs(r["checkpoint"]) for r in read_csv(evaluate_csv))


@pytest.fixture(scope="module")
def trained_checkpoint(tiny_data_path, tmp_path_factory):
    folder = tmp_path_factory.mktemp("travel")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        config_dict = {**TINY_SETTINGS, "data_path": tiny_data_path, "show_progress": False,
                       "checkpoint_dir": str(folder / "saved"), "log_wandb": False}
        result = run_recbole_linear("SASRec", TINY_DATASET, config_dict=config_dict)
    return result


def _runs_folder(root, checkpoints):
    """root/results/cmp/runs.csv with one finished run per checkpoint path (as stored)."""
    folder = root / "results" / "cmp"
    folder.mkdir(parents=True)
    rows = [
        {"run_id": f"SASRec-seed{i}-0123abcd", "model": "SASRec", "seed": str(i), "status": "ok",
         "test_ndcg@10": "0.1", "best_valid_score": "0.1", "checkpoint": path, "finished_at": "x"}
        for i, path in enumerate(checkpoints, start=1)
    ]
    compare.write_runs(str(folder / "runs.csv"), rows)
    return folder


def test_evaluate_skips_missing_checkpoints_and_follows_a_moved_folder(trained_checkpoint, tmp_path, capsys):
    root = tmp_path / "tree"
    (root / "saved").mkdir(parents=True)
    shutil.copy(trained_checkpoint["saved_model_file"], root / "saved" / "kept.pth")
    _runs_folder(root, ["../../saved/kept.pth", "../../saved/lost.pth"])
    moved = tmp_path / "moved"
    shutil.move(str(root), str(moved))  # the whole tree travels: relative paths still hold
    folder = moved / "results" / "cmp"

    assert main(["evaluate", f"--runs={folder}"]) == 0
    out = capsys.readouterr().out
    skipped = [line for line in out.splitlines() if "skipped" in line]
    lost = moved / "saved" / "lost.pth"
    assert skipped == [f"evaluate: skipped SASRec-seed2-0123abcd: checkpoint '{lost}' not found "
                       "(checkpoints are not committed with results)"]
    assert "[1/1] SASRec SASRec-seed1-0123abcd" in out
    (row,) = read_csv(folder / "evaluate.csv")
    assert row["checkpoint"] == os.path.join("..", "..", "saved", "kept.pth")  # relative to evaluate.csv's folder
    assert float(row["test_ndcg@10"]) == trained_checkpoint["test_result"]["ndcg@10"]
    # the same checkpoint and settings again: its row is replaced, not doubled
    assert main(["evaluate", f"--runs={folder}"]) == 0
    assert len(read_csv(folder / "evaluate.csv")) == 1


def test_evaluate_with_no_checkpoint_at_all_is_one_line(tmp_path, capsys):
    committed = os.path.join(ROOT, "results", "video-lru", "runs.csv")
    folder = tmp_path / "a" / "b" / "video-lru"
    folder.mkdir(parents=True)
    shutil.copy(committed, folder / "runs.csv")  # as in a fresh clone: no saved/ beside it
    assert main(["evaluate", f"--runs={folder}"]) == 2
    captured = capsys.readouterr()
    n_runs = len(read_csv(committed))
    assert captured.out.count("evaluate: skipped ") == n_runs
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and f"none of the {n_runs} finished runs in '{folder}' has its checkpoint here" in err[0]
    assert not (folder / "evaluate.csv").exists()


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "results", "*", "configs", "*.yaml"))))
def test_committed_run_configs_store_no_machine_paths(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    for line in text.splitlines():
        key, _, value = line.partition(": ")
        assert not os.path.isabs(value.strip()), f"{os.path.relpath(path, ROOT)}: {line}"


def test_dumped_config_paths_are_relative_to_the_file(tmp_path):
    from recbole_linear.workflow.compare.worker import dump_config
    from recbole_linear.config import create_config, read_yaml

    config = create_config("SASRec", "ml-100k", config_dict={"checkpoint_dir": str(tmp_path / "saved")})
    target = tmp_path / "run" / "configs" / "x.yaml"
    dump_config(config, str(target))
    dumped = read_yaml(str(target))
    assert dumped["checkpoint_dir"] == os.path.join("..", "..", "saved")
    assert not os.path.isabs(dumped["data_path"])
    assert os.path.samefile(os.path.join(target.parent, dumped["data_path"]), config["data_path"])
