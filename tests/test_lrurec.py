"""LRURec: the scan against the recurrence, the model against a plain reading of the official
computation, incremental inference against the parallel forward, padding, gradients, init."""
import math

import pytest
import torch
import torch.nn.functional as F

from recbole.data.interaction import Interaction

from recbole_linear.layers.lru import (
    LRULayer,
    lru_parallel_scan,
    lru_recurrent_scan,
)
from recbole_linear.model.lrurec import LRURec
from tests.helpers import ITEM_SEQ, ITEM_SEQ_LEN, POS_ITEM_ID, build_model, random_batch

N_ITEMS = 40
MAX_LEN = 20
HIDDEN = 32


def make_model(max_len=MAX_LEN, seed=0, **overrides):
    torch.manual_seed(seed)
    overrides.setdefault("hidden_size", HIDDEN)
    return build_model(LRURec, n_items=N_ITEMS, max_len=max_len, **overrides)


def make_batch(batch_size=6, max_len=MAX_LEN, seed=1, min_len=1):
    return random_batch(N_ITEMS, batch_size, max_len, min_len=min_len, generator=torch.Generator().manual_seed(seed))


def random_lambdas(width, generator, dtype=torch.float64):
    """Eigenvalues from the ring |lambda| in [0.5, 0.999], any phase."""
    modulus = 0.5 + 0.499 * torch.rand(width, generator=generator, dtype=dtype)
    phase = 2 * math.pi * torch.rand(width, generator=generator, dtype=dtype)
    return torch.polar(modulus, phase)


def complex_randn(*shape, generator, dtype=torch.float64):
    return torch.complex(
        torch.randn(*shape, generator=generator, dtype=dtype), torch.randn(*shape, generator=generator, dtype=dtype)
    )


# ---------------------------------------------------------------------------------------
# the parallel scan
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("length", [1, 2, 7, 64, 100, 200])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_parallel_scan_equals_recurrence(length, dtype):
    generator = torch.Generator().manual_seed(length)
    inputs = complex_randn(3, length, 8, generator=generator, dtype=dtype)
    lambdas = random_lambdas(8, generator, dtype)
    expected = lru_recurrent_scan(inputs, lambdas)
    actual = lru_parallel_scan(inputs, lambdas)
    tolerance = 1e-12 if dtype == torch.float64 else 2e-5
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("length", [1, 2, 7, 64, 100, 200])
def test_parallel_scan_gradients_equal_recurrence_gradients(length):
    """The hand-written backward (reverse scan) against autograd through the recurrence."""
    generator = torch.Generator().manual_seed(100 + length)
    inputs = complex_randn(3, length, 8, generator=generator).requires_grad_()
    log_modulus = (-0.5 * torch.rand(8, generator=generator, dtype=torch.float64)).requires_grad_()
    phase = (2 * math.pi * torch.rand(8, generator=generator, dtype=torch.float64)).requires_grad_()
    upstream = complex_randn(3, length, 8, generator=generator)

    def gradients(scan):
        lambdas = torch.exp(torch.complex(log_modulus, phase))
        loss = (scan(inputs, lambdas) * upstream).real.sum()
        return torch.autograd.grad(loss, (inputs, log_modulus, phase))

    for actual, expected in zip(gradients(lru_parallel_scan), gradients(lru_recurrent_scan)):
        torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("length", [1, 2, 7, 64, 100, 200])
