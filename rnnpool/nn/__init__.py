"""Layers: the RNNPool operator and its recurrent cells."""
from .activations import NONLINEARITIES, quant_sigmoid, quant_tanh
from .factory import CELLS, create_cell
from .fastgrnn import FastGRNNCell
from .fused import fused_available, fused_enabled, set_fused, use_fused
from .gated import GRUCell, LSTMCell
from .l2norm import L2Norm
from .recurrent import RecurrentCell, compile_recurrence
from .rnnpool import RNNPool2d, rnnpool_output_size

__all__ = [
    "CELLS", "NONLINEARITIES", "FastGRNNCell", "GRUCell", "L2Norm", "LSTMCell", "RNNPool2d", "RecurrentCell",
    "compile_recurrence", "create_cell", "fused_available", "fused_enabled", "quant_sigmoid", "quant_tanh",
    "rnnpool_output_size", "set_fused", "use_fused",
]
