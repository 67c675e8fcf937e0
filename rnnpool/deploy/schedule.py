"""The streaming schedule of a quantized graph: every map flows a row at a time through ring buffers.

The image arrives row by row (a camera). When a map gets a new row, each of its consumers computes every
output row whose input rows are now all there, and hands each new row on to its own consumers at once
(depth first), exactly as the generated C does. So no map is ever whole: each is a ring of the few rows its
consumers still need. :func:`build_schedule` simulates that execution row by row to size every ring
exactly (the largest span between the newest row of a map and the oldest row still read from it), and
lists what else the kernels hold: per-node state (MobileNetV2 blocks' expanded rows, RNNPool's shared row
sweeps, pooling sums) and one scratch area that every kernel uses only within one output row.

Nodes: ``conv`` (one or more dense convs reading the same map with the same geometry share one gathering
of their inputs, e.g. a head's scores and offsets; an L2Norm whose only readers are such convs is applied
as they gather, so its output map is never stored), ``mbconv``, ``rnnpool``, ``l2norm``, ``avgpool`` (a
running sum; its 1x1 output appears with the last row) and ``detect`` (a head's scores and offsets become
detection candidates row by row).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..errors import RnnpoolError
from .quantize import QAvgPool, QConv, QL2Norm, QMBConv, QOp, QRNNPool, QuantizedGraph
from .runtime_limits import LIMITS, fifo_pixels, padded


class ScheduleError(RnnpoolError, NotImplementedError):
    """A graph the row-streaming C runtime cannot express; the message names the layer and why."""


@dataclass
class MapInfo:
    """A streamed map: (height, width, channels), its ring rows and the nodes that read it."""

    name: str
    height: int
    width: int
    channels: int
    rows: int = 0
    consumers: List["Node"] = field(default_factory=list)

    @property
    def row_bytes(self) -> int:
        return self.width * self.channels


@dataclass
class Node:
    """One step of the schedule: reads ``inputs`` (map names), writes ``outputs`` (none for ``detect``)."""

    name: str
    kind: str
    ops: List[QOp]
    inputs: List[str]
    outputs: List[str]
    out_rows: int  # rows it produces (detect: rows it consumes)
    norm: Optional[QL2Norm] = None  # conv: an L2Norm applied to its input as it is gathered
    head: int = -1  # detect: head index
    mode: str = ""  # mbconv with expansion: "rolling" (keeps k-1 expanded rows) or "recompute";
    #                 rnnpool: "cache" (keeps the shared row sweeps) or "recompute"

    @property
    def keeps_rows(self) -> bool:
        """A block that keeps expanded rows between output rows (and expands each input row once)."""
        return self.kind == "mbconv" and self.op.expand is not None and self.mode == "rolling"

    @property
    def op(self) -> QOp:
        return self.ops[0]

    def window(self, oy: int, height: int) -> Tuple[int, int]:
        """Input rows [first, last] (clipped to the map) that output row oy reads; last decides readiness."""
        if self.kind in ("l2norm", "avgpool", "detect"):  # row by row
            return oy, oy
        op = self.op
        if self.kind == "conv":
            first = oy * op.stride - op.padding
            last = first + op.kernel - 1
        elif self.kind == "mbconv":
            first, last = _mbconv_rows(op, oy)
        elif self.kind == "rnnpool":
            y = min(oy, rnnpool_valid_rows(op, height) - 1)  # padding rows come right after the last valid row
            first = y * op.stride[0] - op.padding[0]
            last = first + op.patch[0] - 1
        return max(first, 0), min(last, height - 1)


def _mbconv_rows(op: QMBConv, oy: int) -> Tuple[int, int]:
    dw = op.depthwise
    first = oy * dw.stride - dw.padding
    return first, first + dw.kernel - 1


def rnnpool_valid_rows(op: QRNNPool, height: int) -> int:
    """Output rows computed from the input (the rest are the bottom padding)."""
    return (height + 2 * op.padding[0] - op.patch[0]) // op.stride[0] + 1


@dataclass
class Buffer:
    """Bytes the program holds: a ring, a node's state, the shared scratch, or the logits."""

    name: str
    size: int
    kind: str  # "ring" | "state" | "scratch" | "output"
    layer: str  # what it belongs to, for reports


