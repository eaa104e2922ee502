"""Trials on disk: ``trials.csv`` (:class:`TrialStore`) and running one trial into a record.

A trial's identity is its parameters as canonical JSON (:func:`~recbole_linear.workflow.tune.space.trial_key`);
a rerun into the same folder serves stored trials from the file instead of training them.
"""
import csv
import importlib
import io
import json
import os
import time
import warnings
from datetime import datetime

from recbole_linear.errors import RecBoleLinearError
from recbole_linear.workflow.tune.space import _RESERVED_COLUMNS, plain, trial_key
from recbole_linear.workflow.common.run_table import relative_path, resolve_path


class TrialFailedError(RecBoleLinearError):
    """Trials that raised on Ray (their tracebacks stay in Ray's trial folders)."""


# --- trials on disk -----------------------------------------------------------------------
def quiet_import(name):
    """Import hyperopt/ray without their 'pkg_resources is deprecated' import-time warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        return importlib.import_module(name)


def _cell(value):
    value = plain(value)
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return value


class TrialStore:
    """``trials.csv``: one row per finished trial, appended (and flushed) as each one finishes.

    The ``params`` column (canonical JSON) is the trial's identity; the other columns are for
    reading: one per parameter, ``valid_score`` (the valid metric), ``valid_<metric>`` and
    ``test_<metric>`` for every metric, size, epochs, ``seconds`` (wall-clock of the process that
    finished the trial: since its last resume, if it was cut off), ``train_seconds`` (training time
    of every epoch, resumed ones included; evaluation not counted), checkpoint (stored relative to
    the file's folder, so that the folder can move; read back as a full path), finish time.
    """

    def __init__(self, path):
        self.path = path
        self.records = []
        self._by_key = {}
        self._header = None

    def load(self):
        """Read the stored trials; a torn last line (a run killed while writing) is dropped."""
        if not os.path.isfile(self.path):
            return self
        with open(self.path, "r", encoding="utf-8", newline="") as f:
            text = f.read()
        rows = list(csv.DictReader(io.StringIO(text)))
        header = next(csv.reader(io.StringIO(text)), None) if text else None
        dropped = 0
        for row in rows:
            try:
                record = self._parse(row, header)
            except (KeyError, TypeError, ValueError):
                dropped += 1
                continue
            record["checkpoint"] = resolve_path(record["checkpoint"], self.folder) or None
            self._remember(record)
        self._header = header
        if dropped or (text and not text.endswith("\n")):
            self._rewrite()
        return self

    def __len__(self):
        return len(self.records)

    def get(self, key):
        return self._by_key.get(key)

    def add(self, record):
        record = dict(record, trial=len(self.records) + 1)
        self._remember(record)
        header = self._columns()
        if header != self._header or not os.path.isfile(self.path):
            self._rewrite()
        else:
            with open(self.path, "a", encoding="utf-8", newline="") as f:
                csv.writer(f).writerow(self._row(record, header))
                f.flush()
                os.fsync(f.fileno())
        return record

    # --- helpers
    def _remember(self, record):
        self.records.append(record)
        self._by_key[trial_key(record["params"])] = record

    def _columns(self):
        names, metrics = [], []
        for record in self.records:
            names += [name for name in record["params"] if name not in names]
            for prefix, result in (("valid_", record["best_valid_result"]), ("test_", record["test_result"])):
                metrics += [prefix + m for m in result if prefix + m not in metrics]
        valid = [m for m in metrics if m.startswith("valid_")]
        test = [m for m in metrics if m.startswith("test_")]
        return ["trial", *names, "valid_score", *valid, *test, *_RESERVED_COLUMNS[2:]]

    @property
    def folder(self):
        return os.path.dirname(self.path) or "."

    def _row(self, record, header):
        params = record["params"]
        row = []
        for column in header:
            if column == "checkpoint":
                value = relative_path(record.get("checkpoint"), self.folder) or None
            elif column in _RESERVED_COLUMNS:
                value = json.dumps(plain(params)) if column == "params" else record.get(column)
            elif column in params:
                value = params[column]
            elif column.startswith("valid_"):
                value = record["best_valid_result"].get(column[len("valid_"):])
            elif column.startswith("test_"):
                value = record["test_result"].get(column[len("test_"):])
            else:
                value = None
            row.append(_cell(value))
        return row

    def _rewrite(self):
        header = self._columns() if self.records else (self._header or self._columns())
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            for record in self.records:
                writer.writerow(self._row(record, header))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self._header = header

    @staticmethod
    def _parse(row, header):
        params = json.loads(row["params"])
        if not isinstance(params, dict):
            raise ValueError("params is not a mapping")
        valid, test = {}, {}
        for column in header:
            if column in params or column in _RESERVED_COLUMNS:
                continue
            if column.startswith("valid_") and row.get(column) not in (None, ""):
                valid[column[len("valid_"):]] = float(row[column])
            elif column.startswith("test_") and row.get(column) not in (None, ""):
                test[column[len("test_"):]] = float(row[column])

        def optional(name, kind):
            return kind(row[name]) if row.get(name) not in (None, "") else None

        return {
            "trial": int(row["trial"]),
            "params": params,
            "valid_score": float(row["valid_score"]),
            "best_valid_result": valid,
            "test_result": test,
            "num_parameters": optional("num_parameters", int),
            "epochs_trained": optional("epochs_trained", int),
            "seconds": optional("seconds", float),
            "train_seconds": optional("train_seconds", float),  # absent from files written before it
            "checkpoint": row.get("checkpoint") or None,
            "finished_at": row.get("finished_at") or None,
        }


def make_record(params, result, seconds):
    """A trial record from the objective's result dict."""
    return {
        "params": plain(params),
        "valid_score": float(result["best_valid_score"]),
        "best_valid_result": {k: float(v) for k, v in result["best_valid_result"].items()},
        "test_result": {k: float(v) for k, v in (result.get("test_result") or {}).items()},
        "num_parameters": result.get("num_parameters"),
        "epochs_trained": result.get("epochs_trained"),
        "seconds": round(seconds, 3),
        "train_seconds": round(sum(result["epoch_train_seconds"]), 3) if result.get("epoch_train_seconds") else None,
        "checkpoint": os.path.abspath(result["saved_model_file"]) if result.get("saved_model_file") else None,
        "finished_at": datetime.now().isoformat(timespec="seconds"),
    }


def execute_trial(objective, params, fixed_config_file_list=None, fixed_config_dict=None, extra=None):
    """Train one trial: ``objective(fixed settings + params + extra)``; returns its record."""
    config_dict = dict(fixed_config_dict or {})
    config_dict.update(params)
    config_dict.update(extra or {})
    start = time.time()
    result = objective(config_dict, fixed_config_file_list)
    return make_record(params, result, time.time() - start)
