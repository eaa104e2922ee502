"""Evaluating saved models again: ``eval_mask_history`` (the official LRURec protocol) and the
``evaluate`` command, checked against a plain per-user ranking loop."""
import csv
import math
import os
import subprocess
import sys

import pytest
import torch

from recbole_linear import create_config, load_data_and_model, run_recbole_linear
from recbole_linear.cli import main
from recbole_linear.errors import ConfigError
from recbole_linear.quick_start import evaluate_checkpoint
from recbole_linear.trainer import get_trainer, mask_input_window
from tests.conftest import ROOT, TINY_DATASET

K = 10


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # RecBole writes log/ and log_tensorboard/ into the cwd


def test_mask_input_window_masks_exactly_the_window_and_padding():
    scores = torch.arange(24, dtype=torch.float).view(3, 8)
    item_seq = torch.tensor([[1, 2, 0, 0], [3, 3, 7, 0], [5, 0, 0, 0]])
    expected = scores.clone()
    for row, items in enumerate(([0, 1, 2], [0, 3, 7], [0, 5])):
        expected[row, items] = float("-inf")
    assert torch.equal(mask_input_window(scores, item_seq), expected)
    assert torch.equal(scores, expected)  # in place, as RecBole's own masking of id 0


@pytest.fixture(scope="module")
def saved_lrurec(tiny_data_path, tmp_path_factory):
    """A 1-epoch LRURec on the tiny data; its checkpoint and reported test metrics."""
    folder = tmp_path_factory.mktemp("evaluate")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)  # RecBole writes log/ and log_tensorboard/ into the cwd
        from tests.conftest import TINY_SETTINGS

        config_dict = {
            **TINY_SETTINGS, "data_path": tiny_data_path, "show_progress": False,
            "checkpoint_dir": str(folder / "saved"), "log_wandb": False,
        }
        result = run_recbole_linear("LRURec", TINY_DATASET, config_dict=config_dict)
    return result


def reference_test_metrics(model_file, mask_window, per_user=None):
    """Recall@10 and NDCG@10 from a plain loop: score every item, rank each user's target.
    ``per_user``: a dict that receives each test user's NDCG@10 by user token."""
    config, model, dataset, _, _, test_data = load_data_and_model(model_file)
    model.eval()
    recall, ndcg = [], []
    with torch.no_grad():
        for interaction, _, positive_u, positive_i in test_data:
            scores = model.full_sort_predict(interaction)
            for row in range(scores.shape[0]):
                row_scores = scores[row].clone()
                row_scores[0] = -math.inf
                if mask_window:
                    for item in interaction[model.ITEM_SEQ][row].tolist():
                        row_scores[item] = -math.inf
                targets = positive_i[positive_u == row].tolist()
                assert len(targets) == 1  # leave-one-out: one test item per user
                rank = int((row_scores > row_scores[targets[0]]).sum())
                recall.append(1.0 if rank < K else 0.0)
                ndcg.append(1.0 / math.log2(rank + 2) if rank < K else 0.0)
                if per_user is not None:
                    user = int(interaction[config["USER_ID_FIELD"]][row])
                    per_user[str(dataset.id2token(config["USER_ID_FIELD"], user))] = ndcg[-1]
    return {"recall@10": sum(recall) / len(recall), "ndcg@10": sum(ndcg) / len(ndcg)}


def assert_rounded_equal(recbole_result, reference):
    for key, value in reference.items():  # RecBole rounds to metric_decimal_place (4)
        assert abs(float(recbole_result[key]) - value) <= 0.5e-4 + 1e-9, (key, recbole_result[key], value)


def test_reevaluation_without_overrides_reproduces_the_run(saved_lrurec):
    _, _, test_result = evaluate_checkpoint(saved_lrurec["saved_model_file"])
    assert test_result == dict(saved_lrurec["test_result"])
    assert_rounded_equal(test_result, reference_test_metrics(saved_lrurec["saved_model_file"], mask_window=False))


def test_masked_history_matches_the_plain_loop_and_changes_the_numbers(saved_lrurec):
    model_file = saved_lrurec["saved_model_file"]
    config, _, masked = evaluate_checkpoint(model_file, ["--eval_mask_history=True"])
    assert config["eval_mask_history"] is True
    reference = reference_test_metrics(model_file, mask_window=True)
    assert_rounded_equal(masked, reference)
    # the tiny data repeats items within a window, so ranking them out must move the metrics
    assert reference != reference_test_metrics(model_file, mask_window=False)


