import io

import pytest
import torch
from hypothesis import given, settings, strategies as st

from rnnpool.nn import RNNPool2d, rnnpool_output_size

from .reference import reference_rnnpool

CELL_OPTIONS = [
    ("fastgrnn", {}),
    ("fastgrnn", {"w_rank": 2, "u_rank": 2, "gate_nonlinearity": "quant_sigmoid", "update_nonlinearity": "quant_tanh"}),
    ("fastgrnn", {"zeta_init": 0.3, "nu_init": -0.7, "train_zeta_nu": True}),
    ("gru", {}),
    ("lstm", {}),
]


@settings(max_examples=30, deadline=None)
@given(
    cell=st.sampled_from(CELL_OPTIONS),
    n=st.integers(1, 2),
    channels=st.integers(1, 4),
    height=st.integers(2, 11),
    width=st.integers(2, 11),
    patch=st.tuples(st.integers(1, 5), st.integers(1, 5)),
    stride=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    padding=st.tuples(st.integers(0, 2), st.integers(0, 2)),
    hidden=st.tuples(st.integers(1, 5), st.integers(1, 5)),
    square=st.booleans(),
    chunk=st.sampled_from([-1, 0, 1, 7]),
    seed=st.integers(0, 2**16),
)
def test_fast_matches_reference(cell, n, channels, height, width, patch, stride, padding, hidden, square, chunk, seed):
    if square:
        patch = (patch[0], patch[0])
    if height + 2 * padding[0] < patch[0] or width + 2 * padding[1] < patch[1]:
        return
    torch.manual_seed(seed)
    layer = RNNPool2d(channels, patch, stride, hidden[0], hidden[1], padding=padding, cell=cell[0], cell_kwargs=cell[1], chunk_size=chunk)
    layer = layer.double()
    x = torch.randn(n, channels, height, width, dtype=torch.float64)
    out = layer(x)
    assert out.shape == (n, 4 * hidden[1], *layer.output_size(height, width))
    torch.testing.assert_close(out, reference_rnnpool(layer, x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("cell", ["fastgrnn", "gru", "lstm"])
def test_gradients_match_reference(cell):
    torch.manual_seed(0)
    layer = RNNPool2d(3, 4, 2, 3, 2, padding=1, cell=cell, cell_kwargs={"zeta_init": 1.0, "nu_init": -1.0, "train_zeta_nu": True} if cell == "fastgrnn" else None).double()
    x = torch.randn(1, 3, 7, 6, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(1, 8, 3, 3, dtype=torch.float64)
    fast = torch.autograd.grad((layer(x) * weights).sum(), [x, *layer.parameters()])
    ref = torch.autograd.grad((reference_rnnpool(layer, x) * weights).sum(), [x, *layer.parameters()])
    for a, b in zip(fast, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)


def test_gradcheck():
    torch.manual_seed(0)
    layer = RNNPool2d(2, 3, 2, 2, 2, padding=1).double()
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))


@pytest.mark.parametrize("size,patch,stride,padding", [(112, 6, 4, 1), (112, 6, 4, 0), (17, 3, 2, 1), (9, 4, 3, 2), (8, 8, 4, 0)])
def test_output_size_matches_maxpool(size, patch, stride, padding):
    layer = RNNPool2d(1, patch, stride, 2, 2, padding=padding)
    expected = torch.nn.MaxPool2d(patch, stride, padding)(torch.zeros(1, 1, size, size + 3)).shape[2:]
    assert layer(torch.zeros(1, 1, size, size + 3)).shape[2:] == expected
    assert layer.output_size(size, size + 3) == tuple(expected)
    assert rnnpool_output_size(size, patch, stride, padding) == expected[0]


@pytest.mark.parametrize("chunk", [-1, 0, 5])
def test_empty_batch(chunk):
    """A batch of 0 gives an empty (0, C, H', W') output, as nn.MaxPool2d does, and backpropagates."""
    layer = RNNPool2d(3, 8, 4, 8, 8, chunk_size=chunk)
    x = torch.randn(0, 3, 32, 40, requires_grad=True)
    y = layer(x)
    assert y.shape == (0, 32, 7, 9) == (0, 32) + torch.nn.MaxPool2d(8, 4)(x).shape[2:]
    y.sum().backward()
    assert x.grad.shape == x.shape and torch.equal(layer.rnn1.w1.grad, torch.zeros_like(layer.rnn1.w1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtypes(dtype):
    layer = RNNPool2d(4, 6, 4, 8, 8, padding=1).to(dtype)
    out = layer(torch.randn(2, 4, 24, 20, dtype=dtype))
    assert out.dtype == dtype and out.shape == (2, 32, 6, 5)


def test_autocast_cpu_bfloat16():
    torch.manual_seed(0)
    layer = RNNPool2d(8, 6, 4, 8, 8, padding=1)
    x = torch.randn(2, 8, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), layer(x), rtol=0, atol=0.1)


@pytest.mark.parametrize("cell", ["fastgrnn", "gru", "lstm"])
def test_torchscript_and_compile(cell):
    torch.manual_seed(0)
    layer = RNNPool2d(3, (4, 3), 2, 4, 5, padding=1, cell=cell).eval()
    x = torch.randn(2, 3, 10, 9)
    expected = layer(x)
    torch.testing.assert_close(torch.jit.script(layer)(x), expected)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), expected)


