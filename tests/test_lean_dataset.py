"""The lean sequential dataset gives the trainer and the evaluators exactly what RecBole's gives.

Every batch of every dataloader (training with CE, with BPR's sampled negatives, BERT4Rec's masking
transform, the all-position windows; validation and test) is compared tensor by tensor with the
batch RecBole's expanded ``SequentialDataset`` gives under the same seed, and short runs of every
model end with bit-identical metrics, also after a resume, on two processes and for a checkpoint
evaluated again. The lean dataset's storage does not grow with ``MAX_ITEM_LIST_LENGTH``.
"""
import pickle
import re

import numpy as np
import pytest
import torch

from recbole.config import Config
from recbole.data import create_dataset as recbole_create_dataset
from recbole.data import data_preparation
from recbole.data.dataset import Dataset, SequentialDataset
from recbole.utils import init_seed

from recbole_linear import run_recbole_linear
from recbole_linear.all_positions import AllPositionTrainDataLoader, cut_windows, window_bounds
from recbole_linear.config import create_config
from recbole_linear.data import LeanSequentialDataset, create_dataset, storage_for
from recbole_linear.data.lean_dataset import _leave_one_out_index
from recbole_linear.distributed import free_port
from recbole_linear.errors import ConfigError
from recbole_linear.quick_start import evaluate_checkpoint, load_data_and_model
from tests.conftest import TINY_DATASET, TINY_SETTINGS
from tests.test_distributed import printed_metrics, run_in_own_group, tiny_flags
from tests.test_resume import crash_after_first_save

ML100K = {"MAX_ITEM_LIST_LENGTH": 20, "show_progress": False, "log_wandb": False}
BPR = {"loss_type": "BPR", "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1}}
WITH_TIME_AND_RATING = {"load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"]}}


def prepared(model, storage, **settings):
    """(config, dataset, train, valid, test) for ml-100k, as the plugin's entry points build them."""
    config = create_config(model, "ml-100k", config_dict={**ML100K, **settings, "sequence_storage": storage})
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    return (config, dataset, *data_preparation(config, dataset))


def assert_same_interaction(ours, recboles):
    assert list(ours.interaction) == list(recboles.interaction)  # same fields, same order
    for field in recboles.interaction:
        a, b = ours[field], recboles[field]
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), field


def assert_same_batches(ours, recboles, epochs=1):
    """Iterate both loaders ``epochs`` times from the same seed; every batch must be equal."""
    batches = {}
    for name, loader in (("ours", ours), ("recboles", recboles)):
        init_seed(2020, True)  # BPR's sampler and BERT4Rec's masking draw from numpy and torch
        batches[name] = [batch for _ in range(epochs) for batch in loader]
    assert len(batches["ours"]) == len(batches["recboles"]) > 0
    for a, b in zip(batches["ours"], batches["recboles"]):
        if isinstance(b, tuple):  # evaluation: (interaction, history index, positive users, positive items)
            assert_same_interaction(a[0], b[0])
            assert a[1] is None and b[1] is None
            assert torch.equal(a[2], b[2]) and torch.equal(a[3], b[3])
        else:
            assert_same_interaction(a, b)
    return len(batches["ours"])


CASES = {
    "CE": ("SASRec", {}),
    "BPR negatives": ("SASRec", BPR),
    "BERT4Rec masking": ("BERT4Rec", {}),
    "time and rating lists, L=50": ("LRURec", {**WITH_TIME_AND_RATING, "MAX_ITEM_LIST_LENGTH": 50}),
}


@pytest.mark.parametrize("case", CASES)
def test_every_batch_of_every_loader_is_recboles(case):
    model, settings = CASES[case]
    _, lean, *ours = prepared(model, "lean", **settings)
    _, expanded, *recboles = prepared(model, "expanded", **settings)
    assert type(lean) is LeanSequentialDataset and type(expanded) is SequentialDataset
    assert str(lean) == str(expanded)  # the dataset RecBole logs: same users, items, interactions, fields
    for phase, a, b in zip(("train", "valid", "test"), ours, recboles):
        assert len(a._dataset) == len(b._dataset), phase
        assert_same_batches(a, b, epochs=2 if phase == "train" else 1)
    if "rating" in settings.get("load_col", {}).get("inter", []):
        assert "timestamp_list" in ours[0]._dataset[np.arange(3)] and "rating_list" in ours[0]._dataset[np.arange(3)]


