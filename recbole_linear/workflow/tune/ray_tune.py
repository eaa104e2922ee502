"""The Ray Tune back end of ``tune --tool=ray``: the same trials as the local search, run by Ray.

The points are those the local search proposes, drawn by hyperopt's own sampler with the same
``--search_seed`` but without training anything: the whole grid for ``exhaustive``, sampled
points (without replacement) for ``random``. ``bayes`` needs each result before its next proposal
and is refused. Points already in ``trials.csv`` are not sent; the others go to Ray as one
``tune.grid_search`` over their indices. Each Ray trial calls :func:`ray_trainable`, a function of
this module, so workers import it from ``recbole_linear`` (install the plugin on every node of a
cluster). A driver-side callback appends each result to ``trials.csv`` the moment it arrives, so
an interrupted run keeps its finished trials, and the next run skips them.

Ray's own files (trial folders with RecBole's logs and checkpoints, Tune's experiment state) go to
``<output_dir>/ray/<model>-<time>/``. A local instance (the default) gets all CPUs of the machine,
a 256 MiB object store and no dashboard, and is shut down at the end.
"""
import importlib
import json
import logging
import os
import time

from recbole_linear.errors import ConfigError, RecBoleLinearError
from recbole_linear.quick_start import objective_function
from recbole_linear.workflow.tune.run import LOGGER_NAME
from recbole_linear.workflow.tune.store import TrialFailedError, execute_trial, quiet_import


class RayUnavailableError(RecBoleLinearError):
    """Ray (or the pyarrow it loads) cannot be imported in this environment."""


def check_ray_environment():
    """One line instead of a deep traceback when Ray cannot work here (checked before any training)."""
    try:
        quiet_import("ray.tune")
    except ImportError as e:
        raise RayUnavailableError(f"--tool=ray needs ray[tune]==2.6.3 (RecBole's pin): {e}") from e
    try:
        importlib.import_module("pyarrow")  # ray's serializer imports it when installed
    except ModuleNotFoundError:
        pass
    except ImportError as e:
        message = str(e).strip().splitlines()[0]
        raise RayUnavailableError(
            f"ray cannot load the installed pyarrow ({message}); install one built for numpy 1.x, "
            f"e.g. pip install 'pyarrow==17.0.0'"
        ) from e


check_ray_environment()
Callback = quiet_import("ray.tune").Callback  # without ray's pkg_resources warning

OBJECT_STORE_BYTES = 256 * 1024 * 1024
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ray_trainable(config, points, fixed_config_dict, trial_files, cpus_per_trial=1, gpus_per_trial=0):
    """One Ray trial: train ``points[config['trial_index']]`` and report its record."""
    import ray
    import torch
    from ray.air import session

    index = config["trial_index"]
    torch.set_num_threads(max(1, int(cpus_per_trial)))
    # RecBole sets CUDA_VISIBLE_DEVICES from gpu_id: give it the GPUs Ray assigned ("" = CPU)
    gpu_ids = ray.get_gpu_ids() if gpus_per_trial > 0 else []
    extra = dict(trial_files[index], gpu_id=",".join(str(g) for g in gpu_ids))
    record = execute_trial(objective_function, points[index], fixed_config_dict=fixed_config_dict, extra=extra)
    session.report({"valid_score": record["valid_score"], "trial_index": index, "record": json.dumps(record)})


def _trial_dirname(trial):
    return f"trial_{trial.config['trial_index']:04d}_{trial.trial_id}"


class RecordTrials(Callback):
    """Driver side: append each Ray result to trials.csv and log it, as it arrives."""

    def __init__(self, run, numbers, total):
        self.run = run
        self.numbers = numbers  # trial_index -> the point's number in the search
        self.total = total
        self.recorded = set()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        index = result.get("trial_index")
        if "record" not in result or index in self.recorded:
            return
        self.recorded.add(index)
        record = json.loads(result["record"])
        self.run.accept(record["params"], record, self.numbers[index], self.total, skipped=False)


