"""The trainer under DDP: the model wrap, exact evaluation and the same optimisation step as one process.

RecBole's trainer under DDP (``AbstractTrainer.__init__``, ``Trainer.evaluate`` / ``_map_reduce``)
assumes GPUs and averages metrics approximately; a plugin trainer composes the classes below
(:func:`trainer_bases`, used by :func:`recbole_linear.trainer.get_trainer`):

- :class:`DistributedModelTrainer` sits below RecBole's trainer in the MRO and wraps the model in
  ``DistributedDataParallel`` with ``device_ids`` only on a GPU (SyncBatchNorm only on a GPU too);
- :class:`DistributedTrainerMixin`: exact evaluation (:class:`ExactDistributedCollector` gathers the
  collector's per-sample rows of every rank, drops the sampler's padding repeats, puts them back in
  the one-process order and lets RecBole's evaluator compute the metrics once), and a training step
  that equals one process's step on the union of the ranks' batches (:class:`ShardedLoss`).

In one process (``single_spec``) none of this changes anything.
"""
from logging import getLogger

import torch
import torch.distributed as dist
from recbole.evaluator import Collector
from recbole.trainer import AbstractTrainer
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler

from recbole_linear.all_positions import AllPositionTrainDataLoader

# the collector's keys that hold one row per evaluated sample (the ones its get_data_struct resets)
PER_SAMPLE_KEYS = ("rec.topk", "rec.meanrank", "rec.score", "rec.items", "data.label")


def wrap_model(model, config):
    """``DistributedDataParallel`` around ``model``: ``device_ids`` on a GPU only (CPU modules take none)."""
    device = torch.device(config["device"])
    if device.type == "cuda":
        return DistributedDataParallel(model, device_ids=[device.index])
    return DistributedDataParallel(model)


class DistributedModelTrainer(AbstractTrainer):
    """Replaces ``AbstractTrainer.__init__`` below RecBole's trainer in the MRO (see :func:`trainer_bases`).

    RecBole's version passes ``device_ids=[local_rank]``, which DDP rejects for a CPU module, and
    converts BatchNorm layers to SyncBatchNorm, which runs on GPUs only: on CPUs each rank keeps its
    own BatchNorm statistics (none of the sequential models here has BatchNorm).
    """

    def __init__(self, config, model):
        self.config = config
        self.model = model
        if not config["single_spec"]:
            if torch.device(config["device"]).type == "cuda":
                self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            self.distributed_model = wrap_model(self.model, config)


def trainer_bases(base):
    """The classes a plugin trainer composes after its own mixins: the DDP mixin, RecBole's
    trainer ``base`` and, below it, :class:`DistributedModelTrainer`."""
    if issubclass(base, AbstractTrainer) and base is not AbstractTrainer:
        return (DistributedTrainerMixin, base, DistributedModelTrainer)
    return (DistributedTrainerMixin, base)


def rank_sample_index(loader):
    """The sample indices this rank's ``DistributedSampler`` gives ``loader``, in order (None without one)."""
    sampler = getattr(loader, "sampler", None)
    return torch.as_tensor(list(sampler), dtype=torch.long) if isinstance(sampler, DistributedSampler) else None


def merge_rank_rows(pieces):
    """One ``{key: rows}`` in sample order from every rank's ``(sample_index, {key: rows})``.

    Each sample is kept once (the first rank's copy): the ``DistributedSampler`` pads the ranks
    to equal length by repeating samples, and a repeated user must not be counted twice.
    """
    index = torch.cat([sample_index for sample_index, _ in pieces])
    order = torch.sort(index, stable=True).indices
    sorted_index = index[order]
    first = torch.ones_like(sorted_index, dtype=torch.bool)
    first[1:] = sorted_index[1:] != sorted_index[:-1]
    keep = order[first]
    keys = pieces[0][1].keys()
    return {key: torch.cat([rows[key] for _, rows in pieces])[keep] for key in keys}


class ExactDistributedCollector(Collector):
    """RecBole's ``Collector`` whose data are those of every rank, each sample once, in sample order.

    The trainer sets ``sample_index`` (this rank's samples of the loader being evaluated) before
    an evaluation; ``get_data_struct`` then gathers the per-sample rows of all ranks, so RecBole's
    evaluator computes the metrics of the whole evaluation set, once, identically on every rank.
    This holds when each sample is one row (full ranking, sampled ranking: one user per sample;
    value metrics without negative sampling); otherwise ``gathered`` stays False and the trainer
    falls back to RecBole's approximate average.
    """

    def __init__(self, config):
        super().__init__(config)
        self.sample_index = None
        self.gathered = False

    def get_data_struct(self):
        struct = super().get_data_struct()
        self.gathered = False
        if self.sample_index is not None:
            rows = {key: struct[key] for key in PER_SAMPLE_KEYS if key in struct}
            one_row_per_sample = all(len(value) == len(self.sample_index) for value in rows.values())
            pieces = [None] * dist.get_world_size()
            dist.all_gather_object(pieces, (self.sample_index, rows, one_row_per_sample))
            if all(piece[2] for piece in pieces):
                for key, value in merge_rank_rows([piece[:2] for piece in pieces]).items():
                    struct[key] = value
                self.gathered = True
        return struct


