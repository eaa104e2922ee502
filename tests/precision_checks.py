"""Checks shared by the precision tests: bf16 on this project's CPUs (``test_precision.py``) and
fp16 / bf16 on a CUDA device (``test_precision_cuda.py``). One body per check, so the GPU tests
run the same assertions the CPU suite exercises on every CI run."""
import math

import torch

from recbole_linear import precision, run_recbole_linear
from recbole_linear.all_positions import AllPositionTrainDataLoader
from recbole_linear.config import create_config
from recbole_linear.quick_start import evaluate_checkpoint, prepare
from recbole_linear.trainer import PluginTrainerMixin
from tests.conftest import TINY_DATASET

# model, extra settings: every model in the regimes it trains in
MODEL_CASES = [
    ("LRURec", {"train_all_positions": True}),
    ("LRURec", {}),
    ("LinRec", {"linrec_causal": True, "train_all_positions": True}),
    ("LinRec", {}),
    ("GLINTRU", {}),
    ("SASRec", {"train_all_positions": True}),
    ("GRU4Rec", {"train_all_positions": True}),
]
CASE_IDS = [f"{m}-{'all' if e.get('train_all_positions') else 'prefix'}" for m, e in MODEL_CASES]

# bf16 keeps 8 bits of mantissa (relative rounding 2^-9 = 0.2%); through a few layers and the
# item scoring the errors add up to ~1% of the largest score. Stated bound: 3% (fp16 keeps 11 bits,
# so the same bound holds for it with room to spare).
SCORE_TOLERANCE = 0.03
LOSS_TOLERANCE = 0.01  # relative, on the batch loss (a mean over many positions averages the rounding)


def prepared(tiny_run_dict, tmp_path, monkeypatch, model_name, extra, **settings):
    monkeypatch.chdir(tmp_path)
    config = create_config(model_name, TINY_DATASET, config_dict=dict(tiny_run_dict, **extra, **settings))
    _, (train_data, valid_data, test_data), model, trainer = prepare(config)
    return config, train_data, valid_data, model, trainer


def first_batch(data):
    batch = next(iter(data))
    return batch[0] if isinstance(batch, tuple) else batch


def batch_loss(trainer, train_data, interaction):
    if isinstance(train_data, AllPositionTrainDataLoader):
        return train_data.loss_function(trainer.model)(interaction)
    return trainer.model.calculate_loss(interaction)


def check_scores_and_loss_near_fp32(model, trainer, train_data, valid_data, device_type, dtype):
    """Scores and the batch loss under autocast(``dtype``) against fp32, dropout off."""
    model.eval()  # no dropout: the two precisions see the same function
    interaction = first_batch(valid_data).to(trainer.device)
    train_batch = first_batch(train_data).to(trainer.device)
    with torch.no_grad():
        scores = model.full_sort_predict(interaction)
        loss = batch_loss(trainer, train_data, train_batch)
        with precision.autocast(device_type, dtype):
            scores_low = model.full_sort_predict(interaction)
            loss_low = batch_loss(trainer, train_data, train_batch)
    assert scores_low.dtype == dtype  # the scoring product did run in the lower precision
    assert loss_low.dtype == torch.float32  # the loss is reduced in fp32
    error = (scores_low.float() - scores).abs().max() / scores.abs().max()
    assert error <= SCORE_TOLERANCE, f"{dtype} scores differ by {error:.4f} of the largest score"
    assert not torch.equal(scores_low.float(), scores)  # the precision changed something: the check is not vacuous
    assert abs(loss_low.item() - loss.item()) <= LOSS_TOLERANCE * abs(loss.item())


def check_short_training(tiny_run_dict, tmp_path, monkeypatch, model_name, extra, precision_name, device_type):
    """Three epochs with ``precision: precision_name`` through the trainer: every batch under autocast
    on ``device_type``, gradient scaling exactly when fp16, every epoch's loss finite, the loss falls,
    and the checkpoint holds fp32 weights. Returns the run's result."""
    monkeypatch.chdir(tmp_path)
    autocast_calls, epoch_losses, scaled_trainers = [], [], []
    original = precision.autocast
    monkeypatch.setattr(precision, "autocast", lambda *a: autocast_calls.append(a) or original(*a))
    train_epoch = PluginTrainerMixin._train_epoch
    monkeypatch.setattr(PluginTrainerMixin, "_train_epoch", lambda self, *a, **k: epoch_losses.append(train_epoch(self, *a, **k)) or epoch_losses[-1])
    scale = PluginTrainerMixin._scale_fp16_gradients
    monkeypatch.setattr(PluginTrainerMixin, "_scale_fp16_gradients", lambda self: scaled_trainers.append(self) or scale(self))
    result = run_recbole_linear(model_name, TINY_DATASET, config_dict=dict(tiny_run_dict, epochs=3, precision=precision_name, **extra))
    assert autocast_calls and set(autocast_calls) == {(device_type, precision.PRECISIONS[precision_name])}
    assert len(scaled_trainers) == (1 if precision_name == "fp16" else 0)
    assert all(trainer.enable_scaler for trainer in scaled_trainers)
    assert len(epoch_losses) == 3 and all(math.isfinite(v) for v in epoch_losses)
    assert epoch_losses[-1] < epoch_losses[0]
    assert math.isfinite(result["best_valid_score"])
    state = torch.load(result["saved_model_file"], map_location="cpu", weights_only=False)["state_dict"]
    assert all(v.dtype in (torch.float32, torch.int64, torch.bool) for v in state.values())
    return result


def check_checkpoint_evaluates_in_fp32(tiny_run_dict, tmp_path, monkeypatch, precision_name):
    """Two epochs of LRURec in ``precision_name``: its checkpoint evaluates as the run did, and in
    fp32 with ``--precision=fp32``, within one user's rank move of each other."""
    monkeypatch.chdir(tmp_path)
    result = run_recbole_linear(
        "LRURec", TINY_DATASET, config_dict=dict(tiny_run_dict, epochs=2, precision=precision_name, train_all_positions=True)
    )
    _, _, test_low = evaluate_checkpoint(result["saved_model_file"])
    assert test_low == dict(result["test_result"])  # the run's own precision, as the checkpoint says
    config, _, test_fp32 = evaluate_checkpoint(result["saved_model_file"], ["--precision=fp32"])
    assert config["precision"] == "fp32"
    assert test_fp32.keys() == test_low.keys()
    for key in test_fp32:  # 40 users: one user's rank may move across a cut-off
        assert abs(test_fp32[key] - test_low[key]) <= 0.05, key
