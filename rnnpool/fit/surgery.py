"""Where RNNPool can go in a network, and a copy of the network with it there: the module surgery of rnnpool fit.

Two front ends answer the same questions (the :class:`Cut` points after the stem, and the model with an
RNNPool stage in place of the layers between the stem and a cut):

- :class:`SequentialTrunk`: the model's ``features`` / ``layers`` (or the model itself) is an ``nn.Sequential``;
  cuts fall between its layers (torchvision's MobileNet, MNASNet, EfficientNet, DenseNet and VGG, rnnpool's zoo).
- :class:`TracedNetwork`: any model ``torch.fx`` can trace (ResNet style, layers in separate attributes); cuts
  fall where exactly one map is live, so never inside a residual block.

Both also say which convolutions read the map at a cut (``Cut.readers``): when only dense convolutions do,
they can be widened to take a wider RNNPool output (the paper's MobileNetV2-RNNPool feeds 64 channels where
MobileNetV2 has 32). :func:`with_last_rnnpool` replaces a model's final global pooling by RNNPool.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.nn import functional as F

from ..errors import UnsupportedError
from ..nn import RNNPool2d
from ..nn.blocks import ConvBNAct

Shape = Tuple[int, int, int]  # (C, H, W)
TRUNK_ATTRIBUTES = ("features", "layers")  # torchvision's names for a Sequential trunk (MNASNet: layers)
# layers that belong to the stem when they follow its first convolution (conv, BN, activation)
STEM_FOLLOWERS = (nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.Hardswish, nn.SiLU, nn.Identity)
STEM_FUNCTIONS = (F.relu, F.relu6, F.hardswish, F.silu, torch.relu)
GLOBAL_POOL_MODULES = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d, nn.MaxPool2d)
GLOBAL_POOL_FUNCTIONS = (F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.avg_pool2d, F.max_pool2d, torch.mean, torch.amax)
GLOBAL_POOL_METHODS = ("mean", "amax")
STAGE_NAME = "rnnpool_stage"  # the RNNPool stage's attribute in a traced network
LAST_POOL_NAME = "rnnpool_last_pool"


@dataclass
class Cut:
    """A point after the stem where one map flows on: the RNNPool stage reads ``stem`` and must produce ``shape``."""

    position: int  # order in the network: an earlier cut replaces fewer layers
    replaced: str  # the layers an RNNPool stage here replaces, e.g. "features.1-features.6" or "maxpool-layer2"
    stem: Shape  # the stem's output map
    shape: Shape  # the map at the cut
    readers: Optional[Tuple[str, ...]]  # paths, in the fitted model, of the dense convs that alone read the cut's map


class _Tracer(fx.Tracer):
    """torch.fx's tracer that keeps RNNPool2d (and the modules named in ``leaves``) whole."""

    def __init__(self, leaves: Sequence[str] = ()) -> None:
        super().__init__()
        self.leaves = set(leaves)

    def is_leaf_module(self, m: nn.Module, qualified_name: str) -> bool:
        return isinstance(m, RNNPool2d) or qualified_name in self.leaves or super().is_leaf_module(m, qualified_name)


def trace(model: nn.Module, leaves: Sequence[str] = ()) -> fx.GraphModule:
    """``model`` as a GraphModule (sharing its submodules); raises what torch.fx raises when it cannot trace."""
    return fx.GraphModule(model, _Tracer(leaves).trace(model))


def _node_shape(node: fx.Node) -> Tuple[int, ...]:
    """The output shape ShapeProp recorded for ``node`` (() for non-tensors)."""
    return tuple(getattr(node.meta.get("tensor_meta"), "shape", ()))


def _replace_with_module(graph_module: fx.GraphModule, replaced: fx.Node, name: str, module: nn.Module, source: fx.Node) -> None:
    """Make ``module`` (as ``name``) compute what ``replaced`` computed, from ``source``; drop the nodes and
    submodules nothing uses any more."""
    graph_module.add_submodule(name, module)
    with graph_module.graph.inserting_after(replaced):  # its users come after it; source comes before it
        new = graph_module.graph.call_module(name, (source,))
    replaced.replace_all_uses_with(new)
    graph_module.graph.eliminate_dead_code()
    graph_module.delete_all_unused_submodules()
    graph_module.graph.lint()
    graph_module.recompile()


