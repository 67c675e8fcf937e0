"""Streaming (patch-by-patch) RNNPool: the input arrives a band of rows at a time, as from a camera.

:class:`RNNPoolStream` keeps only the rows the next output row still needs (at most ``patch`` rows, plus
the band being pushed), computes each output row as soon as its strip of rows is complete, and hands the
new output rows back; the full input map is never held. Results equal the batched operator's.
:func:`stream_working_memory` gives what a patch-by-patch kernel needs to hold (the paper's accounting);
:func:`measure_streaming` measures what this PyTorch runner allocates.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
from torch.nn import functional as F

from ..analysis.measure import peak_allocated_bytes
from ..nn import RNNPool2d
from ..nn.rnnpool import rnnpool_output_size
from ..errors import InvalidInputError


class RNNPoolStream:
    """Feed an (N, C, height, width) map to ``layer`` band by band with :meth:`push`, then :meth:`finish`."""

    def __init__(self, layer: RNNPool2d, height: int, width: int) -> None:
        (self.r, self.c), (self.sr, _), (self.pr, self.pc) = layer.patch_size, layer.stride, layer.padding
        if min(height, width) <= 0:
            raise InvalidInputError(f"stream size must be positive, got {height}x{width}")
        self.layer, self.height, self.width = layer, height, width
        self.out_rows = rnnpool_output_size(height, self.r, self.sr, self.pr)
        if self.out_rows <= 0 or rnnpool_output_size(width, self.c, layer.stride[1], self.pc) <= 0:
            raise InvalidInputError(f"a {height}x{width} map is smaller than the patch {self.r}x{self.c} (with padding)")
        self.buffer: Optional[torch.Tensor] = None  # padded rows [base, base + buffer rows)
        self.base = 0
        self.rows_in = 0
        self.next_out = 0
        self.max_buffer_rows = 0

    def _append(self, rows: torch.Tensor) -> None:
        self.buffer = rows if self.buffer is None else torch.cat((self.buffer, rows), 2)
        self.max_buffer_rows = max(self.max_buffer_rows, self.buffer.shape[2])

    def _ready(self) -> List[torch.Tensor]:
        out = []
        while self.next_out < self.out_rows and self.buffer is not None:
            top = self.next_out * self.sr - self.base  # first buffered row of the next output row's strip
            if top + self.r > self.buffer.shape[2]:
                break
            out.append(self.layer.pool(self.buffer[:, :, top : top + self.r], 0, 0))  # (N, 4*h2, 1, W')
            self.next_out += 1
            drop = min(self.next_out * self.sr - self.base, self.buffer.shape[2])  # rows no later strip uses
            self.buffer, self.base = self.buffer[:, :, drop:], self.base + drop
        return out

    def push(self, band: torch.Tensor) -> torch.Tensor:
        """Add the next (N, C, k, width) rows; returns the output rows they complete, (N, 4*h2, j, W')."""
        if band.dim() != 4 or band.shape[1] != self.layer.in_channels or band.shape[3] != self.width:
            raise InvalidInputError(f"expected a band (N, {self.layer.in_channels}, k, {self.width}), got shape {list(band.shape)}")
        if self.rows_in + band.shape[2] > self.height:
            raise InvalidInputError(f"pushed {self.rows_in + band.shape[2]} rows into a stream of height {self.height}")
        band = F.pad(band, (self.pc, self.pc))
        if self.rows_in == 0 and self.pr:
            self._append(band.new_zeros(band.shape[0], band.shape[1], self.pr, band.shape[3]))
        self.rows_in += band.shape[2]
        self._append(band)
        return self._cat(self._ready())

    def finish(self) -> torch.Tensor:
        """Add the bottom padding and return the last output rows; the stream must have all ``height`` rows."""
        if self.rows_in != self.height:
            raise InvalidInputError(f"stream got {self.rows_in} of {self.height} rows")
        if self.pr and self.buffer is not None:
            b = self.buffer
            self._append(b.new_zeros(b.shape[0], b.shape[1], self.pr, b.shape[3]))
        out = self._ready()
        result = self._cat(out)
        self.buffer = None
        return result

    def _cat(self, rows: List[torch.Tensor]) -> torch.Tensor:
        """The new output rows, or an empty (N, 4*h2, 0, W') tensor when none is complete yet."""
        if rows:
            return torch.cat(rows, 2)
        out_w = rnnpool_output_size(self.width, self.c, self.layer.stride[1], self.pc)
        like = self.buffer if self.buffer is not None else torch.zeros(0)
        return like.new_zeros(like.shape[0] if like.dim() == 4 else 0, self.layer.out_channels, 0, out_w)


def stream_rnnpool(layer: RNNPool2d, x: torch.Tensor, band_rows: int = 1) -> torch.Tensor:
    """Run ``layer`` over ``x`` (N, C, H, W) fed ``band_rows`` rows at a time; equals ``layer(x)``."""
    if band_rows <= 0:
        raise InvalidInputError(f"band_rows must be positive, got {band_rows}")
    stream = RNNPoolStream(layer, x.shape[2], x.shape[3])
    parts = [stream.push(x[:, :, i : i + band_rows]) for i in range(0, x.shape[2], band_rows)]
    return torch.cat(parts + [stream.finish()], 2)


def stream_working_memory(layer: RNNPool2d, width: int, height: int, band_rows: int = 1, elem_bytes: int = 4) -> Dict[str, int]:
    """Bytes a patch-by-patch kernel holds while streaming a ``height`` x ``width`` map.

    ``rows``: the input rows kept (one patch height plus a band); ``states``: RNN1's r + c hidden vectors
    of one patch (row and column summaries) and RNN2's state; ``output``: the whole (H', W', 4*h2) output
    map, written row by row (the next layer reads it). ``total`` is their sum.
    """
    (r, c), (pr, pc) = layer.patch_size, layer.padding
    rows = (r + band_rows) * (width + 2 * pc) * layer.in_channels * elem_bytes
    states = ((r + c) * layer.rnn1.state_size + layer.rnn2.state_size) * elem_bytes
    out_h = rnnpool_output_size(height, r, layer.stride[0], pr)
    out_w = rnnpool_output_size(width, c, layer.stride[1], pc)
    output = out_h * out_w * layer.out_channels * elem_bytes
    return {"rows": rows, "states": states, "output": output, "total": rows + states + output}


@torch.no_grad()
def measure_streaming(layer: RNNPool2d, x: torch.Tensor, band_rows: int = 1) -> Dict[str, int]:
    """Peak bytes allocated by the batched operator and by the streaming runner on ``x`` (its input excluded)."""
    return {"batched_peak": peak_allocated_bytes(lambda: layer(x), x.device.type),
            "stream_peak": peak_allocated_bytes(lambda: stream_rnnpool(layer, x, band_rows), x.device.type)}
