"""Train and evaluate plugin or RecBole models: the functions behind the command line.

``run`` mirrors RecBole's ``recbole.quick_start.run`` (single process or DDP via ``mp.spawn``),
``run_recbole_linear`` its ``run_recbole``, ``objective_function`` the function RecBole's
``HyperTuning`` calls, and ``load_data_and_model`` its namesake, all with the plugin's config
(property files, explicit command line, checks) and checkpoint-safe trainers.
"""
import logging
import os
import sys
from logging import getLogger

import torch
import torch.distributed as dist

from recbole.data.transform import construct_transform
from recbole.utils import get_environment, get_flops, init_logger, init_seed, set_color

from recbole_linear import distributed, resume
from recbole_linear import model as _registered_models  # noqa: F401  (registers the plugin models, also in spawned children)
from recbole_linear.all_positions import AllPositionTrainDataLoader
from recbole_linear.config import create_config, override_config
from recbole_linear.data import create_dataset
from recbole_linear.data_checks import check_atomic_files, split_dataset
from recbole_linear.errors import ConfigError, DatasetNotFoundError, RecBoleLinearError
from recbole_linear.recbole_compat import console_log_to_stdout, recbole_warnings_filtered
from recbole_linear.registry import get_model
from recbole_linear.sampled_loss import recbole_model_loss
from recbole_linear.trainer import get_trainer, load_checkpoint, unique_checkpoint_file


def check_dataset(config):
    """Fail with one line if the dataset's interaction file is missing (RecBole would try to download)
    or is one RecBole cannot read (see :mod:`recbole_linear.data_checks`)."""
    inter_file = os.path.join(config["data_path"], f"{config['dataset']}.inter")
    if not os.path.isfile(inter_file):
        raise DatasetNotFoundError(
            f"dataset '{config['dataset']}' not found: no atomic file {os.path.abspath(inter_file)} "
            f"(set --data_path to the folder that holds {config['dataset']}/{config['dataset']}.inter)"
        )
    check_atomic_files(config)  # header, columns and values, before RecBole's pandas reads them


def set_anomaly_detection(config):
    """Apply ``detect_anomaly`` (default False) to the process.

    Importing RecBole's model package runs ``torch.autograd.set_detect_anomaly(True)`` (in its
    SINE module), which checks every backward output for NaN and records a traceback for every
    forward op: no result changes, but SASRec trains about 2x slower on CPU. Every run states
    the mode explicitly so that baselines and plugin models train under the same one.
    """
    torch.autograd.set_detect_anomaly(bool(config["detect_anomaly"]))


def count_parameters(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def build_model(config, dataset):
    """The config's model on ``dataset``'s items, on the config's device (a RecBole model is built
    as for CE when the run's loss is sampled: the trainer computes that loss, see sampled_loss)."""
    with recbole_model_loss(config):
        return get_model(config["model"])(config, dataset).to(config["device"])


@recbole_warnings_filtered()  # RecBole's dataset FutureWarnings (pandas)
def prepare(config, log_flops=False):
    """Dataset, dataloaders, model and trainer for a config, as RecBole's ``run_recbole`` builds them."""
    logger = getLogger()
    check_dataset(config)
    set_anomaly_detection(config)
    dataset = create_dataset(config)
    logger.info(dataset)
    train_data, valid_data, test_data = split_dataset(config, dataset)  # data_preparation + split checks
    if config["train_all_positions"]:
        train_data = AllPositionTrainDataLoader(config, train_data._dataset, shuffle=config["shuffle"])
        logger.info(
            set_color("train_all_positions", "blue")
            + f": {train_data.sample_size} windows of at most {train_data.max_len} items, {train_data.n_targets} targets"
        )

    # the global rank, so that the processes of different machines draw different dropout masks
    init_seed(config["seed"] + config["local_rank"] + (config["offset"] or 0), config["reproducibility"])
    model = build_model(config, train_data._dataset)
    logger.info(model)
    if log_flops:
        try:
            flops = get_flops(model, dataset, config["device"], logger, construct_transform(config))
            logger.info(set_color("FLOPs", "blue") + f": {flops}")
        except Exception as e:  # thop cannot trace every model; FLOPs are informative only
            logger.warning(f"FLOPs not computed: {type(e).__name__}: {e}")
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    return dataset, (train_data, valid_data, test_data), model, trainer


def _result(config, model, trainer, best_valid_score, best_valid_result, test_result, saved):
    return {
        "model": config["model"],
        "dataset": config["dataset"],
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
        "num_parameters": count_parameters(model),
        "epochs_trained": len(trainer.epoch_train_seconds),
        "epoch_train_seconds": list(trainer.epoch_train_seconds),
        "saved_model_file": trainer.saved_model_file if saved else None,
    }


def _train_and_test(config, trainer, train_data, valid_data, test_data, saved, verbose=True, show_progress=False):
    """``fit`` then ``evaluate`` on the test set; with ``resume_file`` set (by the user for ``run``, by
    ``tune`` for each trial) an interrupted fit continues from that file, removed once tested."""
    if config["resume_file"]:
        trainer.enable_resume(config["resume_file"])
    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, verbose=verbose, saved=saved, show_progress=show_progress
    )
    test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=show_progress)
    if config["resume_file"]:
        resume.discard(config["resume_file"])
    return best_valid_score, best_valid_result, test_result


