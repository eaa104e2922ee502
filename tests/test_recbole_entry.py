"""Plugin models through RecBole's own entry points, with configs as RecBole users write them.

As RecBole's ``tests/model/test_model_auto.py`` tests SASRec: CE with ``train_neg_sample_args:
None``, BPR with each ``hidden_act``, ``MAX_ITEM_LIST_LENGTH: 3``, ``reproducibility: False``; here
on the tiny dataset, one epoch, uni100 evaluation. No ``loss_type`` is given anywhere unless the
test is about it.
"""
import os

import pytest
import torch
import yaml
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.quick_start import objective_function, run_recbole
from recbole.trainer import HyperTuning
from recbole.utils import InputType, get_model, get_trainer

import recbole_linear  # noqa: F401  (registers the plugin models)
from recbole_linear.errors import ConfigError
from recbole_linear.model.linrec import ACT2FN_NAMES
from recbole_linear.recbole_compat import align_train_loader
from tests.conftest import TINY_DATASET

PLUGIN_MODELS = ["LRURec", "LinRec", "GLINTRU"]
UNI100 = {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "uni100"}


@pytest.fixture
def recbole_yaml(tiny_data_path, tmp_path, monkeypatch):
    """RecBole's test yaml in spirit: the dataset, one epoch, quiet; RecBole's Config reads sys.argv."""
    monkeypatch.setattr("sys.argv", ["prog"])
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "test_model.yaml"
    path.write_text(yaml.safe_dump({
        "dataset": TINY_DATASET, "data_path": tiny_data_path, "epochs": 1, "state": "ERROR",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]}, "eval_args": UNI100,
        "hidden_size": 32, "embedding_size": 32, "inner_size": 32, "n_heads": 2, "n_layers": 1,
        "train_batch_size": 64, "eval_batch_size": 512, "show_progress": False, "checkpoint_dir": str(tmp_path / "saved"),
    }))
    return [str(path)]


def quick_test(config_dict, config_file_list):
    return objective_function(config_dict=config_dict, config_file_list=config_file_list, saved=False)


def _check_result(result, model):
    assert result["model"] == model
    for phase in ("best_valid_result", "test_result"):
        metrics = result[phase]
        assert set(metrics) == {"recall@10", "mrr@10", "ndcg@10", "hit@10", "precision@10"}
        # uni100 over 30 items ranks the target among the others: a trained model hits sometimes
        assert 0.0 < metrics["hit@10"] <= 1.0 and 0.0 < metrics["ndcg@10"] <= metrics["hit@10"]


@pytest.mark.parametrize("model", PLUGIN_MODELS)
def test_recbole_config_needs_no_loss_type(model, recbole_yaml):
    config = Config(model=model, config_file_list=recbole_yaml, config_dict={"train_neg_sample_args": None})
    assert config["MODEL_INPUT_TYPE"] == InputType.POINTWISE
    assert config["train_neg_sample_args"]["distribution"] == "none"


@pytest.mark.parametrize("model", PLUGIN_MODELS)
def test_objective_function_ce(model, recbole_yaml):
    config_dict = {"model": model, "train_neg_sample_args": None, "MAX_ITEM_LIST_LENGTH": 3, "reproducibility": False}
    _check_result(quick_test(config_dict, recbole_yaml), model)


@pytest.mark.parametrize(
    "model, hidden_act",
    [("LRURec", None), ("GLINTRU", None)] + [("LinRec", act) for act in ACT2FN_NAMES],
)
def test_objective_function_bpr(model, hidden_act, recbole_yaml):
    config_dict = {"model": model, "loss_type": "BPR", "MAX_ITEM_LIST_LENGTH": 3, "reproducibility": False}
    if hidden_act is not None:
        config_dict["hidden_act"] = hidden_act
    _check_result(quick_test(config_dict, recbole_yaml), model)


@pytest.mark.parametrize("model", PLUGIN_MODELS)
def test_run_recbole_to_the_end_with_its_checkpoint(model, recbole_yaml, tmp_path):
    """The test step loads the best checkpoint (torch >= 2.6 refuses RecBole's pickled Config by default)."""
    result = run_recbole(
        model=model, config_file_list=recbole_yaml,
        config_dict={"train_neg_sample_args": None, "MAX_ITEM_LIST_LENGTH": 3, "eval_args": {**UNI100, "mode": "full"}},
    )
    assert set(result["test_result"]) >= {"ndcg@10", "hit@10"}
    assert 0.0 <= result["test_result"]["ndcg@10"] <= result["test_result"]["hit@10"] <= 1.0
    (checkpoint,) = (tmp_path / "saved").iterdir()
    assert checkpoint.name.startswith(model)


