"""Quantization-aware training: a model run with the int8 reference's rounding, differentiably.

:class:`FakeQuantModel` executes the deploy graph of a face detector or classifier (:mod:`.graph`) from the
model's live parameters, rounding every value where :mod:`.int8_reference` rounds it and in the same way:

- convolutions: BatchNorm folded (running statistics, as deployed), weights symmetric int8 per output
  channel, biases on the accumulator's grid, outputs requantized half up to the tensor's (scale, zero point)
  and clamped by the ReLU / ReLU6 bounds of :func:`~.quantize.activation_bounds`; residual adds likewise;
- RNNPool: FastGRNN in its Q-formats: the input projection with power-of-two row scales, Q12
  pre-activations, the sigmoid / tanh lookup tables, Q14 states with the integer update, the output affine's
  fixed-point requantization and the output padding;
- L2Norm to int8 unit vectors (scale 1/127), global average pooling, the image as ``pixel - 128``.

Gradients pass straight through every rounding (and through each lookup table as the smooth function it
samples). Activation ranges are fixed: those :func:`calibrate_ranges` measured on the float model before the
fine-tuning; a checkpoint keeps them, so ``quantize_graph(build_graph(model), ranges)`` afterwards is the
integer model the fine-tuning saw. In float64 the RNNPool emulation equals the integer reference bit for bit;
elsewhere a value may differ by one step where the integer multipliers (31-bit) round a tie differently.
"""
from __future__ import annotations

import math
from typing import Dict, Iterable, Optional, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..errors import InvalidInputError
from ..nn.activations import apply_nonlinearity
from .fixedpoint import INT16_MAX, INT16_MIN, LUT_SHIFT, NONLINEARITY_FUNCTIONS, PRE_BITS, STATE_BITS, build_lut
from ..nn.blocks import ConvBNAct
from .graph import IMAGENET_MEAN, IMAGENET_STD, AvgPoolOp, ConvOp, Graph, L2NormOp, MBConvOp, Op, RNNPoolOp, bn_affine, build_graph
from .quantize import (INPUT_ZERO_POINT, QTensor, activation_bounds, calibrate, pow2_exponents, rnnpool_output_shift,
                       tensor_quantization, weight_scales)

ONE = float(1 << STATE_BITS)  # 1.0 in Q14


