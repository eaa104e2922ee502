"""The all-position training regime (``train_all_positions``): windows, loss parity with RecBole's
prefixes for every supported model, padding, negatives, unsupported models, and real runs."""
import os
import subprocess
import sys

import numpy as np
import pytest
import recbole
import torch
from recbole.data import create_dataset, data_preparation
from recbole.data.interaction import Interaction
from recbole.model.sequential_recommender.gru4rec import GRU4Rec
from recbole.model.sequential_recommender.sasrec import SASRec

from recbole_linear import LinRec, LRURec, create_config
from recbole_linear.all_positions import (
    AllPositionTrainDataLoader,
    all_position_loss,
    build_windows,
    cut_windows,
    training_sequences,
)
from recbole_linear.config import read_yaml
from recbole_linear.errors import ConfigError
from recbole_linear.quick_start import evaluate_checkpoint, run_recbole_linear
from tests.conftest import ROOT, TINY_DATASET, tiny_cmd_args
from tests.helpers import ITEM_SEQ, ITEM_SEQ_LEN, POS_ITEM_ID, FakeDataset, base_config, load_model_defaults

TARGETS = "target_item_id_list"
NEGATIVES = "neg_item_id_list"
N_ITEMS = 40
MAX_LEN = 8


# ---- windows ---------------------------------------------------------------------------------
@pytest.mark.parametrize("overlap", [0, 3])
@pytest.mark.parametrize("length", [0, 1, 2, 3, MAX_LEN, MAX_LEN + 1, 2 * MAX_LEN + 3, 5 * MAX_LEN])
def test_windows_cover_every_target_once_from_the_end(length, overlap):
    sequence = np.arange(101, 101 + length)
    windows = cut_windows(sequence, MAX_LEN, overlap)
    if overlap == 0:
        assert len(windows) == (max(length - 1, 0) + MAX_LEN - 1) // MAX_LEN
    # every target of RecBole's prefixes (sequence[1:]) exactly once, in order
    all_targets = np.concatenate([t[t != 0] for _, t in windows]) if windows else np.zeros(0)
    np.testing.assert_array_equal(all_targets, sequence[1:])
    for inputs, targets in windows:
        assert 1 <= len(inputs) == len(targets) <= MAX_LEN
        start = inputs[0] - 101  # where the window's inputs begin in the sequence
        for t in np.flatnonzero(targets):
            assert targets[t] == inputs[t] + 1  # position t predicts the next item
            assert start == 0 or t >= overlap  # at least `overlap` items of context
        if overlap == 0:
            assert (targets != 0).all()
    # cut from the end backwards: only windows at the start of the sequence may be short
    assert all(len(t) == MAX_LEN for inputs, t in windows if inputs[0] != 101)


def test_window_sizes_for_a_user_longer_than_two_windows():
    windows = cut_windows(np.arange(1, 2 * MAX_LEN + 4), MAX_LEN)  # 2L+3 items, 2L+2 targets
    assert [len(t) for _, t in windows] == [2, MAX_LEN, MAX_LEN]
    overlapping = cut_windows(np.arange(1, 2 * MAX_LEN + 4), MAX_LEN, overlap=2)  # 6 trained per window
    assert [int((t != 0).sum()) for _, t in overlapping] == [MAX_LEN - 2, 6, 6]
    assert [int((t == 0).sum()) for _, t in overlapping] == [0, 2, 2]


# ---- models ----------------------------------------------------------------------------------
def _recbole_defaults(name):
    return read_yaml(os.path.join(os.path.dirname(recbole.__file__), "properties", "model", f"{name}.yaml"))


def _model(name, loss_type, **overrides):
    small = {"hidden_size": 16, "embedding_size": 16, "inner_size": 32, "n_layers": 2, "n_heads": 2}
    if name == "SASRec":
        model_cls, config = SASRec, _recbole_defaults("SASRec")
    elif name == "GRU4Rec":
        model_cls, config = GRU4Rec, _recbole_defaults("GRU4Rec")
    elif name == "LinRec":
        model_cls, config = LinRec, dict(load_model_defaults("LinRec"), linrec_causal=True, linrec_chunk_size=3)
    else:
        model_cls, config = LRURec, load_model_defaults("LRURec")
    config.update(base_config(max_len=MAX_LEN), **small, loss_type=loss_type)
    config.update(overrides)
    torch.manual_seed(0)
    model = model_cls(config, FakeDataset(N_ITEMS)).double()
    if hasattr(model, "output_bias"):
        with torch.no_grad():
            model.output_bias.normal_()  # a bias that matters, so leaving it out would show
    return model.eval()


