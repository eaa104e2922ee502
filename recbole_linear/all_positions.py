"""Train every position of a window at once: the training regime of the official LRURec and SASRec code.

RecBole trains a sequential model on prefix-augmented samples: each training target is its own
sample whose input is the (at most ``MAX_ITEM_LIST_LENGTH``) items before it, and the model reads
only the last position. A causal model computes the representation of *every* prefix of a
sequence in one forward pass, so the same targets can be trained from one pass per window:

- per user, the training part of the sequence ``s_0 .. s_m`` (RecBole's training split: every
  item but the validation and test targets) has the targets ``s_1 .. s_m``, the same ones
  RecBole's prefixes train;
- the targets are cut, from the end backwards, into non-overlapping groups of at most
  ``L = MAX_ITEM_LIST_LENGTH``; a group ``s_{a+1} .. s_e`` is one window whose input is
  ``s_a .. s_{e-1}`` (right-padded to ``L``, RecBole's layout) and whose position ``t`` predicts
  ``s_{a+t+1}``;
- with ``train_window_overlap: c`` (default 0) the windows overlap by ``c`` items: every window
  but a user's oldest one starts with ``c`` positions that only give context (their targets are
  trained by the window before), so every target sees at least ``c`` earlier items;
- the loss is the mean over every real position of every window in the batch of the model's own
  loss (CE over all items, or BPR with one negative per position, sampled uniformly among the
  items other than the target, or the sampled softmax / gBCE of :mod:`recbole_linear.sampled_loss`
  over negatives shared by the batch), computed only at real positions, never at padding.

Differences, written down because they change what is trained:

- from RecBole's prefixes: a target near the start of a window sees only the items of its window
  (at position ``t``, ``t + 1`` items), where RecBole's prefix would give it up to ``L`` items;
  each target is still trained exactly once per epoch, and ``train_batch_size`` counts windows
  (up to ``L`` targets each), as the official batch of 128 sequences does;
- from the official LRURec code (``dataloader/sas.py``): it also trains the first item of each
  window from an empty context (the padding token predicts it), and it keeps only the last
  window of users shorter than ``2 L`` and drops the head before the last full window of longer
  users; here no target is predicted from nothing and no target is dropped.

Validation and test are RecBole's own (same split, dataloaders, evaluators, full ranking).

Supported models are the causal ones, where position ``t`` depends on positions ``<= t`` only:
LRURec, LinRec with ``linrec_causal: True``, and RecBole's SASRec and GRU4Rec, read without
editing or patching them (a forward hook on the submodule whose output holds every position; the
tests check, for each model, that the all-position loss equals the mean of RecBole's own
``calculate_loss`` over the prefixes, so a change in RecBole's forward would fail them).
"""
import numpy as np
import torch

from recbole.data.dataloader.abstract_dataloader import AbstractDataLoader
from recbole.data.interaction import Interaction
from recbole.utils import InputType

from recbole_linear.data import LeanSequentialDataset
from recbole_linear.errors import ConfigError
from recbole_linear.fused_cross_entropy import fused_cross_entropy
from recbole_linear.layers.mixed_precision import at_least_fp32
from recbole_linear.sampled_loss import output_weights, scored_by_output_weights

# RecBole model -> (submodule whose forward output holds every position, how to read that output)
RECBOLE_SEQUENCE_MODULES = {
    "SASRec": ("trm_encoder", lambda output: output[-1]),
    "GRU4Rec": ("dense", lambda output: output),
}
# models that can never train this way, and why (any other unsupported model gets a generic reason)
_NOT_CAUSAL = {
    "GLINTRU": "GLINT-RU (as officially defined) is not causal: its temporal Conv1d and its linear "
    "attention read later positions",
    "BERT4Rec": "BERT4Rec is bidirectional (it is trained by masked-item prediction)",
}
SUPPORTED = ("LRURec", "LinRec (with linrec_causal: True)", *RECBOLE_SEQUENCE_MODULES)


def target_field(config):
    """Name of the ``[windows, L]`` field holding each position's target item."""
    return f"target_{config['ITEM_ID_FIELD']}{config['LIST_SUFFIX']}"


def negative_field(config):
    """Name of the ``[windows, L]`` field holding each position's sampled negative (BPR)."""
    return f"{config['NEG_PREFIX']}{config['ITEM_ID_FIELD']}{config['LIST_SUFFIX']}"


