"""Linear Recurrent Unit (LRU) layers for LRURec.

The LRU (Orvieto et al., ICML 2023) as LRURec (Yue et al., WSDM 2024) uses it: a diagonal
complex linear recurrence

    h_t = lambda * h_{t-1} + gamma * (B x_t + b_B),    y_t = Re(C h_t + b_C),

with a state of ``2 * hidden_size`` complex channels, run over a whole sequence with a
log-depth parallel scan and over one new item at a time with :meth:`LRULayer.step`.

DDP needs real parameters (``sync_grad_loss`` adds ``0 * param.sum()`` to a real loss), so
every complex quantity is stored as separate real tensors for its real and imaginary parts
and becomes complex only inside ``forward``/``step``.

Contents:

- :func:`lru_parallel_scan` (fast, used by the model; a hand-written backward runs the same
  scan in reverse) and :func:`lru_recurrent_scan` (the step-by-step reference, used only by
  the tests); :func:`gather_positions` (one position per row);
- :func:`ring_init_log_params`, :func:`truncated_normal_` (the official initialisations);
- :class:`LRULayer`, :class:`PositionwiseFeedForward`, :class:`LRUBlock`.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from recbole_linear.layers.mixed_precision import at_least_fp32


# --------------------------------------------------------------------------------------
# scans
# --------------------------------------------------------------------------------------
def _block_doubling_scan_(states, lambdas, reverse=False):
    r"""In place, on a complex ``[B, 2**n, D]`` tensor: the log-depth block-doubling scan.

    Forward (``reverse=False``): after step ``i`` every position holds the recurrence
    ``h_t = lambdas * h_{t-1} + x_t`` restarted at the start of its aligned block of ``2**i``
    positions; step ``i+1`` adds to the right half of every block of ``2**(i+1)`` the left
    half's last state times ``lambdas**1 .. lambdas**(2**i)`` (the official algorithm; the
    powers are built by repeated products, as officially). ``reverse=True`` runs the
    anti-causal recurrence ``g_t = lambdas * g_{t+1} + x_t`` the same way (used by backward).

    Each of the log2(L) steps is one vectorised multiply-add over half of the tensor.
    """
    batch_size, padded_length, width = states.shape
    n_steps = padded_length.bit_length() - 1
    powers = lambdas.unsqueeze(0)  # [lambda^1 .. lambda^half]
    for step in range(n_steps):
        half = 2**step
        blocks = states.view(batch_size, padded_length // (2 * half), 2, half, width)
        if reverse:  # left half += lambda^(half - j) * (right half's first state)
            blocks[:, :, 0].addcmul_(powers.flip(0), blocks[:, :, 1, :1])
        else:  # right half += lambda^(j + 1) * (left half's last state)
            blocks[:, :, 1].addcmul_(powers, blocks[:, :, 0, -1:])
        if step + 1 < n_steps:
            powers = torch.cat((powers, powers * powers[-1:]), dim=0)
    return states


def _padded_copy(x, padded_length):
    """``x`` ``[B, L, D]`` copied into a zero ``[B, padded_length, D]`` buffer (padding at the end)."""
    buffer = x.new_empty(x.size(0), padded_length, x.size(2))
    buffer[:, : x.size(1)] = x
    buffer[:, x.size(1) :] = 0
    return buffer


class _ParallelScan(torch.autograd.Function):
    r"""The scan with a hand-written backward (the autograd graph of log2(L) steps is slow).

    For ``h_t = lambda h_{t-1} + u_t`` and PyTorch's conjugate-Wirtinger convention:
    ``grad_u = g`` with ``g_t = grad_h_t + conj(lambda) g_{t+1}`` (the reverse scan), and
    ``grad_lambda = sum_{b, t} g_t conj(h_{t-1})``.
    """

    @staticmethod
    def forward(ctx, inputs, lambdas):
        length = inputs.size(1)
        padded_length = 1 << max(0, length - 1).bit_length()
        states = _block_doubling_scan_(_padded_copy(inputs, padded_length), lambdas)
        ctx.save_for_backward(states, lambdas)
        ctx.length = length
        return states[:, :length]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_states):
        states, lambdas = ctx.saved_tensors
        length = ctx.length
        grad_inputs = _padded_copy(grad_states, states.size(1))
        grad_inputs = _block_doubling_scan_(grad_inputs, lambdas.conj(), reverse=True)
        grad_lambdas = None
        if ctx.needs_input_grad[1]:
            grad_lambdas = (grad_inputs[:, 1:length] * states[:, : length - 1].conj()).sum(dim=(0, 1))
        return grad_inputs[:, :length], grad_lambdas


def lru_parallel_scan(inputs, lambdas):
    r"""All states of ``h_t = lambdas * h_{t-1} + inputs_t`` from ``h_{-1} = 0``, in log2(L) steps.

    The length is padded at the END to the next power of two (the padding is cut off
    again). The scan is causal: position ``t`` depends only on ``inputs[:, :t+1]``, so any
    right padding, RecBole's or ours, changes padded positions only, never real ones. This
    is why the official mask gate (needed there for LEFT padding) is not needed here.

    Args:
        inputs (torch.Tensor): complex, ``[B, L, D]``.
        lambdas (torch.Tensor): complex, ``[D]``.

    Returns:
        torch.Tensor: complex ``[B, L, D]``, the states at every position.
    """
    return _ParallelScan.apply(inputs, lambdas)


def lru_recurrent_scan(inputs, lambdas, initial_state=None):
    """Reference for :func:`lru_parallel_scan`: the recurrence, one position at a time.

    Slow (L Python steps); used only in the tests.
    """
    state = torch.zeros_like(inputs[:, 0]) if initial_state is None else initial_state
    states = []
    for t in range(inputs.size(1)):
        state = lambdas * state + inputs[:, t]
        states.append(state)
    return torch.stack(states, dim=1)


def gather_positions(sequence, positions):
    """``sequence[b, positions[b]]`` for every row: ``[B, L, ...]`` -> ``[B, ...]``."""
    return sequence[torch.arange(sequence.size(0), device=sequence.device), positions]


# --------------------------------------------------------------------------------------
# initialisation
# --------------------------------------------------------------------------------------
def ring_init_log_params(state_size, r_min=0.8, r_max=0.99, max_phase=2 * math.pi):
    r"""The official "ring" initialisation of the LRU eigenvalues, in log form.

    ``|lambda|^2 ~ U[r_min^2, r_max^2]``, ``arg(lambda) ~ U[0, max_phase]`` and
    ``gamma = sqrt(1 - |lambda|^2)``; returned as ``(nu_log, theta_log, gamma_log)`` with
    ``lambda = exp(-exp(nu_log) + i exp(theta_log))`` and ``gamma = exp(gamma_log)``.
    """
    u1 = torch.rand(state_size)
    u2 = torch.rand(state_size)
    nu_log = torch.log(-0.5 * torch.log(u1 * (r_max**2 - r_min**2) + r_min**2))
    theta_log = torch.log(max_phase * u2)
    modulus = torch.exp(-torch.exp(nu_log))
    gamma_log = torch.log(torch.sqrt(1 - modulus**2))
    return nu_log, theta_log, gamma_log


def truncated_normal_(tensor, std=0.02):
    """In place: a normal of mean 0 and std ``std`` truncated to ``[-2 std, 2 std]``.

    The official code draws it by inverse-CDF sampling (uniform, ``erfinv``, scale), which is
    exactly what :func:`torch.nn.init.trunc_normal_` does (plus a final clamp).
    """
    return nn.init.trunc_normal_(tensor, mean=0.0, std=std, a=-2 * std, b=2 * std)


# --------------------------------------------------------------------------------------
# layers
# --------------------------------------------------------------------------------------
class LRULayer(nn.Module):
    r"""One LRU layer: ``LayerNorm(Dropout(Re(C h_t + b_C)) + x_t)`` with the recurrence above.

    Parameters (all real; the official code holds complex ``nn.Linear`` B and C and one
    ``params_log = [nu_log; theta_log; gamma_log]`` tensor):

    - ``nu_log``, ``theta_log``, ``gamma_log`` ``[2H]``: ``lambda = exp(-e^nu_log + i e^theta_log)``,
      ``gamma = e^gamma_log`` (a free parameter, initialised to ``sqrt(1 - |lambda|^2)``);
    - ``in_proj_weight_real/imag`` ``[2H, H]``, ``in_proj_bias_real/imag`` ``[2H]``: B, b_B;
    - ``out_proj_weight_real/imag`` ``[H, 2H]``, ``out_proj_bias`` ``[H]``: C and Re(b_C).
      Im(b_C) is not kept: ``Re(C h + b_C)`` does not depend on it (zero gradient officially).
    """

    def __init__(self, hidden_size, dropout_prob, r_min=0.8, r_max=0.99, max_phase=2 * math.pi, layer_norm_eps=1e-5):
        super().__init__()
        self.hidden_size = hidden_size
        self.state_size = 2 * hidden_size

        nu_log, theta_log, gamma_log = ring_init_log_params(self.state_size, r_min, r_max, max_phase)
        self.nu_log = nn.Parameter(nu_log)
        self.theta_log = nn.Parameter(theta_log)
        self.gamma_log = nn.Parameter(gamma_log)

        self.in_proj_weight_real = nn.Parameter(torch.empty(self.state_size, hidden_size))
        self.in_proj_weight_imag = nn.Parameter(torch.empty(self.state_size, hidden_size))
        self.in_proj_bias_real = nn.Parameter(torch.empty(self.state_size))
        self.in_proj_bias_imag = nn.Parameter(torch.empty(self.state_size))
        self.out_proj_weight_real = nn.Parameter(torch.empty(hidden_size, self.state_size))
        self.out_proj_weight_imag = nn.Parameter(torch.empty(hidden_size, self.state_size))
        self.out_proj_bias = nn.Parameter(torch.empty(hidden_size))
        for name, param in self.named_parameters():
            if not name.endswith("_log"):
                truncated_normal_(param)

        self.dropout = nn.Dropout(dropout_prob)
        self.layer_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)

    def lambdas(self):
        """The complex eigenvalues ``exp(-nu + i theta)``, ``[2H]``."""
        return torch.exp(torch.complex(-torch.exp(self.nu_log), torch.exp(self.theta_log)))

    def project_in(self, x):
        r"""``gamma * (B x + b_B)`` as a complex ``[..., 2H]`` tensor (one real matmul).

        Real and imaginary rows are interleaved so the ``[..., 4H]`` result reinterprets as
        ``[..., 2H]`` complex without a copy.
        """
        # gamma (B x + b) = (gamma B) x + gamma b: gamma scales the bias too, as officially
        gamma = torch.exp(self.gamma_log).unsqueeze(1)
        weight = torch.stack((self.in_proj_weight_real, self.in_proj_weight_imag), dim=1) * gamma.unsqueeze(2)
        bias = torch.stack((self.in_proj_bias_real, self.in_proj_bias_imag), dim=1) * gamma
        projected = F.linear(x, weight.flatten(0, 1), bias.flatten())
        # the recurrence and the powers of lambda stay fp32 (complex64) under bf16/fp16 autocast:
        # |lambda| is up to 0.99 and its powers decay over hundreds of steps below half precision's resolution
        return torch.view_as_complex(at_least_fp32(projected).unflatten(-1, (self.state_size, 2)))

    def project_out(self, states, x):
        r"""``LayerNorm(Dropout(Re(C h + b_C)) + x)``; ``Re(C h) = C_r h_r - C_i h_i`` (one real matmul)."""
        weight = torch.stack((self.out_proj_weight_real, -self.out_proj_weight_imag), dim=2).flatten(1, 2)
        output = F.linear(torch.view_as_real(states).flatten(-2), weight, self.out_proj_bias)
        return self.layer_norm(self.dropout(output) + x)

    def forward(self, x, output_index=None):
        """``x`` ``[B, L, H]`` -> ``[B, L, H]`` (causal over L, from a zero state).

        With ``output_index`` ``[B]``, only position ``output_index[b]`` of row ``b`` goes
        through the output projection: ``[B, H]`` (for the last block, whose other positions
        are never read).
        """
        states = lru_parallel_scan(self.project_in(x), self.lambdas())
        if output_index is not None:
            states, x = gather_positions(states, output_index), gather_positions(x, output_index)
        return self.project_out(states, x)

    def step(self, x, lru_state):
        """One position: ``x`` ``[B, H]``, ``lru_state`` complex ``[B, 2H]`` -> (output, new state)."""
        lru_state = self.lambdas() * lru_state + self.project_in(x)
        return self.project_out(lru_state, x), lru_state


class PositionwiseFeedForward(nn.Module):
    """``LayerNorm(x + Dropout(W2 Dropout(GELU(W1 x + b1)) + b2))``, d_ff = 4H, exact GELU, no outer GELU."""

    def __init__(self, hidden_size, inner_size, dropout_prob, layer_norm_eps=1e-5):
        super().__init__()
        self.w_1 = nn.Linear(hidden_size, inner_size)
        self.w_2 = nn.Linear(inner_size, hidden_size)
        self.activation = nn.GELU()
        self.dropout = nn.Dropout(dropout_prob)
        self.layer_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)

    def forward(self, x):
        inner = self.dropout(self.activation(self.w_1(x)))
        return self.layer_norm(self.dropout(self.w_2(inner)) + x)


class LRUBlock(nn.Module):
    """An LRU layer followed by the position-wise FFN (post-LN, as officially)."""

    def __init__(self, hidden_size, dropout_prob, lru_dropout_prob, r_min=0.8, r_max=0.99,
                 max_phase=2 * math.pi, layer_norm_eps=1e-5):
        super().__init__()
        self.lru_layer = LRULayer(hidden_size, lru_dropout_prob, r_min, r_max, max_phase, layer_norm_eps)
        self.feed_forward = PositionwiseFeedForward(hidden_size, 4 * hidden_size, dropout_prob, layer_norm_eps)

    def forward(self, x, output_index=None):
        """``[B, L, H]`` -> ``[B, L, H]``, or ``[B, H]`` at ``output_index`` (see :meth:`LRULayer.forward`)."""
        return self.feed_forward(self.lru_layer(x, output_index))

    def step(self, x, lru_state):
        output, lru_state = self.lru_layer.step(x, lru_state)
        return self.feed_forward(output), lru_state
