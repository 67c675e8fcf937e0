"""The ``stream`` convention of ``rnnpool profile``: the RAM of the deployed int8 program, from the model alone.

The model is quantized on a few synthetic images (only the shapes matter here), scheduled exactly as
``rnnpool export c`` schedules it for a Cortex-M4 within ``ram_bytes``, and its claim predicted by
:func:`rnnpool.deploy.ram.predict_ram`. Per layer: its output map (whole, for reference), the RAM it holds
in the streamed program (its output rings and its state), its multiply-adds and its int8 weights.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ..analysis.profile import LayerStats, Profile
from .int8_reference import DetectionSettings
from .quantize import QConv, QFastGRNN, QMBConv, QRNNPool, quantize_model
from .ram import arena_budget, predict_ram
from .schedule import Node, Schedule, build_schedule, rnnpool_valid_rows
from ..errors import InvalidInputError


def _synthetic_images(channels: int, height: int, width: int, count: int = 2) -> List[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    small = torch.rand(count, channels, max(height // 16, 1), max(width // 16, 1), generator=generator)
    return list(torch.nn.functional.interpolate(small, size=(height, width), mode="bilinear", align_corners=False))


def _conv_madds(op: QConv, height: int, width: int) -> int:
    return height * width * int(np.prod(op.weight.shape))


def _cell_madds(cell: QFastGRNN) -> int:
    return cell.hidden_size * (cell.input_size + cell.hidden_size)


def node_madds(node: Node, schedule: Schedule) -> int:
    """Multiply-adds of one node as the program runs it (an RNNPool's per-patch work: 2rc RNN1 steps and
    2(r + c) RNN2 steps; recomputed rows of a RAM-saving mode included)."""
    maps = schedule.maps
    if node.kind == "conv":
        out = maps[node.outputs[0]]
        return sum(_conv_madds(op, out.height, out.width) for op in node.ops)
    if node.kind == "mbconv":
        op: QMBConv = node.op
        inp, out = maps[op.input], maps[op.output]
        total = _conv_madds(op.depthwise, out.height, out.width) + _conv_madds(op.project, out.height, out.width)
        if op.expand is not None:
            expanded_rows = inp.height if node.mode == "rolling" else out.height * op.depthwise.kernel
            total += _conv_madds(op.expand, expanded_rows, inp.width)
        return total
    if node.kind == "rnnpool":
        op: QRNNPool = node.op
        (r, c), out = op.patch, maps[op.output]
        patches = rnnpool_valid_rows(op, maps[op.input].height) * (out.width - op.pad[1])
        return patches * (2 * r * c * _cell_madds(op.rnn1) + 2 * (r + c) * _cell_madds(op.rnn2))
    return 0


def _node_weights(node: Node) -> int:
    count = 0
    for op in node.ops:
        parts = [op.expand, op.depthwise, op.project] if isinstance(op, QMBConv) else [op]
        for part in parts:
            if isinstance(part, QConv):
                count += part.weight.size + part.bias.size
            elif isinstance(part, QRNNPool):
                for cell in (part.rnn1, part.rnn2):
                    count += cell.weight.size + cell.recurrent.size + 2 * cell.hidden_size
    return count


def stream_profile(model: nn.Module, input_shape: Sequence[int], name: Optional[str] = None,
                   ram_bytes: int = 256 * 1024, settings: DetectionSettings = DetectionSettings()) -> Profile:
    """The ``stream`` profile of ``model`` on a (C, H, W) input (see the module docstring)."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 4 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) != 3:
        raise InvalidInputError(f"the stream convention profiles one image: input shape (C, H, W), got {tuple(input_shape)}")
    channels, height, width = shape
    was_training = model.training
    model.eval()
    try:
        graph = quantize_model(model, _synthetic_images(channels, height, width), (height, width))
    finally:
        model.train(was_training)
    schedule = build_schedule(graph, ram_budget=arena_budget(graph, ram_bytes, settings))
    prediction = predict_ram(schedule, settings)
    held = {}
    for buffer in schedule.buffers:
        held[buffer.layer] = held.get(buffer.layer, 0) + buffer.size
    layers = []
    for node in schedule.nodes:
        maps = [schedule.maps[o] for o in node.outputs] or [schedule.maps[n] for n in node.inputs]
        first = maps[0]
        label = f"{graph.layer_of(node.outputs[0])} ({node.name})" if node.outputs else node.name
        layers.append(LayerStats(label, node.kind, (first.channels, first.height, first.width),
                                 sum(m.channels * m.height * m.width for m in maps),
                                 sum(held.get(o, 0) for o in node.outputs), node_madds(node, schedule), _node_weights(node)))
    largest = schedule.largest(1)[0]
    where = (f"the whole program: arena {prediction.arena:,} B (largest buffer {largest.name} of {graph.layer_of(largest.layer)}, "
             f"{largest.size:,} B) + "
             f"statics {prediction.statics:,} B + stack {prediction.stack:,} B + exception frame {prediction.exception_frame} B"
             + (f"; planner: {'; '.join(schedule.choices)}" if schedule.choices else ""))
    return Profile(name or type(model).__name__, (1, *shape), "int8", "stream", prediction.total, where,
                   sum(l.madds for l in layers), sum(p.numel() for p in model.parameters()), layers)


__all__ = ["node_madds", "stream_profile"]
