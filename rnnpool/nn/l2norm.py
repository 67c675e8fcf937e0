"""L2Norm (Liu et al. 2016, ParseNet; used by SSD and S3FD): each pixel's feature vector scaled to unit L2
norm, then by a learned per-channel weight. The RNNPool face detectors put it on their first three sources
so that the heads see features of one scale (weights initialised at 10, 8 and 5, as the reference code)."""
from __future__ import annotations

import torch
from torch import nn
from ..errors import InvalidInputError

EPS = 1e-10  # added to the norm, as the reference code does


class L2Norm(nn.Module):
    """(N, C, H, W) -> weight[c] * x / (||x||_2 over C + eps)."""

    def __init__(self, channels: int, scale: float) -> None:
        super().__init__()
        if not isinstance(channels, int) or channels <= 0:
            raise InvalidInputError(f"L2Norm channels must be a positive int, got {channels!r}")
        self.channels = channels
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise InvalidInputError(f"L2Norm expects (N, {self.channels}, H, W), got shape {list(x.shape)}")
        norm = x.pow(2).sum(1, keepdim=True).sqrt() + EPS
        return x / norm * self.weight[None, :, None, None]

    def extra_repr(self) -> str:
        return f"{self.channels}"
