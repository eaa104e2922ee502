"""``run_recbole_linear.py evaluate``: test saved models again, under other evaluation settings.

    python run_recbole_linear.py evaluate --checkpoint=saved/LRURec-Nov-23-2026_17-00-00.pth --eval_mask_history=True
    python run_recbole_linear.py evaluate --runs=results/video-lru --eval_mask_history=True

Each checkpoint is loaded with its run's own config (dataset, split, metrics, seed), the
``--key=value`` overrides are applied on top (only evaluation settings: ``eval_mask_history``,
``eval_batch_size``, ``data_path``), and the model is evaluated on the validation and test sets
through RecBole's trainer and evaluator. With no overrides it reproduces the run's test metrics.

``--runs DIR`` takes every finished run of a ``compare`` folder (``DIR/runs.csv``; its checkpoint
paths are relative to ``DIR``, older absolute ones work where the file exists). A run whose
checkpoint is missing (checkpoints are not committed with results) is skipped with one line; the
others are evaluated. One row per checkpoint and settings goes to ``--output`` (default
``DIR/evaluate.csv`` with ``--runs``, else ``evaluate.csv``), its checkpoint path relative to the
folder of that file; a row with the same checkpoint and settings is replaced, others are kept.

``--per_user`` also writes each test user's NDCG@10 (in the format of ``compare``'s per-user files,
for significance tests and splits of users) to
``evaluate_per_user/<run id or checkpoint name>[--<settings>].npz`` beside the CSV (settings other
than ``data_path``, which does not change the numbers), named in the row's ``per_user_file``; a
folder of its own, so that ``--runs DIR`` never overwrites the run's own ``DIR/per_user/`` file.
"""
import argparse
import os
import sys
import time
from logging import getLogger

from recbole_linear.cli import PROG, parse_known
from recbole_linear.workflow.compare.command import read_runs, write_csv
from recbole_linear.config import parse_cmd_args
from recbole_linear.errors import ConfigError, RecBoleLinearError
from recbole_linear.quick_start import EVALUATION_OVERRIDES, evaluate_checkpoint
from recbole_linear.workflow.compare.per_user import PerUserNDCG
from recbole_linear.workflow.common.run_table import RUNS_NAME, load_runs, relative_path, resolve_path
from recbole_linear.workflow.common.folder_lock import FolderLock

PER_USER_FOLDER = "evaluate_per_user"  # not compare's per_user/: a run's own file stays untouched
_FIRST_COLUMNS = ["checkpoint", "settings", "run_id", "model", "dataset", "seed"]


def build_parser():
    parser = argparse.ArgumentParser(
        prog=f"{PROG} evaluate",
        description="Evaluate saved models again (validation and test) with their runs' configs; any "
        "--key=value changes an evaluation setting: " + ", ".join(EVALUATION_OVERRIDES) + ".",
        allow_abbrev=False,
    )
    parser.add_argument("--checkpoint", action="append", default=[], help="a saved model (.pth); repeatable")
    parser.add_argument("--runs", default=None, help="a compare output folder: evaluate every finished run in its runs.csv")
    parser.add_argument("--output", default=None, help="CSV to write (default: <runs>/evaluate.csv, else evaluate.csv)")
    parser.add_argument("--per_user", action="store_true",
                        help="also write each test user's NDCG@10 to evaluate_per_user/<name>.npz beside the CSV")
    return parser


def settings_label(cmd_args, leave_out=()):
    """The overrides as one sorted, readable cell: 'eval_mask_history=True' ('' for none), without
    the keys in ``leave_out``."""
    return "; ".join(f"{k}={v}" for k, v in sorted(parse_cmd_args(cmd_args).items()) if k not in leave_out)


def targets_from(checkpoints, runs_dir, out=print):
    """[(checkpoint, run row or {})]: the named checkpoints (each must exist), then the finished
    runs of ``runs_dir`` whose checkpoint exists (``out`` gets one line per run skipped)."""
    for path in checkpoints:
        if not os.path.isfile(path):
            raise ConfigError(f"checkpoint '{path}' not found")
    targets = [(path, {}) for path in checkpoints]
    if runs_dir is not None:
        csv_path = os.path.join(runs_dir, RUNS_NAME)
        if not os.path.isfile(csv_path):
            raise ConfigError(f"--runs: no runs.csv in '{runs_dir}'")
        rows, _ = load_runs(csv_path, warn=lambda line: out(f"evaluate: {line}"))
        finished = [row for row in rows if row.get("status") == "ok"]
        for row in finished:
            path = resolve_path(row.get("checkpoint"), runs_dir)
            if path and os.path.isfile(path):
                targets.append((path, row))
            else:
                shown = f"'{path}' not found" if path else "none recorded"
                out(f"evaluate: skipped {row['run_id']}: checkpoint {shown} (checkpoints are not committed with results)")
        if finished and len(targets) == len(checkpoints):
            raise ConfigError(
                f"--runs: none of the {len(finished)} finished runs in '{runs_dir}' has its checkpoint here; "
                "rerun the comparison to recreate them"
            )
    if not targets:
        raise ConfigError("nothing to evaluate: give --checkpoint=FILE or --runs=DIR")
    return targets


