"""The Triton kernels of rnnpool.nn.fused_triton (the fused FastGRNN recurrence on GPUs) against independent
oracles: the per-patch reference RNNPool (float64, outputs and every gradient), torch.autograd.gradcheck on an
overlapping grid in both directions, and the eager PyTorch path (float32, the tl.dot widths and the broadcast
ones, half-precision grids).

On a CUDA machine the kernels compile and run on the GPU. Elsewhere the same kernels run on CPU tensors through
Triton's interpreter (TRITON_INTERPRET=1, which tests/conftest.py sets before Triton is first imported), with
rnnpool.nn.fused.BACKENDS routing CPU parameters to them."""
import importlib
import os
import sys
import warnings

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
INTERPRETED = DEVICE == "cpu"
triton = pytest.importorskip("triton")

from rnnpool.nn import FastGRNNCell, RNNPool2d  # noqa: E402
from rnnpool.nn import fused as fused_module  # noqa: E402
from rnnpool.nn.activations import NONLINEARITIES  # noqa: E402
from rnnpool.nn.fused import use_fused  # noqa: E402

from .reference import outputs_and_grads, reference_rnnpool  # noqa: E402


def _kernels():
    """rnnpool.nn.fused_triton with kernels that run on DEVICE: interpreted ones on CPUs (the interpreter is
    chosen when the kernels are defined, so the module is (re)loaded under TRITON_INTERPRET=1)."""
    from triton.runtime.interpreter import InterpretedFunction
    if INTERPRETED and not isinstance(triton.language.zeros, InterpretedFunction):
        if os.environ.get("TRITON_INTERPRET") == "1":  # set by tests/conftest.py, yet Triton came first: a bug
            pytest.fail("Triton was imported before tests/conftest.py set TRITON_INTERPRET=1")
        pytest.skip("no GPU, and TRITON_INTERPRET is switched off")
    module = importlib.import_module("rnnpool.nn.fused_triton")
    if INTERPRETED != isinstance(module._forward_kernel, InterpretedFunction):
        module = importlib.reload(module)
    return module


@pytest.fixture(autouse=True)
def triton_kernels(monkeypatch):
    if INTERPRETED:
        monkeypatch.setenv("TRITON_INTERPRET", "1")  # read when kernels are defined and at each launch
        monkeypatch.setitem(fused_module.BACKENDS, "cpu", "triton")
    monkeypatch.setattr(fused_module, "_triton_failure", None)
    return _kernels()


def launches(kernels, monkeypatch):
    """Count the kernels' launches (forward, backward) and record the backward's scatter mode."""
    counts = {"forward": 0, "backward": []}
    forward_run, backward_run = kernels._forward_kernel.run, kernels._backward_kernel.run

    def forward(*a, **k):
        counts["forward"] += 1
        counts.setdefault("save", []).append(k["SAVE"])
        return forward_run(*a, **k)

    def backward(*a, **k):
        counts["backward"].append(k["SCATTER"])
        return backward_run(*a, **k)

    monkeypatch.setattr(kernels._forward_kernel, "run", forward)
    monkeypatch.setattr(kernels._backward_kernel, "run", backward)
    return counts


# every nonlinearity twice as the gate and twice as the update (the kernel computes both with the same code),
# the pairs the models use among them
PAIRS = sorted({(g, NONLINEARITIES[(i + k) % 6]) for i, g in enumerate(NONLINEARITIES) for k in (1, 3)})
assert ("sigmoid", "tanh") in PAIRS and ("quant_sigmoid", "quant_tanh") in PAIRS


@pytest.mark.parametrize("gate,update", PAIRS)
def test_gates_and_updates_match_the_reference(gate, update, triton_kernels, monkeypatch):
    """float64, zero padding (pre-activations exactly at the quantized nonlinearities' kinks), h1 != h2 (h2 = 6
    pads to 8 units), trainable zeta / nu; every gradient."""
    counts = launches(triton_kernels, monkeypatch)
    torch.manual_seed(0)
    layer = RNNPool2d(3, 4, 2, 5, 6, padding=1, cell_kwargs=dict(gate_nonlinearity=gate, update_nonlinearity=update,
                                                                  train_zeta_nu=True, zeta_init=1.0, nu_init=-1.0)).double()
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64)
    expected = outputs_and_grads(layer, x, reference_rnnpool)
    got = outputs_and_grads(layer.to(DEVICE), x.to(DEVICE), lambda l, v: l(v))
    assert counts["forward"] == 4 and len(counts["backward"]) == 4  # RNN1 rows, columns; RNN2 rows, columns (both ways)
    assert counts["save"] == [True] * 4
    with torch.no_grad():  # inference: no autograd Function, no per-step states saved
        torch.testing.assert_close(layer(x.to(DEVICE)), got[0])
    assert counts["save"][4:] == [False] * 4
    assert len(got) == len(expected) == 2 + 12
    for a, b in zip(got, expected):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("hidden", [4, 16, 48, 7, 20])
