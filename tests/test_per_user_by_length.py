"""benchmarks/per_user_by_length.py: per-user NDCG@10 split by whether the test input fills the window."""
import importlib.util
import os

import numpy as np
import pytest

from tests.conftest import ROOT

_spec = importlib.util.spec_from_file_location(
    "per_user_by_length", os.path.join(ROOT, "benchmarks", "per_user_by_length.py"))
per_user_by_length = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(per_user_by_length)

LENGTHS = {"1": 3, "2": 4, "3": 5, "4": 9}  # items per user; L = 4: test inputs of 2, 3, 4, 8 items


@pytest.fixture
def data(tmp_path):
    os.makedirs(tmp_path / "toy")
    with open(tmp_path / "toy" / "toy.inter", "w") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for user, n in LENGTHS.items():
            for t in range(n):
                f.write(f"{user}\t{10 * int(user) + t}\t{t}\n")
    runs = {}
    for label, ndcg in {"A": [0.5, 0.25, 1.0, 0.0], "B": [0.25, 0.25, 0.5, 0.5]}.items():
        runs[label] = str(tmp_path / f"{label}.npz")
        np.savez(runs[label], user=np.array(["1", "2", "3", "4"]), **{"ndcg@10": np.array(ndcg)})
    return tmp_path, runs


def test_split_and_table(data):
    folder, runs = data
    out = folder / "by_length.md"
    per_user_by_length.main(["--data_path", str(folder), "--dataset", "toy=4", "--run", f"A={runs['A']}",
                             "--run", f"B={runs['B']}", "--output", str(out)])
    text = out.read_text()
    # users 3 and 4 have test inputs of at least 4 items; users 1 and 2 do not
    assert "| all tested users | 4 | 0.4375 | 0.3750 | 0.857 |" in text
    assert "| input fills the window (at least 4 items) | 2 | 0.5000 | 0.5000 | 1.000 |" in text
    assert "| shorter input (under 4 items) | 2 | 0.3750 | 0.2500 | 0.667 |" in text
    assert f"--run A={runs['A']} --run B={runs['B']}" in text


def test_unknown_user_and_bad_arguments(data, tmp_path):
    folder, runs = data
    bad = str(tmp_path / "bad.npz")
    np.savez(bad, user=np.array(["1", "99"]), **{"ndcg@10": np.array([0.0, 1.0])})
    with pytest.raises(SystemExit, match="not in the dataset"):
        per_user_by_length.main(["--data_path", str(folder), "--dataset", "toy=4", "--run", f"X={bad}", "--output", str(folder / "o.md")])
    other = str(tmp_path / "other.npz")
    np.savez(other, user=np.array(["1", "2", "3", "3"]), **{"ndcg@10": np.zeros(4)})
    with pytest.raises(SystemExit, match="not test the same users"):
        per_user_by_length.main(["--data_path", str(folder), "--dataset", "toy=4", "--run", f"A={runs['A']}",
                                 "--run", f"O={other}", "--output", str(folder / "o.md")])
    with pytest.raises(SystemExit, match="NAME=MAX_LEN"):
        per_user_by_length.main(["--data_path", str(folder), "--dataset", "toy", "--run", f"A={runs['A']}", "--output", str(folder / "o.md")])
    with pytest.raises(SystemExit, match="LABEL=PER_USER_NPZ"):
        per_user_by_length.main(["--data_path", str(folder), "--dataset", "toy=4", "--run", "A=missing.npz", "--output", str(folder / "o.md")])
