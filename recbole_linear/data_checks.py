"""Checks of a dataset's atomic files before RecBole loads them, and of the split it makes.

RecBole reads ``<data_path>/<dataset>.inter`` with pandas and fails deep inside (a 150-line
traceback) on a bad header, a missing column, an empty file or a non-numeric float; a sequential
model on a dataset without its time column fails with ``[timestamp] is not exist in interaction``.
Each check here ends with one line naming the file and the column, and what to write instead.
"""
import codecs
import itertools
import os
from logging import getLogger

import numpy as np
import pandas as pd
from recbole.data import data_preparation
from recbole.utils import EvaluatorType, FeatureType

from recbole_linear import paths
from recbole_linear.errors import DatasetError

# a split leaving fewer users than this in valid or test makes metrics an average over a few users
MIN_EVAL_USERS = 10
_TYPES = {t.value for t in FeatureType}
_EXAMPLE_HEADER = "user_id:token<TAB>item_id:token<TAB>timestamp:float"
_warned_blank = set()


def inter_file(config):
    return os.path.join(config["data_path"], f"{config['dataset']}.inter")


def _recbole_dataset_yaml(dataset):
    recbole_dir = os.path.dirname(os.path.abspath(__import__("recbole").__file__))
    return os.path.join(recbole_dir, "properties", "dataset", f"{dataset}.yaml")


def read_header(path, separator, encoding="utf-8"):
    """[(column, type)] of an atomic file's first line; DatasetError naming the file otherwise."""
    if os.path.getsize(path) == 0:
        raise DatasetError(f"dataset file {path} is empty (expected a header line such as {_EXAMPLE_HEADER})")
    with open(path, "rb") as f:
        starts_with_bom = f.read(len(codecs.BOM_UTF8)) == codecs.BOM_UTF8
    if starts_with_bom and _codec_name(encoding) == "utf-8":
        # RecBole reads the mark as part of the first column's name ('\ufeffuser_id')
        raise DatasetError(
            f"dataset file {path} starts with a UTF-8 byte-order mark (as spreadsheet tools save it), which "
            f"RecBole would read as part of the first column's name: save the file without it, or pass "
            f"--encoding=utf-8-sig"
        )
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
        if name in dict(columns):
            raise DatasetError(
                f"dataset file {path}: column '{name}' appears twice in the header (fields "
                f"{[n for n, _ in columns].index(name) + 1} and {len(columns) + 1}); rename or remove one"
            )
        columns.append((name, ftype))
    return columns


def _codec_name(encoding):
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        return encoding


def check_encoding(path, encoding, chunk_bytes=1 << 24):
    """DatasetError naming the first line whose bytes are not text in ``encoding`` (pandas would
    fail with a UnicodeDecodeError traceback). Read in chunks cut at line ends, for files of any
    size; skipped for encodings in which a line end is not the byte ``\\n`` (UTF-16...)."""
    try:
        if "\n".encode(encoding) != b"\n":
            return
    except LookupError:
        raise DatasetError(f"dataset file {path}: unknown encoding {encoding!r} (the 'encoding' key)") from None
    lines_before = 0
    for piece in _pieces_of_whole_lines(path, chunk_bytes):
        try:
            piece.decode(encoding)
        except UnicodeDecodeError as e:
            line = lines_before + piece.count(b"\n", 0, e.start) + 1
            raise DatasetError(
                f"dataset file {path}, line {line}: byte {piece[e.start]:#04x} is not {encoding} text "
                f"(the 'encoding' key); save the file as {encoding}, or pass the encoding it was saved in, "
                f"e.g. --encoding=latin-1"
            ) from None
        lines_before += piece.count(b"\n")


