"""The interface every recurrent cell of RNNPool implements.

A cell splits its update into an input projection ``W x + offset`` and a recurrent step. RNNPool computes
``W x`` of every pixel once over the whole map, adds the offset (the input-side biases) while it copies
each chunk of sequences anyway, and then only runs the cheap recurrent steps per patch;
:meth:`RecurrentCell.run_sequence` is that loop. Constants a step needs (U, bias differences, gating
scalars) are computed once per sequence batch by :meth:`RecurrentCell.prepare`.
"""
from __future__ import annotations

import types
import warnings
import weakref
from typing import List, Optional

import torch
from torch import nn
from torch.nn import functional as F


COMPILE_MIN_HIDDEN = 8  # smaller cells run faster eagerly (see compile_recurrence)

# Compiled step loops, per cell, kept outside the modules so that they stay picklable and copyable.
_COMPILED: "weakref.WeakKeyDictionary[nn.Module, object]" = weakref.WeakKeyDictionary()


class RecurrentCell(nn.Module):
    """Base class of the cells. Subclasses set the attributes below and implement the abstract methods.

    Attributes:
        input_size: features of each step's input x.
        hidden_size: features of the hidden state h (the cell's output).
        num_gates: the projection ``W x`` has ``num_gates * hidden_size`` features.
        state_size: features of the full state (``2 * hidden_size`` for the LSTM's (h, c), else ``hidden_size``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.compiled = False  # run_sequence through torch.compile (see rnnpool.nn.compile_recurrence)

    def input_weight(self) -> torch.Tensor:
        """The effective input matrix W, shape (num_gates * hidden_size, input_size)."""
        raise NotImplementedError

    def input_offset(self) -> torch.Tensor:
        """The constant added to ``W x`` (num_gates * hidden_size,): the input-side biases."""
        raise NotImplementedError

    def recurrent_weight(self) -> torch.Tensor:
        """The effective recurrent matrix U, shape (num_gates * hidden_size, hidden_size)."""
        raise NotImplementedError

    def prepare(self, compiling: bool = False) -> List[torch.Tensor]:
        """Per-batch constants for :meth:`step` (default: just U); ``compiling``: for a step loop that
        ``torch.compile`` fuses (eager-only layout tricks are left out)."""
        return [self.recurrent_weight()]

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """``W x + offset`` for raw inputs (..., input_size) -> (..., num_gates * hidden_size)."""
        return F.linear(x, self.input_weight(), self.input_offset())

    def step(self, wx: torch.Tensor, state: torch.Tensor, params: List[torch.Tensor]) -> torch.Tensor:
        """One update from ``wx`` = W x + offset (B, num_gates * hidden), ``state`` (B, state_size) and the
        constants of :meth:`prepare`."""
        raise NotImplementedError

    def hidden(self, state: torch.Tensor) -> torch.Tensor:
        """The hidden vector h (B, hidden_size) held in ``state``."""
        return state[:, : self.hidden_size]

    def init_state(self, batch: int, like: torch.Tensor) -> torch.Tensor:
        """Zero state (B, state_size) with the dtype and device of ``like``."""
        return torch.zeros(batch, self.state_size, dtype=like.dtype, device=like.device)

    def madds_per_step(self) -> int:
        """Multiply-adds of one step: the products ``W x`` and ``U h`` (elementwise gating is not counted)."""
        raise NotImplementedError

    def run_sequence(self, wx: torch.Tensor) -> torch.Tensor:
        """Run the cell over projected inputs ``wx`` = W x + offset (T, B, num_gates * hidden) from a zero state.

        Returns the final hidden vector (B, hidden_size). With ``compiled`` set (see
        :func:`rnnpool.nn.compile_recurrence`) the steps run as kernels fused by ``torch.compile``.
        """
        if self.compiled and not torch.jit.is_scripting():
            return self._run_compiled(wx)
        return self._run_steps(wx, self.prepare())

    def _run_steps(self, wx: torch.Tensor, params: List[torch.Tensor]) -> torch.Tensor:
        state = self.init_state(wx.shape[1], wx)
        # unbind, not wx[t]: autograd then stacks the steps' gradients once, where each indexing would
        # allocate and zero a gradient of the whole sequence
        for wx_t in wx.unbind(0):
            state = self.step(wx_t, state, params)
        return self.hidden(state)

    @torch.jit.unused
    def _run_compiled(self, wx: torch.Tensor) -> torch.Tensor:
        compiled = _COMPILED.get(self)
        if compiled is None:
            # torch.compile caches compiled graphs per code object, with a cap on how many: give each cell
            # its own copy of the step loop so that cells and models do not evict each other. dynamic=True:
            # one kernel set serves every batch size; each sequence length is unrolled once.
            loop = type(self)._run_steps
            own = types.FunctionType(loop.__code__.replace(), loop.__globals__, loop.__name__, loop.__defaults__, loop.__closure__)
            compiled = _COMPILED[self] = torch.compile(own, dynamic=True)
        try:
            return compiled(self, wx, self.prepare(compiling=True))
        except Exception as err:  # no C++ compiler, unsupported platform...: say so once, then run eagerly
            warnings.warn(f"{type(self).__name__}: torch.compile failed ({type(err).__name__}: {err}); "
                          "running the recurrence eagerly", RuntimeWarning, stacklevel=2)
            self.compiled = False
            return self._run_steps(wx, self.prepare())

    def run_sequences(self, seqs: List[torch.Tensor]) -> List[torch.Tensor]:
        """Final hidden states over each (T_i, B_i, G) of ``W x`` in ``seqs`` (offset not yet added): one joint
        batch (fewer kernel launches) when all T_i are equal, else one run each."""
        offset = self.input_offset()
        if all(s.shape[0] == seqs[0].shape[0] for s in seqs):
            sizes = [s.shape[1] for s in seqs]
            return list(self.run_sequence(torch.cat(seqs, 1) + offset).split(sizes, 0))
        return [self.run_sequence(s + offset) for s in seqs]

    def run_grids(self, grids: List[torch.Tensor], chunk_size: int) -> List[torch.Tensor]:
        """Final hidden states over each grid of ``W x`` sequences (T_i, N, L, M, G): with ``chunk_size`` 0
        all at once (equal-length grids as one joint batch, see :meth:`run_sequences`), else in chunks of
        about ``chunk_size`` sequences (:meth:`run_grid`). A cell's fused kernel (:meth:`run_fused`) runs
        instead where it has one that applies."""
        if not torch.jit.is_scripting():
            fused = self.run_fused(grids, False)
            if fused is not None:
                return fused
        if chunk_size == 0:
            return self.run_sequences([g.reshape(g.shape[0], -1, g.shape[-1]) for g in grids])
        return [self.run_grid(g, chunk_size) for g in grids]

    def run_bidirectional(self, grids: List[torch.Tensor], chunk_size: int) -> List[torch.Tensor]:
        """Final states over each grid's sequences (T, N, L, M, G of ``W x``) run forward and reversed:
        [grid 0 forward, grid 0 reversed, grid 1 forward, ...], each (N*L*M, hidden). The PyTorch path stacks
        each grid with its time-flipped copy into one batch; a fused kernel reads both from the grid itself."""
        if not torch.jit.is_scripting():
            fused = self.run_fused(grids, True)
            if fused is not None:
                return fused
        pairs: List[torch.Tensor] = []
        for grid in grids:
            seq = grid.reshape(grid.shape[0], -1, grid.shape[-1])  # (T, S, G)
            pairs.append(torch.stack((seq, seq.flip(0)), 1)[:, :, None])  # (T, 2 directions, 1, S, G)
        out: List[torch.Tensor] = []
        for final in self.run_grids(pairs, chunk_size):
            forward, reverse = final.chunk(2, 0)
            out.append(forward)
            out.append(reverse)
        return out

    @torch.jit.unused
    def run_fused(self, grids: List[torch.Tensor], both_directions: bool = False) -> Optional[List[torch.Tensor]]:
        """Final states of each grid (and, with ``both_directions``, of it reversed in time, as
        :meth:`run_bidirectional` orders them) through a fused kernel, or None where the cell has none that
        applies (the default: the PyTorch step loop runs)."""
        return None

    def run_grid(self, wx: torch.Tensor, chunk_size: int) -> torch.Tensor:
        """Final hidden states (N*L*M, hidden) over a grid of ``W x`` sequences ``wx`` (T, N, L, M, G), any strides.

        The grid is cut into pieces of about ``chunk_size`` sequences (whole images, or bands of lines); each piece is copied
        into a step-major batch just before it runs, so the copies stay small and in cache instead of
        materialising the whole (usually overlapping, strided) grid. The offset is added by that same copy.
        """
        t, n, lines, m, g = wx.shape
        offset = self.input_offset()
        if wx.numel() == 0:  # no sequences (a batch of 0): no states, still on the autograd graph
            return self._run_piece(wx, offset)
        pieces: List[torch.Tensor] = []
        per_image = lines * m
        # split/unbind, not slicing: autograd then joins the pieces' gradients once, where each slice would
        # allocate and zero a gradient of the whole grid (backward time grew with the square of the batch)
        if per_image <= chunk_size:  # whole images per piece
            images = max(1, chunk_size // max(per_image, 1))
            for piece in wx.split(images, 1):
                pieces.append(self._run_piece(piece, offset))
        else:  # bands of lines within each image
            step = max(1, chunk_size // max(m, 1))
            for image in wx.unbind(1):
                for piece in image.split(step, 1):
                    pieces.append(self._run_piece(piece, offset))
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces, 0)

    def batch_multiple(self) -> int:
        """Batch sizes :meth:`step` runs fastest at are multiples of this (run_grid pads its pieces)."""
        return 1

    def _run_piece(self, piece: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """Copy a strided piece (T, ..., G) of the grid with the offset added and run it; final states of its
        sequences. Cells with a :meth:`batch_multiple` get the copy step-major, padded with zero sequences."""
        t, g = piece.shape[0], piece.shape[-1]
        batch = piece[0].numel() // g
        multiple = self.batch_multiple()
        if multiple == 1:  # any layout will do (the copy keeps the piece's memory order)
            return self.run_sequence(torch.add(piece, offset).reshape(t, -1, g))
        padded = -(-batch // multiple) * multiple
        if torch.is_grad_enabled() and (piece.requires_grad or offset.requires_grad):
            seq = F.pad(torch.add(piece, offset).reshape(t, -1, g), (0, 0, 0, padded - batch)).contiguous()
        else:  # no autograd: write the copy straight into a step-major padded buffer
            seq = piece.new_empty(t, padded, g)
            seq[:, batch:].zero_()
            torch.add(piece, offset, out=seq[:, :batch].view(piece.shape))
        return self.run_sequence(seq)[:batch]

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """One step from a raw input ``x`` (B, input_size); returns the new state (B, state_size)."""
        return self.step(self.project(x), state, self.prepare())


def compile_recurrence(module: nn.Module, enabled: bool = True) -> nn.Module:
    """Run the recurrences of every cell in ``module`` through ``torch.compile`` (or back to eager mode).

    Each recurrent step is a handful of elementwise passes around one small matmul; compiled, they fuse
    into one kernel per step, which matters on CPUs. The first call per cell and sequence length compiles
    (seconds; needs a C++ compiler on CPU); if compiling fails, a RuntimeWarning says so and the cell runs
    eagerly. Results equal the eager ones up to float rounding; autograd works. Cells with fewer than
    ``COMPILE_MIN_HIDDEN`` hidden units stay eager: their block-diagonal eager step measured faster
    (benchmarks/operator.py). Returns ``module``.
    """
    for m in module.modules():
        if isinstance(m, RecurrentCell):
            m.compiled = enabled and m.hidden_size >= COMPILE_MIN_HIDDEN
    return module
