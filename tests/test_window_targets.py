"""benchmarks/window_targets.py: the training targets it counts for our cut (checked against
RecBole's real split and our loader) and for the official LRURec cut."""
import importlib.util
import os

import numpy as np
import pytest
from recbole.data import create_dataset, data_preparation

from recbole_linear.all_positions import build_windows
from recbole_linear.config import create_config
from tests.conftest import ROOT, TINY_SETTINGS

_spec = importlib.util.spec_from_file_location("window_targets", os.path.join(ROOT, "benchmarks", "window_targets.py"))
window_targets = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(window_targets)

LENGTHS = {str(u): n for u, n in enumerate([1, 2, 3, 4, 5, 7, 9, 12, 13], start=1)}  # items per user


@pytest.mark.parametrize(
    "length, labels, empty",
    [
        (0, set(), set()), (1, {0}, {0}), (3, {0, 1, 2}, {0}),  # at most L: all labelled, the first without context
        (4, {1, 2, 3}, set()), (5, {2, 3, 4}, set()),  # below 2L: one sample, its last L labels, all with context
        (6, set(range(6)), {0, 3}), (7, set(range(1, 7)), {1, 4}),  # 2L or more: windows of L from the end
        (11, set(range(2, 11)), {2, 5, 8}),  # ... and the head before them dropped
    ],
)
def test_official_cut_with_max_len_3(length, labels, empty):
    assert window_targets.official_labels(length, 3) == (labels, empty)


@pytest.fixture(scope="module")
def toy_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    os.makedirs(folder / "toy")
    path = folder / "toy" / "toy.inter"
    with open(path, "w") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for user, n in LENGTHS.items():
            for t in reversed(range(n)):  # out of order in the file: sorted by timestamp
                f.write(f"{user}\t{100 * int(user) + t}\t{t}\n")
    return str(folder), str(path)


def test_our_targets_are_those_of_recboles_split_and_our_loader(toy_file):
    data_path, path = toy_file
    max_len = 3
    config = create_config("SASRec", "toy", config_dict={
        **TINY_SETTINGS, "data_path": data_path, "show_progress": False, "MAX_ITEM_LIST_LENGTH": max_len,
    })
    dataset = create_dataset(config)
    train = data_preparation(config, dataset)[0]._dataset
    window_users, _, targets, _ = build_windows(train, max_len)
    sequences = window_targets.read_sequences(path)
    assert sequences["2"] == ["200", "201"]
    for user, n in LENGTHS.items():
        items = sequences[user]
        uid = dataset.token2id(dataset.uid_field, user) if n > 1 else None
        trained = targets[window_users == uid] if uid is not None else np.zeros(0, dtype=int)
        real = [dataset.id2token(dataset.iid_field, i) for i in trained[trained != 0]]
        expected = [items[p] for p in sorted(window_targets.our_targets(n, max_len))]
        assert sorted(real) == sorted(expected), (user, real, expected)


def test_counts_over_an_atomic_file(toy_file):
    totals = window_targets.count(window_targets.read_sequences(toy_file[1]), 3)
    # ours: n - 3 targets for n >= 4, 1 for n = 2 or 3 (RecBole keeps one row to train)
    # official: training part n - 2 items (n for n < 3): 1, 2, 1, 2, 3, 5, 7, 10, 11 -> labels below
    assert totals == {
        "tested_users": 7,
        "windows": 0 + 1 + 1 + 1 + 1 + 2 + 2 + 3 + 4,  # ceil(targets / 3)
        "ours": 0 + 1 + 1 + 1 + 2 + 4 + 6 + 9 + 10,
        "official": 1 + 2 + 1 + 2 + 3 + 3 + 6 + 9 + 9,
        "empty_context": 1 + 1 + 1 + 1 + 1 + 0 + 2 + 3 + 3,
        # ours the official never labels: n=3 (ours {1}, the official's validation item; its part is
        # item 0 alone), n=7 (ours 1-4, labels 2-4), n=13 (ours 1-10, labels 2-10); none for the others
        "never_official": 1 + 1 + 1,
        # read-out position L - 1 = 2: test inputs (n - 1 items) of at least 3 items: n >= 4
        "test_full": 6,
        # our windows with 3 positions: n=7 (training part 5 items: windows of 3 + 1 targets), n=9 (3 + 3),
        # n=12 (3 + 3 + 3), n=13 (1 + 3 + 3 + 3)
        "ours_last": 1 + 2 + 3 + 3,
        # prefix rows with targets at index >= 3 of training parts of 5, 7, 10, 11 items
        "prefix_last": 2 + 4 + 7 + 8,
        # one sample per official sequence below 2L = 6 items (lengths 1, 2, 1, 2, 3, 5), else length // 3
        "official_last": 6 + 2 + 3 + 3,
    }
