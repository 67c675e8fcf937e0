"""Make a CNN fit a RAM budget by replacing its memory-hungry early layers with one RNNPool layer.

:func:`fit_model` records the model (the analysis of :mod:`rnnpool.analysis`), lists the cut points after its
stem where the spatial size has dropped 4x or 8x from the stem's output (:mod:`.surgery`: between the layers of
an ``nn.Sequential`` trunk, or in the torch.fx graph of any traceable model such as ResNet), and builds
candidates for each: the stem (the first convolution, with its BatchNorm and activation) kept, the layers
between the stem and the cut replaced by ``RNNPool2d`` with the paper's rules (stride = the downsampling,
patch = stride + 2 or 2 x stride, padding so the output is exactly the map the cut expects), at two widths:

- ``4 * h2`` = the channels at the cut (a 1x1 conv adapter when they are not a multiple of 4);
- ``4 * h2`` = twice the channels at the cut, the convolutions that read the cut's map widened to take them
  (the paper's MobileNetV2-RNNPool: h1 = h2 = 16, 64 channels where MobileNetV2 has 32), where only dense
  convolutions read it.

Each candidate is profiled under the chosen convention. Of those under the budget (and, where some are, no
more MAdds than the original), the default objective ``least-replaced`` keeps the most of the original network
(the fewest layers replaced, then the widest RNNPool, then the fewest MAdds): the paper's placements.
``madds`` / ``params`` pick the cheapest instead.
Optionally the final global pooling becomes a last-layer RNNPool (h1 = h2 = channels / 4).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..analysis import profile_model
from ..analysis.profile import format_bytes
from ..errors import InvalidInputError
from .surgery import Cut, SequentialTrunk, adapted_stage, network, widen_readers, with_last_rnnpool

DOWNSAMPLING = (4, 8)  # what one RNNPool layer replaces, measured from the stem's output (the paper's range)
OBJECTIVES = ("least-replaced", "madds", "params")
# layer / tensor: the analysis of any model; stream: the RAM of its int8 C program (models the C path expresses)
CONVENTIONS = ("layer", "tensor", "stream")
WIDTHS = (1, 2)  # 4 * h2 = width x the channels at the cut


@dataclass
class Candidate:
    """One way to place RNNPool: the layers ``replaced`` by an RNNPool stage, and what that costs."""

    cut: int  # position of the cut (an index into the trunk, or into the traced graph's nodes)
    replaced: str  # the layers replaced (those after the stem, up to the cut), e.g. "features.1-features.6"
    patch: int
    stride: int
    hidden_row: int
    hidden_summary: int
    adapter: bool  # a 1x1 conv maps 4 * hidden_summary channels to the cut's
    output: Tuple[int, int, int]  # the map the cut expects (C, H, W)
    widened: List[str] = field(default_factory=list)  # convs after the cut made to read 4 * hidden_summary channels
    last_pool: bool = False  # the final global pooling is a last-layer RNNPool
    peak_bytes: int = 0
    peak_layer: str = ""
    madds: int = 0
    params: int = 0
    fits: bool = False

    @property
    def channels(self) -> int:
        """The RNNPool stage's output channels."""
        return self.output[0] if self.adapter else 4 * self.hidden_summary


