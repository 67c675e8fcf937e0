"""Convolution blocks shared by the models: conv-BN-act and the MobileNetV2 inverted residual (MBConv)."""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn
from ..errors import InvalidInputError

LayerFactory = Callable[..., nn.Module]


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round channels to a multiple of ``divisor``, never more than 10% down (MobileNetV2's rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) -> norm -> activation; ``act_layer=None`` leaves the activation out."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        norm_layer: LayerFactory = nn.BatchNorm2d,
        act_layer: Optional[LayerFactory] = nn.ReLU6,
    ) -> None:
        layers = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
            norm_layer(out_channels),
        ]
        if act_layer is not None:
            layers.append(act_layer(inplace=True))
        super().__init__(*layers)
        self.out_channels = out_channels


class InvertedResidual(nn.Module):
    """MBConv: 1x1 expand (t x) -> 3x3 depthwise (stride s) -> 1x1 linear project, + identity when it fits."""

    memory_rule = "mbconv"  # how rnnpool.analysis counts its RAM under the "layer" convention

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        expand_ratio: float,
        norm_layer: LayerFactory = nn.BatchNorm2d,
        act_layer: LayerFactory = nn.ReLU6,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise InvalidInputError(f"InvertedResidual stride must be 1 or 2, got {stride}")
        hidden = int(round(in_channels * expand_ratio))
        self.use_residual = stride == 1 and in_channels == out_channels
        layers = []
        if expand_ratio != 1:
            layers.append(ConvBNAct(in_channels, hidden, 1, norm_layer=norm_layer, act_layer=act_layer))
        layers += [
            ConvBNAct(hidden, hidden, 3, stride, groups=hidden, norm_layer=norm_layer, act_layer=act_layer),
            ConvBNAct(hidden, out_channels, 1, norm_layer=norm_layer, act_layer=None),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


def inverted_residual_stage(
    in_channels: int, expand_ratio: float, out_channels: int, repeats: int, stride: int, **kwargs
) -> nn.Sequential:
    """One (t, c, n, s) row of a MobileNetV2 table: ``repeats`` blocks, the first with ``stride``."""
    blocks = []
    for i in range(repeats):
        blocks.append(InvertedResidual(in_channels, out_channels, stride if i == 0 else 1, expand_ratio, **kwargs))
        in_channels = out_channels
    stage = nn.Sequential(*blocks)
    stage.out_channels = out_channels
    return stage
