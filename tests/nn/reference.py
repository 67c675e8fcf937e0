"""A deliberately plain RNNPool: one patch, one row/column and one time step at a time.

It shares nothing with the fast operator but the cells' single-step ``forward`` (whose equations
test_cells.py checks on their own), so it pins down the patch walk, padding, directions and output order.
"""
import torch
from torch.nn import functional as F


def run_cell(cell, inputs):
    """Final hidden vector after feeding the 1-D tensors ``inputs`` to ``cell`` from a zero state."""
    state = torch.zeros(1, cell.state_size, dtype=inputs[0].dtype)
    for x in inputs:
        state = cell(x[None], state)
    return cell.hidden(state)[0]


def reference_rnnpool(layer, x):
    """(N, C, H, W) -> (N, 4 * h2, H', W') by walking every patch explicitly."""
    (r, c), (sr, sc), (pr, pc) = layer.patch_size, layer.stride, layer.padding
    xp = F.pad(x, (pc, pc, pr, pr))
    n, _, hp, wp = xp.shape
    out_h, out_w = (hp - r) // sr + 1, (wp - c) // sc + 1
    out = torch.zeros(n, layer.out_channels, out_h, out_w, dtype=x.dtype)
    for b in range(n):
        for i in range(out_h):
            for j in range(out_w):
                patch = xp[b, :, i * sr : i * sr + r, j * sc : j * sc + c]  # (C, r, c)
                rows = [run_cell(layer.rnn1, [patch[:, a, k] for k in range(c)]) for a in range(r)]
                cols = [run_cell(layer.rnn1, [patch[:, a, k] for a in range(r)]) for k in range(c)]
                out[b, :, i, j] = torch.cat([
                    run_cell(layer.rnn2, rows),
                    run_cell(layer.rnn2, rows[::-1]),
                    run_cell(layer.rnn2, cols),
                    run_cell(layer.rnn2, cols[::-1]),
                ])
    return out


def outputs_and_grads(layer, x, run):
    """``run(layer, x)`` and, after backpropagating a fixed weighting of it, the gradients of x and of every
    trainable parameter: what the fast paths are compared on."""
    layer.zero_grad()
    x = x.detach().requires_grad_(True)
    out = run(layer, x)
    (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype, device=out.device).view_as(out)).sum().backward()
    # (copies: moving the layer to another device afterwards moves its parameters' .grad tensors in place)
    return [out.detach(), x.grad] + [p.grad.clone() for p in layer.parameters() if p.requires_grad]
