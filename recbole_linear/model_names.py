"""The plugin's model names: the registered classes and the other spellings the command line accepts.

Filled by :func:`recbole_linear.registry.register_model`; read by the modules below the registry
(property files, config) without importing it.
"""
# plugin class name -> module path
PLUGIN_MODELS = {}
# alternative spellings accepted on the command line -> class name
MODEL_ALIASES = {}


def canonical_model_name(name):
    """'GLINT-RU' -> 'GLINTRU'; other names unchanged."""
    return MODEL_ALIASES.get(name, name)
