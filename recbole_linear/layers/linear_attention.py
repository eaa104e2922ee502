"""L2-normalised linear attention (LinRec, Liu et al., SIGIR 2023), shared by LinRec and GLINT-RU.

The official LinRec code computes, per head (d_h = hidden_size / n_heads)::

    q̂_i = ELU(q_i) / ‖ELU(q_i)‖₂        k̂_j = ELU(k_j) / ‖ELU(k_j)‖₂     (norms over d_h)
    o_i = q̂_iᵀ (Σ_j k̂_j v_jᵀ) / √d_h

i.e. ``Q̂ (K̂ᵀ V) / √d_h`` with ELU (alpha 1, no "+1"), no row normalisation, no mask and no
attention dropout. The cost is O(L·d_h²) per head instead of the O(L²·d_h) of softmax attention.

Two options that the official code does not have (both off by default):

- ``padding_mask``: padded keys are zeroed, so they drop out of ``K̂ᵀV`` and the output of a
  real position no longer depends on how much padding the sequence carries;
- ``causal``: position t sees only positions <= t. It is computed chunk by chunk: a masked C×C
  product inside each chunk plus the d_h×d_h state ``Σ k̂_j v_jᵀ`` of all earlier chunks, so no
  tensor ever holds one d_h×d_h state per position.

``linear_attention_reference`` is the slow, explicit quadratic form, used only by the tests.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from recbole_linear.layers.mixed_precision import at_least_fp32, full_precision

__all__ = [
    "elu_l2_feature_map",
    "linear_attention",
    "linear_attention_reference",
    "LinearMultiHeadAttention",
]


def elu_l2_feature_map(x, eps=1e-12):
    """ELU (alpha 1, no +1), then each vector L2-normalised over the last dimension.

    As in the official code the vector is multiplied by the reciprocal of its norm. The norm is
    clamped at ``eps`` first: a vector whose norm exceeds ``eps`` is scaled exactly as without
    the clamp, while an all-zero vector maps to zero instead of NaN.
    """
    features = F.elu(x)
    norm = torch.linalg.vector_norm(features, ord=2, dim=-1, keepdim=True)
    return features * (1.0 / norm.clamp_min(eps))


def _mask_padded_keys(key_features, padding_mask):
    """Zero the key vectors of padded positions. ``padding_mask``: [B, L] bool, True = real item."""
    if padding_mask is None:
        return key_features
    return key_features * padding_mask[:, None, :, None].to(key_features.dtype)


def _causal_chunked(query_features, key_features, value, chunk_size):
    """Σ_{j<=t} (q̂_t·k̂_j) v_j for every t, chunk by chunk.

    Inside a chunk the C×C products are masked lower-triangular; across chunks each query reads
    the state S_c = Σ_{j in earlier chunks} k̂_j v_jᵀ. Tensors held: [B,H,L/C,C,C] (scores),
    [B,H,L/C,d_h,d_h] (one state per chunk, not per position) and [B,H,L,d_h].
    """
    batch_size, n_heads, seq_len, head_size = value.shape
    chunk_size = min(chunk_size, seq_len)  # a sequence shorter than one chunk is one chunk
    n_chunks = -(-seq_len // chunk_size)
    pad = n_chunks * chunk_size - seq_len
    if pad:  # zero queries/keys/values at the end contribute nothing and are cut off below
        query_features, key_features, value = (F.pad(t, (0, 0, 0, pad)) for t in (query_features, key_features, value))
    chunked_shape = (batch_size, n_heads, n_chunks, chunk_size, head_size)
    q = query_features.reshape(chunked_shape)
    k = key_features.reshape(chunked_shape)
    v = value.reshape(chunked_shape)

    # within a chunk: position t sees positions s <= t of the same chunk
    scores = torch.matmul(q, k.transpose(-2, -1))  # [B,H,n,C,C]
    lower = torch.ones(chunk_size, chunk_size, dtype=torch.bool, device=value.device).tril()
    intra = torch.matmul(scores.masked_fill(~lower, 0.0), v)

    # across chunks: chunk c sees the summed state of chunks 0..c-1 (exclusive prefix sum)
    chunk_states = torch.matmul(k.transpose(-2, -1), v)  # [B,H,n,d_h,d_h]
    prefix_states = F.pad(torch.cumsum(chunk_states[:, :, :-1], dim=2), (0, 0, 0, 0, 1, 0))
    inter = torch.matmul(q, prefix_states)

    output = (intra + inter).reshape(batch_size, n_heads, n_chunks * chunk_size, head_size)
    return output[:, :, :seq_len]


def linear_attention(query, key, value, padding_mask=None, causal=False, chunk_size=64):
    """Q̂ (K̂ᵀ V) / √d_h with the ELU + L2 feature map on queries and keys.

    Args:
        query, key, value (torch.Tensor): raw per-head projections, [B, n_heads, L, d_h].
        padding_mask (torch.BoolTensor, optional): [B, L], True = real item; padded keys are zeroed.
        causal (bool): position t sees only positions <= t (chunked, see ``_causal_chunked``).
        chunk_size (int): chunk length C of the causal form.

    Returns:
        torch.Tensor: [B, n_heads, L, d_h].
    """
    head_size = query.size(-1)
    # fp32 under bf16/fp16 autocast: the L2 norms and the running sums of k v^T over the
    # sequence lose their small terms in half precision (the projections around stay in it)
    with full_precision(query):
        query, key, value = at_least_fp32(query), at_least_fp32(key), at_least_fp32(value)
        query_features = elu_l2_feature_map(query)
        key_features = _mask_padded_keys(elu_l2_feature_map(key), padding_mask)
        if causal:
            context = _causal_chunked(query_features, key_features, value, chunk_size)
        else:
            context = torch.matmul(query_features, torch.matmul(key_features.transpose(-2, -1), value))
        return context / math.sqrt(head_size)


def linear_attention_reference(query, key, value, padding_mask=None, causal=False):
    """The explicit quadratic form of ``linear_attention`` (tests only).

    A = φ(Q) φ(K)ᵀ with L2-normalised rows, masked column-wise (padded keys) and lower-triangular
    (causal), then (A V) / √d_h.
    """
    head_size = query.size(-1)
    attention = torch.matmul(elu_l2_feature_map(query), elu_l2_feature_map(key).transpose(-2, -1))
    if padding_mask is not None:
        attention = attention * padding_mask[:, None, None, :].to(attention.dtype)
    if causal:
        attention = torch.tril(attention)
    return torch.matmul(attention, value) / math.sqrt(head_size)


class LinearMultiHeadAttention(nn.Module):
    """RecBole's post-LN multi-head attention block with LinRec's linear attention inside.

    ``LayerNorm(out_dropout(dense(merge_heads(linear_attention(Q, K, V)))) + input)``. The
    parameters are exactly those of RecBole's ``MultiHeadAttention`` (query, key, value, dense,
    LayerNorm); there is no attention dropout, as in the official code, which defines one but
    never applies it.

    Args:
        n_heads (int): number of heads; must divide ``hidden_size``.
        hidden_size (int): model width d.
        hidden_dropout_prob (float): dropout on the output projection.
        layer_norm_eps (float): epsilon of the residual LayerNorm.
        causal (bool): position t attends only to positions <= t.
        use_padding_mask (bool): zero padded keys (needs ``padding_mask`` in ``forward``).
        chunk_size (int): chunk length of the causal form.
    """

    def __init__(
        self,
        n_heads,
        hidden_size,
        hidden_dropout_prob,
        layer_norm_eps,
        causal=False,
        use_padding_mask=False,
        chunk_size=64,
    ):
        super().__init__()
        if hidden_size % n_heads != 0:
            raise ValueError(
                f"The hidden size ({hidden_size}) is not a multiple of the number of attention heads ({n_heads})"
            )
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")
        self.n_heads = n_heads
        self.head_size = hidden_size // n_heads
        self.causal = causal
        self.use_padding_mask = use_padding_mask
        self.chunk_size = chunk_size

        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.out_dropout = nn.Dropout(hidden_dropout_prob)

    def split_heads(self, x):
        """[B, L, d] -> [B, n_heads, L, d_h]."""
        batch_size, seq_len, _ = x.shape
        return x.view(batch_size, seq_len, self.n_heads, self.head_size).permute(0, 2, 1, 3)

    @staticmethod
    def merge_heads(x):
        """[B, n_heads, L, d_h] -> [B, L, d]."""
        batch_size, n_heads, seq_len, head_size = x.shape
        return x.permute(0, 2, 1, 3).reshape(batch_size, seq_len, n_heads * head_size)

    def forward(self, input_tensor, padding_mask=None):
        """input_tensor: [B, L, d]; padding_mask: [B, L] bool (True = real item), read only when
        the block was built with ``use_padding_mask=True``. Returns [B, L, d]."""
        if self.use_padding_mask and padding_mask is None:
            raise ValueError("LinearMultiHeadAttention(use_padding_mask=True) needs a padding_mask")
        context = linear_attention(
            self.split_heads(self.query(input_tensor)),
            self.split_heads(self.key(input_tensor)),
            self.split_heads(self.value(input_tensor)),
            padding_mask=padding_mask if self.use_padding_mask else None,
            causal=self.causal,
            chunk_size=self.chunk_size,
        )
        hidden_states = self.dense(self.merge_heads(context))
        hidden_states = self.out_dropout(hidden_states)
        return self.LayerNorm(hidden_states + input_tensor)
