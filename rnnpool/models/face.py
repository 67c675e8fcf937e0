"""RNNPool-Face detectors (Saha et al. 2020, Sec. 5.2): S3FD-style heads on small backbones.

Each backbone is a list of layer specs (the paper's architecture tables as data). A ``head`` entry puts a
detection head on the map at that point: two 3x3 convs giving 2 face/background scores (the first head
predicts 3 background scores and keeps their max: S3FD's max-out background) and 4 box offsets per
location, one square anchor per location (sizes 16, 32, ..., one per head). As in the reference code
(microsoft/EdgeML), the first three heads read their map through an L2Norm (scales 10, 8, 5), and
Face-Quant's first head, on the 4-channel stride-2 stem, is conv-BN-ReLU6 3x3/2 (4 -> 8) then the 3x3 conv.
Face RNNPool layers use patch 8, stride 4, no input padding; the output is padded by one row and column at
the bottom/right by replicating the last row and column (640x480 -> 159x119 -> 160x120). No BatchNorm
follows the RNNPool: its output is already bounded (FastGRNN states lie in [-1, 1]), and a BatchNorm on
the nearly constant output of a freshly initialised RNNPool amplifies its gradients up to 1/sqrt(eps)
and leaves running statistics that do not match the trained layer (Face-Quant then never learned).
Face-A and Face-B, whose few-unit RNNPool reads the image itself, start FastGRNN's update bias at 0 instead
of the reference 1: with 1 their RNNPool output barely depends on the image at first and neither learned
(a 150-step overfit of 6 images: AP 0.01 with 1, 0.96 with 0; tests/engine/test_face_learning.py).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..nn import L2Norm, RNNPool2d
from ..nn.blocks import ConvBNAct, inverted_residual_stage
from ._registry import register_model
from ..errors import InvalidInputError

Spec = Tuple  # ("rnnpool", hidden[, update bias init]) | ("conv", out, kernel, stride) | ("dwpw", out, stride) | ("ir", t, c, n, s)
#             | ("head", stride) | ("head", stride, hidden): a conv-BN-ReLU6 of `hidden` channels before each 3x3 conv

FACE_C: Sequence[Spec] = (
    ("rnnpool", 16), ("ir", 6, 24, 2, 1), ("head", 1), ("ir", 6, 32, 3, 2), ("head", 1), ("ir", 6, 64, 4, 2), ("head", 1),
    ("ir", 6, 96, 3, 2), ("head", 1), ("ir", 6, 160, 2, 2), ("head", 1), ("ir", 6, 320, 1, 2), ("head", 1),
)
FACE_B: Sequence[Spec] = (
    ("rnnpool", 6, 0.0), ("conv", 24, 3, 1), ("conv", 24, 3, 1), ("conv", 24, 3, 1), ("conv", 24, 3, 1), ("head", 1),
    ("conv", 96, 3, 2), ("conv", 32, 1, 1), ("ir", 6, 32, 3, 1), ("head", 1), ("ir", 6, 64, 3, 2), ("head", 1),
    ("ir", 6, 128, 2, 2), ("head", 1), ("ir", 6, 160, 1, 2), ("head", 1), ("ir", 6, 320, 1, 2), ("head", 1),
)
FACE_A: Sequence[Spec] = (
    ("rnnpool", 4, 0.0), ("dwpw", 16, 1), ("dwpw", 16, 1), ("dwpw", 16, 1), ("dwpw", 16, 1), ("head", 1), ("dwpw", 16, 2),
    ("ir", 1, 16, 3, 1), ("head", 1), ("ir", 1, 24, 3, 2), ("head", 1), ("ir", 1, 32, 2, 2), ("head", 1),
    ("ir", 2, 128, 1, 2), ("head", 1), ("ir", 2, 160, 1, 2), ("head", 1),
)
# The first head reads the stride-2 stem through strided 3x3 convs, giving the stride-4 head.
FACE_QUANT: Sequence[Spec] = (
    ("conv", 4, 3, 2), ("conv", 4, 3, 1), ("head", 2, 8), ("rnnpool", 8), ("ir", 2, 16, 4, 1), ("head", 1),
    ("ir", 2, 24, 4, 2), ("head", 1), ("ir", 2, 32, 2, 2), ("head", 1), ("ir", 2, 64, 1, 2), ("head", 1),
    ("ir", 2, 96, 1, 2), ("head", 1),
)
FACE_M4: Sequence[Spec] = (
    ("conv", 4, 3, 2), ("rnnpool", 16), ("ir", 2, 32, 1, 1), ("head", 1), ("ir", 2, 32, 1, 1), ("head", 1),
    ("ir", 2, 64, 1, 2), ("head", 1), ("ir", 2, 64, 1, 1), ("head", 1),
)
ANCHOR_SIZES = (16, 32, 64, 128, 256, 512)
L2NORM_SCALES = (10.0, 8.0, 5.0)  # initial L2Norm weights of the first three heads' inputs (S3FD)


class DetectionHead(nn.Module):
    """Class scores (N, 2, H, W) and box offsets (N, 4, H, W) from one map.

    Each branch is a 3x3 conv (with ``stride``), or with ``hidden`` channels a conv-BN-ReLU6 3x3 (with
    ``stride``) then a 3x3 conv. ``norm_scale`` puts an :class:`~rnnpool.nn.L2Norm` on the input.
    """

    def __init__(self, in_channels: int, stride: int = 1, maxout_background: int = 1, norm_scale: Optional[float] = None,
                 hidden: int = 0) -> None:
        super().__init__()
        self.maxout_background = maxout_background
        self.norm = L2Norm(in_channels, norm_scale) if norm_scale else nn.Identity()
        self.conf = self._branch(in_channels, maxout_background + 1, stride, hidden)
        self.loc = self._branch(in_channels, 4, stride, hidden)

    @staticmethod
    def _branch(in_channels: int, out_channels: int, stride: int, hidden: int) -> nn.Module:
        if not hidden:
            return nn.Conv2d(in_channels, out_channels, 3, stride, 1)
        return nn.Sequential(ConvBNAct(in_channels, hidden, 3, stride), nn.Conv2d(hidden, out_channels, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x = self.norm(x)
        conf = self.conf(x)
        if self.maxout_background > 1:  # S3FD max-out: the best of several background scores
            background = conf[:, : self.maxout_background].amax(1, keepdim=True)
            conf = torch.cat((background, conf[:, self.maxout_background :]), 1)
        return conf, self.loc(x)


def _build_layer(spec: Spec, channels: int) -> Tuple[nn.Module, int, int]:
    """(module, out channels, stride) of one non-head spec entry."""
    kind = spec[0]
    if kind == "rnnpool":
        hidden = spec[1]
        cell_kwargs = {"update_bias_init": spec[2]} if len(spec) > 2 else None
        layer = nn.Sequential(RNNPool2d(channels, 8, 4, hidden, hidden, cell_kwargs=cell_kwargs), nn.ReplicationPad2d((0, 1, 0, 1)))
        return layer, 4 * hidden, 4
    if kind == "conv":
        _, out, kernel, stride = spec
        return ConvBNAct(channels, out, kernel, stride, act_layer=nn.ReLU), out, stride
    if kind == "dwpw":
        _, out, stride = spec
        layer = nn.Sequential(ConvBNAct(channels, channels, 3, stride, groups=channels, act_layer=nn.ReLU), ConvBNAct(channels, out, 1, act_layer=nn.ReLU))
        return layer, out, stride
    if kind == "ir":
        _, t, c, n, s = spec
        return inverted_residual_stage(channels, t, c, n, s), c, s
    raise InvalidInputError(f"unknown face backbone layer {spec!r}")


class FaceDetector(nn.Module):
    """Backbone built from ``spec`` with a :class:`DetectionHead` at each ``head`` entry.

    ``forward(images (N, C, H, W))`` returns ``{"conf": [(N, 2, H_i, W_i)], "loc": [(N, 4, H_i, W_i)]}``,
    one entry per head; ``head_strides`` and ``anchor_sizes`` say where each head's anchors sit.

    What deployment reads (:mod:`rnnpool.deploy.graph`), the detector's contract with it: ``stages[i]`` (an
    ``nn.Sequential`` of ConvBNAct, InvertedResidual and RNNPool2d [+ bottom/right pad] [+ BatchNorm2d])
    feeds ``heads[i]`` (:class:`DetectionHead`: ``norm``, ``conf``, ``loc``, ``maxout_background``) and
    ``stages[i + 1]``; ``in_channels``, ``input_size``, ``head_strides`` and ``anchor_sizes``. A detector
    built of those parts deploys with no edit in ``deploy``.
    """

    def __init__(self, spec: Sequence[Spec], in_channels: int = 3, input_size: Tuple[int, int] = (480, 640)) -> None:
        super().__init__()
        self.input_size = input_size
        self.in_channels = in_channels
        self.stages = nn.ModuleList()
        self.heads = nn.ModuleList()
        self.head_strides: List[int] = []
        channels, stride, current = in_channels, 1, []
        for entry in spec:
            if entry[0] == "head":
                self.stages.append(nn.Sequential(*current))
                current = []
                index = len(self.heads)
                scale = L2NORM_SCALES[index] if index < len(L2NORM_SCALES) else None
                hidden = entry[2] if len(entry) > 2 else 0
                self.heads.append(DetectionHead(channels, entry[1], 3 if index == 0 else 1, scale, hidden))
                self.head_strides.append(stride * entry[1])
            else:
                layer, channels, layer_stride = _build_layer(entry, channels)
                current.append(layer)
                stride *= layer_stride
        if current:
            raise InvalidInputError("a face backbone spec must end with a head")
        if len(self.heads) > len(ANCHOR_SIZES):
            raise InvalidInputError(f"at most {len(ANCHOR_SIZES)} heads, got {len(self.heads)}")
        self.anchor_sizes = list(ANCHOR_SIZES[: len(self.heads)])
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> Dict[str, List[torch.Tensor]]:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise InvalidInputError(f"{type(self).__name__} expects (N, {self.in_channels}, H, W) images, got shape {list(x.shape)}")
        conf, loc = [], []
        for stage, head in zip(self.stages, self.heads):
            x = stage(x)
            c, l = head(x)
            conf.append(c)
            loc.append(l)
        return {"conf": conf, "loc": loc}


@register_model((3, 480, 640), "detection")
def rnnpool_face_c(**kwargs) -> FaceDetector:
    """RNNPool-Face-C: RNNPool h=16 on the image, MBConv stages (6,24,2,1)..(6,320,1,2), 6 heads."""
    return FaceDetector(FACE_C, **kwargs)


@register_model((3, 480, 640), "detection")
def rnnpool_face_b(**kwargs) -> FaceDetector:
    """RNNPool-Face-B: RNNPool h=6, 4x conv3x3 24, conv3x3/2 96, conv1x1 32, MBConv stages, 6 heads."""
    return FaceDetector(FACE_B, **kwargs)


@register_model((3, 480, 640), "detection")
def rnnpool_face_a(**kwargs) -> FaceDetector:
    """RNNPool-Face-A: RNNPool h=4, 5x depthwise+pointwise 16, MBConv stages, 6 heads."""
    return FaceDetector(FACE_A, **kwargs)


@register_model((3, 480, 640), "detection")
def rnnpool_face_quant(**kwargs) -> FaceDetector:
    """RNNPool-Face-Quant: conv3x3/2 4, conv3x3 4, RNNPool h=8, MBConv (t=2) stages, 6 heads (int8 target)."""
    return FaceDetector(FACE_QUANT, **kwargs)


@register_model((1, 240, 320), "detection")
def rnnpool_face_m4(**kwargs) -> FaceDetector:
    """RNNPool-Face-M4: 320x240 mono, conv3x3/2 4, RNNPool h=16, 4 MBConv stages, 4 heads (Cortex-M4)."""
    return FaceDetector(FACE_M4, **{"in_channels": 1, "input_size": (240, 320), **kwargs})


__all__ = ["ANCHOR_SIZES", "DetectionHead", "FaceDetector", "L2NORM_SCALES"]
