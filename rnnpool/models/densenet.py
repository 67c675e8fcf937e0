"""DenseNet121 (Huang et al. 2017) and DenseNet121-RNNPool (Saha et al. 2020, Sec. 5.1).

The RNNPool version puts RNNPool (patch 8, stride 4, h1 = h2 = 48) on the 112x112x64 stem output,
replacing P1, D1, T1 and D2 (-> 28x28x192), then runs T2, D3, T3, D4 as DenseNet121 does.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from ..nn import RNNPool2d
from ._registry import register_model
from .classifier import Classifier, check_input_size
from .downsample import create_downsample, last_rnnpool
from ..errors import InvalidInputError

DENSENET121_BLOCKS = (6, 12, 24, 16)  # dense layers in D1..D4


class DenseLayer(nn.Module):
    """BN-ReLU-conv1x1 (bn_size * growth) -> BN-ReLU-conv3x3 (growth): ``growth`` new channels."""

    def __init__(self, in_channels: int, growth: int, bn_size: int) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_channels, bn_size * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))


class DenseBlock(nn.Module):
    """``num_layers`` dense layers; each sees the concatenation of the input and all earlier outputs."""

    memory_rule = "dense"  # how rnnpool.analysis counts its RAM under the "layer" convention

    def __init__(self, num_layers: int, in_channels: int, growth: int = 32, bn_size: int = 4) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DenseLayer(in_channels + i * growth, growth, bn_size) for i in range(num_layers))
        self.out_channels = in_channels + num_layers * growth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(torch.cat(features, 1)))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    """BN-ReLU-conv1x1 then halve the map: avg pool 2x2, or RNNPool (patch 4, stride 2, h = channels / 4)."""

    def __init__(self, in_channels: int, out_channels: int, pool: str = "avg") -> None:
        if pool == "avg":
            down: nn.Module = nn.AvgPool2d(2, 2)
        elif pool == "rnnpool":
            down = RNNPool2d(out_channels, 4, 2, out_channels // 4, out_channels // 4, padding=1)
        else:
            raise InvalidInputError(f"intermediate_pool must be 'avg' or 'rnnpool', got {pool!r}")
        super().__init__(nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True), nn.Conv2d(in_channels, out_channels, 1, bias=False), down)
        self.out_channels = out_channels


class DenseNet(Classifier):
    """DenseNet-BC with growth 32, bn_size 4, compression 0.5.

    Args:
        block_config: dense layers per block (4 for the standard net; the RNNPool net uses only D3, D4,
            so there the last two entries are used, and fewer layers drop them from D3/D4).
        downsample: None (standard: max pool P1, D1, T1, D2) or "rnnpool" (or an ablation alternative).
        intermediate_pool: "avg" or "rnnpool" for the pools inside T2 and T3.
        last_pool: "avg" or "rnnpool" over the final 7x7 map.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        block_config: Sequence[int] = DENSENET121_BLOCKS,
        growth: int = 32,
        stem_channels: int = 64,
        downsample: Optional[str] = None,
        rnnpool_hidden: int = 48,
        rnnpool_patch: int = 8,
        intermediate_pool: str = "avg",
        last_pool: str = "avg",
        input_size: int = 224,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_input_size(input_size, 32)
        blocks = list(block_config)
        layers = [
            nn.Conv2d(3, stem_channels, 7, 2, 3, bias=False), nn.BatchNorm2d(stem_channels), nn.ReLU(inplace=True),
        ]
        self.feature_info = [{"num_chs": stem_channels, "reduction": 2, "module": "features.2"}]
        channels = stem_channels
        if downsample is None:
            if len(blocks) != 4:
                raise InvalidInputError(f"DenseNet needs 4 dense blocks, got block_config={block_config}")
            layers.append(nn.MaxPool2d(3, 2, 1))
            stage_blocks, reduction, first_pool = blocks, 4, 0
        else:
            if len(blocks) not in (2, 4):
                raise InvalidInputError(f"DenseNet-RNNPool uses D3 and D4: block_config needs 2 (or 4) entries, got {block_config}")
            down = create_downsample(downsample, stem_channels, rnnpool_hidden, rnnpool_patch, 4, (rnnpool_patch - 4) // 2)
            layers.append(down)
            channels, reduction = down.out_channels, 8
            self.feature_info.append({"num_chs": channels, "reduction": 8, "module": f"features.{len(layers) - 1}"})
            # T2 comes first: conv 192 -> 256 (the channels T2 gives in DenseNet121), then pool.
            stage_blocks, first_pool = blocks[-2:], 1
            layers.append(Transition(channels, 256, intermediate_pool))
            channels, reduction = 256, 16
        for i, num_layers in enumerate(stage_blocks):
            block = DenseBlock(num_layers, channels, growth)
            layers.append(block)
            channels = block.out_channels
            self.feature_info.append({"num_chs": channels, "reduction": reduction, "module": f"features.{len(layers) - 1}"})
            if i != len(stage_blocks) - 1:
                pool = "avg" if i + first_pool == 0 else intermediate_pool
                layers.append(Transition(channels, channels // 2, pool))
                channels, reduction = channels // 2, reduction * 2
        layers += [nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.num_features = channels
        if last_pool == "avg":
            self.head_pool = nn.AdaptiveAvgPool2d(1)
        elif last_pool == "rnnpool":
            self.head_pool = last_rnnpool(channels, input_size // reduction)
        else:
            raise InvalidInputError(f"last_pool must be 'avg' or 'rnnpool', got {last_pool!r}")
        self.dropout_rate = dropout
        self.reset_classifier(num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)


@register_model((3, 224, 224), "classification")
def densenet121(**kwargs) -> DenseNet:
    """DenseNet121, 224x224 (torchvision-compatible layout)."""
    return DenseNet(**kwargs)


@register_model((3, 224, 224), "classification")
def densenet121_rnnpool(**kwargs) -> DenseNet:
    """DenseNet121-RNNPool: RNNPool(8, 4, h=48) on the 112x112x64 stem replaces P1, D1, T1, D2."""
    return DenseNet(**{"downsample": "rnnpool", "block_config": DENSENET121_BLOCKS[2:], **kwargs})
