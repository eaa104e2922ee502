"""Shared fixtures: a tiny generated dataset in RecBole's atomic format and tiny run configs."""
import os
import sys

import numpy as np
import pytest

# the repository root on sys.path, so `tests.helpers` and `run_recbole_linear` import from any cwd
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

TINY_DATASET = "tiny"

# A seconds-long run: the settings every tiny test run shares (dict and command-line forms below)
TINY_SETTINGS = {
    "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
    "epochs": 1,
    "hidden_size": 32,
    "embedding_size": 32,
    "inner_size": 64,
    "n_layers": 1,
    "n_heads": 2,
    "MAX_ITEM_LIST_LENGTH": 20,
    "train_batch_size": 64,
    "eval_batch_size": 64,
}


def tiny_cmd_args(data_path, **extra):
    """TINY_SETTINGS (plus ``extra``) as ``--key=value`` overrides for the command line."""
    settings = dict(TINY_SETTINGS, data_path=data_path, **extra)
    return [f"--{key}={value}" for key, value in settings.items()]


def write_tiny_dataset(folder, n_users=40, n_items=30, min_len=6, max_len=14, seed=0):
    """``folder/tiny/tiny.inter``: random sequences with timestamps 0..n-1 per user."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(folder, TINY_DATASET), exist_ok=True)
    path = os.path.join(folder, TINY_DATASET, f"{TINY_DATASET}.inter")
    with open(path, "w") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for user in range(1, n_users + 1):
            length = rng.integers(min_len, max_len + 1)
            for t, item in enumerate(rng.integers(1, n_items + 1, size=length)):
                f.write(f"{user}\t{item}\t{t}\n")
    return path


@pytest.fixture(scope="session")
def tiny_data_path(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("data"))
    write_tiny_dataset(folder)
    return folder


@pytest.fixture
def tiny_run_dict(tiny_data_path, tmp_path):
    """Config dict for a seconds-long run on the tiny dataset, writing into tmp_path."""
    return {
        **TINY_SETTINGS,
        "data_path": tiny_data_path,
        "show_progress": False,
        "checkpoint_dir": str(tmp_path / "saved"),
        "log_wandb": False,
    }
