"""precision: bf16 autocast beside fp32 for every model, the parts kept fp32, finite training,
checkpoints that stay fp32, the fp16 gradient-scaling hook, and one-line errors."""
import math

import pytest
import torch
from torch import nn

from recbole_linear import precision
from recbole_linear.config import create_config
from recbole_linear.errors import ConfigError
from recbole_linear.layers.mixed_precision import at_least_fp32
from tests.conftest import TINY_DATASET
from tests.precision_checks import (
    CASE_IDS,
    MODEL_CASES,
    batch_loss,
    check_checkpoint_evaluates_in_fp32,
    check_scores_and_loss_near_fp32,
    check_short_training,
    first_batch,
    prepared,
)

pytestmark = pytest.mark.skipif(not precision.cpu_supports_bf16(), reason="this CPU has no native bf16 products")


@pytest.fixture
def tiny_run_dict(tiny_run_dict):
    """This file checks the CPU's bf16: every run stays on the CPU, also on a machine with a GPU
    (``test_precision_cuda.py`` checks the GPU)."""
    return dict(tiny_run_dict, gpu_id="")  # RecBole 1.2.1 picks the device from gpu_id alone


@pytest.mark.parametrize("model_name, extra", MODEL_CASES, ids=CASE_IDS)
def test_bf16_scores_and_loss_are_within_tolerance_of_fp32(tiny_run_dict, tmp_path, monkeypatch, model_name, extra):
    _, train_data, valid_data, model, trainer = prepared(tiny_run_dict, tmp_path, monkeypatch, model_name, extra)
    check_scores_and_loss_near_fp32(model, trainer, train_data, valid_data, "cpu", torch.bfloat16)


@pytest.mark.parametrize("model_name, extra", MODEL_CASES, ids=CASE_IDS)
def test_layer_norms_and_recurrences_stay_fp32_under_bf16(tiny_run_dict, tmp_path, monkeypatch, model_name, extra):
    """Every LayerNorm normalises an fp32 tensor (its statistics are fp32); the LRU scan runs on
    complex64 and LinRec's feature map on fp32."""
    from recbole_linear.layers import linear_attention, lru

    _, train_data, _, model, trainer = prepared(tiny_run_dict, tmp_path, monkeypatch, model_name, extra)
    seen = []
    for module in model.modules():
        if isinstance(module, nn.LayerNorm):
            module.register_forward_hook(lambda m, args, out: seen.append(("LayerNorm", args[0].dtype, out.dtype)))
    scan, feature_map = lru.lru_parallel_scan, linear_attention.elu_l2_feature_map
    monkeypatch.setattr(lru, "lru_parallel_scan", lambda x, lam: seen.append(("scan", x.dtype, lam.dtype)) or scan(x, lam))
    monkeypatch.setattr(
        linear_attention, "elu_l2_feature_map", lambda x, *a: seen.append(("feature map", x.dtype, x.dtype)) or feature_map(x, *a)
    )
    with precision.autocast("cpu", torch.bfloat16):
        batch_loss(trainer, train_data, first_batch(train_data)).backward()
    if model_name != "GRU4Rec":  # RecBole's GRU4Rec has no LayerNorm
        assert any(name == "LayerNorm" for name, _, _ in seen)
    allowed = {"LayerNorm": (torch.float32,), "scan": (torch.complex64,), "feature map": (torch.float32,)}
    for name, input_dtype, output_dtype in seen:
        assert input_dtype in allowed[name] and output_dtype in allowed[name], (name, input_dtype, output_dtype)
    if model_name == "LRURec":
        assert any(name == "scan" for name, _, _ in seen)
    if model_name in ("LinRec", "GLINTRU"):
        assert any(name == "feature map" for name, _, _ in seen)


@pytest.mark.parametrize("model_name, extra", MODEL_CASES, ids=CASE_IDS)
def test_bf16_gradients_are_finite_and_land_on_fp32_weights(tiny_run_dict, tmp_path, monkeypatch, model_name, extra):
    _, train_data, _, model, trainer = prepared(tiny_run_dict, tmp_path, monkeypatch, model_name, extra)
    with precision.autocast("cpu", torch.bfloat16):
        loss = batch_loss(trainer, train_data, first_batch(train_data))
    loss.backward()
    for name, param in model.named_parameters():
        assert param.dtype == torch.float32, name
        if param.grad is not None:
            assert param.grad.dtype == torch.float32, name
            assert torch.isfinite(param.grad).all(), name


@pytest.mark.parametrize("model_name, extra", MODEL_CASES, ids=CASE_IDS)
def test_short_bf16_training_stays_finite_and_learns(tiny_run_dict, tmp_path, monkeypatch, model_name, extra):
    """Three epochs with precision: bf16 through the trainer (the checks: ``precision_checks``)."""
    check_short_training(tiny_run_dict, tmp_path, monkeypatch, model_name, extra, "bf16", "cpu")


def test_bf16_checkpoint_evaluates_in_fp32_and_bf16(tiny_run_dict, tmp_path, monkeypatch):
    check_checkpoint_evaluates_in_fp32(tiny_run_dict, tmp_path, monkeypatch, "bf16")


