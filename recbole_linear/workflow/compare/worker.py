"""One run of a comparison in a process of its own: ``python -m recbole_linear.workflow.compare.worker SPEC.json``.

``compare`` starts one such process per (model, seed), so that the peak resident memory the
process reports belongs to that run alone and a crash (an exception, an out-of-memory kill, a
segfault) ends only that run. The spec (JSON) names the model, dataset, config files and the
``--key=value`` overrides of the run, where to write its config, per-user scores and result; the
result (JSON) holds RecBole's best-valid and test metrics and the run's facts, or the error.

The run is exactly ``run_recbole_linear.py --model=M --config_files=... <overrides>`` (same
config, seed, data pipeline, trainer, evaluator), except:
- the checkpoint is named after the run and its output folder: ``<checkpoint_dir>/<checkpoint_name>``
  (``<run_id>-<folder hash>.pth``, see ``compare_runner.checkpoint_name``);
- the best checkpoint is loaded before the test evaluation, which is timed, and which also
  records every test user's NDCG@10 from the same full-sort scores RecBole's evaluator ranks
  (:class:`~recbole_linear.workflow.compare.per_user.PerUserNDCG`);
- training survives interruption: after every epoch the run's state goes to
  ``<checkpoint>.resume.pth``, and a later attempt of the same run (compare retries unfinished
  runs) continues from it, bit-identical to an uninterrupted run; the file is removed once the
  run is tested (:mod:`recbole_linear.resume`).

The worker dies with the ``compare`` process that started it (:func:`die_with_parent`), so that a
killed comparison leaves no orphan training on behind it. ``compare`` starts it through
:mod:`~recbole_linear.workflow.compare.worker_start`, which arms that watch before torch and RecBole
are imported; started with ``-m`` as above, the watch is armed only after them.
"""
import json
import os
import resource
import signal
import sys
import time
import traceback
from logging import getLogger

import numpy as np
import torch
import yaml
from recbole.utils import init_logger, init_seed

from recbole_linear import resume
from recbole_linear.config import create_config
from recbole_linear.distributed import free_port
from recbole_linear.quick_start import check_dataset, count_parameters, load_data_and_model, prepare, run
from recbole_linear.trainer import get_trainer, load_checkpoint
from recbole_linear.workflow.compare.parent_watch import die_with_parent, end_own_group
from recbole_linear.workflow.compare.per_user import PerUserNDCG


def one_line_error(error):
    """'ExcType: first line of the message' (what runs.csv and the summary show)."""
    message = str(error).strip().splitlines()
    return f"{type(error).__name__}: {message[0]}" if message else type(error).__name__


def _plain(value):
    """A YAML-safe copy of a config value: containers recursed, anything else unknown as str."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


# config keys holding a file or folder: written relative to the dumped file, so results travel
PATH_KEYS = ("data_path", "checkpoint_dir", "saved_model_file", "resume_file")


def dump_config(config, path):
    """Write the run's final RecBole config dict as YAML (enums, devices... as strings), with the
    paths of :data:`PATH_KEYS` relative to the file's folder."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    values = _plain(dict(config.final_config_dict))
    for key in PATH_KEYS:
        if isinstance(values.get(key), str) and os.path.isabs(values[key]):
            values[key] = os.path.relpath(values[key], os.path.abspath(folder))
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(values, f, sort_keys=True, allow_unicode=True)


