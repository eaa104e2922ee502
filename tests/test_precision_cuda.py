"""precision on a CUDA device: fp16 (with RecBole's GradScaler) and bf16 for every model, through
the same checks the CPU's bf16 passes in ``test_precision.py`` (``precision_checks``).

Skipped where no GPU is (CI and this project's CPUs); on a GPU machine:
``python -m pytest -q tests/test_precision_cuda.py``."""
import pytest
import torch

from tests.conftest import TINY_DATASET
from tests.precision_checks import CASE_IDS, MODEL_CASES, check_scores_and_loss_near_fp32, check_short_training, prepared

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

GPU_PRECISIONS = [
    pytest.param("fp16", torch.float16, id="fp16"),
    pytest.param(
        "bf16", torch.bfloat16, id="bf16",
        marks=pytest.mark.skipif(torch.cuda.is_available() and not torch.cuda.is_bf16_supported(), reason="this GPU has no bf16"),
    ),
]


@pytest.fixture
def tiny_run_dict(tiny_run_dict):
    return dict(tiny_run_dict, gpu_id="0")  # RecBole 1.2.1 picks the device from gpu_id alone


@pytest.mark.parametrize("precision_name, dtype", GPU_PRECISIONS)
@pytest.mark.parametrize("model_name, extra", MODEL_CASES, ids=CASE_IDS)
def test_gpu_scores_and_loss_are_within_tolerance_of_fp32(tiny_run_dict, tmp_path, monkeypatch, model_name, extra, precision_name, dtype):
    config, train_data, valid_data, model, trainer = prepared(tiny_run_dict, tmp_path, monkeypatch, model_name, extra)
    assert config["device"].type == "cuda"
    check_scores_and_loss_near_fp32(model, trainer, train_data, valid_data, "cuda", dtype)


@pytest.mark.parametrize("precision_name, dtype", GPU_PRECISIONS)
@pytest.mark.parametrize("model_name, extra", MODEL_CASES, ids=CASE_IDS)
def test_short_gpu_training_stays_finite_and_learns(tiny_run_dict, tmp_path, monkeypatch, model_name, extra, precision_name, dtype):
    """Three epochs through the trainer; fp16 with the GradScaler on (``precision_checks``)."""
    check_short_training(tiny_run_dict, tmp_path, monkeypatch, model_name, extra, precision_name, "cuda")


def test_fp16_checkpoint_evaluates_in_fp32(tiny_run_dict, tmp_path, monkeypatch):
    from recbole_linear import run_recbole_linear
    from recbole_linear.quick_start import evaluate_checkpoint

    monkeypatch.chdir(tmp_path)
    result = run_recbole_linear(
        "LRURec", TINY_DATASET, config_dict=dict(tiny_run_dict, epochs=2, precision="fp16", train_all_positions=True)
    )
    _, _, test_fp16 = evaluate_checkpoint(result["saved_model_file"])
    assert test_fp16 == dict(result["test_result"])  # the run evaluated in fp16, as the checkpoint says
    config, _, test_fp32 = evaluate_checkpoint(result["saved_model_file"], ["--precision=fp32"])
    assert config["precision"] == "fp32"
    for key in test_fp32:  # 40 users: one user's rank may move across a cut-off
        assert abs(test_fp32[key] - test_fp16[key]) <= 0.05, key
