"""A face detector as a flat list of deployable ops, with BatchNorm folded, and its float execution.

:func:`build_graph` turns a :class:`~rnnpool.models.face.FaceDetector` into ops that the int8 quantizer,
the NumPy integer reference and the C code generator all share: ``conv`` (any kernel, stride, groups;
BN folded; ReLU/ReLU6 as a clamp; S3FD max-out on the first head), ``mbconv`` (MobileNetV2 block:
1x1 expand, 3x3 depthwise, 1x1 project, optional residual add) and ``rnnpool`` (the RNNPool layer with
the face models' bottom/right output padding and the following BatchNorm as a per-channel affine).
Tensors are named; each head reads two of them (class scores and box offsets).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F

from ..models.face import DetectionHead, FaceDetector
from ..nn import RNNPool2d
from ..nn.blocks import ConvBNAct, InvertedResidual
from ..nn.fastgrnn import FastGRNNCell

Shape = Tuple[int, int, int]  # (C, H, W)


@dataclass
class ConvOp:
    """Conv2d (+ folded BN) (+ ReLU/ReLU6); ``maxout`` > 1 keeps the max of the first ``maxout`` channels."""

    input: str
    output: str
    weight: torch.Tensor  # (O, I / groups, k, k)
    bias: torch.Tensor  # (O,)
    stride: int
    padding: int
    groups: int
    act: Optional[str] = None  # None | "relu" | "relu6"
    maxout: int = 1

    @property
    def kernel(self) -> int:
        return self.weight.shape[-1]

    @property
    def depthwise(self) -> bool:
        return self.groups > 1


@dataclass
class MBConvOp:
    """MobileNetV2 inverted residual: [expand] -> depthwise -> project [+ input]."""

    input: str
    output: str
    expand: Optional[ConvOp]
    depthwise: ConvOp
    project: ConvOp
    residual: bool

    def convs(self) -> List[ConvOp]:
        return [c for c in (self.expand, self.depthwise, self.project) if c is not None]


@dataclass
class RNNPoolOp:
    """RNNPool (FastGRNN cells), then ``pad`` = (bottom, right) rows/columns of zeros, then ``y * scale + shift``."""

    input: str
    output: str
    layer: RNNPool2d
    scale: torch.Tensor  # (4 * h2,)
    shift: torch.Tensor
    pad: Tuple[int, int] = (0, 0)


Op = Union[ConvOp, MBConvOp, RNNPoolOp]


@dataclass
class Head:
    conf: str
    loc: str
    stride: int
    anchor_size: int


@dataclass
class Graph:
    input: str
    ops: List[Op]
    heads: List[Head]
    shapes: Dict[str, Shape] = field(default_factory=dict)


def _fold_bn(conv: nn.Conv2d, bn: Optional[nn.BatchNorm2d]) -> Tuple[torch.Tensor, torch.Tensor]:
    weight = conv.weight.detach().double()
    bias = conv.bias.detach().double() if conv.bias is not None else torch.zeros(weight.shape[0], dtype=torch.float64)
    if bn is None:
        return weight, bias
    factor = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
    return weight * factor[:, None, None, None], (bias - bn.running_mean.double()) * factor + bn.bias.detach().double()


def _act_name(module: Optional[nn.Module]) -> Optional[str]:
    if module is None:
        return None
    if isinstance(module, nn.ReLU6):
        return "relu6"
    if isinstance(module, nn.ReLU):
        return "relu"
    raise NotImplementedError(f"int8 deployment supports ReLU and ReLU6 activations, not {type(module).__name__}")


class _Builder:
    def __init__(self) -> None:
        self.ops: List[Op] = []
        self.count = 0

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def conv_bn_act(self, block: ConvBNAct, x: str, out: Optional[str] = None) -> ConvOp:
        conv, bn = block[0], block[1] if len(block) > 1 and isinstance(block[1], nn.BatchNorm2d) else None
        act = block[2] if len(block) > 2 else None
        return self.conv(conv, bn, _act_name(act), x, out or self.name("t"))

    @staticmethod
    def conv(conv: nn.Conv2d, bn: Optional[nn.BatchNorm2d], act: Optional[str], x: str, out: str, maxout: int = 1) -> ConvOp:
        k, s, p = conv.kernel_size, conv.stride, conv.padding
        if k[0] != k[1] or s[0] != s[1] or not isinstance(p, tuple) or p[0] != p[1] or conv.dilation != (1, 1):
            raise NotImplementedError(f"int8 deployment supports square, undilated convolutions, got {conv}")
        if conv.groups not in (1, conv.in_channels) or (conv.groups > 1 and conv.out_channels != conv.in_channels):
            raise NotImplementedError(f"int8 deployment supports dense or depthwise convolutions, got {conv}")
        weight, bias = _fold_bn(conv, bn)
        return ConvOp(x, out, weight, bias, s[0], p[0], conv.groups, act, maxout)

    def module(self, m: nn.Module, x: str) -> str:
        if isinstance(m, ConvBNAct):
            op = self.conv_bn_act(m, x)
            self.ops.append(op)
            return op.output
        if isinstance(m, InvertedResidual):
            convs = list(m.conv)
            names = [self.name("t") for _ in convs]
            ops = [self.conv_bn_act(c, src, dst) for c, src, dst in zip(convs, [x] + names[:-1], names)]
            expand = ops[0] if len(ops) == 3 else None
            out = self.name("t") if m.use_residual else names[-1]  # the sum has its own scale
            self.ops.append(MBConvOp(x, out, expand, ops[-2], ops[-1], m.use_residual))
            return out
        if isinstance(m, RNNPool2d):
            return self.rnnpool(m, None, None, x)
        if isinstance(m, nn.Sequential) and len(m) and isinstance(m[0], RNNPool2d):
            rest = list(m)[1:]
            pad = rest.pop(0) if rest and isinstance(rest[0], nn.ZeroPad2d) else None
            bn = rest.pop(0) if rest and isinstance(rest[0], nn.BatchNorm2d) else None
            if rest:
                return self.module(nn.Sequential(*rest), self.rnnpool(m[0], pad, bn, x))
            return self.rnnpool(m[0], pad, bn, x)
        if isinstance(m, nn.Sequential):
            for child in m:
                x = self.module(child, x)
            return x
        raise NotImplementedError(f"int8 deployment does not support {type(m).__name__} layers")

    def rnnpool(self, layer: RNNPool2d, pad: Optional[nn.ZeroPad2d], bn: Optional[nn.BatchNorm2d], x: str) -> str:
        for cell in (layer.rnn1, layer.rnn2):
            if not isinstance(cell, FastGRNNCell):
                raise NotImplementedError(f"int8 RNNPool supports FastGRNN cells, not {type(cell).__name__}")
        if layer.padding != (0, 0):
            raise NotImplementedError("int8 RNNPool supports padding=0 (pad the input with a ZeroPad2d instead)")
        bottom_right = (0, 0)
        if pad is not None:
            left, right, top, bottom = pad.padding
            if left or top:
                raise NotImplementedError(f"int8 RNNPool output padding must be bottom/right only, got {pad.padding}")
            bottom_right = (bottom, right)
        channels = layer.out_channels
        scale, shift = torch.ones(channels, dtype=torch.float64), torch.zeros(channels, dtype=torch.float64)
        if bn is not None:
            scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
            shift = bn.bias.detach().double() - bn.running_mean.double() * scale
        out = self.name("t")
        self.ops.append(RNNPoolOp(x, out, layer, scale, shift, bottom_right))
        return out

    def head(self, head: DetectionHead, x: str, index: int) -> Tuple[str, str]:
        conf = self.conv(head.conf, None, None, x, f"head{index}_conf", maxout=head.maxout_background)
        loc = self.conv(head.loc, None, None, x, f"head{index}_loc")
        self.ops += [conf, loc]
        return conf.output, loc.output


@torch.no_grad()
def build_graph(model: FaceDetector) -> Graph:
    """The deployable ops of a face detector (in eval mode), with every tensor's (C, H, W) shape."""
    if not isinstance(model, FaceDetector):
        raise NotImplementedError(f"int8 deployment supports the face detectors, got {type(model).__name__}")
    builder = _Builder()
    x, heads = "image", []
    for index, (stage, head, stride, size) in enumerate(zip(model.stages, model.heads, model.head_strides, model.anchor_sizes)):
        x = builder.module(stage, x)
        conf, loc = builder.head(head, x, index)
        heads.append(Head(conf, loc, stride, size))
    graph = Graph("image", builder.ops, heads)
    h, w = model.input_size
    values = run_float(graph, torch.zeros(1, model.in_channels, h, w))
    graph.shapes = {name: tuple(v.shape[1:]) for name, v in values.items()}
    return graph