def run_recbole_linear(
    model=None,
    dataset=None,
    config_file_list=None,
    config_dict=None,
    cmd_args=None,
    saved=True,
    queue=None,
):
    """Train, validate and test one model; returns RecBole's result dict plus run facts.

    Args:
        model (str or class): a plugin or RecBole model name (or class).
        dataset (str): dataset name; ``ml-100k`` is RecBole's bundled copy.
        config_file_list (list of str): YAML files, later ones win.
        config_dict (dict): overrides above the files.
        cmd_args (list of str): ``--key=value`` overrides above everything else.
        saved (bool): save the best checkpoint and test it (else test the last weights).
        queue: for ``mp.spawn``: rank 0 puts the result there.
    """
    config = create_config(model, dataset, config_file_list, config_dict, cmd_args)
    check_dataset(config)  # before the logger starts, so bad input stays one line
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    console_log_to_stdout()  # stderr keeps warnings and the error line
    logger = getLogger()
    logger.info(sys.argv)
    logger.info(config)

    _, (train_data, valid_data, test_data), model, trainer = prepare(config, log_flops=True)
    best_valid_score, best_valid_result, test_result = _train_and_test(
        config, trainer, train_data, valid_data, test_data, saved, show_progress=config["show_progress"]
    )

    logger.info("The running environment of this training is as follows:\n" + get_environment(config).draw())
    logger.info(set_color("best valid ", "yellow") + f": {best_valid_result}")
    logger.info(set_color("test result", "yellow") + f": {test_result}")
    if saved:
        logger.info(set_color("checkpoint", "yellow") + f": {trainer.saved_model_file}")

    result = _result(config, model, trainer, best_valid_score, best_valid_result, test_result, saved)
    if not config["single_spec"]:
        dist.destroy_process_group()
    if config["local_rank"] == 0 and queue is not None:
        queue.put(result)
    return result


def _spawned_worker(rank, model, dataset, config_file_list, kwargs, queue):
    """Entry point of each DDP process; lives in the plugin so children import it.

    An input error (or a rendezvous that cannot start) goes to the parent as one line; the
    parent's ``distributed.spawn`` raises it there after torch has ended the other processes.
    """
    kwargs["config_dict"] = dict(kwargs.get("config_dict") or {}, local_rank=rank)
    try:
        run_recbole_linear(model, dataset, config_file_list, queue=queue, **kwargs)
    except (RecBoleLinearError, torch.distributed.DistNetworkError) as e:
        distributed.report_worker_error(queue, rank + kwargs["config_dict"].get("offset", 0), e)
        raise


def run(
    model,
    dataset="ml-100k",
    config_file_list=None,
    config_dict=None,
    cmd_args=None,
    saved=True,
    nproc=1,
    world_size=-1,
    ip="localhost",
    port="5678",
    group_offset=0,
):
    """One process, or ``nproc`` DDP processes on this machine (of ``world_size`` on all machines).

    DDP runs on CPUs (gloo) and GPUs (NCCL), chosen by ``ddp_backend`` (see
    :mod:`recbole_linear.distributed`); their validation and test metrics are those of one process
    evaluating the same weights. Returns the result of this machine's first process.
    """
    if nproc == 1 and world_size <= 0:
        return run_recbole_linear(model, dataset, config_file_list, config_dict, cmd_args, saved)

    # Build the config once here: bad input fails before any process starts, and every rank
    # gets the same checkpoint name (RecBole names it per process, to the second).
    config = create_config(model, dataset, config_file_list, config_dict, cmd_args)
    check_dataset(config)
    launch = distributed.check_launch(config, nproc, world_size, port, group_offset)
    distributed.make_shared_folders(config)
    config_dict = dict(config_dict or {})
    config_dict.setdefault("saved_model_file", unique_checkpoint_file(config["checkpoint_dir"], config["model"]))
    config_dict.update(launch, ip=ip)
    kwargs = {"config_dict": config_dict, "cmd_args": cmd_args, "saved": saved}
    return distributed.spawn(_spawned_worker, (config["model"], dataset, config_file_list, kwargs), nproc)


