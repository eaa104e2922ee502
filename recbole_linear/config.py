"""RecBole's ``Config`` with the plugin's property files, an explicit command line and checks.

Precedence, lowest first:
RecBole's internal defaults (overall, its model yaml, dataset yaml, quick-start yaml)
< the plugin's dataset yaml (``properties/dataset/<dataset>.yaml``)
< the plugin's model yaml (``properties/model/<Model>.yaml``)
< the user's ``config_file_list`` < ``config_dict`` < command-line ``--key=value``.

Unlike RecBole's ``Config``, this one reads ``--key=value`` only from the ``cmd_args`` it is
given, never from ``sys.argv`` behind the caller's back: a Python caller (pytest, a notebook,
a Ray worker) gets exactly the config it asked for.

It also warns once per unknown key (:mod:`recbole_linear.known_keys`), runs the model's own
``check_config`` before any data loads, reads ``data_path`` as the folder holding
``<dataset>/<dataset>.inter`` for every dataset (RecBole pins ml-100k to its bundled copy), and
gives a dataset without any yaml the load_col it needs (:mod:`recbole_linear.data_checks`).
"""
import numbers
import os

from recbole.config import Config

from recbole_linear import paths, precision
from recbole_linear.all_positions import check_supported
from recbole_linear.errors import ConfigError, RecBoleLinearError
from recbole_linear.data_checks import set_default_load_col
from recbole_linear.distributed import init_process_group
from recbole_linear.known_keys import warn_unknown_keys
from recbole_linear.model_names import PLUGIN_MODELS, canonical_model_name
from recbole_linear.property_files import load_model_properties, read_yaml  # noqa: F401  (read_yaml: public here too)
from recbole_linear.recbole_compat import _NO_SAMPLING, adopt_plugin_defaults, input_type_for
from recbole_linear.registry import get_model
from recbole_linear import sampled_loss


def fill_model_defaults(config, model_name):
    """Give a config the plugin's model defaults; plugin models call this first in ``__init__``.

    A :class:`PluginConfig` already has them. A config built by RecBole's own ``Config`` (stock
    ``run_recbole``, ``objective_function``, ``HyperTuning``) never read the plugin's property
    files: it takes every default the user did not set, as RecBole's precedence would have given
    it (RecBole's overall.yaml < the model's yaml < user settings), including LRURec's optimizer.
    Any other mapping (a test's dict) only gets the keys it lacks.
    """
    defaults = load_model_properties(model_name)
    if isinstance(config, Config) and not isinstance(config, PluginConfig):
        plugin_overall = read_yaml(paths.overall_property_file())
        adopt_plugin_defaults(config, model_name, {**{k: v for k, v in plugin_overall.items() if k not in config}, **defaults})
        return config
    for key, value in defaults.items():
        if key not in config:
            config[key] = value
    return config


def parse_cmd_args(args):
    """RecBole's ``--key=value`` syntax -> {key: raw string}; other arguments are an error."""
    parsed = {}
    for arg in args or ():
        if not arg.startswith("--") or "=" not in arg:
            raise ConfigError(f"unrecognised argument '{arg}': overrides take the form --key=value")
        key, value = arg[2:].split("=", 1)
        if key in parsed and parsed[key] != value:
            raise ConfigError(f"'--{key}' is given twice with different values")
        parsed[key] = value
    return parsed


# key -> (check, description). Only keys present in the final config are checked.
def _positive_int(v):
    return isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0


def _non_negative_int(v):
    return isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 0


def _positive_number(v):
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and v > 0


def _non_negative_number(v):
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and v >= 0


def _bool(v):
    return isinstance(v, bool)


def _probability(v):
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and 0 <= v < 1