def test_onnx_export_matches_onnxruntime():
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    layer = RNNPool2d(4, 6, 4, 8, 8, padding=1).eval()
    x = torch.randn(1, 4, 30, 26)
    program = torch.onnx.export(layer, (x,), dynamo=True)
    buffer = io.BytesIO()
    program.save(buffer)
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(out), layer(x), rtol=0, atol=1e-5)


def test_state_dict_round_trip():
    a, b = RNNPool2d(3, 4, 2, 4, 4), RNNPool2d(3, 4, 2, 4, 4)
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


def test_bad_input_errors():
    layer = RNNPool2d(3, 6, 4, 4, 4, padding=1)
    with pytest.raises(ValueError, match="expects 3 input channels, got 5"):
        layer(torch.zeros(1, 5, 16, 16))
    with pytest.raises(ValueError, match="4-D"):
        layer(torch.zeros(3, 16, 16))
    with pytest.raises(TypeError, match="expects a floating-point input, got torch.int64"):
        layer(torch.zeros(1, 3, 16, 16, dtype=torch.int64))
    with pytest.raises(TypeError, match="parameters are torch.float32 and its input is torch.float16"):
        layer(torch.zeros(1, 3, 16, 16, dtype=torch.float16))
    with pytest.raises(ValueError, match="patch 6x6 is larger than the padded input 5x18"):
        layer(torch.zeros(1, 3, 3, 16))
    with pytest.raises(ValueError, match="patch_size must be >= 1"):
        RNNPool2d(3, 0, 4, 4, 4)
    with pytest.raises(ValueError, match="stride must be >= 1"):
        RNNPool2d(3, 6, (4, -1), 4, 4)
    with pytest.raises(ValueError, match="padding must be >= 0"):
        RNNPool2d(3, 6, 4, 4, 4, padding=-1)
    with pytest.raises(ValueError, match="hidden_row must be a positive int"):
        RNNPool2d(3, 6, 4, 0, 4)
    with pytest.raises(ValueError, match="in_channels must be a positive int"):
        RNNPool2d(-3, 6, 4, 4, 4)
    with pytest.raises(ValueError, match="chunk_size must be -1"):
        RNNPool2d(3, 6, 4, 4, 4, chunk_size=-2)
    with pytest.raises(ValueError, match="unknown cell 'lstn'"):
        RNNPool2d(3, 6, 4, 4, 4, cell="lstn")


def test_compiled_recurrence_matches_eager_with_gradients():
    from rnnpool.nn import compile_recurrence

    torch.manual_seed(0)
    layer = RNNPool2d(3, 4, 2, 8, 9, padding=1).double()
    x = torch.randn(2, 3, 9, 10, dtype=torch.float64, requires_grad=True)
    eager = layer(x)
    (grad_eager,) = torch.autograd.grad(eager.square().sum(), x)
    compiled_layer = compile_recurrence(layer)
    assert all(m.compiled for m in (layer.rnn1, layer.rnn2))
    compiled = compiled_layer(x)
    (grad_compiled,) = torch.autograd.grad(compiled.square().sum(), x)
    torch.testing.assert_close(compiled, eager, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(grad_compiled, grad_eager, atol=1e-10, rtol=1e-10)
    compile_recurrence(layer, enabled=False)
    assert not layer.rnn1.compiled


def test_compile_failure_warns_and_runs_eagerly(monkeypatch):
    from rnnpool.nn import compile_recurrence

    def broken_compile(fn, **kwargs):
        def run(*args):
            raise RuntimeError("no C++ compiler")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    layer = RNNPool2d(3, 4, 2, 8, 8)
    x = torch.randn(1, 3, 8, 8)
    expected = layer(x)
    assert not compile_recurrence(RNNPool2d(3, 4, 2, 4, 4)).rnn1.compiled  # small cells stay eager
    compile_recurrence(layer)
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler"):
        out = layer(x)
    torch.testing.assert_close(out, expected)
    assert not layer.rnn1.compiled