def _dense_conv_readers(node: fx.Node, root: nn.Module) -> Optional[Tuple[str, ...]]:
    """The targets of the node's users when every user is a dense (groups=1) Conv2d module; else None."""
    targets = []
    for user in node.users:
        module = root.get_submodule(user.target) if user.op == "call_module" else None
        if not isinstance(module, nn.Conv2d) or module.groups != 1:
            return None
        targets.append(user.target)
    return tuple(targets) or None


def input_readers(module: nn.Module) -> Optional[Tuple[str, ...]]:
    """Paths inside ``module`` of the dense convolutions that read its input, when nothing else does (else None)."""
    if isinstance(module, nn.Conv2d):
        return ("",) if module.groups == 1 else None
    try:
        graph_module = trace(module)
    except Exception:  # torch.fx fails on arbitrary user code in many ways; then the input is not widened
        return None
    placeholders = [n for n in graph_module.graph.nodes if n.op == "placeholder"]
    return _dense_conv_readers(placeholders[0], graph_module) if len(placeholders) == 1 else None


def widen_readers(model: nn.Module, paths: Sequence[str], in_channels: int) -> None:
    """Replace each Conv2d at ``paths`` by a freshly initialised one that reads ``in_channels`` channels."""
    for path in paths:
        conv = model.get_submodule(path)
        wide = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                         bias=conv.bias is not None, padding_mode=conv.padding_mode, device=conv.weight.device,
                         dtype=conv.weight.dtype)
        model.set_submodule(path, wide)


def _probe(model: nn.Module, input_shape: Sequence[int]) -> torch.Tensor:
    param = next(model.parameters(), None)
    return torch.zeros((1, *input_shape), device=param.device if param is not None else "cpu",
                       dtype=param.dtype if param is not None and param.is_floating_point() else torch.float32)


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
                           f"nn.Sequential trunk ({' or '.join(f'`{a}`' for a in TRUNK_ATTRIBUTES)}, or the model itself)")


def stem_length(trunk: nn.Sequential) -> int:
    """How many trunk layers form the stem: the first, and the BatchNorm / activations right after it."""
    end = 1
    while end < len(trunk) and isinstance(trunk[end], STEM_FOLLOWERS):
        end += 1
    return end


def _span(first: str, last: str) -> str:
    return first if first == last else f"{first}-{last}"


class SequentialTrunk:
    """Cuts between the layers of the model's ``nn.Sequential`` trunk; the stem is its first layer (+ BN, act)."""

    def __init__(self, model: nn.Module, input_shape: Sequence[int]) -> None:
        self.model = model
        self.path, self.trunk = find_trunk(model)
        self.stem = stem_length(self.trunk)
        if len(self.trunk) < self.stem + 2:
            raise UnsupportedError(f"the trunk has {len(self.trunk)} layers ({self.stem} of them its stem): nothing to "
                                   "replace between the stem and a cut")
        self.shapes = self._shapes(input_shape)

    def _shapes(self, input_shape: Sequence[int]) -> List[Shape]:
        """The (C, H, W) output of every trunk layer."""
        shapes: List[Shape] = []
        hooks = [layer.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape[1:]))) for layer in self.trunk]
        try:
            with torch.no_grad():
                self.model.eval()(_probe(self.model, input_shape))
        finally:
            for h in hooks:
                h.remove()
        if len(shapes) != len(self.trunk) or any(len(s) != 3 for s in shapes):
            raise UnsupportedError("the trunk's layers must each run once and output (N, C, H, W) maps")
        return shapes

    def _name(self, index: int) -> str:
        return f"{self.path}.{index}" if self.path else str(index)

    def cuts(self) -> List[Cut]:
        out = []
        for cut in range(self.stem + 1, len(self.trunk)):
            if self.shapes[cut][1:] == self.shapes[cut - 1][1:]:
                continue  # the next layer still works at this resolution: cut after the last one that does
            inner = input_readers(self.trunk[cut])
            moved = self._name(self.stem + 1)  # where the cut's layer sits once the stage replaced the others
            readers = tuple(f"{moved}.{p}" if p else moved for p in inner) if inner else None
            out.append(Cut(cut, _span(self._name(self.stem), self._name(cut - 1)), self.shapes[self.stem - 1],
                           self.shapes[cut - 1], readers))
        return out

    def build(self, cut: Cut, stage: nn.Module) -> nn.Module:
        """A copy of the model whose trunk is its stem, ``stage``, then the trunk from the cut on."""
        fitted = copy.deepcopy(self.model)
        trunk = fitted.get_submodule(self.path) if self.path else fitted
        layers = list(trunk[:self.stem]) + [stage] + list(trunk[cut.position:])
        if not self.path:
            return nn.Sequential(*layers)
        setattr(fitted, self.path, nn.Sequential(*layers))
        return fitted


