"""Peak activation RAM of a recorded model under two named conventions.

``layer`` (the RNNPool paper's, from the Visual Wake Words benchmark): layer-by-layer execution without
recomputation; a layer holds its input + output; elementwise layers (BN, activations) run in place; a 1x1
conv feeding a depthwise conv or a pooling layer is computed on the fly, channel by channel (so is zero
padding, written straight into a padded buffer); blocks hold:
MBConv (inverted residual) input + output, residual block max(input, output), dense block its concatenated
output, inception block input + its three smallest branch outputs. RNNPool runs patch by patch: it holds
its output + one patch, and everything before the first RNNPool that feeds it (the camera image, a stem
conv) is computed per band on the fly, so those maps are never held.

``tensor`` (TFLM / MCUNet style): every tensor lives from the op that produces it to its last consumer;
the peak is the largest live set over the execution order; no on-the-fly computation.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Set, Tuple

from torch import nn

from ..nn import RNNPool2d
from .trace import Op, Trace
from ..errors import InvalidInputError

CONVENTIONS = ("layer", "tensor")

ELEMENTWISE_OPS = {"batch_norm", "relu", "relu_", "relu6", "hardtanh", "hardtanh_", "sigmoid", "silu", "hardswish",
                   "gelu", "dropout", "leaky_relu", "elu", "tanh"}
# Done in place: elementwise ops, and zero padding (the producer writes into the padded buffer).
INPLACE_OPS = ELEMENTWISE_OPS | {"pad", "_pad", "constant_pad_nd"}
POOL_OPS = {"avg_pool2d", "adaptive_avg_pool2d", "max_pool2d", "adaptive_max_pool2d"}


def _torchvision_rules() -> Dict[type, str]:
    """torchvision's blocks, which cannot declare a ``memory_rule`` themselves."""
    # modules, not the same-named model functions that torchvision.models exports
    densenet, googlenet, inception, mobilenetv2, resnet = (
        importlib.import_module(f"torchvision.models.{m}") for m in ("densenet", "googlenet", "inception", "mobilenetv2", "resnet"))

    rules = {mobilenetv2.InvertedResidual: "mbconv", densenet._DenseBlock: "dense", resnet.BasicBlock: "residual",
             resnet.Bottleneck: "residual", googlenet.Inception: "inception"}
    for name in ("InceptionA", "InceptionB", "InceptionC", "InceptionD", "InceptionE"):
        rules[getattr(inception, name)] = "inception"
    return rules


BLOCK_RULES: Dict[type, str] = {}


BLOCK_KINDS = ("mbconv", "residual", "dense", "inception")


def register_block_rule(module_type: type, rule: str) -> None:
    """Treat modules of ``module_type`` (a class you cannot edit) as one block under the ``layer`` convention.

    ``rule`` is "mbconv" (input + output), "residual" (max(input, output)), "dense" (output) or
    "inception" (input + three smallest branch outputs). A class of your own can say it itself, with a class
    attribute ``memory_rule = "mbconv"`` (as rnnpool's blocks do).
    """
    if rule not in BLOCK_KINDS:
        raise InvalidInputError(f"unknown block rule {rule!r}")
    BLOCK_RULES[module_type] = rule


@dataclass
class Unit:
    """Ops executed as one layer or block, and what it holds (bytes) under the convention."""

    name: str
    kind: str
    ops: List[Op]
    held_bytes: int = 0
    module: Optional[nn.Module] = None
    physical_bytes: Optional[int] = None  # residual blocks: what is live together inside, beside the paper's count


def _group_units(trace: Trace, blocks: bool) -> List[Unit]:
    """Consecutive ops of the same block (outermost block module: one with a ``memory_rule`` class attribute,
    or a registered type) or leaf module form a unit."""
    rules = {**_torchvision_rules(), **BLOCK_RULES} if blocks else {}
    units: List[Unit] = []
    for op in trace.ops:
        key, kind, module = None, "op", op.module
        for path, mod in op.stack:
            rule = (getattr(type(mod), "memory_rule", None) or rules.get(type(mod))) if blocks else None
            if rule is not None:
                if rule not in BLOCK_KINDS:
                    raise InvalidInputError(f"{type(mod).__name__}.memory_rule is {rule!r}; expected one of {', '.join(BLOCK_KINDS)}")
                key, kind, module = path, rule, mod
                break
        if key is None:
            if op.module is not None:
                key, kind = op.path, "rnnpool" if isinstance(op.module, RNNPool2d) else "layer"
            elif op.stack and not list(op.stack[-1][1].children()):
                key, kind, module = op.path, "layer", op.stack[-1][1]
            else:
                key = f"{op.path}.{op.name}" if op.path else op.name
        if units and units[-1].name == key and units[-1].kind == kind:
            units[-1].ops.append(op)
        else:
            units.append(Unit(key, kind, [op], module=module))
    return units


