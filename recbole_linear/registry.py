"""Make plugin model names resolve wherever RecBole resolves names.

RecBole's ``recbole.utils.get_model(name)`` looks for a module
``recbole.model.<kind>_recommender.<name.lower()>`` and takes the attribute ``name``
from it. Registering a plugin model therefore means putting its module into
``sys.modules`` under that name (``importlib.util.find_spec`` answers from the cache).
Nothing of RecBole is edited: the alias only adds names RecBole did not have.

Registration happens when :mod:`recbole_linear` is imported. Child processes (RecBole's
``mp.spawn`` DDP path, Ray workers) re-import the plugin because the functions they run
live in this package.
"""
import importlib
import importlib.util
import pkgutil
import sys

from recbole_linear.data.storage import register_dataset
from recbole_linear.errors import UnknownModelError
from recbole_linear.model_names import MODEL_ALIASES, PLUGIN_MODELS, canonical_model_name
from recbole_linear.property_files import load_model_properties
from recbole_linear.recbole_compat import declare_input_type
from recbole_linear.trainer import register_trainer

_SEQUENTIAL_PACKAGE = "recbole.model.sequential_recommender"


_RECBOLE_SUBMODULES = (
    "general_recommender",
    "context_aware_recommender",
    "sequential_recommender",
    "knowledge_aware_recommender",
)


def register_model(model_class, aliases=()):
    """Expose ``model_class`` to RecBole's name lookup (and under each alias), and make RecBole's
    own ``Config``, ``get_trainer`` (see :mod:`recbole_linear.recbole_compat`) and
    ``create_dataset`` (see :mod:`recbole_linear.data.storage`) work for it."""
    module = sys.modules[model_class.__module__]
    name = model_class.__name__
    PLUGIN_MODELS[name] = model_class.__module__
    for spelling in (name, *aliases):
        if spelling != name:
            MODEL_ALIASES[spelling] = name
            # RecBole takes getattr(module, <the name it was given>)
            setattr(module, spelling, model_class)
        sys.modules[f"{_SEQUENTIAL_PACKAGE}.{spelling.lower()}"] = module
    declare_input_type(model_class, load_model_properties(name).get("loss_type"))
    for spelling in (name, *aliases):
        register_trainer(spelling)
        register_dataset(spelling)
    return model_class


def _recbole_module(name):
    """RecBole's own module for a model name, or None (exlib is skipped: it needs lightgbm)."""
    for submodule in _RECBOLE_SUBMODULES:
        path = f"recbole.model.{submodule}.{name.lower()}"
        if importlib.util.find_spec(path) is not None:
            return importlib.import_module(path)
    return None


def builtin_sequential_models():
    """Names of RecBole's built-in sequential models, read from its package."""
    package = importlib.import_module(_SEQUENTIAL_PACKAGE)
    names = []
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{_SEQUENTIAL_PACKAGE}.{info.name}")
        for attr in vars(module).values():
            if (
                isinstance(attr, type)
                and attr.__module__ == module.__name__
                and attr.__name__.lower() == info.name
            ):
                names.append(attr.__name__)
    return sorted(names)


def get_model(model_name):
    """The model class for a plugin or RecBole name; a one-line error for unknown names."""
    if not isinstance(model_name, str):
        return model_name
    name = canonical_model_name(model_name)
    module = _recbole_module(name)
    if module is not None and hasattr(module, name):
        return getattr(module, name)
    raise UnknownModelError(
        f"unknown model '{model_name}'. Plugin models: {', '.join(sorted(PLUGIN_MODELS))}. "
        f"RecBole sequential models: {', '.join(builtin_sequential_models())}"
    )
