"""Checkpoints written by a run load back under torch >= 2.6 (weights_only default)."""
import pytest
import torch

from recbole_linear import load_data_and_model, run_recbole_linear
from recbole_linear.trainer import get_trainer, load_checkpoint
from tests.conftest import TINY_DATASET


@pytest.fixture
def trained_run(tiny_run_dict, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # RecBole writes log/ and log_tensorboard/ into the cwd
    return run_recbole_linear("SASRec", TINY_DATASET, config_dict=tiny_run_dict)


def test_torch_default_load_refuses_recbole_checkpoints(trained_run):
    """The failure the plugin works around is real on this torch."""
    assert tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 6)
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(trained_run["saved_model_file"])


def test_load_data_and_model_reproduces_test_metrics(trained_run):
    config, model, _, _, _, test_data = load_data_and_model(trained_run["saved_model_file"])
    assert config["model"] == "SASRec"
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    reloaded = trainer.evaluate(test_data, load_best_model=False)
    assert dict(reloaded) == dict(trained_run["test_result"])
    # evaluating from the file through the trainer's own path gives the same numbers
    from_file = trainer.evaluate(test_data, load_best_model=True, model_file=trained_run["saved_model_file"])
    assert dict(from_file) == dict(trained_run["test_result"])


def test_resume_checkpoint_restores_training_state(trained_run):
    config, model, _, train_data, valid_data, _ = load_data_and_model(trained_run["saved_model_file"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    trainer.resume_checkpoint(trained_run["saved_model_file"])
    checkpoint = load_checkpoint(trained_run["saved_model_file"])
    assert trainer.start_epoch == checkpoint["epoch"] + 1 == 1
    for name, value in model.state_dict().items():
        assert torch.equal(value, checkpoint["state_dict"][name])


def test_run_result_reports_run_facts(trained_run):
    assert trained_run["epochs_trained"] == 1 and len(trained_run["epoch_train_seconds"]) == 1
    assert trained_run["num_parameters"] > 0
    assert set(trained_run["test_result"]) >= {"ndcg@10", "recall@10"}