def _straight_through(x: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """``exact`` forward, the gradient of ``x`` backward."""
    return x + (exact - x).detach()


def round_half_up(x: torch.Tensor) -> torch.Tensor:
    """floor(x + 1/2), the integer reference's requantization rounding, with a straight-through gradient."""
    return _straight_through(x, torch.floor(x + 0.5))


def round_half_even(x: torch.Tensor) -> torch.Tensor:
    """NumPy's round (the weights' quantization), with a straight-through gradient."""
    return _straight_through(x, torch.round(x))


def _pow2_rows(matrix: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(integer-valued rows, exponents e): row ~ row_int * 2^-e, differentiable in the rows."""
    exps = pow2_exponents(matrix).to(matrix.dtype)
    return round_half_even(matrix * torch.exp2(exps)[:, None]).clamp(-127, 127), exps


class _FakeCell:
    """One FastGRNN cell in the integer reference's arithmetic (:class:`~.quantize.QFastGRNN`), from its live
    parameters: ``project`` turns integer inputs into Q12 input terms, ``run`` runs sequences of them."""

    def __init__(self, cell, input_scale: float) -> None:
        dtype = cell.w1.dtype
        self.cell = cell
        self.weight, self.w_exp = _pow2_rows(cell.input_weight() * (input_scale * 2**PRE_BITS))
        self.recurrent, u_exp = _pow2_rows(cell.recurrent_weight())
        self.u_shift = u_exp + (STATE_BITS - PRE_BITS)
        self.bias_gate = round_half_even(cell.bias_gate * 2**PRE_BITS)
        self.delta = round_half_even(cell.bias_update * 2**PRE_BITS) - self.bias_gate
        self.zeta = round_half_even(torch.sigmoid(cell.zeta.to(dtype)) * ONE)
        self.nu = round_half_even(torch.sigmoid(cell.nu.to(dtype)) * ONE)
        self.tables = [torch.from_numpy(build_lut(NONLINEARITY_FUNCTIONS[name]).astype(np.float64)).to(cell.w1.device, dtype)
                       for name in (cell.gate_nonlinearity, cell.update_nonlinearity)]

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Q12 ``shift_round(W x, w_shift) + b_z`` of (..., I) integer-valued inputs (zero point removed)."""
        return round_half_up(torch.matmul(x, self.weight.t()) * torch.exp2(-self.w_exp)) + self.bias_gate

    def _lookup(self, which: int, pre: torch.Tensor) -> torch.Tensor:
        """The table's Q14 value at Q12 ``pre`` forward; the function it samples backward."""
        table = self.tables[which]
        index = torch.div(pre.detach().clamp(INT16_MIN, INT16_MAX) - INT16_MIN, 1 << LUT_SHIFT, rounding_mode="floor").long()
        name = self.cell.gate_nonlinearity if which == 0 else self.cell.update_nonlinearity
        smooth = apply_nonlinearity(pre / 2**PRE_BITS, name) * ONE
        return _straight_through(smooth, table[index])

    def _step(self, a: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        pre = a + round_half_up(torch.matmul(h, self.recurrent.t()) * torch.exp2(-self.u_shift))
        z = self._lookup(0, pre)
        c = self._lookup(1, pre + self.delta)
        coef = round_half_up(self.zeta * (ONE - z) / ONE) + self.nu
        return round_half_up((coef * c + z * h) / ONE).clamp(INT16_MIN, INT16_MAX)

    def run(self, a: torch.Tensor) -> torch.Tensor:
        """Final Q14 states of sequences (B, T, H) of :meth:`project` outputs, from a zero state."""
        h = a.new_zeros(a.shape[0], a.shape[2])
        for t in range(a.shape[1]):
            h = self._step(a[:, t], h)
        return h


class FakeQuantModel(nn.Module):
    """A face detector or classifier run as its int8 program would run it (see the module doc).

    ``ranges``: every graph tensor's float range (:func:`calibrate_ranges`), fixed during training.
    ``forward`` returns what the model's own forward returns (a detector's ``{"conf", "loc"}`` head maps, a
    classifier's logits), dequantized; the wrapped model's attributes (``head_strides``, ``in_channels`` ...)
    read through, and its parameters are the ones trained. Its BatchNorms are folded with their running
    statistics, which therefore stay as they are (the deployed model's); fold them into the convs first
    (:func:`fold_batchnorm_`, as the engine's QAT runs do) so that the folded weights are what trains.
    """

    def __init__(self, model: nn.Module, ranges: Dict[str, Tuple[float, float]], input_size: Optional[Tuple[int, int]] = None) -> None:
        super().__init__()
        self.model = model
        was_training = model.training
        model.eval()
        self.graph: Graph = build_graph(model, input_size)
        model.train(was_training)
        self.quantization: Dict[str, QTensor] = tensor_quantization(self.graph, ranges)
        self.ranges = {name: (float(lo), float(hi)) for name, (lo, hi) in ranges.items()}

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["model"], name)

    # -- the ops ------------------------------------------------------------------------------------
    def _quantize(self, y: torch.Tensor, name: str, low: int = -128, high: int = 127) -> torch.Tensor:
        """Integer-valued codes of float ``y`` in tensor ``name``'s format (half up, clamped)."""
        t = self.quantization[name]
        return (round_half_up(y / t.scale) + t.zero_point).clamp(low, high)

    def _value(self, codes: torch.Tensor, name: str) -> torch.Tensor:
        t = self.quantization[name]
        return (codes - t.zero_point) * t.scale

    def _centred(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """Integer-valued ``q - zero_point`` of a dequantized tensor (exact: x is already on the grid)."""
        return round_half_even(x / self.quantization[name].scale)

    def _conv(self, op: ConvOp, x: torch.Tensor) -> torch.Tensor:
        sx = self.quantization[op.input].scale
        weight, bias = op.live(x.dtype)
        w_scale = weight_scales(weight)
        weight = round_half_even(weight / w_scale[:, None, None, None]).clamp(-127, 127) * w_scale[:, None, None, None]
        bias = round_half_even(bias / (sx * w_scale)) * (sx * w_scale)
        padding = op.padding
        if op.pad_value is not None and padding:
            t = self.quantization[op.input]
            fill = (torch.round(op.pad_value.to(x.dtype) / t.scale) + t.zero_point).clamp(-128, 127)
            fill = self._value(fill, op.input).to(x.device)[None, :, None, None]
            x = F.pad(x - fill, (padding,) * 4) + fill
            padding = 0
        y = F.conv2d(x, weight, bias, op.stride, padding, 1, op.groups)
        codes = self._quantize(y, op.output, *activation_bounds(op.act, self.quantization[op.output]))
        if op.maxout > 1:
            codes = torch.cat((codes[:, : op.maxout].amax(1, keepdim=True), codes[:, op.maxout :]), 1)
        return self._value(codes, op.output)

    def _mbconv(self, op: MBConvOp, x: torch.Tensor) -> torch.Tensor:
        y = x
        for conv in op.convs():
            y = self._conv(conv, y)
        if op.residual:
            y = self._value(self._quantize(x + y, op.output), op.output)
        return y

    def _rnnpool(self, op: RNNPoolOp, x: torch.Tensor) -> torch.Tensor:
        layer = op.layer
        (r, c), (sr, sc), (pr, pc) = layer.patch_size, layer.stride, layer.padding
        rnn1 = _FakeCell(layer.rnn1, self.quantization[op.input].scale)
        rnn2 = _FakeCell(layer.rnn2, 2.0**-STATE_BITS)
        a = rnn1.project(self._centred(x, op.input).permute(0, 2, 3, 1))  # (N, H, W, h1); padding projects to b_z
        if pr or pc:
            a = F.pad((a - rnn1.bias_gate).permute(0, 3, 1, 2), (pc, pc, pr, pr)).permute(0, 2, 3, 1) + rnn1.bias_gate
        n, height, width, h1 = a.shape
        out_h, out_w = (height - r) // sr + 1, (width - c) // sc + 1
        # RNN1 along each row segment (every input row, every patch column) and each column segment
        rows = a[:, : (out_h - 1) * sr + r].unfold(2, c, sc)  # (N, rows, W', h1, c)
        rows = rnn1.run(rows.permute(0, 1, 2, 4, 3).reshape(-1, c, h1)).reshape(n, -1, out_w, h1)
        cols = a[:, :, : (out_w - 1) * sc + c].unfold(1, r, sr)  # (N, H', cols, h1, r)
        cols = rnn1.run(cols.permute(0, 1, 2, 4, 3).reshape(-1, r, h1)).reshape(n, out_h, -1, h1)
        row_summaries = rows.unfold(1, r, sr).permute(0, 1, 2, 4, 3).reshape(-1, r, h1)  # (N H' W', r, h1)
        col_summaries = cols.unfold(2, c, sc).permute(0, 1, 2, 4, 3).reshape(-1, c, h1)
        finals = []
        for summaries in (row_summaries, col_summaries):
            projected = rnn2.project(summaries)
            finals += [rnn2.run(projected), rnn2.run(projected.flip(1))]
        state = torch.cat(finals, 1).reshape(n, out_h, out_w, -1).permute(0, 3, 1, 2)  # Q14
        t = self.quantization[op.output]
        scale, shift = op.live_affine(x.dtype)
        scale, shift = scale.to(x.device), shift.to(x.device)
        real = scale / (t.scale * ONE)
        bits = rnnpool_output_shift(float(real.detach().abs().max()))
        mult = round_half_even(real * 2.0**bits)[:, None, None]
        offset = round_half_even(shift / t.scale * 2.0**bits)[:, None, None]
        codes = (round_half_up((state * mult + offset) / 2.0**bits) + t.zero_point).clamp(-128, 127)
        bottom, right = op.pad
        if bottom or right:
            if op.pad_mode == "replicate":
                codes = F.pad(codes, (0, right, 0, bottom), mode="replicate")
            else:
                fill = (round_half_up(offset / 2.0**bits) + t.zero_point).clamp(-128, 127)
                codes = F.pad(codes - fill, (0, right, 0, bottom)) + fill
        return self._value(codes, op.output)

    def _l2norm(self, op: L2NormOp, x: torch.Tensor) -> torch.Tensor:
        d = self._centred(x, op.input)
        sums = (d * d).sum(1, keepdim=True)
        unit = d / torch.sqrt(sums.clamp(min=1.0))  # an all-zero pixel stays 0
        return self._value(round_half_up(127.0 * unit).clamp(-127, 127), op.output)

    def _avgpool(self, op: AvgPoolOp, x: torch.Tensor) -> torch.Tensor:
        return self._value(self._quantize(x.mean((2, 3), keepdim=True), op.output), op.output)

    # -- the model ----------------------------------------------------------------------------------
    def run(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Every graph tensor, dequantized, for float (N, C, H, W) images in [0, 1]."""
        if images.dim() != 4 or images.shape[1] != self.graph.shapes[self.graph.input][0]:
            raise InvalidInputError(f"expected (N, {self.graph.shapes[self.graph.input][0]}, H, W) images, got {list(images.shape)}")
        with torch.autocast(images.device.type, enabled=False):  # integer codes need float32 (or float64)
            if images.dtype not in (torch.float32, torch.float64):
                images = images.float()
            pixels = round_half_up(images.clamp(0, 1) * 255.0)  # the camera's uint8 pixel
            values = {self.graph.input: self._value(pixels + INPUT_ZERO_POINT, self.graph.input)}
            for op in self.graph.ops:
                values[op.output] = self.run_op(op, values[op.input])
        return values

    def run_op(self, op: Op, x: torch.Tensor) -> torch.Tensor:
        """One op of the graph on its dequantized (N, C, H, W) input; its output, dequantized."""
        kinds = ((ConvOp, self._conv), (MBConvOp, self._mbconv), (RNNPoolOp, self._rnnpool), (L2NormOp, self._l2norm),
                 (AvgPoolOp, self._avgpool))
        return next(fn for kind, fn in kinds if isinstance(op, kind))(op, x)

    def forward(self, images: torch.Tensor):
        """The model's outputs for its own inputs (a classifier's are ImageNet-normalised; its graph reads the
        [0, 1] image, the normalisation folded into the first convolution)."""
        if self.graph.task == "classification":
            mean = torch.tensor(IMAGENET_MEAN, dtype=images.dtype, device=images.device)[None, :, None, None]
            std = torch.tensor(IMAGENET_STD, dtype=images.dtype, device=images.device)[None, :, None, None]
            images = images * std + mean
        values = self.run(images)
        if self.graph.logits is not None:
            return values[self.graph.logits].flatten(1)
        return {"conf": [values[h.conf] for h in self.graph.heads], "loc": [values[h.loc] for h in self.graph.heads]}


@torch.no_grad()
def fold_batchnorm_(model: nn.Module) -> int:
    """Fold every conv's BatchNorm statistics into the conv's weights, in place, leaving an identity BN whose
    bias carries the folded bias (trainable) and whose scale is frozen at 1; returns how many were folded.

    The model computes the same in eval mode, and a checkpoint still loads into the zoo architecture. What
    changes is what a fine-tuning with frozen statistics (QAT) differentiates: the folded weight itself.
    Trained through ``gamma / sigma`` instead, a channel's folded weight moves ``(gamma / sigma)^2`` times
    faster than the learning rate says, which (measured on Face-M4 at lr 1e-3) ruins a model in one epoch.
    """
    count = 0
    for block in model.modules():
        if isinstance(block, ConvBNAct) and len(block) > 1 and isinstance(block[1], nn.BatchNorm2d):
            conv, bn = block[0], block[1]
            if conv.bias is not None or bn.weight is None or bn.bias is None:
                continue
            scale, shift = bn_affine(bn, bn.num_features, conv.weight.dtype)
            conv.weight.mul_(scale.to(conv.weight.device)[:, None, None, None])
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)  # 1 / sqrt(running_var + eps) = 1
            bn.weight.fill_(1.0)
            bn.weight.requires_grad_(False)
            bn.bias.copy_(shift)
            count += 1
    return count


@torch.no_grad()
def calibrate_ranges(model: nn.Module, images: Iterable[torch.Tensor], input_size: Optional[Tuple[int, int]] = None,
                     method: str = "minmax", percentile: float = 99.99) -> Dict[str, Tuple[float, float]]:
    """Every graph tensor's range over float (C, H, W) images in [0, 1] at ``input_size`` (the model's own by
    default), as :func:`~.quantize.quantize_model` calibrates but of the plain graph (no RNNPool equalization: the
    fine-tuning computes the model's own graph): the ranges a fine-tuning starts from."""
    was_training = model.training
    model.eval()
    ranges = calibrate(build_graph(model, input_size), images, method=method, percentile=percentile)
    model.train(was_training)
    return ranges


def check_ranges(ranges: Dict, where: str) -> Dict[str, Tuple[float, float]]:
    """``ranges`` as read from a file, checked: name -> (low, high) with low <= high, all finite."""
    if not isinstance(ranges, dict) or not ranges:
        raise InvalidInputError(f"{where}: activation ranges must be a non-empty mapping of tensor -> (low, high)")
    checked = {}
    for name, pair in ranges.items():
        try:
            low, high = (float(v) for v in pair)
        except (TypeError, ValueError):
            raise InvalidInputError(f"{where}: the range of {name!r} is {pair!r}, not (low, high)") from None
        if not (math.isfinite(low) and math.isfinite(high) and low <= high):
            raise InvalidInputError(f"{where}: the range of {name!r} is ({low}, {high})")
        checked[str(name)] = (low, high)
    return checked


RANGES_KEY = "activation_ranges"  # where a QAT run's checkpoints keep the ranges its fine-tuning fixed


def checkpoint_ranges(path) -> Optional[Dict[str, Tuple[float, float]]]:
    """The activation ranges a quantization-aware run saved in checkpoint ``path`` (None for a float run's)."""
    from ..models.checkpoint import load_checkpoint

    saved = load_checkpoint(path).get(RANGES_KEY)
    return None if saved is None else check_ranges(saved, str(path))


__all__ = ["RANGES_KEY", "FakeQuantModel", "checkpoint_ranges", "fold_batchnorm_", "calibrate_ranges", "check_ranges", "round_half_even", "round_half_up"]
