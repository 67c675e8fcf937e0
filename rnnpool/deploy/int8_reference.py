"""The NumPy integer reference of a :class:`~rnnpool.deploy.quantize.QuantizedGraph`: the ground truth that
the generated C must match bit for bit.

Tensors are int8 channels-last (H, W, C). Integer products are summed in float64, which is exact for
these magnitudes (< 2**53), then requantized with :func:`~rnnpool.deploy.fixedpoint.requantize`.
:func:`int8_detections` turns the head outputs into detections with integer scores, the same way the C
runtime does, so the two can be compared exactly. RNNPool is computed patch by patch, as Algorithm 1
defines it; the C kernel shares work between overlapping patches and must give the same numbers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np

from ..models.detection_utils import VARIANCES
from .fixedpoint import INT16_MAX, INT16_MIN, STATE_BITS, lut_lookup, requantize, saturate, shift_round
from .quantize import (INPUT_ZERO_POINT, L2NORM_BITS, QAdd, QAvgPool, QConv, QFastGRNN, QL2Norm, QMBConv, QRNNPool,
                       QuantizedGraph)
from ..errors import InvalidInputError


def _exact_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.rint(a.astype(np.float64) @ b.astype(np.float64)).astype(np.int64)


def conv_int8(op: QConv, x: np.ndarray) -> np.ndarray:
    """(H, W, I) int8 -> (H', W', O') int8."""
    h, w, channels = x.shape
    k, s, p = op.kernel, op.stride, op.padding
    xs = x.astype(np.int64) - op.input_zero_point
    if p:
        fill = np.zeros(channels, np.int64) if op.pad_values is None else op.pad_values.astype(np.int64) - op.input_zero_point
        padded = np.empty((h + 2 * p, w + 2 * p, channels), np.int64)
        padded[:] = fill
        padded[p : p + h, p : p + w] = xs
        xs = padded
    out_h, out_w = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    taps = [xs[dy : dy + s * (out_h - 1) + 1 : s, dx : dx + s * (out_w - 1) + 1 : s] for dy in range(k) for dx in range(k)]
    if op.groups == 1:
        cols = np.concatenate(taps, axis=2)  # (H', W', k*k*I) in (dy, dx, i) order
        acc = _exact_matmul(cols, op.weight.reshape(op.out_channels, -1).T)
    else:
        weight = op.weight.reshape(op.out_channels, k * k).astype(np.int64)
        acc = sum(tap * weight[:, t] for t, tap in enumerate(taps))
    acc = acc + op.bias
    y = saturate(requantize(acc, op.mult, op.shift) + op.output_zero_point, op.act_min, op.act_max, np.int8)
    if op.maxout > 1:
        y = np.concatenate((y[..., : op.maxout].max(-1, keepdims=True), y[..., op.maxout :]), -1)
    return y


def add_int8(op: QAdd, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    v = (a.astype(np.int64) - op.a_zero_point) * op.mult_a + (b.astype(np.int64) - op.b_zero_point) * op.mult_b
    return saturate(requantize(v, 1, op.shift) + op.output_zero_point, -128, 127, np.int8)


def mbconv_int8(op: QMBConv, x: np.ndarray) -> np.ndarray:
    y = x
    for conv in op.convs():
        y = conv_int8(conv, y)
    return add_int8(op.add, y, x) if op.add is not None else y


def cell_input(cell: QFastGRNN, x: np.ndarray) -> np.ndarray:
    """Q12 ``shift_round(W (x - zx), w_shift) + b_z`` of (..., I) integer inputs."""
    acc = _exact_matmul(x.astype(np.int64) - cell.input_zero_point, cell.weight.T)
    return shift_round(acc, cell.w_shift) + cell.bias_gate


def cell_run(cell: QFastGRNN, a: np.ndarray) -> np.ndarray:
    """Final Q14 state of sequences (B, T, H) of inputs from :func:`cell_input`, from a zero state."""
    one, half = 1 << STATE_BITS, 1 << (STATE_BITS - 1)
    delta = cell.bias_update.astype(np.int64) - cell.bias_gate
    h = np.zeros((a.shape[0], cell.hidden_size), dtype=np.int64)
    for t in range(a.shape[1]):
        pre = a[:, t] + shift_round(_exact_matmul(h, cell.recurrent.T), cell.u_shift)
        z = lut_lookup(cell.lut_gate, pre)
        c = lut_lookup(cell.lut_update, pre + delta)
        coef = ((cell.zeta * (one - z) + half) >> STATE_BITS) + cell.nu
        h = np.clip((coef * c + z * h + half) >> STATE_BITS, INT16_MIN, INT16_MAX)
    return h


def rnnpool_int8(op: QRNNPool, x: np.ndarray) -> np.ndarray:
    """(H, W, C) int8 -> (H' + pad, W' + pad, 4 h2) int8, patch by patch."""
    (r, c), (sr, sc), (pr, pc) = op.patch, op.stride, op.padding
    h, w, _ = x.shape
    out_h, out_w = (h + 2 * pr - r) // sr + 1, (w + 2 * pc - c) // sc + 1
    a = cell_input(op.rnn1, x)  # (H, W, h1)
    if pr or pc:  # a zero-padded pixel (x = zx) projects to b_z alone
        padded = np.empty((h + 2 * pr, w + 2 * pc, a.shape[2]), np.int64)
        padded[:] = op.rnn1.bias_gate
        padded[pr : pr + h, pc : pc + w] = a
        a = padded
    ys = (np.arange(out_h) * sr)[:, None, None, None] + np.arange(r)[None, None, :, None]
    xs = (np.arange(out_w) * sc)[None, :, None, None] + np.arange(c)[None, None, None, :]
    patches = a[ys, xs]  # (H', W', r, c, h1)
    h1 = op.rnn1.hidden_size
    rows = cell_run(op.rnn1, patches.reshape(-1, c, h1)).reshape(-1, r, h1)
    cols = cell_run(op.rnn1, patches.transpose(0, 1, 3, 2, 4).reshape(-1, r, h1)).reshape(-1, c, h1)
    finals = []
    for summaries in (rows, cols):
        proj = cell_input(op.rnn2, summaries)
        finals += [cell_run(op.rnn2, proj), cell_run(op.rnn2, proj[:, ::-1])]
    state = np.concatenate(finals, 1).reshape(out_h, out_w, -1)  # channel = direction * h2 + k
    y = saturate(requantize(state * op.out_mult + op.out_bias, 1, op.out_shift) + op.output_zero_point, -128, 127, np.int8)
    bottom, right = op.pad
    if bottom or right:
        if op.pad_mode == "replicate":
            return np.pad(y, ((0, bottom), (0, right), (0, 0)), mode="edge")
        fill = saturate(requantize(op.out_bias, 1, op.out_shift) + op.output_zero_point, -128, 127, np.int8)
        padded = np.empty((out_h + bottom, out_w + right, y.shape[2]), dtype=np.int8)
        padded[:] = fill
        padded[:out_h, :out_w] = y
        y = padded
    return y


def l2norm_int8(op: QL2Norm, x: np.ndarray) -> np.ndarray:
    d = x.astype(np.int64) - op.input_zero_point
    sums = (d * d).sum(-1, keepdims=True)
    with np.errstate(divide="ignore"):  # float32 square root and division: IEEE-754 rounded, as in C
        inv = np.float32(127 * 2**L2NORM_BITS) / np.sqrt(sums.astype(np.float32))
    inv = np.where(sums > 0, inv, np.float32(0)).astype(np.int64)  # truncation, as C's cast
    return saturate((d * inv + (1 << (L2NORM_BITS - 1))) >> L2NORM_BITS, -127, 127, np.int8)


def avgpool_int8(op: QAvgPool, x: np.ndarray) -> np.ndarray:
    total = x.astype(np.int64).sum((0, 1), keepdims=True) - op.count * op.input_zero_point
    return saturate(requantize(total, op.mult, op.shift) + op.output_zero_point, -128, 127, np.int8)


def image_to_int8(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, C) pixels -> the int8 input tensor (``pixel - 128``, scale 1/255)."""
    if image.dtype != np.uint8 or image.ndim != 3:
        raise InvalidInputError(f"expected a uint8 (H, W, C) image, got {image.dtype} with shape {image.shape}")
    return (image.astype(np.int16) + INPUT_ZERO_POINT).astype(np.int8)


def run_op(op, x: np.ndarray) -> np.ndarray:
    """One op of a quantized graph on its int8 (H, W, C) input."""
    if isinstance(op, QConv):
        return conv_int8(op, x)
    if isinstance(op, QMBConv):
        return mbconv_int8(op, x)
    if isinstance(op, QRNNPool):
        return rnnpool_int8(op, x)
    if isinstance(op, QL2Norm):
        return l2norm_int8(op, x)
    return avgpool_int8(op, x)


def run_int8(graph: QuantizedGraph, image: np.ndarray) -> Dict[str, np.ndarray]:
    """Every tensor of ``graph`` (int8, (H, W, C)) for one uint8 (H, W, C) image of the graph's input size."""
    c, h, w = graph.input_shape
    if image.shape != (h, w, c):
        raise InvalidInputError(f"the model takes ({h}, {w}, {c}) uint8 images, got shape {image.shape}")
    values = {graph.input: image_to_int8(image)}
    for op in graph.ops:
        values[op.output] = run_op(op, values[op.input])
    return values


def dead_maps(graph: QuantizedGraph, first: np.ndarray, second: np.ndarray, min_values: int = 5) -> Dict[str, str]:
    """Maps of the int8 reference that do not depend on the image: fewer than ``min_values`` distinct values,
    or the same for two different images (``first``, ``second``: uint8 (H, W, C)); map -> why. A measurement
    on such a model proves little: an untrained RNNPool's output is nearly constant, and so is what follows it.
    Maps of at most 8 values (a classifier's logits) are skipped."""
    a, b = run_int8(graph, first), run_int8(graph, second)
    dead = {}
    for name, value in a.items():
        if value.size <= 8 or name == graph.input:
            continue
        distinct = len(np.unique(value))
        if distinct < min_values:
            dead[name] = f"{distinct} distinct values"
        elif np.array_equal(value, b[name]):
            dead[name] = "the same for both images"
    return dead


def dequantize(graph: QuantizedGraph, name: str, value: np.ndarray, model_units: bool = False) -> np.ndarray:
    """The real values of the int8 map ``name`` (channels last). An equalized RNNPool output holds
    ``gain * (x - centre)`` per channel (:mod:`~rnnpool.deploy.equalize`); ``model_units`` gives the model's x."""
    t = graph.tensors[name]
    real = (value.astype(np.float64) - t.zero_point) * t.scale
    if model_units and name in graph.equalized:
        gain, centre = (v.double().numpy() for v in graph.equalized[name])
        real = real / gain + centre
    return real


@dataclass
class DetectionSettings:
    score_threshold: float = 0.5
    nms_threshold: float = 0.3
    max_candidates: int = 64
    max_detections: int = 32


def head_key_params(graph: QuantizedGraph, settings: DetectionSettings) -> List[Tuple[int, int]]:
    """Per head: (multiplier turning a score difference into a logit in units of 2^-key_bits, smallest key kept)."""
    if not 0 < settings.score_threshold < 1:
        raise InvalidInputError(f"the score threshold must lie in (0, 1), got {settings.score_threshold}")
    unit = 2.0**graph.key_bits
    threshold = int(np.floor(np.log(settings.score_threshold / (1 - settings.score_threshold)) * unit))
    return [(int(round(graph.tensors[h.conf].scale * unit)), threshold) for h in graph.heads]


def key_score(graph: QuantizedGraph, key: int) -> float:
    """The probability a detection key stands for."""
    return float(1 / (1 + np.exp(-key / 2.0**graph.key_bits)))


def fnv1a(data: np.ndarray) -> int:
    """32-bit FNV-1a of the bytes of ``data`` (the C runtime's output checksum)."""
    value = 2166136261
    for byte in np.ascontiguousarray(data).view(np.uint8).tobytes():
        value = ((value ^ byte) * 16777619) & 0xFFFFFFFF
    return value


def int8_detections(graph: QuantizedGraph, values: Dict[str, np.ndarray], settings: DetectionSettings = DetectionSettings()) -> List[Dict]:
    """Detections from the int8 head outputs: candidates ranked by integer logit (ties: lower anchor index),
    boxes decoded in float32, greedy NMS. Each: ``box`` (x1, y1, x2, y2), ``score``, ``key``, ``anchor``."""
    candidates = []  # (key, anchor index, head, y, x)
    offset = 0
    for index, (head, (mult, threshold)) in enumerate(zip(graph.heads, head_key_params(graph, settings))):
        conf = values[head.conf].astype(np.int64)
        key = (conf[..., 1] - conf[..., 0]) * mult
        for y, x in zip(*np.nonzero(key > threshold)):
            candidates.append((int(key[y, x]), offset + int(y) * key.shape[1] + int(x), index, int(y), int(x)))
        offset += key.size
    candidates.sort(key=lambda cand: (-cand[0], cand[1]))
    boxes = []
    for key, anchor, index, y, x in candidates[: settings.max_candidates]:
        head = graph.heads[index]
        t = graph.tensors[head.loc]
        loc = (values[head.loc][y, x].astype(np.float32) - np.float32(t.zero_point)) * np.float32(t.scale)
        size, stride = np.float32(head.anchor_size), np.float32(head.stride)
        cx = (np.float32(x) + np.float32(0.5)) * stride + loc[0] * np.float32(VARIANCES[0]) * size
        cy = (np.float32(y) + np.float32(0.5)) * stride + loc[1] * np.float32(VARIANCES[0]) * size
        bw = size * np.exp(loc[2] * np.float32(VARIANCES[1]))
        bh = size * np.exp(loc[3] * np.float32(VARIANCES[1]))
        box = np.array([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], dtype=np.float32)
        boxes.append((key, anchor, box))
    kept: List[Dict] = []
    for key, anchor, box in boxes:
        if len(kept) == settings.max_detections:
            break
        if all(_iou(box, k["box"]) <= settings.nms_threshold for k in kept):
            kept.append({"box": box, "key": key, "anchor": anchor, "score": key_score(graph, key)})
    return kept


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


__all__ = ["DetectionSettings", "add_int8", "avgpool_int8", "cell_input", "cell_run", "conv_int8", "dead_maps", "dequantize", "fnv1a",
           "head_key_params", "image_to_int8", "int8_detections", "key_score", "l2norm_int8", "mbconv_int8", "rnnpool_int8",
           "run_int8", "run_op"]