@pytest.mark.parametrize("split", ["valid_only", "test_only", "valid_and_test"])
def test_leave_one_out_splits_like_recbole(split):
    settings = {"eval_args": {"split": {"LS": split}, "order": "TO", "mode": "full"}}
    _, _, *ours = prepared("SASRec", "lean", **settings)
    _, _, *recboles = prepared("SASRec", "expanded", **settings)
    for a, b in zip(ours, recboles):
        assert (a is None) == (b is None)
        if a is not None:
            assert_same_interaction(a._dataset[np.arange(len(a._dataset))], b._dataset[np.arange(len(b._dataset))])


@pytest.mark.parametrize("held_out", [1, 2])
def test_leave_one_out_index_is_recboles_on_interleaved_groups(held_out):
    # RecBole's own index functions (they read nothing of the dataset) against the vectorised one
    keys = np.random.default_rng(0).integers(0, 30, size=500)
    keys[:5] = [5, 3, 5, 9, 3]
    expected = Dataset._split_index_by_leave_one_out(None, Dataset._grouped_index(None, keys), held_out)
    ours = _leave_one_out_index(keys, held_out)
    assert [part.tolist() for part in ours] == expected
    assert _leave_one_out_index(np.array([5, 3, 5, 9, 3, 5, 3, 3, 9, 1]), 2)[0].tolist() == [0, 1, 4, 3, 9]


@pytest.mark.parametrize("overlap, settings", [(0, {}), (7, BPR)])
def test_all_position_windows_are_the_expanded_ones(overlap, settings):
    settings = {**settings, "train_all_positions": True, "train_window_overlap": overlap}
    config, _, train, _, _ = prepared("LRURec", "lean", **settings)
    _, _, expanded_train, _, _ = prepared("LRURec", "expanded", **settings)
    ours = AllPositionTrainDataLoader(config, train._dataset)
    recboles = AllPositionTrainDataLoader(config, expanded_train._dataset)
    assert ours.n_targets == recboles.n_targets == len(train._dataset)
    assert assert_same_batches(ours, recboles, epochs=2) == 2 * len(ours)


def test_window_bounds_cut_as_cut_windows():
    lengths = [2, 3, 20, 21, 22, 57, 60]
    for max_len, overlap in ((20, 0), (20, 5), (4, 3), (1, 0)):
        sequence, start, length, context = window_bounds(lengths, max_len, overlap)
        for u, n in enumerate(lengths):
            items = np.arange(1, n + 1)
            expected = cut_windows(items, max_len, overlap)
            mine = [(s, l, c) for q, s, l, c in zip(sequence, start, length, context) if q == u]
            assert len(mine) == len(expected)
            for (s, l, c), (inputs, targets) in zip(mine, expected):
                np.testing.assert_array_equal(items[s : s + l], inputs)
                np.testing.assert_array_equal(np.where(np.arange(l) >= c, items[s + 1 : s + l + 1], 0), targets)


def test_inter_matrix_is_recboles():
    _, lean, *_ = prepared("SASRec", "lean")
    _, expanded, *_ = prepared("SASRec", "expanded")
    a, b = lean.inter_matrix(form="csr"), expanded.inter_matrix(form="csr")
    assert a.shape == b.shape and (a != b).nnz == 0 and a.nnz == b.nnz


def test_storage_grows_with_interactions_not_with_the_length():
    def stored_numbers(dataset):
        tensors = list(dataset.inter_feat.interaction.values())
        tensors += list(getattr(dataset, "sequence_feat", {}).values())
        return sum(t.numel() for t in tensors)

    lean = {L: stored_numbers(prepared("SASRec", "lean", MAX_ITEM_LIST_LENGTH=L)[1]) for L in (20, 200)}
    expanded = {L: stored_numbers(prepared("SASRec", "expanded", MAX_ITEM_LIST_LENGTH=L)[1]) for L in (20, 200)}
    assert lean[20] == lean[200] < 10 * 100_000  # a handful of numbers per interaction (ml-100k)
    assert expanded[200] > 8 * expanded[20] > 8 * lean[20]


