"""The L2-normalised linear attention layer (recbole_linear/layers/linear_attention.py).

The fast forms (non-causal product order, chunked causal form) are checked against the explicit
quadratic reference and against an independent transcription of the official LinRec computation.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from recbole_linear.layers.linear_attention import (
    LinearMultiHeadAttention,
    elu_l2_feature_map,
    linear_attention,
    linear_attention_reference,
)

MODES = [  # (padding mask on, causal)
    pytest.param(False, False, id="default"),
    pytest.param(True, False, id="padding"),
    pytest.param(False, True, id="causal"),
    pytest.param(True, True, id="causal+padding"),
]


def random_qkv(batch_size, n_heads, seq_len, head_size, seed, dtype=torch.float64, requires_grad=False):
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.randn(batch_size, n_heads, seq_len, head_size, generator=generator, dtype=dtype).requires_grad_(
            requires_grad
        )
        for _ in range(3)
    ]


def right_padding_mask(lengths, seq_len):
    """[B, L] bool, True at positions < length (RecBole pads on the right)."""
    return torch.arange(seq_len).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)


def official_form(query, key, value):
    """The official computation transcribed from the spec (linrec.md §2): keys laid out as
    [B,H,d_h,L] and normalised over dim 2 (d_h), queries over dim 3, then Q̂ @ (K̂ᵀ @ V) / √d_h."""
    key_t = key.transpose(-2, -1)  # [B,H,d_h,L], the official layout
    elu_query, elu_key = F.elu(query), F.elu(key_t)
    query_hat = elu_query * (1 / torch.norm(elu_query, dim=3, p=2)).unsqueeze(3)
    key_hat = elu_key * (1 / torch.norm(elu_key, dim=2, p=2)).unsqueeze(2)
    return torch.matmul(query_hat, torch.matmul(key_hat, value)) / math.sqrt(query.size(-1))


# ---------------------------------------------------------------- feature map


def test_feature_map_hand_computed_values():
    # ELU(3, 4) = (3, 4) -> (0.6, 0.8); ELU(-ln 2) = -0.5, so (-ln 2, 0) -> (-0.5, 0) -> (-1, 0): no "+1"
    x = torch.tensor([[3.0, 4.0], [-math.log(2.0), 0.0]], dtype=torch.float64)
    expected = torch.tensor([[0.6, 0.8], [-1.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(elu_l2_feature_map(x), expected, rtol=0, atol=1e-15)


def test_feature_map_unit_norm_per_vector_over_last_dim():
    x = torch.randn(3, 4, 9, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    norms = elu_l2_feature_map(x).norm(dim=-1)
    torch.testing.assert_close(norms, torch.ones_like(norms), rtol=0, atol=1e-12)


def test_eps_leaves_non_degenerate_outputs_bit_identical():
    query, key, value = random_qkv(2, 3, 37, 8, seed=1, dtype=torch.float32)
    no_eps = F.elu(query) * (1.0 / torch.linalg.vector_norm(F.elu(query), dim=-1, keepdim=True))
    assert torch.equal(elu_l2_feature_map(query), no_eps)

    key_no_eps = F.elu(key) * (1.0 / torch.linalg.vector_norm(F.elu(key), dim=-1, keepdim=True))
    expected = torch.matmul(no_eps, torch.matmul(key_no_eps.transpose(-2, -1), value)) / math.sqrt(8)
    assert torch.equal(linear_attention(query, key, value), expected)


def test_eps_turns_zero_vector_into_zero_instead_of_nan():
    zero = torch.zeros(2, 5)
    no_eps = F.elu(zero) * (1.0 / torch.linalg.vector_norm(F.elu(zero), dim=-1, keepdim=True))
    assert torch.isnan(no_eps).all()  # what the official code would produce
    assert torch.equal(elu_l2_feature_map(zero), zero)


# ---------------------------------------------------------------- parity with the reference


@pytest.mark.parametrize("use_padding, causal", MODES)
@pytest.mark.parametrize("seq_len", [1, 7, 64, 100])
def test_matches_quadratic_reference(seq_len, use_padding, causal):
    query, key, value = random_qkv(3, 2, seq_len, 8, seed=seq_len)
    padding_mask = right_padding_mask([seq_len, max(1, seq_len // 2), 1], seq_len) if use_padding else None
    fast = linear_attention(query, key, value, padding_mask, causal=causal, chunk_size=16)
    slow = linear_attention_reference(query, key, value, padding_mask, causal=causal)
    assert fast.shape == (3, 2, seq_len, 8)
    torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("use_padding, causal", MODES)
@pytest.mark.parametrize("seq_len", [1, 7, 64, 100])
def test_gradients_match_quadratic_reference(seq_len, use_padding, causal):
    inputs_fast = random_qkv(2, 2, seq_len, 4, seed=10 + seq_len, requires_grad=True)
    inputs_slow = [t.detach().clone().requires_grad_(True) for t in inputs_fast]
    padding_mask = right_padding_mask([seq_len, max(1, seq_len - 3)], seq_len) if use_padding else None
    upstream = torch.randn(2, 2, seq_len, 4, generator=torch.Generator().manual_seed(99), dtype=torch.float64)

    (linear_attention(*inputs_fast, padding_mask, causal=causal, chunk_size=16) * upstream).sum().backward()
    (linear_attention_reference(*inputs_slow, padding_mask, causal=causal) * upstream).sum().backward()
    for fast, slow in zip(inputs_fast, inputs_slow):
        assert fast.grad.abs().sum() > 0
        torch.testing.assert_close(fast.grad, slow.grad, rtol=1e-9, atol=1e-11)


def test_default_matches_official_layout_and_norm_axes():
    query, key, value = random_qkv(2, 4, 30, 16, seed=3)
    torch.testing.assert_close(linear_attention(query, key, value), official_form(query, key, value), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("chunk_size", [1, 5, 16, 33, 500])
def test_causal_output_does_not_depend_on_chunk_size(chunk_size):
    query, key, value = random_qkv(2, 2, 33, 8, seed=4)
    expected = linear_attention_reference(query, key, value, causal=True)
    torch.testing.assert_close(linear_attention(query, key, value, causal=True, chunk_size=chunk_size), expected)


def test_padding_mask_removes_padded_keys_only():
    query, key, value = random_qkv(1, 2, 12, 8, seed=5)
    padding_mask = right_padding_mask([7], 12)
    masked = linear_attention(query, key, value, padding_mask)
    # the same 7 real positions without any padding give the same outputs
    truncated = linear_attention(query[:, :, :7], key[:, :, :7], value[:, :, :7])
    torch.testing.assert_close(masked[:, :, :7], truncated, rtol=1e-12, atol=1e-14)
    # without the mask the padded keys do contribute (official behaviour)
    unmasked = linear_attention(query, key, value)
    assert (unmasked[:, :, :7] - truncated).abs().max() > 1e-3


# ---------------------------------------------------------------- memory of the causal form


class _LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an operator produces."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def _largest_tensor_forward_backward(attention_fn, batch_size, n_heads, seq_len, head_size):
    query, key, value = random_qkv(batch_size, n_heads, seq_len, head_size, seed=6, dtype=torch.float32, requires_grad=True)
    with _LargestTensor() as recorder:
        attention_fn(query, key, value).sum().backward()
    return recorder.largest


def _per_position_state_causal(query, key, value):
    """A naive causal form: a cumulative d_h×d_h state at every position (the thing to avoid)."""
    states = torch.cumsum(elu_l2_feature_map(key).unsqueeze(-1) * value.unsqueeze(-2), dim=2)  # [B,H,L,d,d]
    return torch.einsum("bhld,bhlde->bhle", elu_l2_feature_map(query), states) / math.sqrt(query.size(-1))


def test_causal_chunked_form_never_holds_a_per_position_state():
    batch_size, n_heads, seq_len, head_size, chunk_size = 2, 2, 64, 8, 8
    per_position_state = batch_size * n_heads * seq_len * head_size * head_size  # 16384
    linear_in_length = batch_size * n_heads * seq_len * head_size  # 2048

    chunked = _largest_tensor_forward_backward(
        lambda q, k, v: linear_attention(q, k, v, causal=True, chunk_size=chunk_size),
        batch_size, n_heads, seq_len, head_size,
    )
    assert chunked <= linear_in_length < per_position_state

    # control: the recorder does see a per-position state when one is built
    naive = _largest_tensor_forward_backward(_per_position_state_causal, batch_size, n_heads, seq_len, head_size)
    assert naive >= per_position_state


def test_non_causal_form_never_holds_an_l_by_l_matrix():
    batch_size, n_heads, seq_len, head_size = 2, 2, 64, 8
    largest = _largest_tensor_forward_backward(linear_attention, batch_size, n_heads, seq_len, head_size)
    assert largest <= batch_size * n_heads * seq_len * head_size
    reference = _largest_tensor_forward_backward(linear_attention_reference, batch_size, n_heads, seq_len, head_size)
    assert reference >= batch_size * n_heads * seq_len * seq_len


# ---------------------------------------------------------------- degenerate inputs


@pytest.mark.parametrize("causal", [False, True])
def test_all_zero_inputs_give_zero_output_and_finite_gradients(causal):
    query, key, value = (torch.zeros(2, 2, 10, 4, requires_grad=True) for _ in range(3))
    output = linear_attention(query, key, value, causal=causal, chunk_size=4)
    assert torch.equal(output, torch.zeros_like(output))
    output.sum().backward()
    for t in (query, key, value):
        assert torch.isfinite(t.grad).all()


@pytest.mark.parametrize("causal", [False, True])
def test_all_padding_row_gives_zero_output_without_nan(causal):
    query, key, value = random_qkv(2, 2, 10, 4, seed=7, requires_grad=True)
    padding_mask = right_padding_mask([10, 0], 10)  # second row is all padding
    output = linear_attention(query, key, value, padding_mask, causal=causal, chunk_size=4)
    assert torch.isfinite(output).all()
    assert torch.equal(output[1], torch.zeros_like(output[1]))
    output.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (query, key, value))


# ---------------------------------------------------------------- the attention block


def test_block_has_exactly_recboles_submodules():
    block = LinearMultiHeadAttention(n_heads=2, hidden_size=8, hidden_dropout_prob=0.1, layer_norm_eps=1e-12)
    assert [name for name, _ in block.named_children()] == ["query", "key", "value", "dense", "LayerNorm", "out_dropout"]
    assert sum(p.numel() for p in block.parameters()) == 4 * (8 * 8 + 8) + 2 * 8


def test_block_rejects_hidden_size_not_divisible_by_heads():
    with pytest.raises(ValueError, match="not a multiple"):
        LinearMultiHeadAttention(n_heads=3, hidden_size=8, hidden_dropout_prob=0.1, layer_norm_eps=1e-12)


@pytest.mark.parametrize("use_padding, causal", MODES)
def test_block_composes_projection_attention_dense_and_residual_layernorm(use_padding, causal):
    torch.manual_seed(0)
    block = LinearMultiHeadAttention(4, 16, 0.3, 1e-12, causal=causal, use_padding_mask=use_padding, chunk_size=3).double()
    block.eval()
    x = torch.randn(3, 11, 16, dtype=torch.float64)
    padding_mask = right_padding_mask([11, 6, 1], 11)

    def heads(t):
        return t.view(3, 11, 4, 4).transpose(1, 2)

    context = linear_attention_reference(
        heads(block.query(x)), heads(block.key(x)), heads(block.value(x)),
        padding_mask if use_padding else None, causal=causal,
    )
    expected = block.LayerNorm(block.dense(context.transpose(1, 2).reshape(3, 11, 16)) + x)
    torch.testing.assert_close(block(x, padding_mask), expected, rtol=1e-10, atol=1e-12)


def test_block_ignores_padding_mask_unless_enabled():
    torch.manual_seed(0)
    block = LinearMultiHeadAttention(2, 8, 0.0, 1e-12).eval()
    x = torch.randn(2, 6, 8)
    assert torch.equal(block(x, right_padding_mask([6, 2], 6)), block(x))


def test_block_has_no_attention_dropout():
    # with hidden dropout 0 the block is deterministic in training mode: nothing drops attention weights
    torch.manual_seed(0)
    block = LinearMultiHeadAttention(2, 8, 0.0, 1e-12)
    x = torch.randn(2, 6, 8)
    block.train()
    train_output = block(x)
    block.eval()
    assert torch.equal(train_output, block(x))
