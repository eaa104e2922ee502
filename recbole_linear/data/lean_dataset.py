"""A sequential dataset that stores each interaction once.

RecBole's ``SequentialDataset.data_augmentation`` turns every interaction but a user's first into
a sample whose input, the up to ``MAX_ITEM_LIST_LENGTH`` items before it, is written out as a row
of length ``L`` (``item_id_list``, and one such list per other interaction field: ``timestamp_list``
...). That is ``interactions x L`` numbers before the split, built in a Python loop per
interaction: about 4.5 GB per million interactions at ``L = 200``.

:class:`LeanSequentialDataset` keeps

- the sequence store: every per-interaction field (all but the user id) once, as one flat column
  sorted by user and time, as RecBole sorts them before augmenting;
- one row per sample, as RecBole's: the target interaction's own fields and ``item_length``, plus
  the flat position of the target (:data:`SEQUENCE_END_FIELD`). The input of a sample is the
  ``item_length`` entries of the store before that position.

RecBole's split, samplers and dataloaders run unchanged on the sample rows (O(interactions)); the
``[batch, L]`` lists are gathered from the store when a batch is drawn (:meth:`__getitem__`), so a
dataloader receives the same tensors, in the same order, as from RecBole's dataset. The sample rows
are built without a Python loop per interaction, and the leave-one-out split (RecBole's groups its
rows in a Python dict of lists) is computed with numpy, with the same result.
"""
import numpy as np
import pandas as pd
import torch

from recbole.data.dataset import SequentialDataset
from recbole.data.interaction import Interaction
from recbole.utils import FeatureSource, FeatureType

# the column of the sample rows that holds the flat position of the target in the sequence store;
# it never leaves the dataset (batches hold RecBole's fields only)
SEQUENCE_END_FIELD = "__sequence_end__"