@dataclass
class Schedule:
    graph: QuantizedGraph
    maps: Dict[str, MapInfo]
    nodes: List[Node]
    buffers: List[Buffer]
    scratch: Dict[str, int]  # what the shared scratch holds at most, per kind of use
    choices: List[str] = field(default_factory=list)  # what the planner traded for RAM, in words
    budget: Optional[int] = None

    @property
    def cache_rows(self) -> Dict[str, bool]:
        """RNNPool node -> keeps the row sweeps shared by vertically overlapping patches."""
        return {n.name: n.mode == "cache" for n in self.nodes if n.kind == "rnnpool"}

    @property
    def total_bytes(self) -> int:
        return sum(_aligned(b.size) for b in self.buffers)

    def largest(self, count: int = 5) -> List[Buffer]:
        return sorted(self.buffers, key=lambda b: -b.size)[:count]


def _aligned(n: int) -> int:
    return (n + 7) // 8 * 8


NODE_KINDS = {QConv: "conv", QMBConv: "mbconv", QRNNPool: "rnnpool", QL2Norm: "l2norm", QAvgPool: "avgpool"}


def _fusable_norms(graph: QuantizedGraph) -> Dict[str, QL2Norm]:
    """L2Norm ops whose every reader is a dense conv: those convs normalise as they gather (output -> op)."""
    readers: Dict[str, List[QOp]] = {}
    for op in graph.ops:
        readers.setdefault(op.input, []).append(op)
    fused = {}
    for op in graph.ops:
        if isinstance(op, QL2Norm):
            users = readers.get(op.output, [])
            heads = {h.conf for h in graph.heads} | {h.loc for h in graph.heads}
            if users and op.output not in heads and all(isinstance(u, QConv) and not u.depthwise and u.pad_values is None
                                                       for u in users):
                fused[op.output] = op
    return fused


def _nodes(graph: QuantizedGraph) -> List[Node]:
    shapes = {n: t.shape for n, t in graph.tensors.items()}
    fused = _fusable_norms(graph)
    nodes: List[Node] = []
    groups: Dict[Tuple, Node] = {}
    for op in graph.ops:
        if isinstance(op, QL2Norm) and op.output in fused:
            continue
        _, height, _ = shapes[op.output]
        if isinstance(op, QConv):
            norm = fused.get(op.input)
            source = norm.input if norm is not None else op.input
            key = (source, op.kernel, op.stride, op.padding, op.depthwise, id(norm))
            if not op.depthwise and key in groups:  # same input and geometry: one gathering serves both
                groups[key].ops.append(op)
                groups[key].outputs.append(op.output)
                continue
            node = Node(f"n{len(nodes)}_{op.output}", "conv", [op], [source], [op.output], height, norm)
            if not op.depthwise and op.kernel > 1:
                groups[key] = node
            nodes.append(node)
            continue
        nodes.append(Node(f"n{len(nodes)}_{op.output}", NODE_KINDS[type(op)], [op], [op.input], [op.output], height))
    for index, head in enumerate(graph.heads):
        _, height, _ = shapes[head.conf]
        nodes.append(Node(f"detect{index}", "detect", [], [head.conf, head.loc], [], height, head=index))
    return nodes


def _check(node: Node, maps: Dict[str, MapInfo]) -> None:
    op, name = node.op, node.outputs[0] if node.outputs else node.name
    convs = node.ops if node.kind == "conv" else op.convs() if node.kind == "mbconv" else []
    for conv in convs:
        if conv.kernel > LIMITS["RT_MAX_KERNEL"]:
            raise ScheduleError(f"layer {conv.output}: kernel {conv.kernel}x{conv.kernel} is larger than the runtime's "
                                f"{LIMITS['RT_MAX_KERNEL']}x{LIMITS['RT_MAX_KERNEL']}")
        if conv.depthwise and conv.pad_values is not None:
            raise ScheduleError(f"layer {conv.output}: a depthwise conv cannot read per-channel padding values")
    if node.kind == "mbconv" and op.add is not None and op.depthwise.stride != 1:
        raise ScheduleError(f"layer {name}: a residual block must have stride 1")
    if node.kind == "rnnpool":
        for cell, which in ((op.rnn1, "RNN1"), (op.rnn2, "RNN2")):
            if cell.hidden_size > LIMITS["RT_MAX_HIDDEN"]:
                raise ScheduleError(f"layer {name}: {which} has {cell.hidden_size} hidden units, the runtime at most "
                                    f"{LIMITS['RT_MAX_HIDDEN']}")
        if max(op.patch) > LIMITS["RT_MAX_PATCH"]:
            raise ScheduleError(f"layer {name}: RNNPool patch {op.patch} is larger than the runtime's {LIMITS['RT_MAX_PATCH']}")
    if node.kind == "avgpool" and maps[op.input].height * maps[op.input].width * 255 >= 2**31:
        raise ScheduleError(f"layer {name}: the pooled map is too large for an int32 sum")


