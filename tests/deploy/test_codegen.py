"""Generated C built with the host gcc must be bit-exact with the NumPy int8 reference."""
import json

import pytest

from rnnpool.deploy import DetectionSettings, generate_c, quantize_model
from rnnpool.deploy.export import ExportError, compare_outputs, reference_output, run_program, toolchain_available

from .conftest import face_model, smooth_images, to_uint8

pytestmark = pytest.mark.skipif(not toolchain_available("host"), reason="gcc/make not installed")


def build_and_compare(graph, image, out, settings=DetectionSettings(score_threshold=0.5)):
    generate_c(graph, out, settings)
    image.tofile(out / "input.raw")
    program = run_program(out, "host")
    reference = reference_output(graph, image, settings)
    assert compare_outputs(program, reference) == []
    return program, reference


@pytest.mark.parametrize("name", ["rnnpool_face_m4", "rnnpool_face_quant", "rnnpool_face_a"])
def test_host_build_is_bit_exact(name, tmp_path):
    """face_quant streams two convs and a head before its RNNPool; face_a runs depthwise convs in place."""
    model = face_model(name, seed=1)
    images = smooth_images(model, 3, seed=1)
    graph = quantize_model(model, images[:2])
    program, reference = build_and_compare(graph, to_uint8(images[2]), tmp_path)
    assert len(program["hashes"]) == len(graph.heads)
    report = json.loads((tmp_path / "memory_report.json").read_text())
    assert report["arena_bytes"] < report["layer_by_layer_bytes"]
    buffers = report["buffers"]
    if name == "rnnpool_face_a":
        assert any(b["alias"] for b in buffers), "a stride-1 depthwise conv should run in place"


def test_detections_are_printed_and_match(face_m4_quantized, tmp_path):
    _, graph, images = face_m4_quantized
    program, reference = build_and_compare(graph, to_uint8(images[1]), tmp_path, DetectionSettings(score_threshold=0.3))
    assert program["detections"], "a low threshold on an untrained model gives detections to compare"
    assert [d["anchor"] for d in program["detections"]] == [d["anchor"] for d in reference["detections"]]


def test_planner_fits_face_quant_in_256_kib(face_m4_quantized, tmp_path):
    model = face_model("rnnpool_face_quant")
    graph = quantize_model(model, smooth_images(model, 1))
    plan = generate_c(graph, tmp_path)
    assert plan.arena_bytes < 256 * 1024 < plan.layer_by_layer_bytes
    assert "image" in plan.layer_by_layer_peak_tensors  # layer by layer holds the whole image


def test_short_image_is_an_error(face_m4_quantized, tmp_path):
    _, graph, images = face_m4_quantized
    generate_c(graph, tmp_path)
    to_uint8(images[0])[:100].tofile(tmp_path / "input.raw")
    with pytest.raises(ExportError, match="shorter"):
        run_program(tmp_path, "host")
    (tmp_path / "input.raw").unlink()
    with pytest.raises(ExportError, match="cannot open"):
        run_program(tmp_path, "host")
