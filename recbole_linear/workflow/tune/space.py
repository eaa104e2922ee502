"""The search space of ``tune``: RecBole's ``.hyper`` format, tied keys and YAML/JSON-ready values.

One parameter a line (``choice``, ``uniform``, ``loguniform``, ``quniform``), read and validated
by :func:`read_params_file`; :data:`TIED_PARAMS` lists the keys that follow another tuned key.
"""
import ast
import json
import math
import os
import re
from dataclasses import dataclass

from recbole_linear import paths
from recbole_linear.errors import ConfigError
from recbole_linear.registry import canonical_model_name

PARAM_TYPES = ("choice", "uniform", "loguniform", "quniform")

# model -> {tied key: source key}. When the source key is tuned and the tied key is not, every
# trial sets the tied key to the source's value. One "hidden size" and one "dropout" knob per
# model make the spaces of different models match (same axes, same grid size).
TIED_PARAMS = {
    # the model requires embedding_size == hidden_size; the official run.py sets both dropouts
    # around the same value (0.2 / unpublished), the gate's hard-coded 0.3 stays as it is
    "GLINTRU": {"embedding_size": "hidden_size", "hidden_dropout_prob": "dropout_prob"},
    # the paper tunes one dropout rate; officially bert_dropout and bert_attn_dropout are equal
    "LRURec": {"lru_dropout_prob": "dropout_prob"},
    # RecBole's defaults keep the two dropouts equal
    "SASRec": {"attn_dropout_prob": "hidden_dropout_prob"},
    "BERT4Rec": {"attn_dropout_prob": "hidden_dropout_prob"},
    # the scoring width d is embedding_size, the GRU's is hidden_size: tune them as one width
    "GRU4Rec": {"embedding_size": "hidden_size"},
}

CSV_NAME = "trials.csv"
_RESERVED_COLUMNS = ("trial", "valid_score", "num_parameters", "epochs_trained", "seconds", "train_seconds",
                     "checkpoint", "finished_at", "params")
_LINE_FORMS = ("'<name> choice [v1, v2, ...]', '<name> uniform <low>,<high>', "
               "'<name> loguniform <low>,<high>' or '<name> quniform <low>,<high>,<q>'")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_ARITY = {"uniform": 2, "loguniform": 2, "quniform": 3}


class ParamsFileError(ConfigError):
    """A missing, unreadable or malformed ``.hyper`` file."""


# --- values -------------------------------------------------------------------------------
def plain(value):
    """numpy scalars -> Python numbers, tuples -> lists (recursively): YAML/JSON-ready values."""
    if hasattr(value, "item") and not isinstance(value, (list, tuple, dict, str)):
        try:
            return value.item()
        except (TypeError, ValueError):
            return value
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return value


def trial_key(params):
    """The identity of a trial under fixed settings: its parameters as canonical JSON."""
    return json.dumps(plain(params), sort_keys=True)


def params_str(params):
    return ", ".join(f"{name}={value}" for name, value in params.items())


# --- the search space: RecBole's .hyper format --------------------------------------------
@dataclass(frozen=True)
class ParamSpec:
    """One line of a ``.hyper`` file."""

    name: str
    kind: str  # choice | uniform | loguniform | quniform
    args: tuple  # choice: the values; uniform, loguniform: (low, high); quniform: (low, high, q)
    line: int

    def hyperopt(self):
        from hyperopt import hp

        if self.kind == "choice":
            return hp.choice(self.name, list(self.args))
        return getattr(hp, self.kind)(self.name, *self.args)

    @property
    def integral(self):
        return self.kind == "quniform" and all(float(a).is_integer() for a in self.args)

    def normalize(self, value):
        value = plain(value)
        if self.integral and isinstance(value, float) and value.is_integer():
            return int(value)
        return value

    def candidates(self):
        """Values checked against the config before training: every choice, or the range's ends."""
        if self.kind == "choice":
            return list(self.args)
        low, high = self.args[:2]
        if self.kind == "loguniform":
            return [math.exp(low), math.exp(high)]
        if self.kind == "quniform":
            q = self.args[2]
            return [self.normalize(max(round(low / q) * q, low)), self.normalize(min(round(high / q) * q, high))]
        return [low, high]

    def describe(self):
        if self.kind == "choice":
            return f"{self.name} choice {list(self.args)}"
        return f"{self.name} {self.kind} {','.join(f'{a:g}' for a in self.args)}"


