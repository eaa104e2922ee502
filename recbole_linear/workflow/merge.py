"""``merge``: the finished runs of several ``compare`` folders in one folder, with one summary.

Long runs are often trained in folders of their own (one per model, so that each can be
stopped and resumed alone, or one per machine) and belong in one table afterwards.
``merge --output_dir=DEST SRC [SRC ...]`` copies each finished run's ``runs.csv`` row and its
config, per-user and log files into ``DEST`` (paths stored relative to ``DEST``; checkpoints are
not copied: their cells point where the runs kept them, or, with ``--checkpoint_dir=DIR``, to
``DIR/<file name>``, for a folder committed without its checkpoints), keeps the runs ``DEST`` already holds, and writes ``DEST``'s ``summary.md`` and
``summary.tex`` as ``compare`` does. Failed runs are left out (rerun them with ``compare``).

A merged table must still be one comparison, so ``merge`` refuses (one line, nothing written):
runs of different datasets, training regimes or evaluation protocols; and runs of one model with
different settings (``overrides_hash``), which the summary would average as if they were seeds.
"""
import argparse
import os
import shutil

from recbole_linear.errors import ConfigError
from recbole_linear.workflow.compare_protocol import PROTOCOL_KEYS
from recbole_linear.workflow.run_table import RUNS_NAME, load_runs, relative_path, resolve_path

_COPIED_FILES = ("config_file", "per_user_file", "log_file")


def _source_rows(source, out):
    if not os.path.isfile(os.path.join(source, RUNS_NAME)):
        raise ConfigError(f"merge: no {RUNS_NAME} in '{source}' (expected a compare output folder)")
    rows, _ = load_runs(os.path.join(source, RUNS_NAME), warn=lambda line: out(f"merge: {line}"))
    finished = [r for r in rows if r["status"] == "ok"]
    for row in rows:
        if row["status"] != "ok":
            out(f"merge: {source}: {row['run_id']} failed, left out")
    return finished


def _check_one_comparison(rows):
    """ConfigError unless ``rows`` (dicts of runs.csv) can share one summary."""
    for key in ("dataset",) + tuple(PROTOCOL_KEYS):
        values = sorted({str(r.get(key)) for r in rows if r.get(key) not in (None, "")})
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


def merge_folders(output_dir, sources, out=print, checkpoint_dir=None):
    """Merge the finished runs of ``sources`` into ``output_dir``; returns the merged rows.

    ``checkpoint_dir``: the merged rows' checkpoints are ``<checkpoint_dir>/<file name>`` (default:
    where each run kept its checkpoint)."""
    from recbole_linear.workflow.compare import write_runs
    from recbole_linear.workflow.folder_lock import FolderLock
    from recbole_linear.workflow.summary import write_summary

    if not sources:
        raise ConfigError("merge: name at least one compare output folder to merge from")
    destination = os.path.abspath(output_dir)
    for source in sources:
        if os.path.abspath(source) == destination:
            raise ConfigError(f"merge: '{source}' is the output folder itself")
    existing = []
    if os.path.isfile(os.path.join(output_dir, RUNS_NAME)):
        existing = [(output_dir, r) for r in _source_rows(output_dir, out)]
    incoming = [(source, row) for source in sources for row in _source_rows(source, out)]
    by_id = {}
    for folder, row in existing + incoming:  # a later folder's copy of a run replaces an earlier one
        by_id[row["run_id"]] = (folder, row)
    _check_one_comparison([row for _, row in by_id.values()])
    if not by_id:
        raise ConfigError(f"merge: no finished run in {', '.join(sources)}")

    with FolderLock(output_dir, "merge", warn=lambda line: out(f"merge: warning: {line}")):
        rows = []
        for folder, row in by_id.values():
            row = dict(row)
            if folder != output_dir:
                for key in _COPIED_FILES:
                    path = resolve_path(row.get(key), folder)
                    if path and os.path.isfile(path):
                        target = os.path.join(output_dir, row[key] if not os.path.isabs(row[key]) else os.path.basename(path))
                        os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
                        shutil.copy2(path, target)
                        row[key] = relative_path(target, output_dir)
                    else:
                        row[key] = ""
                checkpoint = resolve_path(row.get("checkpoint"), folder)
                if checkpoint and checkpoint_dir:
                    checkpoint = os.path.join(checkpoint_dir, os.path.basename(checkpoint))
                row["checkpoint"] = relative_path(checkpoint, output_dir) if checkpoint else ""
                out(f"merge: {row['run_id']} from {folder}")
            rows.append(row)
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
        help="where the merged runs' checkpoints are to be found (default: where each run kept its own)",
    )
    return parser


def cli_main(argv):
    args = build_parser().parse_args(argv)
    merge_folders(args.output_dir, args.sources, out=lambda line: print(line, flush=True), checkpoint_dir=args.checkpoint_dir)
    return 0
