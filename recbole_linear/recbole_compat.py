"""Plugin models under RecBole's own entry points (``Config``, ``run_recbole``, ``objective_function``).

RecBole's ``Config`` reads model defaults only from ``recbole/properties/model/<Model>.yaml``, so a
config it builds for a plugin model lacks the plugin's property file. Three things follow, each
handled here without touching RecBole's code:

1. ``Config`` needs the model's input type before any model exists: from the class attribute
   ``input_type`` or else from ``loss_type``. :func:`declare_input_type` gives each plugin class the
   input type of its property file's ``loss_type`` (CE -> pointwise), so no ``loss_type`` is needed.
2. The plugin's defaults (model keys and LRURec's official optimizer: AdamW, weight decay 0.01,
   eps 1e-9, gradient clipping 5) arrive when the model is built, which in ``run_recbole`` is after
   ``Config`` and the dataloaders and before the trainer. :func:`adopt_plugin_defaults` gives the
   config every plugin default the user did not set, with the precedence RecBole would have applied
   had the file been in its own folder. When the user sets ``loss_type: BPR``, the input type follows.
3. RecBole picks ``recbole.trainer.<Model>Trainer`` when that name exists.
   :func:`recbole_linear.trainer.register_trainer` adds that name for each plugin model: the plugin's trainer (checkpoints
   load on torch >= 2.6, LRURec's optimizer groups and eps) that first rebuilds the training
   dataloader if the model's input type or negative sampling differ from those RecBole fixed
   before the model's defaults were known.

These are additions under names RecBole did not have, like the registry's module aliases.
"""
import contextlib
import logging
import os
import sys
import warnings
from logging import getLogger

from recbole.data.dataloader import TrainDataLoader
from recbole.utils import InputType

from recbole_linear.errors import ConfigError
from recbole_linear.property_files import read_yaml

_RECBOLE_DIR = os.path.dirname(os.path.abspath(__import__("recbole").__file__))
# the sampled losses (recbole_linear.sampled_loss) train on the target rows and draw negatives per batch
_INPUT_TYPES = {"CE": InputType.POINTWISE, "BPR": InputType.PAIRWISE, "SSM": InputType.POINTWISE, "gBCE": InputType.POINTWISE}
_NO_SAMPLING = {"distribution": "none", "sample_num": "none", "alpha": "none", "dynamic": False, "candidate_num": 0}


def input_type_for(loss_type):
    """RecBole's rule (configurator ``_set_default_parameters``): CE trains pointwise, BPR pairwise."""
    if loss_type not in _INPUT_TYPES:
        raise ConfigError(f"invalid value for 'loss_type': {loss_type!r} (expected 'CE', 'BPR', 'SSM' or 'gBCE')")
    return _INPUT_TYPES[loss_type]


def declare_input_type(model_class, default_loss_type):
    """Give ``model_class`` the input type of its default loss, so RecBole's Config needs no loss_type."""
    model_class.input_type = input_type_for(default_loss_type or "CE")


def _recbole_yaml(*parts):
    path = os.path.join(_RECBOLE_DIR, "properties", *parts)
    return read_yaml(path) if os.path.isfile(path) else {}


def _keys_recbole_sets_after_model_files(dataset):
    """Keys RecBole's Config reads after the model's yaml (they would win over it)."""
    keys = set(_recbole_yaml("dataset", "sample.yaml"))
    keys |= set(_recbole_yaml("dataset", f"{dataset}.yaml"))
    keys |= set(_recbole_yaml("quick_start_config", "sequential.yaml"))
    return keys


