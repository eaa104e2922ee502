"""The plugin's sequential models, each registered with RecBole's name lookup on import."""
from recbole_linear.model.glintru import GLINTRU
from recbole_linear.model.linrec import LinRec
from recbole_linear.model.lrurec import LRURec
from recbole_linear.registry import register_model

# class, and extra names accepted wherever RecBole resolves names
register_model(LRURec)
register_model(LinRec)
register_model(GLINTRU, aliases=("GLINT-RU",))

__all__ = ["LRURec", "LinRec", "GLINTRU"]
