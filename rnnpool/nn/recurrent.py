"""The interface every recurrent cell of RNNPool implements.

A cell splits its update into an input projection ``W x`` (no bias) and a recurrent step. RNNPool computes
the projection of every pixel once, with one 1x1 convolution over the whole map, and then only runs the
cheap recurrent steps per patch; :meth:`RecurrentCell.run_sequence` is that loop.
"""
from __future__ import annotations

from typing import List

import torch
from torch import nn


class RecurrentCell(nn.Module):
    """Base class of the cells. Subclasses set the attributes below and implement the abstract methods.

    Attributes:
        input_size: features of each step's input x.
        hidden_size: features of the hidden state h (the cell's output).
        num_gates: the projection ``W x`` has ``num_gates * hidden_size`` features.
        state_size: features of the full state (``2 * hidden_size`` for the LSTM's (h, c), else ``hidden_size``).
    """

    def input_weight(self) -> torch.Tensor:
        """The effective input matrix W, shape (num_gates * hidden_size, input_size)."""
        raise NotImplementedError

    def recurrent_weight(self) -> torch.Tensor:
        """The effective recurrent matrix U, shape (num_gates * hidden_size, hidden_size)."""
        raise NotImplementedError

    def step(self, wx: torch.Tensor, state: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """One update from the projected input ``wx`` (B, num_gates * hidden) and ``state`` (B, state_size)."""
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
        """Run the cell over projected inputs ``wx`` (T, B, num_gates * hidden) from a zero state.

        Returns the final hidden vector (B, hidden_size).
        """
        u = self.recurrent_weight()
        state = self.init_state(wx.shape[1], wx)
        for t in range(wx.shape[0]):
            state = self.step(wx[t], state, u)
        return self.hidden(state)

    def run_sequences(self, seqs: List[torch.Tensor]) -> List[torch.Tensor]:
        """Final hidden states over each (T_i, B_i, G) in ``seqs``: one joint batch (fewer kernel launches)
        when all T_i are equal, else one run each."""
        if all(s.shape[0] == seqs[0].shape[0] for s in seqs):
            sizes = [s.shape[1] for s in seqs]
            return list(self.run_sequence(torch.cat(seqs, 1)).split(sizes, 0))
        return [self.run_sequence(s) for s in seqs]

    def run_grid(self, wx: torch.Tensor, chunk_size: int) -> torch.Tensor:
        """Final hidden states (N*L*M, hidden) over a grid of sequences ``wx`` (T, N, L, M, G), any strides.

        The grid is cut into pieces of about ``chunk_size`` sequences (whole images, or bands of lines); each piece is copied
        into a step-major batch just before it runs, so the copies stay small and in cache instead of
        materialising the whole (usually overlapping, strided) grid.
        """
        t, n, lines, m, g = wx.shape
        pieces: List[torch.Tensor] = []
        per_image = lines * m
        if per_image <= chunk_size:  # whole images per piece
            images = max(1, chunk_size // max(per_image, 1))
            for i in range(0, n, images):
                pieces.append(self.run_sequence(wx[:, i : i + images].reshape(t, -1, g)))
        else:  # bands of lines within each image
            step = max(1, chunk_size // max(m, 1))
            for i in range(n):
                for j in range(0, lines, step):
                    pieces.append(self.run_sequence(wx[:, i, j : j + step].reshape(t, -1, g)))
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces, 0)

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """One step from a raw input ``x`` (B, input_size); returns the new state (B, state_size)."""
        wx = torch.nn.functional.linear(x, self.input_weight())
        return self.step(wx, state, self.recurrent_weight())
