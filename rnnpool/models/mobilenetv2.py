"""MobileNetV2 (Sandler et al. 2018) and MobileNetV2-RNNPool (Saha et al. 2020, Sec. 5.1).

The RNNPool version keeps the stem conv (112x112x32) and replaces the three stages that take the map
from 112 to 28 (rows (1,16,1,1), (6,24,2,2), (6,32,3,2)) with one RNNPool layer (patch 6, stride 4).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

from torch import nn

from ..nn.blocks import ConvBNAct, inverted_residual_stage, make_divisible
from ._registry import register_model
from .classifier import Classifier, check_input_size
from .downsample import create_downsample, last_rnnpool
from ..errors import InvalidInputError

# t, c, n, s  (expansion, output channels, repeats, stride of the first repeat)
MOBILENETV2_STAGES: Tuple[Tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
RNNPOOL_REPLACES = 3  # stages (112 -> 28) that the RNNPool layer stands in for


class MobileNetV2(Classifier):
    """MobileNetV2 with optional early RNNPool (``downsample``) and final RNNPool (``last_pool``).

    Args:
        num_classes: classifier outputs.
        width_mult: channel multiplier of the stages.
        stem_channels: channels of the first conv (default: 32 x width, rounded to 8).
        last_channels: channels of the final 1x1 conv (default 1280).
        downsample: None for the standard network; else "rnnpool" (the paper's model) or an ablation
            alternative ("avg", "max", "strided_conv", "renet") in place of stages 1-3.
        rnnpool_hidden, rnnpool_patch: RNNPool h1 = h2 and patch size (stride 4, padding 1).
        last_pool: "avg" or "rnnpool" (RNNPool over the final map, h1 = h2 = channels / 4).
        input_size: side of the square input, needed to size the final RNNPool.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        width_mult: float = 1.0,
        stem_channels: Optional[int] = None,
        last_channels: int = 1280,
        downsample: Optional[str] = None,
        rnnpool_hidden: int = 16,
        rnnpool_patch: int = 6,
        last_pool: str = "avg",
        input_size: int = 224,
        dropout: float = 0.2,
        stages: Sequence[Tuple[int, int, int, int]] = MOBILENETV2_STAGES,
    ) -> None:
        super().__init__()
        self.input_size = check_input_size(input_size, 32)
        stem = stem_channels or make_divisible(32 * width_mult)
        layers = [ConvBNAct(3, stem, 3, 2)]
        channels, reduction = stem, 2
        self.feature_info = [{"num_chs": stem, "reduction": 2, "module": "features.0"}]
        rows = list(stages)
        if downsample is not None:
            down = create_downsample(downsample, stem, rnnpool_hidden, rnnpool_patch, 4, (rnnpool_patch - 4) // 2)
            layers.append(down)
            channels, reduction = down.out_channels, 8
            self.feature_info.append({"num_chs": channels, "reduction": reduction, "module": f"features.{len(layers) - 1}"})
            rows = rows[RNNPOOL_REPLACES:]
        for t, c, n, s in rows:
            out = make_divisible(c * width_mult)
            layers.append(inverted_residual_stage(channels, t, out, n, s))
            channels, reduction = out, reduction * s
            self.feature_info.append({"num_chs": channels, "reduction": reduction, "module": f"features.{len(layers) - 1}"})
        layers.append(ConvBNAct(channels, last_channels, 1))
        self.features = nn.Sequential(*layers)
        self.num_features = last_channels
        if last_pool == "avg":
            self.head_pool = nn.AdaptiveAvgPool2d(1)
        elif last_pool == "rnnpool":
            self.head_pool = last_rnnpool(last_channels, input_size // reduction)
        else:
            raise InvalidInputError(f"last_pool must be 'avg' or 'rnnpool', got {last_pool!r}")
        self.dropout_rate = dropout
        self.reset_classifier(num_classes)
        _init_weights(self)


def _init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


@register_model((3, 224, 224), "classification")
def mobilenetv2(**kwargs) -> MobileNetV2:
    """MobileNetV2 1.0x, 224x224 (torchvision-compatible layout)."""
    return MobileNetV2(**kwargs)


@register_model((3, 224, 224), "classification")
def mobilenetv2_rnnpool(**kwargs) -> MobileNetV2:
    """MobileNetV2-RNNPool: conv3x3/2 32 -> RNNPool(6, 4, h=16) -> stages from (6,64,4,2)."""
    return MobileNetV2(**{"downsample": "rnnpool", **kwargs})


@register_model((3, 224, 224), "classification")
def mobilenetv2_035(**kwargs) -> MobileNetV2:
    """MobileNetV2-0.35x for Visual Wake Words: 8-channel stem, 320-channel last conv."""
    return MobileNetV2(**{"num_classes": 2, "width_mult": 0.35, "stem_channels": 8, "last_channels": 320, **kwargs})


@register_model((3, 224, 224), "classification")
def mobilenetv2_035_rnnpool(**kwargs) -> MobileNetV2:
    """MobileNetV2-0.35x-RNNPool for Visual Wake Words: RNNPool(6, 4, h=8) after the 8-channel stem."""
    defaults = {"num_classes": 2, "width_mult": 0.35, "stem_channels": 8, "last_channels": 320, "downsample": "rnnpool", "rnnpool_hidden": 8}
    return MobileNetV2(**{**defaults, **kwargs})
