"""Record what a model does on one input: every tensor op, in execution order, with its module stack.

A ``TorchFunctionMode`` sees each torch call (``F.conv2d``, ``x + y``, ``torch.cat``, views...) and module
hooks keep the stack of modules it runs in. Unlike ``torch.fx`` tracing this runs the real forward, so
data-dependent control flow and any output structure are fine. Some modules are recorded as one opaque op
(RNNPool2d and PyTorch's RNNs): their inside is an implementation detail, their cost a formula.
Tensors are identified by their storage, so views and in-place results are recognised as aliases.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from ..nn import RNNPool2d

OPAQUE_MODULES: Tuple[type, ...] = (RNNPool2d, nn.GRU, nn.LSTM, nn.RNN)


@dataclass
class Op:
    """One recorded call. ``inputs``/``outputs`` are storage ids of activation tensors (no parameters)."""

    index: int
    name: str
    stack: Tuple[Tuple[str, nn.Module], ...]  # (path, module), outermost first
    inputs: List[int]
    outputs: List[int]
    output_shapes: List[Tuple[int, ...]]
    alias: bool  # every output shares storage with an input (view or in-place op)
    args: Tuple[Any, ...] = ()
    module: Optional[nn.Module] = None  # the module of an opaque op

    @property
    def path(self) -> str:
        return self.stack[-1][0] if self.stack else ""


@dataclass
class Trace:
    """Ops in execution order; ``numel`` of each activation storage; the network's input/output storages."""

    ops: List[Op] = field(default_factory=list)
    numel: Dict[int, int] = field(default_factory=dict)
    inputs: List[int] = field(default_factory=list)
    outputs: List[int] = field(default_factory=list)


def _tensors(obj: Any) -> List[torch.Tensor]:
    return [t for t in tree_leaves(obj) if isinstance(t, torch.Tensor)]


class _Recorder(TorchFunctionMode):
    def __init__(self, tracer: "_Tracer") -> None:
        super().__init__()
        self.tracer = tracer

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self.tracer.opaque_depth == 0 and not self.tracer.paused:
            self.tracer.record(getattr(func, "__name__", str(func)), args, kwargs or {}, out)
        return out


class _Tracer:
    def __init__(self, model: nn.Module) -> None:
        self.trace = Trace()
        self.params = {p.untyped_storage().data_ptr() for p in list(model.parameters()) + list(model.buffers())}
        self.keep: List[torch.Tensor] = []  # holds every seen tensor so storage addresses are not reused
        self.stack: List[Tuple[str, nn.Module]] = []
        self.opaque_depth = 0
        self.paused = False

    def sid(self, t: torch.Tensor) -> Optional[int]:
        if t.numel() == 0:
            return None
        ptr = t.untyped_storage().data_ptr()
        if ptr in self.params:
            return None
        self.keep.append(t)
        self.trace.numel.setdefault(ptr, t.untyped_storage().nbytes() // t.element_size())
        return ptr

    def record(self, name: str, args: Any, kwargs: Dict[str, Any], out: Any, module: Optional[nn.Module] = None) -> None:
        outs = _tensors(out)
        if not outs:
            return
        ins = [s for s in (self.sid(t) for t in _tensors((args, kwargs))) if s is not None]
        out_ids = [s for s in (self.sid(t) for t in outs) if s is not None]
        if not out_ids:
            return
        ops = self.trace.ops
        ops.append(Op(len(ops), name, tuple(self.stack), list(dict.fromkeys(ins)), out_ids, [tuple(t.shape) for t in outs],
                      alias=all(o in ins for o in out_ids), args=tuple(args) + tuple(kwargs.values()), module=module))

    def pre_hook(self, path: str):
        def hook(module: nn.Module, args: Tuple[Any, ...]) -> None:
            self.stack.append((path, module))
            if isinstance(module, OPAQUE_MODULES):
                self.opaque_depth += 1
        return hook

    def post_hook(self, path: str):
        def hook(module: nn.Module, args: Tuple[Any, ...], out: Any) -> None:
            self.paused = True
            try:
                if isinstance(module, OPAQUE_MODULES):
                    self.opaque_depth -= 1
                    if self.opaque_depth == 0:
                        self.record(type(module).__name__, args, {}, out, module=module)
                self.stack.pop()
            finally:
                self.paused = False
        return hook


def trace_model(model: nn.Module, example: torch.Tensor) -> Trace:
    """Run ``model`` on ``example`` (no grad, eval mode restored afterwards) and record its ops."""
    tracer = _Tracer(model)
    handles = []
    for path, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(tracer.pre_hook(path or type(model).__name__)))
        handles.append(module.register_forward_hook(tracer.post_hook(path or type(model).__name__)))
    was_training = model.training
    model.eval()
    try:
        tracer.trace.inputs = [tracer.sid(example)]
        with torch.no_grad(), _Recorder(tracer):
            out = model(example)
        tracer.paused = True
        tracer.trace.outputs = [s for s in (tracer.sid(t) for t in _tensors(out)) if s is not None]
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return tracer.trace