class LeanSequentialDataset(SequentialDataset):
    """RecBole's ``SequentialDataset`` with each interaction stored once (see the module docstring).

    Attributes:
        sequence_feat (dict): field -> flat tensor of every interaction's value, sorted by user
            and time (the fields that RecBole turns into ``<field>_list``).
        sequence_start (numpy.ndarray): for each user id, the flat position of the user's first
            interaction in the store (-1 for ids without interactions).
    """

    def _load_feat(self, filepath, source):
        """RecBole's reader, with pandas' C parser for the interaction file.

        RecBole reads every atomic file with pandas' Python parser, which at a million lines takes
        ~16 s and holds every field of every line as a Python string at once. The interaction file
        of a sequential dataset has scalar fields only (token, float) and a one-character
        separator: the C parser reads it into the same DataFrame (its default float parser is the
        one the Python parser uses: the same bits, not Python's ``float``), about 7x faster and in a
        fraction of the memory. Other files, and interaction files with sequence fields or another separator,
        go to RecBole's reader.
        """
        separator, encoding = self.config["field_separator"], self.config["encoding"]
        load_col, unload_col = self._get_load_and_unload_col(source)
        if source != FeatureSource.INTERACTION or len(separator) != 1 or load_col == set():
            return super()._load_feat(filepath, source)
        with open(filepath, "r", encoding=encoding) as f:
            header = f.readline()[:-1].split(separator)
        wanted = []
        for field_type in header:
            field, type_name = field_type.split(":")
            if (load_col is None or field in load_col) and (unload_col is None or field not in unload_col):
                wanted.append((field, field_type, type_name))
        if not wanted or any(type_name not in ("token", "float") for _, _, type_name in wanted):
            return super()._load_feat(filepath, source)  # sequences, or its own errors and warnings
        for field, _, type_name in wanted:  # the field properties RecBole's reader sets
            self.field2source[field] = source
            self.field2type[field] = FeatureType(type_name)
            self.field2seqlen[field] = 1
            if type_name == "float":
                self.field2bucketnum[field] = 2
        frame = pd.read_csv(
            filepath,
            delimiter=separator,
            usecols=[field_type for _, field_type, _ in wanted],
            dtype={field_type: np.float64 if type_name == "float" else str for _, field_type, type_name in wanted},
            encoding=encoding,
            engine="c",  # its default float parser ("high") is the one the Python parser uses
        )
        # usecols keeps the file's column order, as RecBole's reader does
        frame.columns = [field for field, _, _ in wanted]
        return frame

    def data_augmentation(self):
        """RecBole's prefix samples, each represented by (user, target position) instead of its lists."""
        self.logger.debug("data_augmentation (each interaction stored once)")
        self._aug_presets()
        self._check_field("uid_field", "time_field")
        max_item_list_len = self.config["MAX_ITEM_LIST_LENGTH"]
        self.sort(by=[self.uid_field, self.time_field], ascending=True)

        users = self.inter_feat[self.uid_field].numpy()
        n_interactions = len(users)
        is_first = np.ones(n_interactions, dtype=bool)
        is_first[1:] = users[1:] != users[:-1]
        first_positions = np.flatnonzero(is_first)
        user_sizes = np.diff(np.append(first_positions, n_interactions))
        row_user_start = np.repeat(first_positions, user_sizes)
        target_index = np.flatnonzero(~is_first)
        # RecBole's loop moves the start of the input forward once it is longer than L
        item_list_length = np.minimum(target_index - row_user_start[target_index], max_item_list_len).astype(np.int64)

        self.sequence_feat = {field: self.inter_feat[field] for field in self.inter_feat if field != self.uid_field}
        self.sequence_list_fields = {field: getattr(self, f"{field}_list_field") for field in self.sequence_feat}
        self.sequence_start = np.full(self.user_num, -1, dtype=np.int64)
        self.sequence_start[users[first_positions]] = first_positions

        samples = take_rows(self.inter_feat, target_index)
        samples.update(
            Interaction(
                {
                    self.item_list_length_field: torch.from_numpy(item_list_length),
                    SEQUENCE_END_FIELD: torch.from_numpy(target_index.astype(np.int64)),
                }
            )
        )
        self.inter_feat = samples

    # --- batches ------------------------------------------------------------------------------

    def gather_lists(self, ends, lengths, width):
        """``{list_field: [*ends.shape, width, ...]}``: the ``lengths`` store entries before each
        position of ``ends``, right-padded with 0 (RecBole's layout)."""
        offsets = torch.arange(width)
        positions = (ends - lengths).unsqueeze(-1) + offsets
        real = offsets < lengths.unsqueeze(-1)
        positions = torch.where(real, positions, torch.zeros_like(positions))
        lists = {}
        for field, flat in self.sequence_feat.items():
            values = flat[positions]
            mask = real.reshape(real.shape + (1,) * (values.dim() - real.dim()))
            lists[self.sequence_list_fields[field]] = torch.where(mask, values, torch.zeros_like(values))
        return lists

    def expand(self, rows):
        """Sample rows as RecBole's dataset holds them: the row's fields, ``item_length``, the lists."""
        fields = {field: value for field, value in rows.interaction.items() if field != SEQUENCE_END_FIELD}
        fields.update(
            self.gather_lists(rows[SEQUENCE_END_FIELD], rows[self.item_list_length_field], self.max_item_list_len)
        )
        return Interaction(fields)

    def __getitem__(self, index, join=True):
        rows = self.expand(self.inter_feat[index])
        return self.join(rows) if join else rows

    # --- what RecBole computes from the expanded rows -----------------------------------------

    def inter_matrix(self, form="coo", value_field=None):
        """RecBole's sequential ``inter_matrix``: the samples' targets plus each user's first
        interaction (the input of the user's length-1 sample), here read from the store."""
        if not self.uid_field or not self.iid_field:
            raise ValueError("dataset does not exist uid/iid, thus can not converted to sparse matrix.")
        first_rows = self.inter_feat[self.inter_feat[self.item_list_length_field] == 1]
        first_positions = first_rows[SEQUENCE_END_FIELD] - 1
        columns = {}
        for field in first_rows.interaction:
            if field == SEQUENCE_END_FIELD or field == self.item_list_length_field:
                continue
            if field != self.uid_field and field in self.sequence_feat:
                extra = self.sequence_feat[field][first_positions]
            else:
                extra = first_rows[field]
            columns[field] = torch.cat([self.inter_feat[field], extra])
        return self._create_sparse_matrix(Interaction(columns), self.uid_field, self.iid_field, form, value_field)

    def leave_one_out(self, group_by, leave_one_mode):
        """RecBole's leave-one-out split, vectorised: the same rows in the same order.

        RecBole groups the rows by ``group_by`` in order of first appearance (a dict of Python
        lists), keeps each group's rows in order, and gives the last one or two of each group to
        validation and test (a group of ``n`` rows gives at most ``n - 1``).
        """
        self.logger.debug(f"leave one out, group_by=[{group_by}], leave_one_mode=[{leave_one_mode}]")
        if group_by is None:
            raise ValueError("leave one out strategy require a group field")
        held_out = {"valid_and_test": 2, "valid_only": 1, "test_only": 1}
        if leave_one_mode not in held_out:
            raise NotImplementedError(f"The leave_one_mode [{leave_one_mode}] has not been implemented.")
        keys = self.inter_feat[group_by].numpy()
        if keys.dtype.kind not in "iu" or (len(keys) and keys.min() < 0):
            return super().leave_one_out(group_by, leave_one_mode)  # not ids: RecBole's own grouping
        parts = _leave_one_out_index(keys, held_out[leave_one_mode])
        if leave_one_mode == "valid_only":
            parts.append(np.zeros(0, dtype=np.int64))
        elif leave_one_mode == "test_only":
            parts = [parts[0], np.zeros(0, dtype=np.int64), parts[1]]
        self._drop_unused_col()
        return [self.copy(take_rows(self.inter_feat, index)) for index in parts]

    # --- training sequences (train_all_positions) ---------------------------------------------

    def training_spans(self):
        """Per user with training samples, in the order of the rows: ``(user, start, targets)``,
        the user's training sequence being the store's positions ``start .. start + targets``
        (``targets`` items after the first).

        Raises unless the rows of each user are contiguous and are the user's prefixes ``1 ..
        targets`` in order (RecBole's leave-one-out training split of a sequential dataset), rather
        than train on something else.
        """
        users = self.inter_feat[self.uid_field].numpy()
        ends = self.inter_feat[SEQUENCE_END_FIELD].numpy()
        if len(users) == 0:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, empty
        group_starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
        span_users = users[group_starts]
        if len(np.unique(span_users)) != len(span_users):
            raise RuntimeError("train_all_positions: the training samples of a user are not contiguous")
        starts = self.sequence_start[span_users]
        consecutive = np.diff(ends) == 1
        consecutive[group_starts[1:] - 1] = True  # a new user's first row follows anything
        if not consecutive.all() or not np.array_equal(ends[group_starts], starts + 1):
            raise RuntimeError("train_all_positions: the training samples are not the prefixes of each user in order")
        sizes = np.diff(np.append(group_starts, len(users)))
        return span_users, starts, sizes.astype(np.int64)