def _simulate(graph: QuantizedGraph, maps: Dict[str, MapInfo], nodes: List[Node]) -> Dict[str, int]:
    """Run the push schedule row by row, as the C does; the ring rows each map needs (for every read, the
    rows from the one read to the newest produced must still be there)."""
    produced = {name: 0 for name in maps}
    done = {node.name: 0 for node in nodes}
    expanded = {node.name: 0 for node in nodes}
    need = {name: 1 for name in maps}

    def read(name: str, row: int) -> None:
        need[name] = max(need[name], produced[name] - row)

    def prefetch(node: Node) -> None:
        """A block expands each full (not rolling) input row as soon as it arrives (rt_mbconv_prefetch)."""
        name = node.inputs[0]
        if done[node.name] >= node.out_rows:
            return
        first, last = node.window(done[node.name], maps[name].height)
        for row in range(max(expanded[node.name], first), min(produced[name], last)):
            read(name, row)
            expanded[node.name] = row + 1

    def run(node: Node) -> None:
        expands = node.keeps_rows
        if expands:
            prefetch(node)
        while done[node.name] < node.out_rows:
            oy = done[node.name]
            spans = [node.window(oy, maps[name].height) for name in node.inputs]
            if any(produced[name] <= last for name, (_, last) in zip(node.inputs, spans)):
                return
            for name, (first, last) in zip(node.inputs, spans):
                if expands:
                    for row in range(max(expanded[node.name], first), last + 1):
                        read(name, row)
                    expanded[node.name] = max(expanded[node.name], last + 1)
                elif not (node.kind == "rnnpool" and oy >= rnnpool_valid_rows(node.op, maps[name].height)):
                    for row in range(first, last + 1):
                        read(name, row)
                if node.kind == "mbconv" and node.op.add is not None:
                    read(name, oy)
            done[node.name] += 1
            for out in node.outputs:
                produced[out] += 1
            for out in node.outputs:
                for consumer in maps[out].consumers:
                    run(consumer)
            if expands:
                prefetch(node)

    image = maps[graph.input]
    for _ in range(image.height):
        produced[graph.input] += 1
        for consumer in image.consumers:
            run(consumer)
    stuck = [f"{n.name} ({done[n.name]} of {n.out_rows} rows)" for n in nodes if done[n.name] != n.out_rows]
    if stuck:
        raise ScheduleError("the row schedule does not complete: " + ", ".join(stuck))
    return need


MAX_COLUMN_CHANNELS = 32  # wider inputs gather per pixel: a column ring would outgrow the scratch


def gathers_columns(conv: QConv) -> bool:
    """A dense k x k conv (k > 1) unpacks each input column once into a ring of columns (its weights stored
    column-major: dx, dy, c) instead of gathering every pixel's taps. The column holds each pixel's channels
    padded to whole words (RT_PACK), so it serves channel counts that waste at most a quarter of the
    multiply-adds that way: whole words, or 3 of 4 (an RGB image)."""
    return (not conv.depthwise and conv.kernel > 1 and conv.in_channels % 4 in (0, 3) and conv.pad_values is None
            and conv.in_channels <= MAX_COLUMN_CHANNELS)


def column_channels(conv: QConv) -> int:
    """Channels of one pixel in a column: in_channels padded to whole words (the padding unpacks to 0)."""
    return padded(conv.in_channels)


def column_ring_bytes(conv: QConv) -> int:
    """The ring: k + stride columns of k pixels of padded channels as int16, stored twice so any k adjacent
    ones are contiguous."""
    return 2 * (conv.kernel + conv.stride) * conv.kernel * column_channels(conv) * 2


def conv_kdim(conv: QConv) -> int:
    """Length of a packed weight row: k*k*cin (dense; k*k*padded cin when it gathers columns) or channels
    (depthwise), padded to RT_PACK."""
    if conv.depthwise or conv.kernel == 1:
        return padded(conv.in_channels)
    if gathers_columns(conv):
        return conv.kernel ** 2 * column_channels(conv)
    return padded(conv.kernel ** 2 * conv.in_channels)


def _conv_scratch(conv: QConv) -> int:
    """Two pixels' unpacked int16 inputs and one gathered pixel (dense and 1x1: RT_CONV_SCRATCH_BYTES), or the
    column ring; none (depthwise)."""
    if conv.depthwise:
        return 0
    return column_ring_bytes(conv) if gathers_columns(conv) else 5 * conv_kdim(conv)


