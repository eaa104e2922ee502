"""``merge``: the finished runs of several ``compare`` folders in one folder, with one summary.

Long runs are often trained in folders of their own (one per model, so that each can be
stopped and resumed alone, or one per machine) and belong in one table afterwards.
``merge --output_dir=DEST SRC [SRC ...]`` copies each finished run's ``runs.csv`` row and its
config, per-user and log files into ``DEST`` (``configs/``, ``per_user/``, ``logs/``; paths stored
relative to ``DEST``). Checkpoints are not copied: their cells point where the runs kept them,
or, with ``--checkpoint_dir=DIR``, to ``DIR/<file name>`` (for a folder committed without its
checkpoints). The runs ``DEST`` already holds stay, failed ones too; a finished copy from a
source replaces one of the same run id, with a warning if its test metrics differ. The sources'
failed runs are left out (rerun them with ``compare``). ``DEST``'s ``summary.md`` and
``summary.tex`` are then written as ``compare`` writes them.

A merged table must still be one comparison, so ``merge`` refuses (one line, nothing written):
runs of different datasets, training regimes or evaluation protocols; and runs of one model with
different settings (``overrides_hash``), which the summary would average as if they were seeds.
"""
import argparse
import os
import shutil

from recbole_linear.errors import ConfigError
from recbole_linear.workflow.common.folder_lock import FolderLock
from recbole_linear.workflow.compare.command import write_runs
from recbole_linear.workflow.compare.summary import write_summary
from recbole_linear.workflow.compare.protocol import PROTOCOL_KEYS, protocol_of_row
from recbole_linear.workflow.common.run_table import RUNS_NAME, load_runs, relative_path, resolve_path

# the files a row names, and the subfolder of the merged folder each goes to
_COPIED_FILES = (("config_file", "configs"), ("per_user_file", "per_user"), ("log_file", "logs"))


def _same_folder(a, b):
    return os.path.realpath(a) == os.path.realpath(b)


def _folder_rows(folder, out, finished_only=True):
    if not os.path.isfile(os.path.join(folder, RUNS_NAME)):
        raise ConfigError(f"merge: no {RUNS_NAME} in '{folder}' (expected a compare output folder)")
    rows, _ = load_runs(os.path.join(folder, RUNS_NAME), warn=lambda line: out(f"merge: {line}"))
    if not finished_only:
        return rows
    for row in rows:
        if row["status"] != "ok":
            out(f"merge: {folder}: {row['run_id']} failed, left out")
    return [r for r in rows if r["status"] == "ok"]


def _other_test_metrics(a, b):
    """Whether two rows of one run report different values for a test metric both have."""
    keys = [k for k in a if k and k.startswith("test_") and a[k] not in (None, "") and b.get(k) not in (None, "")]
    return any(float(a[k]) != float(b[k]) for k in keys)


def _plan(output_dir, sources, out):
    """{run_id: (folder, row)}: the output folder's runs (failed ones too), then each source's
    finished runs; a finished copy replaces an earlier one (a warning if its test metrics differ)."""
    by_id = {}
    if os.path.isfile(os.path.join(output_dir, RUNS_NAME)):
        by_id = {r["run_id"]: (output_dir, r) for r in _folder_rows(output_dir, out, finished_only=False)}
    for source in sources:
        for row in _folder_rows(source, out):
            previous = by_id.get(row["run_id"])
            if previous and previous[1]["status"] == "ok" and _other_test_metrics(previous[1], row):
                out(f"merge: warning: {row['run_id']} in '{source}' has other test metrics than in "
                    f"'{previous[0]}'; the copy from '{source}' is kept")
            by_id[row["run_id"]] = (source, row)
    return by_id


