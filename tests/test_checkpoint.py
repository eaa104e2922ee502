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
    # evaluating from the file through the trainer's own path gives the same numbers: the weights
    # are scrambled first, so only a load from the file can bring the metrics back
    _scramble(model)
    assert dict(trainer.evaluate(test_data, load_best_model=False)) != dict(trained_run["test_result"])
    from_file = trainer.evaluate(test_data, load_best_model=True, model_file=trained_run["saved_model_file"])
    assert dict(from_file) == dict(trained_run["test_result"])


def _scramble(model):
    torch.manual_seed(123)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_()


def test_resume_checkpoint_restores_training_state(trained_run):
    config, model, _, train_data, valid_data, _ = load_data_and_model(trained_run["saved_model_file"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    checkpoint = load_checkpoint(trained_run["saved_model_file"])
    _scramble(model)  # load_data_and_model loaded the weights already: only resume may restore them
    assert not torch.equal(model.state_dict()["item_embedding.weight"], checkpoint["state_dict"]["item_embedding.weight"])
    assert trainer.start_epoch == 0 and trainer.best_valid_score != checkpoint["best_valid_score"]
    trainer.resume_checkpoint(trained_run["saved_model_file"])
    assert trainer.start_epoch == checkpoint["epoch"] + 1 == 1
    assert trainer.cur_step == checkpoint["cur_step"] and trainer.best_valid_score == checkpoint["best_valid_score"]
    for name, value in model.state_dict().items():
        assert torch.equal(value, checkpoint["state_dict"][name]), name
    restored, saved = trainer.optimizer.state_dict(), checkpoint["optimizer"]
    assert restored["param_groups"] == saved["param_groups"] and len(saved["state"]) > 0
    for index, state in saved["state"].items():
        for key, value in state.items():
            assert torch.equal(restored["state"][index][key], value), (index, key)


def test_run_result_reports_run_facts(trained_run):
    assert trained_run["epochs_trained"] == 1 and len(trained_run["epoch_train_seconds"]) == 1
    assert trained_run["num_parameters"] > 0
    assert set(trained_run["test_result"]) >= {"ndcg@10", "recall@10"}
