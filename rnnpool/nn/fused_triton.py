"""The fused FastGRNN recurrence on GPUs: Triton kernels that run every step of every sequence of an RNNPool grid.

The eager path launches a handful of small kernels per recurrent step (at RNNPool's sizes a GPU is bound by
those launches). Here one launch runs a whole grid, in both directions where RNN2 needs them: each program
holds the states of a block of sequences in registers, reads each step's ``W x`` where it lies in the strided
(overlapping) grid, adds ``U h`` (``tl.dot`` from 16 hidden units on, a broadcast product below that) and
applies the gate and update. The forward saves the state before every step when gradients are needed; the
backward walks the steps back, recomputing each from its saved state, adds each step's gradient into the
gradient of the tensor the grid views (atomically, or through a deterministic ``index_put_`` when
``torch.use_deterministic_algorithms`` is on) and leaves per-program sums of d U, d biases, d zeta and d nu
that PyTorch adds up (in a fixed order).

It serves FastGRNN cells (every gate x update nonlinearity, low-rank or not, trainable zeta / nu) with float32
or float64 parameters on CUDA tensors; a grid may be float16 / bfloat16 (autocast), read in the parameters'
precision. The matmuls follow ``torch.backends.cuda.matmul.allow_tf32`` as cuBLAS does. Import this module only
where Triton is installed; :mod:`rnnpool.nn.fused` does so on first use. Under ``TRITON_INTERPRET=1`` (set before
the first import) the same kernels run on CPU tensors through Triton's interpreter: that is how the tests check
them on machines without a GPU.
"""
from __future__ import annotations

import contextlib
from typing import List, Optional, Tuple

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from .fused import contiguous_strides

# Where a step's gradient goes: straight into the gradient of the grid's tensor (the grid is that tensor, in
# order, read once), added atomically into it (overlapping or reversed grids), or into a (T, S, H) buffer that
# index_put_ adds deterministically.
STORE, ATOMIC, BUFFER = 0, 1, 2


@triton.jit
def _act(x, KIND: tl.constexpr):
    """The nonlinearity numbered as rnnpool.nn.fused.ACTIVATIONS."""
    if KIND == 0:
        y = 1.0 / (1.0 + tl.exp(-x))
    elif KIND == 1:
        y = 2.0 / (1.0 + tl.exp(-2.0 * x)) - 1.0
    elif KIND == 2:
        y = tl.minimum(tl.maximum((x + 1.0) * 0.5, 0.0), 1.0)
    elif KIND == 3:
        y = tl.minimum(tl.maximum(x, -1.0), 1.0)
    elif KIND == 4:
        y = tl.maximum(x, 0.0)
    else:
        y = x
    return y


@triton.jit
def _act_grad(x, y, KIND: tl.constexpr):
    """d act / d x from its input x and output y, with torch's conventions at the kinks (clamp passes the
    gradient only strictly inside its interval, relu only above 0)."""
    if KIND == 0:
        d = y * (1.0 - y)
    elif KIND == 1:
        d = 1.0 - y * y
    elif KIND == 2:
        v = (x + 1.0) * 0.5
        d = tl.where((v > 0.0) & (v < 1.0), 0.5, 0.0)
    elif KIND == 3:
        d = tl.where((x > -1.0) & (x < 1.0), 1.0, 0.0)
    elif KIND == 4:
        d = tl.where(x > 0.0, 1.0, 0.0)
    else:
        d = tl.full(x.shape, 1.0, x.dtype)
    return d.to(x.dtype)


@triton.jit
def _times_u(h, m, USE_DOT: tl.constexpr, PRECISION: tl.constexpr):
    """The product h @ m of (BLOCK, HP) rows and an (HP, HP) matrix: m = U^T gives U h per sequence."""
    if USE_DOT:
        r = tl.dot(h, m, input_precision=PRECISION)
    else:
        r = tl.sum(h[:, :, None] * m[None, :, :], axis=1)
    return r


