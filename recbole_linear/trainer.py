"""RecBole trainers that work on torch >= 2.6 and honour a few plugin hooks.

torch 2.6 made ``torch.load(weights_only=True)`` the default; RecBole 1.2.1's checkpoints hold a
pickled ``Config``, so ``Trainer.evaluate(load_best_model=True)`` and ``resume_checkpoint`` fail
with "Weights only load failed". The mixin below loads *the run's own checkpoint files* with
``weights_only=False`` (they were written by this process or a run the user started) and leaves
``torch.load`` untouched everywhere else.

It also:
- builds the optimizer from ``model.optimizer_param_groups(weight_decay)`` when the model has it
  (LRURec's official no-decay rule for biases and LayerNorms), with ``optimizer_eps`` when set;
- names the checkpoint uniquely per run when the config does not (:func:`unique_checkpoint_file`);
- under DDP, names the checkpoint once (``saved_model_file`` from the config, shared by all ranks)
  and waits for rank 0 to finish writing it before any rank reads it;
- records each epoch's training time in ``epoch_train_seconds``;
- after :meth:`PluginTrainerMixin.enable_resume`, continues an interrupted ``fit`` from its resume
  file and rewrites that file after every epoch (:mod:`recbole_linear.resume`; not under DDP or
  in a pretraining stage);
- with ``precision: bf16 | fp16``, runs each training loss and each evaluation batch under
  autocast (:mod:`recbole_linear.precision`); fp16 scales the loss and clips the unscaled
  gradients (RecBole clips before unscaling); ``flush_denormal`` sets the CPU's denormal mode;
- with ``eval_mask_history: True``, ranks a sequential model's full-sort scores without the items of
  each user's input window, the official LRURec evaluation protocol (RecBole masks only id 0 for
  sequential models; for other models it already masks the user's whole history).
"""
import os
import uuid
from time import time

import recbole.trainer
import torch
from torch.nn.utils import clip_grad_norm_
from recbole.data.dataloader import FullSortEvalDataLoader
from recbole.trainer import Trainer
from recbole.utils import ModelType, get_local_time
from recbole.utils import get_trainer as recbole_get_trainer

from recbole_linear import precision, resume, sampled_loss
from recbole_linear.all_positions import AllPositionTrainDataLoader
from recbole_linear.chunked_eval import chunked_full_sort
from recbole_linear.distributed_trainer import trainer_bases
from recbole_linear.errors import ConfigError
from recbole_linear.recbole_compat import RecBoleEntryTrainerMixin, recbole_warnings_filtered

_CLASS_CACHE = {}


def load_checkpoint(path, map_location=None):
    """Read a RecBole checkpoint (it pickles the run's Config, so weights_only must be off)."""
    return torch.load(path, map_location=map_location, weights_only=False)


def unique_checkpoint_file(checkpoint_dir, model_name):
    """``<dir>/<model>-<RecBole's local time>-<pid>-<8 random hex>.pth``: RecBole's name (model and
    second) made unique per run, so that runs started in the same second never share a file."""
    return os.path.join(checkpoint_dir, f"{model_name}-{get_local_time()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.pth")


def mask_input_window(scores, item_seq):
    """Set ``scores[u, i] = -inf`` for every item ``i`` in row ``u`` of ``item_seq`` (in place).

    ``item_seq`` is the padded input window RecBole feeds the model (``[users, max_len]``, padding
    id 0), so the padding item is masked too, as RecBole's own evaluation does. The official
    LRURec trainer (``trainer/lru.py``) does the same with -1e9 before ranking.
    """
    return scores.scatter_(1, item_seq.to(scores.device), float("-inf"))


