"""The early 4x downsampling that RNNPool replaces, and the alternatives of the paper's pooling ablation."""
from __future__ import annotations

from torch import nn

from ..nn import RNNPool2d
from ..nn.renet import ReNet2d
from ..errors import InvalidInputError

DOWNSAMPLERS = ("rnnpool", "avg", "max", "strided_conv", "renet")


def create_downsample(kind: str, in_channels: int, hidden: int, patch_size: int, stride: int, padding: int) -> nn.Module:
    """A layer reducing H and W by ``stride``; ``.out_channels`` says what the next block receives.

    ``rnnpool`` gives 4 * hidden channels (then BN); ``avg``/``max`` keep ``in_channels``; ``strided_conv``
    (conv-BN-ReLU with the patch as kernel) and ``renet`` (bidirectional GRUs over stride x stride patches)
    give the same 4 * hidden channels as RNNPool.
    """
    out_channels = 4 * hidden
    if kind == "rnnpool":
        layer = nn.Sequential(RNNPool2d(in_channels, patch_size, stride, hidden, hidden, padding=padding), nn.BatchNorm2d(out_channels))
    elif kind == "avg":
        layer, out_channels = nn.AvgPool2d(patch_size, stride, padding, count_include_pad=False), in_channels
    elif kind == "max":
        layer, out_channels = nn.MaxPool2d(patch_size, stride, padding), in_channels
    elif kind == "strided_conv":
        layer = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, patch_size, stride, padding, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU6(inplace=True)
        )
    elif kind == "renet":
        layer = ReNet2d(in_channels, stride, out_channels // 2)
    else:
        raise InvalidInputError(f"unknown downsample {kind!r}; expected one of {', '.join(DOWNSAMPLERS)}")
    layer.out_channels = out_channels
    return layer


def last_rnnpool(channels: int, map_size: int) -> nn.Module:
    """RNNPool over the whole final (map_size x map_size) map, h1 = h2 = channels / 4: replaces the avg pool."""
    if channels % 4:
        raise InvalidInputError(f"last_pool='rnnpool' needs channels divisible by 4, got {channels}")
    return RNNPool2d(channels, map_size, map_size, channels // 4, channels // 4)


__all__ = ["DOWNSAMPLERS", "create_downsample", "last_rnnpool"]
