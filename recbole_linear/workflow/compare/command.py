"""``run_recbole_linear.py compare``: train every model × seed under one protocol and tabulate.

    python run_recbole_linear.py compare --models=LRURec,LinRec,GLINTRU,SASRec,GRU4Rec,BERT4Rec \\
        --dataset=ml-100k --seeds=2020,2021,2022 [--config_files="a.yaml b.yaml"] [--key=value ...] \\
        [--model_config LRURec=best.yaml ...] [--output_dir results/ml-100k] [--jobs 2]

Each run (model, seed) is ``run_recbole_linear.py --model=M --seed=S`` with the shared config
files and ``--key=value`` overrides plus that model's ``--model_config`` (a YAML of key: value,
e.g. the best parameters ``tune`` writes; it beats shared settings, being more specific). It runs in
its own process (:mod:`recbole_linear.workflow.compare.worker`, started by
:mod:`recbole_linear.workflow.compare.runner`): its peak memory is its own and a crash fails that
run only.

The output folder (default ``saved/compare/<dataset>/``, outside the repository's tracked
``results/``) holds:
- ``runs.csv``: one row per run: status and one-line error, best-valid (``valid_*``) and test
  (``test_*``) metrics, parameters, seconds per epoch, epochs, test users evaluated and the test
  evaluation's seconds, its latency in ms per 1,000 users, peak RSS / GPU MB, the run's training
  regime (``train_all_positions``) and evaluation protocol (``eval_mask_history``) from its final
  config, the checkpoint and the files below (paths relative to the folder, so it can move);
- ``summary.md`` / ``summary.tex``: see :mod:`recbole_linear.workflow.compare.summary` (the table as
  data: :mod:`recbole_linear.workflow.compare.report`);
- ``configs/<run_id>.yaml`` the final config of each run, ``per_user/<run_id>.npz`` each test
  user's NDCG@10 (arrays ``user``, ``ndcg@10``), ``logs/<run_id>.log`` the run's output (appended at every start).

A run is identified by ``<model>-seed<seed>-<hash>``, the hash covering the dataset, the contents
of the config files and the run's overrides (shared and per-model). Rerunning the same command
skips every run that finished (status ``ok``) and retries the failed ones; a run whose settings
changed gets a new id and runs again (older rows stay in ``runs.csv``; the summary reads only the
runs of the current command).

Faults: one command at a time per folder (:mod:`recbole_linear.workflow.common.folder_lock`; a second one exits
with status 2, a dead command's lock is taken over); each worker dies with this process, however
it dies (:func:`recbole_linear.workflow.compare.worker.die_with_parent`); ``runs.csv`` rows are validated on
reading (:mod:`recbole_linear.workflow.common.run_table`: a row cut short runs again, a junk row is dropped). One
table holds one training regime and one evaluation protocol: mixing them is refused before training.
"""
import concurrent.futures
import csv
import hashlib
import json
import os
import sys
import time

from recbole_linear.cli import PROG, common_parser, parse_known, split_config_files
from recbole_linear.workflow.compare.runner import WORKERS, execute, threads_per_worker
from recbole_linear.workflow.compare.protocol import PROTOCOL_KEYS, check_one_protocol, planned_protocols, protocol_of_config
from recbole_linear.workflow.compare.summary import write_summary
from recbole_linear.config import parse_cmd_args, read_yaml
from recbole_linear.errors import ConfigError, RecBoleLinearError
from recbole_linear.workflow.common.folder_lock import FolderLock
from recbole_linear.workflow.common.preflight import check_runs
from recbole_linear.registry import canonical_model_name, get_model
from recbole_linear.workflow.common.run_table import RUNS_NAME, load_runs, read_csv_rows, relative_path

# keys a comparison sets itself, per run
_RESERVED_OVERRIDES = {
    "model": "--models",
    "dataset": "--dataset",
    "seed": "--seeds",
    "saved_model_file": "(named per run)",
}
_FIRST_COLUMNS = [
    "run_id", "model", "seed", "overrides_hash", "dataset", "builtin", *PROTOCOL_KEYS, "status", "error",
]
_LAST_COLUMNS = [
    "best_valid_score", "num_parameters", "epochs_trained", "seconds_per_epoch", "train_seconds",
    "evaluated_users", "eval_seconds", "latency_ms_per_1k_users", "peak_rss_mb", "import_rss_mb", "peak_gpu_mb", "peak_rss_training_mb",
    "run_seconds", "checkpoint", "config_file", "per_user_file", "log_file", "finished_at",
]
HEADLINE_METRIC = "ndcg@10"