def _windows(lengths, seed=0):
    """Right-padded windows: inputs, targets (the next items), negatives; padding 0 everywhere."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    sequences = torch.randint(1, N_ITEMS, (len(lengths), MAX_LEN + 1), generator=g)
    real = torch.arange(MAX_LEN).unsqueeze(0) < lengths.unsqueeze(1)
    inputs = sequences[:, :-1].masked_fill(~real, 0)
    targets = sequences[:, 1:].masked_fill(~real, 0)
    negatives = torch.randint(1, N_ITEMS, targets.shape, generator=g).masked_fill(~real, 0)
    return Interaction({ITEM_SEQ: inputs, ITEM_SEQ_LEN: lengths, TARGETS: targets, NEGATIVES: negatives})


def _prefix_batch(windows):
    """RecBole's samples for the same targets: one right-padded prefix of the window per position."""
    rows = {ITEM_SEQ: [], ITEM_SEQ_LEN: [], POS_ITEM_ID: [], "neg_item_id": []}
    for w in range(len(windows)):
        for t in range(int(windows[ITEM_SEQ_LEN][w])):
            if windows[TARGETS][w, t] == 0:  # context only
                continue
            prefix = torch.zeros(MAX_LEN, dtype=torch.long)
            prefix[: t + 1] = windows[ITEM_SEQ][w, : t + 1]
            rows[ITEM_SEQ].append(prefix)
            rows[ITEM_SEQ_LEN].append(t + 1)
            rows[POS_ITEM_ID].append(int(windows[TARGETS][w, t]))
            rows["neg_item_id"].append(int(windows[NEGATIVES][w, t]))
    return Interaction(
        {
            ITEM_SEQ: torch.stack(rows[ITEM_SEQ]),
            ITEM_SEQ_LEN: torch.tensor(rows[ITEM_SEQ_LEN]),
            POS_ITEM_ID: torch.tensor(rows[POS_ITEM_ID]),
            "neg_item_id": torch.tensor(rows["neg_item_id"]),
        }
    )


MODELS = ["LRURec", "LinRec", "SASRec", "GRU4Rec"]


