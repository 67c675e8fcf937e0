"""Equalizing RNNPool's output channels before int8: the float model is unchanged (against the model itself),
every channel fills one centred range, int8 rounds the map more finely, and the C program stays bit-exact."""
import json
from dataclasses import replace

import pytest
import torch

from rnnpool.deploy import quantize_model
from rnnpool.deploy.equalize import MAX_GAIN, channel_ranges, equalizable, equalize_rnnpool
from rnnpool.deploy.graph import MBConvOp, RNNPoolOp, build_graph, run_float
from rnnpool.deploy.int8_reference import dequantize
from rnnpool.deploy.programs import toolchain_available

from .conftest import input_shape, live_model, smooth_images, to_uint8
from .test_codegen import build_and_compare

MODELS = ["rnnpool_face_m4", "rnnpool_face_quant", "mobilenetv2_035_rnnpool"]


def _offset_channels(model: torch.nn.Module) -> torch.nn.Module:
    """Give the RNNPool's final states per-channel offsets, as training does (through RNN2's update bias)."""
    pool = next(m for m in model.modules() if m.__class__.__name__ == "RNNPool2d")
    with torch.no_grad():
        bias = pool.rnn2.bias_update
        bias.copy_(torch.linspace(-3.0, 3.0, bias.numel()).reshape(bias.shape))
    return model


@pytest.mark.parametrize("name", MODELS)
def test_equalized_graph_computes_the_model(name):
    model = _offset_channels(live_model(name))
    images = smooth_images(input_shape(model), 4)
    graph = build_graph(model)
    equalized = equalize_rnnpool(graph, images[:2])
    pool = next(op for op in graph.ops if isinstance(op, RNNPoolOp))
    assert list(equalized.equalized) == [pool.output]
    x = torch.stack(images[2:])
    before, after = run_float(graph, x), run_float(equalized, x)
    outputs = [t for h in graph.heads for t in (h.conf, h.loc)] or [graph.logits]
    for tensor in outputs:
        torch.testing.assert_close(after[tensor], before[tensor], atol=1e-4, rtol=1e-4)
    if not graph.heads:  # and the model itself (ImageNet normalisation folded into the graph's first conv)
        mean = torch.tensor((0.485, 0.456, 0.406))[:, None, None]
        std = torch.tensor((0.229, 0.224, 0.225))[:, None, None]
        torch.testing.assert_close(after[graph.logits].flatten(1), model((x - mean) / std), atol=1e-4, rtol=1e-4)
    gain, centre = equalized.equalized[pool.output]  # the map itself: gain * (x - centre), per channel
    torch.testing.assert_close(after[pool.output].double(),
                               gain[:, None, None] * (before[pool.output].double() - centre[:, None, None]), atol=1e-4, rtol=1e-4)
    assert graph.equalized == {} and graph.ops[graph.ops.index(pool)] is pool  # the input graph is untouched


def test_every_channel_fills_one_centred_range():
    model = _offset_channels(live_model("rnnpool_face_m4"))
    images = smooth_images(input_shape(model), 3)
    graph = build_graph(model)
    pool = next(op for op in graph.ops if isinstance(op, RNNPoolOp)).output
    low, high = channel_ranges(graph, images, [pool])[pool]
    assert ((high - low) / (high - low).max()).min() < 0.5  # the channels' ranges differ before
    equalized = equalize_rnnpool(graph, images)
    low, high = channel_ranges(equalized, images, [pool])[pool]
    width = high - low
    capped = width < width.max() / 1.001
    torch.testing.assert_close(width[~capped], torch.full_like(width[~capped], float(width.max())), atol=0, rtol=1e-5)
    torch.testing.assert_close(low + high, torch.zeros_like(low), atol=1e-5 * float(width.max()), rtol=0)
    gain = equalized.equalized[pool][0]
    assert torch.all(gain[capped] == MAX_GAIN) and torch.all(gain <= MAX_GAIN)