# --- the command line ----------------------------------------------------------------------
def build_parser():
    parser = common_parser(
        f"{PROG} compare",
        "Train every model with every seed under one protocol (data, split, metrics) and write "
        "runs.csv, summary.md and summary.tex. Any --key=value is a RecBole config override for all models.",
    )
    parser.add_argument("--models", required=True, help="comma-separated model names, e.g. LRURec,SASRec,GRU4Rec")
    parser.add_argument("--seeds", default="2020", help="comma-separated integer seeds (default: 2020)")
    parser.add_argument(
        "--model_config", action="append", default=[], metavar="MODEL=FILE",
        help="YAML of key: value for one model only, e.g. LRURec=best.yaml (repeatable)",
    )
    parser.add_argument("--output_dir", default=None, help="output folder (default: saved/compare/<dataset>)")
    parser.add_argument(
        "--jobs", type=int, default=1,
        help="runs trained at the same time, each in its own process (default 1). With more than one, "
        "each worker gets cpu_count/jobs torch threads unless OMP_NUM_THREADS is set; the time columns "
        "are then measured under contention",
    )
    return parser


def split_names(value):
    return [v.strip() for v in value.split(",") if v.strip()]


def parse_seeds(value):
    seeds = []
    for token in split_names(value):
        try:
            seed = int(token)
        except ValueError:
            raise ConfigError(f"invalid seed '{token}' in --seeds (expected integers, e.g. 2020,2021)") from None
        if seed not in seeds:
            seeds.append(seed)
    if not seeds:
        raise ConfigError("--seeds is empty")
    return seeds


def parse_models(value):
    models = []
    for name in split_names(value):
        name = canonical_model_name(name)
        if name not in models:
            models.append(name)
    if not models:
        raise ConfigError("--models is empty")
    return models


def parse_model_configs(items, models):
    """['LRURec=a.yaml', ...] -> {'LRURec': {key: value}} (files merged in order)."""
    per_model = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--model_config '{item}': expected MODEL=FILE, e.g. LRURec=best.yaml")
        name = canonical_model_name(name.strip())
        if name not in models:
            raise ConfigError(f"--model_config names '{name}', which is not in --models ({', '.join(models)})")
        per_model.setdefault(name, {}).update(read_yaml(path.strip()))
    return per_model


def _as_cmd_value(value):
    """A YAML value as ``--key=value`` text that RecBole's command-line conversion (``eval``) reads
    back as the same value: its Python literal (``'CE'``, ``0.001``, ``[5, 10]``, ``None``)."""
    return repr(value)


# --- the plan --------------------------------------------------------------------------------
class Run:
    """One (model, seed) of the plan: its id, the overrides it runs with, the files it writes."""

    def __init__(self, model, seed, dataset, config_files, overrides, builtin, error=None):
        self.model, self.seed, self.dataset = model, seed, dataset
        self.config_files, self.overrides, self.builtin, self.error = config_files, overrides, builtin, error
        self.overrides_hash = overrides_hash(dataset, config_files, overrides)
        self.run_id = f"{model}-seed{seed}-{self.overrides_hash}"

    @property
    def cmd_args(self):
        return [f"--{k}={v}" for k, v in self.overrides.items()] + [f"--seed={self.seed}"]

    def files(self, output_dir):
        return {
            "config_file": os.path.join(output_dir, "configs", f"{self.run_id}.yaml"),
            "per_user_file": os.path.join(output_dir, "per_user", f"{self.run_id}.npz"),
            "log_file": os.path.join(output_dir, "logs", f"{self.run_id}.log"),
        }


# Overrides that say where files are, not what is trained: a comparison rerun from another
# checkout or machine (another --data_path) finds its runs done instead of training them again.
LOCATION_KEYS = ("data_path", "checkpoint_dir")


