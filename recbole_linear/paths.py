"""Where the plugin's property files live.

In a source checkout (and an editable install) they sit in ``properties/`` beside the
package; a wheel ships the same folder as ``recbole_linear/properties``.
"""
import os

from recbole_linear.errors import ConfigError

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def properties_dir():
    """The folder holding ``model/``, ``dataset/``, ``hyper/`` and ``protocol/`` property files."""
    for candidate in (
        os.path.join(_PACKAGE_DIR, "properties"),
        os.path.join(os.path.dirname(_PACKAGE_DIR), "properties"),
    ):
        if os.path.isdir(os.path.join(candidate, "model")):
            return candidate
    raise FileNotFoundError("recbole_linear: the properties/ folder is missing from this install")


def overall_property_file():
    return os.path.join(properties_dir(), "overall.yaml")


def model_property_file(model_name):
    return os.path.join(properties_dir(), "model", f"{model_name}.yaml")


def dataset_property_file(dataset_name):
    return os.path.join(properties_dir(), "dataset", f"{dataset_name}.yaml")


def hyper_file(model_name):
    return os.path.join(properties_dir(), "hyper", f"{model_name}.hyper")


def protocol_names():
    """The shipped papers' protocols (``properties/protocol/<name>.yaml``), e.g. ``lrurec-paper``."""
    folder = os.path.join(properties_dir(), "protocol")
    if not os.path.isdir(folder):
        return []
    return sorted(name[: -len(".yaml")] for name in os.listdir(folder) if name.endswith(".yaml"))


def protocol_file(name):
    """The path of a shipped protocol file: a paper's run settings, used as a config file."""
    if name not in protocol_names():
        raise ConfigError(f"unknown protocol '{name}' (shipped: {', '.join(protocol_names()) or 'none'})")
    return os.path.join(properties_dir(), "protocol", f"{name}.yaml")