def test_evaluate_command_writes_one_row_per_checkpoint_and_setting(saved_lrurec, tmp_path, capsys):
    model_file = saved_lrurec["saved_model_file"]
    runs_dir = tmp_path / "cmp"
    runs_dir.mkdir()
    with open(runs_dir / "runs.csv", "w", newline="") as f:  # a compare folder with one finished run
        columns = ["run_id", "model", "seed", "status", "test_ndcg@10", "best_valid_score", "checkpoint", "finished_at"]
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerow({"run_id": "LRURec-seed2020-0123abcd", "model": "LRURec", "seed": 2020, "status": "ok",
                         "test_ndcg@10": 0.1, "best_valid_score": 0.1, "checkpoint": model_file, "finished_at": "x"})
        writer.writerow({"run_id": "SASRec-seed2020-0123abcd", "model": "SASRec", "seed": 2020, "status": "failed"})

    assert main(["evaluate", f"--runs={runs_dir}", "--eval_mask_history=True"]) == 0
    assert main(["evaluate", f"--runs={runs_dir}", "--eval_mask_history=True"]) == 0  # replaces its row
    assert main(["evaluate", f"--runs={runs_dir}"]) == 0
    with open(runs_dir / "evaluate.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["run_id"], r["settings"]) for r in rows] == [
        ("LRURec-seed2020-0123abcd", "eval_mask_history=True"), ("LRURec-seed2020-0123abcd", ""),
    ]
    assert_rounded_equal(
        {k[len("test_"):]: v for k, v in rows[0].items() if k.startswith("test_")},
        reference_test_metrics(model_file, mask_window=True),
    )
    assert float(rows[1]["test_ndcg@10"]) == saved_lrurec["test_result"]["ndcg@10"]
    assert "[1/1] LRURec LRURec-seed2020-0123abcd  test recall@10=" in capsys.readouterr().out