def overrides_hash(dataset, config_files, overrides):
    """8 hex digits over the dataset, the config files' contents (in order) and the overrides,
    less the :data:`LOCATION_KEYS`."""
    contents = [read_yaml(path) for path in config_files or ()]
    settings = sorted((k, v) for k, v in overrides.items() if k not in LOCATION_KEYS)
    payload = json.dumps([dataset, contents, settings], sort_keys=True, default=str)
    return hashlib.sha1(payload.encode("utf-8")).hexdigest()[:8]


def is_builtin(model_class):
    """A RecBole baseline: its class comes from ``recbole.model`` (not from the plugin)."""
    return model_class.__module__.startswith("recbole.model.")


def plan_runs(models, seeds, dataset, config_files, shared_overrides, model_configs):
    shared = parse_cmd_args(shared_overrides)
    for key, option in _RESERVED_OVERRIDES.items():
        if key in shared:
            raise ConfigError(f"'--{key}' cannot be set in a comparison: use {option}")
    for name, values in model_configs.items():
        for key in _RESERVED_OVERRIDES:
            if key in values:
                raise ConfigError(f"--model_config for {name} sets '{key}', which a comparison sets per run")
    runs = []
    for model in models:
        overrides = dict(shared)
        overrides.update({k: _as_cmd_value(v) for k, v in model_configs.get(model, {}).items()})
        try:
            builtin, error = is_builtin(get_model(model)), None
        except RecBoleLinearError as e:
            builtin, error = False, f"{type(e).__name__}: {e}"
        runs.extend(Run(model, seed, dataset, config_files, overrides, builtin, error) for seed in seeds)
    return runs


# --- runs.csv --------------------------------------------------------------------------------
def read_runs(path):
    """The rows of a CSV as they are (no validation: see :func:`~recbole_linear.workflow.common.run_table.load_runs`)."""
    return read_csv_rows(path)[1]


def write_runs(path, rows):
    """Rewrite runs.csv atomically; columns: identity, metrics (valid then test), run facts."""
    metric_columns = []
    for prefix in ("valid_", "test_"):
        for row in rows:
            metric_columns += [k for k in row if k.startswith(prefix) and k not in metric_columns]
    other = [k for row in rows for k in row if k not in _FIRST_COLUMNS + _LAST_COLUMNS + metric_columns]
    write_csv(path, rows, _FIRST_COLUMNS + metric_columns + _LAST_COLUMNS + list(dict.fromkeys(other)))


