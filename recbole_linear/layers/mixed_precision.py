"""Tensor-side helpers of mixed precision (the ``precision`` key, :mod:`recbole_linear.precision`):
leaving autocast where half precision would lose what a computation needs, and raising a half
precision tensor to fp32 for a reduction."""
import contextlib

import torch


def full_precision(tensor):
    """A context in which autocast is off on ``tensor``'s device (inside it, cast inputs with ``.float()``)."""
    if not torch.is_autocast_enabled(tensor.device.type):
        return contextlib.nullcontext()
    return torch.autocast(device_type=tensor.device.type, enabled=False)


def at_least_fp32_dtype(dtype):
    """fp32 for a half precision ``dtype``; fp32 and fp64 unchanged."""
    return torch.promote_types(dtype, torch.float32)


def at_least_fp32(tensor):
    """``tensor`` in fp32 if it is in a half precision; fp32 and fp64 tensors unchanged."""
    return tensor.to(at_least_fp32_dtype(tensor.dtype))
