"""Make a CNN fit a RAM budget by replacing its memory-hungry early layers with one RNNPool layer.

:func:`fit_model` records the model (the analysis of :mod:`rnnpool.analysis`), lists the cut points of its
trunk where the spatial size has dropped 4x or 8x from the stem's output, and builds a candidate for each:
the model's stem (its first trunk layer, with the BatchNorm and activation that follow it in a flat trunk) kept, the layers between the stem and the cut replaced by
``RNNPool2d`` with the paper's rules (stride = the downsampling, patch = stride + 2 or 2 x stride, padding so
the output is exactly the map the cut expects; 4 * hidden_summary = the channels at the cut, or a 1x1 conv
adapter when they are not a multiple of 4). Each candidate is profiled under the chosen convention; the
fitting one with the fewest MAdds (or parameters) is picked.

The trunk is the model's ``features`` (or ``layers``) when it is an ``nn.Sequential`` (torchvision's MobileNet,
MNASNet, EfficientNet, DenseNet and VGG, and rnnpool's own classifiers), or the model itself when it is one. Other
models (ResNet-style trunks spread over named attributes) are refused with the reason.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .analysis import profile_model
from .analysis.profile import format_bytes
from .errors import InvalidInputError, UnsupportedError
from .nn import RNNPool2d
from .nn.blocks import ConvBNAct

DOWNSAMPLING = (4, 8)  # what one RNNPool layer replaces, measured from the stem's output (the paper's range)
OBJECTIVES = ("madds", "params")
TRUNK_ATTRIBUTES = ("features", "layers")  # torchvision's names for a Sequential trunk (MNASNet: layers)
# layers that belong to the stem when they follow its first layer in a flat trunk (MNASNet: conv, BN, ReLU)
STEM_FOLLOWERS = (nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.Hardswish, nn.SiLU, nn.Identity)


@dataclass
class Candidate:
    """One way to place RNNPool: the trunk layers ``first..cut-1`` replaced, and what that costs."""

    cut: int  # index of the first trunk layer kept after the RNNPool
    replaced: str  # trunk layers replaced (those after the stem, before the cut), e.g. "features.1-features.6"
    patch: int
    stride: int
    hidden_row: int
    hidden_summary: int
    adapter: bool  # a 1x1 conv maps 4 * hidden_summary channels to the cut's
    output: Tuple[int, int, int]  # the RNNPool stage's output map (C, H, W)
    peak_bytes: int = 0
    peak_layer: str = ""
    madds: int = 0
    params: int = 0
    fits: bool = False


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
                 f"  {'replaced':28s} {'RNNPool (patch/stride, h1, h2)':32s} {'output':>12s} {'peak RAM':>11s} {'vs orig':>8s} "
                 f"{'MAdds (M)':>10s} {'vs orig':>8s} {'params':>11s}  {'peak layer'}"]
        for i, c in enumerate(self.candidates):
            mark = "*" if i == self.chosen else ("+" if c.fits else " ")
            config = f"{c.patch}/{c.stride}, {c.hidden_row}, {c.hidden_summary}" + (" + 1x1 adapter" if c.adapter else "")
            lines.append(f"{mark} {c.replaced:28s} {config:32s} {'x'.join(map(str, c.output)):>12s} {format_bytes(c.peak_bytes):>11s} "
                         f"{c.peak_bytes / o['peak_bytes']:7.2f}x {c.madds / 1e6:10.1f} {c.madds / max(o['madds'], 1):7.2f}x "
                         f"{c.params:11,d}  {c.peak_layer}")
        if self.chosen is not None:
            c = self.candidates[self.chosen]
            lines.append(f"picked (*): {c.replaced} -> RNNPool {c.patch}/{c.stride}: peak {format_bytes(c.peak_bytes)} "
                         f"<= {format_bytes(self.ram_bytes)}, fewest {self.objective} of the {sum(x.fits for x in self.candidates)} "
                         "that fit (+)")
        elif self.candidates:
            best = min(self.candidates, key=lambda x: x.peak_bytes)
            lines.append(f"none fits {format_bytes(self.ram_bytes)}: the smallest peak is {format_bytes(best.peak_bytes)} "
                         f"({best.replaced} -> RNNPool {best.patch}/{best.stride}), at {best.peak_layer}")
        else:
            lines.append("no cut point: the trunk never downsamples 4x or 8x after its stem")
        return "\n".join(lines)


def find_trunk(model: nn.Module) -> Tuple[str, nn.Sequential]:
    """(attribute path, module) of the ``nn.Sequential`` that holds the model's feature layers."""
    for attribute in TRUNK_ATTRIBUTES:
        trunk = getattr(model, attribute, None)
        if isinstance(trunk, nn.Sequential):
            return attribute, trunk
    if isinstance(model, nn.Sequential):
        return "", model
    children = ", ".join(name for name, _ in model.named_children())
    raise UnsupportedError(f"{type(model).__name__} keeps its layers in separate attributes ({children}), not in one "
                           f"nn.Sequential trunk ({' or '.join(f'`{a}`' for a in TRUNK_ATTRIBUTES)}, or the model itself): "
                           "rnnpool fit cuts only such trunks")


