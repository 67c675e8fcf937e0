"""ReNet (Visin et al. 2015), the RNN-based downsampling the paper's pooling ablation compares against.

Non-overlapping s x s patches become vectors; a bidirectional GRU sweeps each row of patches, then another
sweeps each column of the result. Output (N, 2 * hidden, H / s, W / s).
"""
from __future__ import annotations

import torch
from torch import nn
from ..errors import InvalidInputError


class ReNet2d(nn.Module):
    """ReNet layer with patch (= stride) ``patch_size`` and ``hidden`` units per direction."""

    def __init__(self, in_channels: int, patch_size: int, hidden: int) -> None:
        super().__init__()
        if min(in_channels, patch_size, hidden) <= 0:
            raise InvalidInputError(f"ReNet2d needs positive sizes, got in_channels={in_channels}, patch_size={patch_size}, hidden={hidden}")
        self.patch_size = patch_size
        self.out_channels = 2 * hidden
        self.horizontal = nn.GRU(in_channels * patch_size**2, hidden, batch_first=True, bidirectional=True)
        self.vertical = nn.GRU(2 * hidden, hidden, batch_first=True, bidirectional=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        p = self.patch_size
        hp, wp = h // p, w // p
        patches = x[:, :, : hp * p, : wp * p].reshape(n, c, hp, p, wp, p)
        patches = patches.permute(0, 2, 4, 1, 3, 5).reshape(n * hp, wp, c * p * p)  # (N*H', W', C*p*p)
        rows, _ = self.horizontal(patches)  # (N*H', W', 2h)
        cols = rows.reshape(n, hp, wp, -1).transpose(1, 2).reshape(n * wp, hp, -1)  # (N*W', H', 2h)
        out, _ = self.vertical(cols)  # (N*W', H', 2h)
        return out.reshape(n, wp, hp, -1).permute(0, 3, 2, 1)  # (N, 2h, H', W')
