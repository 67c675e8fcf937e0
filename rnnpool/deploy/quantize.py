"""Post-training int8 quantization of a face detector graph (see :mod:`rnnpool.deploy.graph`).

- Weights: symmetric int8 per output channel (per row for the RNN matrices); biases int32.
- Activations: asymmetric int8 per tensor, ranges from calibration images (always including 0). The
  image itself is ``pixel - 128`` with scale 1/255, exactly the float model's ``pixel / 255`` input.
- Requantization: fixed-point multipliers (:mod:`rnnpool.deploy.fixedpoint`).
- FastGRNN: Q12 pre-activations, Q14 states, sigmoid/tanh (or their piecewise-linear variants) by table.

:class:`QuantizedGraph` holds integers only (plus the scales that describe them); the NumPy integer
reference (:mod:`rnnpool.deploy.int8_reference`) and the generated C both execute it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple, Union

import numpy as np
import torch

from .fixedpoint import NONLINEARITY_FUNCTIONS, PRE_BITS, STATE_BITS, build_lut, quantize_multiplier
from .graph import ConvOp, Graph, Head, MBConvOp, RNNPoolOp, build_graph, run_float

INPUT_SCALE, INPUT_ZERO_POINT = 1.0 / 255.0, -128


@dataclass
class QTensor:
    shape: Tuple[int, int, int]  # (C, H, W); stored channels-last (H, W, C)
    scale: float
    zero_point: int


@dataclass
class QConv:
    input: str
    output: str
    weight: np.ndarray  # int8 (O, k, k, I / groups)
    bias: np.ndarray  # int32 (O,)
    mult: np.ndarray  # int32 (O,)
    shift: np.ndarray  # int32 (O,)
    stride: int
    padding: int
    groups: int
    input_zero_point: int
    output_zero_point: int
    act_min: int
    act_max: int
    maxout: int = 1

    @property
    def kernel(self) -> int:
        return self.weight.shape[1]

    @property
    def out_channels(self) -> int:
        return self.weight.shape[0]


@dataclass
class QAdd:
    """``out = zo + requantize((a - za) * mult_a + (b - zb) * mult_b, 1, shift)``."""

    a_zero_point: int
    b_zero_point: int
    output_zero_point: int
    mult_a: int
    mult_b: int
    shift: int


@dataclass
class QMBConv:
    input: str
    output: str
    expand: Optional[QConv]
    depthwise: QConv
    project: QConv
    add: Optional[QAdd]

    def convs(self) -> List[QConv]:
        return [c for c in (self.expand, self.depthwise, self.project) if c is not None]


@dataclass
class QFastGRNN:
    """Integer FastGRNN: ``wx = rq(W (x - zx))`` and ``uh = rq(U h)`` in Q12, h in Q14."""

    weight: np.ndarray  # int8 (H, I)
    w_mult: np.ndarray  # int32 (H,)
    w_shift: np.ndarray
    input_zero_point: int
    recurrent: np.ndarray  # int8 (H, H)
    u_mult: np.ndarray
    u_shift: np.ndarray
    bias_gate: np.ndarray  # int32 (H,) Q12
    bias_update: np.ndarray
    zeta: int  # sigmoid(zeta) in Q14
    nu: int
    lut_gate: np.ndarray  # int16 Q14
    lut_update: np.ndarray

    @property
    def hidden_size(self) -> int:
        return self.weight.shape[0]

    @property
    def input_size(self) -> int:
        return self.weight.shape[1]


@dataclass
class QRNNPool:
    """Output channel ``c`` = ``zo + requantize(h_q14 * out_mult[c] + out_bias[c], 1, out_shift)``."""

    input: str
    output: str
    patch: Tuple[int, int]
    stride: Tuple[int, int]
    rnn1: QFastGRNN
    rnn2: QFastGRNN
    out_mult: np.ndarray  # int64 (4 h2,)
    out_bias: np.ndarray  # int64 (4 h2,)
    out_shift: int
    output_zero_point: int
    pad: Tuple[int, int]  # (bottom rows, right columns), filled with the affine of 0


QOp = Union[QConv, QMBConv, QRNNPool]


@dataclass
class QuantizedGraph:
    input: str
    ops: List[QOp]
    heads: List[Head]
    tensors: Dict[str, QTensor] = field(default_factory=dict)

    @property
    def input_shape(self) -> Tuple[int, int, int]:
        return self.tensors[self.input].shape


def activation_params(low: float, high: float) -> Tuple[float, int]:
    """(scale, zero point) of an asymmetric int8 tensor covering [low, high] and 0."""
    low, high = min(low, 0.0), max(high, 0.0)
    if high - low < 1e-8:
        high = low + 1e-8
    scale = (high - low) / 255.0
    return scale, int(np.clip(round(-128 - low / scale), -128, 127))


def _weight_scales(weight: torch.Tensor) -> np.ndarray:
    """Symmetric per-output-channel scales (max |w| / 127; 1 for an all-zero channel)."""
    peak = weight.reshape(weight.shape[0], -1).abs().amax(1).numpy()
    return np.where(peak > 0, peak / 127.0, 1.0)


def _quantize_weight(weight: torch.Tensor, scales: np.ndarray) -> np.ndarray:
    shape = (-1,) + (1,) * (weight.dim() - 1)
    return np.clip(np.round(weight.numpy() / scales.reshape(shape)), -127, 127).astype(np.int8)


def _multipliers(values: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    pairs = [quantize_multiplier(float(v)) for v in values]
    return np.array([p[0] for p in pairs], dtype=np.int32), np.array([p[1] for p in pairs], dtype=np.int32)


def _quantize_conv(op: ConvOp, tensors: Dict[str, QTensor]) -> QConv:
    x, y = tensors[op.input], tensors[op.output]
    scales = _weight_scales(op.weight)
    weight = _quantize_weight(op.weight, scales).transpose(0, 2, 3, 1).copy()  # (O, k, k, I/g)
    bias = np.round(op.bias.numpy() / (x.scale * scales))
    if np.abs(bias).max(initial=0) >= 2**31:
        raise ValueError(f"bias of {op.output} does not fit int32 at input scale {x.scale}")
    mult, shift = _multipliers(x.scale * scales / y.scale)
    act_min, act_max = -128, 127
    if op.act in ("relu", "relu6"):
        act_min = max(-128, y.zero_point)
    if op.act == "relu6":
        act_max = min(127, y.zero_point + int(round(6.0 / y.scale)))
    return QConv(op.input, op.output, weight, bias.astype(np.int32), mult, shift, op.stride, op.padding, op.groups,
                 x.zero_point, y.zero_point, act_min, act_max, op.maxout)


def _quantize_add(a: QTensor, b: QTensor, out: QTensor) -> QAdd:
    ratios = (a.scale / out.scale, b.scale / out.scale)
    shift = 30 - max(0, math.ceil(math.log2(max(ratios))))
    return QAdd(a.zero_point, b.zero_point, out.zero_point, int(round(ratios[0] * 2**shift)), int(round(ratios[1] * 2**shift)), shift)


def _quantize_cell(cell, input_scale: float, input_zero_point: int) -> QFastGRNN:
    for name in (cell.gate_nonlinearity, cell.update_nonlinearity):
        if name not in NONLINEARITY_FUNCTIONS:
            raise NotImplementedError(f"int8 FastGRNN supports {', '.join(NONLINEARITY_FUNCTIONS)}, not {name!r}")
    w = cell.input_weight().detach().double()
    u = cell.recurrent_weight().detach().double()
    w_scales, u_scales = _weight_scales(w), _weight_scales(u)
    w_mult, w_shift = _multipliers(input_scale * w_scales * 2**PRE_BITS)
    u_mult, u_shift = _multipliers(u_scales * 2.0 ** (PRE_BITS - STATE_BITS))

    def q12(v: torch.Tensor) -> np.ndarray:
        return np.round(v.detach().double().numpy() * 2**PRE_BITS).astype(np.int32)

    def q14(v: torch.Tensor) -> int:
        return int(round(torch.sigmoid(v.detach().double()).item() * 2**STATE_BITS))

    return QFastGRNN(_quantize_weight(w, w_scales), w_mult, w_shift, input_zero_point, _quantize_weight(u, u_scales),
                     u_mult, u_shift, q12(cell.bias_gate), q12(cell.bias_update), q14(cell.zeta), q14(cell.nu),
                     build_lut(NONLINEARITY_FUNCTIONS[cell.gate_nonlinearity]),
                     build_lut(NONLINEARITY_FUNCTIONS[cell.update_nonlinearity]))


def _quantize_rnnpool(op: RNNPoolOp, tensors: Dict[str, QTensor]) -> QRNNPool:
    x, y = tensors[op.input], tensors[op.output]
    layer = op.layer
    rnn1 = _quantize_cell(layer.rnn1, x.scale, x.zero_point)
    rnn2 = _quantize_cell(layer.rnn2, 2.0**-STATE_BITS, 0)
    real = op.scale.numpy() / (y.scale * 2**STATE_BITS)
    shift = min(40, 30 - max(0, math.ceil(math.log2(max(np.abs(real).max(), 1e-30)))))
    mult = np.round(real * 2**shift).astype(np.int64)
    bias = np.round(op.shift.numpy() / y.scale * 2**shift).astype(np.int64)
    return QRNNPool(op.input, op.output, layer.patch_size, layer.stride, rnn1, rnn2, mult, bias, shift, y.zero_point, op.pad)


@torch.no_grad()
def calibrate(graph: Graph, images: Iterable[torch.Tensor], batch_size: int = 8) -> Dict[str, Tuple[float, float]]:
    """(min, max) of every tensor of ``graph`` over float (C, H, W) images in [0, 1]."""
    ranges: Dict[str, Tuple[float, float]] = {}
    batch: List[torch.Tensor] = []

    def flush() -> None:
        for name, value in run_float(graph, torch.stack(batch)).items():
            lo, hi = value.min().item(), value.max().item()
            old = ranges.get(name, (lo, hi))
            ranges[name] = (min(lo, old[0]), max(hi, old[1]))
        batch.clear()

    for image in images:
        if tuple(image.shape) != graph.shapes[graph.input]:
            raise ValueError(f"calibration images must be {graph.shapes[graph.input]} (C, H, W), got {tuple(image.shape)}")
        batch.append(image)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    if not ranges:
        raise ValueError("calibration needs at least one image")
    return ranges


def quantize_graph(graph: Graph, ranges: Dict[str, Tuple[float, float]]) -> QuantizedGraph:
    """Integer version of ``graph`` with activation ranges from :func:`calibrate`."""
    tensors = {name: QTensor(shape, *activation_params(*ranges[name])) for name, shape in graph.shapes.items()}
    tensors[graph.input] = QTensor(graph.shapes[graph.input], INPUT_SCALE, INPUT_ZERO_POINT)
    ops: List[QOp] = []
    for op in graph.ops:
        if isinstance(op, ConvOp):
            ops.append(_quantize_conv(op, tensors))
        elif isinstance(op, MBConvOp):
            convs = {id(c): _quantize_conv(c, tensors) for c in op.convs()}
            add = _quantize_add(tensors[op.project.output], tensors[op.input], tensors[op.output]) if op.residual else None
            ops.append(QMBConv(op.input, op.output, convs.get(id(op.expand)), convs[id(op.depthwise)], convs[id(op.project)], add))
        else:
            ops.append(_quantize_rnnpool(op, tensors))
    return QuantizedGraph(graph.input, ops, graph.heads, tensors)


def quantize_model(model, calibration_images: Iterable[torch.Tensor]) -> QuantizedGraph:
    """Build, calibrate and quantize a face detector in one call (the model is put in eval mode)."""
    model.eval()
    graph = build_graph(model)
    return quantize_graph(graph, calibrate(graph, calibration_images))


__all__ = ["INPUT_SCALE", "INPUT_ZERO_POINT", "QAdd", "QConv", "QFastGRNN", "QMBConv", "QOp", "QRNNPool", "QTensor",
           "QuantizedGraph", "activation_params", "calibrate", "quantize_graph", "quantize_model"]