def _pieces_of_whole_lines(path, chunk_bytes):
    """The file's bytes in pieces of about ``chunk_bytes``, each cut after a ``\n`` (the last piece
    holds what follows the last one, possibly nothing): a file of any size, a line never split."""
    rest = b""
    with open(path, "rb") as f:
        while True:
            chunk = f.read(chunk_bytes)
            data = rest + chunk
            cut = len(data) if not chunk else data.rfind(b"\n") + 1
            piece, rest = data[:cut], data[cut:]
            yield piece
            if not chunk:
                return


def _line_shapes(path, separator, encoding, n_fields, chunk_bytes=1 << 24):
    """The 1-based numbers of the empty lines after the header (pandas, and so RecBole, skips them);
    DatasetError naming the first line with a field missing or one too many (RecBole would fill
    the missing one with nothing, or drop the extra one, and train on the damaged row)."""
    sep = separator.encode(encoding)
    if len(sep) != 1 or "\n".encode(encoding) != b"\n":
        return []  # a multi-byte separator or encoding: not checked
    blank, lines_before = [], 0
    for piece in _pieces_of_whole_lines(path, chunk_bytes):
        if piece:
            raw = np.frombuffer(piece, dtype=np.uint8)
            ends = np.flatnonzero(raw == 10)
            if not len(ends) or ends[-1] != len(raw) - 1:
                ends = np.append(ends, len(raw))  # the last line, without its \n
            starts = np.concatenate(([0], ends[:-1] + 1))
            content_ends = ends - (raw[np.maximum(ends - 1, 0)] == 13) * (ends > starts)  # without a \r
            separators = np.flatnonzero(raw == sep[0])
            fields = np.searchsorted(separators, content_ends) - np.searchsorted(separators, starts) + 1
            empty = content_ends == starts
            numbers = lines_before + 1 + np.arange(len(starts))
            data_lines = numbers > 1  # the header is line 1
            wrong = np.flatnonzero(data_lines & ~empty & (fields != n_fields))
            if len(wrong):
                i = wrong[0]
                text = piece[starts[i]:content_ends[i]].decode(encoding, errors="replace")
                shown = text if len(text) <= 80 else text[:77] + "..."
                raise DatasetError(
                    f"dataset file {path}, line {numbers[i]}: {fields[i]} fields where the header has "
                    f"{n_fields} ({shown!r}); "
                    + ("a field is missing" if fields[i] < n_fields else "one field too many")
                    + f" (fields are separated by field_separator {separator!r})"
                )
            blank += numbers[data_lines & empty].tolist()
            lines_before += len(starts)
    return blank


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


def _file_line(row, blank_lines):
    """The 1-based line of data row ``row`` (0-based) of a file whose empty lines pandas skipped."""
    line = row + 2  # after the header
    for blank in blank_lines:  # ascending
        if blank <= line:
            line += 1
    return line


