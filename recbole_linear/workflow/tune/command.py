"""Hyperparameter tuning for plugin and RecBole models: RecBole's ``HyperTuning`` or Ray Tune.

    python run_recbole_linear.py tune --model=LRURec --algo=bayes --max_evals=20 --dataset=ml-100k --epochs=50
    python run_recbole_linear.py tune --model=SASRec --algo=random --max_evals=8 --tool=ray --cpus_per_trial=1

Search spaces are RecBole ``.hyper`` files (default ``properties/hyper/<Model>.hyper``), one
parameter a line, exactly as RecBole's own ``HyperTuning(params_file=...)`` reads them::

    learning_rate choice [0.0005,0.001,0.005]
    dropout_prob uniform 0.1,0.5
    learning_rate loguniform -9.21,-4.61        (natural-log bounds, as in hyperopt: 1e-4 .. 1e-2)
    hidden_size quniform 32,256,32              (integers here when low, high and q are integers)

Every trial calls the plugin's :func:`~recbole_linear.quick_start.objective_function` with the
fixed settings (model, dataset, ``--config_files``, ``--key=value``) written once to
``<output_dir>/fixed_config.yaml`` (passed as RecBole's ``fixed_config_file_list``) and the
trial's parameters as ``config_dict`` (they win over the fixed settings). Plugin and RecBole
models therefore tune the same way.

A trial is its parameters under the folder's fixed settings. Each one is appended to
``trials.csv`` as soon as it finishes; a later run into the same folder serves every trial already
there from the file instead of training it (hyperopt gets the stored loss), and refuses to start if
the fixed settings changed. A trial cut off mid-training continues from its last finished epoch
(its resume file, beside its checkpoint; one process per trial only). hyperopt is seeded
(``--search_seed``), so a rerun of an interrupted random or bayes search proposes the same points
again and only the unfinished ones train. One
command at a time per folder (:mod:`recbole_linear.workflow.common.folder_lock`): a second one is refused before
it writes anything; the lock of a command that died is taken over. Trial checkpoints are named
after the folder, the fixed settings and the trial's parameters, so the same trial tuned into two
folders writes two files.

Where this differs from RecBole's ``HyperTuning``:

- ``random`` samples without replacement (RecBole's exhaustive sampler capped at ``max_evals``):
  a point of a ``choice``-only space is never drawn twice, so ``max_evals`` distinct trials run
  (at most the grid size). The first draws equal hyperopt's ``rand.suggest`` with the same seed;
- ``exhaustive`` rejects spaces with non-``choice`` parameters (RecBole silently samples them);
- ``quniform`` values are integers when low, high and q are integers (hyperopt gives floats,
  which ``hidden_size`` cannot take);
- tied keys (:data:`~recbole_linear.workflow.tune.space.TIED_PARAMS`): when the source key is tuned and
  the tied key is not, the tied key takes the same value in every trial (GLINT-RU needs
  ``embedding_size == hidden_size``); the tied values are part of the trial and of ``best_params.yaml``;
- ``--early_stop=0`` turns RecBole's no-progress early stop off;
- the HTML display file is written with plotly's ``write_html`` (RecBole's ``plot_hyper`` opens a
  browser); without plotly, a plain HTML table;
- progress is logged (one line per trial) instead of printed.
"""
import functools
import logging
import numbers
import os
import sys

import colorlog
from recbole.utils.logger import RemoveColorFilter, log_colors_config

from recbole_linear.cli import PROG, common_parser, main, parse_known, split_config_files
from recbole_linear.config import create_config, read_yaml
from recbole_linear.errors import ConfigError
from recbole_linear.quick_start import check_dataset, ddp_objective_function, objective_function
from recbole_linear.registry import get_model
from recbole_linear.workflow.common.folder_lock import FolderLock
from recbole_linear.workflow.common.preflight import require_validation
from recbole_linear.workflow.tune.space import (
    CSV_NAME,
    ParamsFileError,
    params_str,
    read_params_file,
    resolve_params_file,
    tied_keys,
)
from recbole_linear.workflow.tune.run import (
    BEST_NAME,
    FIXED_NAME,
    HTML_NAME,
    LOG_NAME,
    LOGGER_NAME,
    MD_NAME,
    TuningRun,
    atomic_write,
    format_value,
    yaml_round_trip,
    yaml_dump,
)
from recbole_linear.workflow.tune.store import TrialStore