def test_evaluate_per_user_writes_each_test_users_ndcg(saved_lrurec, tiny_data_path, tmp_path, capsys):
    import numpy as np

    model_file = saved_lrurec["saved_model_file"]
    # the same data with user tokens that are not RecBole's internal ids ("u7" for "7"): a file of
    # ids instead of tokens fails (LRURec has no user parameters, so the numbers are unchanged)
    renamed = tmp_path / "renamed"
    os.makedirs(renamed / TINY_DATASET)
    with open(os.path.join(tiny_data_path, TINY_DATASET, f"{TINY_DATASET}.inter")) as f, \
            open(renamed / TINY_DATASET / f"{TINY_DATASET}.inter", "w") as g:
        g.write(f.readline())
        for line in f:
            g.write("u" + line)
    runs_dir = tmp_path / "cmp"
    (runs_dir / "per_user").mkdir(parents=True)
    own = runs_dir / "per_user" / "LRURec-seed2020-0123abcd.npz"  # compare's file of the run: kept
    np.savez(own, user=np.array(["x"]), **{"ndcg@10": np.array([0.5])})
    with open(runs_dir / "runs.csv", "w", newline="") as f:
        columns = ["run_id", "model", "seed", "status", "test_ndcg@10", "best_valid_score", "checkpoint", "finished_at"]
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerow({"run_id": "LRURec-seed2020-0123abcd", "model": "LRURec", "seed": 2020, "status": "ok",
                         "test_ndcg@10": 0.1, "best_valid_score": 0.1, "checkpoint": model_file, "finished_at": "x"})
    assert main(["evaluate", f"--runs={runs_dir}", "--per_user", "--eval_mask_history=True", f"--data_path={renamed}"]) == 0
    assert main(["evaluate", f"--runs={runs_dir}", "--per_user"]) == 0
    with open(runs_dir / "evaluate.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["per_user_file"] for r in rows] == [
        "evaluate_per_user/LRURec-seed2020-0123abcd--eval_mask_history=True.npz",
        "evaluate_per_user/LRURec-seed2020-0123abcd.npz",
    ]
    with np.load(own) as kept:
        assert list(kept["user"]) == ["x"]
    for row, mask_window, prefix in zip(rows, (True, False), ("u", "")):
        with np.load(runs_dir / row["per_user_file"]) as saved:
            users, values = list(saved["user"]), saved["ndcg@10"]
        expected = {}
        reference_test_metrics(model_file, mask_window, per_user=expected)
        expected = {prefix + user: value for user, value in expected.items()}
        assert sorted(users) == sorted(expected) and len(users) == len(set(users))
        np.testing.assert_allclose(values, [expected[u] for u in users], rtol=1e-12, atol=1e-12)
        assert abs(values.mean() - float(row["test_ndcg@10"])) <= 0.5e-4 + 1e-9
    # with --checkpoint, the file is named after the checkpoint
    output = tmp_path / "re" / "out.csv"
    assert main(["evaluate", f"--checkpoint={model_file}", f"--output={output}", "--per_user"]) == 0
    stem = os.path.splitext(os.path.basename(model_file))[0]
    assert (output.parent / "evaluate_per_user" / f"{stem}.npz").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--epochs=3"], "'--epochs' cannot be changed here"),
        (["--eval_mask_history=3"], "invalid value for 'eval_mask_history'"),
    ],
)
def test_evaluate_refuses_training_settings_and_bad_values(saved_lrurec, args, message, tmp_path, capsys):
    output = tmp_path / "out.csv"
    status = main(["evaluate", f"--checkpoint={saved_lrurec['saved_model_file']}", f"--output={output}", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and message in err[0]
    assert not output.exists()


def test_evaluate_needs_something_to_evaluate(capsys):
    assert main(["evaluate"]) == 2
    assert "nothing to evaluate" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint=no/such/file.pth"]) == 2
    assert "checkpoint 'no/such/file.pth' not found" in capsys.readouterr().err


def test_evaluate_refuses_files_that_are_not_checkpoints(tmp_path, capsys):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    other = tmp_path / "tensor.pth"
    torch.save({"weights": torch.zeros(2)}, other)
    for path, message in ((garbage, "cannot read checkpoint"), (other, "is not a checkpoint saved by a RecBole run")):
        assert main(["evaluate", f"--checkpoint={path}"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err


def test_mask_history_is_a_checked_bool(tiny_data_path):
    with pytest.raises(ConfigError, match="eval_mask_history"):
        create_config("LRURec", TINY_DATASET, config_dict={"data_path": tiny_data_path, "eval_mask_history": "yes"})
    config = create_config("LRURec", TINY_DATASET, config_dict={"data_path": tiny_data_path})
    assert config["eval_mask_history"] is False  # RecBole's protocol unless asked


def test_mask_history_refuses_sampled_evaluation(saved_lrurec):
    config, model, *_ = load_data_and_model(saved_lrurec["saved_model_file"], ["--eval_mask_history=True"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    with pytest.raises(ConfigError, match="needs full-ranking evaluation"):
        trainer.evaluate(["a sampled evaluation"], load_best_model=False)


def test_evaluate_in_a_fresh_process(saved_lrurec, tmp_path):
    """Nothing in a new process has built a RecBole Config (which restores numpy's old aliases
    that RecBole's metrics use): loading a checkpoint must still evaluate."""
    output = tmp_path / "fresh.csv"
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "run_recbole_linear.py"), "evaluate",
         f"--checkpoint={saved_lrurec['saved_model_file']}", f"--output={output}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    with open(output, newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert float(row["test_ndcg@10"]) == saved_lrurec["test_result"]["ndcg@10"]


def test_evaluate_refuses_a_folder_another_command_holds(saved_lrurec, tmp_path, capsys):
    from recbole_linear.workflow.common.folder_lock import FolderLock

    runs_dir = tmp_path / "cmp"
    runs_dir.mkdir()
    with open(runs_dir / "runs.csv", "w", newline="") as f:
        columns = ["run_id", "model", "seed", "status", "test_ndcg@10", "best_valid_score", "checkpoint", "finished_at"]
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerow({"run_id": "LRURec-seed2020-0123abcd", "model": "LRURec", "seed": 2020, "status": "ok",
                         "test_ndcg@10": 0.1, "best_valid_score": 0.1, "checkpoint": saved_lrurec["saved_model_file"],
                         "finished_at": "x"})
    with FolderLock(str(runs_dir), "compare"):
        assert main(["evaluate", f"--runs={runs_dir}"]) == 2
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1 and "in use" in error[0]
        assert not (runs_dir / "evaluate.csv").exists()
    assert main(["evaluate", f"--runs={runs_dir}"]) == 0  # free again
    assert (runs_dir / "evaluate.csv").exists() and not (runs_dir / ".recbole_linear.lock").exists()
