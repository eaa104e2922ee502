"""Which dataset a sequential run gets: the lean one (each interaction stored once) or RecBole's.

``sequence_storage`` (``properties/overall.yaml``) chooses: ``lean`` (default) or ``expanded``
(RecBole's ``SequentialDataset``, every prefix written out; for comparison and as a fallback).
Both give the dataloaders the same batches (``tests/test_lean_dataset.py``); the lean one needs
memory and time in proportion to the interactions instead of interactions x ``MAX_ITEM_LIST_LENGTH``.

RecBole's own class stays in use where the lean one would change what a model sees:

- models that are not sequential, or that RecBole gives a dataset class of their own
  (``recbole.data.dataset.<Model>Dataset``: GRU4RecKG, KSR...);
- runs on pre-split benchmark files (``benchmark_filename``: their rows already hold the lists);
- the models in :data:`EXPANDED_ONLY`, each with its reason.

RecBole's own ``create_dataset`` finds the plugin's models' dataset under the name it looks up
first, ``recbole.data.dataset.<Model>Dataset`` (:func:`register_dataset`), so ``run_recbole``
and ``HyperTuning`` get the same storage as the plugin's entry points.
"""
import os
import pickle
from logging import getLogger

import recbole.data.dataset
from recbole.data import create_dataset as recbole_create_dataset
from recbole.data.dataset import SequentialDataset
from recbole.utils import ModelType, set_color
from recbole.utils.argument_list import dataset_arguments

from recbole_linear.data.lean_dataset import LeanSequentialDataset
from recbole_linear.errors import ConfigError

STORAGES = ("lean", "expanded")
# models that read the expanded rows of the whole dataset themselves, not only batches
EXPANDED_ONLY = {
    "FEARec": "it draws same-target samples from dataset.inter_feat's expanded item lists",
}


def storage_for(config):
    """``'lean'`` or ``'expanded'`` for this config (see the module docstring)."""
    return choose_storage(config)[0]


def choose_storage(config):
    """``(storage, why)``: the dataset this config gets, and the reason in a few words."""
    asked = config["sequence_storage"] or "lean"  # RecBole's own Config does not read the plugin's defaults
    if asked not in STORAGES:
        raise ConfigError(f"invalid value for 'sequence_storage': {asked!r} (expected lean or expanded)")
    model = config["model"]
    own_class = getattr(recbole.data.dataset, f"{model}Dataset", None)
    if asked == "expanded":
        return "expanded", "RecBole's SequentialDataset, every prefix written out, as asked"
    if config["MODEL_TYPE"] != ModelType.SEQUENTIAL:
        return "expanded", f"{model} is not a sequential model"
    if own_class is not None and not issubclass(own_class, LeanSequentialDataset):
        return "expanded", f"RecBole gives {model} its own {own_class.__name__}"
    if config["benchmark_filename"] is not None:
        return "expanded", "benchmark_filename: the files hold the lists already"
    if model in EXPANDED_ONLY:
        return "expanded", f"{model}: {EXPANDED_ONLY[model]}"
    return "lean", "each interaction stored once, input lists gathered per batch"


def create_dataset(config):
    """RecBole's ``create_dataset``, with the lean dataset where :func:`storage_for` picks it."""
    storage, why = choose_storage(config)
    if config["MODEL_TYPE"] == ModelType.SEQUENTIAL:
        getLogger().info(set_color("sequence_storage", "blue") + f": {storage} ({why})")
    if storage == "expanded":
        return recbole_create_dataset(config)
    return _load_or_build(config, LeanSequentialDataset)


def _load_or_build(config, dataset_class):
    """As RecBole's ``create_dataset`` does for its classes: a dataset saved with the same
    dataset arguments (``dataset_save_path`` or ``<checkpoint_dir>/<dataset>-<class>.pth``) is
    loaded, else one is built (and saved if ``save_dataset``)."""
    default_file = os.path.join(config["checkpoint_dir"], f"{config['dataset']}-{dataset_class.__name__}.pth")
    file = config["dataset_save_path"] or default_file
    if os.path.exists(file):
        with open(file, "rb") as f:
            dataset = pickle.load(f)
        if isinstance(dataset, dataset_class) and all(
            config[arg] == dataset.config[arg] for arg in dataset_arguments + ["seed", "repeatable"]
        ):
            getLogger().info(set_color("Load filtered dataset from", "pink") + f": [{file}]")
            return dataset
    dataset = dataset_class(config)
    if config["save_dataset"]:
        dataset.save()
    return dataset


class PluginSequentialDataset(LeanSequentialDataset):
    """The class RecBole's ``create_dataset`` finds for a plugin model: the lean dataset, or
    RecBole's ``SequentialDataset`` when ``sequence_storage: expanded``."""

    def __new__(cls, config=None):  # copy and pickle call it without arguments
        if config is not None and storage_for(config) == "expanded":
            return SequentialDataset(config)
        return super().__new__(cls)


def register_dataset(model_name):
    """Expose ``recbole.data.dataset.<model_name>Dataset``, the name RecBole's ``create_dataset``
    looks up before its per-type default (an addition under a name RecBole did not have)."""
    dataset_class = type(f"{model_name}Dataset", (PluginSequentialDataset,), {"__module__": __name__})
    setattr(recbole.data.dataset, dataset_class.__name__, dataset_class)
    globals()[dataset_class.__name__] = dataset_class  # where pickle looks for it (save_dataset)
    return dataset_class