def test_widths_match_the_eager_path(hidden):
    """float32: U h as a broadcast product (4, 7: padded to 8) and as tl.dot (16, 48: padded to 64, 20: low-rank
    W and U, padded to 32)."""
    torch.manual_seed(hidden)
    layer = RNNPool2d(5, 6, 4, hidden, hidden, padding=1, cell_kwargs=dict(w_rank=3, u_rank=2) if hidden == 20 else None).to(DEVICE)
    x = torch.randn(2, 5, 15, 13, device=DEVICE)
    got = outputs_and_grads(layer, x, lambda l, v: l(v))
    with use_fused(False):
        expected = outputs_and_grads(layer, x, lambda l, v: l(v))
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_gradcheck_on_an_overlapping_grid_in_both_directions(triton_kernels):
    torch.manual_seed(0)
    proj = torch.randn(2, 5, 7, 3, dtype=torch.float64, device=DEVICE, requires_grad=True)

    def geometry(p):  # (3 steps, 2, 5, 3 windows, 3): neighbouring windows share a column of p
        grid = p.unfold(2, 3, 2).permute(4, 0, 1, 2, 3)
        return tuple(grid.shape), grid.stride(), 0

    def parameter(*shape, scale=1.0):
        return (scale * torch.randn(*shape, dtype=torch.float64, device=DEVICE)).requires_grad_(True)

    inputs = (proj, parameter(3), parameter(3, 3, scale=0.5), parameter(3), torch.tensor([0.7], dtype=torch.float64, device=DEVICE,
              requires_grad=True), torch.tensor([0.2], dtype=torch.float64, device=DEVICE, requires_grad=True))
    for gate, update in ((0, 1), (2, 3), (0, 3)):
        for directions in (1, 2):  # fast mode (a random projection of the Jacobian) where the interpreter runs
            assert torch.autograd.gradcheck(lambda p, *a: triton_kernels.TritonFastGRNNScan.apply(
                p, geometry(p), *a, gate, update, directions, triton_kernels.kernel_constants(*a)), inputs, fast_mode=INTERPRETED)


def test_scatter_modes_agree(triton_kernels, monkeypatch):
    """The backward adds each step's gradient atomically (overlapping and reversed grids), through index_put_
    under torch.use_deterministic_algorithms (bit-identical from run to run), or stores it (a whole grid)."""
    counts = launches(triton_kernels, monkeypatch)
    torch.manual_seed(0)
    layer = RNNPool2d(3, 4, 2, 8, 16, padding=1).to(DEVICE)
    x = torch.randn(2, 3, 9, 8, device=DEVICE)
    atomic = outputs_and_grads(layer, x, lambda l, v: l(v))
    assert counts["backward"] == [triton_kernels.ATOMIC] * 4
    monkeypatch.setattr(torch, "are_deterministic_algorithms_enabled", lambda: True)
    deterministic = outputs_and_grads(layer, x, lambda l, v: l(v))
    again = outputs_and_grads(layer, x, lambda l, v: l(v))
    assert counts["backward"][4:] == [triton_kernels.BUFFER] * 8
    for a, b, c in zip(atomic, deterministic, again):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        assert torch.equal(b, c)
    cell = FastGRNNCell(6, 16).to(DEVICE)
    grid = torch.randn(5, 2, 3, 4, 16, device=DEVICE, requires_grad=True)  # the grid is its own base, in order
    (out,) = cell.run_fused([grid])
    out.square().sum().backward()
    assert counts["backward"][-1] == triton_kernels.STORE
    eager_grid = grid.detach().requires_grad_(True)
    with use_fused(False):
        (expected,) = cell.run_grids([eager_grid], 0)
    expected.square().sum().backward()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grid.grad, eager_grid.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_grids_are_read_in_the_parameters_precision(dtype):
    """As under autocast: the grid is half precision, the cell float32; the result equals the eager path on the
    grid converted to float32, and the grid's gradient comes back in its own dtype."""
    torch.manual_seed(0)
    cell = FastGRNNCell(6, 8).to(DEVICE)
    grid = torch.randn(4, 2, 3, 5, 8, device=DEVICE).to(dtype).requires_grad_(True)
    assert fused_module.backend(cell, [grid]) == "triton"
    (out,) = cell.run_fused([grid])
    out.sum().backward()
    assert out.dtype == torch.float32 and grid.grad.dtype == dtype
    wide = grid.detach().float().requires_grad_(True)
    with use_fused(False):
        (expected,) = cell.run_grids([wide], 0)
    expected.sum().backward()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grid.grad, wide.grad.to(dtype))


