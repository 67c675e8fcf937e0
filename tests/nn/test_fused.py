"""The fused FastGRNN kernel (rnnpool.nn.fused) against independent oracles: the per-patch reference RNNPool
(every gate x update pair, outputs and every gradient, float64), torch.autograd.gradcheck on a strided grid,
and the eager PyTorch path it replaces (float32, odd sizes, non-contiguous and channels-last inputs)."""
import itertools
import subprocess
import sys
import warnings

import pytest
import torch

from rnnpool.nn import FastGRNNCell, RNNPool2d
from rnnpool.nn import fused as fused_module
from rnnpool.nn.activations import NONLINEARITIES
from rnnpool.nn.fused import fused_available, use_fused

from .reference import outputs_and_grads, reference_rnnpool

pytestmark = pytest.mark.skipif(not fused_available(), reason="the fused kernel cannot be built here (no C compiler)")


def assert_fused_matches_eager(layer, x):
    """float32: the layer's output and every gradient through the fused kernel equal the eager path's."""
    got = outputs_and_grads(layer, x, lambda l, v: l(v))
    with use_fused(False):
        expected = outputs_and_grads(layer, x, lambda l, v: l(v))
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("gate,update", list(itertools.product(NONLINEARITIES, NONLINEARITIES)))
def test_every_gate_and_update_matches_the_reference(gate, update):
    """Zero padding (pre-activations exactly at the quantized nonlinearities' kinks), h1 != h2, trainable zeta/nu."""
    torch.manual_seed(0)
    layer = RNNPool2d(3, 4, 2, 5, 6, padding=1, cell_kwargs=dict(gate_nonlinearity=gate, update_nonlinearity=update,
                                                                  train_zeta_nu=True, zeta_init=1.0, nu_init=-1.0)).double()
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64)
    expected = outputs_and_grads(layer, x, reference_rnnpool)
    got = outputs_and_grads(layer, x, lambda l, v: l(v))
    assert len(got) == len(expected) == 2 + 12
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("hidden", [4, 8, 16, 32, 48, 64, 7, 20, 72])
def test_every_compiled_size_and_the_generic_one_match_eager(hidden):
    """The kernel's vector widths (4..64, constant and generic) and its scalar body beyond 64, float32; low-rank W and U."""
    torch.manual_seed(hidden)
    layer = RNNPool2d(5, 6, 4, hidden, hidden, padding=1, cell_kwargs=dict(w_rank=3, u_rank=2) if hidden == 20 else None)
    assert_fused_matches_eager(layer, torch.randn(2, 5, 15, 13))


@pytest.mark.parametrize("gate,update", [("quant_sigmoid", "quant_tanh"), ("relu", "identity"), ("sigmoid", "tanh"), ("tanh", "sigmoid")])
@pytest.mark.parametrize("hidden", [3, 5])
def test_narrow_cells_match_eager_for_every_kind(gate, update, hidden):
    """float32 cells of up to 7 units run with sequences across the vector lanes (their own forward)."""
    torch.manual_seed(hidden)
    layer = RNNPool2d(4, 5, 3, hidden, hidden, padding=1, cell_kwargs=dict(gate_nonlinearity=gate, update_nonlinearity=update))
    assert_fused_matches_eager(layer, torch.randn(2, 4, 13, 11))


