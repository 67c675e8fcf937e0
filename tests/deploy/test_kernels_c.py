"""Each C kernel alone, on random shapes (hypothesis): a one-op graph is quantized, generated, built with the
host gcc (-Wall -Wextra -Werror, MODEL_TRACE: a checksum of every map) and run on a random image; its
output map must equal the NumPy int8 reference's bit for bit (the reference is checked against float math
in test_quantize.py). Channel counts that are not whole words, odd widths, strides and paddings included."""
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, currently_in_test_context, given, settings, strategies as st

from rnnpool.deploy.codegen import WIDE_WEIGHTS_BYTES, chan_records, generate_c, requant_form
from rnnpool.deploy.graph import AvgPoolOp, ConvOp, Graph, L2NormOp, MBConvOp, RNNPoolOp, run_float
from rnnpool.deploy.int8_reference import fnv1a, run_int8
from rnnpool.deploy.programs import parse_program_output, run_tool, toolchain_available
from rnnpool.deploy.quantize import quantize_graph
from rnnpool.deploy.schedule import build_schedule, gathers_columns
from rnnpool.nn import RNNPool2d

pytestmark = pytest.mark.skipif(not toolchain_available("host"), reason="needs make and gcc")
KERNEL_SETTINGS = settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def run_one_op_program(graph: Graph, image: np.ndarray, folder, wide_weights: bool = True, clamped: bool = False,
                       output_range=None, high_word_multipliers: bool = True):
    """Build the graph's program with per-map checksums and compare every map with the reference.
    ``wide_weights``: dense weights stored as int16 (the code generator's default for small models) or int8;
    ``clamped``: the output's range reaches below its values, so a fused ReLU clamps inside int8 (the
    kernels' general clamp, not their SSAT); ``output_range``: the output's (low, high) instead of its own;
    ``high_word_multipliers``: False quantizes every multiplier normalized (the kernels' shifting path).
    Returns the quantized graph."""
    x = torch.from_numpy(image).permute(2, 0, 1)[None].double() / 255
    ranges = {name: (v.min().item(), v.max().item()) for name, v in run_float(graph, x).items()}
    low, high = ranges[graph.ops[-1].output]
    if output_range is not None:
        ranges[graph.ops[-1].output] = output_range
    elif currently_in_test_context():  # (property-based tests) a nearly constant output (e.g. ReLU of one
        # negative weight) proves little and quantizes to a scale the 32-bit requantization refuses
        # (ScheduleError), as it should
        assume(high - low > 0.05)
    if clamped:
        ranges[graph.ops[-1].output] = (low - (high - low) / 2, high)
    q = quantize_graph(graph, ranges, high_word_multipliers=high_word_multipliers)
    generate_c(build_schedule(q), folder, model_name="kernel", wide_weights_bytes=WIDE_WEIGHTS_BYTES if wide_weights else 0)
    image.tofile(folder / "input.raw")
    run_tool(["make", "-s", "trace", "CFLAGS=-O1"], folder, 300)
    traced = parse_program_output(run_tool(["./model_trace", "input.raw"], folder, 300))["maps"]
    reference = run_int8(q, image)
    assert traced, "the program traced no map"
    for name, value in traced.items():
        assert value == fnv1a(reference[name]), f"map {name} differs from the int8 reference"
    out = reference[graph.ops[-1].output]
    assert len(np.unique(out)) > 1 or out.size == 1, "a constant output would prove little"
    return q


def random_image(gen: torch.Generator, channels: int, height: int, width: int) -> np.ndarray:
    return torch.randint(0, 256, (height, width, channels), generator=gen, dtype=torch.uint8).numpy()


