"""Static memory planning for the generated C: every buffer gets an offset in one arena.

A buffer lives over an inclusive range of schedule steps; two buffers may share bytes only if their
lifetimes do not overlap. :func:`plan_arena` places buffers largest first at the lowest offset that fits
(TFLM's greedy planner does the same); buffers that alias another (an in-place depthwise output) take its
offset. :func:`layer_by_layer_peak` is the baseline the planner is compared with: every layer's input and
output fully materialised, nothing computed in place or streamed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

ALIGN = 8


@dataclass
class Buffer:
    name: str
    size: int
    first: int  # first step it is live
    last: int  # last step it is live
    alias: Optional[str] = None  # shares the bytes of this buffer (in-place)
    offset: int = -1


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def plan_arena(buffers: Sequence[Buffer]) -> int:
    """Set every buffer's ``offset``; returns the arena size in bytes."""
    by_name = {b.name: b for b in buffers}

    def root(buf: Buffer) -> Buffer:
        while buf.alias is not None:
            buf = by_name[buf.alias]
        return buf

    for buf in buffers:  # an in-place output keeps its input's bytes busy for its own lifetime
        if buf.alias is not None:
            target = root(buf)
            target.first, target.last = min(target.first, buf.first), max(target.last, buf.last)
    placed: List[Buffer] = []
    for buf in sorted((b for b in buffers if b.alias is None), key=lambda b: (-b.size, b.first, b.name)):
        busy = sorted((p.offset, p.offset + _aligned(p.size)) for p in placed if p.first <= buf.last and buf.first <= p.last)
        offset = 0
        for start, end in busy:
            if offset + _aligned(buf.size) <= start:
                break
            offset = max(offset, end)
        buf.offset = offset
        placed.append(buf)
    for buf in buffers:
        if buf.alias is not None:
            target = root(buf)
            if buf.size > target.size:
                raise ValueError(f"in-place buffer {buf.name} ({buf.size} B) is larger than {target.name} ({target.size} B)")
            buf.offset = target.offset
    return max((b.offset + _aligned(b.size) for b in buffers), default=0)


def check_plan(buffers: Sequence[Buffer]) -> None:
    """Raise if two buffers with overlapping lifetimes overlap in memory (aliases excepted)."""
    items = [b for b in buffers if b.alias is None]
    for i, a in enumerate(items):
        for b in items[i + 1 :]:
            if a.first <= b.last and b.first <= a.last and a.offset < b.offset + b.size and b.offset < a.offset + a.size:
                raise AssertionError(f"arena plan overlaps {a.name} and {b.name}")


def peak_step(buffers: Sequence[Buffer]) -> Tuple[int, List[str]]:
    """(step, buffers live there, largest first) where the live bytes are highest."""
    steps = sorted({s for b in buffers for s in (b.first, b.last)})
    best, names = -1, []
    best_bytes = -1
    for step in steps:
        live = [b for b in buffers if b.alias is None and b.first <= step <= b.last]
        total = sum(b.size for b in live)
        if total > best_bytes:
            best_bytes, best, names = total, step, [b.name for b in sorted(live, key=lambda b: -b.size)]
    return best, names


def layer_by_layer_peak(layers: Sequence[Tuple[str, Sequence[str], str]], sizes: Dict[str, int]) -> Tuple[int, str, List[str]]:
    """Peak bytes when ``layers`` (name, inputs, output) run one at a time on whole tensors, each tensor
    freed after its last reader. Returns (bytes, layer at the peak, tensors live there)."""
    last_use: Dict[str, int] = {}
    for i, (_, inputs, output) in enumerate(layers):
        for name in list(inputs) + [output]:
            last_use[name] = i
    live: Dict[str, int] = {}
    peak, where, tensors = 0, "", []
    for i, (layer, inputs, output) in enumerate(layers):
        for name in inputs:
            live.setdefault(name, sizes[name])
        live[output] = sizes[output]
        total = sum(live.values())
        if total > peak:
            peak, where, tensors = total, layer, sorted(live, key=lambda n: -live[n])
        for name in [n for n in live if last_use[n] <= i]:
            del live[name]
    return peak, where, tensors


__all__ = ["Buffer", "check_plan", "layer_by_layer_peak", "peak_step", "plan_arena"]
