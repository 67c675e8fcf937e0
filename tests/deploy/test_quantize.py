"""int8 quantization: the graph against the model, each int8 op against plain float math (an oracle outside
the integer code), and the whole int8 model against the float one."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn
from torch.nn import functional as F

from rnnpool.deploy import QuantizationError, calibrate, quantize_graph, quantize_model, run_int8
from rnnpool.deploy.fixedpoint import NONLINEARITY_FUNCTIONS, PRE_BITS, STATE_BITS
from rnnpool.deploy.graph import AvgPoolOp, ConvOp, Graph, Head, L2NormOp, build_graph, run_float
from rnnpool.deploy.int8_reference import (DetectionSettings, cell_input, cell_run, dead_maps, dequantize, head_key_params,
                                           int8_detections)
from rnnpool.deploy.quantize import QTensor, _quantize_cell, mse_range

from .conftest import assert_live, input_shape, live_model, smooth_images, to_uint8


def sqnr_db(reference: np.ndarray, approx: np.ndarray) -> float:
    return 10 * np.log10((reference**2).mean() / ((reference - approx) ** 2).mean())


@pytest.mark.parametrize("name", ["rnnpool_face_m4", "rnnpool_face_quant", "rnnpool_face_a", "mobilenetv2_035_rnnpool"])
def test_graph_runs_like_the_model(name):
    model = live_model(name)
    x = torch.stack(smooth_images(input_shape(model), 2))
    graph = build_graph(model)
    values = run_float(graph, x)
    if graph.task == "detection":
        out = model(x)
        for head, conf, loc in zip(graph.heads, out["conf"], out["loc"]):
            torch.testing.assert_close(values[head.conf], conf, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(values[head.loc], loc, atol=1e-4, rtol=1e-4)
    else:  # the classifiers' ImageNet normalisation is folded into the first conv
        mean = torch.tensor((0.485, 0.456, 0.406))[:, None, None]
        std = torch.tensor((0.229, 0.224, 0.225))[:, None, None]
        torch.testing.assert_close(values[graph.logits].flatten(1), model((x - mean) / std), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["rnnpool_face_m4", "rnnpool_face_quant", "mobilenetv2_035_rnnpool"])
def test_int8_reference_tracks_the_float_model_on_live_layers(name):
    """The first conv and the RNNPool layer (FastGRNN in Q12/Q14 with table nonlinearities) stay within
    25 dB of the float model. Deeper layers of these random (live, untrained) networks amplify every
    layer's rounding chaotically: a float model rounding each tensor to the same grid degrades alike, so
    they are judged by the per-op oracles below and by the trained models' AP in the benchmark."""
    model = live_model(name)
    images = smooth_images(input_shape(model), 4)
    graph = quantize_model(model, images[:3])
    assert_live(graph, [to_uint8(images[2]), to_uint8(images[3])])
    floats = run_float(build_graph(model), images[3][None])
    ints = run_int8(graph, to_uint8(images[3]))
    checked = [graph.ops[0].output] + [op.output for op in graph.ops if type(op).__name__ == "QRNNPool"]
    for tensor in checked:
        f = floats[tensor][0].permute(1, 2, 0).numpy()
        assert ints[tensor].dtype == np.int8 and ints[tensor].shape == f.shape
        assert sqnr_db(f, dequantize(graph, tensor, ints[tensor], model_units=True)) > 25, tensor


def test_dead_maps_names_layers_that_ignore_the_image():
    model = live_model("rnnpool_face_m4")
    images = smooth_images(input_shape(model), 4)
    with torch.no_grad():  # the stem ignores its input: it and everything up to the RNNPool are constant
        stem = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
        stem.weight.zero_()
    graph = quantize_model(model, images[:2])
    dead = dead_maps(graph, to_uint8(images[2]), to_uint8(images[3]))
    assert graph.ops[0].output in dead and "distinct values" in dead[graph.ops[0].output]
    assert all(name in dead for name in (op.output for op in graph.ops[:2]))