ALGORITHMS = ("exhaustive", "random", "bayes")
TOOLS = ("hyperopt", "ray")
RAY_ALGORITHMS = ("exhaustive", "random")


# --- preparing a run (all validation happens here, before any training) -------------------
def _fixed_settings(config):
    """Model, dataset, config files, config_dict and command line of a config, merged in precedence order."""
    fixed = {}
    fixed.update(config.file_config_dict)
    fixed.update(config.variable_config_dict)
    fixed.update(config.cmd_config_dict)
    fixed["model"] = config["model"]
    fixed["dataset"] = config["dataset"]
    if isinstance(fixed.get("data_path"), str) and not os.path.isabs(fixed["data_path"]):
        fixed["data_path"] = os.path.abspath(fixed["data_path"])  # Ray trials run in their own folders
    return yaml_round_trip(fixed)


def _config(model, dataset, files, config_dict, cmd_args):
    """create_config without leaving RecBole's CUDA_VISIBLE_DEVICES in this process (Ray counts GPUs by it)."""
    saved = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        return create_config(model, dataset, files, config_dict, cmd_args)
    finally:
        if saved is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = saved


def _check_options(algo, tool, max_evals, early_stop, cpus_per_trial, gpus_per_trial):
    if algo not in ALGORITHMS:
        raise ConfigError(f"unknown algorithm '{algo}' (--algo takes {', '.join(ALGORITHMS)})")
    if tool not in TOOLS:
        raise ConfigError(f"unknown tool '{tool}' (--tool takes {', '.join(TOOLS)})")
    if tool == "ray" and algo not in RAY_ALGORITHMS:
        raise ConfigError(
            f"--tool=ray runs --algo={' or '.join(RAY_ALGORITHMS)}, not '{algo}' "
            f"(bayes needs each result before the next proposal: run it with --tool=hyperopt)"
        )
    if not isinstance(max_evals, numbers.Integral) or max_evals < 1:
        raise ConfigError(f"invalid value for '--max_evals': {max_evals!r} (expected a positive integer)")
    if not isinstance(early_stop, numbers.Integral) or early_stop < 0:
        raise ConfigError(f"invalid value for '--early_stop': {early_stop!r} (expected 0 (off) or a positive integer)")
    if not cpus_per_trial > 0:
        raise ConfigError(f"invalid value for '--cpus_per_trial': {cpus_per_trial!r} (expected a positive number)")
    if not gpus_per_trial >= 0:
        raise ConfigError(f"invalid value for '--gpus_per_trial': {gpus_per_trial!r} (expected a non-negative number)")


def _check_space(specs, algo, base_config, fixed, ties):
    """Every tuned key is a config key, exhaustive has a grid, every candidate value makes a valid config."""
    if algo == "exhaustive":
        for spec in specs:
            if spec.kind != "choice":
                raise ParamsFileError(
                    f"exhaustive search needs every parameter as 'choice', but '{spec.name}' is {spec.kind} "
                    f"(line {spec.line}); use --algo=random or --algo=bayes"
                )
    model, known = base_config["model"], base_config.final_config_dict
    for spec in specs:
        if spec.name not in known:
            raise ParamsFileError(
                f"'{spec.name}' (params file line {spec.line}) is not a config key of {model} "
                f"(RecBole's or the model's defaults); check the spelling or set it in a config file"
            )
    for spec in specs:
        for value in spec.candidates():
            # as in a trial: the fixed settings below the trial's parameters
            trial = {spec.name: spec.normalize(value)}
            trial.update({tied: trial[source] for tied, source in ties.items() if source in trial})
            try:
                require_validation(_config(None, None, None, dict(fixed, **trial), None), "tune")
            except ConfigError as e:
                raise ConfigError(f"{spec.name}={value!r} from the params file (line {spec.line}): {e}") from e