class TracedNetwork:
    """Cuts in the torch.fx graph of any traceable model: after the stem (the first convolution that reads the
    input, + BN, activation), at the nodes after which no other value is live."""

    def __init__(self, model: nn.Module, input_shape: Sequence[int], why_not_sequential: str = "") -> None:
        try:
            self.graph_module = trace(model)
        except Exception as err:  # torch.fx fails on arbitrary user code in many ways: say which and why
            raise UnsupportedError(f"{why_not_sequential + ', and ' if why_not_sequential else ''}torch.fx cannot trace "
                                   f"{type(model).__name__} ({type(err).__name__}: {err}); rnnpool fit needs one or the other") from None
        self.graph_module.eval()
        with torch.no_grad():
            ShapeProp(self.graph_module).propagate(_probe(model, input_shape))
        self.nodes = list(self.graph_module.graph.nodes)
        self.stem = self._stem_end()

    def _shape(self, node: fx.Node) -> Optional[Shape]:
        shape = _node_shape(node)
        return shape[1:] if len(shape) == 4 else None

    def _module(self, node: fx.Node) -> Optional[nn.Module]:
        return self.graph_module.get_submodule(node.target) if node.op == "call_module" else None

    def _single_live(self) -> List[int]:
        """Indices of the nodes after which their own output is the only live value."""
        index = {n: i for i, n in enumerate(self.nodes)}
        dies_at: Dict[int, int] = {}
        for n in self.nodes:
            if n.users:
                last = max(index[u] for u in n.users)
                dies_at[last] = dies_at.get(last, 0) + 1
        out, live = [], 0
        for i, n in enumerate(self.nodes):
            live += 1 if n.users else 0
            live -= dies_at.get(i, 0)
            if live == 1 and n.users and all(index[u] > i for u in n.users):
                out.append(i)
        return out

    def _stem_end(self) -> int:
        placeholders = [n for n in self.nodes if n.op == "placeholder"]
        first = next((i for i, n in enumerate(self.nodes) if isinstance(self._module(n), nn.Conv2d)
                      and n.args and n.args[0] is placeholders[0]), None) if len(placeholders) == 1 else None
        if first is None:
            raise UnsupportedError("no convolution reads the model's (single) input: rnnpool fit keeps the first "
                                   "convolution as the stem and places RNNPool after it")
        end = first
        while len(self.nodes[end].users) == 1:
            user = next(iter(self.nodes[end].users))
            follows = isinstance(self._module(user), STEM_FOLLOWERS) or (
                user.op == "call_function" and user.target in STEM_FUNCTIONS) or (user.op == "call_method" and user.target == "relu")
            if not follows:
                break
            end = self.nodes.index(user)
        return end

    def _top(self, node: fx.Node) -> str:
        return str(node.target).split(".")[0] if node.op == "call_module" else node.name

    def cuts(self) -> List[Cut]:
        stem_shape = self._shape(self.nodes[self.stem])
        last_at: Dict[Tuple[int, int], int] = {}  # the last single-live node at each resolution
        for i in self._single_live():
            shape = self._shape(self.nodes[i])
            if i > self.stem and shape is not None:
                last_at[shape[1:]] = i
        out = []
        for i in sorted(last_at.values()):
            replaced = [self._top(n) for n in self.nodes[self.stem + 1:i + 1] if n.op == "call_module"]
            if not replaced:
                continue
            out.append(Cut(i, _span(replaced[0], replaced[-1]), stem_shape, self._shape(self.nodes[i]),
                           _dense_conv_readers(self.nodes[i], self.graph_module)))
        return out

    def build(self, cut: Cut, stage: nn.Module) -> nn.Module:
        """A copy of the traced model whose graph runs ``stage`` on the stem's output in place of the nodes up to the cut."""
        fitted = copy.deepcopy(self.graph_module)
        nodes = {n.name: n for n in fitted.graph.nodes}
        _replace_with_module(fitted, nodes[self.nodes[cut.position].name], STAGE_NAME, stage, nodes[self.nodes[self.stem].name])
        return fitted