def test_percentile_calibration_clips_outliers_inside_the_network_only():
    """One outlier pixel stretches a min/max range; the 99th percentile ignores it (checked against NumPy's
    percentile of the same values), while the model's output keeps its min/max."""
    torch.manual_seed(0)
    inner = ConvOp("x", "h", torch.ones(1, 1, 1, 1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64), 1, 0, 1, None)
    outer = ConvOp("h", "y", torch.ones(1, 1, 1, 1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64), 1, 0, 1, None)
    graph = Graph("x", [inner, outer], shapes={"x": (1, 20, 20), "h": (1, 20, 20), "y": (1, 20, 20)}, logits="y",
                  task="classification")
    image = torch.rand(1, 20, 20) * 0.5
    image[0, 3, 4] = 1.0  # the outlier
    minmax = calibrate(graph, [image])
    clipped = calibrate(graph, [image], method="percentile", percentile=99.0)
    assert minmax["h"][1] == pytest.approx(1.0)
    assert clipped["h"] == pytest.approx(tuple(np.percentile(image.double().numpy(), [1.0, 99.0])), rel=1e-6)
    assert clipped["h"][1] < 0.5 and clipped["y"] == minmax["y"]
    with pytest.raises(ValueError, match="calibration method"):
        calibrate(graph, [image], method="entropy")
    with pytest.raises(ValueError, match="percentile"):
        calibrate(graph, [image], method="percentile", percentile=30.0)


def _int8_error(values: np.ndarray, low: float, high: float) -> float:
    """Mean squared error of asymmetric int8 over [low, high] (and 0), written out in NumPy."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = (high - low) / 255.0
    zero = np.clip(np.round(-128 - low / scale), -128, 127)
    q = np.clip(np.round(values / scale) + zero, -128, 127)
    return float((((q - zero) * scale - values) ** 2).mean())


def test_mse_calibration_clips_heavy_tails_only():
    """"mse" picks a range with less int8 error (computed here in NumPy) than min/max or the percentiles. With
    int8's fine steps only long tails are worth clipping, and only a little: it clips Student-t values (3 degrees
    of freedom), keeps the whole range of uniform ones and of one outlier among a few values (whose clipping
    error would outweigh the rounding saved), and leaves the model's output at its min/max."""
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)  # the distribution samples from the global generator
    heavy = torch.distributions.StudentT(3.0).sample((32768,)).double()
    values = heavy.numpy()
    low, high = mse_range(heavy, values.min(), values.max())
    assert values.min() < low < 0 < high < values.max()
    error = _int8_error(values, low, high)
    assert error < _int8_error(values, values.min(), values.max())
    for share in (99.0, 99.99):
        assert error < _int8_error(values, *np.percentile(values, [100 - share, share]))

    inner = ConvOp("x", "h", torch.ones(1, 1, 1, 1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64), 1, 0, 1, None)
    outer = ConvOp("h", "y", -torch.ones(1, 1, 1, 1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64), 1, 0, 1, None)
    graph = Graph("x", [inner, outer], shapes={"x": (1, 40, 40), "h": (1, 40, 40), "y": (1, 40, 40)}, logits="y",
                  task="classification")
    image = torch.rand(1, 40, 40, generator=generator) * 0.2
    assert calibrate(graph, [image], method="mse")["h"][1] == pytest.approx(image.max().item(), rel=1e-6)
    image[0, 5, 7] = 1.0
    minmax, chosen = calibrate(graph, [image]), calibrate(graph, [image], method="mse")
    assert chosen["h"][1] == minmax["h"][1] and chosen["y"] == minmax["y"] and chosen["x"] == minmax["x"]


def _single_op_graph(op, in_shape, out_shape) -> Graph:
    return Graph("x", [op], shapes={"x": in_shape, op.output: out_shape}, logits=op.output, task="classification")


def _params(x: torch.Tensor):
    from rnnpool.deploy.quantize import activation_params

    return activation_params(x.min().item(), x.max().item())


def _oracle_run(graph: Graph, x: torch.Tensor):
    """(int8 output, float64 output of the same op on the dequantized int8 input and weights, output tensor)."""
    scale, zp = _params(x)
    ranges = calibrate_any(graph, x)
    q = quantize_graph(graph, ranges, (scale, zp))
    x_int = np.clip(np.round(x[0].permute(1, 2, 0).numpy() / scale) + zp, -128, 127).astype(np.int8)
    from rnnpool.deploy.int8_reference import run_op

    y_int = run_op(q.ops[0], x_int)
    x_deq = torch.from_numpy((x_int.astype(np.float64) - zp) * scale).permute(2, 0, 1)[None]
    return q, y_int, x_deq


def calibrate_any(graph: Graph, x: torch.Tensor):
    values = run_float(graph, x)
    return {name: (v.min().item(), v.max().item()) for name, v in values.items()}


def _dequantized_conv(q, op_float: ConvOp):
    """The float conv with the int8 weights and int32 bias dequantized."""
    qc = q.ops[0]
    x = q.tensors[qc.input]
    w_scales = op_float.weight.reshape(op_float.weight.shape[0], -1).abs().amax(1).numpy() / 127.0
    w_scales = np.where(w_scales > 0, w_scales, 1.0)
    weight = torch.from_numpy(qc.weight.transpose(0, 3, 1, 2).astype(np.float64) * w_scales[:, None, None, None])
    bias = torch.from_numpy(qc.bias.astype(np.float64) * x.scale * w_scales)
    return ConvOp(op_float.input, op_float.output, weight, bias, op_float.stride, op_float.padding, op_float.groups,
                  op_float.act, op_float.maxout)