def _stock_pipeline(model, recbole_yaml, config_dict):
    """Config, dataloaders, model and trainer exactly as RecBole's run_recbole builds them."""
    config = Config(model=model, config_file_list=recbole_yaml, config_dict=config_dict)
    train_data, valid_data, _ = data_preparation(config, create_dataset(config))
    net = get_model(config["model"])(config, train_data._dataset)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, net)
    return config, train_data, valid_data, trainer


def test_lrurec_trains_with_its_official_optimizer_under_recbole(recbole_yaml):
    _, _, _, trainer = _stock_pipeline("LRURec", recbole_yaml, {"train_neg_sample_args": None})
    optimizer = trainer.optimizer
    assert type(optimizer) is torch.optim.AdamW
    assert sorted(group["weight_decay"] for group in optimizer.param_groups) == [0.0, 0.01]  # no decay on bias/LayerNorm
    assert {group["eps"] for group in optimizer.param_groups} == {1e-9}
    assert trainer.clip_grad_norm == {"max_norm": 5.0, "norm_type": 2}


def test_user_settings_win_over_plugin_defaults_under_recbole(recbole_yaml):
    config, _, _, trainer = _stock_pipeline(
        "LRURec", recbole_yaml, {"train_neg_sample_args": None, "learner": "adam", "weight_decay": 0.5, "n_layers": 2}
    )
    assert type(trainer.optimizer) is torch.optim.Adam
    assert config["weight_decay"] == 0.5 and config["lru_dropout_prob"] == 0.2  # the plugin's default for the rest
    assert len(trainer.model.lru_blocks) == 2  # the yaml's n_layers: 1 is the user's file, the dict wins


def test_bpr_loader_follows_the_model_loss(recbole_yaml):
    """RecBole's Config fixes the sampling format before the model exists; the trainer rebuilds the loader."""
    config, train_data, _, _ = _stock_pipeline("LRURec", recbole_yaml, {"loss_type": "BPR"})
    assert train_data.dl_format == InputType.POINTWISE  # what RecBole built from the class
    assert config["MODEL_INPUT_TYPE"] == InputType.PAIRWISE  # what the model's loss needs
    aligned = align_train_loader(config, train_data)
    assert aligned.dl_format == InputType.PAIRWISE and aligned.times == 1
    batch = next(iter(aligned))
    assert "neg_item_id" in batch and "label" not in batch and len(batch) == config["train_batch_size"]
    assert align_train_loader(config, aligned) is aligned


def test_ce_without_sampling_setting_drops_recbole_default_sampling(recbole_yaml):
    config, train_data, _, _ = _stock_pipeline("GLINTRU", recbole_yaml, {})
    assert train_data.times == 2  # RecBole's default: one negative row per positive
    aligned = align_train_loader(config, train_data)
    assert aligned.neg_sample_args["distribution"] == "none" and aligned.times == 1
    batch = next(iter(aligned))
    assert len(batch) == config["train_batch_size"] and "label" not in batch
    assert len(aligned) == -(-len(train_data._dataset) // config["train_batch_size"])  # every sample once


def test_ce_with_explicit_sampling_is_refused_as_recbole_refuses_sasrec(recbole_yaml):
    sampling = {"distribution": "uniform", "sample_num": 1}
    config = Config(model="LRURec", config_file_list=recbole_yaml, config_dict={"train_neg_sample_args": sampling})
    train_data, _, _ = data_preparation(config, create_dataset(config))
    with pytest.raises(ConfigError, match="should be None when the loss_type is CE"):
        get_model("LRURec")(config, train_data._dataset)


def test_recbole_hypertuning_runs_plugin_trials(recbole_yaml, tmp_path):
    params = tmp_path / "lr.hyper"
    params.write_text("learning_rate choice [0.01,0.001]\n")
    fixed = tmp_path / "fixed.yaml"
    fixed.write_text(yaml.safe_dump({**yaml.safe_load(open(recbole_yaml[0])), "model": "LinRec",
                                     "train_neg_sample_args": None}))
    hp = HyperTuning(objective_function, params_file=str(params), fixed_config_file_list=[str(fixed)], algo="exhaustive",
                     max_evals=2)
    hp.run()
    assert len(hp.params2result) == 2
    assert set(hp.params2result) == {"learning_rate:0.01", "learning_rate:0.001"}
    assert all(result["model"] == "LinRec" for result in hp.params2result.values())


def test_readme_run_recbole_example_as_written_on_tiny_data(tiny_data_path, tmp_path, monkeypatch):
    """The README's call, with only the dataset (and speed settings) swapped for the tiny one."""
    monkeypatch.setattr("sys.argv", ["prog"])
    monkeypatch.chdir(tmp_path)
    result = run_recbole(model="LRURec", dataset=TINY_DATASET, config_dict={
        "train_neg_sample_args": None, "data_path": tiny_data_path, "epochs": 1, "hidden_size": 32,
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]}, "state": "ERROR", "show_progress": False,
    })
    assert 0.0 <= result["test_result"]["ndcg@10"] <= 1.0
    assert os.listdir(tmp_path / "saved")
