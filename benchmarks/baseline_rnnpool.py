"""The straightforward RNNPool the benchmark compares against (the usual research-code layout).

Unfold every patch into a copy (F.unfold), then run RNN1 step by step over all rows, again over all
columns, then RNN2 four times (rows/columns, forward/reversed), each step computing W x from scratch.
The cells are written as textbook equations (separate W x and U h products, aten sigmoid/tanh), as the
research code writes them. It shares its weights with an :class:`rnnpool.nn.RNNPool2d`, so both give the
same numbers.
"""
import torch
from torch import nn
from torch.nn import functional as F

from rnnpool.nn import FastGRNNCell, RNNPool2d
from rnnpool.nn.activations import apply_nonlinearity


def _textbook_step(cell, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """One step from raw input x (B, D); FastGRNN spelled out, other cells through their own forward."""
    if not isinstance(cell, FastGRNNCell):
        return cell(x, h)
    pre = x @ cell.input_weight().t() + h @ cell.recurrent_weight().t()
    z = apply_nonlinearity(pre + cell.bias_gate, cell.gate_nonlinearity)
    candidate = apply_nonlinearity(pre + cell.bias_update, cell.update_nonlinearity)
    return (torch.sigmoid(cell.zeta) * (1 - z) + torch.sigmoid(cell.nu)) * candidate + z * h


def _run(cell, seq: torch.Tensor) -> torch.Tensor:
    """seq (B, T, D) -> final hidden (B, h), one raw-input step at a time."""
    state = torch.zeros(seq.shape[0], cell.state_size, dtype=seq.dtype, device=seq.device)
    for t in range(seq.shape[1]):
        state = _textbook_step(cell, seq[:, t], state)
    return cell.hidden(state)


class UnfoldLoopRNNPool(nn.Module):
    """Baseline RNNPool using the weights of ``layer``."""

    def __init__(self, layer: RNNPool2d) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layer = self.layer
        (r, c), (pr, pc) = layer.patch_size, layer.padding
        n, ch = x.shape[:2]
        out_h, out_w = layer.output_size(x.shape[2], x.shape[3])
        patches = F.unfold(x, (r, c), padding=(pr, pc), stride=layer.stride)  # (N, C*r*c, L)
        num = patches.shape[2]
        patches = patches.transpose(1, 2).reshape(n * num, ch, r, c)  # (N*L, C, r, c)
        rows = patches.permute(0, 2, 3, 1).reshape(n * num * r, c, ch)  # (N*L*r, c, C)
        cols = patches.permute(0, 3, 2, 1).reshape(n * num * c, r, ch)  # (N*L*c, r, C)
        row_summaries = _run(layer.rnn1, rows).reshape(n * num, r, -1)
        col_summaries = _run(layer.rnn1, cols).reshape(n * num, c, -1)
        out = torch.cat([
            _run(layer.rnn2, row_summaries),
            _run(layer.rnn2, row_summaries.flip(1)),
            _run(layer.rnn2, col_summaries),
            _run(layer.rnn2, col_summaries.flip(1)),
        ], 1)  # (N*L, 4*h2)
        return out.reshape(n, out_h, out_w, -1).permute(0, 3, 1, 2)