def _producers(trace: Trace) -> Dict[int, Op]:
    made: Dict[int, Op] = {}
    for op in trace.ops:
        for sid in op.outputs:
            if sid not in op.inputs:
                made.setdefault(sid, op)
    return made


def _streamed(trace: Trace, made: Dict[int, Op], units: List[Unit]) -> Set[int]:
    """Storages computed band by band for the first RNNPool: the network input and all that feeds it,
    except a map that is still needed once the RNNPool has run (a later consumer, or a network output),
    which is held whole. Only for a stem, as in the paper (plain layers: convolutions, norms, activations,
    pools): where a block (inverted residual, residual, dense, inception) runs before the first RNNPool
    (e.g. RNNPool as the last pool), the layers before it are a network's body, which cannot run patch by
    patch without recomputing most of it, so nothing is streamed."""
    first = next((op for op in trace.ops if isinstance(op.module, RNNPool2d)), None)
    if first is None:
        return set()
    if any(unit.kind in BLOCK_KINDS and unit.ops[0].index < first.index for unit in units):
        return set()
    last_use: Dict[int, int] = {}
    for op in trace.ops:
        for sid in op.inputs:
            last_use[sid] = op.index
    streamed, todo = set(), list(trace.inputs) + list(first.inputs)
    while todo:
        sid = todo.pop()
        if sid in streamed:
            continue
        if last_use.get(sid, -1) <= first.index and sid not in trace.outputs:
            streamed.add(sid)
        if sid in made:
            todo.extend(made[sid].inputs)
    return streamed


def _on_the_fly(trace: Trace, made: Dict[int, Op]) -> Dict[int, List[int]]:
    """1x1-conv outputs consumed only by a depthwise conv or a pool (through elementwise ops): storage -> source."""
    consumers: Dict[int, List[Op]] = {}
    for op in trace.ops:
        for sid in op.inputs:
            consumers.setdefault(sid, []).append(op)
    virtual: Dict[int, List[int]] = {}
    for op in trace.ops:
        if op.name != "conv2d" or tuple(op.args[1].shape[2:]) != (1, 1) or (len(op.args) > 6 and op.args[6] != 1):
            continue
        chain, sid = [op.outputs[0]], op.outputs[0]
        while True:
            users = [u for u in consumers.get(sid, []) if not (u.alias and u.name in ELEMENTWISE_OPS)]  # skip in-place
            if len(users) != 1 or users[0].name not in ELEMENTWISE_OPS:
                break
            sid = users[0].outputs[0]
            chain.append(sid)
        depthwise = len(users) == 1 and users[0].name == "conv2d" and len(users[0].args) > 6 and users[0].args[6] > 1 \
            and users[0].args[6] == users[0].args[1].shape[0]
        if depthwise or (len(users) == 1 and users[0].name in POOL_OPS):
            for c in chain:
                virtual[c] = list(op.inputs)
    return virtual


def _unit_io(unit: Unit, trace: Trace, consumers_after: Dict[int, int]) -> Tuple[List[int], List[int]]:
    inside_made = {sid for op in unit.ops for sid in op.outputs if sid not in op.inputs}
    ins = list(dict.fromkeys(sid for op in unit.ops for sid in op.inputs if sid not in inside_made))
    last = unit.ops[-1].index
    outs = [sid for sid in dict.fromkeys(s for op in unit.ops for s in op.outputs)
            if consumers_after.get(sid, -1) > last or sid in trace.outputs]
    return ins, outs or list(unit.ops[-1].outputs)