def _rounding_noise(model, images, equalize: bool) -> float:
    """Mean squared error, in the model's own units, of rounding the RNNPool output to its int8 grid (the step
    the quantized graph chose; the cells' own integer error is the same either way)."""
    graph = quantize_model(model, images[:2], equalize=equalize)
    float_graph = build_graph(model)
    pool = next(op for op in float_graph.ops if isinstance(op, RNNPoolOp)).output
    gain, centre = (t.double()[:, None, None] for t in graph.equalized[pool]) if equalize else (1.0, 0.0)
    q = graph.tensors[pool]
    exact = run_float(float_graph, torch.stack(images[2:]))[pool].double()
    stored = torch.clamp(torch.round(gain * (exact - centre) / q.scale) + q.zero_point, -128, 127)
    back = dequantize(graph, pool, stored.permute(0, 2, 3, 1).numpy(), model_units=True)  # channels last
    return float(((torch.from_numpy(back).permute(0, 3, 1, 2) - exact) ** 2).mean())


def test_int8_rounds_an_equalized_map_more_finely():
    model = _offset_channels(live_model("rnnpool_face_m4"))
    images = smooth_images(input_shape(model), 4)
    assert _rounding_noise(model, images, True) < 0.5 * _rounding_noise(model, images, False)


def test_maps_the_fold_would_change_are_left_alone():
    """A reader that pads (it would read zeros that are no longer zeros) or adds the map back as a residual
    keeps its RNNPool unequalized; so do a constant map and quantization with a fine-tuning's kept ranges."""
    model = live_model("rnnpool_face_m4")
    graph = build_graph(model)
    index = next(i for i, op in enumerate(graph.ops) if isinstance(op, MBConvOp))
    block = graph.ops[index]
    assert equalizable(graph)
    for changed in (replace(block, expand=replace(block.expand, padding=1)), replace(block, residual=True)):
        ops = list(graph.ops)
        ops[index] = changed
        assert equalizable(replace(graph, ops=ops)) == {}
    images = smooth_images(input_shape(model), 2)
    with torch.no_grad():  # a map the image does not reach is not stretched
        next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d)).weight.zero_()
        assert quantize_model(model, images).equalized == {}
    model = live_model("rnnpool_face_m4")
    plain = quantize_model(model, images)
    kept = {name: (t.scale * (-128 - t.zero_point), t.scale * (127 - t.zero_point)) for name, t in plain.tensors.items()}
    assert quantize_model(model, [], ranges=kept, equalize=True).equalized == {}


@pytest.mark.skipif(not toolchain_available("host"), reason="gcc/make not installed")
@pytest.mark.parametrize("name", ["rnnpool_face_m4", "mobilenetv2_035_rnnpool"])
def test_equalized_model_builds_bit_exact(name, tmp_path):
    """The stretched per-channel output multipliers and the refolded readers in the generated C."""
    model = _offset_channels(live_model(name, seed=1))
    images = smooth_images(input_shape(model), 3, seed=1)
    graph = quantize_model(model, images[:2], equalize=True)
    assert graph.equalized
    build_and_compare(graph, to_uint8(images[2]), tmp_path)


def test_export_equalizes_unless_told_not_to(tmp_path):
    """`rnnpool export c` equalizes by default and names the layers in its report; --no-equalize leaves them."""
    from PIL import Image

    from rnnpool.cli import main

    model = live_model("rnnpool_face_m4")
    calib = tmp_path / "calib"
    calib.mkdir()
    for i, image in enumerate(smooth_images(input_shape(model), 2)):
        Image.fromarray(to_uint8(image)[:, :, 0]).save(calib / f"{i}.png")
    for flags, expected in (([], ["stages.0.1.0"]), (["--no-equalize"], [])):
        report = tmp_path / "report.json"
        main(["export", "c", "rnnpool_face_m4", "-o", str(tmp_path / "c"), "--calib", str(calib), "--json", str(report), *flags])
        assert json.loads(report.read_text())["calibration"]["equalized"] == expected
