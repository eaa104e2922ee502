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