def _live_inside(unit: Unit, ins: List[int], outs: List[int], size: Callable[[List[int]], int]) -> int:
    """The most bytes live together while a block runs: its inputs until their last use inside (a skip input
    until the add), each inner map from its producer to its last use, elementwise ops in place."""
    root: Dict[int, int] = {}

    def canonical(sid: int) -> int:
        while sid in root:
            sid = root[sid]
        return sid

    for op in unit.ops:
        if (op.alias or op.name in INPLACE_OPS) and op.inputs:
            for sid in op.outputs:
                if sid not in op.inputs:
                    root[sid] = canonical(op.inputs[0])
    first, last = unit.ops[0].index, unit.ops[-1].index
    born = {canonical(sid): first - 1 for sid in ins}
    death: Dict[int, int] = {}
    for op in unit.ops:
        for sid in op.outputs:
            born.setdefault(canonical(sid), op.index)
        for sid in op.inputs + op.outputs:
            death[canonical(sid)] = max(death.get(canonical(sid), op.index), op.index)
    for sid in outs:
        death[canonical(sid)] = last
    return max(size([sid for sid in born if born[sid] <= op.index <= death[sid]]) for op in unit.ops)


def layer_convention(trace: Trace, elem_bytes: int) -> List[Unit]:
    """Units with ``held_bytes`` under the ``layer`` convention."""
    made = _producers(trace)
    units = _group_units(trace, blocks=True)
    streamed = _streamed(trace, made, units)
    virtual = _on_the_fly(trace, made)
    last_use: Dict[int, int] = {}
    for op in trace.ops:
        for sid in op.inputs:
            last_use[sid] = op.index

    def size(*groups: List[int]) -> int:
        """Bytes of the storages in ``groups`` (each counted once), on-the-fly ones replaced by their source."""
        resolved: List[int] = []
        for sid in (s for group in groups for s in group):
            resolved.extend(virtual.get(sid, [sid]))
        return sum(trace.numel[s] for s in dict.fromkeys(resolved) if s not in streamed and s not in virtual) * elem_bytes

    for unit in units:
        ins, outs = _unit_io(unit, trace, last_use)
        if unit.kind == "residual":
            unit.held_bytes = max(size(ins), size(outs))  # the paper's approximation
            unit.physical_bytes = max(unit.held_bytes, _live_inside(unit, ins, outs, size))
        elif unit.kind == "dense":
            unit.held_bytes = size(outs)
        elif unit.kind == "inception":
            cat = [op for op in unit.ops if op.name == "cat"][-1]
            branches = sorted(trace.numel[s] for s in cat.inputs)[:3]
            unit.held_bytes = size(ins) + sum(branches) * elem_bytes
        elif unit.kind == "rnnpool":
            layer = unit.ops[0].module
            patch = layer.in_channels * layer.patch_size[0] * layer.patch_size[1] * elem_bytes
            unit.held_bytes = size(ins, outs) + patch
        elif all(op.alias or op.name in INPLACE_OPS for op in unit.ops):
            unit.held_bytes = max(size(ins), size(outs))  # in place
        else:
            unit.held_bytes = size(ins, outs)
    return units


def tensor_convention(trace: Trace, elem_bytes: int) -> List[Unit]:
    """Units (one per op) with ``held_bytes`` = bytes live while the op runs, producer to last consumer."""
    made = _producers(trace)
    born = {sid: op.index for sid, op in made.items()}
    for sid in trace.inputs:
        born[sid] = -1
    death: Dict[int, int] = {sid: born[sid] for sid in born}
    for op in trace.ops:
        for sid in op.inputs + op.outputs:
            death[sid] = max(death.get(sid, op.index), op.index)
    end = len(trace.ops)
    for sid in trace.outputs:
        death[sid] = end
    # difference array over positions op.index + 1 (position 0 is the network input): a storage is live
    # from born + 1 through death + 1
    events = [0] * (end + 2)
    for sid, b in born.items():
        events[b + 1] += trace.numel[sid]
        events[min(death[sid] + 2, end + 1)] -= trace.numel[sid]
    live, running = [], 0
    for i in range(end + 1):
        running += events[i]
        live.append(running)
    units = _group_units(trace, blocks=False)
    for unit in units:
        unit.held_bytes = max(live[op.index + 1] for op in unit.ops) * elem_bytes
    return units


def peak(units: List[Unit]) -> Unit:
    """The unit holding the most bytes (the first such, in execution order)."""
    return max(units, key=lambda u: u.held_bytes)


__all__ = ["CONVENTIONS", "Unit", "layer_convention", "peak", "register_block_rule", "tensor_convention"]
