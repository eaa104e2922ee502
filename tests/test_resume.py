"""Interrupted runs resume from their last finished epoch, bit-identical to an uninterrupted run.

A ``compare`` worker (``python -m recbole_linear.workflow.compare.worker``) trains LRURec for 4 epochs on
the tiny dataset with dropout and shuffling, so every epoch draws random numbers. A second
worker is really killed (SIGKILL, by a wrapper of the plugin's own code in that child process)
in the middle of epoch 2 (0-based), after the resume file of epoch 1 was written; a third one
resumes it. Its training losses of epochs 2 and 3, its best-valid and test metrics, per-user
NDCG and best checkpoint must equal the uninterrupted run's exactly; a resume without the saved
random states must not (so the equality is not trivial). With validation every second epoch,
a run killed during epoch 3 resumes from epoch 3, not from its last validation (epoch 1).
"""
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from recbole_linear import resume
from recbole_linear.config import create_config
from recbole_linear.quick_start import prepare
from recbole_linear.trainer import load_checkpoint
from tests.conftest import ROOT, TINY_DATASET, tiny_cmd_args

EPOCHS = 4
RUN_ID = "LRURec-resume"

# The child that dies: SIGKILL at the second training batch after the resume file of epoch
# KILL_AFTER was written, or right after writing it when no batch follows (the last epoch).
KILLING_CHILD = r"""
import os, signal, sys
from recbole_linear import resume
from recbole_linear.workflow.compare import worker as compare_worker
from recbole_linear.model.lrurec import LRURec

spec_file, kill_after = sys.argv[1], int(sys.argv[2])
original_save, original_loss = resume.save, LRURec.calculate_loss
armed, batches = [], []

def save_then_arm(trainer, epoch_idx, train_data, path, *rest):
    original_save(trainer, epoch_idx, train_data, path, *rest)
    if epoch_idx == kill_after:
        armed.append(epoch_idx)
        if epoch_idx + 1 == trainer.epochs:
            os.kill(os.getpid(), signal.SIGKILL)

def loss_then_kill(self, interaction):
    if armed:
        batches.append(1)
        if len(batches) == 2:  # one optimizer step of the next epoch is done: mid-epoch
            os.kill(os.getpid(), signal.SIGKILL)
    return original_loss(self, interaction)

resume.save, LRURec.calculate_loss = save_then_arm, loss_then_kill
sys.exit(compare_worker.main([spec_file]))
"""


def write_spec(folder, data_path, eval_step=1):
    """A compare worker spec for the 4-epoch run writing into ``folder``."""
    os.makedirs(folder, exist_ok=True)
    spec = {
        "run_id": RUN_ID,
        "model": "LRURec",
        "dataset": TINY_DATASET,
        "config_files": None,
        "cmd_args": tiny_cmd_args(
            data_path,
            epochs=EPOCHS,
            seed=7,
            checkpoint_dir=os.path.join(folder, "saved"),
            metric_decimal_place=10,
            loss_decimal_place=10,
            train_batch_size=32,
            show_progress=False,
            eval_step=eval_step,
        ),
        "config_file": os.path.join(folder, "config.yaml"),
        "per_user_file": os.path.join(folder, "per_user.npz"),
        "result_file": os.path.join(folder, "result.json"),
    }
    spec_file = os.path.join(folder, "spec.json")
    with open(spec_file, "w") as f:
        json.dump(spec, f)
    return spec_file


def paths_of(folder):
    checkpoint = os.path.join(folder, "saved", f"{RUN_ID}.pth")
    return checkpoint, resume.resume_file_for(checkpoint), os.path.join(folder, "result.json")


def run_child(args, folder):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    return subprocess.run(
        [sys.executable, *args], cwd=folder, env=env, capture_output=True, text=True, timeout=300
    )


def run_worker(folder):
    process = run_child(["-m", "recbole_linear.workflow.compare.worker", os.path.join(folder, "spec.json")], folder)
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    with open(paths_of(folder)[2]) as f:
        return json.load(f), process.stdout + process.stderr