def test_backward_from_saved_pre_activations_gives_the_reference_gradients():
    """The backward replays each step from its saved pre-activation (no U h, d U summed inside the kernel):
    float64 against the per-patch reference (trainable zeta / nu), float32 against the eager path at a narrow, a
    vector (one and several vectors, low-rank U) and a scalar width."""
    torch.manual_seed(1)
    layer = RNNPool2d(3, 4, 2, 5, 6, padding=1, cell_kwargs=dict(train_zeta_nu=True)).double()
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64)
    for a, b in zip(outputs_and_grads(layer, x, lambda l, v: l(v)), outputs_and_grads(layer, x, reference_rnnpool)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    for hidden, kwargs in ((4, None), (12, None), (16, dict(u_rank=3)), (48, None), (72, None)):
        layer = RNNPool2d(5, 6, 4, hidden, hidden, padding=1, cell_kwargs=kwargs)
        assert_fused_matches_eager(layer, torch.randn(2, 5, 15, 13))


@pytest.mark.parametrize("threads,batch", [(1, 3), (2, 3), (2, 4)], ids=["one-thread", "images-uneven", "images-even"])
def test_input_gradient_at_any_thread_count_and_batch(threads, batch):
    """The backward's per-step gradients scattered into the projection's (threads over images or one thread) give
    the eager path's gradients, with the sequences split unevenly or evenly over the threads (float32, narrow and
    vector cells, reversed RNN2 grids included)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for hidden in (4, 16):
            torch.manual_seed(hidden)
            layer = RNNPool2d(3, 4, 2, hidden, hidden, padding=1)
            assert_fused_matches_eager(layer, torch.randn(batch, 3, 11, 9))
    finally:
        torch.set_num_threads(before)


def test_backward_when_the_input_needs_no_gradient():
    """W1 frozen and an input without gradient: RNN1's kernels are not asked for their input's gradient; U, the
    biases, zeta and nu still get the eager path's gradients."""
    torch.manual_seed(3)
    layer = RNNPool2d(3, 4, 2, 8, 8, cell_kwargs=dict(train_zeta_nu=True))
    layer.rnn1.w1.requires_grad_(False)
    layer.rnn2.w1.requires_grad_(False)
    x = torch.randn(2, 3, 10, 10)
    grads = []
    for fused_on in (True, False):
        layer.zero_grad(set_to_none=True)
        with use_fused(fused_on):
            layer(x).square().sum().backward()
        grads.append({name: p.grad.clone() for name, p in layer.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 4
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-5)


def test_inference_reuses_constants_only_while_the_parameters_are_unchanged():
    """An inference call reuses the kernel constants of the cell's last one; an optimizer step, load_state_dict,
    ``p.data = ...`` and a replaced parameter each make new ones (the output follows the eager path's)."""
    torch.manual_seed(2)
    layer = RNNPool2d(4, 4, 2, 8, 8)
    x = torch.randn(1, 4, 10, 10)

    def check():
        with torch.no_grad():
            got = layer(x)
            with use_fused(False):
                torch.testing.assert_close(got, layer(x), rtol=1e-4, atol=1e-5)
        return got

    first = check()
    torch.testing.assert_close(check(), first, rtol=0, atol=0)
    layer(x).sum().backward()
    torch.optim.SGD(layer.parameters(), lr=1.0).step()
    stepped = check()
    assert not torch.allclose(stepped, first)
    state = {k: v + 0.1 for k, v in layer.state_dict().items()}
    layer.load_state_dict(state)
    loaded = check()
    assert not torch.allclose(loaded, stepped)
    layer.rnn1.u1.data = layer.rnn1.u1.data * 2
    assert not torch.allclose(check(), loaded)
    layer.rnn2.bias_update = torch.nn.Parameter(layer.rnn2.bias_update.detach() - 1)
    check()


def test_gradcheck_on_an_overlapping_strided_grid():
    torch.manual_seed(0)
    proj = torch.randn(2, 5, 7, 3, dtype=torch.float64, requires_grad=True)

    def grid(p):  # (3 steps, 2, 5, 3 windows, 3): neighbouring windows share a column of p
        return p.unfold(2, 3, 2).permute(4, 0, 1, 2, 3)

    inputs = (proj, torch.randn(3, dtype=torch.float64, requires_grad=True), 0.5 * torch.randn(3, 3, dtype=torch.float64, requires_grad=True),
              torch.randn(3, dtype=torch.float64, requires_grad=True), torch.tensor([0.7], dtype=torch.float64, requires_grad=True),
              torch.tensor([0.2], dtype=torch.float64, requires_grad=True))
    for gate, update in ((0, 1), (2, 3), (0, 3)):
        assert torch.autograd.gradcheck(lambda p, offset, u, bias, *a: fused_module.FastGRNNScan.apply(
            p, (tuple(grid(p).shape), grid(p).stride(), 0), offset, u, bias, *a, gate, update,
            fused_module.kernel_constants(offset, u, bias)), inputs)


def test_input_layouts_and_threads_give_the_same_result():
    torch.manual_seed(0)
    layer = RNNPool2d(4, 5, 3, 16, 8, padding=(1, 2))
    x = torch.randn(3, 4, 17, 11)
    expected = layer(x)
    torch.testing.assert_close(layer(x.to(memory_format=torch.channels_last)), expected)
    wide = torch.randn(3, 4, 17, 22)[..., ::2]  # non-contiguous
    with use_fused(False):
        eager = layer(wide)
    torch.testing.assert_close(layer(wide), eager, rtol=1e-5, atol=1e-6)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        torch.testing.assert_close(layer(x), expected, rtol=0, atol=0)  # each sequence is one thread's: no reordering
    finally:
        torch.set_num_threads(threads)


def test_empty_batch_and_a_single_sequence():
    layer = RNNPool2d(3, 4, 4, 8, 8)
    x = torch.randn(0, 3, 8, 8, requires_grad=True)
    out = layer(x)
    assert out.shape == (0, 32, 2, 2)
    out.sum().backward()
    assert x.grad.shape == x.shape
    one = torch.randn(1, 3, 4, 4)
    with use_fused(False):
        expected = layer(one)
    torch.testing.assert_close(layer(one), expected)


def test_the_switch_selects_the_eager_path(monkeypatch):
    calls = []
    original = fused_module.fastgrnn_scan
    monkeypatch.setattr(fused_module, "fastgrnn_scan", lambda *a: calls.append(1) or original(*a))
    layer = RNNPool2d(3, 4, 2, 8, 8)
    x = torch.randn(1, 3, 8, 8)
    layer(x)
    assert len(calls) == 2  # RNN1 over rows and columns, RNN2 over both, forward and reversed
    with use_fused(False):
        layer(x)
    assert len(calls) == 2
    layer.double()(x.double())  # float64 runs fused too
    assert len(calls) == 4
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast's bfloat16 runs eagerly
        layer.float()(x)
    assert len(calls) == 4
    environment = subprocess.run([sys.executable, "-c", "from rnnpool.nn.fused import fused_enabled; print(fused_enabled())"],
                                 capture_output=True, text=True, env={**__import__("os").environ, "RNNPOOL_FUSED": "0"})
    assert environment.stdout.strip() == "False"


def test_inference_saves_no_states(monkeypatch):
    """Under no_grad the layer runs its inference path (six scans straight into their destinations in two kernel
    calls, RNN1's two sweeps and RNN2's four; no autograd Function, which would still see trainable parameters
    there and save every step's pre-activation); with gradients each scan saves its steps."""
    saved, inferred = [], []
    original, original_into = fused_module.scan_forward, fused_module.scans_into
    monkeypatch.setattr(fused_module, "scan_forward", lambda *a: saved.append(a[-1]) or original(*a))
    monkeypatch.setattr(fused_module, "scans_into", lambda *a, **k: inferred.append((a[0], len(a[1]))) or original_into(*a, **k))
    layer = RNNPool2d(3, 4, 2, 8, 8)
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        out = layer(x)
    assert saved == [] and inferred == [(layer.rnn1, 2), (layer.rnn2, 4)] and out.grad_fn is None
    layer(x).sum().backward()
    assert saved == [True] * 6 and len(inferred) == 2


@pytest.mark.parametrize("gate,update", list(itertools.product(NONLINEARITIES, NONLINEARITIES)))
def test_inference_path_matches_the_reference_for_every_gate_and_update(gate, update):
    """The no-grad path (input projection in one C pass, RNN1's summaries written through W2, RNN2's states written
    into the output's channels) against the per-patch reference RNNPool, float64: padding, h1 != h2, low-rank W."""
    torch.manual_seed(3)
    layer = RNNPool2d(3, 4, 2, 5, 6, padding=1, cell_kwargs=dict(gate_nonlinearity=gate, update_nonlinearity=update,
                                                                  zeta_init=1.0, nu_init=-1.0, w_rank=2)).double()
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64)
    with torch.no_grad():
        got, expected = layer(x), reference_rnnpool(layer, x)
    assert got.std() > 0.01  # live: the output varies
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("channels,hidden_row,hidden_summary", [(1, 1, 2), (3, 4, 9), (8, 8, 8), (5, 16, 24), (64, 48, 40),
                                                                (7, 70, 12), (2, 20, 70)])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_inference_path_matches_eager_at_every_width_and_layout(channels, hidden_row, hidden_summary, layout):
    """float32: the C input projection at 1..64 outputs (whole vectors or not, rows not a multiple of its pixel
    block), the vectorised and the scalar W2 epilogue (RNN2 of more than 64 features), the narrow, vector and scalar
    scans, gaps between patches (stride > patch) and overlaps; inputs that are not contiguous NCHW take a matmul for
    the projection instead."""
    torch.manual_seed(channels + hidden_row)
    layer = RNNPool2d(channels, (3, 5), (4, 2), hidden_row, hidden_summary, padding=(2, 1))
    x = torch.randn(3, channels, 19, 13)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":
        x = torch.randn(3, channels, 19, 26)[..., ::2]
    with torch.no_grad():
        got = layer(x)
        with use_fused(False):
            expected = layer(x)
    assert got.shape == (3, 4 * hidden_summary, 6, 6) and got.is_contiguous()
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("outputs", [1, 4, 8, 13, 16, 24, 40, 48, 57, 64])
def test_input_projection_equals_a_matmul_and_padding(outputs):
    """rnnpool_project_f32 against F.linear + F.pad: zero borders, every pixel block and tail."""
    torch.manual_seed(outputs)
    cell = FastGRNNCell(6, outputs)
    x = torch.randn(2, 6, 5, 11)
    with torch.no_grad():
        got = fused_module.project_input(cell, x, 2, 3)
        expected = torch.nn.functional.pad(torch.nn.functional.linear(x.permute(0, 2, 3, 1), cell.input_weight()),
                                           (0, 0, 3, 3, 2, 2))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert got[:, :2].abs().max() == 0 and got[:, :, -3:].abs().max() == 0 and got[:, 2:-2, 3:-3].abs().min() > 0


def test_scan_into_checks_its_destination():
    cell = FastGRNNCell(4, 8)
    grid = torch.randn(3, 2, 4, 5, 8)
    with torch.no_grad(), pytest.raises(ValueError, match="does not fit"):
        fused_module.scan_into(cell, grid, torch.empty(2, 4, 5, 7))


@pytest.mark.parametrize("hidden", [4, 16, 72])  # narrow, vector and scalar bodies
def test_scans_into_runs_several_grids_as_each_alone(hidden):
    """Several grids of one cell in one call (sharing the kernel's scratch; of different sizes; one read backwards;
    one not a view of a contiguous tensor, so copied first and held through the call) give what each gives in a
    call of its own, and that equals the eager recurrence."""
    torch.manual_seed(hidden)
    cell = FastGRNNCell(4, hidden)
    plain = torch.randn(3, 2, 4, 5, hidden)
    strided = torch.empty_strided((5, 2, 3, 2, hidden), (1, 5, 10, 30, 60)).copy_(
        torch.randn(5, 2, 3, 2, hidden))  # (T, N, L, M, H) in column-major order: its own base, not contiguous
    scans = [(plain, torch.empty(2, 4, 5, hidden), False), (strided, torch.empty(2, 3, 2, hidden), True),
             (plain, torch.empty(2, 4, 5, hidden), True)]
    with torch.no_grad():
        fused_module.scans_into(cell, scans)
        for grid, dest, reverse in scans:
            alone = torch.empty_like(dest)
            fused_module.scan_into(cell, grid, alone, reverse=reverse)
            torch.testing.assert_close(dest, alone, rtol=0, atol=0)
            steps = grid.flip(0) if reverse else grid
            with use_fused(False):
                eager = cell.run_grids([steps.contiguous()], 0)[0]
            torch.testing.assert_close(dest.reshape(-1, hidden), eager, rtol=1e-4, atol=1e-5)


def test_without_a_compiler_it_warns_once_and_runs_eagerly(monkeypatch, tmp_path):
    monkeypatch.setattr(fused_module, "_library", None)
    monkeypatch.setattr(fused_module, "_failure", None)
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("RNNPOOL_CACHE", str(tmp_path / "cache"))
    layer = RNNPool2d(3, 4, 2, 8, 8)
    x = torch.randn(1, 3, 8, 8)
    with pytest.warns(RuntimeWarning, match="fused FastGRNN kernel could not be built .*RNNPool runs its eager PyTorch path"):
        out = layer(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once
        torch.testing.assert_close(layer(x), out)
    with use_fused(False):
        torch.testing.assert_close(layer(x), out)


def test_cells_other_than_fastgrnn_run_eagerly():
    for cell in ("gru", "lstm"):
        layer = RNNPool2d(3, 4, 2, 4, 4, cell=cell).double()
        x = torch.randn(1, 3, 6, 6, dtype=torch.float64)
        torch.testing.assert_close(layer(x), reference_rnnpool(layer, x))
    assert FastGRNNCell(3, 4).run_fused([torch.randn(2, 1, 1, 3, 4, dtype=torch.float16)]) is None


def test_any_device_meta_and_across_devices(tmp_path):
    """No device is hard-coded: the layer builds and runs shape-only on the meta device, follows .to(), and
    a checkpoint saved on a GPU loads on the CPU (where a GPU is available)."""
    with torch.device("meta"):
        layer = RNNPool2d(3, 4, 2, 8, 8, padding=1)
        out = layer(torch.empty(2, 3, 9, 7))
    assert out.device.type == "meta" and out.shape == RNNPool2d(3, 4, 2, 8, 8, padding=1)(torch.randn(2, 3, 9, 7)).shape == (2, 32, 4, 3)
    assert all(p.device.type == "meta" for p in layer.parameters())
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: the cross-device round trip needs one")
    torch.manual_seed(0)
    layer = RNNPool2d(3, 4, 2, 8, 8).cuda()
    x = torch.randn(2, 3, 8, 8, device="cuda")
    expected = layer(x).cpu()
    torch.save(layer.state_dict(), tmp_path / "layer.pt")
    on_cpu = RNNPool2d(3, 4, 2, 8, 8)
    on_cpu.load_state_dict(torch.load(tmp_path / "layer.pt", map_location="cpu"))
    torch.testing.assert_close(on_cpu(x.cpu()), expected, rtol=1e-4, atol=1e-5)
