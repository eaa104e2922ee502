"""Training that survives interruption: a resume file after every epoch, and resuming from it.

RecBole's ``Trainer.fit`` loops ``for epoch_idx in range(self.start_epoch, self.epochs)`` and its
``resume_checkpoint`` restores the weights, optimizer, epoch, early-stopping counter and best
score from the *best* checkpoint, which is not the last epoch's state. This module keeps a second
file, the resume file (``<checkpoint>.resume.pth`` beside the run's checkpoint), rewritten
atomically after every epoch: after a validated epoch once RecBole has updated the early-stopping
state and saved the best checkpoint (the ``callback_fn`` hook of ``fit``), after any other epoch
once its loss is recorded (``PluginTrainerMixin.after_epoch_fn``). With ``eval_step: 9`` a run
cut off therefore loses the epoch in progress, not up to nine. The file holds everything a later
process needs to continue as if never stopped:

- the model and optimizer state (every optimizer the trainer holds, e.g. RecVAE's two), the
  epoch, ``cur_step`` (validations since the best), ``best_valid_score``, ``best_valid_result``
  and the best checkpoint's path (that file stays separate and is not copied);
- the random states: torch (CPU and CUDA), numpy, Python's ``random`` and the training
  dataloader's ``generator`` (its shuffling), so a resumed run is bit-identical to an
  uninterrupted one (with RecBole's default ``reproducibility: True``);
- the per-epoch training seconds and losses, so a resumed run reports every epoch it trained;
- a signature of the config and the settings it was computed from: a file written under other
  settings is not used; it is moved aside (never overwritten: it may hold hours of training), the
  warning names the settings that differ, and training starts afresh. One difference is not one:
  keys the file lacks whose value is the plugin's default for them (``properties/overall.yaml``, the
  model's file). Those are options added to the plugin after the file was written, and an option
  is added with a default that computes what the plugin computed before it, so a run upgraded
  mid-way resumes (logged) instead of losing its epochs.

A run that is killed loses at most the epoch in progress. If the resume file says training had
finished (last epoch, or early stopping), ``fit`` returns the saved best result without training
and without touching the best checkpoint (RecBole's own ``fit`` would overwrite it when
``start_epoch >= epochs``). The one exception is a run without validation (``eval_step: 0``,
recorded as ``validates``): there RecBole saves the checkpoint after this file, so a finished
state re-saves it from the file's weights, in case the kill fell between the two. The caller
removes the file once the run has been tested (:func:`discard`). Under DDP only rank 0 writes;
resuming DDP runs is not supported, nor pretraining stages (``PluginTrainerMixin.enable_resume``).
"""
import hashlib
import json
import os
import random
from logging import getLogger

import numpy as np
import torch

from recbole_linear import paths
from recbole_linear.property_files import load_model_properties, read_yaml

FORMAT = 1
# settings that may differ between the interrupted and the resuming process of the same run
_SIGNATURE_IGNORES = {
    "data_path", "checkpoint_dir", "saved_model_file", "resume_file", "device", "gpu_id", "use_gpu",
    "show_progress", "state", "log_wandb", "wandb_project", "worker", "local_rank", "nproc",
    "world_size", "ip", "port", "offset", "single_spec",
}


def resume_file_for(checkpoint_file):
    """``saved/run.pth`` -> ``saved/run.resume.pth`` (beside the run's best checkpoint)."""
    root, ext = os.path.splitext(checkpoint_file)
    return f"{root}.resume{ext or '.pth'}"


def config_settings(config):
    """The settings that decide what a run computes (paths and devices left out), as JSON text."""
    settings = {k: v for k, v in config.final_config_dict.items() if k not in _SIGNATURE_IGNORES}
    return json.dumps(settings, sort_keys=True, default=str)


def config_signature(config):
    """A hash of :func:`config_settings`."""
    return hashlib.sha1(config_settings(config).encode("utf-8")).hexdigest()


def _differing_keys(saved, now):
    """The keys whose values differ between two settings mappings (sorted)."""
    return sorted(k for k in saved.keys() | now.keys() if saved.get(k, "absent") != now.get(k, "absent"))


def settings_difference(saved_text, config, shown=6):
    """``key: saved -> now`` for the settings that differ ('absent' where one side lacks the key)."""
    saved, now = json.loads(saved_text), json.loads(config_settings(config))
    keys = _differing_keys(saved, now)
    text = ", ".join(f"{k}: {saved.get(k, 'absent')} -> {now.get(k, 'absent')}" for k in keys[:shown])
    return text + (f" and {len(keys) - shown} more" if len(keys) > shown else "")