def conv_float(op: ConvOp, x: torch.Tensor) -> torch.Tensor:
    y = F.conv2d(x, op.weight.to(x.dtype), op.bias.to(x.dtype), op.stride, op.padding, 1, op.groups)
    if op.act == "relu":
        y = y.clamp(min=0)
    elif op.act == "relu6":
        y = y.clamp(0, 6)
    if op.maxout > 1:
        y = torch.cat((y[:, : op.maxout].amax(1, keepdim=True), y[:, op.maxout :]), 1)
    return y


@torch.no_grad()
def run_float(graph: Graph, images: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Every named tensor of the graph for a float (N, C, H, W) batch (images in [0, 1])."""
    values = {graph.input: images.float()}
    for op in graph.ops:
        x = values[op.input]
        if isinstance(op, ConvOp):
            values[op.output] = conv_float(op, x)
        elif isinstance(op, MBConvOp):
            y = x
            for conv in op.convs():
                y = values[conv.output] = conv_float(conv, y)
            if op.residual:
                values[op.output] = x + y
        else:
            y = F.pad(op.layer(x), (0, op.pad[1], 0, op.pad[0]))
            values[op.output] = y * op.scale.float()[:, None, None] + op.shift.float()[:, None, None]
    return values


__all__ = ["ConvOp", "Graph", "Head", "MBConvOp", "Op", "RNNPoolOp", "build_graph", "conv_float", "run_float"]
