"""FastGRNN cell (Kusupati et al., NeurIPS 2018), the cell RNNPool uses by default.

    z  = gate(W x + U h + b_z)
    h~ = update(W x + U h + b_h)
    h' = (sigmoid(zeta) * (1 - z) + sigmoid(nu)) * h~ + z * h

W and U are shared by the gate and the candidate, so a step costs one ``W x`` and one ``U h``.
"""
from __future__ import annotations

from typing import List, Optional

import torch
from torch import nn
from torch.nn import functional as F

from . import fused
from .activations import apply_nonlinearity, check_nonlinearity
from .recurrent import RecurrentCell
from ..errors import InvalidInputError


class FastGRNNCell(RecurrentCell):
    """FastGRNN with optional low-rank W = W1 W2 and U = U1 U2.

    Args:
        input_size: features of x.
        hidden_size: features of h.
        gate_nonlinearity: "sigmoid" or "quant_sigmoid" (piecewise linear, for int8 deployment).
        update_nonlinearity: "tanh" or "quant_tanh".
        w_rank: rank of W (None: full rank).
        u_rank: rank of U (None: full rank).
        zeta_init, nu_init: initial zeta and nu *before* their sigmoid. The defaults (+100, -100) pin
            sigmoid(zeta) to 1 and sigmoid(nu) to 0, as all of the paper's models do.
        train_zeta_nu: learn zeta and nu (False freezes them at their initial values).
        update_bias_init: initial b_h. The reference code's 1 pushes the candidate into tanh's flat part,
            so a layer on raw pixels with few hidden units barely responds to its input at first (the
            RNNPool-Face-A/B detectors did not learn from it; they start from 0).

    Initialisation follows the reference code: W and U ~ 0.1 N(0, 1), both biases 1.
    """

    num_gates = 1
    # Where prepare()'s constants sit in the list step() reads (a list, so TorchScript and torch.compile
    # take it; listed in __constants__, so TorchScript takes them as constants):
    U = 0  # U (padded to 16 rows below 16 units)
    PACKED_U = -1  # U on a block diagonal for packed states, or empty
    ZETA = 2  # sigmoid(zeta)
    # the general step: the candidate's bias b_h - b_z, and sigmoid(zeta) + sigmoid(nu)
    BIAS = 1
    ZETA_PLUS_NU = 3
    # the sigmoid-gate/tanh-update step, which takes tanh(a) as 2 sigmoid(2 a) - 1 (zeta, nu after their
    # sigmoid): 2 (b_h - b_z), -(zeta + nu), 2 (zeta + nu) and -2 zeta
    BIAS_X2 = 1
    NEG_ZETA_PLUS_NU = 3
    ZETA_PLUS_NU_X2 = 4
    NEG_ZETA_X2 = 5
    __constants__ = ["U", "PACKED_U", "ZETA", "BIAS", "ZETA_PLUS_NU", "BIAS_X2", "NEG_ZETA_PLUS_NU", "ZETA_PLUS_NU_X2",
                     "NEG_ZETA_X2"]

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        gate_nonlinearity: str = "sigmoid",
        update_nonlinearity: str = "tanh",
        w_rank: Optional[int] = None,
        u_rank: Optional[int] = None,
        zeta_init: float = 100.0,
        nu_init: float = -100.0,
        train_zeta_nu: bool = False,
        update_bias_init: float = 1.0,
    ) -> None:
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size)):
            if int(value) != value or value <= 0:
                raise InvalidInputError(f"FastGRNNCell {name} must be a positive integer, got {value!r}")
        for name, rank in (("w_rank", w_rank), ("u_rank", u_rank)):
            if rank is not None and (int(rank) != rank or rank <= 0):
                raise InvalidInputError(f"FastGRNNCell {name} must be None or a positive integer, got {rank!r}")
        self.input_size = int(input_size)
        self.hidden_size = int(hidden_size)
        self.state_size = self.hidden_size
        self.gate_nonlinearity = check_nonlinearity(gate_nonlinearity)
        self.update_nonlinearity = check_nonlinearity(update_nonlinearity)
        self.w_rank = 0 if w_rank is None else int(w_rank)
        self.u_rank = 0 if u_rank is None else int(u_rank)

        def matrix(rows: int, cols: int) -> nn.Parameter:
            return nn.Parameter(0.1 * torch.randn(rows, cols))

        if self.w_rank:
            self.w1 = matrix(hidden_size, self.w_rank)
            self.w2: Optional[nn.Parameter] = matrix(self.w_rank, input_size)
        else:
            self.w1 = matrix(hidden_size, input_size)
            self.register_parameter("w2", None)
        if self.u_rank:
            self.u1 = matrix(hidden_size, self.u_rank)
            self.u2: Optional[nn.Parameter] = matrix(self.u_rank, hidden_size)
        else:
            self.u1 = matrix(hidden_size, hidden_size)
            self.register_parameter("u2", None)
        self.bias_gate = nn.Parameter(torch.ones(hidden_size))
        self.bias_update = nn.Parameter(torch.full((hidden_size,), float(update_bias_init)))
        self.zeta = nn.Parameter(torch.tensor([float(zeta_init)]), requires_grad=train_zeta_nu)
        self.nu = nn.Parameter(torch.tensor([float(nu_init)]), requires_grad=train_zeta_nu)

    def input_weight(self) -> torch.Tensor:
        w2 = self.w2
        if w2 is None:
            return self.w1
        return torch.mm(self.w1, w2)

    def recurrent_weight(self) -> torch.Tensor:
        u2 = self.u2
        if u2 is None:
            return self.u1
        return torch.mm(self.u1, u2)

    def input_offset(self) -> torch.Tensor:
        return self.bias_gate

    def prepare(self, compiling: bool = False) -> List[torch.Tensor]:
        zeta, nu = torch.sigmoid(self.zeta), torch.sigmoid(self.nu)
        u = self.recurrent_weight()
        packed = u.new_zeros(0)
        if self.hidden_size < 16:
            # CPU GEMMs with fewer than 16 output columns take a path ~3x slower than 16. Preferred: view
            # k = 16 // h states as one row and multiply by k copies of U on a block diagonal (the result
            # is already laid out as (B, h)); when B is not a multiple of k, U padded with zero rows to 16.
            copies = self._pack_copies()
            if copies > 1 and not compiling:  # the compiled loop fuses the slice instead
                packed = torch.kron(torch.eye(copies, dtype=u.dtype, device=u.device), u)
            u = F.pad(u, (0, 0, 0, 16 - self.hidden_size))
        if self.tanh_through_sigmoid():  # see step: the candidate's input is doubled
            return [u, 2.0 * (self.bias_update - self.bias_gate), zeta, -(zeta + nu), 2.0 * (zeta + nu), -2.0 * zeta, packed]
        return [u, self.bias_update - self.bias_gate, zeta, zeta + nu, packed]

    def tanh_through_sigmoid(self) -> bool:
        """Whether :meth:`step` computes the candidate's tanh from a sigmoid (a sigmoid gate and a tanh
        update: three fused passes); this one decision also picks :meth:`prepare`'s constants."""
        return self.gate_nonlinearity == "sigmoid" and self.update_nonlinearity == "tanh"

    def _pack_copies(self) -> int:
        """States packed per row against the block-diagonal U of :meth:`prepare` (1: no packing)."""
        return 16 // self.hidden_size if self.hidden_size < 16 else 1

    def batch_multiple(self) -> int:
        return 1 if self.compiled else self._pack_copies()

    def step(self, wx: torch.Tensor, state: torch.Tensor, params: List[torch.Tensor]) -> torch.Tensor:
        packed = params[self.PACKED_U]
        if self.hidden_size < 16:
            width = packed.shape[0]
            if width > 0 and (state.shape[0] * self.hidden_size) % width == 0 and wx.is_contiguous():
                pre = torch.addmm(wx.reshape(-1, width), state.reshape(-1, width), packed.t()).reshape(-1, self.hidden_size)
            else:
                pre = wx + torch.mm(state, params[self.U].t())[:, : self.hidden_size]  # W x + U h + b_z (b_z came with wx)
        else:
            pre = torch.addmm(wx, state, params[self.U].t())
        zeta = params[self.ZETA]
        if self.tanh_through_sigmoid():
            z = torch.sigmoid(pre)
            # h~ = tanh(a) = 2 s - 1 with s = sigmoid(2 a) (aten's sigmoid is much faster than its tanh on
            # CPUs); a = pre + b_h - b_z. Then (zeta (1 - z) + nu) h~ + z h
            #   = (zeta + nu)(2 s - 1) + z (h + zeta - 2 zeta s): three fused passes.
            s = torch.sigmoid(torch.add(params[self.BIAS_X2], pre, alpha=2.0))
            keep = torch.addcmul(state + zeta, s, params[self.NEG_ZETA_X2])
            return torch.addcmul(torch.addcmul(params[self.NEG_ZETA_PLUS_NU], s, params[self.ZETA_PLUS_NU_X2]), z, keep)
        z = apply_nonlinearity(pre, self.gate_nonlinearity)
        candidate = apply_nonlinearity(pre + params[self.BIAS], self.update_nonlinearity)
        # (zeta (1 - z) + nu) h~ + z h = (zeta + nu) h~ + z (h - zeta h~)
        return torch.addcmul(candidate * params[self.ZETA_PLUS_NU], z, state - zeta * candidate)

    @torch.jit.unused
    def run_fused(self, grids: List[torch.Tensor], both_directions: bool = False) -> Optional[List[torch.Tensor]]:
        """The fused kernel of :mod:`rnnpool.nn.fused` where one applies (C on CPUs, Triton on CUDA GPUs; they
        read the grids where they lie, reversed ones too: no chunks, no copies); None elsewhere, and with
        :func:`~rnnpool.nn.compile_recurrence` set."""
        kind = None if self.compiled else fused.backend(self, grids)
        if kind is None:
            return None
        return fused.fastgrnn_scan(self, grids, both_directions, kind)

    def madds_per_step(self) -> int:
        h, d = self.hidden_size, self.input_size
        w = self.w_rank * (d + h) if self.w_rank else h * d
        u = self.u_rank * 2 * h if self.u_rank else h * h
        return w + u

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, gate={self.gate_nonlinearity}, update={self.update_nonlinearity}"
        if self.w_rank:
            s += f", w_rank={self.w_rank}"
        if self.u_rank:
            s += f", u_rank={self.u_rank}"
        return s
