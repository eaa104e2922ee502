"""precision on a CUDA device: fp16 (with RecBole's GradScaler) and bf16 for every model, through
the same checks the CPU's bf16 passes in ``test_precision.py`` (``precision_checks``).

Skipped where no GPU is (CI and this project's CPUs); on a GPU machine:
``python -m pytest -q tests/test_precision_cuda.py``."""
import pytest
import torch

from recbole_linear import precision
from tests.precision_checks import (
    CASE_IDS,
    MODEL_CASES,
    check_checkpoint_evaluates_in_fp32,
    check_scores_and_loss_near_fp32,
    check_short_training,
    prepared,
)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

GPU_PRECISIONS = [
    "fp16",
    pytest.param(
        "bf16",
        marks=pytest.mark.skipif(torch.cuda.is_available() and not torch.cuda.is_bf16_supported(), reason="this GPU has no bf16"),
    ),
]


@pytest.fixture
def tiny_run_dict(tiny_run_dict):
    return dict(tiny_run_dict, gpu_id="0")  # RecBole 1.2.1 picks the device from gpu_id alone


@pytest.mark.parametrize("precision_name", GPU_PRECISIONS)
@pytest.mark.parametrize("model_name, extra", MODEL_CASES, ids=CASE_IDS)
def test_gpu_scores_and_loss_are_within_tolerance_of_fp32(tiny_run_dict, tmp_path, monkeypatch, model_name, extra, precision_name):
    config, train_data, valid_data, model, trainer = prepared(tiny_run_dict, tmp_path, monkeypatch, model_name, extra)
    assert config["device"].type == "cuda"
    check_scores_and_loss_near_fp32(model, trainer, train_data, valid_data, "cuda", precision.PRECISIONS[precision_name])


@pytest.mark.parametrize("precision_name", GPU_PRECISIONS)
@pytest.mark.parametrize("model_name, extra", MODEL_CASES, ids=CASE_IDS)
def test_short_gpu_training_stays_finite_and_learns(tiny_run_dict, tmp_path, monkeypatch, model_name, extra, precision_name):
    """Three epochs through the trainer; fp16 with the GradScaler on (``precision_checks``)."""
    check_short_training(tiny_run_dict, tmp_path, monkeypatch, model_name, extra, precision_name, "cuda")


def test_fp16_checkpoint_evaluates_in_fp32(tiny_run_dict, tmp_path, monkeypatch):
    check_checkpoint_evaluates_in_fp32(tiny_run_dict, tmp_path, monkeypatch, "fp16")
