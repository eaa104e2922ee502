"""The block-wise cross-entropy (ce_block_rows) against the plain full-matrix form: values and
gradients in float64, bf16 within a stated tolerance, and the all-position trainer's use of it."""
import pytest
import torch

from recbole_linear import all_positions
from recbole_linear.all_positions import all_position_loss
from recbole_linear.fused_cross_entropy import cross_entropy_reference, fused_cross_entropy
from recbole_linear.model.linrec import LinRec
from recbole_linear.model.lrurec import LRURec
from recbole_linear.precision import autocast, cpu_supports_bf16
from tests.helpers import build_model


def inputs(n_rows=50, n_items=37, hidden=6, bias=True, dtype=torch.float64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    h = (3 * torch.randn(n_rows, hidden, generator=generator, dtype=dtype)).requires_grad_()
    weight = torch.randn(n_items, hidden, generator=generator, dtype=dtype).requires_grad_()
    b = torch.randn(n_items, generator=generator, dtype=dtype).requires_grad_() if bias else None
    targets = torch.randint(0, n_items, (n_rows,), generator=generator)
    return h, weight, b, targets


def value_and_grads(loss_fn, h, weight, b, targets):
    for tensor in (h, weight, b):
        if tensor is not None:
            tensor.grad = None
    loss = loss_fn(h, weight, b, targets)
    (2.5 * loss).backward()  # a non-unit incoming gradient: backward must scale by it
    return loss.detach(), [t.grad.clone() for t in (h, weight, b) if t is not None]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("block_rows", [1, 7, 50, 1000])
def test_blockwise_cross_entropy_equals_the_plain_form_in_float64(bias, block_rows):
    h, weight, b, targets = inputs(bias=bias)
    expected, expected_grads = value_and_grads(cross_entropy_reference, h, weight, b, targets)
    value, grads = value_and_grads(lambda *a: fused_cross_entropy(*a, block_rows=block_rows), h, weight, b, targets)
    torch.testing.assert_close(value, expected, rtol=1e-12, atol=1e-12)
    assert len(grads) == len(expected_grads)
    for grad, expected_grad in zip(grads, expected_grads):
        assert grad.dtype == torch.float64
        torch.testing.assert_close(grad, expected_grad, rtol=1e-10, atol=1e-12)


def test_large_logits_do_not_overflow():
    h, weight, b, targets = inputs()
    with torch.no_grad():
        h.mul_(200.0)  # logits in the thousands: exp would overflow without the row maximum
    value, grads = value_and_grads(fused_cross_entropy, h, weight, b, targets)
    expected, expected_grads = value_and_grads(cross_entropy_reference, h, weight, b, targets)
    assert torch.isfinite(value) and all(torch.isfinite(g).all() for g in grads)
    torch.testing.assert_close(value, expected)
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad)


@pytest.mark.skipif(not cpu_supports_bf16(), reason="this CPU has no native bf16 products")
def test_bf16_blocks_are_within_tolerance_of_the_fp32_plain_form():
    """The block products run in bf16 under autocast (the result differs from fp32) while the
    softmax and sums are fp32: value within 0.5% and each gradient within 3% of its largest entry
    of fp32 (logits of standard deviation ~6), and no further from fp32 than plain autocast is."""
    h, weight, b, targets = inputs(n_rows=300, n_items=500, hidden=32, dtype=torch.float32)
    with torch.no_grad():
        h.div_(3.0)
    expected, expected_grads = value_and_grads(cross_entropy_reference, h, weight, b, targets)
    with autocast("cpu", torch.bfloat16):
        value, grads = value_and_grads(lambda *a: fused_cross_entropy(*a, block_rows=64), h, weight, b, targets)
        plain, plain_grads = value_and_grads(cross_entropy_reference, h, weight, b, targets)
    assert value.dtype == torch.float32
    assert value.item() != expected.item()
    assert abs(value.item() - expected.item()) <= 0.005 * abs(expected.item())
    assert abs(value.item() - expected.item()) <= 1.5 * abs(plain.item() - expected.item()) + 1e-6
    for grad, plain_grad, expected_grad in zip(grads, plain_grads, expected_grads):
        assert grad.dtype == torch.float32
        error = (grad - expected_grad).abs().max()
        assert error <= 0.03 * expected_grad.abs().max()
        assert error <= 1.5 * (plain_grad.float() - expected_grad).abs().max()


@pytest.mark.parametrize("model_class, overrides", [(LRURec, {}), (LinRec, {"linrec_causal": True})])
def test_all_position_loss_is_the_same_blockwise_and_whole(model_class, overrides):
    torch.manual_seed(0)
    model = build_model(model_class, n_items=30, hidden_size=8, embedding_size=8, inner_size=16, n_layers=1, n_heads=2,
                        **overrides).double()
    model.eval()  # no dropout: both forms see the same function
    generator = torch.Generator().manual_seed(1)
    item_seq = torch.randint(1, 30, (4, 20), generator=generator)
    lengths = torch.tensor([20, 13, 5, 1])
    item_seq[torch.arange(20).unsqueeze(0) >= lengths.unsqueeze(1)] = 0
    targets = torch.randint(1, 30, (4, 20), generator=generator).masked_fill(item_seq == 0, 0)
    batch = {model.ITEM_SEQ: item_seq, model.ITEM_SEQ_LEN: lengths, "targets": targets}
    results = []
    for block_rows in (0, 8):
        model.zero_grad()
        loss = all_position_loss(model, batch, "targets", ce_block_rows=block_rows)
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (whole, whole_grads), (blocks, block_grads) = results
    torch.testing.assert_close(blocks, whole, rtol=1e-12, atol=1e-12)
    assert block_grads.keys() == whole_grads.keys() and "item_embedding.weight" in block_grads
    for name in whole_grads:
        torch.testing.assert_close(block_grads[name], whole_grads[name], rtol=1e-9, atol=1e-12, msg=name)


def test_trainer_computes_all_position_ce_blockwise_by_default(tiny_run_dict, tmp_path, monkeypatch):
    from recbole_linear.config import create_config
    from recbole_linear.quick_start import prepare
    from tests.conftest import TINY_DATASET

    monkeypatch.chdir(tmp_path)
    calls = []
    original = all_positions.fused_cross_entropy
    monkeypatch.setattr(all_positions, "fused_cross_entropy", lambda *a: calls.append(a[-1]) or original(*a))
    for block_rows, expected in ((None, [128]), (0, [])):
        calls.clear()
        settings = dict(tiny_run_dict, train_all_positions=True)
        if block_rows is not None:
            settings["ce_block_rows"] = block_rows
        config = create_config("SASRec", TINY_DATASET, config_dict=settings)
        _, (train_data, _, _), _, trainer = prepare(config)
        trainer._train_epoch(train_data, 0)
        assert sorted(set(calls)) == expected