def peak_memory(device=None):
    """Peak RSS of this process in MB (Linux reports KB) and, on CUDA, peak allocated GPU MB."""
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024
    memory = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale, "peak_gpu_mb": None}
    try:
        if device is not None and torch.device(device).type == "cuda":
            memory["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    except Exception:  # memory facts must never hide the run's own outcome
        pass
    return memory


def _load_best(trainer, model, logger):
    if not os.path.isfile(trainer.saved_model_file):  # nothing validated: a worker started by hand (compare refuses it)
        logger.warning(f"no checkpoint at {trainer.saved_model_file}: testing the current weights")
        return
    checkpoint = load_checkpoint(trainer.saved_model_file, map_location=trainer.device)
    model.load_state_dict(checkpoint["state_dict"])
    model.load_other_parameter(checkpoint.get("other_parameter"))


def train_and_test(spec, facts):
    """Train and test one run; fills ``facts`` as it goes (device, config) and returns the result."""
    config = create_config(spec["model"], spec["dataset"], spec["config_files"], None, spec["cmd_args"])
    check_dataset(config)
    if (config["nproc"] or 1) > 1:  # compare --nproc=N: RecBole's DDP config key, for every run
        return train_and_test_distributed(spec, facts, config)
    name = spec.get("checkpoint_name") or f"{spec['run_id']}.pth"
    config["saved_model_file"] = os.path.join(config["checkpoint_dir"], name)
    facts["device"] = str(config["device"])
    facts["import_rss_mb"] = peak_memory()["peak_rss_mb"]  # interpreter, torch and RecBole alone
    dump_config(config, spec["config_file"])

    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logger = getLogger()
    logger.info(config)
    cuda = torch.device(config["device"]).type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(config["device"])

    dataset, (train_data, valid_data, test_data), model, trainer = prepare(config)
    # an interrupted earlier attempt of this run left its state after its last finished epoch
    resume_file = resume.resume_file_for(config["saved_model_file"])
    trainer.enable_resume(resume_file)
    best_valid_score, best_valid_result = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    _load_best(trainer, model, logger)

    recorder = PerUserNDCG(config)
    recorder.attach(trainer)
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    test_result = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
    if cuda:
        torch.cuda.synchronize()
    eval_seconds = time.perf_counter() - start - recorder.seconds

    recorder.save(spec["per_user_file"], dataset, config, test_result, logger)
    logger.info(f"best valid: {dict(best_valid_result)}")
    logger.info(f"test result: {dict(test_result)}")
    resume.discard(resume_file)  # the run is complete: a rerun starts afresh

    epoch_seconds = list(trainer.epoch_train_seconds)
    return {
        "best_valid_score": float(best_valid_score),
        "best_valid_result": {k: float(v) for k, v in best_valid_result.items()},
        "test_result": {k: float(v) for k, v in test_result.items()},
        "num_parameters": count_parameters(model),
        "epochs_trained": len(epoch_seconds),
        "resumed_from_epoch": trainer.start_epoch or None,  # the first epoch this process trained, if resumed
        "seconds_per_epoch": float(np.mean(epoch_seconds)) if epoch_seconds else None,
        "train_seconds": float(np.sum(epoch_seconds)),
        "evaluated_users": recorder.n_users,
        "eval_seconds": eval_seconds,
        "latency_ms_per_1k_users": eval_seconds * 1e6 / recorder.n_users if recorder.n_users else None,
        "checkpoint": os.path.abspath(trainer.saved_model_file) if os.path.isfile(trainer.saved_model_file) else None,
    }


def train_and_test_distributed(spec, facts, config):
    """:func:`train_and_test` with training on ``config["nproc"]`` DDP processes of this machine.

    The run is ``run_recbole_linear.py --nproc=N`` (its own processes, a free port); its best
    checkpoint is then tested again here, in one process, with the per-user recorder and the
    timing of :func:`train_and_test`. DDP evaluation is exact, so this test result is the run's own
    (checked). ``peak_rss_mb`` is this process's (the testing one); the training processes' peak
    is ``peak_rss_training_mb``. Resuming is not supported under DDP.
    """
    name = spec.get("checkpoint_name") or f"{spec['run_id']}.pth"
    saved_model_file = os.path.join(config["checkpoint_dir"], name)
    dump_config(config, spec["config_file"])
    trained = run(spec["model"], spec["dataset"], spec["config_files"], {"saved_model_file": saved_model_file},
                  spec["cmd_args"], nproc=config["nproc"], port=free_port())
    training_rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

    test_config, model, dataset, _, _, test_data = load_data_and_model(saved_model_file)
    facts["device"] = str(test_config["device"])
    logger = getLogger()
    trainer = get_trainer(test_config["MODEL_TYPE"], test_config["model"])(test_config, model)
    recorder = PerUserNDCG(test_config)
    recorder.attach(trainer)
    start = time.perf_counter()
    test_result = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
    eval_seconds = time.perf_counter() - start - recorder.seconds
    if dict(test_result) != dict(trained["test_result"]):
        logger.warning(f"test result here {dict(test_result)} differs from the DDP run's {dict(trained['test_result'])}")
    recorder.save(spec["per_user_file"], dataset, test_config, test_result, logger)

    epoch_seconds = trained["epoch_train_seconds"]
    return {
        "best_valid_score": float(trained["best_valid_score"]),
        "best_valid_result": {k: float(v) for k, v in trained["best_valid_result"].items()},
        "test_result": {k: float(v) for k, v in test_result.items()},
        "num_parameters": count_parameters(model),
        "epochs_trained": trained["epochs_trained"],
        "seconds_per_epoch": float(np.mean(epoch_seconds)) if epoch_seconds else None,
        "train_seconds": float(np.sum(epoch_seconds)),
        "evaluated_users": recorder.n_users,
        "eval_seconds": eval_seconds,
        "latency_ms_per_1k_users": eval_seconds * 1e6 / recorder.n_users if recorder.n_users else None,
        "peak_rss_training_mb": training_rss_mb,
        "checkpoint": os.path.abspath(saved_model_file) if os.path.isfile(saved_model_file) else None,
    }


# --- dying with the parent: armed by compare_worker_start, before this module's imports ------------
_end_own_group = end_own_group  # the name this module used


def main(argv, watched=False):
    """``watched``: :mod:`~recbole_linear.workflow.compare.worker_start` armed the parent watch before
    the imports; here SIGTERM starts ending the process group (this run may start DDP processes)."""
    if len(argv) != 1:
        print("usage: python -m recbole_linear.workflow.compare.worker SPEC.json", file=sys.stderr)
        return 2
    with open(argv[0], "r", encoding="utf-8") as f:
        spec = json.load(f)
    if spec.get("parent_pid"):
        if watched:
            signal.signal(signal.SIGTERM, end_own_group)
        else:  # started with -m: armed only now, after the package's imports
            die_with_parent(int(spec["parent_pid"]))
    start = time.perf_counter()
    facts = {"device": None, "import_rss_mb": None}
    try:
        result = {"status": "ok", "error": None, **train_and_test(spec, facts)}
    except Exception as e:
        traceback.print_exc()
        result = {"status": "failed", "error": one_line_error(e)}
    result["run_seconds"] = time.perf_counter() - start
    result.update(peak_memory(facts["device"]), import_rss_mb=facts["import_rss_mb"])
    temporary = spec["result_file"] + ".tmp"
    with open(temporary, "w", encoding="utf-8") as f:
        json.dump(result, f)
    os.replace(temporary, spec["result_file"])
    return 0 if result["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