def _check_output_dir(output_dir, fixed, store):
    """A folder with trials belongs to one set of fixed settings."""
    fixed_file = os.path.join(output_dir, FIXED_NAME)
    if not len(store):
        return
    if not os.path.isfile(fixed_file):
        raise ConfigError(
            f"output folder '{output_dir}' holds {CSV_NAME} but no {FIXED_NAME}; use another --output_dir"
        )
    stored = yaml_round_trip(read_yaml(fixed_file))
    if stored != fixed:
        changed = sorted(k for k in set(stored) | set(fixed) if stored.get(k, "<unset>") != fixed.get(k, "<unset>"))
        shown = ", ".join(f"{k}: {stored.get(k, '<unset>')!r} -> {fixed.get(k, '<unset>')!r}" for k in changed[:4])
        more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
        raise ConfigError(
            f"output folder '{output_dir}' holds trials of other fixed settings ({shown}{more}); "
            f"use another --output_dir (or delete {CSV_NAME} there)"
        )


def prepare(model, dataset="ml-100k", params_file=None, config_file_list=None, config_dict=None, cmd_args=None,
            algo="exhaustive", max_evals=100, early_stop=10, search_seed=2020, output_dir=None, display_file=None,
            tool="hyperopt", cpus_per_trial=1, gpus_per_trial=0, objective=None):
    """Validate everything a search needs (RecBoleLinearError, one line) and set up its output folder."""
    algo = str(algo).lower()
    tool = str(tool).lower()
    _check_options(algo, tool, max_evals, early_stop, cpus_per_trial, gpus_per_trial)
    get_model(model)  # an unknown name is reported as such, before its search space is looked up
    params_file = resolve_params_file(model, params_file)
    specs = read_params_file(params_file)
    if tool == "ray":
        import recbole_linear.workflow.tune.ray_tune  # noqa: F401  (RayUnavailableError when ray cannot work here)

    base_config = _config(model, dataset, config_file_list, config_dict, cmd_args)
    require_validation(base_config, "tune")
    check_dataset(base_config)
    model_name, dataset_name = base_config["model"], base_config["dataset"]
    ties = tied_keys(model_name, specs)
    fixed = _fixed_settings(base_config)
    _check_space(specs, algo, base_config, fixed, ties)

    output_dir = output_dir or os.path.join("hyper_results", f"{model_name}-{dataset_name}")
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ConfigError(f"--output_dir '{output_dir}' exists and is not a folder")
    folder_lock = FolderLock(output_dir, "tune").acquire()  # one command per folder, from here on
    try:
        store = TrialStore(os.path.join(output_dir, CSV_NAME)).load()
        _check_output_dir(output_dir, fixed, store)
    except BaseException:
        folder_lock.release()
        raise

    display_file = os.path.join(output_dir, HTML_NAME) if display_file is None else display_file
    run = TuningRun(model_name, dataset_name, specs, params_file, algo, max_evals, early_stop, search_seed,
                    output_dir, display_file, tool, fixed, base_config, objective or objective_function)
    run.store = store
    run.folder_lock = folder_lock
    atomic_write(run.fixed_file, yaml_dump(
        fixed, f"Fixed settings of every trial in this folder (written by '{PROG} tune').\n"
               "Trials add their parameters on top (see trials.csv)."))
    return run


