"""Plugin names resolve wherever RecBole resolves names; unknown names fail in one line."""
import multiprocessing

import pytest
import recbole.utils
from recbole.model.sequential_recommender.sasrec import SASRec

import recbole_linear
from recbole_linear.errors import UnknownModelError
from recbole_linear.registry import PLUGIN_MODELS, get_model


@pytest.mark.parametrize("name", ["LRURec", "LinRec", "GLINTRU"])
def test_recbole_get_model_finds_plugin_models(name):
    model_class = recbole.utils.get_model(name)
    assert model_class is getattr(recbole_linear, name)
    assert get_model(name) is model_class
    assert name in PLUGIN_MODELS


def test_glint_ru_spelling_resolves_to_the_same_class():
    assert recbole.utils.get_model("GLINT-RU") is recbole_linear.GLINTRU
    assert get_model("GLINT-RU") is recbole_linear.GLINTRU


@pytest.mark.parametrize("name", ["SASRec", "GRU4Rec", "BERT4Rec"])
def test_builtin_names_still_resolve_to_recbole(name):
    model_class = get_model(name)
    assert model_class is recbole.utils.get_model(name)
    assert model_class.__module__.startswith("recbole.model.")


def test_sasrec_is_recbole_own_class():
    assert get_model("SASRec") is SASRec


def test_unknown_name_is_one_line_listing_models():
    with pytest.raises(UnknownModelError) as excinfo:
        get_model("NoSuchModel")
    message = str(excinfo.value)
    assert "NoSuchModel" in message and "\n" not in message
    for name in ("LRURec", "LinRec", "GLINTRU", "SASRec", "GRU4Rec", "BERT4Rec"):
        assert name in message
    assert "lightgbm" not in message


def test_spawned_child_resolves_plugin_models():
    """A spawned process running a plugin function imports the plugin and its registry."""
    context = multiprocessing.get_context("spawn")
    ok = context.Process(target=get_model, args=("LRURec",))
    ok.start()
    ok.join(120)
    assert ok.exitcode == 0
    unknown = context.Process(target=get_model, args=("NoSuchModel",))
    unknown.start()
    unknown.join(120)
    assert unknown.exitcode == 1


def test_stock_recbole_objective_function_trains_a_plugin_model(tiny_run_dict, tmp_path, monkeypatch):
    """RecBole's own objective_function (its Config, get_model, Trainer) finds and trains LRURec.

    RecBole's Config does not know the plugin's property files; the class declares its input
    type and the model fills in its own defaults. As for SASRec, CE wants no negative sampling.
    """
    from recbole.quick_start import objective_function

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["prog"])  # RecBole's Config reads sys.argv
    config_dict = dict(tiny_run_dict, model="LRURec", dataset="tiny", train_neg_sample_args=None)
    for key in ("inner_size", "n_heads", "embedding_size"):
        config_dict.pop(key)
    result = objective_function(config_dict=config_dict, saved=False)
    assert result["model"] == "LRURec"
    assert 0.0 <= result["test_result"]["ndcg@10"] <= 1.0
