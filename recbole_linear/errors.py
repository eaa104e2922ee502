"""Errors the plugin raises for bad input: the command line prints them as one line."""


class RecBoleLinearError(Exception):
    """Base class: a user-facing problem (bad model, dataset or config), not a bug."""


class UnknownModelError(RecBoleLinearError, ValueError):
    pass


class DatasetNotFoundError(RecBoleLinearError, FileNotFoundError):
    pass


class ConfigError(RecBoleLinearError, ValueError):
    pass


class DatasetError(RecBoleLinearError, ValueError):
    """An atomic file RecBole cannot read as a dataset (header, columns, values) or a split it cannot evaluate."""