def kill_worker(folder, kill_after):
    process = run_child(["-c", KILLING_CHILD, os.path.join(folder, "spec.json"), str(kill_after)], folder)
    assert process.returncode == -signal.SIGKILL, process.stdout[-3000:] + process.stderr[-3000:]
    return process.stdout + process.stderr


def train_losses(output):
    """{epoch: train loss} from RecBole's 'epoch N training [time: ..., train loss: X]' lines."""
    return {int(e): float(v) for e, v in re.findall(r"epoch (\d+) training \[time: [^,]+, train loss: ([-\d.]+)\]", output)}


def same_state_dicts(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def uninterrupted(tiny_data_path, tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("uninterrupted"))
    write_spec(folder, tiny_data_path)
    result, output = run_worker(folder)
    return {"folder": folder, "result": result, "losses": train_losses(output)}


@pytest.fixture(scope="module")
def killed_mid_epoch(tiny_data_path, tmp_path_factory):
    """A run SIGKILLed during epoch 2, and a copy of its folder made before anything resumed it."""
    folder = str(tmp_path_factory.mktemp("killed"))
    write_spec(folder, tiny_data_path)
    output = kill_worker(folder, kill_after=1)
    copy = str(tmp_path_factory.mktemp("killed-copy"))
    shutil.copytree(os.path.join(folder, "saved"), os.path.join(copy, "saved"))
    write_spec(copy, tiny_data_path)
    return {"folder": folder, "copy": copy, "losses": train_losses(output)}


def test_uninterrupted_run_trains_every_epoch_and_leaves_no_resume_file(uninterrupted):
    assert sorted(uninterrupted["losses"]) == list(range(EPOCHS))
    assert uninterrupted["result"]["epochs_trained"] == EPOCHS
    assert uninterrupted["result"]["resumed_from_epoch"] is None
    checkpoint, resume_file, _ = paths_of(uninterrupted["folder"])
    assert os.path.isfile(checkpoint) and not os.path.exists(resume_file)


def test_killed_run_leaves_the_state_after_its_last_validated_epoch(killed_mid_epoch, uninterrupted):
    assert sorted(killed_mid_epoch["losses"]) == [0, 1]  # epoch 2 never finished
    _, resume_file, result_file = paths_of(killed_mid_epoch["folder"])
    assert not os.path.exists(result_file)
    state = load_checkpoint(resume_file)
    assert (state["epoch"], state["finished"], len(state["epoch_train_seconds"])) == (1, False, 2)
    assert {k: uninterrupted["losses"][k] for k in (0, 1)} == killed_mid_epoch["losses"]


def test_resumed_run_equals_the_uninterrupted_run(killed_mid_epoch, uninterrupted):
    folder = killed_mid_epoch["folder"]
    result, output = run_worker(folder)
    resumed_losses = train_losses(output)
    assert sorted(resumed_losses) == [2, 3]  # it continued, it did not start again
    assert result["resumed_from_epoch"] == 2 and result["epochs_trained"] == EPOCHS
    assert resumed_losses == {k: uninterrupted["losses"][k] for k in (2, 3)}
    reference = uninterrupted["result"]
    assert result["best_valid_result"] == reference["best_valid_result"]
    assert result["test_result"] == reference["test_result"]
    assert result["best_valid_score"] == reference["best_valid_score"]
    checkpoint, resume_file, _ = paths_of(folder)
    assert same_state_dicts(
        load_checkpoint(checkpoint)["state_dict"], load_checkpoint(paths_of(uninterrupted["folder"])[0])["state_dict"]
    )
    ours, theirs = np.load(os.path.join(folder, "per_user.npz")), np.load(os.path.join(uninterrupted["folder"], "per_user.npz"))
    assert np.array_equal(ours["ndcg@10"], theirs["ndcg@10"]) and np.array_equal(ours["user"], theirs["user"])
    assert not os.path.exists(resume_file)  # removed once the run was tested


def test_resuming_without_the_random_states_does_not_reproduce(killed_mid_epoch, uninterrupted):
    """The same weights and optimizer, but fresh random states: epoch 2 trains differently."""
    folder = killed_mid_epoch["copy"]
    checkpoint, resume_file, _ = paths_of(folder)
    state = load_checkpoint(resume_file)
    torch.manual_seed(12345)
    np.random.seed(12345)
    state["rng"] = resume.capture_rng_state()  # no train generator state: the loader keeps its own seed
    state["saved_model_file"] = checkpoint
    torch.save(state, resume_file)
    result, output = run_worker(folder)
    assert result["resumed_from_epoch"] == 2
    assert train_losses(output)[2] != uninterrupted["losses"][2]


def test_run_killed_after_its_last_epoch_resumes_without_training(tiny_data_path, tmp_path, uninterrupted):
    folder = str(tmp_path)
    write_spec(folder, tiny_data_path)
    kill_worker(folder, kill_after=EPOCHS - 1)
    checkpoint, resume_file, _ = paths_of(folder)
    assert load_checkpoint(resume_file)["finished"] is True
    written = os.stat(checkpoint).st_mtime_ns
    result, output = run_worker(folder)
    assert train_losses(output) == {}
    assert os.stat(checkpoint).st_mtime_ns == written  # RecBole's fit would have overwritten it
    assert result["epochs_trained"] == EPOCHS and result["resumed_from_epoch"] == EPOCHS
    assert result["test_result"] == uninterrupted["result"]["test_result"]
    assert result["best_valid_result"] == uninterrupted["result"]["best_valid_result"]


# --- validation every second epoch: the resume file is written after the epochs between validations too
@pytest.fixture(scope="module")
def uninterrupted_every_second(tiny_data_path, tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("uninterrupted-2"))
    write_spec(folder, tiny_data_path, eval_step=2)
    result, output = run_worker(folder)
    return {"folder": folder, "result": result, "losses": train_losses(output), "output": output}


def test_killed_between_validations_resumes_from_the_epoch_it_finished(
    tiny_data_path, tmp_path, uninterrupted_every_second
):
    reference = uninterrupted_every_second
    assert len(re.findall(r"epoch \d+ evaluating", reference["output"])) == 2  # epochs 1 and 3 validated
    folder = str(tmp_path)
    write_spec(folder, tiny_data_path, eval_step=2)
    killed = train_losses(kill_worker(folder, kill_after=2))  # epoch 2 is not validated; killed in epoch 3
    assert sorted(killed) == [0, 1, 2]
    state = load_checkpoint(paths_of(folder)[1])
    assert (state["epoch"], state["finished"], state["cur_step"]) == (2, False, 0)
    assert dict(state["best_valid_result"]) == validation_results(reference["output"])[0]  # epoch 1's

    result, output = run_worker(folder)
    assert train_losses(output) == {3: reference["losses"][3]}  # only the epoch in progress was lost
    assert result["resumed_from_epoch"] == 3 and result["epochs_trained"] == EPOCHS
    assert result["best_valid_result"] == reference["result"]["best_valid_result"]
    assert result["test_result"] == reference["result"]["test_result"]
    assert same_state_dicts(
        load_checkpoint(paths_of(folder)[0])["state_dict"], load_checkpoint(paths_of(reference["folder"])[0])["state_dict"]
    )


def validation_results(output):
    """Each validation's metrics, in order, from RecBole's 'valid result:' lines."""
    blocks = re.findall(r"valid result: \n(.*)", output)
    return [{k: float(v) for k, v in re.findall(r"(\S+) : ([-\d.]+)", block)} for block in blocks]


def test_run_without_validation_resumes_after_every_epoch(tiny_run_dict, tmp_path, monkeypatch):
    """``eval_step: 0`` (no validation; RecBole saves the checkpoint every epoch): a run that crashed
    after epoch 0 resumes at epoch 1; one that died right after writing its last epoch's resume
    file, before RecBole saved that epoch's checkpoint, still tests the last epoch's weights."""
    from recbole_linear import run_recbole_linear

    monkeypatch.chdir(tmp_path)
    settings = dict(tiny_run_dict, epochs=3, metric_decimal_place=10, seed=5, eval_step=0)
    reference = run_recbole_linear("SASRec", TINY_DATASET, config_dict=dict(settings, resume_file=str(tmp_path / "a.pth")))
    assert reference["best_valid_result"] is None  # RecBole trained without validation

    path = str(tmp_path / "b.pth")
    original_save, saved_epochs = resume.save, []

    def crash_after(epoch):
        def save_then_crash(trainer, epoch_idx, train_data, file, *rest):
            original_save(trainer, epoch_idx, train_data, file, *rest)
            saved_epochs.append((trainer.start_epoch, epoch_idx))
            if epoch_idx == epoch:
                raise RuntimeError(f"simulated crash after epoch {epoch}")
        return save_then_crash

    for epoch in (0, 2):
        monkeypatch.setattr(resume, "save", crash_after(epoch))
        with pytest.raises(RuntimeError, match="simulated crash"):
            run_recbole_linear("SASRec", TINY_DATASET, config_dict=dict(settings, resume_file=path))
    assert saved_epochs == [(0, 0), (1, 1), (1, 2)]  # the second attempt started at epoch 1
    state = load_checkpoint(path)
    assert state["finished"] is True and state["validates"] is False
    assert load_checkpoint(state["saved_model_file"])["epoch"] == 1  # the crash came before epoch 2's checkpoint
    monkeypatch.setattr(resume, "save", original_save)

    resumed = run_recbole_linear("SASRec", TINY_DATASET, config_dict=dict(settings, resume_file=path))
    assert resumed["epochs_trained"] == 3
    assert load_checkpoint(state["saved_model_file"])["epoch"] == 2
    assert dict(resumed["test_result"]) == dict(reference["test_result"])


def crash_after_first_save(model, settings, path):
    """``run`` of ``model`` with ``resume_file=path``, crashed right after it first wrote that
    file; returns the file's state."""
    from recbole_linear import run_recbole_linear

    original_save = resume.save

    def save_then_crash(trainer, epoch_idx, train_data, file, *rest):
        original_save(trainer, epoch_idx, train_data, file, *rest)
        raise RuntimeError("simulated crash")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(resume, "save", save_then_crash)
        with pytest.raises(RuntimeError, match="simulated crash"):
            run_recbole_linear(model, TINY_DATASET, config_dict=dict(settings, resume_file=path))
    return load_checkpoint(path)


def test_trainer_with_two_optimizers_resumes_both(tiny_run_dict, tmp_path, monkeypatch):
    """RecVAE's trainer alternates an encoder and a decoder optimizer (``optimizer`` points at one
    of them): a run that crashed after epoch 0 resumes with both and ends as an uninterrupted one."""
    from recbole_linear import run_recbole_linear

    monkeypatch.chdir(tmp_path)
    # one validation, after the last epoch: the best checkpoint holds the final weights
    settings = dict(tiny_run_dict, epochs=3, eval_step=3, metric_decimal_place=10, seed=3)
    reference = run_recbole_linear("RecVAE", TINY_DATASET, config_dict=dict(settings, resume_file=str(tmp_path / "a.pth")))
    path = str(tmp_path / "b.pth")
    state = crash_after_first_save("RecVAE", settings, path)
    assert sorted(state["optimizers"]) == ["optimizer_decoder", "optimizer_encoder"]
    assert state["current_optimizer"] == "optimizer_decoder"
    resumed = run_recbole_linear("RecVAE", TINY_DATASET, config_dict=dict(settings, resume_file=path))
    assert resumed["epochs_trained"] == 3
    assert dict(resumed["test_result"]) == dict(reference["test_result"])
    # ranks on 40 users hide small differences: the weights must be equal too
    final = [load_checkpoint(r["saved_model_file"])["state_dict"] for r in (resumed, reference)]
    assert same_state_dicts(*final)


def test_pretraining_stage_does_not_resume(tiny_data_path, tmp_path, monkeypatch):
    """A model in a pretraining stage (S3Rec, RaCT: PretrainTrainer.pretrain, which counts
    ``pretrain_epochs`` and saves its own files) gets no resume hook; its finetune stage does."""
    monkeypatch.chdir(tmp_path)
    config = create_config("SASRec", TINY_DATASET, cmd_args=tiny_cmd_args(tiny_data_path, show_progress=False))
    _, _, model, trainer = prepare(config)
    model.train_stage = "pretrain"
    assert trainer.enable_resume(str(tmp_path / "run.resume.pth")) is False and trainer.resume_file is None
    model.train_stage = "finetune"
    assert trainer.enable_resume(str(tmp_path / "run.resume.pth")) is True


# --- in-process units ---------------------------------------------------------------------------
def test_random_states_round_trip_including_the_loader_generator():
    generator = torch.Generator().manual_seed(3)
    holder = type("Loader", (), {"generator": generator})()
    state = resume.capture_rng_state(holder)
    first = (torch.rand(3), np.random.rand(3), __import__("random").random(), torch.rand(3, generator=generator))
    resume.restore_rng_state(state, holder)
    again = (torch.rand(3), np.random.rand(3), __import__("random").random(), torch.rand(3, generator=generator))
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert first[2] == again[2] and torch.equal(first[3], again[3])


def _one_epoch_with_resume_file(model, tiny_data_path, tmp_path):
    """(args, config, trainer, resume file) of a 1-epoch run that kept its resume file under tmp_path."""
    args = tiny_cmd_args(tiny_data_path, show_progress=False)
    config = create_config(model, TINY_DATASET, cmd_args=args + [f"--checkpoint_dir={tmp_path / 'saved'}"])
    _, (train_data, valid_data, _), _, trainer = prepare(config)
    path = str(tmp_path / "saved" / "run.resume.pth")
    trainer.enable_resume(path)
    trainer.fit(train_data, valid_data, saved=True)
    return args, config, trainer, path


def test_resume_file_of_other_settings_is_set_aside_not_used(tiny_data_path, tmp_path, monkeypatch, caplog):
    """Not resumed from, and not overwritten either: the run under the new settings saves its own
    file, so the old one (maybe hours of training) is renamed and the warning names what differs."""
    monkeypatch.chdir(tmp_path)
    args, config, trainer, path = _one_epoch_with_resume_file("SASRec", tiny_data_path, tmp_path)
    assert resume.load(trainer, path)["epoch"] == 0
    saved_state = load_checkpoint(path)
    other = create_config("SASRec", TINY_DATASET, cmd_args=args + ["--learning_rate=0.005"])
    _, _, _, other_trainer = prepare(other)
    with caplog.at_level(logging.WARNING):
        assert resume.load(other_trainer, path) is None
    aside = resume.set_aside_file_for(path, saved_state["config_signature"])
    assert not os.path.exists(path) and os.path.isfile(aside)
    assert same_state_dicts(load_checkpoint(aside)["state_dict"], saved_state["state_dict"])
    assert "learning_rate: 0.001 -> 0.005" in caplog.text and aside in caplog.text
    # where files go does not make the settings different
    moved = create_config("SASRec", TINY_DATASET, cmd_args=args + [f"--checkpoint_dir={tmp_path / 'elsewhere'}"])
    assert resume.config_signature(moved) == resume.config_signature(config)
    assert resume.config_signature(other) != resume.config_signature(config)


def _as_if_written_before(path, missing_keys):
    """Rewrite a resume file as a version of the plugin without ``missing_keys`` would have."""
    state = load_checkpoint(path)
    settings = json.loads(state["config_settings"])
    for key in missing_keys:
        del settings[key]
    state["config_settings"] = json.dumps(settings, sort_keys=True)
    state["config_signature"] = resume.hashlib.sha1(state["config_settings"].encode("utf-8")).hexdigest()
    torch.save(state, path)
    return state


def test_options_added_since_the_file_at_their_defaults_do_not_stop_a_resume(tiny_data_path, tmp_path, monkeypatch, caplog):
    """A run cut off under an older plugin resumes under a newer one whose new keys (here the
    plugin-wide ce_block_rows and LRURec's own lru_dropout_prob, as if added since) keep their
    defaults; set one of them to another value and the file is set aside as before."""
    monkeypatch.chdir(tmp_path)
    args, config, trainer, path = _one_epoch_with_resume_file("LRURec", tiny_data_path, tmp_path)
    old = _as_if_written_before(path, ["ce_block_rows", "lru_dropout_prob"])
    assert old["config_signature"] != resume.config_signature(config)

    with caplog.at_level(logging.INFO):
        state = resume.load(trainer, path)
    assert state is not None and state["epoch"] == 0 and os.path.isfile(path)
    assert "written before the plugin had ce_block_rows, lru_dropout_prob" in caplog.text

    caplog.clear()
    other = create_config("LRURec", TINY_DATASET, cmd_args=args + ["--ce_block_rows=64"])
    _, _, _, other_trainer = prepare(other)
    with caplog.at_level(logging.WARNING):
        assert resume.load(other_trainer, path) is None
    assert "ce_block_rows: absent -> 64" in caplog.text and not os.path.exists(path)


def test_resume_file_written_before_per_epoch_saving_still_resumes(tiny_data_path, tmp_path, monkeypatch):
    """Files written by the version that saved only after validations (no 'optimizers',
    'current_optimizer' or 'validates') resume: long runs were cut off with such files."""
    monkeypatch.chdir(tmp_path)
    args = tiny_cmd_args(tiny_data_path, show_progress=False, epochs=2)
    config = create_config("SASRec", TINY_DATASET, cmd_args=args + [f"--checkpoint_dir={tmp_path / 'saved'}"])
    _, (train_data, valid_data, _), _, trainer = prepare(config)
    path = str(tmp_path / "saved" / "run.resume.pth")
    trainer.enable_resume(path)
    original_save = resume.save

    def save_then_stop(trainer, epoch_idx, train_data, file, *rest):
        original_save(trainer, epoch_idx, train_data, file, *rest)
        raise KeyboardInterrupt

    monkeypatch.setattr(resume, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(train_data, valid_data, saved=True)
    monkeypatch.setattr(resume, "save", original_save)
    state = load_checkpoint(path)
    for key in ("optimizers", "current_optimizer", "validates"):
        del state[key]
    torch.save(state, path)

    _, (train_data, valid_data, _), _, fresh = prepare(config)
    assert not fresh.optimizer.state_dict()["state"]
    resume.restore(fresh, resume.load(fresh, path), train_data)
    restored, saved = fresh.optimizer.state_dict()["state"], state["optimizer"]["state"]
    assert restored.keys() == saved.keys() and all(
        torch.equal(restored[k]["exp_avg"], saved[k]["exp_avg"]) for k in saved
    )  # Adam's moments came back from the old file's one optimizer
    assert fresh.start_epoch == 1
    fresh.enable_resume(path)
    fresh.fit(train_data, valid_data, saved=True)
    assert sorted(fresh.train_loss_dict) == [0, 1]


def test_resume_file_name_sits_beside_the_checkpoint():
    assert resume.resume_file_for("saved/LRURec-seed1-ab.pth") == "saved/LRURec-seed1-ab.resume.pth"


def test_run_with_resume_file_continues_after_a_crash(tiny_run_dict, tmp_path, monkeypatch):
    """``run`` (key ``resume_file``): a run that crashed after epoch 0 continues and ends as an
    uninterrupted one; the resume file is gone once the run has been tested."""
    from recbole_linear import run_recbole_linear

    monkeypatch.chdir(tmp_path)
    settings = dict(tiny_run_dict, epochs=2, metric_decimal_place=10, seed=11)
    reference = run_recbole_linear("SASRec", TINY_DATASET, config_dict=dict(settings, resume_file=str(tmp_path / "a.pth")))
    assert not os.path.exists(tmp_path / "a.pth")

    path = str(tmp_path / "b.pth")
    crashed_checkpoint = crash_after_first_save("SASRec", settings, path)["saved_model_file"]

    resumed = run_recbole_linear("SASRec", TINY_DATASET, config_dict=dict(settings, resume_file=path))
    assert resumed["saved_model_file"] == crashed_checkpoint  # the best checkpoint of the first attempt
    assert resumed["epochs_trained"] == 2
    assert dict(resumed["best_valid_result"]) == dict(reference["best_valid_result"])
    assert dict(resumed["test_result"]) == dict(reference["test_result"])
    assert not os.path.exists(path)