def _init_ray(ray, address):
    """Connect to ``address`` or start a small local instance; False if Ray was already up."""
    if ray.is_initialized():
        return False
    options = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    if address:
        ray.init(address=address, **options)
    else:
        # workers start from the raylet's environment: let them import this checkout of the plugin
        pythonpath = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_PARENT, pythonpath) if p)
        try:
            ray.init(address="local", num_cpus=os.cpu_count(), object_store_memory=OBJECT_STORE_BYTES, **options)
        finally:
            if pythonpath is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = pythonpath
    return True


def _check_resources(resources, cpus_per_trial, gpus_per_trial):
    cpus, gpus = resources.get("CPU", 0), resources.get("GPU", 0)
    if cpus_per_trial > cpus or gpus_per_trial > gpus:
        raise ConfigError(
            f"a trial asks for {cpus_per_trial:g} CPUs and {gpus_per_trial:g} GPUs, but the local Ray instance "
            f"has {cpus:g} CPUs and {gpus:g} GPUs (lower --cpus_per_trial/--gpus_per_trial)"
        )


def _first_line(error):
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def run_on_ray(run, address=None, cpus_per_trial=1, gpus_per_trial=0):
    """Run the search's pending points on Ray; every result lands in the run's trials.csv."""
    logger = logging.getLogger(LOGGER_NAME)
    points = run.proposed_points()
    pending = []
    for number, params in enumerate(points, 1):
        record = run.stored(params)
        if record is None:
            pending.append((number, params))
        else:
            run.accept(params, record, number, len(points), skipped=True)
    if not pending:
        logger.info(f"all {len(points)} trials are stored: nothing to send to Ray")
        return

    ray = quiet_import("ray")
    tune = quiet_import("ray.tune")
    air = quiet_import("ray.air")
    storage = os.path.abspath(os.path.join(run.output_dir, "ray"))
    name = f"{run.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    started = _init_ray(ray, address)
    try:
        if not address:  # a local instance cannot grow: a trial larger than it would wait forever
            _check_resources(ray.cluster_resources(), cpus_per_trial, gpus_per_trial)
        logger.info(
            f"sending {len(pending)} trials to Ray ({ray.cluster_resources().get('CPU', 0):g} CPUs, "
            f"{cpus_per_trial:g} CPU / {gpus_per_trial:g} GPU per trial); Ray's files in {os.path.join(storage, name)}"
        )
        trainable = tune.with_resources(
            tune.with_parameters(
                ray_trainable,
                points=[params for _, params in pending],
                fixed_config_dict=run.fixed,
                trial_files=[run.trial_files(params) for _, params in pending],
                cpus_per_trial=cpus_per_trial,
                gpus_per_trial=gpus_per_trial,
            ),
            {"cpu": cpus_per_trial, "gpu": gpus_per_trial},
        )
        callback = RecordTrials(run, {i: number for i, (number, _) in enumerate(pending)}, len(points))
        tuner = tune.Tuner(
            trainable,
            param_space={"trial_index": tune.grid_search(list(range(len(pending))))},
            tune_config=tune.TuneConfig(num_samples=1, trial_dirname_creator=_trial_dirname),
            run_config=air.RunConfig(
                name=name,
                storage_path=storage,
                verbose=0,
                callbacks=[callback],
                failure_config=air.FailureConfig(max_failures=0),
            ),
        )
        legacy_output = os.environ.get("RAY_AIR_NEW_OUTPUT")
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # the new engine prints a banner even at verbose=0
        try:
            results = tuner.fit()
        finally:
            if legacy_output is None:
                os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
            else:
                os.environ["RAY_AIR_NEW_OUTPUT"] = legacy_output
    finally:
        if started:
            ray.shutdown()
    failed = [result for result in results if result.error is not None]
    if failed:
        raise TrialFailedError(
            f"{len(failed)} of {len(pending)} Ray trials failed, the first with: {_first_line(failed[0].error)} "
            f"(tracebacks under {os.path.join(storage, name)})"
        )
