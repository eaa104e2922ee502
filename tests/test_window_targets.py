"""benchmarks/window_targets.py: the counts of training targets it reports for both cuts."""
import importlib.util
import os

import pytest

from tests.conftest import ROOT

_spec = importlib.util.spec_from_file_location("window_targets", os.path.join(ROOT, "benchmarks", "window_targets.py"))
window_targets = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(window_targets)


@pytest.mark.parametrize(
    "length, expected",
    [
        (1, (1, 1)), (3, (3, 1)),  # at most L: every item a label, the first from an empty context
        (4, (3, 0)), (5, (3, 0)),  # below 2L: one sample, its last L labels, each with context
        (6, (6, 2)), (7, (6, 2)), (11, (9, 3)),  # 2L or more: windows of L from the end, head dropped
    ],
)
def test_official_cut_with_max_len_3(length, expected):
    assert window_targets.official_labels(length, 3) == expected


def test_counts_over_an_atomic_file(tmp_path):
    path = tmp_path / "toy.inter"
    lengths = {"a": 2, "b": 5, "c": 9, "d": 13}  # training sequences 3, 7 and 11 items; 'a' has no test item
    with open(path, "w") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for user, n in lengths.items():
            for t in reversed(range(n)):  # out of order in the file: sorted by timestamp
                f.write(f"{user}\t{user}{t}\t{t}\n")
    sequences = window_targets.read_sequences(str(path))
    assert sequences["b"] == ["b0", "b1", "b2", "b3", "b4"]
    totals = window_targets.count(sequences, 3)
    assert totals == {
        "users": 3,
        "ours": 2 + 6 + 10,  # every item after the first of each training sequence
        "official": 3 + 6 + 9,
        "empty_context": 1 + 2 + 3,
        "dropped": 0 + 1 + 2,
    }
