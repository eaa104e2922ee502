"""Checks of a dataset's atomic files before RecBole loads them, and of the split it makes.

RecBole reads ``<data_path>/<dataset>.inter`` with pandas and fails deep inside (a 150-line
traceback) on a bad header, a missing column, an empty file or a non-numeric float; a sequential
model on a dataset without its time column fails with ``[timestamp] is not exist in interaction``.
Each check here ends with one line naming the file and the column, and what to write instead.
"""
import os
from logging import getLogger

import numpy as np
import pandas as pd
from recbole.utils import EvaluatorType, FeatureType

from recbole_linear import paths
from recbole_linear.errors import DatasetError

# a split leaving fewer users than this in valid or test makes metrics an average over a few users
MIN_EVAL_USERS = 10
_TYPES = {t.value for t in FeatureType}
_EXAMPLE_HEADER = "user_id:token<TAB>item_id:token<TAB>timestamp:float"


def inter_file(config):
    return os.path.join(config["data_path"], f"{config['dataset']}.inter")


def _recbole_dataset_yaml(dataset):
    recbole_dir = os.path.dirname(os.path.abspath(__import__("recbole").__file__))
    return os.path.join(recbole_dir, "properties", "dataset", f"{dataset}.yaml")


def read_header(path, separator, encoding="utf-8"):
    """[(column, type)] of an atomic file's first line; DatasetError naming the file otherwise."""
    if os.path.getsize(path) == 0:
        raise DatasetError(f"dataset file {path} is empty (expected a header line such as {_EXAMPLE_HEADER})")
    with open(path, "r", encoding=encoding, errors="replace") as f:
        header = f.readline().rstrip("\n")
    columns = []
    for field in header.split(separator):
        name, _, ftype = field.partition(":")
        if not name or ftype not in _TYPES:
            hint = (
                f"; columns must be separated by field_separator {separator!r}"
                if any(c in field for c in ",;\t ") else ""
            )
            raise DatasetError(
                f"dataset file {path}: header field {field!r} is not name:type with type one of "
                f"{', '.join(sorted(_TYPES))} (e.g. {_EXAMPLE_HEADER}){hint}"
            )
        columns.append((name, ftype))
    return columns


def set_default_load_col(config):
    """A user's dataset without a yaml loads user, item and time columns (RecBole's default: user
    and item only, which sequential models cannot order).

    Applies only when nobody set ``load_col`` (the user, the plugin's or RecBole's dataset yaml) and
    the interaction file exists with a readable header; the checks below report the rest.
    """
    if "load_col" in config.external_config_dict:
        return
    if os.path.isfile(paths.dataset_property_file(config["dataset"])) or os.path.isfile(
        _recbole_dataset_yaml(config["dataset"])
    ):
        return
    path = inter_file(config)
    if not os.path.isfile(path):
        return
    try:
        header = dict(read_header(path, config["field_separator"], config["encoding"] or "utf-8"))
    except DatasetError:
        return
    wanted = [config["USER_ID_FIELD"], config["ITEM_ID_FIELD"], config["TIME_FIELD"]]
    config["load_col"] = {"inter": [column for column in wanted if column in header]}


def _loaded_inter_columns(config, header):
    load_col = config["load_col"]
    if load_col is None:
        return [name for name, _ in header]
    return list((load_col or {}).get("inter") or [])


def _needs_time(config):
    eval_args = config["eval_args"] or {}
    return eval_args.get("order") == "TO"


def _check_columns(path, config, header):
    types = dict(header)
    loaded = _loaded_inter_columns(config, header)
    found = ", ".join(f"{n}:{t}" for n, t in header)
    for column in loaded:
        if column not in types:
            raise DatasetError(
                f"dataset file {path} has no column '{column}' that load_col lists (header: {found}); "
                f"add the column or set load_col: {{inter: [...]}} to the columns it has"
            )
    for key in ("USER_ID_FIELD", "ITEM_ID_FIELD"):
        column = config[key]
        if column not in types:
            raise DatasetError(
                f"dataset file {path} has no '{column}' column ({key}; header: {found}); "
                f"add it as {column}:token or set {key} to the column that holds it"
            )
        if types[column] != "token":
            raise DatasetError(
                f"dataset file {path}: column '{column}' ({key}) is declared {types[column]}; ids must be {column}:token"
            )
        if column not in loaded:
            raise DatasetError(f"load_col: {{inter: {loaded}}} leaves out '{column}' ({key}); add it")
    time = config["TIME_FIELD"]
    if _needs_time(config):
        if time not in types:
            raise DatasetError(
                f"dataset file {path} has no '{time}' column (TIME_FIELD; header: {found}); sequential "
                f"models order each user's interactions by it (eval_args order TO): add a {time}:float "
                f"column, or set TIME_FIELD to the column that holds the order"
            )
        if types[time] != "float":
            raise DatasetError(
                f"dataset file {path}: column '{time}' (TIME_FIELD) is declared {types[time]}; "
                f"ordering by time needs {time}:float"
            )
        if time not in loaded:
            raise DatasetError(
                f"load_col: {{inter: {loaded}}} leaves out '{time}' (TIME_FIELD), which ordering by time "
                f"(eval_args order TO) needs; add it"
            )
    return [name for name in loaded if types.get(name) == "float"]