def test_under_autocast_the_kernels_run_in_float32(triton_kernels, monkeypatch):
    """autocast makes the projections (and a low-rank U) half precision; the kernels still run, in float32."""
    counts = launches(triton_kernels, monkeypatch)
    torch.manual_seed(0)
    layer = RNNPool2d(3, 4, 2, 16, 8, cell_kwargs=dict(w_rank=2, u_rank=3)).to(DEVICE)
    x = torch.randn(2, 3, 10, 10, device=DEVICE)
    expected = layer(x)
    half = torch.float16 if DEVICE == "cuda" else torch.bfloat16
    with torch.autocast(DEVICE, dtype=half):
        out = layer(x)
    assert counts["forward"] == 8
    torch.testing.assert_close(out.float(), expected, rtol=0.05, atol=0.05)


def test_layouts_and_an_empty_batch():
    torch.manual_seed(0)
    layer = RNNPool2d(4, 5, 3, 16, 8, padding=(1, 2)).to(DEVICE)
    x = torch.randn(3, 4, 17, 11, device=DEVICE)
    with use_fused(False):
        expected = layer(x)
        wide = torch.randn(3, 4, 17, 22, device=DEVICE)[..., ::2]  # non-contiguous
        expected_wide = layer(wide)
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(layer(x.to(memory_format=torch.channels_last)), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(layer(wide), expected_wide, rtol=1e-5, atol=1e-6)
    empty = torch.randn(0, 4, 17, 11, device=DEVICE, requires_grad=True)
    out = layer(empty)
    out.sum().backward()
    assert out.shape == (0, 32, 5, 4) and empty.grad.shape == empty.shape


def test_a_kernel_that_fails_warns_once_and_the_eager_path_runs(monkeypatch, triton_kernels):
    def broken(*args, **kwargs):
        raise RuntimeError("no compiler for this GPU")

    monkeypatch.setattr(triton_kernels, "triton_scan", broken)
    layer = RNNPool2d(3, 4, 2, 8, 8).to(DEVICE)
    x = torch.randn(1, 3, 8, 8, device=DEVICE)
    with pytest.warns(RuntimeWarning, match="kernels for GPUs failed .*no compiler for this GPU.*eager PyTorch path"):
        out = layer(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once
        again = layer(x)
    with use_fused(False):
        torch.testing.assert_close(again, layer(x))
        torch.testing.assert_close(out, layer(x))


def test_the_backend_follows_the_parameters_device(monkeypatch):
    cell = FastGRNNCell(6, 8)
    grid = torch.randn(4, 1, 1, 3, 8)
    monkeypatch.setitem(fused_module.BACKENDS, "cpu", "c")
    if fused_module.fused_available():
        assert fused_module.backend(cell, [grid]) == "c"
    assert fused_module.backend(cell, [grid.half()]) is None  # the C kernel reads only its parameters' dtype
    monkeypatch.setitem(fused_module.BACKENDS, "cpu", "triton")
    assert fused_module.backend(cell, [grid.half()]) == "triton"
    assert fused_module.backend(cell, [grid.int()]) is None
    with use_fused(False):
        assert fused_module.backend(cell, [grid]) is None
    assert fused_module.backend(FastGRNNCell(6, 8).to("meta"), [grid.to("meta")]) is None
    monkeypatch.setattr(fused_module, "_triton_failure", None)
    monkeypatch.setitem(sys.modules, "rnnpool.nn.fused_triton", None)  # as if Triton were not installed
    monkeypatch.delattr(sys.modules["rnnpool.nn"], "fused_triton", raising=False)
    with pytest.warns(RuntimeWarning, match="kernels for GPUs need Triton"):
        assert fused_module.backend(cell, [grid]) is None


def test_inference_writes_the_final_states_into_the_output(triton_kernels, monkeypatch):
    """Without autograd RNN2's four sweeps write their final states straight into the output's channels: two
    launches (each grid read both ways), a contiguous NCHW result equal to the eager path's. A lone reversed scan
    into a strided view, and a destination that does not fit."""
    counts = launches(triton_kernels, monkeypatch)
    torch.manual_seed(0)
    layer = RNNPool2d(4, 6, 4, 16, 8, padding=1).to(DEVICE)
    x = torch.randn(2, 4, 13, 15, device=DEVICE)
    with torch.no_grad():
        got = layer(x)
        with use_fused(False):
            expected = layer(x)
    assert counts["forward"] == 4 and counts["save"] == [False] * 4
    assert got.is_contiguous() and got.shape == expected.shape == (2, 32, 3, 3)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    cell = layer.rnn2
    grid = torch.randn(5, 2, 3, 4, 8, device=DEVICE)
    dest = torch.full((2, 8, 3, 4), float("nan"), device=DEVICE).permute(0, 2, 3, 1)  # (N, L, M, H), not contiguous
    with torch.no_grad():
        assert fused_module.scans_into(cell, [(grid, dest, True)])
        with use_fused(False):
            (reversed_states,) = cell.run_grids([grid.flip(0)], 0)
    torch.testing.assert_close(dest.reshape(-1, 8), reversed_states, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="destination"):
        fused_module.scans_into(cell, [(grid, torch.empty(2, 3, 4, 7, device=DEVICE), False)])
