"""Layers: the RNNPool operator and its recurrent cells."""
from .activations import NONLINEARITIES, quant_sigmoid, quant_tanh
from .factory import CELLS, create_cell
from .fastgrnn import FastGRNNCell
from .gated import GRUCell, LSTMCell
from .l2norm import L2Norm
from .recurrent import RecurrentCell, compile_recurrence
from .rnnpool import RNNPool2d, rnnpool_output_size

__all__ = [
    "CELLS", "NONLINEARITIES", "FastGRNNCell", "GRUCell", "L2Norm", "LSTMCell", "RNNPool2d", "RecurrentCell",
    "compile_recurrence", "create_cell", "quant_sigmoid", "quant_tanh", "rnnpool_output_size",
]