def write_csv(path, rows, columns):
    """Replace ``path`` with ``rows`` under ``columns`` in one step (a reader never sees half a file)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    temporary = path + ".tmp"
    with open(temporary, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(temporary, path)


def result_row(run, result, files, output_dir):
    row = {
        "run_id": run.run_id, "model": run.model, "seed": run.seed, "overrides_hash": run.overrides_hash,
        "dataset": run.dataset, "builtin": run.builtin, "status": result["status"],
        "error": result.get("error") or "",
    }
    for key, value in (result.get("best_valid_result") or {}).items():
        row[f"valid_{key}"] = value
    for key, value in (result.get("test_result") or {}).items():
        row[f"test_{key}"] = value
    for key in _LAST_COLUMNS:
        if key in result and result[key] is not None:
            row[key] = result[key]
    row["checkpoint"] = relative_path(result.get("checkpoint"), output_dir)
    for key, path in files.items():
        if key != "per_user_file" or result["status"] == "ok":
            row[key] = relative_path(path, output_dir) if os.path.exists(path) else ""
    row.update(protocol_of_config(files["config_file"]))
    row["finished_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
    return row


def progress_line(index, total, run, result, seconds):
    head = f"[{index}/{total}] {run.model} seed={run.seed}"
    if result["status"] != "ok":
        return f"{head}  FAILED  {result.get('error')}  {seconds:.1f}s"
    test, valid = result["test_result"], result["best_valid_result"]
    metric = HEADLINE_METRIC if HEADLINE_METRIC in test else next(iter(test), None)
    shown = f"test {metric}={test[metric]:.4f}  valid {metric}={valid.get(metric, float('nan')):.4f}" if metric else ""
    return f"{head}  {shown}  {seconds:.1f}s"


def _warn(line):
    """A warning line ('warning: ...') on stderr, apart from the progress lines on stdout."""
    print(f"compare: {line}", file=sys.stderr, flush=True)


def run_comparison(runs, output_dir, dataset, models, seeds, out=print, jobs=1):
    """Run what ``runs.csv`` lacks (``jobs`` at a time), keep it up to date after every run, write
    the summaries. Returns the rows of this comparison (one per planned run, in plan order).
    """
    if jobs < 1:
        raise ConfigError(f"invalid value for '--jobs': {jobs} (expected a positive integer)")
    protocols = planned_protocols(runs)
    check_one_protocol(protocols, runs, [], output_dir)  # before the folder exists
    with FolderLock(output_dir, "compare"):  # its warning: one line on stderr
        return _run_in_folder(runs, output_dir, dataset, models, seeds, out, jobs, protocols, write_summary)


def _run_in_folder(runs, output_dir, dataset, models, seeds, out, jobs, protocols, write_summary):
    csv_path = os.path.join(output_dir, RUNS_NAME)
    rows, dropped = load_runs(csv_path, warn=_warn)
    if dropped:
        write_runs(csv_path, rows)  # the dropped rows leave the file now, whatever happens next
    check_one_protocol(protocols, runs, rows, output_dir)
    done = {r["run_id"] for r in rows if r.get("status") == "ok"}
    to_run = [run for run in runs if run.run_id not in done]
    out(
        f"compare: {len(models)} models × {len(seeds)} seeds = {len(runs)} runs on {dataset} -> {output_dir}/ "
        f"({len(runs) - len(to_run)} done, skipped; {len(to_run)} to run"
        + (f", {jobs} at a time" if jobs > 1 else "") + ")"
    )
    pending = []
    for index, run in enumerate(runs, start=1):
        if run.run_id in done:
            out(f"[{index}/{len(runs)}] {run.model} seed={run.seed}  skipped (done in runs.csv)")
        else:
            pending.append((index, run))

    def record(index, run, result, seconds):  # in the calling thread only: runs.csv has one writer
        nonlocal rows
        out(progress_line(index, len(runs), run, result, seconds))
        row = result_row(run, result, run.files(output_dir), output_dir)
        rows = [r for r in rows if r["run_id"] != run.run_id] + [row]
        write_runs(csv_path, rows)

    def timed_execute(run):
        start = time.perf_counter()
        result = execute(run, output_dir, threads_per_worker(jobs))
        return result, time.perf_counter() - start

    # each run is a subprocess: the pool's threads only wait on them (one thread: plan order)
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(timed_execute, run): (index, run) for index, run in pending}
        try:
            for future in concurrent.futures.as_completed(futures):
                record(*futures[future], *future.result())
        except BaseException:  # before the pool waits for its threads, which wait for the workers
            for future in futures:
                future.cancel()
            WORKERS.kill_all()
            raise

    by_id = {r["run_id"]: r for r in rows}
    plan_rows = [by_id[run.run_id] for run in runs]
    write_summary(output_dir, plan_rows, models, dataset, seeds)
    failed = [r for r in plan_rows if r["status"] != "ok"]
    out(
        f"compare: {len(plan_rows) - len(failed)} runs finished, {len(failed)} failed; "
        f"{os.path.join(output_dir, 'summary.md')}"
    )
    return plan_rows


def default_output_dir(dataset):
    """``saved/compare/<dataset>``: beside RecBole's checkpoints, outside the tracked ``results/``."""
    return os.path.join("saved", "compare", dataset)


def cli_main(argv):
    """``compare`` subcommand; exit status 0 if every run finished, 1 if any failed."""
    args, overrides = parse_known(build_parser(), argv)
    models = parse_models(args.models)
    seeds = parse_seeds(args.seeds)
    config_files = split_config_files(args.config_files)
    model_configs = parse_model_configs(args.model_config, models)
    runs = plan_runs(models, seeds, args.dataset, config_files, overrides, model_configs)
    check_runs(runs)  # every model name, key, value and the dataset, before any run trains (one line, exit 2)
    output_dir = args.output_dir or default_output_dir(args.dataset)
    rows = run_comparison(
        runs, output_dir, args.dataset, models, seeds, out=lambda line: print(line, flush=True), jobs=args.jobs,
    )
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":  # python -m recbole_linear.workflow.compare.command ... (same as the subcommand)
    try:
        sys.exit(cli_main(sys.argv[1:]))
    except RecBoleLinearError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        sys.exit(2)