def conv_op(gen, x: str, y: str, cin: int, cout: int, k: int, stride: int, depthwise: bool, act) -> ConvOp:
    groups = cin if depthwise else 1
    weight = torch.randn(cout, cin // groups, k, k, generator=gen, dtype=torch.float64) / math.sqrt(k * k * cin / groups)
    bias = torch.randn(cout, generator=gen, dtype=torch.float64) * 0.2
    return ConvOp(x, y, weight, bias, stride, k // 2, groups, act)


def out_size(size: int, k: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - k) // stride + 1


@KERNEL_SETTINGS
@given(cin=st.sampled_from([1, 3, 4, 8, 12, 36]), cout=st.integers(1, 9), k=st.sampled_from([1, 3, 5]),
       stride=st.sampled_from([1, 2]), depthwise=st.booleans(), act=st.sampled_from([None, "relu", "relu6"]),
       height=st.integers(5, 11), width=st.integers(5, 13), seed=st.integers(0, 999), wide=st.booleans(),
       clamped=st.booleans())
def test_conv_kernels(cin, cout, k, stride, depthwise, act, height, width, seed, wide, clamped, tmp_path_factory):
    gen = torch.Generator().manual_seed(seed)
    cout = cin if depthwise else cout
    op = conv_op(gen, "x", "y", cin, cout, k, stride, depthwise, act)
    shape = (cout, out_size(height, k, stride, k // 2), out_size(width, k, stride, k // 2))
    graph = Graph("x", [op], shapes={"x": (cin, height, width), "y": shape}, logits="y", task="classification")
    run_one_op_program(graph, random_image(gen, cin, height, width), tmp_path_factory.mktemp("conv"), wide, clamped)


@pytest.mark.parametrize("depthwise", [False, True])
def test_requantization_that_shifts_left(depthwise, tmp_path):
    """An output range much narrower than the input's makes the multiplier >= 1/2: the requantization
    shifts the accumulator left (rt_chan.lsh > 0), the path the common layers skip."""
    gen = torch.Generator().manual_seed(3)
    op = conv_op(gen, "x", "y", 4, 4, 3, 1, depthwise, None)
    graph = Graph("x", [op], shapes={"x": (4, 6, 7), "y": (4, 6, 7)}, logits="y", task="classification")
    image = random_image(gen, 4, 6, 7)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].double() / 255
    assert run_float(graph, x)["y"].abs().max() > 0.1  # the output spreads far beyond the narrow range
    narrow = (-0.003, 0.003)  # (it must hold 0); values outside saturate, as they would in a real model
    q = quantize_graph(graph, {"x": (0.0, 1.0), "y": narrow})
    assert (chan_records(q.ops[0], 9 if depthwise else 36)[:, 3] > 0).any()
    run_one_op_program(graph, image, tmp_path, output_range=narrow)


@pytest.mark.parametrize("cin,stride,norm", [(3, 2, False), (3, 1, True), (4, 1, False), (4, 2, True), (8, 1, False)])
def test_column_gathering_convs(cin, stride, norm, tmp_path):
    """Dense 3x3 convs that unpack each input column once (an RGB stem's 3 channels padded to a word, and
    through an L2Norm applied as the columns are read), at both edges of odd-sized maps."""
    gen = torch.Generator().manual_seed(cin + stride)
    height, width = 9, 11
    ops, shapes = [], {"x": (cin, height, width)}
    if norm:
        ops.append(L2NormOp("x", "n"))
        shapes["n"] = (cin, height, width)
    conv = conv_op(gen, "n" if norm else "x", "y", cin, 6, 3, stride, False, "relu6")
    ops.append(conv)
    shapes["y"] = (6, out_size(height, 3, stride, 1), out_size(width, 3, stride, 1))
    graph = Graph("x", ops, shapes=shapes, logits="y", task="classification")
    q = run_one_op_program(graph, random_image(gen, cin, height, width), tmp_path)
    assert gathers_columns(q.ops[-1])
    assert requant_form(q.ops[-1], chan_records(q.ops[-1], 36)) == "RT_RQ_HIGH_WORD"


@pytest.mark.parametrize("kind", ["dense", "depthwise", "pointwise"])
def test_normalized_multipliers(kind, tmp_path):
    """The requantization's general form (normalized multipliers, shifts right beyond 32): what a layer whose
    multiplier is below 2**-18 gets; the kernels' default builds give every common layer the high word."""
    gen = torch.Generator().manual_seed(5)
    k = 1 if kind == "pointwise" else 3
    op = conv_op(gen, "x", "y", 8, 8, k, 1, kind == "depthwise", "relu")
    graph = Graph("x", [op], shapes={"x": (8, 7, 9), "y": (8, 7, 9)}, logits="y", task="classification")
    q = run_one_op_program(graph, random_image(gen, 8, 7, 9), tmp_path, high_word_multipliers=False)
    assert requant_form(q.ops[0], chan_records(q.ops[0], 72)) == "RT_RQ_SHIFT_RIGHT"


@KERNEL_SETTINGS
@given(cin=st.sampled_from([4, 8, 16]), expand=st.sampled_from([1, 2, 4]), cout=st.sampled_from([4, 8, 16]),
       stride=st.sampled_from([1, 2]), height=st.integers(5, 10), width=st.integers(5, 12), seed=st.integers(0, 999))
def test_mbconv_kernel(cin, expand, cout, stride, height, width, seed, tmp_path_factory):
    gen = torch.Generator().manual_seed(seed)
    hidden = cin * expand
    residual = stride == 1 and cin == cout
    exp = conv_op(gen, "x", "e", cin, hidden, 1, 1, False, "relu6") if expand > 1 else None
    dw = conv_op(gen, "e" if exp else "x", "d", hidden, hidden, 3, stride, True, "relu6")
    proj = conv_op(gen, "d", "p", hidden, cout, 1, 1, False, None)
    out_h, out_w = out_size(height, 3, stride, 1), out_size(width, 3, stride, 1)
    y = "y" if residual else "p"
    shapes = {"x": (cin, height, width), "d": (hidden, out_h, out_w), "p": (cout, out_h, out_w), y: (cout, out_h, out_w)}
    if exp:
        shapes["e"] = (hidden, height, width)
    graph = Graph("x", [MBConvOp("x", y, exp, dw, proj, residual)], shapes=shapes, logits=y, task="classification")
    run_one_op_program(graph, random_image(gen, cin, height, width), tmp_path_factory.mktemp("mbconv"))


@KERNEL_SETTINGS
@given(cin=st.sampled_from([1, 3, 4, 8]), patch=st.sampled_from([(4, 4), (6, 6), (8, 8), (4, 6)]), stride=st.sampled_from([2, 4]),
       hidden=st.sampled_from([(8, 8), (16, 16), (4, 8), (6, 10)]), padding=st.sampled_from([0, 1]),
       height=st.integers(8, 16), width=st.integers(8, 18), seed=st.integers(0, 999))
def test_rnnpool_kernel(cin, patch, stride, hidden, padding, height, width, seed, tmp_path_factory):
    """FastGRNN steps (the unrolled 8- and 16-unit ones and the general one), the row cache, projections."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    layer = RNNPool2d(cin, patch, stride, hidden[0], hidden[1], padding=padding).eval()
    with torch.no_grad():
        for cell in (layer.rnn1, layer.rnn2):
            cell.w1.copy_(torch.randn(cell.w1.shape, generator=gen) * 1.5 / math.sqrt(cell.w1.shape[1]))
            cell.u1.copy_(torch.randn(cell.u1.shape, generator=gen) * 0.5 / math.sqrt(cell.u1.shape[1]))
            cell.bias_gate.copy_(torch.randn(cell.bias_gate.shape, generator=gen) * 0.3)
            cell.bias_update.copy_(torch.randn(cell.bias_update.shape, generator=gen) * 0.3)
    out_h, out_w = out_size(height, patch[0], stride, padding), out_size(width, patch[1], stride, padding)
    if min(out_h, out_w) < 1:
        return
    channels = 4 * hidden[1]
    op = RNNPoolOp("x", "y", layer, torch.ones(channels, dtype=torch.float64), torch.zeros(channels, dtype=torch.float64))
    graph = Graph("x", [op], shapes={"x": (cin, height, width), "y": (channels, out_h, out_w)}, logits="y", task="classification")
    run_one_op_program(graph, random_image(gen, cin, height, width), tmp_path_factory.mktemp("rnnpool"))


@KERNEL_SETTINGS
@given(channels=st.sampled_from([3, 4, 8, 12]), fused=st.booleans(), height=st.integers(3, 8), width=st.integers(3, 9),
       seed=st.integers(0, 999))
def test_l2norm_kernels(channels, fused, height, width, seed, tmp_path_factory):
    """Standalone, and applied by a conv as it gathers its input."""
    gen = torch.Generator().manual_seed(seed)
    ops = [L2NormOp("x", "n")]
    shapes = {"x": (channels, height, width), "n": (channels, height, width)}
    if fused:
        ops.append(conv_op(gen, "n", "y", channels, 5, 3, 1, False, None))
        shapes["y"] = (5, height, width)
    graph = Graph("x", ops, shapes=shapes, logits=ops[-1].output, task="classification")
    run_one_op_program(graph, random_image(gen, channels, height, width), tmp_path_factory.mktemp("l2norm"))


@KERNEL_SETTINGS
@given(channels=st.integers(1, 20), height=st.integers(1, 9), width=st.integers(1, 9), seed=st.integers(0, 999))
def test_avgpool_kernel(channels, height, width, seed, tmp_path_factory):
    gen = torch.Generator().manual_seed(seed)
    graph = Graph("x", [AvgPoolOp("x", "y")], shapes={"x": (channels, height, width), "y": (channels, 1, 1)},
                  logits="y", task="classification")
    run_one_op_program(graph, random_image(gen, channels, height, width), tmp_path_factory.mktemp("avgpool"))
