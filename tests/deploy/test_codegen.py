"""The generated C, built with the host gcc (-Wall -Wextra -Werror), is bit-exact with the NumPy int8 reference
on live models: every zoo face detector, the Visual Wake Words classifier, and the RAM-saving modes."""
import json
import re

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from rnnpool.deploy import DetectionSettings, ScheduleError, build_schedule, generate_c, quantize_model
from rnnpool.deploy.c_literals import c_array, c_float, c_ident
from rnnpool.deploy.codegen import widen_rows
from rnnpool.deploy.export import compare_outputs, export_c, first_differing_map, reference_output
from rnnpool.deploy.programs import ExportError, run_host, toolchain_available
from rnnpool.deploy.runtime_limits import LIMITS, RUNTIME_DIR
from rnnpool.errors import UnsupportedError
from rnnpool.fit import fit_model, save_fitted
from rnnpool.models import create_model

from .conftest import assert_live, input_shape, live_model, make_live, smooth_images, to_uint8

needs_gcc = pytest.mark.skipif(not toolchain_available("host"), reason="gcc/make not installed")


def build_and_compare(graph, image, out, settings=DetectionSettings(score_threshold=0.5), **schedule_options):
    schedule = build_schedule(graph, **schedule_options)
    generate_c(schedule, out, settings)
    image.tofile(out / "input.raw")
    program = run_host(out)
    reference = reference_output(graph, image, settings)
    problems = compare_outputs(program, reference)
    assert problems == [], (problems, first_differing_map(out, reference))
    return program, reference, schedule


@needs_gcc
@pytest.mark.parametrize("name", ["rnnpool_face_m4", "rnnpool_face_quant", "rnnpool_face_a", "rnnpool_face_b",
                                  "rnnpool_face_c", "mobilenetv2_035_rnnpool", "mobilenetv2_rnnpool", "mobilenetv2_035",
                                  "mobilenetv2"])