_CHECKS = {
    "MAX_ITEM_LIST_LENGTH": (_positive_int, "a positive integer"),
    "epochs": (_non_negative_int, "a non-negative integer"),
    "train_batch_size": (_positive_int, "a positive integer"),
    "eval_batch_size": (_positive_int, "a positive integer"),
    "eval_step": (_non_negative_int, "a non-negative integer; 0 trains without validation, as in RecBole"),
    "stopping_step": (_positive_int, "a positive integer"),
    "learning_rate": (_positive_number, "a positive number"),
    "weight_decay": (_non_negative_number, "a non-negative number"),
    "hidden_size": (_positive_int, "a positive integer"),
    "embedding_size": (_positive_int, "a positive integer"),
    "inner_size": (_positive_int, "a positive integer"),
    "n_layers": (_positive_int, "a positive integer"),
    "n_heads": (_positive_int, "a positive integer"),
    "num_layers": (_positive_int, "a positive integer"),
    "detect_anomaly": (_bool, "True or False"),
    "eval_mask_history": (_bool, "True or False"),
    "train_all_positions": (_bool, "True or False"),
    "train_window_overlap": (_non_negative_int, "a non-negative integer"),
    "resume_file": (lambda v: isinstance(v, str) and v != "", "a file path"),
    "ddp_backend": (lambda v: v in ("auto", "gloo", "nccl"), "auto, gloo or nccl"),
    "sequence_storage": (lambda v: v in ("lean", "expanded"), "lean or expanded"),
    "eval_item_chunk_size": (_positive_int, "a positive integer"),
    "flush_denormal": (_bool, "True or False"),
    "ce_block_rows": (_non_negative_int, "a non-negative integer; 0 = the whole logit matrix at once"),
}


def validate(config):
    """Raise ConfigError for values no run could use (a length of 0, a dropout of 1.5...)."""
    for key, (check, description) in _CHECKS.items():
        value = config[key]
        if value is not None and not check(value):
            raise ConfigError(f"invalid value for '{key}': {value!r} (expected {description})")
    for key, value in config.final_config_dict.items():
        if "dropout" in key and isinstance(value, (numbers.Real, str)) and not _probability(value):
            raise ConfigError(f"invalid value for '{key}': {value!r} (expected a probability in [0, 1))")
    check_supported(config)
    precision.check_config(config)


def check_model_config(config):
    """The model's own ``check_config(config)`` (heads, widths, kernel sizes), before any data loads."""
    check = getattr(config.model_class, "check_config", None)
    if callable(check):
        check(config)


def override_config(config, cmd_args, allowed):
    """Apply ``--key=value`` overrides to a built config (e.g. one loaded from a checkpoint); only
    the keys in ``allowed`` may change, the values are converted as RecBole's command line does."""
    values = parse_cmd_args(cmd_args)
    refused = sorted(set(values) - set(allowed))
    if refused:
        raise ConfigError(
            f"'--{refused[0]}' cannot be changed here (allowed: {', '.join('--' + k for k in allowed)})"
        )
    try:
        values = config._convert_config_dict(values)
    except (ValueError, SyntaxError) as e:
        raise ConfigError(f"invalid override: {e}") from e
    if "data_path" in values:
        # as for a run: the folder holding <dataset>/<dataset>.inter (the config stores the dataset folder)
        values["data_path"] = os.path.join(str(values["data_path"]), config["dataset"])
    config.final_config_dict.update(values)
    validate(config)
    return config