def test_lru_layer_on_right_padded_rows_matches_recurrence_from_zero_state(length):
    """Real positions of right-padded rows (padding holds arbitrary vectors) equal the
    recurrence over that row's real prefix alone, from a zero state."""
    torch.manual_seed(length)
    layer = LRULayer(hidden_size=16, dropout_prob=0.2).double().eval()
    lengths = torch.randint(1, length + 1, (5,))
    lengths[0] = length
    x = torch.randn(5, length, 16, dtype=torch.float64)  # positions >= lengths are "padding"
    actual = layer(x)
    for row, n in enumerate(lengths.tolist()):
        prefix = x[row : row + 1, :n]
        states = lru_recurrent_scan(layer.project_in(prefix), layer.lambdas())
        expected = layer.project_out(states, prefix)
        torch.testing.assert_close(actual[row, :n], expected[0], rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------------------------
# the model against the official computation, written plainly (complex tensors, loops)
# ---------------------------------------------------------------------------------------
def official_scores(model, item_ids):
    """Scores after one user's history ``item_ids`` (no padding), as the official code computes
    them in eval mode: complex B and C, the recurrence from zero, post-LN, ``h E^T + b_o``."""
    embedding = model.item_embedding.weight
    x = F.layer_norm(embedding[item_ids], (model.hidden_size,), model.embedding_layer_norm.weight,
                     model.embedding_layer_norm.bias, model.layer_norm_eps)
    for block in model.lru_blocks:
        lru = block.lru_layer
        lambdas = torch.exp(torch.complex(-torch.exp(lru.nu_log), torch.exp(lru.theta_log)))
        gamma = torch.exp(lru.gamma_log)
        b_matrix = torch.complex(lru.in_proj_weight_real, lru.in_proj_weight_imag)
        b_bias = torch.complex(lru.in_proj_bias_real, lru.in_proj_bias_imag)
        c_matrix = torch.complex(lru.out_proj_weight_real, lru.out_proj_weight_imag)
        state = torch.zeros(lru.state_size, dtype=b_matrix.dtype)
        outputs = []
        for t in range(len(item_ids)):
            state = lambdas * state + (b_matrix @ x[t].to(b_matrix.dtype) + b_bias) * gamma
            y = (c_matrix @ state).real + lru.out_proj_bias
            outputs.append(lru.layer_norm(y + x[t]))
        y = torch.stack(outputs)
        ffn = block.feed_forward
        x = ffn.layer_norm(y + ffn.w_2(F.gelu(ffn.w_1(y))))
    return x[-1] @ embedding.t() + model.output_bias


def test_full_sort_predict_matches_official_computation():
    model = make_model().eval()
    batch = make_batch()
    with torch.no_grad():
        scores = model.full_sort_predict(batch)
        for row, n in enumerate(batch[ITEM_SEQ_LEN].tolist()):
            expected = official_scores(model, batch[ITEM_SEQ][row, :n])
            torch.testing.assert_close(scores[row], expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------
# incremental inference
# ---------------------------------------------------------------------------------------
def test_step_matches_forward_and_full_sort_predict():
    model = make_model().eval()
    batch = make_batch(batch_size=7)
    item_seq, item_seq_len = batch[ITEM_SEQ], batch[ITEM_SEQ_LEN]
    with torch.no_grad():
        state = model.init_state(item_seq.size(0))
        step_outputs = []
        for t in range(item_seq.size(1)):
            seq_output, state = model.step(item_seq[:, t], state)
            step_outputs.append(seq_output)
        # each user's output after its own last item
        last = torch.stack(step_outputs, dim=1)[torch.arange(item_seq.size(0)), item_seq_len - 1]
        torch.testing.assert_close(last, model.forward(item_seq, item_seq_len), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(
            model.scores_from_output(last), model.full_sort_predict(batch), rtol=1e-5, atol=1e-5
        )


def test_state_shape_and_dtype_do_not_grow_with_history():
    model = make_model().eval()
    state = model.init_state(3)
    assert state.shape == (model.n_layers, 3, 2 * HIDDEN) and state.dtype == torch.complex64
    assert torch.count_nonzero(state) == 0
    with torch.no_grad():
        for item in (5, 7, 9):
            _, new_state = model.step(torch.full((3,), item), state)
            assert new_state.shape == state.shape
            assert not torch.equal(new_state, state)
            state = new_state


# ---------------------------------------------------------------------------------------
# padding
# ---------------------------------------------------------------------------------------
def test_scores_do_not_depend_on_max_item_list_length():
    """15 more padding columns (the scan pads 35 to 64 instead of 20 to 32) change no score. forward
    cuts columns past the longest row, so the blocks are also run here on all 35 columns uncut."""
    short = make_model(max_len=MAX_LEN).eval()
    long = make_model(max_len=35, seed=123).eval()
    long.load_state_dict(short.state_dict())
    batch = make_batch(batch_size=6, max_len=MAX_LEN)
    long_seq = F.pad(batch[ITEM_SEQ], (0, 35 - MAX_LEN))
    long_batch = Interaction({ITEM_SEQ: long_seq, ITEM_SEQ_LEN: batch[ITEM_SEQ_LEN], POS_ITEM_ID: batch[POS_ITEM_ID]})
    with torch.no_grad():
        hidden = long.embed(long_seq)  # [B, 35, H]: padding columns pass through every scan
        for lru_block in long.lru_blocks[:-1]:
            hidden = lru_block(hidden)
        uncut = long.lru_blocks[-1](hidden, output_index=batch[ITEM_SEQ_LEN] - 1)
        torch.testing.assert_close(short(batch[ITEM_SEQ], batch[ITEM_SEQ_LEN]), uncut, rtol=0, atol=1e-6)
        torch.testing.assert_close(
            short.full_sort_predict(batch), long.full_sort_predict(long_batch), rtol=0, atol=1e-6
        )
        torch.testing.assert_close(short.predict(batch), long.predict(long_batch), rtol=0, atol=1e-6)


def test_padding_in_a_batch_does_not_leak_into_short_rows():
    """A short row scored inside a batch (right-padded up to the longest row, padding passing
    through the scan) equals the same row scored alone with no padding."""
    model = make_model().eval()
    batch = make_batch(batch_size=6, min_len=2)
    item_seq, item_seq_len = batch[ITEM_SEQ], batch[ITEM_SEQ_LEN]
    item_seq_len[0] = MAX_LEN  # some row spans the whole window, so nothing is cut
    with torch.no_grad():
        in_batch = model.full_sort_predict(batch)
        for row, n in enumerate(item_seq_len.tolist()):
            alone = Interaction({ITEM_SEQ: item_seq[row : row + 1, :n], ITEM_SEQ_LEN: torch.tensor([n])})
            torch.testing.assert_close(in_batch[row : row + 1], model.full_sort_predict(alone), rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------------
# scores, loss, gradients
# ---------------------------------------------------------------------------------------
def test_predict_equals_gathered_full_sort_predict():
    model = make_model().eval()
    batch = make_batch()
    with torch.no_grad():
        expected = model.full_sort_predict(batch).gather(1, batch[POS_ITEM_ID].unsqueeze(1)).squeeze(1)
        torch.testing.assert_close(model.predict(batch), expected, rtol=1e-6, atol=1e-6)


def test_ce_loss_is_cross_entropy_of_full_sort_scores_with_output_bias():
    model = make_model().eval()
    batch = make_batch()
    with torch.no_grad():
        model.output_bias.add_(torch.linspace(-1, 1, N_ITEMS))  # the bias must matter
        expected = F.cross_entropy(model.full_sort_predict(batch), batch[POS_ITEM_ID])
        torch.testing.assert_close(model.calculate_loss(batch), expected)


def test_bpr_loss_uses_the_same_scores():
    model = make_model(loss_type="BPR").eval()
    batch = make_batch()
    negatives = torch.randint(1, N_ITEMS, (6,), generator=torch.Generator().manual_seed(5))
    batch.update(Interaction({"neg_item_id": negatives}))
    with torch.no_grad():
        scores = model.full_sort_predict(batch)
        pos = scores.gather(1, batch[POS_ITEM_ID].unsqueeze(1)).squeeze(1)
        neg = scores.gather(1, negatives.unsqueeze(1)).squeeze(1)
        expected = -torch.log(1e-10 + torch.sigmoid(pos - neg)).mean()  # RecBole's BPRLoss
        torch.testing.assert_close(model.calculate_loss(batch), expected)


@pytest.mark.parametrize("train_mode", [False, True])
def test_every_parameter_gets_a_nonzero_gradient(train_mode):
    model = make_model()
    model.train(train_mode)
    torch.manual_seed(3)
    model.calculate_loss(make_batch(batch_size=8)).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.count_nonzero(param.grad) > 0, name
        assert torch.isfinite(param.grad).all(), name


def test_all_parameters_are_real():
    model = make_model()
    assert not any(param.is_complex() for param in model.parameters())
    assert not any(buffer.is_complex() for buffer in model.buffers())
    # Im(b_C) is not a parameter (it cannot change the output)
    names = {name.split(".")[-1] for name, _ in model.named_parameters()}
    assert "out_proj_bias" in names and "out_proj_bias_imag" not in names


def test_eval_forward_is_deterministic_and_train_forward_is_not():
    model = make_model()
    batch = make_batch()
    model.eval()
    with torch.no_grad():
        assert torch.equal(model.full_sort_predict(batch), model.full_sort_predict(batch))
        model.train()
        assert not torch.equal(model.full_sort_predict(batch), model.full_sort_predict(batch))


def test_dropout_sits_before_each_layer_norm_in_train_mode():
    """Post-LN everywhere: in train mode every sub-layer's output is still LayerNorm-normalised
    (LN weights are 1 and biases 0 at init), so dropout acts before the LN, as officially."""
    # a tiny eps so that LN outputs have variance 1 even for small-variance inputs
    model = make_model(dropout_prob=0.5, lru_dropout_prob=0.5, layer_norm_eps=1e-12).train()
    item_seq = make_batch(batch_size=4)[ITEM_SEQ]
    block = model.lru_blocks[0]
    embedded = model.embed(item_seq)
    after_lru = block.lru_layer(embedded)
    after_ffn = block.feed_forward(after_lru)
    for output in (embedded, after_lru, after_ffn):
        torch.testing.assert_close(output.mean(-1), torch.zeros(output.shape[:-1]), rtol=0, atol=1e-5)
        torch.testing.assert_close(output.var(-1, unbiased=False), torch.ones(output.shape[:-1]), rtol=0, atol=1e-3)
    # and dropout is on
    assert not torch.equal(model.embed(item_seq), embedded)
    assert not torch.equal(block.lru_layer(embedded), after_lru)
    assert not torch.equal(block.feed_forward(after_lru), after_ffn)


# ---------------------------------------------------------------------------------------
# initialisation, config, optimizer groups
# ---------------------------------------------------------------------------------------
def lru_layers(model):
    return [block.lru_layer for block in model.lru_blocks]


def test_ring_init_of_eigenvalues_and_gamma():
    model = make_model(hidden_size=64)  # 2 layers x 128 eigenvalues
    for layer in lru_layers(model):
        modulus = torch.exp(-torch.exp(layer.nu_log))
        phase = torch.exp(layer.theta_log)
        assert layer.nu_log.shape == (2 * 64,)
        assert modulus.min() >= 0.8 - 1e-6 and modulus.max() <= 0.99 + 1e-6
        assert phase.min() >= 0 and phase.max() <= 2 * math.pi
        # |lambda|^2 ~ U[0.64, 0.9801] and phase ~ U[0, 2 pi] spread over their ranges
        assert (modulus**2).min() < 0.70 and (modulus**2).max() > 0.92
        assert phase.min() < 1.0 and phase.max() > 2 * math.pi - 1.0
        torch.testing.assert_close(torch.exp(layer.gamma_log), torch.sqrt(1 - modulus**2))
        torch.testing.assert_close(layer.lambdas().abs(), modulus)


def test_truncated_normal_init_everywhere_but_layer_norms_and_log_params():
    model = make_model(hidden_size=64)
    initialised = {n: p for n, p in model.named_parameters() if "layer_norm" not in n and not n.endswith("_log")}
    expected = {
        "item_embedding.weight", "output_bias",
        *(f"lru_blocks.{i}.lru_layer.{name}" for i in range(2) for name in (
            "in_proj_weight_real", "in_proj_weight_imag", "in_proj_bias_real", "in_proj_bias_imag",
            "out_proj_weight_real", "out_proj_weight_imag", "out_proj_bias")),
        *(f"lru_blocks.{i}.feed_forward.{name}" for i in range(2) for name in ("w_1.weight", "w_1.bias",
                                                                               "w_2.weight", "w_2.bias")),
    }
    assert set(initialised) == expected
    for name, param in initialised.items():
        assert param.abs().max() <= 0.04, name
        assert param.abs().max() > 0.02, name  # not zero, not a uniform in [-0.02, 0.02]
    everything = torch.cat([p.flatten() for p in initialised.values()])
    # the std of N(0, 0.02) truncated at 2 std is 0.02 * 0.8796
    assert abs(everything.std().item() - 0.02 * 0.8796) < 0.0005
    assert abs(everything.mean().item()) < 0.0005
    for name, param in model.named_parameters():
        if "layer_norm" in name:
            expected_value = 1.0 if name.endswith("weight") else 0.0
            assert torch.all(param == expected_value), name


def test_property_file_defaults_are_the_official_ones():
    model = make_model(hidden_size=64)
    assert model.hidden_size == 64 and model.n_layers == 2 and len(model.lru_blocks) == 2
    assert model.dropout_prob == 0.2 and model.lru_dropout_prob == 0.2
    assert (model.r_min, model.r_max) == (0.8, 0.99)
    assert model.max_phase == pytest.approx(2 * math.pi)
    assert model.layer_norm_eps == 1e-5 and model.loss_type == "CE"
    block = model.lru_blocks[0]
    assert block.lru_layer.state_size == 128
    assert block.feed_forward.w_1.out_features == 256
    assert block.lru_layer.dropout.p == 0.2 and block.feed_forward.dropout.p == 0.2
    assert model.embedding_dropout.p == 0.2
    assert model.item_embedding.padding_idx is None
    from tests.helpers import load_model_defaults

    defaults = load_model_defaults("LRURec")
    assert defaults["learner"] == "adamw" and defaults["learning_rate"] == 0.001
    assert defaults["weight_decay"] == 0.01 and defaults["optimizer_eps"] == 1e-9
    assert defaults["clip_grad_norm"] == {"max_norm": 5.0, "norm_type": 2}


def test_optimizer_param_groups_follow_the_official_no_decay_rule():
    model = make_model()
    groups = model.optimizer_param_groups(0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in groups[0]["params"]}
    not_decayed = {names[id(p)] for p in groups[1]["params"]}
    assert groups[0]["weight_decay"] == 0.01 and groups[1]["weight_decay"] == 0.0
    assert decayed.isdisjoint(not_decayed) and decayed | not_decayed == set(names.values())
    # written out, not derived from the rule: every bias and every LayerNorm parameter, nothing else
    per_block = ["feed_forward.layer_norm.bias", "feed_forward.layer_norm.weight", "feed_forward.w_1.bias",
                 "feed_forward.w_2.bias", "lru_layer.in_proj_bias_imag", "lru_layer.in_proj_bias_real",
                 "lru_layer.layer_norm.bias", "lru_layer.layer_norm.weight", "lru_layer.out_proj_bias"]
    assert not_decayed == {"embedding_layer_norm.bias", "embedding_layer_norm.weight", "output_bias"} | {
        f"lru_blocks.{i}.{name}" for i in range(2) for name in per_block}
    for i in range(2):
        for name in ("nu_log", "theta_log", "gamma_log", "in_proj_weight_imag", "out_proj_weight_real"):
            assert f"lru_blocks.{i}.lru_layer.{name}" in decayed
    assert "item_embedding.weight" in decayed
    assert {"output_bias", "embedding_layer_norm.weight", "lru_blocks.0.lru_layer.in_proj_bias_imag"} <= not_decayed
    # usable as is
    optimizer = torch.optim.AdamW(groups, lr=1e-3, weight_decay=0.5)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.01, 0.0]