def adopt_plugin_defaults(config, model_name, defaults):
    """Apply the plugin's ``defaults`` to a config built by RecBole's own ``Config``.

    A key takes the plugin's value unless the user set it (file, dict or command line) or a file
    RecBole reads after model yamls sets it. Returns the keys whose value changed.
    """
    user_keys = set(getattr(config, "external_config_dict", {}) or {})
    protected = user_keys | _keys_recbole_sets_after_model_files(config["dataset"])
    changed = []
    for key, value in defaults.items():
        if key in protected or (key in config and config[key] == value):
            continue
        config[key] = value
        changed.append(key)
    _align_input_type(config, user_keys)
    if changed:
        shown = ", ".join(f"{key}={config[key]!r}" for key in changed)
        getLogger().info(f"recbole-linear: RecBole's Config does not read the plugin's {model_name}.yaml; applied {shown}")
    return changed


def _align_input_type(config, user_keys):
    """The input type of the (possibly user-set) loss; CE drops RecBole's default sampling as the plugin does."""
    loss_type = config["loss_type"]
    config["MODEL_INPUT_TYPE"] = input_type_for(loss_type)
    sampling = config["train_neg_sample_args"] or {}
    if loss_type == "CE" and sampling.get("distribution", "none") != "none":
        if "train_neg_sample_args" in user_keys:
            # RecBole's own message for SASRec, which its Config skips for a class with input_type
            raise ConfigError(
                f"train_neg_sample_args {config['train_neg_sample_args']} should be None when the loss_type is CE"
            )
        config["train_neg_sample_args"] = dict(_NO_SAMPLING)


def align_train_loader(config, train_data):
    """The training loader with the model's input type and sampling: ``train_data`` itself, or a
    new loader over the same dataset and sampler if the model's defaults changed them after it was
    made. (Its ``update_config`` cannot do it: torch's DataLoader keeps the batch size it was built
    with, which RecBole divides by the number of rows each sample becomes.)"""
    if not isinstance(train_data, TrainDataLoader):
        return train_data
    if (train_data.dl_format, train_data.neg_sample_args) == (config["MODEL_INPUT_TYPE"], config["train_neg_sample_args"]):
        return train_data
    return type(train_data)(config, train_data._dataset, train_data._sampler, shuffle=train_data.shuffle)


class RecBoleEntryTrainerMixin:
    """The trainer RecBole's ``get_trainer`` finds by name for a plugin model."""

    def fit(self, train_data, *args, **kwargs):
        return super().fit(align_train_loader(self.config, train_data), *args, **kwargs)


@contextlib.contextmanager
def recbole_warnings_filtered():
    """Silence the warnings RecBole 1.2.1's own code raises under the pinned pandas and torch: they
    name RecBole's lines, not the user's, and come with every run. Each filter is narrow (message,
    category and RecBole's module), so the same warnings from any other code still show.
    Also a decorator (``@recbole_warnings_filtered()``), for the functions that call into RecBole."""
    with warnings.catch_warnings():
        # pandas >= 2.1, Dataset._fill_nan (recbole/data/dataset/dataset.py): fillna(inplace=True) on a
        # column, "A value is trying to be set on a copy of a DataFrame or Series through chained assignment"
        warnings.filterwarnings(
            "ignore", message="A value is trying to be set on a copy of a DataFrame or Series through chained "
            "assignment", category=FutureWarning, module=r"recbole\.data\.dataset\.dataset")
        # torch >= 2.4, Trainer._train_epoch (recbole/trainer/trainer.py): torch.cuda.amp.GradScaler(...),
        # "`torch.cuda.amp.GradScaler(args...)` is deprecated"
        warnings.filterwarnings(
            "ignore", message=r"`torch\.cuda\.amp\.GradScaler\(args\.\.\.\)` is deprecated",
            category=FutureWarning, module=r"recbole\.trainer\.trainer")
        yield


def console_log_to_stdout():
    """Move the console handler RecBole's ``init_logger`` just added from stderr to stdout.

    RecBole logs its console lines (config, dataset, model, epochs) to stderr. On stdout they
    leave stderr to what needs attention: warnings, and the one line of bad input that only the
    loaded data shows (a ``topk`` above the number of items after RecBole's filters, a split
    without training samples), which is then the last and only line there."""
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler and handler.stream in (sys.stderr, sys.__stderr__):
            handler.setStream(sys.stdout)