@pytest.mark.parametrize("loss_type", ["CE", "BPR"])
@pytest.mark.parametrize("name", MODELS)
def test_all_position_loss_is_the_mean_of_recboles_prefix_losses(name, loss_type):
    model = _model(name, loss_type)
    windows = _windows([MAX_LEN, 3, 1, 6, MAX_LEN])
    windows[TARGETS][4, :3] = 0  # an overlapping window: its first 3 positions only give context
    with torch.no_grad():
        ours = all_position_loss(model, windows, TARGETS, NEGATIVES)
        recbole_loss = model.calculate_loss(_prefix_batch(windows))  # RecBole's mean over prefixes
    assert torch.isfinite(ours)
    torch.testing.assert_close(ours, recbole_loss, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("loss_type", ["CE", "BPR"])
@pytest.mark.parametrize("name", MODELS)
def test_padding_changes_nothing(name, loss_type):
    model = _model(name, loss_type)
    negatives = NEGATIVES if loss_type == "BPR" else None
    short, long_ = _windows([2, 5], seed=1), _windows([MAX_LEN], seed=2)
    mixed = Interaction({k: torch.cat([short[k], long_[k]]) for k in short.interaction})
    with torch.no_grad():
        # LRURec cuts columns to the longest row, so its short windows carry more padding in the
        # mixed batch: per-target losses must not care (sum over the batch = sum of the parts)
        parts = 7 * all_position_loss(model, short, TARGETS, negatives) + MAX_LEN * all_position_loss(
            model, long_, TARGETS, negatives)
        whole = (7 + MAX_LEN) * all_position_loss(model, mixed, TARGETS, negatives)
        # whatever sits at padding (input items, targets, negatives) is never read: a causal model's
        # real positions precede the padding of right-padded windows
        noisy = Interaction(dict(mixed.interaction))
        padding = torch.arange(MAX_LEN).unsqueeze(0) >= noisy[ITEM_SEQ_LEN].unsqueeze(1)
        g = torch.Generator().manual_seed(3)
        for field in (ITEM_SEQ, TARGETS, NEGATIVES):
            garbage = torch.randint(1, N_ITEMS, noisy[field].shape, generator=g)
            noisy[field] = torch.where(padding, garbage, noisy[field])
        assert int(padding.sum()) > MAX_LEN  # there is padding, and now it holds real item ids
        torch.testing.assert_close(all_position_loss(model, noisy, TARGETS, negatives), whole / (7 + MAX_LEN),
                                   rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(whole, parts, rtol=1e-10, atol=1e-10)


def test_padding_test_catches_a_model_that_reads_padding():
    """Control for the test above: LinRec without ``linrec_causal`` attends to later positions, so
    item ids at padding change its losses at real positions."""
    model = _model("LinRec", "CE", linrec_causal=False)
    windows = _windows([2, 5, MAX_LEN], seed=1)
    padding = torch.arange(MAX_LEN).unsqueeze(0) >= windows[ITEM_SEQ_LEN].unsqueeze(1)
    noisy = Interaction(dict(windows.interaction))
    noisy[ITEM_SEQ] = torch.where(padding, torch.full_like(padding, 7, dtype=torch.long), noisy[ITEM_SEQ])
    with torch.no_grad():
        clean, dirty = all_position_loss(model, windows, TARGETS), all_position_loss(model, noisy, TARGETS)
    assert (clean - dirty).abs() > 1e-6


@pytest.mark.parametrize("name", MODELS)
def test_gradients_reach_the_encoder(name):
    model = _model(name, "CE").train()
    all_position_loss(model, _windows([MAX_LEN, 4]), TARGETS).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []  # a full window uses every position embedding too


# ---- config ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "model, extra, reason",
    [
        ("BERT4Rec", {}, "bidirectional"),
        ("GLINTRU", {}, "not causal"),
        ("LinRec", {"linrec_causal": False}, "linrec_causal"),
        ("NARM", {}, "implemented for LRURec"),
    ],
)
def test_unsupported_models_are_refused_with_the_reason(model, extra, reason):
    with pytest.raises(ConfigError, match=reason):
        create_config(model, "ml-100k", config_dict={"train_all_positions": True, **extra})


def test_causal_linrec_is_accepted():
    config = create_config("LinRec", "ml-100k", config_dict={"train_all_positions": True, "linrec_causal": True})
    assert config["train_all_positions"] is True


def test_bert4rec_on_the_command_line_exits_2_with_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "run_recbole_linear.py"), "--model=BERT4Rec", "--train_all_positions=True"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "BERT4Rec" in lines[0] and "bidirectional" in lines[0], result.stderr


# ---- RecBole's data ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_train_dataset(tiny_data_path):
    config = create_config(
        "SASRec", TINY_DATASET, config_dict={**_tiny_dict(tiny_data_path), "MAX_ITEM_LIST_LENGTH": 4}
    )
    dataset = create_dataset(config)
    train_data, _, _ = data_preparation(config, dataset)
    return config, dataset, train_data._dataset


def _tiny_dict(data_path):
    from tests.conftest import TINY_SETTINGS

    return {**TINY_SETTINGS, "data_path": data_path, "show_progress": False}


def test_windows_hold_exactly_recboles_training_targets(tiny_train_dataset):
    config, dataset, train = tiny_train_dataset
    users, sequences = training_sequences(train)
    # the raw file, in RecBole's ids: the training part of each user is all but its last 2 items
    raw = np.loadtxt(os.path.join(config["data_path"], f"{TINY_DATASET}.inter"), skiprows=1, dtype=str)
    assert len(users) == len(np.unique(raw[:, 0]))
    for user, sequence in zip(users, sequences):
        token = dataset.id2token(dataset.uid_field, user)
        items = dataset.token2id(dataset.iid_field, raw[raw[:, 0] == token, 1])
        np.testing.assert_array_equal(sequence, items[:-2])
    window_users, inputs, targets, lengths = build_windows(train, 4)
    assert lengths.sum() == len(train)  # one target per RecBole training row
    assert (lengths <= 4).all() and (inputs[np.arange(4) >= lengths[:, None]] == 0).all()
    # per user, the windows' targets in order are RecBole's targets in order
    train_users = train.inter_feat[train.uid_field].numpy()
    train_targets = train.inter_feat[train.iid_field].numpy()
    for user in np.unique(train_users):
        ours = np.concatenate([targets[w, : lengths[w]] for w in np.flatnonzero(window_users == user)])
        np.testing.assert_array_equal(ours, train_targets[train_users == user])


