"""The RNNPool operator (Saha et al., NeurIPS 2020, Algorithm 1) as a pooling layer.

Every r x c patch of a (N, C, H, W) map becomes 4 * h2 features:
RNN1 (hidden h1) sweeps each row and each column of the patch; RNN2 (hidden h2) sweeps the r row summaries
and the c column summaries, forward and reversed; the four final states are concatenated as
[rows forward, rows reversed, columns forward, columns reversed].

How it is fast:
- W1 x is computed once per *pixel* (one matmul over the channels-last map), not once per pixel, patch and
  direction; the patches are strided views of that projection.
- Overlapping patches share rows and columns: a patch row depends only on its image row and the patch's
  column, so each is swept once (saves a factor patch/stride, 1.5-2x for the paper's settings).
- RNN2's input projection is done once per summary; its forward and reversed passes over rows and
  columns read the patches' summaries from that projection.
- Without autograd on CPUs, each step writes where the next reads: the projection straight into its padded
  buffer, RNN1's summaries already through W2, RNN2's states into the output's channels.
- The FastGRNN recurrences run in the fused kernels of :mod:`rnnpool.nn.fused` (C on CPUs, Triton on
  GPUs), which read these strided grids where they lie; elsewhere (other cells, the switch off) as PyTorch
  step loops over batches of sequences (on CPU in cache-sized chunks, on GPU all at once).
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F

from . import fused
from .factory import create_cell
from ..errors import InvalidInputError

IntPair = Union[int, Tuple[int, int]]


def _pair(value: IntPair, name: str, minimum: int) -> Tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
        raise InvalidInputError(f"RNNPool2d {name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise InvalidInputError(f"RNNPool2d {name} must be >= {minimum}, got {value!r}")
    return pair[0], pair[1]


def _patch_lines(proj: torch.Tensor, dim: int, size: int, stride: int, count: int) -> Tuple[torch.Tensor, int]:
    """The lines (rows if dim == 1, columns if dim == 2) of ``proj`` (N, Hp, Wp, G) that patches use.

    Returns the lines, each once, and the stride between the first lines of consecutive patches in them.
    """
    if stride <= size:  # overlapping or touching patches: a contiguous band, shared lines kept once
        return proj.narrow(dim, 0, (count - 1) * stride + size), stride
    # gaps between patches: keep only the covered lines
    lines = proj.unfold(dim, size, stride)  # (N, count, Wp, G, size) or (N, Hp, count, G, size)
    if dim == 1:
        lines = lines.permute(0, 1, 4, 2, 3)  # (N, count, size, Wp, G)
        return lines.reshape(proj.shape[0], count * size, proj.shape[2], proj.shape[3]), size
    lines = lines.permute(0, 1, 2, 4, 3)  # (N, Hp, count, size, G)
    return lines.reshape(proj.shape[0], proj.shape[1], count * size, proj.shape[3]), size


def rnnpool_output_size(size: int, patch: int, stride: int, padding: int) -> int:
    """Output length along one axis: ``floor((size + 2 * padding - patch) / stride) + 1``.

    The rule of ``nn.MaxPool2d`` (ceil_mode=False): only whole patches of the zero-padded input are pooled,
    so rows/columns past the last whole patch are dropped.
    """
    return (size + 2 * padding - patch) // stride + 1


class RNNPool2d(nn.Module):
    """RNNPool pooling layer: (N, C, H, W) -> (N, 4 * hidden_summary, H', W').

    Args:
        in_channels: C, the features of every pixel (the input of each RNN1 step).
        patch_size: r x c (int or pair).
        stride: patch stride (int or pair).
        hidden_row: h1, hidden size of RNN1 (over the rows and columns of a patch).
        hidden_summary: h2, hidden size of RNN2 (over the row and column summaries).
        padding: zeros added on each side (int or pair (ph, pw)).
        cell: "fastgrnn" (default), "gru" or "lstm"; both RNNs use this cell.
        cell_kwargs: extra options for both cells (e.g. ``{"w_rank": 4, "gate_nonlinearity": "quant_sigmoid"}``).
        chunk_size: sequences per recurrent batch: -1 (default) picks about 2^18 state values' worth on CPU
            (cache-sized) and all at once on GPU; 0 means all at once. It changes speed, never the result.

    ``H' = floor((H + 2 * ph - r) / stride_h) + 1``, likewise W' (see :func:`rnnpool_output_size`).
    Initial hidden states are zeros, so inference is deterministic.
    """

    def __init__(
        self,
        in_channels: int,
        patch_size: IntPair,
        stride: IntPair,
        hidden_row: int,
        hidden_summary: int,
        padding: IntPair = 0,
        cell: str = "fastgrnn",
        cell_kwargs: Optional[Dict[str, Any]] = None,
        chunk_size: int = -1,
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("hidden_row", hidden_row), ("hidden_summary", hidden_summary)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise InvalidInputError(f"RNNPool2d {name} must be a positive int, got {value!r}")
        self.in_channels = in_channels
        self.patch_size = _pair(patch_size, "patch_size", 1)
        self.stride = _pair(stride, "stride", 1)
        self.padding = _pair(padding, "padding", 0)
        self.hidden_row = hidden_row
        self.hidden_summary = hidden_summary
        self.out_channels = 4 * hidden_summary
        self.cell_name = cell
        if not isinstance(chunk_size, int) or chunk_size < -1:
            raise InvalidInputError(f"RNNPool2d chunk_size must be -1 (auto), 0 (no chunks) or positive, got {chunk_size!r}")
        self.chunk_size = chunk_size
        kwargs = dict(cell_kwargs or {})
        self.rnn1 = create_cell(cell, in_channels, hidden_row, **kwargs)
        self.rnn2 = create_cell(cell, hidden_row, hidden_summary, **kwargs)

    def output_size(self, height: int, width: int) -> Tuple[int, int]:
        """(H', W') for an input of ``height`` x ``width``."""
        return (
            rnnpool_output_size(height, self.patch_size[0], self.stride[0], self.padding[0]),
            rnnpool_output_size(width, self.patch_size[1], self.stride[1], self.padding[1]),
        )

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4:
            raise InvalidInputError(f"RNNPool2d expects a 4-D (N, C, H, W) input, got shape {list(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise InvalidInputError(f"RNNPool2d expects {self.in_channels} input channels, got {x.shape[1]} (shape {list(x.shape)})")
        if not x.is_floating_point():
            raise TypeError(f"RNNPool2d expects a floating-point input, got {x.dtype} (convert it, e.g. x.float())")
        if not torch.jit.is_scripting():
            dtype = next(self.rnn1.parameters()).dtype
            if x.dtype != dtype and not torch.is_autocast_enabled(x.device.type):
                raise TypeError(f"RNNPool2d's parameters are {dtype} and its input is {x.dtype}: convert one to the other "
                                f"(layer.to({x.dtype}) or x.to({dtype})), or run under torch.autocast")
        padded_h = x.shape[2] + 2 * self.padding[0]
        padded_w = x.shape[3] + 2 * self.padding[1]
        if padded_h < self.patch_size[0] or padded_w < self.patch_size[1]:
            raise InvalidInputError(
                f"RNNPool2d patch {self.patch_size[0]}x{self.patch_size[1]} is larger than the padded input "
                f"{padded_h}x{padded_w} (input {x.shape[2]}x{x.shape[3]}, padding {self.padding[0]},{self.padding[1]})"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return self.pool(x, self.padding[0], self.padding[1])

    def pool(self, x: torch.Tensor, pr: int, pc: int) -> torch.Tensor:
        """The operator with explicit zero padding ``pr`` rows / ``pc`` columns per side (``forward`` uses
        the layer's own); the streaming runner calls it with 0 on strips it has padded itself."""
        (r, c), (sr, sc) = self.patch_size, self.stride
        n = x.shape[0]
        out_h = rnnpool_output_size(x.shape[2], r, sr, pr)
        out_w = rnnpool_output_size(x.shape[3], c, sc, pc)
        if not torch.jit.is_scripting() and self._inference_ready(x):
            return self._pool_inference(x, pr, pc, out_h, out_w)
        # Sequences per recurrent batch: on CPU about 2^18 state values (1 MiB fp32), so a piece's
        # temporaries stay in cache; on GPU everything at once.
        chunk = self.chunk_size if self.chunk_size >= 0 else (0 if x.is_cuda else 262144 // self.rnn1.state_size)
        row_grid, col_grid, row_step, col_step = self._grids(self._project(x, pr, pc), out_h, out_w)
        row_sum, col_sum = self.rnn1.run_grids([row_grid, col_grid], chunk)
        # RNN2's W2 x, once per unique summary, then each patch's r rows / c columns.
        w2 = self.rnn2.input_weight()
        row_wx = F.linear(row_sum.reshape(n, row_grid.shape[2], out_w, self.hidden_row), w2)  # (N, HR, W', G2)
        col_wx = F.linear(col_sum.reshape(n, out_h, col_grid.shape[3], self.hidden_row), w2)  # (N, H', WC, G2)
        row_grid2, col_grid2 = self._summary_grids(row_wx, col_wx, row_step, col_step)
        if not torch.jit.is_scripting() and self._gpu_inference_ready(x):
            out = self._summaries_into_output(row_grid2, col_grid2, n, out_h, out_w)
            if out is not None:
                return out
        finals = self.rnn2.run_bidirectional([row_grid2, col_grid2], chunk)  # rows fwd, rows rev, cols fwd, cols rev
        out = torch.cat(finals, 0).reshape(4, n, out_h, out_w, self.hidden_summary)
        return out.permute(1, 0, 4, 2, 3).reshape(n, self.out_channels, out_h, out_w)  # (N, 4*h2, H', W')

    def _project(self, x: torch.Tensor, pr: int, pc: int) -> torch.Tensor:
        """RNN1's ``W x`` of every pixel, channels-last and zero-padded: (N, H + 2 pr, W + 2 pc, G1)."""
        # Channels-last so each pixel's features are contiguous; zero padding commutes with this bias-free product
        # (the cell's offset is added per chunk, see run_grid). A matmul (forward and backward) measured faster than
        # a 1x1 convolution, whose NCHW output needs a copy (Face-C's 3 -> 16 channels at 480x640: 1.7 ms against
        # 18 ms on a 2-core CPU).
        proj = F.linear(x.permute(0, 2, 3, 1), self.rnn1.input_weight())  # (N, H, W, G1)
        if pr > 0 or pc > 0:
            proj = F.pad(proj, (0, 0, pc, pc, pr, pr))  # (N, Hp, Wp, G1)
        return proj

    def _grids(self, proj: torch.Tensor, out_h: int, out_w: int) -> Tuple[torch.Tensor, torch.Tensor, int, int]:
        """RNN1's grids over the padded projection ``proj`` (N, Hp, Wp, G1): (row grid (c steps, N, HR, W', G1),
        column grid (r steps, N, H', WC, G1), views) and the stride between consecutive patches' first lines in
        the HR rows / WC columns."""
        (r, c), (sr, sc) = self.patch_size, self.stride
        # A row of a patch depends only on (image row, patch column), not on the patch row it sits in:
        # patches stacked vertically share rows when stride < patch, so each such row is swept once.
        rows, row_step = _patch_lines(proj, 1, r, sr, out_h)  # (N, HR, Wp, G1)
        cols, col_step = _patch_lines(proj, 2, c, sc, out_w)  # (N, Hp, WC, G1)
        row_grid = rows.unfold(2, c, sc).permute(4, 0, 1, 2, 3)  # (c steps, N, HR, W', G1) view
        col_grid = cols.unfold(1, r, sr).permute(4, 0, 1, 2, 3)  # (r steps, N, H', WC, G1) view
        return row_grid, col_grid, row_step, col_step

    def _summary_grids(self, row_wx: torch.Tensor, col_wx: torch.Tensor, row_step: int,
                       col_step: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """RNN2's grids over its projected summaries, row_wx (N, HR, W', G2) and col_wx (N, H', WC, G2): each patch's
        r rows (r steps, N, H', W', G2) and c columns (c steps, N, H', W', G2), views."""
        r, c = self.patch_size
        return (row_wx.unfold(1, r, row_step).permute(4, 0, 1, 2, 3), col_wx.unfold(2, c, col_step).permute(4, 0, 1, 2, 3))

    @torch.jit.unused
    def _inference_ready(self, x):  # (unannotated: TorchScript reads it as Tensor -> Tensor, and never calls it)
        return fused.inference_ready([self.rnn1, self.rnn2], x)

    @torch.jit.unused
    def _gpu_inference_ready(self, x):  # (as _inference_ready: for the Triton kernels)
        return fused.inference_ready([self.rnn1, self.rnn2], x, "triton")

    @torch.jit.unused
    def _summaries_into_output(self, row_grid2: torch.Tensor, col_grid2: torch.Tensor, n: int, out_h: int,
                               out_w: int) -> Optional[torch.Tensor]:
        """RNN2's four sweeps without autograd, each final state written into its channels of the (N, 4*h2, H', W')
        output (no concatenation, no permuting copy); None where the kernels fail (the caller's path runs)."""
        out = row_grid2.new_empty(n, 4, self.hidden_summary, out_h, out_w, dtype=self.rnn2.u1.dtype)
        finals = out.permute(1, 0, 3, 4, 2)  # (4, N, H', W', h2): rows fwd, rows rev, cols fwd, cols rev
        if not fused.scans_into(self.rnn2, [(row_grid2, finals[0], False), (row_grid2, finals[1], True),
                                            (col_grid2, finals[2], False), (col_grid2, finals[3], True)]):
            return None
        return out.view(n, self.out_channels, out_h, out_w)

    @torch.jit.unused
    def _pool_inference(self, x: torch.Tensor, pr: int, pc: int, out_h: int, out_w: int) -> torch.Tensor:
        """:meth:`pool` without autograd in three C calls (see :func:`rnnpool.nn.fused.inference_ready`): the input
        projection in one pass straight into the padded channels-last buffer, RNN1's two sweeps with their summaries
        written already through RNN2's W2 (no summary tensor, no matmul), RNN2's four sweeps with their final states
        written into their channels of the output (no concatenation, no permuting copy). 3-46% faster than running
        the autograd path's kernels without autograd (operator benchmark configs, 2-core CPU); the same results to
        float rounding."""
        n = x.shape[0]
        proj = fused.project_input(self.rnn1, x, pr, pc)
        if proj is None:  # not contiguous NCHW float32, or too many features for the C pass
            proj = self._project(x, pr, pc)
        row_grid, col_grid, row_step, col_step = self._grids(proj, out_h, out_w)
        g2 = self.rnn2.num_gates * self.hidden_summary
        row_wx = proj.new_empty(n, row_grid.shape[2], out_w, g2)  # (N, HR, W', G2)
        col_wx = proj.new_empty(n, out_h, col_grid.shape[3], g2)  # (N, H', WC, G2)
        fused.scans_into(self.rnn1, [(row_grid, row_wx, False), (col_grid, col_wx, False)], project=self.rnn2)
        return self._summaries_into_output(*self._summary_grids(row_wx, col_wx, row_step, col_step), n, out_h, out_w)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, patch_size={self.patch_size}, stride={self.stride}, padding={self.padding}, "
            f"hidden_row={self.hidden_row}, hidden_summary={self.hidden_summary}, cell={self.cell_name!r}"
        )