def resolve_params_file(model, params_file=None):
    """``params_file``, or the plugin's ``properties/hyper/<Model>.hyper``; ParamsFileError if missing."""
    if params_file:
        if not os.path.isfile(params_file):
            raise ParamsFileError(f"params file '{params_file}' not found")
        return params_file
    default = paths.hyper_file(canonical_model_name(model))
    if not os.path.isfile(default):
        raise ParamsFileError(
            f"no search space for model '{model}': {default} does not exist (pass --params_file=<file.hyper>)"
        )
    return default


def read_params_file(path):
    """The parameters of a ``.hyper`` file, validated line by line (ParamsFileError, one line)."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError as e:
        raise ParamsFileError(f"params file '{path}' not found") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ParamsFileError(f"cannot read params file '{path}': {getattr(e, 'strerror', None) or e}") from e
    specs = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        spec = _parse_line(line, f"params file '{path}', line {number}", number)
        if spec.name in specs:
            raise ParamsFileError(f"params file '{path}', line {number}: '{spec.name}' is defined twice")
        specs[spec.name] = spec
    if not specs:
        raise ParamsFileError(f"params file '{path}' defines no parameter (one per line: {_LINE_FORMS})")
    return list(specs.values())


def _parse_line(line, where, number):
    parts = line.split(None, 2)
    if len(parts) < 3:
        raise ParamsFileError(f"{where}: expected {_LINE_FORMS}, got '{line}'")
    name, kind, rest = parts
    if not _NAME.match(name):
        raise ParamsFileError(f"{where}: '{name}' is not a config key name")
    if name in _RESERVED_COLUMNS:
        raise ParamsFileError(f"{where}: '{name}' cannot be tuned (it names a column of {CSV_NAME})")
    if kind == "choice":
        try:
            values = ast.literal_eval(rest)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise ParamsFileError(
                f"{where}: cannot parse the value list {rest!r} (expected a list of literals such as [0.001, 0.01])"
            ) from None
        if not isinstance(values, (list, tuple)) or not values:
            raise ParamsFileError(f"{where}: 'choice' needs a non-empty list such as [0.001, 0.01], got {rest!r}")
        keys = [json.dumps(plain(v), sort_keys=True) for v in values]
        if len(set(keys)) != len(keys):
            raise ParamsFileError(f"{where}: the value list {rest!r} repeats a value")
        return ParamSpec(name, kind, tuple(values), number)
    if kind in _ARITY:
        arity = _ARITY[kind]
        form = "<low>,<high>" if arity == 2 else "<low>,<high>,<q>"
        tokens = [t for t in re.split(r"[,\s]+", rest.strip()) if t]
        try:
            bounds = tuple(float(t) for t in tokens)
        except ValueError:
            bounds = ()
        if len(bounds) != arity or not all(math.isfinite(b) for b in bounds):
            raise ParamsFileError(f"{where}: '{kind}' needs {arity} numbers {form}, got {rest!r}")
        if bounds[0] >= bounds[1]:
            raise ParamsFileError(f"{where}: '{kind}' needs low < high, got {rest!r}")
        if kind == "quniform" and bounds[2] <= 0:
            raise ParamsFileError(f"{where}: 'quniform' needs a positive step q, got {rest!r}")
        return ParamSpec(name, kind, bounds, number)
    raise ParamsFileError(f"{where}: unknown type '{kind}' (expected one of {', '.join(PARAM_TYPES)})")


def tied_keys(model, specs):
    """{tied key: source key} that apply to this model and space."""
    tuned = {spec.name for spec in specs}
    return {
        tied: source
        for tied, source in TIED_PARAMS.get(model, {}).items()
        if source in tuned and tied not in tuned
    }