@dataclass
class FitReport:
    """The original model's cost, every candidate's, the budget and the pick (an index into ``candidates``)."""

    model: str
    input: Tuple[int, ...]
    dtype: str
    convention: str
    ram_bytes: int
    objective: str
    original: Dict[str, Any]
    candidates: List[Candidate] = field(default_factory=list)
    chosen: Optional[int] = None

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        """A text table of the candidates, those under the budget marked, the pick starred."""
        o = self.original
        lines = [f"{self.model}  input {'x'.join(map(str, self.input))}  dtype {self.dtype}  convention '{self.convention}'  "
                 f"budget {format_bytes(self.ram_bytes)}",
                 f"original: peak {format_bytes(o['peak_bytes'])} at {o['peak_layer']}, MAdds {o['madds'] / 1e6:.1f} M, "
                 f"params {o['params']:,}",
                 f"  {'replaced':28s} {'RNNPool (patch/stride, h1, h2)':46s} {'output':>12s} {'peak RAM':>11s} {'vs orig':>8s} "
                 f"{'MAdds (M)':>10s} {'vs orig':>8s} {'params':>11s}  {'peak layer'}"]
        for i, c in enumerate(self.candidates):
            mark = "*" if i == self.chosen else ("+" if c.fits else " ")
            lines.append(f"{mark} {c.replaced:28s} {describe(c):46s} {'x'.join(map(str, (c.channels, *c.output[1:]))):>12s} "
                         f"{format_bytes(c.peak_bytes):>11s} {c.peak_bytes / o['peak_bytes']:7.2f}x {c.madds / 1e6:10.1f} "
                         f"{c.madds / max(o['madds'], 1):7.2f}x {c.params:11,d}  {c.peak_layer}")
        if self.chosen is not None:
            c = self.candidates[self.chosen]
            why = {"least-replaced": "the fewest layers replaced, then the widest RNNPool, then the fewest MAdds (preferring "
                                     "no more MAdds than the original),"}.get(
                self.objective, f"the fewest {self.objective}")
            lines.append(f"picked (*): {c.replaced} -> RNNPool {c.patch}/{c.stride}: peak {format_bytes(c.peak_bytes)} "
                         f"<= {format_bytes(self.ram_bytes)}, {why} of the {sum(x.fits for x in self.candidates)} that fit (+)")
        elif self.candidates:
            best = min(self.candidates, key=lambda x: x.peak_bytes)
            lines.append(f"none fits {format_bytes(self.ram_bytes)}: the smallest peak is {format_bytes(best.peak_bytes)} "
                         f"({best.replaced} -> RNNPool {best.patch}/{best.stride}), at {best.peak_layer}")
        else:
            lines.append("no cut point: the network never downsamples 4x or 8x after its stem with a single map flowing on")
        return "\n".join(lines)


def describe(c: Candidate) -> str:
    """'6/4, 16, 16 (+ 1x1 adapter | 1 conv widened)'."""
    text = f"{c.patch}/{c.stride}, {c.hidden_row}, {c.hidden_summary}"
    if c.adapter:
        text += " + 1x1 adapter"
    if c.widened:
        text += f" + {len(c.widened)} conv{'s' if len(c.widened) > 1 else ''} widened"
    return text + (" + last RNNPool" if c.last_pool else "")