def _same_target(row, checkpoint, settings, folder):
    """An evaluate.csv row of this checkpoint (relative or absolute, as stored) and settings."""
    stored = resolve_path(row.get("checkpoint"), folder)
    return row.get("settings") == settings and os.path.abspath(stored) == os.path.abspath(checkpoint)


def per_user_name(checkpoint, run, settings):
    """The per-user file's name: the run id (else the checkpoint's name), then the settings."""
    stem = run.get("run_id") or os.path.splitext(os.path.basename(checkpoint))[0]
    slug = "".join(c if c.isalnum() or c in "=._-" else "_" for c in settings.replace("; ", "--"))
    return f"{stem}--{slug}.npz" if slug else f"{stem}.npz"


class _PerUserTest:
    """``before_test`` hook of :func:`evaluate_checkpoint`: records the test users' NDCG@10."""

    def __init__(self):
        self.recorder, self.dataset = None, None

    def __call__(self, config, trainer, dataset):
        self.recorder, self.dataset = PerUserNDCG(config), dataset
        self.recorder.attach(trainer)

    def save(self, path, config, test_result):
        """Write the file; warn (in the log) if its mean is not RecBole's NDCG@10."""
        self.recorder.save(path, self.dataset, config, test_result, getLogger())


def write_rows(path, rows):
    write_csv(path, rows, _FIRST_COLUMNS + list(dict.fromkeys(k for row in rows for k in row if k not in _FIRST_COLUMNS)))


def evaluate_all(targets, cmd_args, output, out=print, per_user=False):
    """Evaluate each (checkpoint, run row) with ``cmd_args``; keep ``output`` up to date; return the
    new rows. ``per_user``: also write each one's per-user NDCG@10 file (see the module's doc)."""
    settings = settings_label(cmd_args)
    # per-user file names: where the data lives does not change the numbers, so no data_path
    named = settings_label(cmd_args, leave_out=("data_path",))
    folder = os.path.dirname(output) or "."
    rows = read_runs(output)
    new_rows = []
    for index, (checkpoint, run) in enumerate(targets, start=1):
        start = time.perf_counter()
        hook = _PerUserTest() if per_user else None
        config, valid_result, test_result = evaluate_checkpoint(checkpoint, cmd_args, before_test=hook)
        stored = relative_path(checkpoint, folder)
        per_user_file = {}
        if hook is not None:
            path = os.path.join(folder, PER_USER_FOLDER, per_user_name(checkpoint, run, named))
            hook.save(path, config, test_result)
            per_user_file = {"per_user_file": relative_path(path, folder)}
        row = {
            "checkpoint": stored, "settings": settings, "run_id": run.get("run_id", ""),
            "model": config["model"], "dataset": config["dataset"], "seed": config["seed"],
            **{f"valid_{k}": v for k, v in valid_result.items()},
            **{f"test_{k}": v for k, v in test_result.items()},
            **per_user_file,
            "evaluated_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        rows = [r for r in rows if not _same_target(r, checkpoint, settings, folder)] + [row]
        write_rows(output, rows)
        new_rows.append(row)
        shown = "  ".join(f"test {k}={v:.4f}" for k, v in list(test_result.items())[:2])
        out(f"[{index}/{len(targets)}] {config['model']} {run.get('run_id') or checkpoint}  {shown}  "
            f"{time.perf_counter() - start:.1f}s")
    out(f"evaluate: {len(new_rows)} checkpoints ({settings or 'the runs’ own settings'}) -> {output}")
    return new_rows


def cli_main(argv):
    args, cmd_args = parse_known(build_parser(), argv)
    targets = targets_from(args.checkpoint, args.runs, out=lambda line: print(line, flush=True))
    output = args.output or (os.path.join(args.runs, "evaluate.csv") if args.runs else "evaluate.csv")
    # one writer of evaluate.csv (and no evaluation of a folder a compare is still writing)
    folder = os.path.dirname(os.path.abspath(output))
    with FolderLock(folder, "evaluate"):  # its warning: one line on stderr
        evaluate_all(targets, cmd_args, output, out=lambda line: print(line, flush=True), per_user=args.per_user)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(cli_main(sys.argv[1:]))
    except RecBoleLinearError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        sys.exit(2)
