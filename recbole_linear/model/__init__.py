"""The plugin's sequential models, each registered with RecBole's name lookup on import."""
from recbole_linear.registry import register_model

__all__ = []

# (module, class name, extra names accepted wherever RecBole resolves names)
_MODELS = (
    ("recbole_linear.model.lrurec", "LRURec", ()),
    ("recbole_linear.model.linrec", "LinRec", ()),
    ("recbole_linear.model.glintru", "GLINTRU", ("GLINT-RU",)),
)


def _load_models():
    import importlib

    for module_path, class_name, aliases in _MODELS:
        try:
            module = importlib.import_module(module_path)
        except ModuleNotFoundError as e:  # model not written yet in this checkout
            if e.name != module_path:
                raise
            continue
        model_class = getattr(module, class_name)
        register_model(model_class, aliases)
        globals()[class_name] = model_class
        __all__.append(class_name)


_load_models()
