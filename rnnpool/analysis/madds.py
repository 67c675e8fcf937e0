"""Multiply-adds (MAdds) of recorded ops. BN is taken as folded into the conv before it (0), activations,
pooling, additions and data movement as 0; convs, linears, matmuls and recurrent cells are counted.
Ops that cost arithmetic but have no rule here are reported by name, never silently taken as 0."""
from __future__ import annotations

import math
from typing import Optional

from torch import nn

from ..nn import RNNPool2d
from .trace import Op

# Ops whose arithmetic is not counted by convention (BN folded, activations/pooling/adds free) or that move data.
FREE_OPS = {
    "batch_norm", "relu", "relu_", "relu6", "hardtanh", "hardtanh_", "sigmoid", "tanh", "silu", "hardswish", "gelu",
    "leaky_relu", "elu", "dropout", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d",
    "__add__", "__iadd__", "__radd__", "add", "add_", "__sub__", "sub", "__mul__", "mul", "__rmul__", "__truediv__",
    "cat", "stack", "flatten", "reshape", "view", "permute", "transpose", "contiguous", "__getitem__", "pad",
    "amax", "max", "mean", "chunk", "split", "squeeze", "unsqueeze", "clone", "softmax", "log_softmax", "clamp",
    "interpolate", "_pad", "narrow", "select", "unbind", "expand", "t", "size", "flip", "zeros", "ones", "to",
    "float", "type_as", "detach", "zeros_like", "sum", "__setitem__", "dim",
}


def rnnpool_madds(layer: RNNPool2d, output_shape) -> int:
    """RNNPool cost per patch (Algorithm 1): RNN1 steps over r rows of c pixels and c columns of r pixels,
    RNN2 steps forward and reversed over r row and c column summaries; times N * H' * W' patches."""
    r, c = layer.patch_size
    n, _, out_h, out_w = output_shape
    per_patch = 2 * r * c * layer.rnn1.madds_per_step() + 2 * (r + c) * layer.rnn2.madds_per_step()
    return n * out_h * out_w * per_patch


def torch_rnn_madds(module: nn.RNNBase, input_shape) -> int:
    """nn.GRU/LSTM/RNN: gates * hidden * (input + hidden) per step, layer and direction."""
    gates = {"GRU": 3, "LSTM": 4}.get(type(module).__name__, 1)
    steps = input_shape[0] * input_shape[1]
    total, size = 0, module.input_size
    for _ in range(module.num_layers):
        total += steps * gates * module.hidden_size * (size + module.hidden_size) * (2 if module.bidirectional else 1)
        size = module.hidden_size * (2 if module.bidirectional else 1)
    return total


def op_madds(op: Op) -> Optional[int]:
    """MAdds of ``op``, or None where no rule counts it (an arithmetic op this module does not know)."""
    name = op.name
    if isinstance(op.module, RNNPool2d):
        return rnnpool_madds(op.module, op.output_shapes[0])
    if isinstance(op.module, nn.RNNBase):
        return torch_rnn_madds(op.module, op.args[0].shape)
    if name in ("conv2d", "conv1d", "conv3d"):
        weight = op.args[1]
        return math.prod(op.output_shapes[0]) * math.prod(weight.shape[1:])
    if name == "linear":
        return math.prod(op.output_shapes[0]) * op.args[1].shape[1]
    if name in ("matmul", "mm", "bmm", "addmm", "__matmul__", "baddbmm"):
        a = op.args[1] if name in ("addmm", "baddbmm") else op.args[0]
        return math.prod(op.output_shapes[0]) * a.shape[-1]
    if name in FREE_OPS or op.alias:
        return 0
    return None
