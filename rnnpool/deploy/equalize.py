"""Per-channel equalization of RNNPool outputs before per-tensor int8 quantization.

An RNNPool output channel is a final FastGRNN state: trained, each channel sits near its own offset and
varies little around it (on the shared face set, a channel's range is a median 13% of the whole map's,
its spread 2%), so one int8 scale for the map leaves each channel a few steps, and the next layers amplify
that rounding (it was more than half of what post-training int8 cost the trained Face-M4). RNNPool's int8
output already has a per-channel fixed-point affine (it holds a following BatchNorm), so moving every channel
to the same centred range costs nothing at run time: the affine becomes ``gain_c * (y_c - centre_c)`` and the
convolutions that read the map take ``W[:, c] / gain_c`` and ``b + W centre``, which computes the same float
model exactly (they are 1x1 or otherwise unpadded, and nothing else reads the map). The int8 scale then
resolves every channel with all 256 steps, as cross-layer equalization does for conv pairs (Nagel et al.,
"Data-Free Quantization", 2019), but measured on calibration images.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Dict, Iterable, List, Optional, Tuple

import torch

from ..errors import InvalidInputError
from .graph import ConvOp, Graph, MBConvOp, Op, RNNPoolOp, run_float_batches

MAX_GAIN = 256.0  # the most a channel is stretched (a constant channel is not blown up past this)


def _reader_conv(op: Op, tensor: str) -> Optional[ConvOp]:
    """The convolution through which ``op`` reads ``tensor`` if the fold is exact there (dense, unpadded, and
    ``tensor`` not also added back as a residual), else None."""
    conv = op.expand if isinstance(op, MBConvOp) and not op.residual else op if isinstance(op, ConvOp) else None
    if conv is None or conv.input != tensor or conv.groups != 1 or conv.padding != 0:
        return None
    return conv


def equalizable(graph: Graph) -> Dict[str, List[int]]:
    """RNNPool output tensor -> the indices of the ops that read it, for every RNNPool whose readers all allow
    the fold (see :func:`_reader_conv`) and whose output is no head or logits tensor."""
    found, outputs = {}, graph.outputs
    for op in graph.ops:
        if not isinstance(op, RNNPoolOp) or op.output in outputs:
            continue
        readers = [i for i, other in enumerate(graph.ops) if getattr(other, "input", None) == op.output]
        if readers and all(_reader_conv(graph.ops[i], op.output) is not None for i in readers):
            found[op.output] = readers
    return found


@torch.no_grad()
def channel_ranges(graph: Graph, images: Iterable[torch.Tensor], tensors: Iterable[str],
                   batch_size: int = 8) -> Dict[str, Tuple[torch.Tensor, torch.Tensor]]:
    """Per-channel (min, max) of ``tensors`` of ``graph`` over float (C, H, W) images in [0, 1]."""
    names = list(tensors)
    ranges: Dict[str, Tuple[torch.Tensor, torch.Tensor]] = {}
    for values in run_float_batches(graph, images, batch_size):
        for name in names:
            v = values[name].double()
            lo, hi = v.amin((0, 2, 3)), v.amax((0, 2, 3))
            if name in ranges:
                lo, hi = torch.minimum(lo, ranges[name][0]), torch.maximum(hi, ranges[name][1])
            ranges[name] = (lo, hi)
    if names and not ranges:
        raise InvalidInputError("equalization needs at least one calibration image")
    return ranges


def equalize_rnnpool(graph: Graph, images: Iterable[torch.Tensor]) -> Graph:
    """A copy of ``graph`` that computes the same float values at every head or logits tensor, with each
    equalizable RNNPool output (:func:`equalizable`) moved, channel by channel, to one centred range: channel
    ``c`` with calibration range [lo, hi] becomes ``gain_c * (y - (lo + hi) / 2)``, ``gain_c`` = the widest
    channel's range / this channel's (at most MAX_GAIN). The readers' weights and biases absorb the change, and
    ``Graph.equalized`` records (gain, centre) per tensor. ``graph`` itself is not modified."""
    targets = equalizable(graph)
    if not targets:
        return graph
    ranges = channel_ranges(graph, images, targets)
    ops, equalized = list(graph.ops), dict(graph.equalized)
    for index, op in enumerate(graph.ops):
        if not isinstance(op, RNNPoolOp) or op.output not in targets:
            continue
        low, high = ranges[op.output]
        width = high - low
        if not float(width.max()) > 0:  # a constant map (the image does not reach it): nothing to resolve
            continue
        gain = width.max() / width.clamp_min(float(width.max()) / MAX_GAIN)
        centre = (low + high) / 2
        scale, shift = op.scale.double(), op.shift.double()
        ops[index] = replace(op, scale=(scale * gain).to(op.scale.dtype), shift=((shift - centre) * gain).to(op.shift.dtype),
                             norm=None)
        for reader in targets[op.output]:
            ops[reader] = _refold_reader(ops[reader], op.output, gain, centre)
        equalized[op.output] = (gain, centre)
    return replace(graph, ops=ops, equalized=equalized)


def _refold_reader(op: Op, tensor: str, gain: torch.Tensor, centre: torch.Tensor) -> Op:
    """``op`` reading ``gain * (x - centre)`` instead of ``x``: weights / gain per input channel, bias + W centre."""
    conv = _reader_conv(op, tensor)
    assert conv is not None  # equalizable() checked every reader
    new = replace(conv)

    def transform(weight: torch.Tensor, bias: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        g, m = gain.to(weight.dtype), centre.to(weight.dtype)
        return weight / g[None, :, None, None], bias + weight.sum((2, 3)) @ m

    new.refold(transform)
    return replace(op, expand=new) if isinstance(op, MBConvOp) else new


__all__ = ["MAX_GAIN", "channel_ranges", "equalizable", "equalize_rnnpool"]