def network(model: nn.Module, input_shape: Sequence[int]):
    """The front end for ``model``: its nn.Sequential trunk if it has one, else its torch.fx graph."""
    try:
        find_trunk(model)
    except UnsupportedError as err:
        return TracedNetwork(model, input_shape, str(err))
    return SequentialTrunk(model, input_shape)


def _is_global(source: Sequence[int], result: Sequence[int]) -> bool:
    return len(source) == 4 and source[2] * source[3] > 1 and tuple(result) in ((source[0], source[1], 1, 1), (source[0], source[1]))


def last_rnnpool(channels: int, height: int, width: int, flatten: bool = False) -> nn.Module:
    """RNNPool over a whole (channels, height, width) map, h1 = h2 = channels / 4 (the paper's last-layer RNNPool)."""
    if channels % 4:
        raise UnsupportedError(f"the last-layer RNNPool outputs 4 * h2 channels: the final map's {channels} are not a multiple of 4")
    pool = RNNPool2d(channels, (height, width), (height, width), channels // 4, channels // 4)
    return nn.Sequential(pool, nn.Flatten(1)) if flatten else pool


def with_last_rnnpool(model: nn.Module, input_shape: Sequence[int], leaves: Sequence[str] = ()) -> nn.Module:
    """``model`` with its final global pooling replaced by a last-layer RNNPool over the whole final map.

    A pooling module is replaced in place (the model is returned); a pooling function or method
    (``F.adaptive_avg_pool2d``, ``x.mean([2, 3])``) is replaced in the model's torch.fx graph (a GraphModule is
    returned; ``leaves`` name submodules to keep whole, such as a trunk fx cannot trace)."""
    found: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]] = []
    hooks = [m.register_forward_hook(lambda m, i, o, name=name: found.append((name, tuple(i[0].shape), tuple(o.shape))))
             for name, m in model.named_modules() if isinstance(m, GLOBAL_POOL_MODULES)]
    try:
        with torch.no_grad():
            model.eval()(_probe(model, input_shape))
    finally:
        for h in hooks:
            h.remove()
    pools = [(name, source, result) for name, source, result in found if _is_global(source, result)]
    if pools:
        name, source, result = pools[-1]
        model.set_submodule(name, last_rnnpool(*source[1:], flatten=len(result) == 2))
        return model
    try:
        graph_module = trace(model, leaves)
    except Exception as err:  # see TracedNetwork
        raise UnsupportedError(f"{type(model).__name__} has no global pooling module, and torch.fx cannot trace it to find a "
                               f"pooling function ({type(err).__name__}: {err})") from None
    graph_module = copy.deepcopy(graph_module)
    with torch.no_grad():
        ShapeProp(graph_module.eval()).propagate(_probe(model, input_shape))
    pools = [n for n in graph_module.graph.nodes
             if ((n.op == "call_function" and n.target in GLOBAL_POOL_FUNCTIONS) or (n.op == "call_method" and n.target in GLOBAL_POOL_METHODS))
             and n.args and isinstance(n.args[0], fx.Node) and _is_global(_node_shape(n.args[0]), _node_shape(n))]
    if not pools:
        raise UnsupportedError(f"{type(model).__name__} has no final global pooling (a map of (N, C, H, W) pooled to "
                               "(N, C, 1, 1) or (N, C)) for a last-layer RNNPool to replace")
    node = pools[-1]
    pool = last_rnnpool(*_node_shape(node.args[0])[1:], flatten=len(_node_shape(node)) == 2)
    _replace_with_module(graph_module, node, LAST_POOL_NAME, pool, node.args[0])
    return graph_module


def adapted_stage(channels_in: int, patch: int, stride: int, padding: int, hidden: int, channels_out: int) -> nn.Module:
    """RNNPool2d (4 * hidden outputs), followed by a 1x1 conv adapter when ``channels_out`` differs."""
    pool = RNNPool2d(channels_in, patch, stride, hidden, hidden, padding=padding)
    return pool if 4 * hidden == channels_out else nn.Sequential(pool, ConvBNAct(4 * hidden, channels_out, 1))


__all__ = ["Cut", "SequentialTrunk", "TracedNetwork", "adapted_stage", "find_trunk", "input_readers", "last_rnnpool",
           "network", "stem_length", "trace", "widen_readers", "with_last_rnnpool"]