def mbconv_memory(op: QMBConv, width: int, mode: str = "rolling") -> Tuple[int, Dict[str, int]]:
    """(state bytes: k - 1 expanded rows; scratch parts: FIFO, two depthwise pixels, unpacked inputs, and with
    recompute the k expanded rows of one output row)."""
    k, hidden = op.depthwise.kernel, op.depthwise.out_channels
    expands = op.expand is not None
    slots = (k - 1) * width * hidden if expands and mode == "rolling" else 0
    kdims = [conv_kdim(c) for c in (op.expand, op.project) if c is not None]
    parts = {"fifo": fifo_pixels(k) * hidden if expands and mode == "rolling" else 0, "dw_out": 2 * hidden,
             "unpacked": 4 * max(kdims), "rows": k * width * hidden if expands and mode == "recompute" else 0}
    return slots, parts


def rnnpool_memory(op: QRNNPool, w_out: int, cache: bool) -> Tuple[int, Dict[str, int]]:
    """(state bytes: the row-sweep cache; scratch parts: a patch's projections, summaries and states)."""
    (r, c), sr = op.patch, op.stride[0]
    h1, h2 = op.rnn1.hidden_size, op.rnn2.hidden_size
    u1, u2 = padded(h1), padded(h2)
    state = (r - sr) * w_out * u1 * 2 if cache else 0
    parts = {"wx": c * r * h1 * 4, "col_sums": c * u1 * 2, "row_sums": r * u1 * 2, "wx2": (r + c) * h2 * 4,
             "state": max(u1, u2) * 2, "unpacked": 4 * padded(op.rnn1.input_size)}
    return state, parts


def layer_by_layer_peak(graph: QuantizedGraph) -> Tuple[int, str, List[str]]:
    """The baseline: peak bytes when the layers run one at a time on whole int8 maps, each map freed after its
    last reader (the image counted whole). Returns (bytes, layer at the peak, maps live there)."""
    sizes = {n: int(np.prod(t.shape)) for n, t in graph.tensors.items()}
    steps: List[Tuple[str, List[str], str]] = []
    for op in graph.ops:
        if isinstance(op, QMBConv):  # its inner maps count too
            x = op.input
            for conv in op.convs():
                steps.append((conv.output, [x], conv.output))
                x = conv.output
            if op.add is not None:
                steps.append((op.output, [x, op.input], op.output))
        else:
            steps.append((op.output, [op.input], op.output))
    last_use = {}
    for i, (_, inputs, output) in enumerate(steps):
        for name in list(inputs) + [output]:
            last_use[name] = i
    live: Dict[str, int] = {}
    peak, where, names = 0, "", []
    for i, (layer, inputs, output) in enumerate(steps):
        for name in inputs:
            live.setdefault(name, sizes[name])
        live[output] = sizes[output]
        total = sum(live.values())
        if total > peak:
            peak, where, names = total, layer, sorted(live, key=lambda n: -live[n])
        for name in [n for n in live if last_use[n] <= i]:
            del live[name]
    return peak, where, names


def _memory(graph: QuantizedGraph, maps: Dict[str, MapInfo], nodes: List[Node]) -> Tuple[List[Buffer], Dict[str, int]]:
    """Every buffer of the program with the nodes' current modes (the rings from a fresh simulation)."""
    need = _simulate(graph, maps, nodes)
    buffers: List[Buffer] = []
    scratch: Dict[str, int] = {}
    for name, m in maps.items():
        if m.consumers:
            m.rows = need[name]
            buffers.append(Buffer(f"ring_{name}", m.rows * m.row_bytes, "ring", name))
    for node in nodes:
        op = node.op if node.ops else None
        if node.kind == "conv":
            scratch["conv"] = max(scratch.get("conv", 0), max(_conv_scratch(c) for c in node.ops))
        elif node.kind == "mbconv":
            state, parts = mbconv_memory(op, maps[op.input].width, node.mode)
            scratch["mbconv"] = max(scratch.get("mbconv", 0), sum(_aligned(v) for v in parts.values()))
            if state:
                buffers.append(Buffer(f"state_{node.name}", state, "state", op.output))
        elif node.kind == "rnnpool":
            state, parts = rnnpool_memory(op, maps[op.output].width - op.pad[1], node.mode == "cache")
            scratch["rnnpool"] = max(scratch.get("rnnpool", 0), sum(_aligned(v) for v in parts.values()))
            if state:
                buffers.append(Buffer(f"state_{node.name}", state, "state", op.output))
        elif node.kind == "avgpool":
            buffers.append(Buffer(f"state_{node.name}", 4 * maps[op.input].channels, "state", op.output))
    if graph.logits is not None:
        maps[graph.logits].rows = 1
        buffers.append(Buffer(f"ring_{graph.logits}", maps[graph.logits].row_bytes, "output", graph.logits))
    buffers.append(Buffer("scratch", max(scratch.values(), default=0), "scratch", "each kernel, within one output row"))
    return buffers, scratch