def test_loader_batches_windows_and_samples_negatives_for_bpr(tiny_train_dataset, tiny_data_path):
    config = create_config(
        "SASRec",
        TINY_DATASET,
        config_dict={**_tiny_dict(tiny_data_path), "MAX_ITEM_LIST_LENGTH": 4, "loss_type": "BPR", "train_batch_size": 7},
    )
    _, dataset, train = tiny_train_dataset
    loader = AllPositionTrainDataLoader(config, train, shuffle=True)
    seen = 0
    for batch in loader:
        assert len(batch) <= 7
        real = torch.arange(4).unsqueeze(0) < batch[ITEM_SEQ_LEN].unsqueeze(1)
        negatives, targets = batch[NEGATIVES], batch[TARGETS]
        assert (negatives[~real] == 0).all() and (targets[~real] == 0).all()
        assert (targets[real] > 0).all()
        assert (negatives[real] >= 1).all() and (negatives[real] < dataset.item_num).all()
        assert not (negatives[real] == targets[real]).any()
        seen += int(real.sum())
    assert seen == len(train) == loader.n_targets


def test_overlapping_windows_train_the_same_targets(tiny_train_dataset, tiny_data_path):
    config = create_config(
        "SASRec",
        TINY_DATASET,
        config_dict={**_tiny_dict(tiny_data_path), "MAX_ITEM_LIST_LENGTH": 4, "train_window_overlap": 2},
    )
    _, _, train = tiny_train_dataset
    loader = AllPositionTrainDataLoader(config, train, shuffle=False)
    assert loader.n_targets == len(train) and loader.sample_size > len(build_windows(train, 4)[0])
    # per user, the trained targets (context positions have target 0) in order are RecBole's
    window_users, inputs, targets, lengths = build_windows(train, 4, overlap=2)
    train_users = train.inter_feat[train.uid_field].numpy()
    train_targets = train.inter_feat[train.iid_field].numpy()
    overlapping = 0
    for user in np.unique(train_users):
        windows = np.flatnonzero(window_users == user)
        ours = np.concatenate([targets[w, : lengths[w]][targets[w, : lengths[w]] > 0] for w in windows])
        np.testing.assert_array_equal(ours, train_targets[train_users == user])
        overlapping += int(sum((targets[w, : lengths[w]] == 0).sum() for w in windows))
    assert overlapping > 0  # some windows do start with context-only positions


def test_overlap_must_leave_a_target_per_window():
    with pytest.raises(ConfigError, match="train_window_overlap"):
        create_config("SASRec", "ml-100k", config_dict={"train_all_positions": True, "MAX_ITEM_LIST_LENGTH": 5, "train_window_overlap": 5})


# ---- whole runs ---------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["SASRec", "LRURec"])
def test_command_line_run_ends_with_test_metrics(model, tiny_data_path, tmp_path):
    args = [f"--model={model}", f"--dataset={TINY_DATASET}", *tiny_cmd_args(tiny_data_path), "--train_all_positions=True"]
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "run_recbole_linear.py"), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "test result" in output and "ndcg@10" in output
    assert "train_all_positions" in output and "windows of at most 20 items" in output


def test_checkpoint_evaluates_again_to_the_same_metrics(tiny_run_dict):
    result = run_recbole_linear("LRURec", TINY_DATASET, config_dict={**tiny_run_dict, "train_all_positions": True, "epochs": 2})
    assert result["epochs_trained"] == 2
    config, _, test_result = evaluate_checkpoint(result["saved_model_file"])
    assert config["train_all_positions"] is True
    assert test_result == dict(result["test_result"])


def test_training_moves_the_loss_down(tiny_run_dict):
    """Three epochs of the regime reduce the training loss: the loader and loss are wired in."""
    from recbole_linear.quick_start import prepare

    config = create_config(
        "LRURec", TINY_DATASET, config_dict={**tiny_run_dict, "train_all_positions": True, "epochs": 3, "learning_rate": 0.01}
    )
    _, (train_data, valid_data, _), _, trainer = prepare(config)
    assert isinstance(train_data, AllPositionTrainDataLoader)
    losses = [trainer._train_epoch(train_data, epoch) for epoch in range(3)]
    assert losses[-1] < losses[0]


def test_bpr_run_trains_with_sampled_negatives(tiny_run_dict):
    from recbole_linear.quick_start import prepare

    config = create_config(
        "LRURec", TINY_DATASET, config_dict={**tiny_run_dict, "train_all_positions": True, "loss_type": "BPR"}
    )
    _, (train_data, _, _), _, trainer = prepare(config)
    assert train_data.sample_negatives
    batch = next(iter(train_data))
    assert "neg_item_id_list" in batch
    losses = [trainer._train_epoch(train_data, epoch) for epoch in range(3)]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
