"""Full cross-entropy over the catalogue without the ``[targets, items]`` logit matrix.

``mean_n( logsumexp_i(h_n . E_i + b_i) - (h_n . E_{t_n} + b_{t_n}) )`` is computed a block of
positions at a time: the block's logits (a product in the run's precision, e.g. bf16 under
autocast), their log-sum-exp and softmax in fp32, and at once the block's gradient,
``softmax - onehot``, multiplied back into ``dL/dh`` for the block and accumulated into
``dL/dE`` and ``dL/db``. ``backward`` only scales those by the incoming gradient. Nothing of size
``targets x items`` outlives a block, so a block's logits stay in the CPU's caches instead of
travelling through memory four times (logits, their fp32 copy, the softmax, its gradient), and
under bf16 no full-size fp32 copy of the logits exists. The value and gradients are those of
``F.cross_entropy(h @ E.T + b, t)`` up to the order of fp32 summation (tests compare both in
float64, where the order does not show).

The gradient is computed in the forward pass, so a loss built from it must be used once, as
the trainer's loss is; the function is not twice differentiable.
"""
import torch

from recbole_linear.layers.mixed_precision import at_least_fp32_dtype

# positions per block: 128 x 3,416 fp32 logits are 1.7 MB, within one core's L2 here (64 to 512 measured: 128 fastest)
DEFAULT_BLOCK_ROWS = 128


class _FusedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, block_rows, compute_dtype):
        n_rows = hidden.size(0)
        accumulate_dtype = at_least_fp32_dtype(hidden.dtype)
        weight_c = weight.to(compute_dtype)
        grad_hidden = torch.empty(hidden.shape, dtype=accumulate_dtype, device=hidden.device)
        grad_weight = torch.zeros(weight.shape, dtype=accumulate_dtype, device=weight.device)
        grad_bias = torch.zeros(weight.size(0), dtype=accumulate_dtype, device=weight.device) if bias is not None else None
        total = torch.zeros((), dtype=accumulate_dtype, device=hidden.device)
        for start in range(0, n_rows, block_rows):
            rows = slice(start, min(start + block_rows, n_rows))
            hidden_c = hidden[rows].to(compute_dtype)
            logits = (hidden_c @ weight_c.t()).to(accumulate_dtype)
            if bias is not None:
                logits += bias.to(accumulate_dtype)
            block_targets = targets[rows]
            target_logits = logits.gather(1, block_targets.unsqueeze(1)).squeeze(1)
            # one pass of exp: the softmax (formed in place of the logits) and the log-sum-exp from it
            row_max = logits.amax(dim=1, keepdim=True)
            grad_logits = logits.sub_(row_max).exp_()
            row_sum = grad_logits.sum(dim=1, keepdim=True)
            total += (row_max.squeeze(1) + row_sum.squeeze(1).log() - target_logits).sum()
            # d(mean loss)/d(logits) = (softmax - onehot) / n
            grad_logits.mul_(1.0 / (row_sum * n_rows))
            grad_logits[torch.arange(grad_logits.size(0), device=grad_logits.device), block_targets] -= 1.0 / n_rows
            grad_logits_c = grad_logits.to(compute_dtype)
            grad_hidden[rows] = (grad_logits_c @ weight_c).to(accumulate_dtype)
            grad_weight += (grad_logits_c.t() @ hidden_c).to(accumulate_dtype)
            if grad_bias is not None:
                grad_bias += grad_logits.sum(dim=0)
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias if grad_bias is not None else torch.empty(0))
        ctx.has_bias = bias is not None
        ctx.input_dtypes = (hidden.dtype, weight.dtype, bias.dtype if bias is not None else None)
        return total / n_rows

    @staticmethod
    def backward(ctx, grad_output):
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        hidden_dtype, weight_dtype, bias_dtype = ctx.input_dtypes
        scale = grad_output.to(grad_hidden.dtype)
        return (
            (grad_hidden * scale).to(hidden_dtype),
            (grad_weight * scale).to(weight_dtype),
            (grad_bias * scale).to(bias_dtype) if ctx.has_bias else None,
            None,
            None,
            None,
        )


def fused_cross_entropy(hidden, weight, bias, targets, block_rows=DEFAULT_BLOCK_ROWS):
    """Mean cross-entropy of the rows ``hidden`` ``[N, H]`` over all items scored ``hidden @ weight.T + bias``.

    The item products run in autocast's dtype when autocast is on (bf16/fp16), else in the
    inputs' dtype; softmax, log-sum-exp, the loss and the accumulated gradients are fp32 (or
    fp64 for fp64 inputs).
    """
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        compute_dtype = torch.get_autocast_dtype(device_type)
    else:
        compute_dtype = at_least_fp32_dtype(hidden.dtype)
    with torch.autocast(device_type=device_type, enabled=False):  # the block products are cast explicitly
        return _FusedLinearCrossEntropy.apply(hidden, weight, bias, targets, block_rows, compute_dtype)


def cross_entropy_reference(hidden, weight, bias, targets):
    """The plain form: the whole logit matrix, then ``F.cross_entropy`` (tests only)."""
    logits = hidden @ weight.t()
    if bias is not None:
        logits = logits + bias
    return torch.nn.functional.cross_entropy(logits, targets)