class _TuneLogging:
    """The tuning log: RecBole-style lines on the console and in ``<output_dir>/tune.log``."""

    def __init__(self, output_dir):
        self.output_dir = output_dir
        self.handlers = []

    def __enter__(self):
        logger = logging.getLogger(LOGGER_NAME)
        logger.setLevel(logging.INFO)
        logger.propagate = False  # each trial re-initialises RecBole's root logger
        file_handler = logging.FileHandler(os.path.join(self.output_dir, LOG_NAME), encoding="utf-8")
        file_handler.setFormatter(logging.Formatter("%(asctime)-15s %(levelname)s  %(message)s", "%a %d %b %Y %H:%M:%S"))
        file_handler.addFilter(RemoveColorFilter())
        stream_handler = logging.StreamHandler()
        if getattr(stream_handler.stream, "isatty", lambda: False)():
            stream_handler.setFormatter(colorlog.ColoredFormatter(
                "%(log_color)s%(asctime)-15s %(levelname)s  %(message)s", "%d %b %H:%M", log_colors=log_colors_config))
        else:  # a file or a pipe: no colour codes (colorlog 4 writes them whatever the stream)
            stream_handler.setFormatter(logging.Formatter("%(asctime)-15s %(levelname)s  %(message)s", "%d %b %H:%M"))
            stream_handler.addFilter(RemoveColorFilter())
        self.handlers = [file_handler, stream_handler]
        for handler in self.handlers:
            logger.addHandler(handler)
        return logger

    def __exit__(self, *exc):
        logger = logging.getLogger(LOGGER_NAME)
        for handler in self.handlers:
            logger.removeHandler(handler)
            handler.close()
        return False


def tune(model, dataset="ml-100k", params_file=None, config_file_list=None, config_dict=None, cmd_args=None,
         algo="exhaustive", max_evals=100, early_stop=10, search_seed=2020, output_dir=None, display_file=None,
         tool="hyperopt", ray_address=None, cpus_per_trial=1, gpus_per_trial=0, objective=None):
    """Tune ``model`` on ``dataset``; returns the best parameters, scores, every trial and the output files.

    Args:
        model (str): a plugin or RecBole model name.
        dataset (str): dataset name (``ml-100k`` is RecBole's bundled copy).
        params_file (str): a ``.hyper`` file; default ``properties/hyper/<Model>.hyper``.
        config_file_list, config_dict, cmd_args: the fixed settings, as for ``create_config``.
        algo (str): ``exhaustive`` (the whole grid), ``random`` or ``bayes`` (hyperopt's TPE).
        max_evals (int): trials for random and bayes (exhaustive runs the grid).
        early_stop (int): stop after this many trials without a better valid score (0: never).
        search_seed (int): seeds hyperopt's proposals (and Ray's sampled points).
        output_dir (str): results folder, default ``hyper_results/<model>-<dataset>``.
        display_file (str): the HTML chart, default ``<output_dir>/tuning.html`` ('' for none).
        tool (str): ``hyperopt`` (trials one after another, here) or ``ray`` (Ray Tune).
        ray_address (str): an existing Ray cluster (default: start a local instance).
        cpus_per_trial, gpus_per_trial (float): Ray resources of each trial.
        objective (callable): ``objective(config_dict, config_file_list) -> result dict``; default
            the plugin's ``objective_function`` (hyperopt tool only; Ray trials always use it).
    """
    run = prepare(model, dataset, params_file, config_file_list, config_dict, cmd_args, algo, max_evals,
                  early_stop, search_seed, output_dir, display_file, tool, cpus_per_trial, gpus_per_trial, objective)
    try:
        return _tune_prepared(run, ray_address, cpus_per_trial, gpus_per_trial)
    finally:
        run.folder_lock.release()


def _tune_prepared(run, ray_address, cpus_per_trial, gpus_per_trial):
    with _TuneLogging(run.output_dir) as logger:
        logger.info(
            f"tuning {run.model} on {run.dataset}: {run.algo} search with {run.tool}, "
            f"{run.max_evals} trials at most, seed {run.search_seed}, output in {run.output_dir}"
        )
        logger.info("search space (" + run.params_file + "): " + "; ".join(s.describe() for s in run.specs))
        if run.ties:
            logger.info("tied keys: " + ", ".join(f"{t} = {s}" for t, s in run.ties.items()))
        overridden = [s.name for s in run.specs if s.name in run.fixed]
        if overridden:
            logger.warning(f"tuned keys override their fixed values: {', '.join(overridden)}")
        if len(run.store):
            logger.info(f"{len(run.store)} trials already in {run.store.path}: a trial proposed again is not retrained")
        try:
            if run.tool == "ray":
                from recbole_linear.workflow.tune.ray_tune import run_on_ray

                run_on_ray(run, address=ray_address, cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial)
            else:
                run.run_hyperopt()
        finally:
            run.write_outputs()
        summary = run.summary()
        if summary["best_params"] is not None:
            logger.info(
                f"best of {len(run.store)} trials (trial {summary['best_trial']}): [{params_str(summary['best_params'])}] "
                f"valid {run.metric}: {format_value(summary['best_valid_score'])}, test: {summary['best_test_result']}"
            )
        logger.info(f"{run.trained} trained, {run.skipped} served from {CSV_NAME}; results in {run.output_dir}: "
                    f"{CSV_NAME}, {MD_NAME}, {BEST_NAME}" + (f", {os.path.basename(run.display_file)}"
                                                             if run.display_file else ""))
    return summary


