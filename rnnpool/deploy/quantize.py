"""Post-training int8 quantization of a model graph (see :mod:`rnnpool.deploy.graph`).

- Weights: symmetric int8 per output channel (per row for the RNN input matrices); biases int32. The RNN
  recurrent matrices U are scaled by a power of two per row, so the recurrent term needs only a shift.
- Activations: asymmetric int8 per tensor, ranges from calibration images (always including 0). The
  image itself is ``pixel - 128`` with scale 1/255, exactly the float model's ``pixel / 255`` input.
- Requantization: fixed-point multipliers (:mod:`rnnpool.deploy.fixedpoint`).
- FastGRNN: Q12 pre-activations, Q14 states, sigmoid/tanh (or their piecewise-linear variants) by table.
- L2Norm: the per-pixel norm in float32 (IEEE-754 square root and division are exactly specified, so C and
  NumPy agree bit for bit), the rest in integers.

:class:`QuantizedGraph` holds integers only (plus the scales that describe them); the NumPy integer
reference (:mod:`rnnpool.deploy.int8_reference`) and the generated C both execute it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple, Union

import numpy as np
import torch

from ..errors import InvalidInputError, RnnpoolError, UnsupportedError
from .fixedpoint import (NONLINEARITY_FUNCTIONS, PRE_BITS, STATE_BITS, build_lut, quantize_multiplier,
                         quantize_multiplier_high_word)
from .equalize import equalize_rnnpool
from .graph import AvgPoolOp, ConvOp, Graph, Head, L2NormOp, MBConvOp, RNNPoolOp, build_graph, run_float_batches

INPUT_SCALE, INPUT_ZERO_POINT = 1.0 / 255.0, -128
L2NORM_BITS = 22  # the L2Norm's 1 / ||x|| in Q22
L2NORM_SCALE = 1.0 / 127  # an L2Norm's output x / ||x|| lies in [-1, 1]: int8 with this scale, zero point 0
KEY_MULT_BITS = 22  # detection keys: (score difference) * key_mult, key_mult < 2**22
ACC_LIMIT = 2**31 - 1  # int32 accumulators of the C kernels
MIN_ACTIVATION_RANGE = 1e-8  # a constant tensor still gets a positive scale


class QuantizationError(RnnpoolError, ValueError):
    """A model (or its calibration) that int8 cannot represent; the message names the layer."""


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
    pad_values: Optional[np.ndarray] = None  # int8 (I,): what padding reads (default: the input zero point)

    @property
    def kernel(self) -> int:
        return self.weight.shape[1]

    @property
    def out_channels(self) -> int:
        return self.weight.shape[0]

    @property
    def in_channels(self) -> int:
        return self.weight.shape[3] * self.groups

    @property
    def depthwise(self) -> bool:
        return self.groups > 1


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
    """Integer FastGRNN: ``a = shift_round(W (x - zx), w_shift) + b_z`` once per input, then per step
    ``p = a + shift_round(U h, u_shift)`` (Q12), ``z = lut_gate[p]``, ``c = lut_update[p + b_h - b_z]``,
    ``h' = (coef c + z h + 2^13) >> 14`` with ``coef = ((zeta (2^14 - z) + 2^13) >> 14) + nu`` (h in Q14).
    Both matrices are scaled by a power of two per row (W with its input's scale folded in), so their
    requantization is one rounding shift."""

    weight: np.ndarray  # int8 (H, I): W[j] * input_scale * 2^12 ~ weight[j] * 2^-w_shift[j]
    w_shift: np.ndarray  # int32 (H,); negative: a left shift
    input_zero_point: int
    recurrent: np.ndarray  # int8 (H, H): U[j] ~ recurrent[j] * 2^-(u_shift[j] - 2)
    u_shift: np.ndarray  # int32 (H,)
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
    padding: Tuple[int, int]  # input zero padding (rows, columns) per side
    rnn1: QFastGRNN
    rnn2: QFastGRNN
    out_mult: np.ndarray  # int64 (4 h2,)
    out_bias: np.ndarray  # int64 (4 h2,)
    out_shift: int
    output_zero_point: int
    pad: Tuple[int, int]  # (bottom rows, right columns)
    pad_mode: str = "zero"  # "zero": the affine of a zero state; "replicate": copies of the last row / column


@dataclass
class QL2Norm:
    """``y_c = clamp((d_c * inv + 2^21) >> 22, -127, 127)`` with ``d = x - zx`` and
    ``inv = int(127 * 2^22 / sqrtf(sum d^2))`` in float32 (0 for an all-zero pixel): x / ||x|| with scale
    1/127 and zero point 0 (the layer's weight is folded into the convs that read it)."""

    input: str
    output: str
    input_zero_point: int


@dataclass
class QAvgPool:
    """Global average pool: ``zo + rq(sum(x) - count * zx, mult, shift)`` per channel."""

    input: str
    output: str
    count: int
    input_zero_point: int
    mult: int
    shift: int
    output_zero_point: int


QOp = Union[QConv, QMBConv, QRNNPool, QL2Norm, QAvgPool]


@dataclass
class QuantizedGraph:
    input: str
    ops: List[QOp]
    heads: List[Head]
    tensors: Dict[str, QTensor] = field(default_factory=dict)
    logits: Optional[str] = None
    task: str = "detection"
    key_bits: int = 0  # detection keys are logits in units of 2^-key_bits
    layers: Dict[str, str] = field(default_factory=dict)  # tensor -> the model's module that computes it (reports)
    equalized: Dict[str, Tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # as Graph.equalized

    def layer_of(self, tensor: str) -> str:
        """The module path that computes ``tensor`` (the tensor's own name where unknown)."""
        return self.layers.get(tensor, tensor)

    @property
    def input_shape(self) -> Tuple[int, int, int]:
        return self.tensors[self.input].shape


def activation_params(low: float, high: float) -> Tuple[float, int]:
    """(scale, zero point) of an asymmetric int8 tensor covering [low, high] and 0."""
    low, high = min(low, 0.0), max(high, 0.0)
    if high - low < MIN_ACTIVATION_RANGE:
        high = low + MIN_ACTIVATION_RANGE
    scale = (high - low) / 255.0
    return scale, int(np.clip(round(-128 - low / scale), -128, 127))


def weight_scales(weight: torch.Tensor) -> torch.Tensor:
    """Symmetric per-output-channel scales (max |w| / 127; 1 for an all-zero channel), on ``weight``'s device
    (constants: no gradient flows through them)."""
    peak = weight.detach().reshape(weight.shape[0], -1).abs().amax(1)
    return torch.where(peak > 0, peak / 127.0, torch.ones_like(peak))


def _quantize_weight(weight: torch.Tensor, scales: np.ndarray) -> np.ndarray:
    shape = (-1,) + (1,) * (weight.dim() - 1)
    return np.clip(np.round(weight.numpy() / scales.reshape(shape)), -127, 127).astype(np.int8)


def _multipliers(values: np.ndarray, high_word: bool) -> Tuple[np.ndarray, np.ndarray]:
    form = quantize_multiplier_high_word if high_word else quantize_multiplier
    pairs = [form(float(v)) for v in values]
    return np.array([p[0] for p in pairs], dtype=np.int32), np.array([p[1] for p in pairs], dtype=np.int32)


def _check_accumulator(name: str, bias: np.ndarray, terms: int) -> None:
    """The C kernels accumulate in int32: bias + terms * 127 * 255 must fit."""
    if np.abs(bias).max(initial=0) + terms * 127 * 255 > ACC_LIMIT:
        raise QuantizationError(f"{name}: bias {np.abs(bias).max()} does not fit the int32 accumulator "
                                f"({terms} products); its input range is too narrow for its bias")


def activation_bounds(act: Optional[str], output: QTensor) -> Tuple[int, int]:
    """The int8 clamp of a conv's output that applies its activation (None, "relu" or "relu6")."""
    low, high = -128, 127
    if act in ("relu", "relu6"):
        low = max(-128, output.zero_point)
    if act == "relu6":
        high = min(127, output.zero_point + int(round(6.0 / output.scale)))
    return low, high


def _quantize_conv(op: ConvOp, tensors: Dict[str, QTensor], high_word: bool = True) -> QConv:
    x, y = tensors[op.input], tensors[op.output]
    scales = weight_scales(op.weight).numpy()
    weight = _quantize_weight(op.weight, scales).transpose(0, 2, 3, 1).copy()  # (O, k, k, I/g)
    bias = np.round(op.bias.numpy() / (x.scale * scales))
    _check_accumulator(op.output, bias, int(np.prod(weight.shape[1:])))
    mult, shift = _multipliers(x.scale * scales / y.scale, high_word)
    act_min, act_max = activation_bounds(op.act, y)
    pad_values = None
    if op.pad_value is not None:
        pad_values = np.clip(np.round(op.pad_value.numpy() / x.scale) + x.zero_point, -128, 127).astype(np.int8)
    return QConv(op.input, op.output, weight, bias.astype(np.int32), mult, shift, op.stride, op.padding, op.groups,
                 x.zero_point, y.zero_point, act_min, act_max, op.maxout, pad_values)


ADD_MULT_BITS = 21  # residual-add multipliers below 2**21: (a - za) * ma + (b - zb) * mb then fits 32 bits


def _quantize_add(a: QTensor, b: QTensor, out: QTensor) -> QAdd:
    """Multipliers of at most ADD_MULT_BITS bits (20-21 bits of precision for ratios near 1, far below an int8
    step), so the C kernel adds in 32 bits exactly: 2 * 255 * 2**21 + 2**(shift - 1) < 2**31."""
    ratios = (a.scale / out.scale, b.scale / out.scale)
    shift = ADD_MULT_BITS - max(0, math.ceil(math.log2(max(ratios))))
    if shift < 1:
        raise QuantizationError(f"a residual add's scale ratio {max(ratios):.3g} is too large for fixed point")
    return QAdd(a.zero_point, b.zero_point, out.zero_point, int(round(ratios[0] * 2**shift)), int(round(ratios[1] * 2**shift)), shift)


def pow2_exponents(matrix: torch.Tensor) -> torch.Tensor:
    """Per row, the largest e with max |row| * 2^e <= 127 (at most 30: rows of tiny weights keep the shift in
    range and round to 0; 0 for an all-zero row), as float64 on ``matrix``'s device, no gradient."""
    peak = matrix.detach().abs().amax(1).double()
    exps = torch.where(peak > 0, torch.floor(torch.log2(127.0 / peak.clamp(min=1e-30))), torch.zeros_like(peak))
    return exps.clamp(max=30)


def _pow2_rows(matrix: torch.Tensor) -> Tuple[np.ndarray, np.ndarray]:
    """Rows quantized with a power-of-two scale each: (int8 rows, exponents e with row ~ row_int * 2^-e)."""
    exps = pow2_exponents(matrix).numpy().astype(np.int64)
    return np.clip(np.round(matrix.numpy() * 2.0 ** exps[:, None]), -127, 127).astype(np.int8), exps


def _quantize_cell(cell, input_scale: float, input_zero_point: int, name: str) -> QFastGRNN:
    for nonlinearity in (cell.gate_nonlinearity, cell.update_nonlinearity):
        if nonlinearity not in NONLINEARITY_FUNCTIONS:
            raise UnsupportedError(f"int8 FastGRNN supports {', '.join(NONLINEARITY_FUNCTIONS)}, not {nonlinearity!r}")
    w = cell.input_weight().detach().double()
    u = cell.recurrent_weight().detach().double()
    # W (x - zx) * input_scale in Q12: the integer input times W * input_scale * 2^12
    w_int, w_exp = _pow2_rows(w * input_scale * 2**PRE_BITS)
    u_int, u_exp = _pow2_rows(u)
    if (u_exp < -(STATE_BITS - PRE_BITS)).any():
        raise QuantizationError(f"{name}: recurrent weights up to {u.abs().max():.1f} are too large for int8 (at most 508)")

    def q12(v: torch.Tensor) -> np.ndarray:
        return np.round(v.detach().double().numpy() * 2**PRE_BITS).astype(np.int32)

    def q14(v: torch.Tensor) -> int:
        return int(round(torch.sigmoid(v.detach().double()).item() * 2**STATE_BITS))

    # U h in Q12: sum U_int 2^-e * h_q14 2^-14 * 2^12 = (U_int . h_q14) >> (e + 2)
    return QFastGRNN(w_int, w_exp.astype(np.int32), input_zero_point, u_int,
                     (u_exp + STATE_BITS - PRE_BITS).astype(np.int32), q12(cell.bias_gate), q12(cell.bias_update),
                     q14(cell.zeta), q14(cell.nu), build_lut(NONLINEARITY_FUNCTIONS[cell.gate_nonlinearity]),
                     build_lut(NONLINEARITY_FUNCTIONS[cell.update_nonlinearity]))


def rnnpool_output_shift(peak: float) -> int:
    """Bits of the fixed-point output affine of an RNNPool whose largest real multiplier is ``peak``."""
    return min(40, 30 - max(0, math.ceil(math.log2(max(peak, 1e-30)))))


def _quantize_rnnpool(op: RNNPoolOp, tensors: Dict[str, QTensor]) -> QRNNPool:
    x, y = tensors[op.input], tensors[op.output]
    layer = op.layer
    rnn1 = _quantize_cell(layer.rnn1, x.scale, x.zero_point, f"{op.output} RNN1")
    rnn2 = _quantize_cell(layer.rnn2, 2.0**-STATE_BITS, 0, f"{op.output} RNN2")
    real = op.scale.numpy() / (y.scale * 2**STATE_BITS)
    shift = rnnpool_output_shift(float(np.abs(real).max()))
    mult = np.round(real * 2**shift).astype(np.int64)
    bias = np.round(op.shift.numpy() / y.scale * 2**shift).astype(np.int64)
    return QRNNPool(op.input, op.output, layer.patch_size, layer.stride, layer.padding, rnn1, rnn2, mult, bias, shift,
                    y.zero_point, op.pad, op.pad_mode)


def _quantize_l2norm(op: L2NormOp, tensors: Dict[str, QTensor]) -> QL2Norm:
    return QL2Norm(op.input, op.output, tensors[op.input].zero_point)


def _quantize_avgpool(op: AvgPoolOp, tensors: Dict[str, QTensor]) -> QAvgPool:
    x, y = tensors[op.input], tensors[op.output]
    count = x.shape[1] * x.shape[2]
    mult, shift = quantize_multiplier(x.scale / (y.scale * count))
    return QAvgPool(op.input, op.output, count, x.zero_point, mult, shift, y.zero_point)


CALIBRATION_METHODS = ("minmax", "percentile", "mse")
CALIBRATION_SAMPLES = 1 << 16  # values kept per tensor and batch for the percentile and mse methods
QUANTILE_MAX_VALUES = 1 << 24  # the most values torch.quantile takes
MSE_SAMPLES = 1 << 15  # values the mse method's search evaluates per tensor
MSE_SHRINK = 40  # candidate ends per side: the min/max ends times 1, 39/40, ..., 1/40


def mse_range(values: torch.Tensor, low: float, high: float) -> Tuple[float, float]:
    """The int8 range (a shrunk ``low`` times a shrunk ``high``, from MSE_SHRINK factors each) whose asymmetric
    quantization of ``values`` (rounded and clamped as :func:`activation_params` describes) has the smallest mean
    squared error; ties keep the wider range."""
    low, high = min(low, 0.0), max(high, 0.0)
    factors = [(MSE_SHRINK - i) / MSE_SHRINK for i in range(MSE_SHRINK)]
    candidates = [(low * a, high * b) for a in (factors if low < 0 else [1.0]) for b in (factors if high > 0 else [1.0])]
    params = [activation_params(lo, hi) for lo, hi in candidates]
    scale = torch.tensor([p[0] for p in params], dtype=torch.float64)[:, None]
    zero = torch.tensor([p[1] for p in params], dtype=torch.float64)[:, None]
    x = values.double()[None]
    errors = torch.cat([((torch.clamp(torch.round(x / s) + z, -128, 127) - z) * s - x).square().mean(1)
                        for s, z in zip(scale.split(256), zero.split(256))])
    return candidates[int(torch.argmin(errors))]  # argmin takes the first minimum: candidates run from the widest


@torch.no_grad()
def calibrate(graph: Graph, images: Iterable[torch.Tensor], batch_size: int = 8, method: str = "minmax",
              percentile: float = 99.99) -> Dict[str, Tuple[float, float]]:
    """The range of every tensor of ``graph`` over float (C, H, W) images in [0, 1].

    ``method`` "minmax": the smallest and largest value seen. "percentile": the ``100 - percentile`` and
    ``percentile`` percentiles of the values seen (a random sample of CALIBRATION_SAMPLES per tensor and batch,
    seeded), so a few outliers do not coarsen a tensor's whole int8 step. "mse": for each tensor the range, the
    min/max ends shrunk by up to 40x, whose int8 rounding and clipping of those sampled values has the least
    squared error (:func:`mse_range`). Both leave the model's outputs (detection scores and offsets, logits) at
    their min/max, as clipping the highest scores would tie the best detections.
    """
    if method not in CALIBRATION_METHODS:
        raise InvalidInputError(f"unknown calibration method {method!r}; expected one of {', '.join(CALIBRATION_METHODS)}")
    if not 50.0 < percentile <= 100.0:
        raise InvalidInputError(f"calibration percentile must be in (50, 100], got {percentile}")
    ranges: Dict[str, Tuple[float, float]] = {}
    samples: Dict[str, List[torch.Tensor]] = {}
    generator = torch.Generator().manual_seed(0)
    for values in run_float_batches(graph, images, batch_size):
        for name, value in values.items():
            lo, hi = value.min().item(), value.max().item()
            old = ranges.get(name, (lo, hi))
            ranges[name] = (min(lo, old[0]), max(hi, old[1]))
            if method != "minmax":
                flat = value.reshape(-1).float()
                if flat.numel() > CALIBRATION_SAMPLES:
                    flat = flat[torch.randint(flat.numel(), (CALIBRATION_SAMPLES,), generator=generator)]
                samples.setdefault(name, []).append(flat)
    if not ranges:
        raise InvalidInputError("calibration needs at least one image")
    outputs = graph.outputs
    q = torch.tensor([(100.0 - percentile) / 100.0, percentile / 100.0])
    for name, parts in samples.items():
        if name in outputs or name == graph.input:
            continue
        values = torch.cat(parts)
        keep = QUANTILE_MAX_VALUES if method == "percentile" else MSE_SAMPLES  # torch.quantile's limit; the search's cost
        if values.numel() > keep:
            values = values[torch.randint(values.numel(), (keep,), generator=generator)]
        if method == "percentile":
            ranges[name] = tuple(torch.quantile(values, q).tolist())
        else:
            ranges[name] = mse_range(values, *ranges[name])
    return ranges


def _key_bits(heads: List[Head], tensors: Dict[str, QTensor]) -> int:
    """Bits of the detection keys: the largest head score scale times 2^bits stays below 2^KEY_MULT_BITS,
    and every head's multiplier is at least 1 (or the heads' scales are too far apart)."""
    if not heads:
        return 0
    scales = {h.conf: tensors[h.conf].scale for h in heads}
    bits = int(math.floor(math.log2((2**KEY_MULT_BITS - 1) / max(scales.values()))))
    for name, scale in scales.items():
        if round(scale * 2.0**bits) < 1:
            raise QuantizationError(f"{name}: its score scale {scale:.3g} is more than 2^{KEY_MULT_BITS} times smaller than "
                                    f"another head's ({max(scales.values()):.3g}); its keys would all be 0")
    return bits


def tensor_quantization(graph: Graph, ranges: Dict[str, Tuple[float, float]],
                        input_quantization: Tuple[float, int] = (INPUT_SCALE, INPUT_ZERO_POINT)) -> Dict[str, QTensor]:
    """Every tensor's int8 (scale, zero point): from its range, except the image (``input_quantization``) and
    the L2Norm outputs (unit vectors: a fixed 1/127). A range missing for a tensor is an error naming it."""
    missing = [name for name in graph.shapes if name not in ranges and name != graph.input]
    if missing:
        raise InvalidInputError(f"no activation range for {', '.join(graph.layer_of(n) for n in missing[:5])}"
                                f"{' ...' if len(missing) > 5 else ''}: the ranges are for another model")
    tensors = {name: QTensor(shape, *(input_quantization if name == graph.input else activation_params(*ranges[name])))
               for name, shape in graph.shapes.items()}
    for op in graph.ops:
        if isinstance(op, L2NormOp):  # unit vectors: a fixed quantization, no calibration
            tensors[op.output] = QTensor(graph.shapes[op.output], L2NORM_SCALE, 0)
    return tensors


def quantize_graph(graph: Graph, ranges: Dict[str, Tuple[float, float]],
                   input_quantization: Tuple[float, int] = (INPUT_SCALE, INPUT_ZERO_POINT),
                   high_word_multipliers: bool = True) -> QuantizedGraph:
    """Integer version of ``graph`` with activation ranges from :func:`calibrate`. The input is an image
    (``pixel - 128``, scale 1/255) unless ``input_quantization`` (scale, zero point) says otherwise.
    ``high_word_multipliers``: convolutions requantize with shift 32 where the multiplier allows it
    (:func:`~rnnpool.deploy.fixedpoint.quantize_multiplier_high_word`, the fast form on the M4); False keeps
    every multiplier normalized (the general form, which the kernel tests also cover)."""
    tensors = tensor_quantization(graph, ranges, input_quantization)
    ops: List[QOp] = []
    for op in graph.ops:
        if isinstance(op, ConvOp):
            ops.append(_quantize_conv(op, tensors, high_word_multipliers))
        elif isinstance(op, MBConvOp):
            convs = {id(c): _quantize_conv(c, tensors, high_word_multipliers) for c in op.convs()}
            add = _quantize_add(tensors[op.project.output], tensors[op.input], tensors[op.output]) if op.residual else None
            ops.append(QMBConv(op.input, op.output, convs.get(id(op.expand)), convs[id(op.depthwise)], convs[id(op.project)], add))
        elif isinstance(op, RNNPoolOp):
            ops.append(_quantize_rnnpool(op, tensors))
        elif isinstance(op, L2NormOp):
            ops.append(_quantize_l2norm(op, tensors))
        else:
            ops.append(_quantize_avgpool(op, tensors))
    return QuantizedGraph(graph.input, ops, graph.heads, tensors, graph.logits, graph.task, _key_bits(graph.heads, tensors),
                          dict(graph.layers), dict(graph.equalized))


def quantize_model(model, calibration_images: Iterable[torch.Tensor], input_size: Optional[Tuple[int, int]] = None,
                   calibration: str = "minmax", percentile: float = 99.99,
                   ranges: Optional[Dict[str, Tuple[float, float]]] = None, equalize: bool = True) -> QuantizedGraph:
    """Build, calibrate and quantize a face detector or classifier in one call (the model is put in eval mode);
    ``calibration`` and ``percentile`` as in :func:`calibrate`; ``equalize`` (the default) first moves every RNNPool
    output channel to one range (:func:`~rnnpool.deploy.equalize.equalize_rnnpool`, measured on the same images;
    it halves the post-training drop of the trained Face-M4, see benchmarks/calibration.py).
    ``ranges`` (those a quantization-aware fine-tuning kept, see :mod:`rnnpool.deploy.fake_quant`) replace the
    calibration; the images are then unused and nothing is equalized (the ranges describe the plain graph)."""
    model.eval()
    graph = build_graph(model, input_size)
    if ranges is None:
        images = list(calibration_images)
        if equalize:
            graph = equalize_rnnpool(graph, images)
        ranges = calibrate(graph, images, method=calibration, percentile=percentile)
    return quantize_graph(graph, ranges)


__all__ = ["INPUT_SCALE", "INPUT_ZERO_POINT", "L2NORM_BITS", "L2NORM_SCALE", "QAdd", "QAvgPool", "QConv", "QFastGRNN", "QL2Norm",
           "QMBConv", "QOp", "QRNNPool", "QTensor", "QuantizationError", "QuantizedGraph", "activation_bounds", "activation_params",
           "calibrate", "mse_range", "pow2_exponents", "quantize_graph", "quantize_model", "rnnpool_output_shift", "tensor_quantization",
           "weight_scales"]