def _check_rows(path, config, header, float_columns):
    separator, encoding = config["field_separator"], config["encoding"] or "utf-8"
    names = [f"{n}:{t}" for n, t in header]
    wanted = [f"{name}:float" for name in float_columns]
    usecols = wanted or [names[0]]
    # as RecBole reads it (float64; its NA strings such as 'nan' are missing values, not errors)
    try:
        frame = pd.read_csv(path, sep=separator, header=0, names=names, usecols=usecols,
                            dtype={column: np.float64 for column in wanted}, encoding=encoding)
    except ValueError as e:  # a value that is not a number: read as text to name its line
        frame, reason = None, (str(e).strip().splitlines() or [type(e).__name__])[0]
    if frame is not None:
        if len(frame) == 0:
            raise DatasetError(f"dataset file {path} has a header but no interactions")
        return
    frame = pd.read_csv(path, sep=separator, header=0, names=names, usecols=usecols, dtype=str, encoding=encoding)
    for column in wanted:
        values = frame[column]
        present = values.notna() & (values.str.strip() != "")
        numbers = pd.to_numeric(values.where(present), errors="coerce")
        bad = np.flatnonzero((numbers.isna() & present).to_numpy())
        if len(bad):
            line = int(bad[0]) + 2  # 1-based, after the header
            raise DatasetError(
                f"dataset file {path}, line {line}: column '{column}' holds {values.iloc[bad[0]]!r}, not a number"
            )
    raise DatasetError(f"dataset file {path} cannot be read: {reason}")


def check_atomic_files(config):
    """One-line DatasetError for an interaction file RecBole would fail on (the file must exist)."""
    path = inter_file(config)
    header = read_header(path, config["field_separator"], config["encoding"] or "utf-8")
    float_columns = _check_columns(path, config, header)
    try:
        _check_rows(path, config, header, float_columns)
    except pd.errors.ParserError as e:
        reason = (str(e).strip().splitlines() or ["unreadable"])[0]
        raise DatasetError(f"dataset file {path} cannot be parsed: {reason}") from e


def split_dataset(config, dataset):
    """RecBole's ``data_preparation`` and :func:`check_split`; a split without training samples is one
    line (torch's sampler would fail with ``num_samples=0``)."""
    from recbole.data import data_preparation

    interactions, users = len(dataset.inter_feat), dataset.user_num - 1  # id 0 is padding
    topk = max(config["topk"])
    if config["eval_type"] == EvaluatorType.RANKING and topk > dataset.item_num - 1:  # id 0 is padding
        # torch.topk over each user's item scores would fail after training
        raise DatasetError(
            f"dataset '{config['dataset']}' has {dataset.item_num - 1} items, too few for topk {config['topk']}: "
            f"set --topk to at most {dataset.item_num - 1}"
        )
    try:
        train_data, valid_data, test_data = data_preparation(config, dataset)
    except ValueError as e:
        if "num_samples" not in str(e):
            raise
        raise DatasetError(
            f"dataset '{config['dataset']}': the split (eval_args split {config['eval_args']['split']}) leaves "
            f"no training samples from its {interactions} interactions of {users} user(s)"
        ) from e
    check_split(config, train_data, valid_data, test_data)
    return train_data, valid_data, test_data


def check_split(config, train_data, valid_data, test_data):
    """Warn (one line each) when validation or test holds fewer than MIN_EVAL_USERS users, and
    fail when one holds none: metrics over a few users are noise, over none are zeros."""
    for phase, data in (("valid", valid_data), ("test", test_data)):
        if data is None:
            continue
        users = _eval_user_count(config, data)
        if users == 0:
            raise DatasetError(
                f"dataset '{config['dataset']}': the split leaves no {phase} users (eval_args {config['eval_args']}); "
                "every metric would be 0"
            )
        if users < MIN_EVAL_USERS:
            getLogger("recbole_linear").warning(
                f"recbole-linear: warning: the split of dataset '{config['dataset']}' leaves {users} {phase} "
                f"user(s): {phase} metrics are averages over {users} user(s)"
            )


def _eval_user_count(config, data):
    dataset = data._dataset
    return len(np.unique(dataset.inter_feat[config["USER_ID_FIELD"]].numpy())) if len(dataset.inter_feat) else 0
