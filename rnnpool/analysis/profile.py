"""Per-layer activation size, held RAM, MAdds and parameters of any model, and its peak RAM."""
from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .madds import op_madds
from .memory import CONVENTIONS, layer_convention, peak, tensor_convention
from .trace import trace_model
from ..errors import InvalidInputError

DTYPE_BYTES = {"fp32": 4, "fp16": 2, "int8": 1}
PROFILE_CONVENTIONS = CONVENTIONS + ("stream",)


@dataclass
class LayerStats:
    """One layer or block: ``held_bytes`` is the RAM it needs under the profile's convention."""

    name: str
    kind: str
    output_shape: Tuple[int, ...]
    output_bytes: int
    held_bytes: int
    madds: int
    params: int


@dataclass
class Profile:
    """A model's analysis. Sizes in bytes (KiB = 1024 B, MiB = 1024 KiB), compute in MAdds."""

    model: str
    input: Tuple[int, ...]
    dtype: str
    convention: str
    peak_bytes: int
    peak_layer: str
    madds: int
    params: int
    layers: List[LayerStats]
    uncounted_ops: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)  # what the convention approximates, with numbers

    def to_dict(self) -> Dict[str, object]:
        return asdict(self)

    def save_json(self, path: Union[str, Path]) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    def save_csv(self, path: Union[str, Path]) -> None:
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["name", "kind", "output_shape", "output_bytes", "held_bytes", "madds", "params"])
            for l in self.layers:
                writer.writerow([l.name, l.kind, "x".join(map(str, l.output_shape)), l.output_bytes, l.held_bytes, l.madds, l.params])

    def table(self) -> str:
        """A text table, one row per layer, the peak marked with '*'."""
        lines = [f"{self.model}  input {'x'.join(map(str, self.input))}  dtype {self.dtype}  convention '{self.convention}'",
                 f"{'layer':44s} {'kind':8s} {'output':>16s} {'out KiB':>9s} {'held KiB':>9s} {'MAdds':>12s} {'params':>9s}"]
        for l in self.layers:
            mark = "*" if l.name == self.peak_layer and l.held_bytes == self.peak_bytes else " "
            lines.append(f"{l.name[:43]:44s} {l.kind:8s} {'x'.join(map(str, l.output_shape)):>16s} {l.output_bytes / 1024:9.1f} "
                         f"{l.held_bytes / 1024:8.1f}{mark} {l.madds:12,d} {l.params:9,d}")
        lines.append(f"total: params {self.params:,d}, MAdds {self.madds:,d} ({self.madds / 1e6:.1f} M), "
                     f"peak RAM {format_bytes(self.peak_bytes)} at {self.peak_layer}")
        if self.uncounted_ops:
            lines.append(f"MAdds not counted for: {', '.join(self.uncounted_ops)}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def format_bytes(n: int) -> str:
    """'588.0 KiB' / '2.30 MiB' (binary units)."""
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB"


def _unit_params(unit) -> int:
    modules = [unit.module] if unit.module is not None else []
    if not modules:
        seen = []
        for op in unit.ops:
            if op.stack and not list(op.stack[-1][1].children()) and op.stack[-1][1] not in seen:
                seen.append(op.stack[-1][1])
        modules = seen
    return sum(p.numel() for m in modules for p in m.parameters())


def profile_model(
    model: nn.Module,
    input_shape: Sequence[int],
    dtype: str = "fp32",
    convention: str = "layer",
    name: Optional[str] = None,
) -> Profile:
    """Analyse ``model`` on a random input of ``input_shape`` ((C, H, W) or (N, C, H, W)).

    Args:
        dtype: element type of the activations: "fp32" (4 bytes), "fp16" (2) or "int8" (1).
        convention: "layer" (the RNNPool paper's) or "tensor" (TFLM/MCUNet), see :mod:`rnnpool.analysis.memory`;
            or "stream": the RAM the int8 program of ``rnnpool export c`` claims on a Cortex-M4 (every map
            streamed row by row; int8 only), see :mod:`rnnpool.deploy.stream_profile`.
    """
    if dtype not in DTYPE_BYTES:
        raise InvalidInputError(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPE_BYTES)}")
    if convention not in PROFILE_CONVENTIONS:
        raise InvalidInputError(f"unknown convention {convention!r}; expected one of {', '.join(PROFILE_CONVENTIONS)}")
    if convention == "stream":
        if dtype != "int8":
            raise InvalidInputError(f"the stream convention is the deployed int8 program's RAM: use dtype int8, not {dtype}")
        from ..deploy.stream_profile import stream_profile  # deploy builds on analysis: imported when used

        return stream_profile(model, input_shape, name)
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 3:
        shape = (1,) + shape
    if len(shape) != 4 or min(shape) <= 0:
        raise InvalidInputError(f"input shape must be (C, H, W) or (N, C, H, W) with positive sizes, got {tuple(input_shape)}")
    param = next(model.parameters(), None)
    example = torch.randn(shape, device=param.device if param is not None else "cpu")
    trace = trace_model(model, example)
    elem = DTYPE_BYTES[dtype]
    units = (layer_convention if convention == "layer" else tensor_convention)(trace, elem)
    madds = {op.index: op_madds(op) for op in trace.ops}
    uncounted = sorted({op.name for op in trace.ops if madds[op.index] is None})
    layers = []
    for unit in units:
        last = unit.ops[-1]
        out_shape = last.output_shapes[0]
        layers.append(LayerStats(unit.name, unit.kind, out_shape, int(torch.Size(out_shape).numel()) * elem, unit.held_bytes,
                                 sum(madds[op.index] or 0 for op in unit.ops), _unit_params(unit)))
    top = peak(units)
    return Profile(name or type(model).__name__, shape, dtype, convention, top.held_bytes, top.name,
                   sum(v or 0 for v in madds.values()), sum(p.numel() for p in model.parameters()), layers, uncounted,
                   _residual_note(units, top.held_bytes))


def _residual_note(units, counted_peak: int) -> List[str]:
    """Under the ``layer`` convention a residual block holds max(input, output), the paper's approximation;
    say how far the physical count (skip input live beside the inner maps) is from it."""
    residual = [u for u in units if u.physical_bytes is not None]
    if not residual:
        return []
    worst = max(residual, key=lambda u: u.physical_bytes / max(u.held_bytes, 1))
    physical_peak = max(u.physical_bytes if u.physical_bytes is not None else u.held_bytes for u in units)
    return [f"{len(residual)} residual blocks are counted as max(input, output), the paper's approximation; with the skip "
            f"input live beside the inner maps they hold up to {worst.physical_bytes / max(worst.held_bytes, 1):.2f}x that "
            f"({worst.name}: {format_bytes(worst.physical_bytes)}, counted {format_bytes(worst.held_bytes)}); "
            f"the peak counted physically is {format_bytes(physical_peak)} (counted {format_bytes(counted_peak)})"]


def compare_table(profiles: Sequence[Profile]) -> str:
    """Side-by-side totals of several profiles, with ratios to the first; columns sized to their contents."""
    base = profiles[0]
    header = ("model", "params", "MAdds (M)", "peak RAM", "peak layer", "RAM vs first")
    rows = [(p.model, f"{p.params:,d}", f"{p.madds / 1e6:.1f}", format_bytes(p.peak_bytes), p.peak_layer,
             f"{p.peak_bytes / base.peak_bytes:.2f}x") for p in profiles]
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    left = {0, 4}  # text columns; numbers align right

    def line(cells) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    lines = [line(header)] + [line(r) for r in rows]
    lines.append(f"(dtype {base.dtype}, convention '{base.convention}')")
    return "\n".join(lines)