@triton.jit
def _step_input(start, st, sn, sl, sm, sg, T, L, M, S, H, BLOCK: tl.constexpr, HP: tl.constexpr):
    """For this program's block of sequences in direction program_id(1): the address of each sequence's first
    step (BLOCK, HP), the step between steps (negative when reversed), the direction, the sequence indices and
    the mask of live (sequence, unit) pairs."""
    direction = tl.program_id(1)
    seq = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    unit = tl.arange(0, HP)
    mask = (seq < S)[:, None] & (unit < H)[None, :]
    s64 = seq.to(tl.int64)
    sign = (1 - 2 * direction + s64 * 0)[:, None]  # int64; the reversed direction starts at the last step, walks back
    first = start + _sequence_offset(s64, L, M, sn, sl, sm)
    first = first[:, None] + unit[None, :].to(tl.int64) * sg + (1 - sign) // 2 * (T - 1) * st
    return first, sign * st, direction, s64, mask


@triton.jit
def _sequence_offset(s64, L, M, sn, sl, sm):
    """Where sequence s = (n, l, m) of an (N, L, M) batch lies, given the strides of n, l and m."""
    return (s64 // (L * M)) * sn + ((s64 // M) % L) * sl + (s64 % M) * sm


@triton.jit
def _forward_kernel(x_ptr, start, st, sn, sl, sm, sg, T, L, M, S, H,
                    offset_ptr, u_ptr, bias_ptr, zeta_ptr, nu_ptr, out_ptr, od, on, ol, om, og, states_ptr,
                    GATE: tl.constexpr, UPDATE: tl.constexpr, HP: tl.constexpr, BLOCK: tl.constexpr,
                    SAVE: tl.constexpr, USE_DOT: tl.constexpr, PRECISION: tl.constexpr):
    address, step, direction, s64, mask = _step_input(start, st, sn, sl, sm, sg, T, L, M, S, H, BLOCK, HP)
    unit = tl.arange(0, HP)
    live_unit = unit < H
    offset = tl.load(offset_ptr + unit, mask=live_unit, other=0.0)
    bias = tl.load(bias_ptr + unit, mask=live_unit, other=0.0)
    ut = tl.load(u_ptr + unit[None, :] * H + unit[:, None], mask=live_unit[:, None] & live_unit[None, :], other=0.0)  # U^T
    zeta = tl.load(zeta_ptr)
    nu = tl.load(nu_ptr)
    row = (direction * S + s64)[:, None]
    rows = tl.num_programs(1) * S  # the states are (T, D*S, H): a step's states lie together
    h = tl.zeros([BLOCK, HP], dtype=offset.dtype)
    for t in range(0, T):
        if SAVE:
            tl.store(states_ptr + (t * rows + row) * H + unit[None, :], h, mask=mask)
        x = tl.load(x_ptr + address + t * step, mask=mask, other=0.0).to(offset.dtype)
        pre = x + offset[None, :] + _times_u(h, ut, USE_DOT, PRECISION)
        z = _act(pre, GATE)
        c = _act(pre + bias[None, :], UPDATE)
        h = (zeta * (1.0 - z) + nu) * c + z * h
    # the final states: direction d, sequence (n, l, m), unit g at d od + n on + l ol + m om + g og
    final = direction * od + _sequence_offset(s64, L, M, on, ol, om)
    tl.store(out_ptr + final[:, None] + unit[None, :].to(tl.int64) * og, h, mask=mask)


@triton.jit
def _backward_kernel(x_ptr, start, st, sn, sl, sm, sg, T, L, M, S, H,
                     offset_ptr, u_ptr, bias_ptr, zeta_ptr, nu_ptr, states_ptr, grad_out_ptr, grad_ptr, parts_ptr,
                     GATE: tl.constexpr, UPDATE: tl.constexpr, HP: tl.constexpr, BLOCK: tl.constexpr,
                     SCATTER: tl.constexpr, USE_DOT: tl.constexpr, PRECISION: tl.constexpr):
    address, step, direction, s64, mask = _step_input(start, st, sn, sl, sm, sg, T, L, M, S, H, BLOCK, HP)
    unit = tl.arange(0, HP)
    live_unit = unit < H
    both = live_unit[:, None] & live_unit[None, :]
    offset = tl.load(offset_ptr + unit, mask=live_unit, other=0.0)
    bias = tl.load(bias_ptr + unit, mask=live_unit, other=0.0)
    u = tl.load(u_ptr + unit[:, None] * H + unit[None, :], mask=both, other=0.0)  # U
    ut = tl.load(u_ptr + unit[None, :] * H + unit[:, None], mask=both, other=0.0)  # U^T
    zeta = tl.load(zeta_ptr)
    nu = tl.load(nu_ptr)
    row = (direction * S + s64)[:, None]
    rows = tl.num_programs(1) * S
    dh = tl.load(grad_out_ptr + row * H + unit[None, :], mask=mask, other=0.0).to(offset.dtype)
    du = tl.zeros([HP, HP], dtype=offset.dtype)
    dbias = tl.zeros([BLOCK, HP], dtype=offset.dtype)
    doffset = tl.zeros([BLOCK, HP], dtype=offset.dtype)
    dzeta = tl.zeros([BLOCK, HP], dtype=offset.dtype)
    dnu = tl.zeros([BLOCK, HP], dtype=offset.dtype)
    for k in range(0, T):
        t = T - 1 - k
        h = tl.load(states_ptr + (t * rows + row) * H + unit[None, :], mask=mask, other=0.0)
        x = tl.load(x_ptr + address + t * step, mask=mask, other=0.0).to(offset.dtype)
        pre = x + offset[None, :] + _times_u(h, ut, USE_DOT, PRECISION)
        z = _act(pre, GATE)
        av = pre + bias[None, :]
        c = _act(av, UPDATE)
        dc = tl.where(mask, dh * (zeta * (1.0 - z) + nu) * _act_grad(av, c, UPDATE), 0.0)
        dpre = dc + tl.where(mask, dh * (h - zeta * c) * _act_grad(pre, z, GATE), 0.0)
        dbias += dc
        doffset += dpre
        dzeta += tl.where(mask, dh * (1.0 - z) * c, 0.0)
        dnu += tl.where(mask, dh * c, 0.0)
        if SCATTER == 0:
            tl.store(grad_ptr + address + t * step, dpre, mask=mask)
        elif SCATTER == 1:
            tl.atomic_add(grad_ptr + address + t * step, dpre, mask=mask)
        else:  # into this direction's (T, S, H) buffer, at the grid's own time order
            at = direction * (T - 1) + (1 - 2 * direction) * t  # the step's index in the grid's own time order
            tl.store(grad_ptr + ((direction * T + at) * S + s64[:, None]) * H + unit[None, :], dpre, mask=mask)
        dh = dh * z + _times_u(dpre, u, USE_DOT, PRECISION)  # d h_prev = dh z + dpre U
        if USE_DOT:
            du += tl.dot(tl.trans(dpre), h, input_precision=PRECISION)  # d U = sum dpre^T h
        else:
            du += tl.sum(dpre[:, :, None] * h[:, None, :], axis=0)
    # this program's sums: d U (H x H) | d bias_diff (H) | d offset (H) | d zeta | d nu
    part = parts_ptr + (tl.program_id(1) * tl.num_programs(0) + tl.program_id(0)).to(tl.int64) * (H * H + 2 * H + 2)
    tl.store(part + unit[:, None] * H + unit[None, :], du, mask=both)
    tl.store(part + H * H + unit, tl.sum(dbias, axis=0), mask=live_unit)
    tl.store(part + H * H + H + unit, tl.sum(doffset, axis=0), mask=live_unit)
    tl.store(part + H * H + 2 * H, tl.sum(tl.sum(dzeta, axis=1), axis=0))
    tl.store(part + H * H + 2 * H + 1, tl.sum(tl.sum(dnu, axis=1), axis=0))


def _config(hidden: int, dtype: torch.dtype) -> Tuple[int, int, bool]:
    """(padded hidden size, sequences per program, whether U h is a tl.dot) for a cell of ``hidden`` units."""
    padded = triton.next_power_of_2(hidden)
    use_dot = dtype == torch.float32 and padded >= 16  # tl.dot needs 16 x 16 tiles; float64 takes the product
    if use_dot:
        block = max(16, min(64, 2048 // padded))
    else:  # the broadcast product holds BLOCK x HP x HP values
        block = max(16, min(128, 4096 // (padded * padded)))
    return padded, block, use_dot


def _on(device: torch.device):
    """Triton launches on the current CUDA device: make it the tensors' one (a no-op for the interpreter's CPU)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _precision() -> str:
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee"


def _launch_args(base: torch.Tensor, geometry) -> list:
    (t, n, l, m, h), (st, sn, sl, sm, sg), start = geometry
    return [base, start, st, sn, sl, sm, sg, t, l, m, n * l * m, h]


def scan_forward(base: torch.Tensor, geometry, constants, gate: int, update: int, directions: int, save_states: bool,
                 dest: Optional[torch.Tensor] = None, reversed_dest: Optional[torch.Tensor] = None):
    """The forward kernel over the grid ``geometry`` of ``base`` (see :class:`TritonFastGRNNScan`); ``constants``:
    offset, U, bias_diff, zeta, nu, contiguous in the parameters' dtype. Final states (D*S, H) and, with
    ``save_states``, the state before every step (T, D*S, H) for the backward (else None).

    With ``dest`` (N, L, M, H), any strides (an inference call): the final states go there instead, and those of
    the reversed direction (``directions`` 2) into ``reversed_dest``, a view of the same tensor with the same
    strides; returns (dest, None)."""
    t, n, l, m, h = geometry[0]
    sequences = n * l * m
    dtype = constants[1].dtype
    hp, block, use_dot = _config(h, dtype)
    if dest is None:
        out = torch.empty(directions * sequences, h, dtype=dtype, device=base.device)
        strides = (sequences * h, l * m * h, m * h, h, 1)
    else:
        out = dest
        apart = reversed_dest.storage_offset() - dest.storage_offset() if directions == 2 else 0
        strides = (apart, *dest.stride())
    states = torch.empty(t, directions * sequences, h, dtype=dtype, device=base.device) if save_states else None
    if sequences:
        with _on(base.device):
            _forward_kernel[(triton.cdiv(sequences, block), directions)](
                *_launch_args(base, geometry), *constants, out, *strides, out if states is None else states, GATE=gate,
                UPDATE=update, HP=hp, BLOCK=block, SAVE=save_states, USE_DOT=use_dot, PRECISION=_precision())
    return out, states


class TritonFastGRNNScan(torch.autograd.Function):
    """Final states (D*S, H) of FastGRNN over a grid of ``W x`` (T, N, L, M, H) given as the strided view
    ``geometry`` = (size, stride, start) of the contiguous ``base`` (S = N*L*M sequences; offset not added),
    forward in time, and with ``directions`` 2 also reversed (rows S..2S-1). ``constants``: the cell's values as
    the kernels read them (:func:`kernel_constants`), made once per cell and call."""

    @staticmethod
    def forward(ctx, base: torch.Tensor, geometry, offset: torch.Tensor, u: torch.Tensor, bias_diff: torch.Tensor,
                zeta: torch.Tensor, nu: torch.Tensor, gate: int, update: int, directions: int, constants) -> torch.Tensor:
        train = any(ctx.needs_input_grad)
        out, states = scan_forward(base, geometry, constants, gate, update, directions, train)
        if train:
            ctx.save_for_backward(base, *constants, states)
            ctx.geometry, ctx.kinds, ctx.directions = geometry, (gate, update), directions
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        base, offset, u, bias_diff, zeta, nu, states = ctx.saved_tensors
        (size, stride, start), (gate, update), directions = ctx.geometry, ctx.kinds, ctx.directions
        t, n, l, m, h = size
        sequences = n * l * m
        hp, block, use_dot = _config(h, u.dtype)
        programs = triton.cdiv(sequences, block)
        parts = torch.zeros(directions * programs, h * h + 2 * h + 2, dtype=u.dtype, device=base.device)
        whole = directions == 1 and start == 0 and tuple(stride) == contiguous_strides(size) and base.numel() == t * sequences * h
        if whole:
            scatter, grad = STORE, torch.empty(base.shape, dtype=u.dtype, device=base.device)
        elif torch.are_deterministic_algorithms_enabled():
            scatter, grad = BUFFER, torch.zeros(directions, t, sequences, h, dtype=u.dtype, device=base.device)
        else:
            scatter, grad = ATOMIC, torch.zeros(base.shape, dtype=u.dtype, device=base.device)
        if sequences:
            with _on(base.device):
                _backward_kernel[(programs, directions)](
                    *_launch_args(base, geometry=ctx.geometry), offset, u, bias_diff, zeta, nu, states, grad_out.contiguous(),
                    grad, parts, GATE=gate, UPDATE=update, HP=hp, BLOCK=block, SCATTER=scatter, USE_DOT=use_dot,
                    PRECISION=_precision())
        if scatter == BUFFER:  # each grid element's address in base, then a deterministic accumulate
            index = torch.full((), start, dtype=torch.int64, device=base.device)
            for dim, (extent, s) in enumerate(zip(size, stride)):
                shape = [1] * 5
                shape[dim] = extent
                index = index + (torch.arange(extent, device=base.device) * s).view(shape)
            flat = torch.zeros(base.numel(), dtype=u.dtype, device=base.device)
            grad = flat.index_put_((index.reshape(-1),), grad.sum(0).reshape(-1), accumulate=True).view(base.shape)
        total = parts.sum(0)
        needs = ctx.needs_input_grad
        return (grad.to(base.dtype) if needs[0] else None, None,
                total[h * h + h: h * h + 2 * h] if needs[2] else None,
                total[: h * h].view(h, h) if needs[3] else None,
                total[h * h: h * h + h] if needs[4] else None,
                total[-2].reshape(zeta.shape) if needs[5] else None,
                total[-1].reshape(nu.shape) if needs[6] else None,
                None, None, None, None)


def kernel_constants(offset: torch.Tensor, u: torch.Tensor, bias_diff: torch.Tensor, zeta: torch.Tensor,
                     nu: torch.Tensor) -> List[torch.Tensor]:
    """offset, U, bias_diff, zeta, nu as the kernels read them: detached, contiguous, in U's dtype."""
    return [v.detach().to(u.dtype).contiguous() for v in (offset, u, bias_diff, zeta, nu)]


def triton_scan(base: torch.Tensor, geometry, offset: torch.Tensor, u: torch.Tensor, bias_diff: torch.Tensor, zeta: torch.Tensor,
                nu: torch.Tensor, gate: int, update: int, both_directions: bool, constants) -> List[torch.Tensor]:
    """The grid's final states (S, H), and with ``both_directions`` those of the grid reversed in time too;
    ``constants`` from :func:`kernel_constants`."""
    directions = 2 if both_directions else 1
    if torch.is_grad_enabled():
        out = TritonFastGRNNScan.apply(base, geometry, offset, u, bias_diff, zeta, nu, gate, update, directions, constants)
    else:  # no Function: under no_grad it would still see parameters that need gradients and save the states
        out = scan_forward(base, geometry, constants, gate, update, directions, False)[0]
    return list(out.chunk(2, 0)) if both_directions else [out]


__all__ = ["TritonFastGRNNScan", "kernel_constants", "triton_scan"]
