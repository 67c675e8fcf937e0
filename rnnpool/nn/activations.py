"""Nonlinearities used inside the recurrent cells, selectable by name.

``quant_sigmoid`` and ``quant_tanh`` are the piecewise-linear stand-ins the RNNPool paper uses for its int8
Visual Wake Words models (Kusupati et al. 2018, FastGRNN, Sec. 3.3): they need no exp() on a microcontroller.
They are written with ``hardtanh``, whose gradient is 0 at the clamp's bounds in every PyTorch version (as the
fused kernels compute it); ``torch.clamp``'s was 1 there before PyTorch changed it in 2026 (pytorch#184574).
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from ..errors import InvalidInputError

NONLINEARITIES = ("sigmoid", "tanh", "quant_sigmoid", "quant_tanh", "relu", "identity")


def quant_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear sigmoid: ``clamp((x + 1) / 2, 0, 1)``."""
    return F.hardtanh((x + 1.0) * 0.5, 0.0, 1.0)


def quant_tanh(x: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear tanh: ``clamp(x, -1, 1)``."""
    return F.hardtanh(x, -1.0, 1.0)


def apply_nonlinearity(x: torch.Tensor, name: str) -> torch.Tensor:
    """Apply the nonlinearity called ``name`` (one of :data:`NONLINEARITIES`); TorchScript-friendly."""
    if name == "sigmoid":
        return torch.sigmoid(x)
    if name == "tanh":
        return torch.tanh(x)
    if name == "quant_sigmoid":
        return quant_sigmoid(x)
    if name == "quant_tanh":
        return quant_tanh(x)
    if name == "relu":
        return torch.relu(x)
    if name == "identity":
        return x
    raise InvalidInputError("unknown nonlinearity '" + name + "'")


def check_nonlinearity(name: str) -> str:
    """Return ``name`` if it is a known nonlinearity, else raise a ValueError listing the valid names."""
    if name not in NONLINEARITIES:
        raise InvalidInputError(f"unknown nonlinearity {name!r}; expected one of {', '.join(NONLINEARITIES)}")
    return name