class PluginConfig(Config):
    """RecBole ``Config`` that knows the plugin's models, property files and checks."""

    def __init__(self, model=None, dataset=None, config_file_list=None, config_dict=None, cmd_args=None):
        self._cmd_args = list(cmd_args or ())
        if isinstance(model, str):
            model = canonical_model_name(model)
        try:
            super().__init__(model, dataset, config_file_list, config_dict)
        except RecBoleLinearError:
            raise
        except (ValueError, KeyError, TypeError, NotImplementedError, SyntaxError) as e:
            message = e.args[0] if e.args else str(e)
            raise ConfigError(f"invalid configuration: {message}") from e
        validate(self)
        check_model_config(self)
        set_default_load_col(self)

    # --- loading -------------------------------------------------------------------
    def _load_config_files(self, file_list):
        merged = {}
        for path in file_list or ():
            merged.update(read_yaml(path))
        return merged

    def _load_cmd_line(self):
        return self._convert_config_dict(parse_cmd_args(self._cmd_args))

    def _merge_external_config_dict(self):
        super()._merge_external_config_dict()
        # first, so a typo is reported even when another setting then fails
        warn_unknown_keys(self.external_config_dict)

    def _get_model_and_dataset(self, model, dataset):
        if model is None and isinstance(self.external_config_dict.get("model"), str):
            model = canonical_model_name(self.external_config_dict["model"])
        if model is None:
            raise ConfigError("no model given: pass --model=<name> (or 'model' in a config file)")
        model_class = get_model(model)
        if dataset is None:
            dataset = self.external_config_dict.get("dataset")
        if dataset is None:
            raise ConfigError("no dataset given: pass --dataset=<name> (or 'dataset' in a config file)")
        return model_class.__name__, model_class, dataset

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        self.internal_config_dict.update(read_yaml(paths.overall_property_file()))
        dataset_file = paths.dataset_property_file(dataset)
        if os.path.isfile(dataset_file):
            dataset_defaults = read_yaml(dataset_file)
            self.internal_config_dict.update(dataset_defaults)
            self.parameters["Dataset"] += [k for k in dataset_defaults if k not in self.parameters["Dataset"]]
        self.internal_config_dict.update(load_model_properties(model))

    def _set_default_parameters(self):
        super()._set_default_parameters()
        if self.dataset == "ml-100k" and "data_path" in self.external_config_dict:
            # RecBole always reads its bundled copy (configurator); a user's data_path means the
            # same for every dataset: the folder holding <dataset>/<dataset>.inter
            self.final_config_dict["data_path"] = os.path.join(self.external_config_dict["data_path"], self.dataset)
        if sampled_loss.is_sampled(self.final_config_dict.get("loss_type")):
            # RecBole's rule knows CE and BPR only; the sampled losses train on the target rows (pointwise)
            self.final_config_dict["MODEL_INPUT_TYPE"] = input_type_for(self.final_config_dict["loss_type"])
        elif self.model_class.__name__ in PLUGIN_MODELS:
            # plugin classes declare the input type of their default loss for RecBole's own
            # Config (recbole_compat); here the config's loss_type decides, as RecBole does for SASRec
            self.final_config_dict["MODEL_INPUT_TYPE"] = input_type_for(self.final_config_dict.get("loss_type"))
            sampling = self.final_config_dict.get("train_neg_sample_args")
            if self.final_config_dict["loss_type"] == "CE" and sampling is not None:
                raise ConfigError(f"train_neg_sample_args [{sampling}] should be None when the loss_type is CE")

    def _set_train_neg_sample_args(self):
        super()._set_train_neg_sample_args()
        final = self.final_config_dict
        if sampled_loss.is_sampled(final.get("loss_type")):
            # the loss draws its negatives per batch (recbole_linear.sampled_loss); RecBole's
            # dataloaders, which would repeat every row once per negative, sample none
            user_negatives = final["train_neg_sample_args"] if "train_neg_sample_args" in self.external_config_dict else None
            final[sampled_loss.RESOLVED_NEGATIVES_KEY] = sampled_loss.check_config(self, user_negatives)
            final["train_neg_sample_args"] = dict(_NO_SAMPLING)

    def _init_device(self):
        # RecBole's DDP branch is NCCL/CUDA only; a DDP rank (local_rank set) gets gloo on CPUs
        if "local_rank" in self.final_config_dict:
            init_process_group(self.final_config_dict)
        else:
            super()._init_device()

    def _get_final_config_dict(self):
        final = super()._get_final_config_dict()
        # RecBole's overall.yaml samples one negative per item, which its own Config then
        # rejects for CE models (SASRec's default). CE scores the full item table, so unless
        # the user asked for sampling, turn it off.
        if final.get("loss_type") == "CE" and "train_neg_sample_args" not in self.external_config_dict:
            final["train_neg_sample_args"] = None
        return final


def create_config(model, dataset=None, config_file_list=None, config_dict=None, cmd_args=None):
    """Build a :class:`PluginConfig` (the one entry point the rest of the plugin uses)."""
    return PluginConfig(model, dataset, config_file_list, config_dict, cmd_args)
