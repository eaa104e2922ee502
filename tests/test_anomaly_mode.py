"""``detect_anomaly``: RecBole's import turns torch's anomaly mode on; every run sets it from the config.

The mode is a debugging aid: it must change no number (SASRec's loss and gradients are checked
bit for bit) while it costs time, so the plugin's default is off, for baselines and plugin models alike.
"""
import subprocess
import sys

import torch

import recbole.model.sequential_recommender  # noqa: F401  (its SINE module enables anomaly mode)
from recbole_linear.config import create_config
from recbole_linear.quick_start import prepare
from tests.helpers import FakeDataset, base_config, random_batch

from recbole.model.sequential_recommender import SASRec


def test_recbole_import_enables_anomaly_mode_and_default_is_off():
    # in a fresh interpreter: this process imported RecBole's models long ago
    code = ("import torch; before = torch.is_anomaly_enabled(); import recbole.model.sequential_recommender; "
            "print(before, torch.is_anomaly_enabled())")
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert shown == ["False", "True"]
    assert create_config("SASRec", "ml-100k")["detect_anomaly"] is False


def test_prepare_applies_the_configured_mode(tiny_run_dict):
    torch.autograd.set_detect_anomaly(True)
    try:
        prepare(create_config("SASRec", "tiny", config_dict=tiny_run_dict))
        assert not torch.is_anomaly_enabled()
        prepare(create_config("SASRec", "tiny", config_dict={**tiny_run_dict, "detect_anomaly": True}))
        assert torch.is_anomaly_enabled()
    finally:
        torch.autograd.set_detect_anomaly(False)


def _loss_and_grads(model, batch, anomaly):
    torch.autograd.set_detect_anomaly(anomaly)
    try:
        model.zero_grad()
        torch.manual_seed(7)  # the same dropout masks in both modes
        loss = model.calculate_loss(batch)
        loss.backward()
        return loss.detach().clone(), [p.grad.clone() for p in model.parameters()]
    finally:
        torch.autograd.set_detect_anomaly(False)


def test_anomaly_mode_changes_no_number():
    settings = {
        "n_layers": 2, "n_heads": 2, "hidden_size": 32, "inner_size": 64, "hidden_dropout_prob": 0.5,
        "attn_dropout_prob": 0.5, "hidden_act": "gelu", "layer_norm_eps": 1e-12, "initializer_range": 0.02,
        "loss_type": "CE",
    }
    model = SASRec(base_config(max_len=20, **settings), FakeDataset(50))
    batch = random_batch(50, batch_size=16, max_len=20, generator=torch.Generator().manual_seed(0))
    loss_on, grads_on = _loss_and_grads(model, batch, anomaly=True)
    loss_off, grads_off = _loss_and_grads(model, batch, anomaly=False)
    assert torch.equal(loss_on, loss_off)
    assert all(torch.equal(a, b) for a, b in zip(grads_on, grads_off))