def check_supported(config):
    """ConfigError (one line) if ``train_all_positions`` is on for a model that cannot train so."""
    if not config["train_all_positions"]:
        return
    model = config["model"]
    if model in _NOT_CAUSAL:
        reason = _NOT_CAUSAL[model]
    elif model == "LinRec" and not config["linrec_causal"]:
        reason = "LinRec without linrec_causal: True is not causal (every position attends to the whole sequence)"
    elif model in ("LRURec", "LinRec") or model in RECBOLE_SEQUENCE_MODULES:
        reason = None
    else:
        reason = f"it is implemented for {', '.join(SUPPORTED)}"
    if reason:
        raise ConfigError(f"train_all_positions cannot train {model}: {reason}")
    overlap = config["train_window_overlap"] or 0
    if overlap >= config["MAX_ITEM_LIST_LENGTH"]:
        raise ConfigError(
            f"train_window_overlap ({overlap}) must be smaller than MAX_ITEM_LIST_LENGTH ({config['MAX_ITEM_LIST_LENGTH']})"
        )
    neg_args = config["train_neg_sample_args"]
    if config["loss_type"] == "BPR" and neg_args is not None:
        if neg_args.get("distribution") != "uniform" or neg_args.get("sample_num") != 1 or neg_args.get("dynamic"):
            raise ConfigError(
                "train_all_positions with BPR samples one uniform negative per position; "
                f"train_neg_sample_args {dict(neg_args)} asks for something else"
            )
    if config["transform"] is not None:
        raise ConfigError(f"train_all_positions does not apply data transforms (transform: {config['transform']})")


def cut_windows(sequence, max_len, overlap=0):
    """``(inputs, targets)`` pairs covering the targets ``sequence[1:]`` once, from the end backwards.

    Each pair holds at most ``max_len`` positions; ``targets[t]`` is the item after ``inputs[t]``,
    or 0 where position ``t`` only gives context. With ``overlap = 0`` the windows do not overlap
    (the official cut); with ``overlap = c`` every window but the first starts with ``c`` positions
    of context whose targets belong to the window before, so every target sees at least ``c``
    earlier items (or all of them, near the start of the sequence). A sequence of fewer than 2
    items has no target and gives no window.
    """
    sequence = np.asarray(sequence)
    trained_per_window = max_len - overlap
    windows = []
    end = len(sequence) - 1  # the last target of the next window (cut from the end backwards)
    while end > 0:
        first = max(1, end - trained_per_window + 1)  # this window trains the targets sequence[first .. end]
        start = max(0, end - max_len)  # its inputs are sequence[start .. end - 1]
        targets = sequence[start + 1 : end + 1].copy()
        targets[: first - start - 1] = 0  # context only: trained by the window before
        windows.append((sequence[start:end], targets))
        end = first - 1
    return windows[::-1]


def training_sequences(dataset):
    """Per user, the training sequence ``s_0 .. s_m`` from RecBole's prefix-augmented training split.

    RecBole's training rows of a user are its prefixes in time order: the first has the input
    ``[s_0]`` and the target ``s_1``, each next one's target is the item after the previous one's.
    Returns ``(user_ids, sequences)``. Raises if the rows are not in that layout, rather than train
    on shuffled sequences.
    """
    inter = dataset.inter_feat
    users = inter[dataset.uid_field].numpy()
    targets = inter[dataset.iid_field].numpy()
    item_lists = inter[dataset.item_id_list_field].numpy()
    lengths = inter[dataset.item_list_length_field].numpy()
    if len(users) == 0:
        return np.zeros(0, dtype=np.int64), []
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    if len(np.unique(users[starts])) != len(starts):
        raise RuntimeError("train_all_positions: RecBole's training rows of a user are not contiguous")
    last_inputs = item_lists[np.arange(len(users)), lengths - 1]
    follows = np.r_[False, last_inputs[1:] == targets[:-1]]
    follows[starts] = lengths[starts] == 1
    if not follows.all():
        raise RuntimeError("train_all_positions: RecBole's training rows are not the prefixes of each user in order")
    ends = np.r_[starts[1:], len(users)]
    sequences = [np.r_[item_lists[a, 0], targets[a:b]] for a, b in zip(starts, ends)]
    return users[starts], sequences


def build_windows(dataset, max_len, overlap=0):
    """All training windows of ``dataset`` as right-padded arrays (see :func:`cut_windows`).

    Returns ``(user_ids [W], inputs [W, L], targets [W, L], lengths [W])``: padding id 0 in
    ``inputs`` and ``targets``, and target 0 at the positions that only give context.
    """
    user_ids, sequences = training_sequences(dataset)
    pieces = [
        (user, inputs, targets)
        for user, seq in zip(user_ids, sequences)
        for inputs, targets in cut_windows(seq, max_len, overlap)
    ]
    n_windows = len(pieces)
    window_users = np.zeros(n_windows, dtype=np.int64)
    window_inputs = np.zeros((n_windows, max_len), dtype=np.int64)
    window_targets = np.zeros((n_windows, max_len), dtype=np.int64)
    window_lengths = np.zeros(n_windows, dtype=np.int64)
    for w, (user, inputs, targets) in enumerate(pieces):
        window_users[w] = user
        window_inputs[w, : len(inputs)] = inputs
        window_targets[w, : len(targets)] = targets
        window_lengths[w] = len(inputs)
    return window_users, window_inputs, window_targets, window_lengths