@settings(max_examples=25, deadline=None)
@given(cin=st.integers(1, 9), cout=st.integers(1, 9), k=st.sampled_from([1, 3, 5]), stride=st.sampled_from([1, 2]),
       depthwise=st.booleans(), act=st.sampled_from([None, "relu", "relu6"]), size=st.integers(5, 12), seed=st.integers(0, 999))
def test_conv_int8_equals_float_math_within_one_step(cin, cout, k, stride, depthwise, act, size, seed):
    """Oracle: the float conv on the dequantized input, weights and bias, quantized once: within 1 LSB."""
    gen = torch.Generator().manual_seed(seed)
    if depthwise:
        cout = cin
    groups = cin if depthwise else 1
    weight = torch.randn(cout, cin // groups, k, k, generator=gen, dtype=torch.float64) * 0.3
    bias = torch.randn(cout, generator=gen, dtype=torch.float64) * 0.2
    op = ConvOp("x", "y", weight, bias, stride, k // 2, groups, act)
    x = torch.rand(1, cin, size, size + 1, generator=gen) * 4 - 1
    out_h = (size + 2 * (k // 2) - k) // stride + 1
    out_w = (size + 1 + 2 * (k // 2) - k) // stride + 1
    graph = _single_op_graph(op, (cin, size, size + 1), (cout, out_h, out_w))
    q, y_int, x_deq = _oracle_run(graph, x)
    y = q.tensors["y"]
    dequantized = _dequantized_conv(q, op)
    expected = F.conv2d(x_deq, dequantized.weight, dequantized.bias, stride, k // 2, 1, groups)
    if act == "relu":
        expected = expected.clamp(min=0)
    elif act == "relu6":
        expected = expected.clamp(0, 6)
    expected_int = np.clip(np.round(expected[0].permute(1, 2, 0).numpy() / y.scale) + y.zero_point, -128, 127)
    lo, hi = q.ops[0].act_min, q.ops[0].act_max
    assert np.abs(y_int.astype(np.int64) - np.clip(expected_int, lo, hi)).max() <= 1


@settings(max_examples=15, deadline=None)
@given(channels=st.sampled_from([4, 8, 12, 16]), size=st.integers(2, 6), seed=st.integers(0, 999))
def test_l2norm_int8_equals_float_math_within_one_step(channels, size, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, channels, size, size, generator=gen) * 2
    graph = _single_op_graph(L2NormOp("x", "y"), (channels, size, size), (channels, size, size))
    q, y_int, x_deq = _oracle_run(graph, x)
    expected = x_deq / x_deq.pow(2).sum(1, keepdim=True).sqrt().clamp(min=1e-30)
    expected_int = np.round(expected[0].permute(1, 2, 0).numpy() * 127)
    assert q.tensors["y"].scale == pytest.approx(1 / 127) and q.tensors["y"].zero_point == 0
    assert np.abs(y_int.astype(np.int64) - expected_int).max() <= 1


@settings(max_examples=15, deadline=None)
@given(channels=st.integers(1, 20), size=st.integers(1, 9), seed=st.integers(0, 999))
def test_avgpool_int8_equals_float_math_within_one_step(channels, size, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(1, channels, size, size + 2, generator=gen) * 3 - 1
    graph = _single_op_graph(AvgPoolOp("x", "y"), (channels, size, size + 2), (channels, 1, 1))
    q, y_int, x_deq = _oracle_run(graph, x)
    y = q.tensors["y"]
    expected = np.round(x_deq.mean((2, 3))[0].numpy() / y.scale) + y.zero_point
    assert np.abs(y_int.reshape(-1).astype(np.int64) - np.clip(expected, -128, 127)).max() <= 1


@pytest.mark.parametrize("gate,update", [("sigmoid", "tanh"), ("quant_sigmoid", "quant_tanh"), ("sigmoid", "quant_tanh")])
@pytest.mark.parametrize("zeta_nu", [(100.0, -100.0), (1.0, -2.0)])
def test_fastgrnn_int8_steps_follow_float_math(gate, update, zeta_nu):
    """Oracle: a float FastGRNN with the dequantized weights, run on the dequantized inputs. The tables
    sample the nonlinearities every 1/128, so a state may differ by their slope over half a step, plus the
    Q14 rounding: at most 0.004 per step, growing over the sequence."""
    from rnnpool.nn import FastGRNNCell

    torch.manual_seed(0)
    cell = FastGRNNCell(5, 8, gate, update, zeta_init=zeta_nu[0], nu_init=zeta_nu[1])
    with torch.no_grad():
        cell.w1.normal_(0, 0.6)
        cell.u1.normal_(0, 0.3)
        cell.bias_gate.normal_(0, 0.5)
        cell.bias_update.normal_(0, 0.5)
    x = np.random.default_rng(0).integers(-128, 128, (16, 6, 5))
    scale, zp = 0.02, 3
    q = _quantize_cell(cell, scale, zp, "cell")
    h_int = cell_run(q, cell_input(q, x)) / 2**STATE_BITS
    w = q.weight.astype(np.float64) * 2.0 ** -q.w_shift[:, None] / 2**PRE_BITS  # W * input scale, dequantized
    u = q.recurrent.astype(np.float64) * 2.0 ** -(q.u_shift[:, None] - STATE_BITS + PRE_BITS)
    gate_fn, update_fn = NONLINEARITY_FUNCTIONS[gate], NONLINEARITY_FUNCTIONS[update]
    zeta, nu = q.zeta / 2**STATE_BITS, q.nu / 2**STATE_BITS
    h = np.zeros((16, 8))
    for t in range(6):
        pre = (x[:, t] - zp) @ w.T + h @ u.T
        z = gate_fn(pre + q.bias_gate / 2**PRE_BITS)
        c = update_fn(pre + q.bias_update / 2**PRE_BITS)
        h = (zeta * (1 - z) + nu) * c + z * h
    assert np.abs(h_int - h).max() < 0.02
    assert np.abs(h).max() > 0.2  # the state is not trivially near zero


def test_every_head_can_fire(face_m4_quantized):
    """A head's score multiplier is never rounded to 0 (it was, for heads with small score scales), and a
    maximal score difference on any head yields a candidate from it."""
    _, graph, images = face_m4_quantized
    settings = DetectionSettings(score_threshold=0.5, max_candidates=1000, max_detections=1000)
    params = head_key_params(graph, settings)
    assert all(mult >= 1 for mult, _ in params)
    values = run_int8(graph, to_uint8(images[0]))
    for index, head in enumerate(graph.heads):
        fired = {k: v.copy() for k, v in values.items()}
        for other in graph.heads:
            fired[other.conf][..., 0], fired[other.conf][..., 1] = 127, -128  # every score: background
        fired[head.conf][0, 0] = (-128, 127)  # one location of this head: a face
        detections = int8_detections(graph, fired, settings)
        assert len(detections) == 1 and detections[0]["score"] > 0.99, index


def test_detection_keys_keep_small_head_scales():
    """Heads whose score scales differ by 10^4 still rank on one logit scale."""
    tensors = {"a": QTensor((2, 2, 2), 1e-5, 0), "b": QTensor((2, 2, 2), 0.1, 0)}
    from rnnpool.deploy.quantize import _key_bits

    bits = _key_bits([Head("a", "la", 4, 16), Head("b", "lb", 8, 32)], tensors)
    assert round(1e-5 * 2**bits) >= 1 and 0.1 * 2**bits < 2**22
    with pytest.raises(QuantizationError, match="a: its score scale"):
        _key_bits([Head("a", "la", 4, 16), Head("b", "lb", 8, 32)], {**tensors, "a": QTensor((2, 2, 2), 1e-9, 0)})


def test_unsupported_models_and_inputs_are_refused():
    from rnnpool.nn import RNNPool2d

    with pytest.raises(NotImplementedError, match="face detectors and classifiers"):
        build_graph(nn.Sequential(nn.Conv2d(3, 4, 3)))
    model = live_model("rnnpool_face_m4")
    model.stages[0][1][0] = RNNPool2d(4, 8, 4, 16, 16, cell="gru").eval()
    with pytest.raises(NotImplementedError, match="FastGRNN"):
        build_graph(model)
    model = live_model("rnnpool_face_m4")
    with pytest.raises(ValueError, match="eval mode"):
        build_graph(model.train())
    graph = build_graph(model.eval())
    with pytest.raises(ValueError, match="calibration images must be"):
        calibrate(graph, [torch.rand(3, 240, 320)])
    with pytest.raises(ValueError, match="at least one image"):
        calibrate(graph, [])
    qgraph = quantize_graph(graph, calibrate(graph, smooth_images(input_shape(model), 1)))
    with pytest.raises(ValueError, match="uint8"):
        run_int8(qgraph, np.zeros((240, 320, 1), dtype=np.float32))
    with pytest.raises(ValueError, match="takes"):
        run_int8(qgraph, np.zeros((480, 640, 1), dtype=np.uint8))