def test_which_dataset_each_model_gets():
    assert storage_for(create_config("GRU4Rec", "ml-100k")) == "lean"
    assert storage_for(create_config("GRU4Rec", "ml-100k", config_dict={"sequence_storage": "expanded"})) == "expanded"
    assert storage_for(create_config("FEARec", "ml-100k")) == "expanded"  # reads the expanded lists itself
    assert storage_for(create_config("BPR", "ml-100k")) == "expanded"  # not sequential: RecBole's Dataset
    with pytest.raises(ConfigError, match="invalid value for 'sequence_storage': 'compact'"):
        create_config("LRURec", "ml-100k", config_dict={"sequence_storage": "compact"})


def test_recboles_own_create_dataset_picks_the_lean_dataset_for_plugin_models():
    config = Config(model="LRURec", dataset="ml-100k", config_dict={"MAX_ITEM_LIST_LENGTH": 20})
    dataset = recbole_create_dataset(config)
    assert isinstance(dataset, LeanSequentialDataset)
    train, _, _ = data_preparation(config, dataset)  # the split copies the dataset
    assert type(train._dataset) is type(dataset) and len(train._dataset[np.arange(2)]["item_id_list"]) == 2
    assert type(pickle.loads(pickle.dumps(train._dataset))) is type(dataset)  # save_dataset pickles it
    config = Config(model="LRURec", dataset="ml-100k", config_dict={"sequence_storage": "expanded"})
    assert type(recbole_create_dataset(config)) is SequentialDataset
    config = Config(model="SASRec", dataset="ml-100k", config_dict={"train_neg_sample_args": None})
    assert type(recbole_create_dataset(config)) is SequentialDataset  # RecBole's models keep RecBole's there


# --- whole runs: bit-identical metrics ---------------------------------------------------------
RUNS = {
    "LRURec": ("LRURec", {}),
    "LinRec": ("LinRec", {}),
    "GLINTRU": ("GLINTRU", {}),
    "SASRec": ("SASRec", {}),
    "GRU4Rec": ("GRU4Rec", {}),
    "BERT4Rec": ("BERT4Rec", {}),
    "SASRec BPR": ("SASRec", BPR),
    "LRURec all positions, history masked": ("LRURec", {"train_all_positions": True, "eval_mask_history": True}),
    "LinRec all positions BPR": ("LinRec", {"train_all_positions": True, "linrec_causal": True, **BPR}),
}


def two_epochs(tiny_run_dict, **settings):
    return {**tiny_run_dict, "epochs": 2, "metric_decimal_place": 10, **settings}


@pytest.fixture
def lean_batches(monkeypatch):
    """Counts the batches the lean dataset gathers (so a run cannot pass on RecBole's dataset alone)."""
    counter = {"batches": 0}
    original = LeanSequentialDataset.gather_lists

    def counting(self, *args):
        counter["batches"] += 1
        return original(self, *args)

    monkeypatch.setattr(LeanSequentialDataset, "gather_lists", counting)
    return counter


@pytest.mark.parametrize("case", RUNS)
def test_two_epoch_runs_end_with_bit_identical_metrics(case, tiny_run_dict, tmp_path, monkeypatch, lean_batches):
    monkeypatch.chdir(tmp_path)
    model, settings = RUNS[case]
    results, batches = {}, {}
    for storage in ("lean", "expanded"):
        before = lean_batches["batches"]
        config_dict = two_epochs(tiny_run_dict, sequence_storage=storage, **settings)
        results[storage] = run_recbole_linear(model, TINY_DATASET, config_dict=config_dict)
        batches[storage] = lean_batches["batches"] - before
    assert batches["lean"] > 0 and batches["expanded"] == 0
    lean, expanded = results["lean"], results["expanded"]
    assert dict(lean["best_valid_result"]) == dict(expanded["best_valid_result"])
    assert dict(lean["test_result"]) == dict(expanded["test_result"])
    assert lean["best_valid_score"] == expanded["best_valid_score"]