def options_added_since(saved_text, config):
    """The keys by which ``config`` differs from the saved settings when every one of them is a key
    the file lacks and ``config`` leaves at the plugin's default for it; else []."""
    saved, now = json.loads(saved_text), json.loads(config_settings(config))
    defaults = {**read_yaml(paths.overall_property_file()), **load_model_properties(config["model"])}
    defaults = json.loads(json.dumps(defaults, sort_keys=True, default=str))  # as config_settings writes values
    keys = _differing_keys(saved, now)
    if all(k not in saved and k in defaults and defaults[k] == now.get(k, "absent") for k in keys):
        return keys
    return []


def set_aside_file_for(path, signature):
    """Where a resume file of other settings is kept: ``run.resume.pth`` -> ``run.resume.<hash>.pth``."""
    root, ext = os.path.splitext(path)
    return f"{root}.{signature[:8]}{ext or '.pth'}"


# --- random states --------------------------------------------------------------------------
def negative_generator(trainer, train_data):
    """The generator of a sampled loss's negatives (SSM, gBCE), or None."""
    sampled_loss_for = getattr(trainer, "sampled_loss_for", None)
    loss = sampled_loss_for(train_data) if sampled_loss_for is not None and train_data is not None else None
    return None if loss is None else loss.generator


def capture_rng_state(train_data=None, negatives=None):
    """Every random state a training epoch draws from (``negatives``: a sampled loss's generator)."""
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
        "train_generator": None,
    }
    generator = getattr(train_data, "generator", None)
    if isinstance(generator, torch.Generator):
        state["train_generator"] = generator.get_state()
    state["negatives"] = None if negatives is None else negatives.get_state()
    return state


def restore_rng_state(state, train_data=None, negatives=None):
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state["cuda"] is not None and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    generator = getattr(train_data, "generator", None)
    if state["train_generator"] is not None and isinstance(generator, torch.Generator):
        generator.set_state(state["train_generator"])
    if negatives is not None and state.get("negatives") is not None:
        negatives.set_state(state["negatives"])


# --- optimizers -----------------------------------------------------------------------------
def optimizers_of(trainer):
    """{attribute: optimizer} of every optimizer the trainer holds besides ``optimizer`` itself:
    RecVAE's trainer keeps ``optimizer_encoder`` and ``optimizer_decoder`` and points
    ``optimizer`` at one of them during an epoch, so the two must be saved by name."""
    return {
        name: value for name, value in vars(trainer).items()
        if name != "optimizer" and isinstance(value, torch.optim.Optimizer)
    }


def _current_optimizer_name(trainer):
    """The attribute ``trainer.optimizer`` is an alias of, or None if it is its own optimizer."""
    return next((name for name, opt in optimizers_of(trainer).items() if opt is trainer.optimizer), None)


def restore_optimizers(trainer, state):
    named = optimizers_of(trainer)
    for name, optimizer_state in state.get("optimizers", {}).items():
        named[name].load_state_dict(optimizer_state)
    current = state.get("current_optimizer")
    if current is not None:
        trainer.optimizer = named[current]  # as after the saved epoch (its state is loaded above)
    else:
        trainer.optimizer.load_state_dict(state["optimizer"])


# --- the resume file ------------------------------------------------------------------------
def training_finished(trainer, epoch_idx):
    """Whether ``fit`` ends after ``epoch_idx``: the last epoch, or early stopping triggered."""
    return epoch_idx + 1 >= trainer.epochs or trainer.cur_step > trainer.stopping_step


def save(trainer, epoch_idx, train_data, path, validates=True):
    """Write the state after epoch ``epoch_idx`` to ``path``, atomically. ``validates``: whether
    the run has validation (if not, RecBole's fit saves the checkpoint after every epoch)."""
    if not trainer.config["single_spec"] and trainer.config["local_rank"] != 0:
        return
    state = {
        "format": FORMAT,
        "config_signature": config_signature(trainer.config),
        "config_settings": config_settings(trainer.config),
        "epoch": epoch_idx,
        "finished": training_finished(trainer, epoch_idx),
        "validates": validates,
        "cur_step": trainer.cur_step,
        "best_valid_score": trainer.best_valid_score,
        "best_valid_result": trainer.best_valid_result,
        "saved_model_file": trainer.saved_model_file,
        "state_dict": trainer.model.state_dict(),
        "other_parameter": trainer.model.other_parameter(),
        "optimizer": trainer.optimizer.state_dict(),
        "optimizers": {name: opt.state_dict() for name, opt in optimizers_of(trainer).items()},
        "current_optimizer": _current_optimizer_name(trainer),
        "epoch_train_seconds": list(getattr(trainer, "epoch_train_seconds", [])),
        "train_loss_dict": dict(trainer.train_loss_dict),
        "rng": capture_rng_state(train_data, negative_generator(trainer, train_data)),
    }
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    temporary = f"{path}.tmp"
    torch.save(state, temporary, pickle_protocol=4)
    os.replace(temporary, path)  # a kill mid-write leaves the previous resume file intact