def window_bounds(sequence_lengths, max_len, overlap=0):
    """:func:`cut_windows` for many sequences at once, as positions in each sequence.

    ``sequence_lengths[u]`` is the number of items of sequence ``u`` (at least 2). Returns
    ``(sequence, start, length, context)`` per window, the windows of each sequence oldest first:
    its inputs are the items ``start .. start + length - 1`` of its sequence, position ``t``
    predicts item ``start + t + 1``, and its first ``context`` positions only give context.
    """
    targets = np.asarray(sequence_lengths, dtype=np.int64) - 1
    trained_per_window = max_len - overlap
    n_windows = -(-targets // trained_per_window)
    sequence = np.repeat(np.arange(len(targets)), n_windows)
    index_in_sequence = np.arange(len(sequence)) - np.repeat(np.cumsum(n_windows) - n_windows, n_windows)
    # the last target of each window; cut_windows walks these from the end backwards
    end = targets[sequence] - (n_windows[sequence] - 1 - index_in_sequence) * trained_per_window
    first = np.maximum(1, end - trained_per_window + 1)
    start = np.maximum(0, end - max_len)
    return sequence, start, end - start, first - start - 1


class LeanWindows:
    """The training windows of a :class:`~recbole_linear.data.LeanSequentialDataset`, each kept as
    four integers (user, start in the sequence store, length, context positions) and gathered
    into the same ``[windows, L]`` fields as :func:`build_windows` writes out, when a batch is drawn."""

    def __init__(self, dataset, max_len, overlap, target_field_name):
        users, sequence_starts, n_targets = dataset.training_spans()
        sequence, start, length, context = window_bounds(n_targets + 1, max_len, overlap)
        self.users = torch.from_numpy(users[sequence])
        self.starts = torch.from_numpy(sequence_starts[sequence] + start)
        self.lengths = torch.from_numpy(length)
        self.context = torch.from_numpy(context)
        self.n_targets = int(n_targets.sum())
        self.items = dataset.sequence_feat[dataset.iid_field]
        self.max_len = max_len
        self.fields = (dataset.uid_field, dataset.item_id_list_field, target_field_name, dataset.item_list_length_field)

    def __len__(self):
        return len(self.users)

    def __getitem__(self, index):
        index = torch.as_tensor(index, dtype=torch.long)
        starts, lengths, context = self.starts[index], self.lengths[index], self.context[index]
        offsets = torch.arange(self.max_len)
        real = offsets < lengths.unsqueeze(1)
        trained = real & (offsets >= context.unsqueeze(1))
        positions = starts.unsqueeze(1) + offsets
        last = len(self.items) - 1  # positions past a short window's end may run off the store
        inputs = torch.where(real, self.items[positions.clamp(max=last)], 0)
        targets = torch.where(trained, self.items[(positions + 1).clamp(max=last)], 0)
        user_field, inputs_field, targets_field, length_field = self.fields
        return Interaction(
            {user_field: self.users[index], inputs_field: inputs, targets_field: targets, length_field: lengths}
        )


class AllPositionTrainDataLoader(AbstractDataLoader):
    """Training batches of ``train_batch_size`` windows, every position a target.

    Built from RecBole's training dataset (the one ``data_preparation`` returns inside its
    training dataloader), so the split is RecBole's. Under DDP, RecBole's ``DistributedSampler``
    deals the windows out to the ranks without overlap. For BPR, each batch samples one negative
    per real position from the loader's generator (seeded by ``seed``, as RecBole's shuffling).
    """

    def __init__(self, config, dataset, shuffle=True):
        self.max_len = config["MAX_ITEM_LIST_LENGTH"]
        self.overlap = config["train_window_overlap"] or 0
        if isinstance(dataset, LeanSequentialDataset):
            self.windows = LeanWindows(dataset, self.max_len, self.overlap, target_field(config))
            self.n_targets = self.windows.n_targets
        else:  # RecBole's expanded dataset: every window written out
            users, inputs, targets, lengths = build_windows(dataset, self.max_len, self.overlap)
            self.windows = Interaction(
                {
                    dataset.uid_field: torch.from_numpy(users),
                    dataset.item_id_list_field: torch.from_numpy(inputs),
                    target_field(config): torch.from_numpy(targets),
                    dataset.item_list_length_field: torch.from_numpy(lengths),
                }
            )
            self.n_targets = int((targets != 0).sum())
        self.sample_size = len(self.windows)
        self.n_items = dataset.item_num
        self.sample_negatives = config["MODEL_INPUT_TYPE"] == InputType.PAIRWISE
        self._target_field = target_field(config)
        self._negative_field = negative_field(config)
        self._ce_block_rows = config["ce_block_rows"] or 0
        super().__init__(config, dataset, None, shuffle=shuffle)

    def _init_batch_size_and_step(self):
        batch_size = self.config["train_batch_size"]
        self.step = batch_size
        self.set_batch_size(batch_size)

    def collate_fn(self, index):
        batch = self.windows[np.asarray(index)]
        if self.sample_negatives:
            batch.update(Interaction({self._negative_field: self._negatives(batch[self._target_field])}))
        return batch

    def _negatives(self, targets):
        """One uniform item per trained position, never the position's target (0 elsewhere)."""
        negatives = torch.randint(1, self.n_items, targets.shape, generator=self.generator)
        clash = negatives == targets
        while clash.any():
            negatives[clash] = torch.randint(1, self.n_items, (int(clash.sum()),), generator=self.generator)
            clash = negatives == targets
        return negatives.masked_fill(targets == 0, 0)

    def loss_function(self, model, sampled_loss=None):
        """The per-batch loss the trainer calls instead of ``model.calculate_loss`` (``sampled_loss``:
        the run's SSM/gBCE loss, :class:`recbole_linear.sampled_loss.SampledLoss`, if it has one)."""
        return lambda interaction: all_position_loss(
            model, interaction, self._target_field, self._negative_field, sampled_loss, self._ce_block_rows
        )


def sequence_output(model, item_seq, item_seq_len):
    """Every position's representation, ``[B, L', H]`` with ``L' <= L`` (columns past the longest row may be cut).

    Plugin models provide ``sequence_output``; for RecBole's causal models the output of the
    submodule named in :data:`RECBOLE_SEQUENCE_MODULES` is captured during their own ``forward``.
    """
    if hasattr(model, "sequence_output"):
        return model.sequence_output(item_seq, item_seq_len)
    module_name, read = RECBOLE_SEQUENCE_MODULES[type(model).__name__]
    captured = []
    handle = getattr(model, module_name).register_forward_hook(lambda module, args, output: captured.append(output))
    try:
        model.forward(item_seq, item_seq_len)
    finally:
        handle.remove()
    return read(captured[-1])


def full_scores(model, hidden):
    """Scores of every item, ``[N, n_items]``, as the model's ``full_sort_predict`` computes them."""
    if hasattr(model, "scores_from_output"):
        return model.scores_from_output(hidden)
    return hidden @ model.item_embedding.weight.t()


def item_scores(model, hidden, items):
    """Score of one item per row, ``[N]``, as the model's ``predict`` computes it."""
    if hasattr(model, "item_scores"):
        return model.item_scores(hidden, items)
    return (hidden * model.item_embedding(items)).sum(dim=-1)


def all_position_loss(model, interaction, targets_field, negatives_field=None, sampled_loss=None, ce_block_rows=0):
    """The model's loss (CE or BPR, or the run's ``sampled_loss``) averaged over every position of
    the batch's windows that has a target (not padding, not context only). CE with
    ``ce_block_rows > 0`` is computed block by block of that many positions, without the full
    logit matrix (:mod:`recbole_linear.fused_cross_entropy`), for models scored as ``h . E[i] + b[i]``."""
    item_seq = interaction[model.ITEM_SEQ]
    item_seq_len = interaction[model.ITEM_SEQ_LEN]
    output = sequence_output(model, item_seq, item_seq_len)
    width = output.size(1)
    targets = interaction[targets_field][:, :width]
    real = torch.arange(width, device=item_seq.device).unsqueeze(0) < item_seq_len.unsqueeze(1)
    trained = real & (targets != 0)
    hidden = output[trained]  # [N H]: no logit is computed at padding or context positions
    targets = targets[trained]
    if sampled_loss is not None:
        return sampled_loss(model, hidden, targets)
    if model.loss_type == "BPR":
        negatives = interaction[negatives_field][:, :width][trained]
        return model.loss_fct(item_scores(model, hidden, targets), item_scores(model, hidden, negatives))
    if ce_block_rows and scored_by_output_weights(type(model).__name__):
        weight, bias = output_weights(model)
        return fused_cross_entropy(hidden, weight, bias, targets, ce_block_rows)
    # the logits may come from a bf16/fp16 product (precision); the softmax and its mean are fp32
    logits = full_scores(model, hidden)
    return model.loss_fct(at_least_fp32(logits), targets)
