"""A model as a flat list of deployable ops, with BatchNorm folded, and its float execution.

:func:`build_graph` turns a face detector (:class:`~rnnpool.models.face.FaceDetector`) or a classifier
(:class:`~rnnpool.models.classifier.Classifier`, or torchvision's MobileNetV2 as ``rnnpool fit`` leaves it) into
ops that the int8 quantizer, the NumPy integer reference and the C code generator all share:

- ``conv``: any kernel, stride and groups (dense or depthwise); BN folded; ReLU/ReLU6 as a clamp; S3FD
  max-out on the first head's scores.
- ``mbconv``: MobileNetV2 block (1x1 expand, depthwise, 1x1 project, optional residual add).
- ``rnnpool``: the RNNPool layer with its input zero padding, an optional per-channel affine (a following
  BatchNorm) and optional bottom/right output padding (zeros before the affine, or replicated).
- ``l2norm``: per-pixel L2 normalisation times a per-channel weight (the face heads' inputs).
- ``avgpool`` (global average pooling) and ``linear`` (the classifier), on 1x1 maps.

Tensors are named; a detector's heads each name two (class scores, box offsets); a classifier names its
logits. Ops are in execution order and each reads tensors written before it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Set, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F

from ..data.classification import IMAGENET_MEAN, IMAGENET_STD  # the classifiers' input normalisation, folded into the first conv
from ..models.classifier import Classifier
from ..models.face import DetectionHead, FaceDetector
from ..nn import L2Norm, RNNPool2d
from ..nn.blocks import ConvBNAct, InvertedResidual
from ..nn.fastgrnn import FastGRNNCell
from ..nn.l2norm import EPS as L2NORM_EPS
from ..errors import InvalidInputError, UnsupportedError

Shape = Tuple[int, int, int]  # (C, H, W)
# (weight, bias) of a conv op recomputed from the model's live parameters, in the dtype asked for: what
# quantization-aware training (rnnpool.deploy.fake_quant) differentiates through.
Fold = Callable[[torch.dtype], Tuple[torch.Tensor, torch.Tensor]]


@dataclass
class ConvOp:
    """Conv2d (+ folded BN) (+ ReLU/ReLU6); ``maxout`` > 1 keeps the max of the first ``maxout`` channels.

    ``pad_value`` (per input channel) is what padding reads, in the input's own units; None means 0."""

    input: str
    output: str
    weight: torch.Tensor  # (O, I / groups, k, k), float64
    bias: torch.Tensor  # (O,)
    stride: int
    padding: int
    groups: int
    act: Optional[str] = None  # None | "relu" | "relu6"
    maxout: int = 1
    pad_value: Optional[torch.Tensor] = None
    fold: Optional[Fold] = field(default=None, repr=False, compare=False)

    @property
    def kernel(self) -> int:
        return self.weight.shape[-1]

    def live(self, dtype: torch.dtype = torch.float32) -> Tuple[torch.Tensor, torch.Tensor]:
        """(weight, bias) from the model's parameters now (differentiable), or the folded copies without a model."""
        if self.fold is None:
            return self.weight.to(dtype), self.bias.to(dtype)
        return self.fold(dtype)

    def refold(self, transform: Callable[[torch.Tensor, torch.Tensor], Tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Compose ``transform(weight, bias)`` (of the dtype's tensors) into the op's folding and refresh its copies."""
        inner = self.fold or (lambda dtype: (self.weight.to(dtype), self.bias.to(dtype)))
        self.fold = lambda dtype: transform(*inner(dtype))
        self.weight, self.bias = _snapshot(self.fold)

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
    """RNNPool (FastGRNN cells) with its own input padding, then ``pad`` = (bottom, right) output rows /
    columns (``pad_mode`` "zero": zeros before the affine; "replicate": copies of the last row / column),
    then ``y * scale + shift`` per channel (an identity without a following BatchNorm)."""

    input: str
    output: str
    layer: RNNPool2d
    scale: torch.Tensor  # (4 * h2,)
    shift: torch.Tensor
    pad: Tuple[int, int] = (0, 0)
    pad_mode: str = "zero"
    norm: Optional[nn.BatchNorm2d] = field(default=None, repr=False, compare=False)  # the BatchNorm of the affine

    def live_affine(self, dtype: torch.dtype = torch.float32) -> Tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift) from the model's BatchNorm now (differentiable), or the folded copies."""
        if self.norm is None:
            return self.scale.to(dtype), self.shift.to(dtype)
        return bn_affine(self.norm, self.layer.out_channels, dtype)


@dataclass
class L2NormOp:
    """``x / ||x||`` per pixel; the layer's per-channel weight is folded into the convs that read it."""

    input: str
    output: str


@dataclass
class AvgPoolOp:
    """Global average pooling to a 1x1 map."""

    input: str
    output: str


Op = Union[ConvOp, MBConvOp, RNNPoolOp, L2NormOp, AvgPoolOp]


@dataclass
class Head:
    """A detection head: the tensors of its class scores and box offsets, its stride and anchor size."""

    conf: str
    loc: str
    stride: int
    anchor_size: int


@dataclass
class Graph:
    input: str
    ops: List[Op]
    heads: List[Head] = field(default_factory=list)  # detectors
    logits: Optional[str] = None  # classifiers
    shapes: Dict[str, Shape] = field(default_factory=dict)
    task: str = "detection"
    layers: Dict[str, str] = field(default_factory=dict)  # tensor -> the model's module that computes it (reports)
    # tensor -> per-channel (gain, centre): the tensor holds gain * (x - centre) of the model's x (equalize.py)
    equalized: Dict[str, Tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    def layer_of(self, tensor: str) -> str:
        """The module path that computes ``tensor`` (the tensor's own name where unknown)."""
        return self.layers.get(tensor, tensor)

    @property
    def outputs(self) -> Set[str]:
        """The model's output tensors: every head's scores and offsets, or the logits."""
        return {t for h in self.heads for t in (h.conf, h.loc)} | ({self.logits} if self.logits else set())

    def producers(self) -> Dict[str, Op]:
        return {op.output: op for op in self.ops}


def _snapshot(fold: Fold) -> Tuple[torch.Tensor, torch.Tensor]:
    """A fold's (weight, bias) now, as float64 copies detached from the model."""
    with torch.no_grad():
        return tuple(t.detach().clone() for t in fold(torch.float64))  # type: ignore[return-value]


def _fold_bn(conv: nn.Conv2d, bn: Optional[nn.BatchNorm2d], dtype: torch.dtype = torch.float64) -> Tuple[torch.Tensor, torch.Tensor]:
    """Conv weight and bias with an eval-mode BatchNorm folded in, from the live parameters (differentiable
    in the conv's and BN's weights; the running statistics are constants)."""
    weight = conv.weight.to(dtype)
    bias = conv.bias.to(dtype) if conv.bias is not None else torch.zeros(weight.shape[0], dtype=dtype, device=weight.device)
    if bn is None:
        return weight, bias
    scale, shift = bn_affine(bn, weight.shape[0], dtype)
    return weight * scale[:, None, None, None], bias * scale + shift


def _act_name(module: Optional[nn.Module]) -> Optional[str]:
    if module is None:
        return None
    if isinstance(module, nn.ReLU6):
        return "relu6"
    if isinstance(module, nn.ReLU):
        return "relu"
    raise UnsupportedError(f"int8 deployment supports ReLU and ReLU6 activations, not {type(module).__name__}")


def bn_affine(bn: Optional[nn.BatchNorm2d], channels: int, dtype: torch.dtype = torch.float64) -> Tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) of an eval-mode BatchNorm (identity for None), differentiable in its weight and bias."""
    if bn is None:
        return torch.ones(channels, dtype=dtype), torch.zeros(channels, dtype=dtype)
    device = bn.running_var.device
    weight = bn.weight.to(dtype) if bn.weight is not None else torch.ones(channels, dtype=dtype, device=device)
    bias = bn.bias.to(dtype) if bn.bias is not None else torch.zeros(channels, dtype=dtype, device=device)
    scale = weight / torch.sqrt(bn.running_var.to(dtype) + bn.eps)
    return scale, bias - bn.running_mean.to(dtype) * scale


class _Builder:
    def __init__(self, model: nn.Module) -> None:
        self.ops: List[Op] = []
        self.count = 0
        self.paths = {id(m): name for name, m in model.named_modules()}
        self.layers: Dict[str, str] = {}  # tensor -> module path

    def label(self, tensor: str, module: nn.Module) -> str:
        """Remember which module computes ``tensor`` (for reports); returns ``tensor``."""
        self.layers.setdefault(tensor, self.paths.get(id(module), type(module).__name__))
        return tensor

    def name(self, prefix: str = "t") -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def conv_bn_act(self, block: ConvBNAct, x: str, out: Optional[str] = None) -> ConvOp:
        conv, bn = block[0], block[1] if len(block) > 1 and isinstance(block[1], nn.BatchNorm2d) else None
        act = block[2] if len(block) > 2 else None
        return self.conv(conv, bn, _act_name(act), x, out or self.name())

    @staticmethod
    def conv(conv: nn.Conv2d, bn: Optional[nn.BatchNorm2d], act: Optional[str], x: str, out: str, maxout: int = 1) -> ConvOp:
        k, s, p = conv.kernel_size, conv.stride, conv.padding
        if k[0] != k[1] or s[0] != s[1] or not isinstance(p, tuple) or p[0] != p[1] or conv.dilation != (1, 1):
            raise UnsupportedError(f"int8 deployment supports square, undilated convolutions, got {conv}")
        if conv.groups not in (1, conv.in_channels) or (conv.groups > 1 and conv.out_channels != conv.in_channels):
            raise UnsupportedError(f"int8 deployment supports dense or depthwise convolutions, got {conv}")
        fold = lambda dtype: _fold_bn(conv, bn, dtype)  # noqa: E731
        return ConvOp(x, out, *_snapshot(fold), s[0], p[0], conv.groups, act, maxout, fold=fold)

    def module(self, m: nn.Module, x: str) -> str:
        if isinstance(m, ConvBNAct) or _is_torchvision(m, "Conv2dNormActivation"):
            op = self.conv_bn_act(m, x)
            self.ops.append(op)
            return self.label(op.output, m)
        if isinstance(m, InvertedResidual) or _is_torchvision(m, "InvertedResidual"):
            # rnnpool's block holds ConvBNAct units; torchvision's ends in a bare Conv2d + BatchNorm2d projection
            convs = list(m.conv) if isinstance(m, InvertedResidual) else list(m.conv)[:-2] + [nn.Sequential(*list(m.conv)[-2:])]
            residual = m.use_residual if isinstance(m, InvertedResidual) else m.use_res_connect
            if len(convs) not in (2, 3):
                raise UnsupportedError(f"int8 deployment supports MobileNetV2 blocks of (expand,) depthwise, project, got {m}")
            names = [self.label(self.name(), c) for c in convs]
            ops = [self.conv_bn_act(c, src, dst) for c, src, dst in zip(convs, [x] + names[:-1], names)]
            expand = ops[0] if len(ops) == 3 else None
            out = self.name() if residual else names[-1]  # the sum has its own scale
            self.ops.append(MBConvOp(x, out, expand, ops[-2], ops[-1], residual))
            self.layers[out] = self.paths.get(id(m), type(m).__name__)  # the block's output (its sum) is the block's
            return out
        if isinstance(m, RNNPool2d):
            return self.rnnpool(m, [], x)
        if isinstance(m, nn.Sequential) and len(m) and isinstance(m[0], RNNPool2d):
            return self.rnnpool(m[0], list(m)[1:], x)
        if isinstance(m, nn.Sequential):
            for child in m:
                x = self.module(child, x)
            return x
        raise UnsupportedError(f"int8 deployment does not support {type(m).__name__} layers")

    def rnnpool(self, layer: RNNPool2d, rest: List[nn.Module], x: str) -> str:
        """RNNPool2d, then optionally an output pad (ZeroPad2d / ReplicationPad2d) and a BatchNorm2d."""
        for cell in (layer.rnn1, layer.rnn2):
            if not isinstance(cell, FastGRNNCell):
                raise UnsupportedError(f"int8 RNNPool supports FastGRNN cells, not {type(cell).__name__}")
        pad, mode = (0, 0), "zero"
        if rest and isinstance(rest[0], (nn.ZeroPad2d, nn.ReplicationPad2d)):
            left, right, top, bottom = rest[0].padding
            if left or top:
                raise UnsupportedError(f"int8 RNNPool output padding must be bottom/right only, got {rest[0].padding}")
            pad, mode = (bottom, right), "zero" if isinstance(rest[0], nn.ZeroPad2d) else "replicate"
            rest = rest[1:]
        bn = rest.pop(0) if rest and isinstance(rest[0], nn.BatchNorm2d) else None
        out = self.label(self.name(), layer)
        scale, shift = (t.detach().clone() for t in bn_affine(bn, layer.out_channels))
        self.ops.append(RNNPoolOp(x, out, layer, scale, shift, pad, mode, norm=bn))
        return self.module(nn.Sequential(*rest), out) if rest else out

    def head(self, head: DetectionHead, x: str, index: int) -> Tuple[str, str]:
        norm = None
        if isinstance(head.norm, L2Norm):
            out = self.label(self.name(), head.norm)
            self.ops.append(L2NormOp(x, out))
            x, norm = out, head.norm
        outputs = []
        for branch, kind, maxout in ((head.conf, "conf", head.maxout_background), (head.loc, "loc", 1)):
            src = x
            final = branch
            ops = []
            if isinstance(branch, nn.Sequential):
                *hidden, final = list(branch)
                for block in hidden:
                    ops.append(self.conv_bn_act(block, src))
                    src = self.label(ops[-1].output, block)
            ops.append(self.conv(final, None, None, src, f"head{index}_{kind}", maxout))
            self.label(ops[-1].output, final)
            if norm is not None:  # L2Norm's weight scales the first conv's input channels
                ops[0].refold(lambda w, b, norm=norm: (w * norm.weight.to(w.dtype)[None, :, None, None], b))
            self.ops += ops
            outputs.append(ops[-1].output)
        return outputs[0], outputs[1]


def _is_torchvision(m: nn.Module, name: str) -> bool:
    """Whether ``m`` is torchvision's class ``name`` (MobileNetV2, InvertedResidual, Conv2dNormActivation)."""
    return type(m).__name__ == name and type(m).__module__.startswith("torchvision.")


def _classifier_parts(model: nn.Module) -> Optional[Tuple[nn.Module, nn.Module, nn.Module]]:
    """(features, global pool, final layer) of a zoo classifier or of torchvision's MobileNetV2 (whose forward
    average-pools functionally and whose classifier is dropout + linear); None for other models."""
    if isinstance(model, Classifier):
        return model.features, model.head_pool, model.classifier
    if _is_torchvision(model, "MobileNetV2"):
        layers = [m for m in model.classifier if not isinstance(m, nn.Dropout)]
        return model.features, nn.AdaptiveAvgPool2d(1), layers[0] if len(layers) == 1 else model.classifier
    return None


def _check_modules(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d) and m.training:
            raise InvalidInputError("put the model in eval mode before building its graph (BatchNorm uses running statistics)")


@torch.no_grad()
def build_graph(model: nn.Module, input_size: Optional[Tuple[int, int]] = None) -> Graph:
    """The deployable ops of a face detector or classifier (in eval mode), with every tensor's (C, H, W).

    ``input_size`` (H, W) defaults to the detector's own; a classifier needs it (or a recorded one)."""
    _check_modules(model)
    builder = _Builder(model)
    if isinstance(model, FaceDetector):
        x, heads = "image", []
        for index, (stage, head, stride, size) in enumerate(zip(model.stages, model.heads, model.head_strides, model.anchor_sizes)):
            x = builder.module(stage, x)
            conf, loc = builder.head(head, x, index)
            heads.append(Head(conf, loc, stride, size))
        graph = Graph("image", builder.ops, heads, task="detection")
        channels, (h, w) = model.in_channels, input_size or model.input_size
    elif (parts := _classifier_parts(model)) is not None:
        graph = _classifier_graph(*parts, builder)
        size = input_size or getattr(model, "input_size", None)
        if size is None:
            raise InvalidInputError(f"give the input size (H, W) of this {type(model).__name__}")
        channels, (h, w) = 3, (size, size) if isinstance(size, int) else size
    else:
        what = ("a torch.fx GraphModule (rnnpool fit rewires models without an nn.Sequential trunk through their graph)"
                if isinstance(model, torch.fx.GraphModule) else type(model).__name__)
        raise UnsupportedError(f"int8 deployment supports the zoo's face detectors and classifiers (and torchvision's "
                               f"MobileNetV2, fitted or not), got {what}")
    values = run_float(graph, torch.zeros(1, channels, h, w))
    graph.shapes = {name: tuple(v.shape[1:]) for name, v in values.items()}
    graph.layers = {"image": "input", **builder.layers}
    return graph


def _classifier_graph(features: nn.Module, pool: nn.Module, linear: nn.Module, builder: _Builder) -> Graph:
    x = builder.module(features, "image")
    first = builder.ops[0]
    if not isinstance(first, ConvOp) or first.input != "image":
        raise UnsupportedError("int8 classifiers must start with a convolution (the input normalisation folds into it)")
    _fold_normalisation(first)
    if isinstance(pool, nn.AdaptiveAvgPool2d) and pool.output_size in (1, (1, 1)):
        out = builder.label(builder.name(), pool)
        builder.ops.append(AvgPoolOp(x, out))
        x = out
    elif isinstance(pool, RNNPool2d):
        x = builder.rnnpool(pool, [], x)
    else:
        raise UnsupportedError(f"int8 classifiers pool with global average pooling or RNNPool, not {type(pool).__name__}")
    if not isinstance(linear, nn.Linear):
        raise UnsupportedError("int8 classifiers end with one nn.Linear")

    def fold(dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor]:
        weight = linear.weight.to(dtype)[:, :, None, None]
        bias = linear.bias.to(dtype) if linear.bias is not None else torch.zeros(weight.shape[0], dtype=dtype, device=weight.device)
        return weight, bias

    builder.ops.append(ConvOp(x, builder.label("logits", linear), *_snapshot(fold), 1, 0, 1, fold=fold))
    return Graph("image", builder.ops, logits="logits", task="classification")


def _fold_normalisation(conv: ConvOp) -> None:
    """Fold (x - mean) / std into the first conv, which then reads the [0, 1] image; padding reads the mean,
    so the border pixels see what the normalised model's zero padding gives."""
    def normalise(weight: torch.Tensor, bias: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        mean = torch.tensor(IMAGENET_MEAN, dtype=weight.dtype, device=weight.device)
        std = torch.tensor(IMAGENET_STD, dtype=weight.dtype, device=weight.device)
        return weight / std[None, :, None, None], bias - (weight * (mean / std)[None, :, None, None]).sum((1, 2, 3))

    conv.refold(normalise)
    conv.pad_value = torch.tensor(IMAGENET_MEAN, dtype=torch.float64)


def conv_float(op: ConvOp, x: torch.Tensor) -> torch.Tensor:
    if op.pad_value is not None and op.padding:
        p = op.padding
        shifted = F.pad(x - op.pad_value.to(x.dtype)[None, :, None, None], (p, p, p, p))
        x = shifted + op.pad_value.to(x.dtype)[None, :, None, None]
        y = F.conv2d(x, op.weight.to(x.dtype), op.bias.to(x.dtype), op.stride, 0, 1, op.groups)
    else:
        y = F.conv2d(x, op.weight.to(x.dtype), op.bias.to(x.dtype), op.stride, op.padding, 1, op.groups)
    if op.act == "relu":
        y = y.clamp(min=0)
    elif op.act == "relu6":
        y = y.clamp(0, 6)
    if op.maxout > 1:
        y = torch.cat((y[:, : op.maxout].amax(1, keepdim=True), y[:, op.maxout :]), 1)
    return y


def rnnpool_float(op: RNNPoolOp, x: torch.Tensor) -> torch.Tensor:
    y = op.layer(x)
    bottom, right = op.pad
    if bottom or right:
        y = F.pad(y, (0, right, 0, bottom), mode="constant" if op.pad_mode == "zero" else "replicate")
    return y * op.scale.to(y.dtype)[:, None, None] + op.shift.to(y.dtype)[:, None, None]


def l2norm_float(op: L2NormOp, x: torch.Tensor) -> torch.Tensor:
    return x / (x.pow(2).sum(1, keepdim=True).sqrt() + L2NORM_EPS)


@torch.no_grad()
def run_float(graph: Graph, images: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Every named tensor of the graph for a float (N, C, H, W) batch of images in [0, 1], computed in the dtype
    of the graph's RNNPool layers (float32 without one; the convs take any)."""
    dtype = next((op.layer.rnn1.w1.dtype for op in graph.ops if isinstance(op, RNNPoolOp)), torch.float32)
    values = {graph.input: images.to(dtype)}
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
        elif isinstance(op, RNNPoolOp):
            values[op.output] = rnnpool_float(op, x)
        elif isinstance(op, L2NormOp):
            values[op.output] = l2norm_float(op, x)
        else:
            values[op.output] = x.mean((2, 3), keepdim=True)
    return values


def run_float_batches(graph: Graph, images: Iterable[torch.Tensor], batch_size: int = 8) -> Iterator[Dict[str, torch.Tensor]]:
    """:func:`run_float` over float (C, H, W) images in [0, 1], ``batch_size`` at a time (calibration); an image
    of another shape than the graph's input raises, naming both."""
    batch: List[torch.Tensor] = []
    for image in images:
        if tuple(image.shape) != graph.shapes[graph.input]:
            raise InvalidInputError(f"calibration images must be {graph.shapes[graph.input]} (C, H, W), got {tuple(image.shape)}")
        batch.append(image)
        if len(batch) == batch_size:
            yield run_float(graph, torch.stack(batch))
            batch.clear()
    if batch:
        yield run_float(graph, torch.stack(batch))


__all__ = ["AvgPoolOp", "bn_affine", "ConvOp", "Graph", "Head", "L2NormOp", "MBConvOp", "Op", "RNNPoolOp", "build_graph",
           "conv_float", "l2norm_float", "rnnpool_float", "run_float", "run_float_batches"]