class PluginTrainerMixin:
    def __init__(self, config, model):
        super().__init__(config, model)
        self.mask_history = bool(config["eval_mask_history"])
        if self.mask_history and not hasattr(model, "ITEM_SEQ"):
            raise ConfigError(
                f"eval_mask_history applies to sequential models; {type(model).__name__} is not one "
                "(RecBole already excludes the whole history of general models)"
            )
        if config["saved_model_file"]:
            self.saved_model_file = config["saved_model_file"]
            checkpoint_dir = os.path.dirname(self.saved_model_file)
            if checkpoint_dir:
                os.makedirs(checkpoint_dir, exist_ok=True)
        else:  # RecBole names it by the second: two runs started together would share one file
            self.saved_model_file = unique_checkpoint_file(self.checkpoint_dir, config["model"])
        self.epoch_train_seconds = []
        self._sampled_loss = None
        self._chunked_eval_logged = False
        torch.set_flush_denormal(bool(config["flush_denormal"]))
        self.precision_dtype = precision.resolve_dtype(config, self.logger)
        if self.precision_dtype is not torch.float32:
            self.logger.info(f"precision {config['precision']}: training losses and evaluation batches under torch.autocast({self.precision_dtype})")
        if self.precision_dtype is torch.float16:
            self._scale_fp16_gradients()

    def _scale_fp16_gradients(self):
        """fp16: RecBole's GradScaler on, and clipping moved to just before the optimizer step,
        where ``scaler.step`` has unscaled the gradients (RecBole clips the scaled ones)."""
        self.enable_scaler = True
        clip_args, self.clip_grad_norm = self.clip_grad_norm, None
        if clip_args:

            def clip_before_step(optimizer, args, kwargs):
                clip_grad_norm_(self.model.parameters(), **clip_args)  # returns the norm; a hook must return None

            self.optimizer.register_step_pre_hook(clip_before_step)

    def _autocast(self):
        return precision.autocast(self.device.type, self.precision_dtype)

    def _in_precision(self, loss_func):
        """``loss_func`` run under the run's autocast (itself when fp32)."""
        if self.precision_dtype is torch.float32:
            return loss_func

        def loss_in_precision(interaction):
            with self._autocast():
                return loss_func(interaction)

        return loss_in_precision

    def sampled_loss_for(self, train_data):
        """The run's SSM/gBCE loss (built once, from the training targets' counts), or None."""
        if not sampled_loss.is_sampled(self.config["loss_type"]):
            return None
        if self._sampled_loss is None:
            if self.config[sampled_loss.RESOLVED_NEGATIVES_KEY] is None:
                raise ConfigError(
                    f"loss_type {self.config['loss_type']} needs recbole-linear's config (create_config or "
                    "run_recbole_linear), which takes its negatives out of RecBole's dataloaders"
                )
            counts = sampled_loss.training_item_counts(train_data._dataset)
            sampled_loss.check_catalogue(self.config, len(counts))
            self._sampled_loss = sampled_loss.SampledLoss(self.config, counts)
            self.logger.info(sampled_loss.expected_cost_note(self._sampled_loss))
        return self._sampled_loss

    def _build_optimizer(self, **kwargs):
        if "params" not in kwargs and hasattr(self.model, "optimizer_param_groups"):
            weight_decay = kwargs.get("weight_decay", self.weight_decay) or 0.0
            kwargs["params"] = self.model.optimizer_param_groups(weight_decay)
        optimizer = super()._build_optimizer(**kwargs)
        eps = self.config["optimizer_eps"]
        if eps is not None:
            for group in optimizer.param_groups:
                if "eps" in group:
                    group["eps"] = eps
        return optimizer

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        if loss_func is None:
            loss = self.sampled_loss_for(train_data)
            if isinstance(train_data, AllPositionTrainDataLoader):
                loss_func = train_data.loss_function(self.model, loss)
            elif loss is not None:
                loss_func = sampled_loss.last_position_loss(self.model, loss)
        loss_func = self._in_precision(loss_func or self.model.calculate_loss)
        start = time()
        with recbole_warnings_filtered():  # RecBole's GradScaler FutureWarning
            loss = super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)
        self.epoch_train_seconds.append(time() - start)
        return loss

    after_epoch_fn = None  # set by resume.resumable_fit for the length of one fit: called after every epoch

    def _add_train_loss_to_tensorboard(self, epoch_idx, losses, tag="Loss/Train"):
        # RecBole's fit calls this once per epoch, after it has recorded and logged the epoch's loss
        # and before it validates: the one place where a hook sees every epoch, validated or not.
        # (PretrainTrainer.pretrain calls it too; enable_resume refuses pretraining stages.)
        super()._add_train_loss_to_tensorboard(epoch_idx, losses, tag)
        if self.after_epoch_fn is not None:
            self.after_epoch_fn(epoch_idx)

    def _wait_for_checkpoint(self):
        if not self.config["single_spec"] and torch.distributed.is_initialized():
            torch.distributed.barrier()

    def _full_sort_batch_eval(self, batched_data):
        return self._scored_in_precision(self._full_sort_scores, batched_data)

    def _neg_sample_batch_eval(self, batched_data):
        return self._scored_in_precision(super()._neg_sample_batch_eval, batched_data)

    def _scored_in_precision(self, score_batch, batched_data):
        """``score_batch(batched_data)`` under the run's autocast, its scores ranked and collected in fp32."""
        if self.precision_dtype is torch.float32:
            return score_batch(batched_data)
        with self._autocast():
            interaction, scores, positive_u, positive_i = score_batch(batched_data)
        return interaction, scores.float(), positive_u, positive_i

    def _full_sort_scores(self, batched_data):
        chunk_size = self.config["eval_item_chunk_size"]
        if chunk_size and self.tot_item_num > chunk_size:
            chunked = chunked_full_sort(self, batched_data, chunk_size)
            if chunked is not None:
                return chunked
        interaction, scores, positive_u, positive_i = super()._full_sort_batch_eval(batched_data)
        if self.mask_history:
            mask_input_window(scores, interaction[self.model.ITEM_SEQ])
        return interaction, scores, positive_u, positive_i

    @torch.no_grad()
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if not eval_data:
            return None
        if self.mask_history and not isinstance(eval_data, FullSortEvalDataLoader):
            raise ConfigError("eval_mask_history needs full-ranking evaluation (eval_args: {mode: full})")
        if load_best_model:
            checkpoint_file = model_file or self.saved_model_file
            self._wait_for_checkpoint()
            checkpoint = load_checkpoint(checkpoint_file, map_location=self.device)
            self.model.load_state_dict(checkpoint["state_dict"])
            self.model.load_other_parameter(checkpoint.get("other_parameter"))
            self.logger.info(f"Loading model structure and parameters from {checkpoint_file}")
        return super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)

    def resume_checkpoint(self, resume_file):
        resume_file = str(resume_file)
        self.saved_model_file = resume_file
        checkpoint = load_checkpoint(resume_file, map_location=self.device)
        self.start_epoch = checkpoint["epoch"] + 1
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        if checkpoint["config"]["model"].lower() != self.config["model"].lower():
            self.logger.warning(
                "Architecture configuration given in config file is different from that of checkpoint. "
                "This may yield an exception while state_dict is being loaded."
            )
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.load_other_parameter(checkpoint.get("other_parameter"))
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")

    # --- surviving interruption (recbole_linear.resume) ----------------------------------------
    resume_file = None  # set by enable_resume: fit then continues from it and rewrites it after every epoch

    def enable_resume(self, resume_file):
        """Make ``fit`` resumable: continue from ``resume_file`` when it holds this run's state, and
        write the state there after every epoch (see :mod:`recbole_linear.resume`)."""
        if not self.config["single_spec"]:
            raise ConfigError("resuming an interrupted run is not supported under DDP")
        if not isinstance(self, Trainer):  # e.g. the decision-tree trainers: no epochs to resume
            self.logger.warning(f"{type(self).__name__} cannot resume an interrupted run; training from the start")
            return False
        if getattr(self.model, "train_stage", "finetune") != "finetune":
            # PretrainTrainer.pretrain counts pretrain_epochs and saves its own files: not fit's loop
            stage = self.model.train_stage
            self.logger.warning(f"a {stage} stage cannot resume an interrupted run; training from the start")
            return False
        self.resume_file = str(resume_file)
        return True

    def fit(self, train_data, *args, **kwargs):
        if self.resume_file is None:
            return super().fit(train_data, *args, **kwargs)
        return resume.resumable_fit(self, super().fit, self.resume_file, train_data, *args, **kwargs)


def get_trainer(model_type, model_name):
    """The trainer RecBole would pick for this model, with :class:`PluginTrainerMixin` on top."""
    base = recbole_get_trainer(model_type, model_name)
    if issubclass(base, PluginTrainerMixin):  # a plugin model's trainer, registered under RecBole's names
        return base
    if base not in _CLASS_CACHE:
        # trainer_bases: RecBole's trainer between the DDP mixin and the DDP wrap (recbole_linear.distributed_trainer)
        _CLASS_CACHE[base] = type(f"Plugin{base.__name__}", (PluginTrainerMixin, *trainer_bases(base)), {})
    return _CLASS_CACHE[base]


def register_trainer(model_name):
    """Expose ``recbole.trainer.<model_name>Trainer``: RecBole's ``get_trainer`` looks that name up
    first (see :mod:`recbole_linear.recbole_compat`); an addition under a name RecBole did not have."""
    plugin_trainer = get_trainer(ModelType.SEQUENTIAL, model_name)
    trainer_class = type(f"{model_name}Trainer", (RecBoleEntryTrainerMixin, plugin_trainer), {})
    setattr(recbole.trainer, trainer_class.__name__, trainer_class)
    return trainer_class
