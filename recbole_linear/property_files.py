"""Reading the property files: YAML in RecBole's dialect, and a plugin model's defaults.

The one place that reads them, below everything that needs them (config, the registry, RecBole
compatibility, the list of known keys), so that none of those imports another to read a file.
"""
import os
import re

import yaml

from recbole_linear import paths
from recbole_linear.errors import ConfigError
from recbole_linear.model_names import canonical_model_name


class _YamlLoader(yaml.FullLoader):
    """RecBole's YAML dialect (``1e-3`` is a float) without mutating yaml.FullLoader."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def read_yaml(path):
    """A YAML mapping from ``path``; ConfigError (one line) if unreadable or not a mapping."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            content = yaml.load(f.read(), Loader=_YamlLoader)
    except OSError as e:
        raise ConfigError(f"cannot read config file '{path}': {e.strerror}") from e
    except yaml.YAMLError as e:
        first_line = str(e).strip().splitlines()[0]
        raise ConfigError(f"config file '{path}' is not valid YAML: {first_line}") from e
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of key: value, got {type(content).__name__}")
    return content


def load_model_properties(model_name):
    """The plugin's default config for ``model_name`` ({} for RecBole's own models)."""
    path = paths.model_property_file(canonical_model_name(model_name))
    return read_yaml(path) if os.path.isfile(path) else {}