def test_a_resumed_lean_run_equals_an_uninterrupted_expanded_run(tiny_run_dict, tmp_path, monkeypatch, lean_batches):
    monkeypatch.chdir(tmp_path)
    settings = two_epochs(tiny_run_dict, epochs=3)
    reference = run_recbole_linear("LRURec", TINY_DATASET, config_dict=dict(settings, sequence_storage="expanded"))
    path = str(tmp_path / "resume.pth")
    state = crash_after_first_save("LRURec", dict(settings, sequence_storage="lean"), path)
    assert state["epoch"] == 0
    before = lean_batches["batches"]
    resumed = run_recbole_linear("LRURec", TINY_DATASET, config_dict=dict(settings, sequence_storage="lean", resume_file=path))
    assert lean_batches["batches"] > before
    assert dict(resumed["test_result"]) == dict(reference["test_result"])
    assert dict(resumed["best_valid_result"]) == dict(reference["best_valid_result"])


def test_a_checkpoint_evaluates_the_same_on_either_storage(tiny_run_dict, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = run_recbole_linear("SASRec", TINY_DATASET, config_dict=two_epochs(tiny_run_dict))
    _, _, dataset, *_ = load_data_and_model(run["saved_model_file"])
    assert isinstance(dataset, LeanSequentialDataset)
    _, _, dataset, *_ = load_data_and_model(run["saved_model_file"], ["--sequence_storage=expanded"])
    assert type(dataset) is SequentialDataset
    for storage in ("lean", "expanded"):
        _, valid, test = evaluate_checkpoint(run["saved_model_file"], [f"--sequence_storage={storage}"])
        assert test == dict(run["test_result"]) and valid == dict(run["best_valid_result"])


@pytest.mark.slow
@pytest.mark.parametrize("all_positions", [False, True])
def test_two_process_runs_end_with_the_same_metrics_on_either_storage(tmp_path, all_positions):
    from tests.test_distributed import N_USERS, DATA_SEED
    from tests.conftest import write_tiny_dataset

    write_tiny_dataset(str(tmp_path), n_users=N_USERS, seed=DATA_SEED)
    printed = {}
    for storage in ("lean", "expanded"):
        flags = tiny_flags(str(tmp_path), epochs=2, metric_decimal_place=10, sequence_storage=storage,
                           train_all_positions=all_positions, checkpoint_dir=str(tmp_path / storage))
        run = run_in_own_group(["--model=LRURec", "--nproc=2", f"--port={free_port()}", *flags], cwd=tmp_path)
        output = run.stdout + run.stderr
        assert run.returncode == 0, output[-3000:]
        assert f"sequence_storage: {storage}" in re.sub(r"\x1b\[[0-9;]*m", "", output)
        printed[storage] = (printed_metrics(output, "best valid"), printed_metrics(output, "test result"))
    assert printed["lean"] == printed["expanded"]


def test_the_interaction_file_is_read_as_recboles_reader_reads_it(tmp_path):
    """The C parser gives RecBole's DataFrame: tokens as written (leading zeros kept), floats to the bit."""
    from pandas.testing import assert_frame_equal
    from recbole.data.dataset import Dataset as RecBoleDataset
    from recbole.utils import FeatureSource

    rng = np.random.default_rng(1)
    floats = ["0.1", "1e-300", "123456789.123456789", "-0", "2.2250738585072014e-308", "0.30000000000000004"]
    floats += [repr(x) for x in rng.normal(size=40) * 10.0 ** rng.integers(-20, 20, size=40)]
    folder = tmp_path / "odd"
    folder.mkdir()
    with open(folder / "odd.inter", "w") as f:
        f.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        for i, value in enumerate(floats):
            f.write(f"{i % 5:03d}\t{'0' * (i % 3)}{i}\t{value}\t{i}\n")
    config = create_config("LRURec", "odd", config_dict={"data_path": str(tmp_path), **WITH_TIME_AND_RATING})
    dataset = create_dataset(config)
    path = str(folder / "odd.inter")
    ours = LeanSequentialDataset._load_feat(dataset, path, FeatureSource.INTERACTION)
    recboles = RecBoleDataset._load_feat(dataset, path, FeatureSource.INTERACTION)
    assert_frame_equal(ours, recboles, check_exact=True)
    assert ours["item_id"].iloc[1] == "01" and list(ours.columns) == ["user_id", "item_id", "rating", "timestamp"]
