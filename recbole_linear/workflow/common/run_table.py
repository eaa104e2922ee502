"""``runs.csv`` on disk: validated reading, atomic writing, and paths stored relative to their folder.

A comparison's folder must survive a killed command and travel to another machine:

- every row is checked on reading (:func:`load_runs`). A row cut short (a copy or a disk that
  stopped mid-line: fewer cells than the header) lost its metrics, so its run is not done: the
  row is dropped and the run trains again. A row whose ``run_id`` is not one (cut inside it, or
  stray text) is dropped. Each drop is one warning line; of several rows of one run the last
  complete one is kept;
- paths (checkpoint, config, per-user and log files) are stored relative to the folder that holds
  ``runs.csv`` (:func:`relative_path`) and resolved against it (:func:`resolve_path`); absolute
  paths written by older versions still work where the file exists.
"""
import csv
import os
import re

from recbole_linear.errors import ConfigError

RUNS_NAME = "runs.csv"
_REQUIRED_COLUMNS = ("run_id", "model", "seed", "status")
_STATUSES = ("ok", "failed")
# <model>-seed<seed>-<8 hex digits>, as compare.Run names a run
_RUN_ID = re.compile(r"^(?P<model>.+)-seed(?P<seed>-?\d+)-[0-9a-f]{8}$")


def relative_path(path, folder):
    """``path`` as stored in ``folder``'s tables: relative to ``folder`` ('' for none)."""
    if not path:
        return ""
    try:
        return os.path.relpath(os.path.abspath(path), os.path.abspath(folder))
    except ValueError:  # another drive (Windows): no relative form
        return os.path.abspath(path)


def resolve_path(stored, folder):
    """A path read from ``folder``'s tables: relative ones are relative to ``folder``."""
    if not stored:
        return ""
    return stored if os.path.isabs(stored) else os.path.normpath(os.path.join(folder, stored))


def read_csv_rows(path):
    """(header, rows as dicts) of a CSV file, unvalidated; ([], []) if there is no file."""
    if not os.path.isfile(path):
        return [], []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def row_problem(row):
    """Why a runs.csv row cannot be used (None if it can): 'junk' or 'incomplete' plus a reason."""
    run_id = row.get("run_id") or ""
    match = _RUN_ID.match(run_id)
    if None in row:  # more cells than the header: two lines run together
        return "junk", "more cells than the header"
    if not match or row.get("model") != match.group("model") or row.get("seed") != match.group("seed"):
        return "junk", "not a run row (cut inside its run id?)"
    if any(value is None for value in row.values()):  # fewer cells than the header: cut short
        return "incomplete", "cut short, its metrics are missing"
    if row.get("status") not in _STATUSES:
        return "incomplete", f"unknown status {row.get('status')!r}"
    if row["status"] == "ok" and not has_metrics(row):
        return "incomplete", "status ok without its metrics"
    return None


def has_metrics(row):
    """A finished run's row: its best valid score and at least one test metric are numbers."""
    try:
        float(row.get("best_valid_score"))
    except (TypeError, ValueError):
        return False
    tests = [v for k, v in row.items() if k and k.startswith("test_") and v not in (None, "")]
    try:
        [float(v) for v in tests]
    except ValueError:
        return False
    return bool(tests)


def load_runs(path, warn=print):
    """The usable rows of a runs.csv (one per run id, file order), and whether any were dropped.

    ``warn`` gets one line per dropped row. A header without the run columns is refused
    (ConfigError): nothing in such a file can be trusted, and it is not ours to delete.
    """
    header, rows = read_csv_rows(path)
    if not header and not rows:
        return [], False
    missing = [c for c in _REQUIRED_COLUMNS if c not in header]
    if missing:
        raise ConfigError(
            f"'{path}' is not a runs.csv of compare (no {', '.join(missing)} column); move it away or use another --output_dir"
        )
    kept, dropped = {}, False
    for line, row in enumerate(rows, start=2):
        problem = row_problem(row)
        if problem is not None:
            kind, reason = problem
            shown = row.get("run_id") or ""
            shown = shown if len(shown) <= 60 else shown[:59] + "…"
            action = "dropped; the run trains again" if kind == "incomplete" else "dropped"
            warn(f"warning: {path} line {line} ({shown!r}): {reason}: {action}")
            dropped = True
            continue
        previous = kept.get(row["run_id"])
        if previous is not None:
            dropped = True
            if previous["status"] == "ok" and row["status"] != "ok":
                continue  # a finished run stays finished
            del kept[row["run_id"]]
        kept[row["run_id"]] = row
    return list(kept.values()), dropped
