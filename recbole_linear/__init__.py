"""recbole-linear: linear-time sequential recommenders (LRURec, LinRec, GLINT-RU) for RecBole.

Importing the package registers the plugin models with RecBole's name lookup, so
``recbole.utils.get_model('LRURec')``, ``run_recbole(model='LRURec')`` and RecBole's
``HyperTuning`` find them.
"""
__version__ = "0.1.0"

from recbole_linear import model as _model  # noqa: E402  (registers the models)
from recbole_linear.model import *  # noqa: E402,F401,F403
from recbole_linear.registry import get_model  # noqa: E402,F401
from recbole_linear.config import create_config  # noqa: E402,F401
from recbole_linear.quick_start import (  # noqa: E402,F401
    load_data_and_model,
    objective_function,
    run,
    run_recbole_linear,
)