def _total(buffers: List[Buffer]) -> int:
    return sum(_aligned(b.size) for b in buffers)


def _extra_work(node: Node, maps: Dict[str, MapInfo]) -> int:
    """Multiply-adds a node's RAM-saving mode adds: a block expands each input row k times instead of once;
    RNNPool sweeps each shared row again for its second patch row."""
    op = node.op
    if node.kind == "mbconv":
        m = maps[op.input]
        return (op.depthwise.kernel - 1) * m.height * m.width * op.expand.in_channels * op.expand.out_channels
    (r, c), sr = op.patch, op.stride[0]
    out = maps[op.output]
    h1 = op.rnn1.hidden_size
    return (out.height - op.pad[0]) * (out.width - op.pad[1]) * (r - sr) * c * h1 * (h1 + 4)


def build_schedule(graph: QuantizedGraph, cache_rows: bool = True, ram_budget: Optional[int] = None,
                   modes: Optional[Dict[str, str]] = None) -> Schedule:
    """Size every ring and buffer of the streaming program for ``graph``.

    By default every MobileNetV2 block keeps k-1 expanded rows and RNNPool keeps the row sweeps that
    vertically overlapping patches share (``cache_rows``): each is computed once. With ``ram_budget``
    (bytes for all buffers) the planner trades work for RAM until the buffers fit, greedily by bytes saved
    per multiply-add added: a block recomputes its expanded rows for every output row (they then live in
    the shared scratch), RNNPool recomputes the shared row sweeps. ``choices`` says what it changed; if
    nothing reaches the budget, the smallest schedule found is returned (``total_bytes`` > budget).
    ``modes`` (node name -> mode) sets the modes directly instead."""
    maps: Dict[str, MapInfo] = {}
    for name, t in graph.tensors.items():
        c, h, w = t.shape
        maps[name] = MapInfo(name, h, w, c)
    nodes = _nodes(graph)
    for node in nodes:
        for name in node.inputs:
            maps[name].consumers.append(node)
        if node.ops:
            _check(node, maps)
        if node.kind == "mbconv" and node.op.expand is not None:
            node.mode = "rolling"
        elif node.kind == "rnnpool":
            node.mode = "cache" if cache_rows and node.op.stride[0] < node.op.patch[0] else "recompute"
        if modes and node.name in modes:
            node.mode = modes[node.name]
    buffers, scratch = _memory(graph, maps, nodes)
    choices: List[str] = []
    while ram_budget is not None and _total(buffers) > ram_budget:
        best = None
        for node in nodes:
            if node.mode not in ("rolling", "cache"):
                continue
            node.mode, before = "recompute", node.mode
            trial, _ = _memory(graph, maps, nodes)
            node.mode = before
            saved = _total(buffers) - _total(trial)
            if saved > 0:
                value = saved / max(_extra_work(node, maps), 1)
                if best is None or value > best[0]:
                    best = (value, node, saved)
        if best is None:
            break
        _, node, saved = best
        node.mode = "recompute"
        layer = graph.layer_of(node.outputs[0]) if node.outputs else node.name
        choices.append(f"{layer} ({node.name}): recompute ({'expanded rows' if node.kind == 'mbconv' else 'shared row sweeps'}), "
                       f"-{saved:,} B, +{_extra_work(node, maps) / 1e6:.1f} M multiply-adds")
        buffers, scratch = _memory(graph, maps, nodes)
    buffers, scratch = _memory(graph, maps, nodes)  # the rings of the final modes (trials changed them)
    return Schedule(graph, maps, nodes, buffers, scratch, choices, ram_budget)


__all__ = ["Buffer", "MapInfo", "Node", "Schedule", "ScheduleError", "build_schedule", "column_channels", "column_ring_bytes", "conv_kdim",
           "gathers_columns", "layer_by_layer_peak",
           "mbconv_memory", "rnnpool_memory", "rnnpool_valid_rows"]
