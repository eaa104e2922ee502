"""Shared pieces of the benchmark scripts: model builders on synthetic data, timers, the machine.

Models are built exactly as RecBole builds them (``Model(config, dataset)``), on a stand-in
dataset that only answers ``num('item_id')``, and fed synthetic full-length histories: the
benchmarks measure compute, not data loading.
"""
import math
import os
import platform
import resource
import statistics
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import recbole  # noqa: E402
import torch  # noqa: E402
from recbole.data.interaction import Interaction  # noqa: E402

import recbole_linear  # noqa: E402,F401  (registers the plugin models)
from recbole_linear.config import load_model_properties, read_yaml  # noqa: E402
from recbole_linear.registry import get_model  # noqa: E402

# Importing RecBole's models switches torch's anomaly mode on for the process (its SINE module);
# runs turn it off (the ``detect_anomaly`` key, default False), and so do the benchmarks: import
# RecBole's models now, so that no later lazy import (``get_model``) turns it back on.
import recbole.model.sequential_recommender  # noqa: E402,F401

torch.autograd.set_detect_anomaly(False)

RESULTS_DIR = os.path.join(REPO_ROOT, "benchmarks", "results")


class SyntheticDataset:
    """Stands in for a RecBole dataset: answers ``num('item_id')``."""

    def __init__(self, n_items):
        self.n_items = n_items

    def num(self, field):
        return self.n_items


def base_config(max_len, device):
    return {
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "LIST_SUFFIX": "_list",
        "ITEM_LIST_LENGTH_FIELD": "item_length",
        "NEG_PREFIX": "neg_",
        "MAX_ITEM_LIST_LENGTH": max_len,
        "device": torch.device(device),
        # BERT4Rec reads the field names RecBole's mask transform would set
        "MASK_ITEM_SEQ": "Mask_item_id_list",
        "POS_ITEMS": "Pos_item_id",
        "NEG_ITEMS": "Neg_item_id",
        "MASK_INDEX": "MASK_INDEX",
    }


def recbole_model_properties(model_name):
    """RecBole's own property yaml for a built-in model (as a dict)."""
    path = os.path.join(os.path.dirname(recbole.__file__), "properties", "model", f"{model_name}.yaml")
    return read_yaml(path)


def build_model(model_name, max_len, n_items, overrides, device="cpu"):
    """``model_name`` with its default properties, then ``overrides``, on a synthetic dataset."""
    model_class = get_model(model_name)
    config = load_model_properties(model_name) or recbole_model_properties(model_class.__name__)
    config.update(base_config(max_len, device))
    config.update(overrides)
    return model_class(config, SyntheticDataset(n_items)).to(device)


def make_batch(model, batch_size, seq_len, n_items, device="cpu", seed=0):
    """Full-length histories (no padding): the long-sequence case. BERT4Rec gets its masked fields."""
    generator = torch.Generator().manual_seed(seed)
    item_seq = torch.randint(1, n_items, (batch_size, seq_len), generator=generator)
    fields = {
        "item_id_list": item_seq,
        "item_length": torch.full((batch_size,), seq_len, dtype=torch.long),
        "item_id": torch.randint(1, n_items, (batch_size,), generator=generator),
    }
    if type(model).__name__ == "BERT4Rec":
        # as RecBole's MaskItemSequence transform: mask int(ratio * L) positions
        mask_len = model.mask_item_length
        positions = torch.stack([torch.randperm(seq_len, generator=generator)[:mask_len] for _ in range(batch_size)])
        masked = item_seq.clone()
        masked.scatter_(1, positions, model.mask_token)
        fields[model.MASK_ITEM_SEQ] = masked
        fields[model.POS_ITEMS] = item_seq.gather(1, positions)
        fields[model.NEG_ITEMS] = torch.randint(1, n_items, (batch_size, mask_len), generator=generator)
        fields[model.MASK_INDEX] = positions
    return Interaction(fields).to(device)


def inference_step(model, interaction, set_mode=True):
    """``full_sort_predict`` under ``torch.no_grad()``, in eval mode (set here unless ``set_mode`` is
    False: a caller that sets it outside the timed call)."""
    if set_mode:
        model.eval()
    with torch.no_grad():
        model.full_sort_predict(interaction)


def train_step(model, optimizer, interaction, set_to_none=False, set_mode=True):
    """``calculate_loss`` + ``backward`` + ``optimizer.step()`` in train mode (``set_mode`` as above)."""
    if set_mode:
        model.train()
    optimizer.zero_grad(set_to_none=set_to_none)
    model.calculate_loss(interaction).backward()
    optimizer.step()


def timed(fn, *args, device="cpu"):
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn(*args)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def median_ms(seconds):
    return 1000.0 * statistics.median(seconds)


def peak_rss_mb():
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def fit_exponent(lengths, times):
    """Least-squares slope of log(time) against log(L)."""
    xs = [math.log(length) for length in lengths]
    ys = [math.log(t) for t in times]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    numerator = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys))
    denominator = sum((x - mean_x) ** 2 for x in xs)
    return numerator / denominator


def cpu_name():
    """The CPU's model name from /proc/cpuinfo (Linux), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description(device="cpu"):
    if device.startswith("cuda"):
        hardware = torch.cuda.get_device_name(0)
    else:
        hardware = f"{cpu_name()}, {os.cpu_count()} cores"
    return (
        f"{hardware}; Python {platform.python_version()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads"
    )
