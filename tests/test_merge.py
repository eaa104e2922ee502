"""``merge``: finished runs of several compare folders in one folder and one summary."""
import csv
import os
import subprocess
import sys

import numpy as np
import pytest

from recbole_linear.errors import ConfigError
from recbole_linear.workflow.compare import command as compare
from recbole_linear.workflow.compare.merge import merge_folders
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
    lines.clear()
    merge_folders(dest, [lru, sas], out=lines.append)
    assert _rows(dest) == rows
    assert not any("warning" in line for line in lines)  # the same runs again: nothing to warn about
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


def test_merge_keeps_the_folders_runs_and_refuses_without_touching_it(tmp_path):
    dest = _folder(tmp_path / "merged", ("LRURec", 2020, "1d5b6105", 0.2), ("LRURec", 2021, "1d5b6105", 0.2, {"status": "failed"}))
    with open(os.path.join(dest, "runs.csv"), "rb") as f:
        before = f.read()
    # an old row without the protocol columns: its config (no eval_mask_history) says RecBole's unmasked ranking
    old = _folder(tmp_path / "old", ("SASRec", 2020, "1d5b6105", 0.16, {"mask": ""}))
    with pytest.raises(ConfigError, match=r"the runs differ in eval_mask_history \(False, True\)"):
        merge_folders(dest, [old], out=lambda line: None)
    with open(os.path.join(dest, "runs.csv"), "rb") as f:
        assert f.read() == before
    assert not os.path.exists(os.path.join(dest, "summary.md"))
    # a source given as another spelling of the folder itself, or a link to it
    os.symlink(dest, tmp_path / "link")
    for alias in (dest + os.sep, str(tmp_path / "link")):
        with pytest.raises(ConfigError, match="is the output folder itself"):
            merge_folders(dest, [alias], out=lambda line: None)
    # a compatible source joins; the folder's failed run stays in runs.csv and in the summary's list
    sas = _folder(tmp_path / "sas", ("SASRec", 2020, "1d5b6105", 0.16))
    merge_folders(dest, [sas], out=lambda line: None)
    assert [(r["run_id"], r["status"]) for r in _rows(dest)] == [
        ("LRURec-seed2020-1d5b6105", "ok"), ("LRURec-seed2021-1d5b6105", "failed"), ("SASRec-seed2020-1d5b6105", "ok")]
    assert "LRURec seed=2021: RuntimeError: boom" in open(os.path.join(dest, "summary.md")).read()


def test_merge_warns_when_a_run_comes_back_with_other_metrics_and_keeps_the_new_copy(tmp_path):
    first = _folder(tmp_path / "a", ("SASRec", 2020, "1d5b6105", 0.16))
    second = _folder(tmp_path / "b", ("SASRec", 2020, "1d5b6105", 0.12))
    dest = str(tmp_path / "merged")
    lines = []
    merge_folders(dest, [first, second], out=lines.append)
    assert any("has other test metrics than in" in line and f"the copy from '{second}' is kept" in line for line in lines)
    assert float(_rows(dest)[0]["test_ndcg@10"]) == pytest.approx(float(_rows(second)[0]["test_ndcg@10"]))


def test_merge_copies_files_named_by_absolute_paths_into_their_subfolders(tmp_path):
    source = _folder(tmp_path / "src", ("SASRec", 2020, "1d5b6105", 0.16))
    rows = _rows(source)
    for key in ("config_file", "per_user_file", "log_file"):
        rows[0][key] = os.path.join(source, rows[0][key])  # as older versions stored them
    rows[0]["log_file"] = str(tmp_path / "gone.log")  # and one that no longer exists
    compare.write_runs(os.path.join(source, "runs.csv"), rows)
    dest = str(tmp_path / "merged")
    lines = []
    merge_folders(dest, [source], out=lines.append)
    row = _rows(dest)[0]
    assert row["config_file"] == os.path.join("configs", "SASRec-seed2020-1d5b6105.yaml")
    assert row["per_user_file"] == os.path.join("per_user", "SASRec-seed2020-1d5b6105.npz")
    assert os.path.isfile(os.path.join(dest, row["per_user_file"])) and row["log_file"] == ""
    assert any("its log_file" in line and "is missing; not copied" in line for line in lines)
