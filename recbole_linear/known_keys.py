"""Every config key RecBole or the plugin defines or reads, and a warning for the others.

RecBole accepts any key and silently ignores the ones nothing reads, so ``--epoch=1`` trains for
RecBole's 300 epochs. The known keys are collected from the installed code, not a copied list:

- the property files: RecBole's ``properties/overall.yaml``, every ``model/*.yaml``, the dataset
  defaults (``sample.yaml``, ``ml-100k.yaml``) and ``quick_start_config/*.yaml``; the plugin's
  ``overall.yaml``, ``model/*.yaml`` and ``dataset/*.yaml``;
- RecBole's parameter lists (``recbole/utils/argument_list.py``);
- every key read in code, ``config["key"]`` / ``config.get("key")`` / ``final_config_dict[...]``,
  in RecBole's and the plugin's sources (DDP's ``nproc``/``world_size``, ``neg_sampling``...).
"""
import difflib
import functools
import glob
import os
import re
from logging import getLogger

from recbole.utils import argument_list

from recbole_linear import paths
from recbole_linear.errors import ConfigError
from recbole_linear.property_files import read_yaml

_RECBOLE_DIR = os.path.dirname(os.path.abspath(__import__("recbole").__file__))
_PLUGIN_DIR = os.path.dirname(os.path.abspath(__file__))
# config["key"], config.get("key"), self.config['key'], final_config_dict["key"] ...
_KEY_READ = re.compile(r"""config(?:_dict)?\s*(?:\[|\.get\(|\.setdefault\()\s*f?["']([A-Za-z_][\w\-]*)["']""")
# set at run time by Config itself or by the plugin's command line, never in a property file
_RUNTIME_KEYS = {"model", "dataset", "config_files", "MODEL_TYPE", "MODEL_INPUT_TYPE", "eval_type", "device"}
# (data) files of RecBole's dataset folder that are not config defaults
_NOT_DEFAULTS = {"url.yaml", "kg_url.yaml"}

_warned = set()
# keys the user passes on purpose (--allow_unknown_keys=a,b): known here and in the processes this one
# starts (compare workers, DDP ranks), which read them from this variable
ALLOWED_ENV = "RECBOLE_LINEAR_ALLOWED_KEYS"
_allowed = set()


def _yaml_keys(pattern):
    keys = set()
    for path in glob.glob(pattern):
        if os.path.basename(path) not in _NOT_DEFAULTS:
            keys |= set(read_yaml(path))
    return keys


def _keys_read_in(folder):
    keys = set()
    for path in glob.glob(os.path.join(folder, "**", "*.py"), recursive=True):
        with open(path, encoding="utf-8", errors="replace") as f:
            keys |= set(_KEY_READ.findall(f.read()))
    return keys


@functools.lru_cache(maxsize=1)
def known_keys():
    """The set of every key some RecBole or plugin file defines or some code reads."""
    recbole_properties = os.path.join(_RECBOLE_DIR, "properties")
    keys = set(_RUNTIME_KEYS)
    for pattern in ("overall.yaml", "model/*.yaml", "dataset/*.yaml", "quick_start_config/*.yaml"):
        keys |= _yaml_keys(os.path.join(recbole_properties, pattern))
        keys |= _yaml_keys(os.path.join(paths.properties_dir(), pattern))
    for name in ("general_arguments", "training_arguments", "evaluation_arguments", "dataset_arguments"):
        keys |= set(getattr(argument_list, name, ()))
    keys |= _keys_read_in(_RECBOLE_DIR)
    keys |= _keys_read_in(_PLUGIN_DIR)
    return frozenset(keys)


def closest_known_key(key):
    """The known key ``key`` most probably meant, or None."""
    known = known_keys()
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
    if not close:  # a case slip ('max_item_list_length') is worth a hint too
        close = [k for k in known if k.lower() == key.lower()][:1]
    return close[0] if close else None


def unknown_key_message(key):
    """``unknown key 'epoch' (did you mean 'epochs'?)``, or None for a known key."""
    if key in known_keys() or key in allowed_keys():
        return None
    close = closest_known_key(key)
    hint = f" (did you mean '{close}'?)" if close else ""
    return f"unknown key '{key}'{hint}: no RecBole or recbole-linear property file defines it and nothing reads it"


def allowed_keys():
    """The keys allowed on purpose in this process or by the process that started it."""
    return _allowed | {k for k in os.environ.get(ALLOWED_ENV, "").split(",") if k}


def allow_keys(keys):
    """Accept ``keys`` although no property file defines them (a custom model's keys), here and
    in the processes started from now on."""
    _allowed.update(k for k in keys if k)
    if _allowed:
        os.environ[ALLOWED_ENV] = ",".join(sorted(allowed_keys()))


def check_command_line_keys(keys):
    """ConfigError for the first unknown ``--key=value`` key: on the command line it is almost always a
    typo (``--epoch=1`` would train RecBole's 300 epochs), so it stops the command before anything loads."""
    for key in keys:
        if unknown_key_message(key) is not None:
            close = closest_known_key(key)
            hint = f" (did you mean '{close}'?)" if close else ""
            raise ConfigError(
                f"unknown key '--{key}'{hint}: no RecBole or recbole-linear property file defines it; "
                f"to pass it on purpose (a custom model's key), add --allow_unknown_keys={key}"
            )


def warn_unknown_keys(keys):
    """One warning line per unknown key, once per process; returns the messages (also the repeats)."""
    messages = []
    for key in keys:
        message = unknown_key_message(key)
        if message is None:
            continue
        messages.append(message)
        if key not in _warned:
            _warned.add(key)
            getLogger("recbole_linear").warning(f"recbole-linear: warning: {message}")
    return messages