def _trunk_shapes(model: nn.Module, trunk: nn.Sequential, input_shape: Sequence[int]) -> List[Tuple[int, int, int]]:
    """The (C, H, W) output of every trunk layer on an input of ``input_shape``."""
    shapes: List[Tuple[int, int, int]] = []
    hooks = [layer.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape[1:]))) for layer in trunk]
    try:
        param = next(model.parameters(), None)
        with torch.no_grad():
            model.eval()(torch.zeros((1, *input_shape), device=param.device if param is not None else "cpu"))
    finally:
        for h in hooks:
            h.remove()
    if len(shapes) != len(trunk) or any(len(s) != 3 for s in shapes):
        raise UnsupportedError("the trunk's layers must each run once and output (N, C, H, W) maps")
    return shapes


def _configs(channels_in: int, stem: Tuple[int, int, int], cut: Tuple[int, int, int], downsampling: Sequence[int]) -> List[Dict[str, Any]]:
    """RNNPool settings that turn the stem's map into the cut's: the paper's patch rules, hidden sizes from the
    cut's channels."""
    (_, h, w), (c, hc, wc) = stem, cut
    if hc == 0 or wc == 0 or h % hc or w % wc or h // hc != w // wc or h // hc not in downsampling:
        return []
    stride = h // hc
    hidden = -(-c // 4)
    out = []
    for patch in sorted({stride + 2, 2 * stride}):
        padding = (patch - stride) // 2
        out.append({"patch": patch, "stride": stride, "padding": padding, "hidden": hidden, "adapter": 4 * hidden != c,
                    "channels_in": channels_in, "channels_out": c})
    return out


def _rnnpool_stage(config: Dict[str, Any]) -> nn.Module:
    pool = RNNPool2d(config["channels_in"], config["patch"], config["stride"], config["hidden"], config["hidden"],
                     padding=config["padding"])
    if not config["adapter"]:
        return pool
    return nn.Sequential(pool, ConvBNAct(4 * config["hidden"], config["channels_out"], 1))


def stem_length(trunk: nn.Sequential) -> int:
    """How many trunk layers form the stem: the first, and the BatchNorm / activations right after it."""
    end = 1
    while end < len(trunk) and isinstance(trunk[end], STEM_FOLLOWERS):
        end += 1
    return end


def _with_rnnpool(model: nn.Module, trunk_path: str, stem: int, cut: int, config: Dict[str, Any]) -> nn.Module:
    """A copy of ``model`` whose trunk is its stem, the RNNPool stage, then the trunk from ``cut`` on."""
    fitted = copy.deepcopy(model)
    trunk = fitted.get_submodule(trunk_path) if trunk_path else fitted
    layers = list(trunk[:stem]) + [_rnnpool_stage(config)] + list(trunk[cut:])
    if not trunk_path:
        return nn.Sequential(*layers)
    setattr(fitted, trunk_path, nn.Sequential(*layers))
    return fitted


def fit_model(model: nn.Module, input_shape: Sequence[int], ram_bytes: int, dtype: str = "int8", convention: str = "layer",
              objective: str = "madds", name: Optional[str] = None,
              downsampling: Sequence[int] = DOWNSAMPLING) -> Tuple[Optional[nn.Module], FitReport]:
    """Place RNNPool in ``model`` so that its peak RAM (``convention``, ``dtype``) is at most ``ram_bytes``.

    ``downsampling``: the RNNPool strides to consider (of 4 and 8; the paper's models use 4, which replaces
    fewer layers than 8 and keeps more accuracy).

    Returns the fitted model (None when no candidate fits; the report then says the smallest peak reached)
    and a :class:`FitReport` of every candidate. The fitted model is untrained where RNNPool replaced layers:
    train it, or fine-tune it by distillation from the original.
    """
    if objective not in OBJECTIVES:
        raise InvalidInputError(f"unknown objective {objective!r}; expected one of {', '.join(OBJECTIVES)}")
    if convention not in ("layer", "tensor"):
        raise InvalidInputError(f"rnnpool fit compares models under the 'layer' or 'tensor' convention, not {convention!r}")
    if ram_bytes <= 0:
        raise InvalidInputError(f"the RAM budget must be positive, got {ram_bytes} B")
    if not downsampling or any(d not in DOWNSAMPLING for d in downsampling):
        raise InvalidInputError(f"downsampling must be some of {DOWNSAMPLING}, got {tuple(downsampling)}")
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) <= 0:
        raise InvalidInputError(f"input shape must be (C, H, W) with positive sizes, got {tuple(input_shape)}")
    trunk_path, trunk = find_trunk(model)
    stem = stem_length(trunk)
    if len(trunk) < stem + 2:
        raise UnsupportedError(f"the trunk has {len(trunk)} layers ({stem} of them its stem): nothing to replace between "
                               "the stem and a cut")
    shapes = _trunk_shapes(model, trunk, shape)
    original = profile_model(model, shape, dtype, convention, name=name)
    report = FitReport(name or type(model).__name__, shape, dtype, convention, ram_bytes, objective,
                       {"peak_bytes": original.peak_bytes, "peak_layer": original.peak_layer, "madds": original.madds,
                        "params": original.params})
    prefix = f"{trunk_path}." if trunk_path else ""
    configs: List[Dict[str, Any]] = []  # the candidates' settings (the pick is rebuilt: no copy of every model is kept)
    for cut in range(stem + 1, len(trunk)):
        if shapes[cut][1:] == shapes[cut - 1][1:]:
            continue  # the next layer still works at this resolution: cut after the last one that does
        for config in _configs(shapes[stem - 1][0], shapes[stem - 1], shapes[cut - 1], downsampling):
            fitted = _with_rnnpool(model, trunk_path, stem, cut, config)
            profile = profile_model(fitted, shape, dtype, convention, name=name)
            replaced = f"{prefix}{stem}-{prefix}{cut - 1}" if cut > stem + 1 else f"{prefix}{stem}"
            report.candidates.append(Candidate(cut, replaced, config["patch"], config["stride"], config["hidden"], config["hidden"],
                                               config["adapter"], shapes[cut - 1], profile.peak_bytes, profile.peak_layer,
                                               profile.madds, profile.params, profile.peak_bytes <= ram_bytes))
            configs.append(config)
    fitting = [i for i, c in enumerate(report.candidates) if c.fits]
    if not fitting:
        return None, report
    report.chosen = min(fitting, key=lambda i: (getattr(report.candidates[i], objective), report.candidates[i].peak_bytes))
    return _with_rnnpool(model, trunk_path, stem, report.candidates[report.chosen].cut, configs[report.chosen]), report


def save_fitted(model: nn.Module, report: FitReport, path: str) -> None:
    """Write the fitted model as a checkpoint that carries its own architecture (the pickled module), its input
    shape and the search report: ``create_model(path)`` (so ``rnnpool profile PATH``) takes it like a zoo name."""
    torch.save({"fitted_model": model, "input_shape": list(report.input), "fit": report.to_dict()}, path)


__all__ = ["Candidate", "FitReport", "find_trunk", "fit_model", "save_fitted", "stem_length"]