# --- command line -------------------------------------------------------------------------
def tune_parser():
    parser = common_parser(
        f"{PROG} tune",
        "Tune hyperparameters of a plugin or RecBole model with RecBole's HyperTuning (hyperopt) or Ray Tune. "
        "Every other --key=value is a fixed RecBole setting of every trial.",
    )
    parser.add_argument("--model", "-m", required=True, help="model name, e.g. LRURec, LinRec, GLINTRU, SASRec")
    parser.add_argument("--params_file", default=None,
                        help="search space in RecBole's .hyper format (default: properties/hyper/<Model>.hyper)")
    parser.add_argument("--algo", default="exhaustive", help="exhaustive (default), random or bayes")
    parser.add_argument("--max_evals", type=int, default=100, help="trials for random and bayes (default 100)")
    parser.add_argument("--early_stop", type=int, default=10,
                        help="stop after this many trials without improvement (default 10, RecBole's; 0: never)")
    parser.add_argument("--search_seed", type=int, default=2020, help="seed of the proposed points (default 2020)")
    parser.add_argument("--output_dir", default=None, help="results folder (default hyper_results/<model>-<dataset>)")
    parser.add_argument("--display_file", default=None, help="HTML chart of the trials (default <output_dir>/tuning.html)")
    parser.add_argument("--tool", default="hyperopt", help="hyperopt (default: one trial after another) or ray")
    parser.add_argument("--ray_address", default=None, help="address of an existing Ray cluster (default: a local one)")
    parser.add_argument("--cpus_per_trial", type=float, default=1, help="Ray: CPUs of each trial (default 1)")
    parser.add_argument("--gpus_per_trial", type=float, default=0, help="Ray: GPUs of each trial (default 0)")
    parser.add_argument("--nproc", type=int, default=1,
                        help="hyperopt: processes (DDP) of each trial on this machine (default 1; Ray trials are one process)")
    parser.add_argument("--port", default="5678", help="with --nproc > 1: the DDP rendezvous port")
    return parser


def trial_objective(nproc, port, tool):
    """The objective of each trial: one process (None: the default), or ``nproc`` DDP processes."""
    if nproc == 1:
        return None
    if nproc < 1:
        raise ConfigError(f"--nproc must be a positive integer (processes of each trial), got {nproc}")
    if tool == "ray":
        raise ConfigError("--nproc applies to --tool=hyperopt; Ray trials run one process each")
    return functools.partial(ddp_objective_function, nproc=nproc, port=port)


def cli_main(argv):
    args, overrides = parse_known(tune_parser(), argv)
    tune(
        model=args.model,
        dataset=args.dataset,
        params_file=args.params_file,
        config_file_list=split_config_files(args.config_files),
        cmd_args=overrides,
        algo=args.algo,
        max_evals=args.max_evals,
        early_stop=args.early_stop,
        search_seed=args.search_seed,
        output_dir=args.output_dir,
        display_file=args.display_file,
        tool=args.tool,
        ray_address=args.ray_address,
        cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial,
        objective=trial_objective(args.nproc, args.port, args.tool),
    )
    return 0


if __name__ == "__main__":  # python -m recbole_linear.workflow.tune.command ...
    sys.exit(main(["tune", *sys.argv[1:]]))