def target_count(interaction, loader, config):
    """How many targets the batch's loss averages over: real positions of all-position windows, else rows."""
    if isinstance(loader, AllPositionTrainDataLoader):
        return int(interaction[config["ITEM_LIST_LENGTH_FIELD"]].sum())
    return len(interaction)


class ShardedLoss:
    """A rank's loss, scaled so that DDP's gradient average is one process's gradient on the
    union of the ranks' batches.

    RecBole's losses are means over the batch and DDP averages the ranks' gradients, which equals
    the mean over the union only when every rank's batch holds as many targets. The ranks' batches
    hold equal numbers of samples, but an all-position window holds 1..L targets, and the
    ``DistributedSampler`` pads the ranks with repeats of up to ``world_size - 1`` samples. So:
    the repeat, the last sample of the epoch on the ranks that got one, is cut from the batch (one
    process trains each sample once per epoch), and the rank's loss is weighted by
    ``world_size * its targets / all ranks' targets`` (an all-reduce of one number per step). The
    weights average to 1, so a per-batch constant in the loss (a regulariser) keeps its weight.
    A repeat cannot be cut when a sample gives several rows (pointwise negative sampling); it is
    then trained twice, as in RecBole.
    """

    def __init__(self, loss_func, loader, config):
        self.loss_func = loss_func
        self.loader = loader
        self.config = config
        self.device = torch.device(config["device"])
        self.world_size = dist.get_world_size()
        self.n_batches = len(loader)
        sampler = loader.sampler
        self.samples = sampler.num_samples
        self.last_is_repeat = sampler.rank + (sampler.num_samples - 1) * sampler.num_replicas >= len(sampler.dataset)
        self.last_batch_samples = self.samples - (self.n_batches - 1) * loader.step
        self.batch_idx = 0

    def __call__(self, interaction):
        self.batch_idx += 1
        keep_weight = True
        if self.batch_idx == self.n_batches and self.last_is_repeat and len(interaction) == self.last_batch_samples:
            if len(interaction) > 1:
                interaction = interaction[: len(interaction) - 1]
            else:
                keep_weight = False  # the batch is only the repeat: its loss counts for nothing
        count = float(target_count(interaction, self.loader, self.config)) if keep_weight else 0.0
        total = torch.tensor([count], device=self.device)
        dist.all_reduce(total)
        weight = self.world_size * count / max(total.item(), 1.0)
        losses = self.loss_func(interaction)
        if isinstance(losses, tuple):
            return tuple(loss * weight for loss in losses)
        return losses * weight


class DistributedTrainerMixin:
    """DDP behaviour of a plugin trainer; in one process it changes nothing."""

    def __init__(self, config, model):
        super().__init__(config, model)
        self._first_epoch_seen = False
        if not config["single_spec"]:
            self.eval_collector = ExactDistributedCollector(config)
            self.logger.info(world_batch_note(config))

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        if self.config["single_spec"]:
            return super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)
        if not self._first_epoch_seen:
            self._seed_rank_randomness(train_data)
            self._first_epoch_seen = True
        loss_func = loss_func or self.model.calculate_loss
        if isinstance(getattr(train_data, "sampler", None), DistributedSampler):
            loss_func = ShardedLoss(loss_func, train_data, self.config)
        return super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)

    def _seed_rank_randomness(self, train_data):
        """The epoch order from the run's seed, and per-rank negatives in the all-position loader.

        ``DistributedSampler`` shuffles with its own seed (0), whatever the run's ``seed``;
        the all-position loader draws its BPR negatives from a generator seeded alike on every
        rank, so without this all ranks would draw the same negatives.
        """
        sampler = getattr(train_data, "sampler", None)
        if isinstance(sampler, DistributedSampler):
            sampler.seed = self.config["seed"]
        if isinstance(train_data, AllPositionTrainDataLoader):
            train_data.generator.manual_seed(self.config["seed"] + dist.get_rank())

    @torch.no_grad()
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if self.config["single_spec"] or not eval_data:
            return super().evaluate(eval_data, load_best_model, model_file, show_progress)
        self.eval_collector.sample_index = rank_sample_index(eval_data)
        try:
            return super().evaluate(eval_data, load_best_model, model_file, show_progress)
        finally:
            self.eval_collector.sample_index = None

    def _map_reduce(self, result, num_sample):
        if self.eval_collector.gathered:
            return result  # already the metrics of the whole evaluation set
        getLogger().warning(
            "this evaluation gives several rows per sample: its DDP metrics are RecBole's approximate "
            "average over ranks, not those of one process"
        )
        return super()._map_reduce(result, num_sample)


def world_batch_note(config):
    """A line for the log: the per-rank and global batch sizes RecBole's loaders use under DDP."""
    per_rank = max(1, config["train_batch_size"] // config["world_size"])
    return (
        f"DDP: {config['world_size']} processes ({config['ddp_backend_used']}), train batch {per_rank} per process, "
        f"{per_rank * config['world_size']} in all (train_batch_size {config['train_batch_size']})"
    )