def _check_rows(path, config, header, float_columns):
    separator, encoding = config["field_separator"], config["encoding"] or "utf-8"
    blank_lines = _line_shapes(path, separator, encoding, len(header))
    if blank_lines and (path, len(blank_lines)) not in _warned_blank:  # once per process (checked twice per run)
        _warned_blank.add((path, len(blank_lines)))
        shown = ", ".join(map(str, blank_lines[:5])) + (", ..." if len(blank_lines) > 5 else "")
        getLogger("recbole_linear").warning(
            f"recbole-linear: warning: dataset file {path}: {len(blank_lines)} empty line(s) skipped, as RecBole "
            f"skips them (line {shown})"
        )
    names = [f"{n}:{t}" for n, t in header]
    types = dict(header)
    wanted = [f"{name}:float" for name in float_columns]
    # every interaction needs its user, its item and (ordered by time) its time
    required = [config["USER_ID_FIELD"], config["ITEM_ID_FIELD"]] + ([config["TIME_FIELD"]] if _needs_time(config) else [])
    required = [f"{name}:{types[name]}" for name in required if name in types]
    usecols = list(dict.fromkeys(wanted + required)) or [names[0]]
    dtype = {column: (np.float64 if column in wanted else str) for column in usecols}
    # as RecBole reads it (float64; its NA strings such as 'nan' are missing values, not errors)
    try:
        frame = pd.read_csv(path, sep=separator, header=0, names=names, usecols=usecols, dtype=dtype, encoding=encoding)
    except ValueError as e:  # a value that is not a number: read as text to name its line
        frame, reason = None, (str(e).strip().splitlines() or [type(e).__name__])[0]
    if frame is not None:
        if len(frame) == 0:
            raise DatasetError(f"dataset file {path} has a header but no interactions")
        _check_required(path, frame, required, blank_lines, encoding)
        _check_topk(path, config, frame[f"{config['ITEM_ID_FIELD']}:token"].nunique())
        return
    frame = pd.read_csv(path, sep=separator, header=0, names=names, usecols=usecols, dtype=str, encoding=encoding)
    for column in wanted:
        values = frame[column]
        present = values.notna() & (values.str.strip() != "")
        numbers = pd.to_numeric(values.where(present), errors="coerce")
        bad = np.flatnonzero((numbers.isna() & present).to_numpy())
        if len(bad):
            raise DatasetError(
                f"dataset file {path}, line {_file_line(int(bad[0]), blank_lines)}: column '{column}' holds "
                f"{values.iloc[bad[0]]!r}, not a number"
            )
    raise DatasetError(f"dataset file {path} cannot be read: {reason}")


def _check_required(path, frame, required, blank_lines, encoding):
    """DatasetError naming the first line whose user, item or (ordered by time) time is missing:
    RecBole would drop the row (an id) or give it the column's mean (a time) without a word here."""
    for column in required:
        missing = np.flatnonzero(frame[column].isna().to_numpy())
        if len(missing):
            line = _file_line(int(missing[0]), blank_lines)
            with open(path, "r", encoding=encoding, errors="replace") as f:
                text = next(itertools.islice(f, line - 1, None), "").rstrip("\r\n")
            raise DatasetError(
                f"dataset file {path}, line {line}: column '{column}' is empty or a missing-value mark "
                f"({text!r}); every interaction needs its {column.split(':')[0]}"
            )


def check_atomic_files(config):
    """One-line DatasetError for an interaction file RecBole would fail on (the file must exist)."""
    path = inter_file(config)
    check_encoding(path, config["encoding"] or "utf-8")
    header = read_header(path, config["field_separator"], config["encoding"] or "utf-8")
    float_columns = _check_columns(path, config, header)
    try:
        _check_rows(path, config, header, float_columns)
    except pd.errors.ParserError as e:
        reason = (str(e).strip().splitlines() or ["unreadable"])[0]
        raise DatasetError(f"dataset file {path} cannot be parsed: {reason}") from e


def _too_few_items(config, n_items):
    """The one line for a ``topk`` above the number of items (None when it is not)."""
    if config["eval_type"] != EvaluatorType.RANKING or max(config["topk"]) <= n_items:
        return None
    return (f"dataset '{config['dataset']}' has {n_items} items, too few for topk {config['topk']}: "
            f"set --topk to at most {n_items}")


def _check_topk(path, config, n_items):
    """Before RecBole loads anything: its filters only remove items, so a file with fewer distinct items
    than ``topk`` fails later for sure (unless an .item file adds items)."""
    if os.path.isfile(os.path.join(os.path.dirname(path), f"{config['dataset']}.item")):
        return
    message = _too_few_items(config, n_items)
    if message is not None:
        raise DatasetError(message)


def split_dataset(config, dataset):
    """RecBole's ``data_preparation`` and :func:`check_split`; a split without training samples is one
    line (torch's sampler would fail with ``num_samples=0``)."""
    interactions, users = len(dataset.inter_feat), dataset.user_num - 1  # id 0 is padding
    message = _too_few_items(config, dataset.item_num - 1)  # id 0 is padding
    if message is not None:  # after RecBole's filters; torch.topk over each user's item scores would fail after training
        raise DatasetError(message)
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