def objective_function(config_dict=None, config_file_list=None, saved=True):
    """The objective RecBole's ``HyperTuning`` calls, for plugin and RecBole models alike."""
    config = create_config(None, None, config_file_list, config_dict)
    init_seed(config["seed"], config["reproducibility"])
    logger = getLogger()
    for handler in logger.handlers[:]:
        logger.removeHandler(handler)
    init_logger(config)
    logging.basicConfig(level=logging.ERROR)
    _, (train_data, valid_data, test_data), model, trainer = prepare(config)
    best_valid_score, best_valid_result, test_result = _train_and_test(
        config, trainer, train_data, valid_data, test_data, saved, verbose=False
    )
    return _result(config, model, trainer, best_valid_score, best_valid_result, test_result, saved)


def ddp_objective_function(config_dict=None, config_file_list=None, saved=True, nproc=2, port="5678"):
    """:func:`objective_function` whose trial trains on ``nproc`` processes of this machine (DDP).

    For ``tune`` (``--nproc``): ``functools.partial(ddp_objective_function, nproc=2, port=...)``.
    The trial's metrics are those of one process evaluating its weights, as for any DDP run. The
    trial's ``resume_file`` (tune gives every trial one) is dropped: DDP runs cannot resume, so a
    trial cut off starts afresh.
    """
    config_dict = {k: v for k, v in (config_dict or {}).items() if k != "resume_file"}
    return run(None, None, config_file_list, config_dict, saved=saved, nproc=nproc, port=port)


def read_recbole_checkpoint(model_file):
    """A checkpoint a RecBole run saved; ConfigError (one line) for anything else."""
    try:
        checkpoint = load_checkpoint(model_file, map_location="cpu")
    except Exception as e:  # torch raises many types for a file that is not a checkpoint
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"cannot read checkpoint '{model_file}': {reason}") from e
    if not isinstance(checkpoint, dict) or not {"config", "state_dict"} <= set(checkpoint):
        raise ConfigError(f"'{model_file}' is not a checkpoint saved by a RecBole run (no config and state_dict)")
    return checkpoint


# what may change when a saved model is loaded again: how it is evaluated, not what it learned from
EVALUATION_OVERRIDES = (
    "eval_mask_history", "eval_batch_size", "data_path", "sequence_storage", "eval_item_chunk_size", "precision",
)


@recbole_warnings_filtered()  # RecBole's dataset FutureWarnings (pandas)
def load_data_and_model(model_file, cmd_args=None):
    """Config, model (with the saved weights), dataset and dataloaders from a checkpoint file.

    ``cmd_args``: ``--key=value`` overrides of the run's config, limited to
    :data:`EVALUATION_OVERRIDES` (e.g. ``--eval_mask_history=True``).
    """
    checkpoint = read_recbole_checkpoint(model_file)
    config = override_config(checkpoint["config"], cmd_args, EVALUATION_OVERRIDES)
    distributed.as_single_process(config)  # a DDP run's checkpoint is evaluated in this one process
    # RecBole's metrics use numpy aliases (np.float...) that only its Config constructor restores;
    # an unpickled config never ran it, so a fresh process would fail at the first NDCG
    config.compatibility_settings()
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    console_log_to_stdout()  # stderr keeps warnings and the error line
    logger = getLogger()
    logger.info(config)
    check_dataset(config)
    dataset = create_dataset(config)
    logger.info(dataset)
    train_data, valid_data, test_data = split_dataset(config, dataset)
    init_seed(config["seed"], config["reproducibility"])
    model = build_model(config, train_data._dataset)
    model.load_state_dict(checkpoint["state_dict"])
    model.load_other_parameter(checkpoint.get("other_parameter"))
    return config, model, dataset, train_data, valid_data, test_data


def evaluate_checkpoint(model_file, cmd_args=None, before_test=None):
    """Evaluate a saved model again on its run's validation and test sets, through RecBole's
    trainer and evaluator, with evaluation ``cmd_args`` (see :func:`load_data_and_model`).

    ``before_test(config, trainer, dataset)``, if given, is called between the two evaluations
    (e.g. to record the test set's per-user metrics). Returns ``(config, valid_result,
    test_result)``; with no overrides the test result is the one the run reported.
    """
    config, model, dataset, _, valid_data, test_data = load_data_and_model(model_file, cmd_args)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    valid_result = trainer.evaluate(valid_data, load_best_model=False, show_progress=config["show_progress"])
    if before_test is not None:
        before_test(config, trainer, dataset)
    test_result = trainer.evaluate(test_data, load_best_model=False, show_progress=config["show_progress"])
    getLogger().info(set_color("valid result", "yellow") + f": {valid_result}")
    getLogger().info(set_color("test result", "yellow") + f": {test_result}")
    return config, dict(valid_result), dict(test_result)