def take_rows(interaction, index):
    """``interaction[index]`` for a numpy index array. (``Interaction.__getitem__`` first turns an
    array into a Python list: a transient ~40 bytes per row, gigabytes at tens of millions.)"""
    index = torch.from_numpy(np.asarray(index, dtype=np.int64))
    return Interaction({field: value[index] for field, value in interaction.interaction.items()})


def _leave_one_out_index(keys, leave_one_num):
    """``[rest, held_out_1, .., held_out_k]`` row indices, as RecBole's ``_split_index_by_leave_one_out``
    computes them over ``_grouped_index(keys)``, for non-negative integer ``keys``.

    The rows are ordered by group (groups in order of first appearance, rows in order within);
    each group keeps its first ``n - h`` rows, ``h = min(k, n - 1)``, and its held-out row ``i``
    (``0 <= i < h``) goes to part ``k + 1 - h + i``. Transient memory: a few arrays of the rows'
    length (not RecBole's dict of Python lists).
    """
    n_rows = len(keys)
    parts = [np.zeros(0, dtype=np.int64) for _ in range(leave_one_num + 1)]
    if n_rows == 0:
        return parts
    sizes = np.bincount(keys)
    first_row = np.full(len(sizes), n_rows, dtype=np.int64)
    np.minimum.at(first_row, keys, np.arange(n_rows))
    groups = np.argsort(first_row, kind="stable")[: int((sizes > 0).sum())]  # keys by first appearance
    rank = np.empty(len(sizes), dtype=np.int32)
    rank[groups] = np.arange(len(groups), dtype=np.int32)
    order = np.argsort(rank[keys], kind="stable")  # the rows grouped as RecBole groups them
    sizes = sizes[groups]
    held = np.minimum(leave_one_num, sizes - 1)
    first_held = np.cumsum(sizes) - held  # position in `order` of each group's first held-out row
    kept = np.ones(n_rows, dtype=bool)
    for part in range(1, leave_one_num + 1):
        offset = part - (leave_one_num + 1 - held)  # i of the row this part takes from each group
        has = (offset >= 0) & (offset < held)
        positions = first_held[has] + offset[has]
        parts[part] = order[positions]
        kept[positions] = False
    parts[0] = order[kept]
    return parts
