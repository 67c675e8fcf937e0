"""GRU and LSTM cells behind the :class:`RecurrentCell` interface, for the paper's cell ablation.

Their equations, parameter names and gate order match ``torch.nn.GRUCell`` / ``torch.nn.LSTMCell``, so
weights can be copied between them (the tests do exactly that).
"""
from __future__ import annotations

import math
from typing import List

import torch
from torch import nn
from torch.nn import functional as F

from .recurrent import RecurrentCell
from ..errors import InvalidInputError


class _GatedCell(RecurrentCell):
    def __init__(self, input_size: int, hidden_size: int, num_gates: int) -> None:
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size)):
            if int(value) != value or value <= 0:
                raise InvalidInputError(f"{type(self).__name__} {name} must be a positive integer, got {value!r}")
        self.input_size = int(input_size)
        self.hidden_size = int(hidden_size)
        self.num_gates = num_gates
        self.weight_ih = nn.Parameter(torch.empty(num_gates * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(num_gates * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(num_gates * hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(num_gates * hidden_size))
        bound = 1.0 / math.sqrt(hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def input_weight(self) -> torch.Tensor:
        return self.weight_ih

    def recurrent_weight(self) -> torch.Tensor:
        return self.weight_hh

    def madds_per_step(self) -> int:
        return self.num_gates * self.hidden_size * (self.input_size + self.hidden_size)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}"


class GRUCell(_GatedCell):
    """GRU: r, z = sigmoid(...), n = tanh(W_n x + b_in + r * (U_n h + b_hn)), h' = (1 - z) n + z h."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size, hidden_size, num_gates=3)
        self.state_size = self.hidden_size

    def input_offset(self) -> torch.Tensor:
        return self.bias_ih

    def step(self, wx: torch.Tensor, state: torch.Tensor, params: List[torch.Tensor]) -> torch.Tensor:
        gi = wx.chunk(3, 1)
        gh = F.linear(state, params[0], self.bias_hh).chunk(3, 1)
        r = torch.sigmoid(gi[0] + gh[0])
        z = torch.sigmoid(gi[1] + gh[1])
        n = torch.tanh(gi[2] + r * gh[2])
        return n + z * (state - n)


class LSTMCell(_GatedCell):
    """LSTM with gates (i, f, g, o); the state is ``cat(h, c)`` of shape (B, 2 * hidden)."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size, hidden_size, num_gates=4)
        self.state_size = 2 * self.hidden_size

    def input_offset(self) -> torch.Tensor:
        return self.bias_ih + self.bias_hh

    def step(self, wx: torch.Tensor, state: torch.Tensor, params: List[torch.Tensor]) -> torch.Tensor:
        h, c = state[:, : self.hidden_size], state[:, self.hidden_size :]
        gates = torch.addmm(wx, h, params[0].t()).chunk(4, 1)
        c = torch.sigmoid(gates[1]) * c + torch.sigmoid(gates[0]) * torch.tanh(gates[2])
        h = torch.sigmoid(gates[3]) * torch.tanh(c)
        return torch.cat((h, c), 1)