def test_training_runs_every_loss_under_autocast_and_fp32_runs_none(tiny_run_dict, tmp_path, monkeypatch):
    seen = {}
    for value in ("fp32", "bf16"):
        _, train_data, _, model, trainer = prepared(
            tiny_run_dict, tmp_path, monkeypatch, "LRURec", {"train_all_positions": True}, precision=value
        )
        dtypes = []
        model.item_embedding.register_forward_hook(lambda *a: dtypes.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None))
        trainer._train_epoch(train_data, 0)
        seen[value] = set(dtypes)
    assert seen == {"fp32": {None}, "bf16": {torch.bfloat16}}


def test_recbole_enable_amp_still_trains(tiny_run_dict, tmp_path, monkeypatch):
    """RecBole's own switch: autocast in the device's default dtype (bf16 on CPU), also through the LRU."""
    from recbole_linear import run_recbole_linear

    monkeypatch.chdir(tmp_path)
    result = run_recbole_linear("LRURec", TINY_DATASET, config_dict=dict(tiny_run_dict, enable_amp=True))
    assert math.isfinite(result["best_valid_score"])


# --- configuration -----------------------------------------------------------------------------
@pytest.mark.parametrize("settings, message", [
    ({"precision": "fp8"}, "expected one of fp32, bf16, fp16"),
    ({"precision": "bf16", "enable_amp": True}, "use one"),
    ({"precision": "fp16", "gpu_id": ""}, "fp16 needs a CUDA device"),  # "": the CPU, also where a GPU is
    ({"flush_denormal": "yes"}, "flush_denormal"),
])
def test_bad_precision_settings_are_one_line_errors_before_data_loads(settings, message):
    with pytest.raises(ConfigError, match=message) as error:
        create_config("LRURec", "no-such-dataset", config_dict=settings)
    assert "\n" not in str(error.value)


def test_bf16_without_hardware_support_falls_back_to_fp32_with_a_warning(monkeypatch, caplog):
    import logging

    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: False)
    config = {"precision": "bf16", "device": "cpu"}
    logger = logging.getLogger("test_precision")
    with caplog.at_level(logging.WARNING, logger="test_precision"):
        assert precision.resolve_dtype(config, logger) is torch.float32
    assert "no native bf16 products; running fp32" in caplog.text
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: True)
    assert precision.resolve_dtype(config, logger) is torch.bfloat16


def test_at_least_fp32_raises_half_precision_only():
    assert at_least_fp32(torch.ones(2, dtype=torch.bfloat16)).dtype == torch.float32
    assert at_least_fp32(torch.ones(2, dtype=torch.float16)).dtype == torch.float32
    assert at_least_fp32(torch.ones(2, dtype=torch.float64)).dtype == torch.float64


def test_fp16_clips_the_unscaled_gradients_just_before_the_step(tiny_run_dict, tmp_path, monkeypatch):
    """RecBole clips before its GradScaler unscales; under fp16 the plugin's trainer clips in the
    optimizer's pre-step hook instead, where ``scaler.step`` has already unscaled the gradients.
    (fp16 itself needs a GPU; the hook is checked here on a CPU trainer.)"""
    _, _, _, model, trainer = prepared(tiny_run_dict, tmp_path, monkeypatch, "LRURec", {}, clip_grad_norm={"max_norm": 1.0})
    trainer._scale_fp16_gradients()
    assert trainer.enable_scaler and trainer.clip_grad_norm is None
    for param in model.parameters():
        param.grad = torch.full_like(param, 100.0)
    trainer.optimizer.step()  # the pre-step hook clips first
    # the hook clipped to max_norm 1 before the step; AdamW's first step moves each weight by
    # about lr, so what is left to check is the gradient the step saw
    total = torch.norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert total.item() == pytest.approx(1.0, rel=1e-4)


def test_flush_denormal_key_sets_the_cpu_mode(tiny_run_dict, tmp_path, monkeypatch):
    tiny = torch.tensor([1e-39], dtype=torch.float32)  # a subnormal float
    try:
        prepared(tiny_run_dict, tmp_path, monkeypatch, "LRURec", {}, flush_denormal=True)
        assert (tiny * 1.0).item() == 0.0
        prepared(tiny_run_dict, tmp_path, monkeypatch, "LRURec", {}, flush_denormal=False)
        assert (tiny * 1.0).item() > 0.0
    finally:
        torch.set_flush_denormal(False)


def test_sampled_evaluation_runs_under_bf16_too(tiny_run_dict, tmp_path, monkeypatch):
    """RecBole's sampled ranking (mode uni10) scores through ``predict``: also under autocast."""
    from recbole_linear import run_recbole_linear
    from recbole_linear.model.lrurec import LRURec

    monkeypatch.chdir(tmp_path)
    predict_autocast = []
    original = LRURec.predict
    monkeypatch.setattr(LRURec, "predict", lambda self, i: predict_autocast.append(torch.is_autocast_enabled("cpu")) or original(self, i))
    monkeypatch.setattr("recbole_linear.quick_start.get_flops", lambda *a: 0)  # its trace calls predict outside evaluation
    eval_args = {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "uni10"}
    result = run_recbole_linear("LRURec", TINY_DATASET, config_dict=dict(tiny_run_dict, precision="bf16", eval_args=eval_args))
    assert predict_autocast and all(predict_autocast)
    assert math.isfinite(result["best_valid_score"])
    assert all(math.isfinite(v) for v in result["test_result"].values())
