"""``merge``: finished runs of several compare folders in one folder and one summary."""
import csv
import os
import subprocess
import sys

import numpy as np
import pytest

from recbole_linear.errors import ConfigError
from recbole_linear.workflow import compare
from recbole_linear.workflow.merge import merge_folders
from tests.conftest import ROOT

USERS = np.array([f"u{i}" for i in range(30)])


def _make_run(folder, model, seed, overrides_hash, ndcg, status="ok", dataset="ml-1m-lru", mask="True"):
    """One run of a compare folder, as compare leaves it: row, config, per-user and log files."""
    run_id = f"{model}-seed{seed}-{overrides_hash}"
    for sub, name, text in (("configs", f"{run_id}.yaml", f"model: {model}\n"), ("logs", f"{run_id}.log", "log\n")):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
        with open(os.path.join(folder, sub, name), "w") as f:
            f.write(text)
    os.makedirs(os.path.join(folder, "per_user"), exist_ok=True)
    values = np.linspace(0, 1, len(USERS)) * ndcg * 2
    np.savez(os.path.join(folder, "per_user", f"{run_id}.npz"), user=USERS, **{"ndcg@10": values})
    row = {
        "run_id": run_id, "model": model, "seed": seed, "overrides_hash": overrides_hash, "dataset": dataset,
        "builtin": str(model == "SASRec"), "train_all_positions": "True", "eval_mask_history": mask,
        "status": status, "error": "" if status == "ok" else "RuntimeError: boom",
        "valid_recall@10": 0.3, "test_recall@10": 0.25 if status == "ok" else "", "test_ndcg@10": float(values.mean()) if status == "ok" else "",
        "best_valid_score": 0.3 if status == "ok" else "", "epochs_trained": 10,
        "checkpoint": f"../saved/{run_id}-abc123.pth", "config_file": f"configs/{run_id}.yaml",
        "per_user_file": f"per_user/{run_id}.npz" if status == "ok" else "", "log_file": f"logs/{run_id}.log",
    }
    return row


def _folder(path, *runs):
    os.makedirs(path, exist_ok=True)
    rows = [_make_run(str(path), *run[:4], **(run[4] if len(run) > 4 else {})) for run in runs]
    compare.write_runs(os.path.join(str(path), "runs.csv"), rows)
    return str(path)


def _rows(folder):
    with open(os.path.join(folder, "runs.csv"), newline="") as f:
        return list(csv.DictReader(f))


def test_merge_copies_finished_runs_with_paths_relative_to_the_new_folder(tmp_path):
    lru = _folder(tmp_path / "runs" / "lru", ("LRURec", 2020, "1d5b6105", 0.2))
    sas = _folder(tmp_path / "runs" / "sas", ("SASRec", 2020, "1d5b6105", 0.16), ("SASRec", 2021, "1d5b6105", 0.1, {"status": "failed"}))
    dest = str(tmp_path / "results" / "merged")
    lines = []
    merge_folders(dest, [lru, sas], out=lines.append)
    rows = _rows(dest)
    assert [r["run_id"] for r in rows] == ["LRURec-seed2020-1d5b6105", "SASRec-seed2020-1d5b6105"]  # the failed run is left out
    assert any("SASRec-seed2021-1d5b6105 failed, left out" in line for line in lines)
    for row, source in zip(rows, (lru, sas)):
        for key in ("config_file", "per_user_file", "log_file"):
            assert not os.path.isabs(row[key])
            with open(os.path.join(dest, row[key]), "rb") as copied, open(os.path.join(source, row[key]), "rb") as original:
                assert copied.read() == original.read()
        # the checkpoint stays where it is: the stored path resolves to the same file from the new folder
        assert os.path.normpath(os.path.join(dest, row["checkpoint"])) == os.path.normpath(
            os.path.join(source, "..", "saved", os.path.basename(row["checkpoint"]))
        )
    summary = open(os.path.join(dest, "summary.md")).read()
    assert "| LRURec | 1/1 |" in summary and "| SASRec | 1/1 |" in summary and "p vs SASRec" in summary
    assert "n/a" not in summary  # both per-user files were found in the new folder
    # merging again changes nothing; the folder's own runs are kept when another one joins
    merge_folders(dest, [lru, sas], out=lines.append)
    assert _rows(dest) == rows
    more = _folder(tmp_path / "runs" / "more", ("LRURec", 2021, "1d5b6105", 0.21))
    merge_folders(dest, [more], out=lines.append)
    assert [r["run_id"] for r in _rows(dest)] == [r["run_id"] for r in rows] + ["LRURec-seed2021-1d5b6105"]
    assert "| LRURec | 2/2 |" in open(os.path.join(dest, "summary.md")).read()


def test_merge_points_checkpoints_into_checkpoint_dir(tmp_path):
    source = _folder(tmp_path / "runs" / "sas", ("SASRec", 2020, "1d5b6105", 0.16))
    dest = tmp_path / "repo" / "results" / "merged"
    merge_folders(str(dest), [source], out=lambda line: None, checkpoint_dir=str(tmp_path / "repo" / "saved"))
    assert _rows(str(dest))[0]["checkpoint"] == os.path.join("..", "..", "saved", "SASRec-seed2020-1d5b6105-abc123.pth")


@pytest.mark.parametrize(
    "second, message",
    [
        (("SASRec", 2020, "e95ee5b2", 0.18), "SASRec has runs with different settings (overrides_hash 1d5b6105, e95ee5b2)"),
        (("LRURec", 2020, "1d5b6105", 0.2, {"dataset": "video-lru"}), "the runs differ in dataset (ml-1m-lru, video-lru)"),
        (("LRURec", 2020, "1d5b6105", 0.2, {"mask": "False"}), "the runs differ in eval_mask_history (False, True)"),
    ],
)
def test_merge_refuses_what_one_table_cannot_hold_and_writes_nothing(tmp_path, second, message):
    first = _folder(tmp_path / "a", ("SASRec", 2020, "1d5b6105", 0.16))
    other = _folder(tmp_path / "b", second)
    dest = tmp_path / "merged"
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        merge_folders(str(dest), [first, other], out=lambda line: None)
    assert not dest.exists()


def test_merge_command_line_errors_are_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "run_recbole_linear.py"), "merge", f"--output_dir={tmp_path / 'm'}", str(empty)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"run_recbole_linear.py: error: merge: no runs.csv in '{empty}' (expected a compare output folder)"]
    source = _folder(tmp_path / "src", ("LRURec", 2020, "1d5b6105", 0.2))
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "run_recbole_linear.py"), "merge", f"--output_dir={source}", source],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2 and "is the output folder itself" in result.stderr
