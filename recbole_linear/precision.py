"""Mixed precision: the ``precision`` key (``fp32`` | ``bf16`` | ``fp16``).

``bf16`` and ``fp16`` run the model's forward pass and its loss under ``torch.autocast``: the
matrix products (linear layers, attention, the item scoring) run in the lower precision, while the
parameters, their gradients, the optimizer state and the checkpoints stay fp32 (autocast casts a
weight on the fly and the gradient flows back to the fp32 master copy). ``fp16``'s narrow
exponent range needs gradient scaling (a ``GradScaler``, unscaled before clipping); ``bf16`` has
fp32's exponent range and needs none.

The parts whose numbers would go wrong in half precision leave autocast on purpose, each at its
place of use with a one-line reason (:mod:`recbole_linear.layers.mixed_precision`): the LRU's complex recurrence and
the powers of ``lambda`` (``recbole_linear.layers.lru``), LinRec's L2 feature map and its sums
(``recbole_linear.layers.linear_attention``), every LayerNorm's statistics (the residual sum they
normalise is fp32), and the losses' softmax / log-sum-exp and their reductions
(``recbole_linear.all_positions``, ``recbole_linear.sampled_loss``).

``torch.autocast`` is PyTorch's own mechanism; on CPUs its bf16 products use oneDNN's AVX-512-BF16
/ AMX kernels. RecBole's own ``enable_amp`` (autocast in the default dtype of the device: bf16 on
CPU, fp16 on GPU) keeps working as RecBole documents it; it cannot be combined with ``precision``.
"""
import contextlib

import torch

from recbole_linear.errors import ConfigError

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_supports_bf16():
    """Whether oneDNN has native bf16 kernels on this CPU (AVX-512-BF16 or AMX)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def check_config(config):
    """One-line ConfigError for a value no run can use, before any data loads."""
    precision = config["precision"] or "fp32"  # a checkpoint from before the key: fp32
    if precision not in PRECISIONS:
        raise ConfigError(f"invalid value for 'precision': {precision!r} (expected one of {', '.join(PRECISIONS)})")
    if precision != "fp32" and config["enable_amp"]:
        raise ConfigError(
            f"precision {precision} and enable_amp both turn on autocast: use one (enable_amp: False, "
            "or precision: fp32 for RecBole's enable_amp)"
        )
    if precision == "fp16" and torch.device(config["device"]).type != "cuda":
        raise ConfigError("precision fp16 needs a CUDA device (CPUs have no fast fp16 products): use bf16 or fp32")


def resolve_dtype(config, logger=None):
    """The autocast dtype this run uses (``torch.float32``: autocast off).

    bf16 on hardware without native bf16 products falls back to fp32 with a logged warning:
    emulated bf16 is slower than fp32 and changes the numbers for nothing.
    """
    precision = config["precision"] or "fp32"
    device_type = torch.device(config["device"]).type
    if precision == "bf16":
        supported = torch.cuda.is_bf16_supported() if device_type == "cuda" else cpu_supports_bf16()
        if not supported:
            if logger is not None:
                logger.warning(f"precision bf16: this {device_type.upper()} has no native bf16 products; running fp32")
            return torch.float32
    return PRECISIONS[precision]


def autocast(device_type, dtype):
    """``torch.autocast`` in ``dtype`` on ``device_type``; a no-op context for fp32."""
    if dtype is torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=dtype)