def _check_one_comparison(by_id):
    """ConfigError unless the planned rows can share one summary."""
    rows = [row for _, row in by_id.values()]
    values = sorted({str(r.get("dataset")) for r in rows if r.get("dataset") not in (None, "")})
    if len(values) > 1:
        raise ConfigError(f"merge: the runs differ in dataset ({', '.join(values)}); one table holds one comparison")
    protocols = [protocol_of_row(row, folder) for folder, row in by_id.values() if row["status"] == "ok"]
    for key in PROTOCOL_KEYS:
        values = sorted({p[key] for p in protocols})
        if len(values) > 1:
            raise ConfigError(f"merge: the runs differ in {key} ({', '.join(values)}); one table holds one comparison")
    settings = {}
    for row in rows:
        settings.setdefault(row["model"], set()).add(row.get("overrides_hash", ""))
    for model, hashes in settings.items():
        if len(hashes) > 1:
            raise ConfigError(
                f"merge: {model} has runs with different settings (overrides_hash {', '.join(sorted(hashes))}); "
                "the summary has one row per model: merge them into different folders"
            )


def _copied_row(row, folder, output_dir, checkpoint_dir, out):
    """``row`` of ``folder`` as the merged folder stores it, its files copied into ``output_dir``."""
    row = dict(row)
    if not _same_folder(folder, output_dir):
        for key, subfolder in _COPIED_FILES:
            path = resolve_path(row.get(key), folder)
            if path and os.path.isfile(path):
                target = os.path.join(output_dir, subfolder, os.path.basename(path))
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.copy2(path, target)
                row[key] = relative_path(target, output_dir)
            else:
                if row.get(key):
                    out(f"merge: warning: {row['run_id']}: its {key} '{path}' is missing; not copied")
                row[key] = ""
        checkpoint = resolve_path(row.get("checkpoint"), folder)
        out(f"merge: {row['run_id']} from {folder}")
    else:
        checkpoint = resolve_path(row.get("checkpoint"), output_dir)
    if checkpoint and checkpoint_dir:
        checkpoint = os.path.join(checkpoint_dir, os.path.basename(checkpoint))
    row["checkpoint"] = relative_path(checkpoint, output_dir) if checkpoint else ""
    return row


def merge_folders(output_dir, sources, out=print, checkpoint_dir=None):
    """Merge the finished runs of ``sources`` into ``output_dir``; returns the merged rows.

    ``checkpoint_dir``: the merged rows' checkpoints are ``<checkpoint_dir>/<file name>`` (a path
    from the current folder; default: where each run kept its checkpoint).
    """
    if not sources:
        raise ConfigError("merge: name at least one compare output folder to merge from")
    for source in sources:
        if _same_folder(source, output_dir):
            raise ConfigError(f"merge: '{source}' is the output folder itself")
    # checked before the lock (which creates the folder), so that a refusal writes nothing
    by_id = _plan(output_dir, sources, out)
    _check_one_comparison(by_id)
    if not any(row["status"] == "ok" for _, row in by_id.values()):
        raise ConfigError(f"merge: no finished run in {', '.join(sources)}")

    with FolderLock(output_dir, "merge"):  # its warning: one line on stderr
        by_id = _plan(output_dir, sources, lambda line: None)  # again: a compare may have added runs meanwhile
        _check_one_comparison(by_id)
        rows = [_copied_row(row, folder, output_dir, checkpoint_dir, out) for folder, row in by_id.values()]
        write_runs(os.path.join(output_dir, RUNS_NAME), rows)
        models = list(dict.fromkeys(r["model"] for r in rows))
        seeds = sorted({int(r["seed"]) for r in rows})
        write_summary(output_dir, rows, models, rows[0].get("dataset", ""), seeds)
    out(f"merge: {len(rows)} runs of {len(models)} models -> {os.path.join(output_dir, 'summary.md')}")
    return rows


def build_parser():
    parser = argparse.ArgumentParser(
        prog="run_recbole_linear.py merge",
        description="Copy the finished runs of compare output folders into one folder and summarise them.",
        allow_abbrev=False,
    )
    parser.add_argument("sources", nargs="+", metavar="SRC", help="compare output folders (each with a runs.csv)")
    parser.add_argument("--output_dir", required=True, help="the merged folder (its own runs are kept)")
    parser.add_argument(
        "--checkpoint_dir", default=None,
        help="where the merged runs' checkpoints are to be found, from the current folder (default: where each run kept its own)",
    )
    return parser


def cli_main(argv):
    args = build_parser().parse_args(argv)
    merge_folders(args.output_dir, args.sources, out=lambda line: print(line, flush=True), checkpoint_dir=args.checkpoint_dir)
    return 0