def test_host_build_is_bit_exact(name, tmp_path):
    """Every zoo model the runtime can express (the DenseNets' dense blocks it cannot). face_quant: L2Norm
    applied as convs gather, a two-layer head on the stride-2 stem, replicated RNNPool padding; face_a:
    blocks without expansion and separate depthwise convs; face_b: dense 3x3 stacks; face_c: RNNPool with 16
    units on the image; the classifiers: RNNPool's own input padding, a BatchNorm after it, average pool and
    linear, and MobileNetV2 without RNNPool (its stem streamed row by row)."""
    model = live_model(name, seed=1)
    images = smooth_images(input_shape(model), 3, seed=1)
    graph = quantize_model(model, images[:2])
    program, _, schedule = build_and_compare(graph, to_uint8(images[2]), tmp_path)
    if graph.heads:
        assert len(program["hashes"]) == len(graph.heads)
    else:  # one logit per class of the float model's classifier (2 for Visual Wake Words, 1000 for ImageNet)
        classifier = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
        assert len(program["classes"]) == classifier.out_features
    report = json.loads((tmp_path / "memory_report.json").read_text())
    assert report["arena_bytes"] == sum((b["bytes"] + 7) // 8 * 8 for b in report["buffers"] if b["region"] == "ram")


@needs_gcc
def test_a_fitted_torchvision_model_exports_bit_exact(tmp_path):
    """rnnpool fit -> --save -> export c of the file: torchvision's MobileNetV2 blocks (bare Conv2d + BatchNorm
    projections, residuals), the wide RNNPool and the conv widened to read it, functional average pooling."""
    torch.manual_seed(3)
    fitted, report = fit_model(create_model("torchvision:mobilenet_v2", num_classes=10), (3, 32, 32), 2**14, "int8",
                               downsampling=(4,))
    assert report.candidates[report.chosen].widened == ["features.2.conv.0.0"]
    make_live(fitted, seed=3, shape=(3, 32, 32))
    saved = tmp_path / "fitted.pt"
    save_fitted(fitted, report, str(saved))
    images = smooth_images((3, 32, 32), 3, seed=3)
    (tmp_path / "calib").mkdir()
    for i, image in enumerate(images):
        Image.fromarray(to_uint8(image)).save(tmp_path / ("run.png" if i == 2 else f"calib/{i}.png"))
    exported = export_c(str(saved), tmp_path / "c", calib=str(tmp_path / "calib"), run_image=str(tmp_path / "run.png"))
    assert exported["bit_exact"] and len(exported["logits"]) == 10 and exported["input"]["height"] == 32
    graph = quantize_model(create_model(str(saved)).eval(), images[:2], (32, 32))
    assert_live(graph, [to_uint8(image) for image in images[:2]])
    with pytest.raises(UnsupportedError, match="int8 deployment supports .* got a torch.fx GraphModule"):  # what the C path cannot express
        quantize_model(fit_model(torchvision.models.resnet18(num_classes=10), (3, 32, 32), 2**16, "int8")[0].eval(), images[:1], (32, 32))


@needs_gcc
@pytest.mark.parametrize("name,budget", [("rnnpool_face_m4", 45_000), ("rnnpool_face_quant", 92_000)])
def test_ram_saving_modes_are_bit_exact_and_meet_the_budget(name, budget, tmp_path):
    """Blocks that expand their rows again for every output row, and RNNPool recomputing shared row sweeps."""
    model = live_model(name, seed=2)
    images = smooth_images(input_shape(model), 3, seed=2)
    graph = quantize_model(model, images[:2])
    full = build_schedule(graph)
    _, _, schedule = build_and_compare(graph, to_uint8(images[2]), tmp_path, ram_budget=budget)
    assert schedule.total_bytes <= budget < full.total_bytes
    assert schedule.choices and all("recompute" in c for c in schedule.choices)
    assert "recompute expanded rows" in (tmp_path / "model.c").read_text()


def test_budget_that_cannot_be_met_returns_the_smallest_schedule(face_m4_quantized):
    """No mode left to change would save anything (a block whose k expanded rows would outgrow the shared
    scratch keeps its k - 1 rows)."""
    _, graph, _ = face_m4_quantized
    smallest = build_schedule(graph, ram_budget=1000)
    assert 1000 < smallest.total_bytes < build_schedule(graph).total_bytes
    assert smallest.choices
    for node in smallest.nodes:
        if node.mode in ("rolling", "cache"):
            modes = {n.name: ("recompute" if n is node else n.mode) for n in smallest.nodes}
            assert build_schedule(graph, modes=modes).total_bytes >= smallest.total_bytes


@needs_gcc
def test_detections_are_printed_and_match(face_m4_quantized, tmp_path):
    _, graph, images = face_m4_quantized
    program, reference, _ = build_and_compare(graph, to_uint8(images[3]), tmp_path, DetectionSettings(score_threshold=0.2))
    assert program["detections"], "a low threshold gives detections to compare"
    assert [d["anchor"] for d in program["detections"]] == [d["anchor"] for d in reference["detections"]]


@needs_gcc
def test_a_wrong_kernel_is_caught_and_located(face_m4_quantized, tmp_path):
    """The comparison is not vacuous: one flipped rounding constant in the MobileNetV2 kernel is found, and
    the traced build names the first map it corrupts."""
    _, graph, images = face_m4_quantized
    generate_c(build_schedule(graph), tmp_path)
    source = (tmp_path / "rt_mbconv.c").read_text()
    assert "(res[i] - zb) * mb" in source
    (tmp_path / "rt_mbconv.c").write_text(source.replace("(res[i] - zb) * mb", "(res[i] - zb - 1) * mb"))
    image = to_uint8(images[3])
    image.tofile(tmp_path / "input.raw")
    reference = reference_output(graph, image, DetectionSettings())
    assert compare_outputs(run_host(tmp_path), reference)
    first_residual = next(op.output for op in graph.ops if type(op).__name__ == "QMBConv" and op.add is not None)
    assert first_differing_map(tmp_path, reference) == first_residual


@needs_gcc
def test_short_or_missing_image_is_an_error(face_m4_quantized, tmp_path):
    _, graph, images = face_m4_quantized
    generate_c(graph, tmp_path)
    to_uint8(images[0])[:100].tofile(tmp_path / "input.raw")
    with pytest.raises(ExportError, match="shorter"):
        run_host(tmp_path)
    (tmp_path / "input.raw").unlink()
    with pytest.raises(ExportError, match="cannot open"):
        run_host(tmp_path)


def test_generated_code_checks_its_scratch_at_compile_time(face_m4_quantized, tmp_path):
    _, graph, _ = face_m4_quantized
    generate_c(graph, tmp_path)
    source = (tmp_path / "model.c").read_text()
    assert re.search(r"RT_STATIC_ASSERT\(fifo_\w+, \d+ >= RT_FIFO_PIXELS\(3\) \* \d+\)", source)
    assert re.search(r"RT_STATIC_ASSERT\(rnnpool_\w+, \d+ >= \d+\)", source)


def test_runtime_limits_come_from_the_header_and_are_enforced(face_m4_quantized):
    header = (RUNTIME_DIR / "rnnpool_rt.h").read_text()
    assert f"#define RT_MAX_KERNEL {LIMITS['RT_MAX_KERNEL']}" in header
    _, graph, _ = face_m4_quantized
    conv = graph.ops[0]
    conv.weight = np.zeros((conv.out_channels, 9, 9, conv.weight.shape[3]), np.int8)
    with pytest.raises(ScheduleError, match=f"layer {conv.output}: kernel 9x9 is larger than the runtime's 7x7"):
        build_schedule(graph)


@pytest.mark.parametrize("unpacked_data", [True, False])
def test_widened_rows_pair_with_the_data_the_way_smlad_reads_them(unpacked_data):
    """Emulate SMLAD in NumPy: each stored word (two int16) against one word of the data, either int8 pixels
    unpacked by SXTB16 (each four inputs as the pairs (0, 2), (1, 3)) or int16 states in order."""
    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, (3, 6)).astype(np.int8)
    x = rng.integers(-30000, 30000, 8)
    x[6:] = 0  # the padding
    words = widen_rows(w, 8, unpacked_data)
    assert words.shape == (3, 4) and words.dtype == np.dtype("<i4")
    halves = words.view("<i2").astype(np.int64).reshape(3, 4, 2)
    order = [0, 2, 1, 3, 4, 6, 5, 7] if unpacked_data else list(range(8))
    data = x[order].reshape(4, 2)  # the data's words as the kernel reads them
    for j in range(3):
        assert sum(halves[j, i] @ data[i] for i in range(4)) == w[j].astype(np.int64) @ x[:6]


def test_c_literal_helpers():
    assert c_ident("head0.conf-1") == "head0_conf_1" and c_ident("3x") == "_3x"
    text = c_array("int8_t", "w", np.array([-128, 0, 127]))
    assert text.startswith("static const int8_t w[3] RT_ALIGNED = {") and "-128, 0, 127" in text
    assert "INT32_MIN" in c_array("int32_t", "b", np.array([-(2**31), 5]))
    assert "INT64_C(-5)" in c_array("int64_t", "c", np.array([-5]))
    with pytest.raises(ValueError, match="w: value 128 does not fit int8_t"):
        c_array("int8_t", "w", np.array([128]))
    assert float(c_float(0.1)[:-1]) == pytest.approx(0.1, rel=1e-7) and np.float32(float(c_float(0.1)[:-1])) == np.float32(0.1)
    with pytest.raises(ValueError, match="cannot write"):
        c_float(float("inf"))