def load(trainer, path):
    """The resume state at ``path`` if it belongs to this run's config, else None (logged). A file of
    other settings is renamed out of the way first, so that this run's saves cannot overwrite it."""
    if not os.path.isfile(path):
        return None
    logger = getLogger()
    try:
        state = torch.load(path, map_location=trainer.device, weights_only=False)  # our own file
    except Exception as e:  # a truncated or foreign file: start afresh rather than fail the run
        logger.warning(f"ignoring unreadable resume file {path}: {type(e).__name__}: {e}")
        return None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        logger.warning(f"ignoring resume file {path}: not written by this version of recbole_linear")
        return None
    if state["config_signature"] == config_signature(trainer.config):
        return state
    settings = state.get("config_settings")
    added = options_added_since(settings, trainer.config) if settings else []
    if added:
        logger.info(
            f"resuming from {path}: written before the plugin had {', '.join(added)}, "
            "which this run leaves at their defaults"
        )
        return state
    differing = settings_difference(settings, trainer.config) if settings else None
    aside = set_aside_file_for(path, state["config_signature"])
    os.replace(path, aside)
    logger.warning(
        f"not resuming from {path}: it was written under other settings"
        f" ({differing or 'written before settings were recorded'}); kept as {aside}; training from the start"
    )
    return None


def restore(trainer, state, train_data):
    """Put ``trainer`` (and the random states) where the interrupted run stood after its epoch."""
    trainer.model.load_state_dict(state["state_dict"])
    trainer.model.load_other_parameter(state["other_parameter"])
    restore_optimizers(trainer, state)
    trainer.start_epoch = state["epoch"] + 1
    trainer.cur_step = state["cur_step"]
    trainer.best_valid_score = state["best_valid_score"]
    trainer.best_valid_result = state["best_valid_result"]
    trainer.saved_model_file = state["saved_model_file"]
    trainer.train_loss_dict = dict(state["train_loss_dict"])
    if hasattr(trainer, "epoch_train_seconds"):
        trainer.epoch_train_seconds = list(state["epoch_train_seconds"])
    restore_rng_state(state["rng"], train_data, negative_generator(trainer, train_data))


def discard(path):
    """Remove a run's resume file (the run has finished); no error if there is none."""
    for leftover in (path, f"{path}.tmp"):
        if os.path.exists(leftover):
            os.remove(leftover)


def resumable_fit(
    trainer, fit, path, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None
):
    """``fit`` (RecBole's ``Trainer.fit``), continued from ``path`` when it holds this run's state,
    writing the state there after every epoch."""
    validates = trainer.eval_step > 0 and bool(valid_data)  # RecBole's own test in fit
    state = load(trainer, path)
    if state is not None:
        restore(trainer, state, train_data)
        getLogger().info(f"Resuming from {path}: epoch {state['epoch']} done, training from epoch {trainer.start_epoch}")
        if state["finished"]:
            if saved and not state.get("validates", True):
                # without validation fit saves the checkpoint after this file: a kill in between left
                # the previous epoch's weights there
                trainer._save_checkpoint(state["epoch"], verbose=verbose)
            return trainer.best_valid_score, trainer.best_valid_result

    def save_unvalidated_epoch(epoch_idx):
        if not validates or (epoch_idx + 1) % trainer.eval_step != 0:  # validated epochs: after early stopping
            save(trainer, epoch_idx, train_data, path, validates)

    def save_then_callback(epoch_idx, valid_score):
        save(trainer, epoch_idx, train_data, path, validates)
        if callback_fn:
            callback_fn(epoch_idx, valid_score)

    trainer.after_epoch_fn = save_unvalidated_epoch
    try:
        return fit(
            train_data, valid_data, verbose=verbose, saved=saved, show_progress=show_progress,
            callback_fn=save_then_callback,
        )
    finally:
        trainer.after_epoch_fn = None