def _configs(cut: Cut, downsampling: Sequence[int]) -> List[Dict[str, Any]]:
    """RNNPool settings that turn the stem's map into the cut's: the paper's patch rules, hidden sizes from the
    cut's channels (x1, or x2 with the cut's readers widened)."""
    (channels_in, h, w), (c, hc, wc) = cut.stem, cut.shape
    if hc == 0 or wc == 0 or h % hc or w % wc or h // hc != w // wc or h // hc not in downsampling:
        return []
    stride = h // hc
    out = []
    for patch in sorted({stride + 2, 2 * stride}):
        for width in WIDTHS:
            if width > 1 and not cut.readers:
                continue
            hidden = -(-width * c // 4)
            out.append({"patch": patch, "stride": stride, "padding": (patch - stride) // 2, "hidden": hidden,
                        "adapter": width == 1 and 4 * hidden != c, "widened": list(cut.readers) if width > 1 else [],
                        "channels_in": channels_in, "channels_out": c if width == 1 else 4 * hidden})
    return out


def _build(front, cut: Cut, config: Dict[str, Any], input_shape: Sequence[int], last_pool: bool) -> nn.Module:
    stage = adapted_stage(config["channels_in"], config["patch"], config["stride"], config["padding"], config["hidden"],
                          config["channels_out"])
    fitted = front.build(cut, stage)
    widen_readers(fitted, config["widened"], 4 * config["hidden"])
    if last_pool:
        leaves = (front.path,) if isinstance(front, SequentialTrunk) and front.path else ()
        fitted = with_last_rnnpool(fitted, input_shape, leaves)
    return fitted


def _preference(objective: str, c: Candidate) -> Tuple:
    if objective == "least-replaced":
        return c.cut, -c.channels, c.madds, c.peak_bytes
    return getattr(c, objective), c.peak_bytes


def fit_model(model: nn.Module, input_shape: Sequence[int], ram_bytes: int, dtype: str = "int8", convention: str = "layer",
              objective: str = "least-replaced", name: Optional[str] = None, downsampling: Sequence[int] = DOWNSAMPLING,
              last_pool: bool = False) -> Tuple[Optional[nn.Module], FitReport]:
    """Place RNNPool in ``model`` so that its peak RAM (``convention``, ``dtype``) is at most ``ram_bytes``.

    ``convention``: "layer" or "tensor" (:mod:`rnnpool.analysis.memory`, any model), or "stream" (int8 only:
    the RAM ``rnnpool export c``'s program claims, for models its C path expresses; others are refused
    naming the layer it cannot).

    ``downsampling``: the RNNPool strides to consider (of 4 and 8; the paper's models use 4, which replaces
    fewer layers than 8 and keeps more accuracy). ``objective``: how to pick among the candidates that fit
    (``least-replaced``, ``madds`` or ``params``). ``last_pool``: also replace the final global pooling with
    a last-layer RNNPool.

    Returns the fitted model (None when no candidate fits; the report then says the smallest peak reached)
    and a :class:`FitReport` of every candidate. The fitted model is untrained where RNNPool replaced layers
    (and in widened convolutions): train it, or fine-tune it by distillation from the original. Models
    without an ``nn.Sequential`` trunk come back as a ``torch.fx.GraphModule``.
    """
    if objective not in OBJECTIVES:
        raise InvalidInputError(f"unknown objective {objective!r}; expected one of {', '.join(OBJECTIVES)}")
    if convention not in CONVENTIONS:
        raise InvalidInputError(f"rnnpool fit compares models under the {', '.join(map(repr, CONVENTIONS))} convention, "
                                f"not {convention!r}")
    if convention == "stream" and dtype != "int8":
        raise InvalidInputError(f"the stream convention is the deployed int8 program's RAM: use dtype int8, not {dtype}")
    if ram_bytes <= 0:
        raise InvalidInputError(f"the RAM budget must be positive, got {ram_bytes} B")
    if not downsampling or any(d not in DOWNSAMPLING for d in downsampling):
        raise InvalidInputError(f"downsampling must be some of {DOWNSAMPLING}, got {tuple(downsampling)}")
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) <= 0:
        raise InvalidInputError(f"input shape must be (C, H, W) with positive sizes, got {tuple(input_shape)}")
    front = network(model, shape)
    original = profile_model(model, shape, dtype, convention, name=name)
    report = FitReport(name or type(model).__name__, shape, dtype, convention, ram_bytes, objective,
                       {"peak_bytes": original.peak_bytes, "peak_layer": original.peak_layer, "madds": original.madds,
                        "params": original.params})
    plans: List[Tuple[Cut, Dict[str, Any]]] = []  # the candidates' settings (the pick is rebuilt: no copy of every model is kept)
    for cut in front.cuts():
        for config in _configs(cut, downsampling):
            profile = profile_model(_build(front, cut, config, shape, last_pool), shape, dtype, convention, name=name)
            report.candidates.append(Candidate(cut.position, cut.replaced, config["patch"], config["stride"], config["hidden"],
                                               config["hidden"], config["adapter"], cut.shape, config["widened"], last_pool,
                                               profile.peak_bytes, profile.peak_layer, profile.madds, profile.params,
                                               profile.peak_bytes <= ram_bytes))
            plans.append((cut, config))
    fitting = [i for i, c in enumerate(report.candidates) if c.fits]
    if not fitting:
        return None, report
    if objective == "least-replaced":  # a fitted model should not compute more than the original: where some do not, pick among them
        fitting = [i for i in fitting if report.candidates[i].madds <= original.madds] or fitting
    report.chosen = min(fitting, key=lambda i: _preference(objective, report.candidates[i]))
    return _build(front, *plans[report.chosen], shape, last_pool), report


def save_fitted(model: nn.Module, report: FitReport, path: str) -> None:
    """Write the fitted model as a checkpoint that carries its own architecture (the pickled module), its input
    shape and the search report: ``create_model(path)`` (so ``rnnpool profile PATH``) takes it like a zoo name."""
    torch.save({"fitted_model": model, "input_shape": list(report.input), "fit": report.to_dict()}, path)


__all__ = ["Candidate", "FitReport", "describe", "fit_model", "save_fitted"]
