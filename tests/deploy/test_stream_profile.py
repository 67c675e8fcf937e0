"""`rnnpool profile --convention stream`: the deployed int8 program's RAM predicted from the model alone (checked
against the RAM measured in QEMU in test_cortex_m4.py), with every multiply-add of the traced model."""
import pytest

from rnnpool.analysis import profile_model
from rnnpool.cli import main
from rnnpool.deploy.ram import predict_ram
from rnnpool.deploy.stream_profile import stream_profile
from rnnpool.models import create_model


def test_stream_profile_counts_every_madd_and_streams_far_below_layer_by_layer():
    model = create_model("rnnpool_face_m4")
    stream = profile_model(model, (1, 240, 320), "int8", "stream", name="rnnpool_face_m4")
    layer = profile_model(model, (1, 240, 320), "int8", "layer", name="rnnpool_face_m4")
    assert stream.convention == "stream" and stream.dtype == "int8"
    assert stream.madds == layer.madds  # node by node from the int8 ops == the traced float model's count
    assert stream.params == layer.params
    assert stream.peak_bytes < 0.6 * layer.peak_bytes  # no map is ever whole
    assert "arena" in stream.peak_layer and "stack" in stream.peak_layer
    assert all(l.held_bytes < l.output_bytes for l in stream.layers if l.kind in ("conv", "rnnpool"))


def test_stream_profile_within_a_ram_target_trades_work_for_ram():
    model = create_model("mobilenetv2_035_rnnpool")
    free = stream_profile(model, (3, 224, 224))
    tight = stream_profile(model, (3, 224, 224), ram_bytes=64 * 1024)
    assert tight.peak_bytes <= 64 * 1024 < free.peak_bytes
    assert "planner" in tight.peak_layer and "recompute" in tight.peak_layer
    assert tight.madds > free.madds  # the recomputed rows are counted


def test_stream_prediction_adds_up():
    from rnnpool.deploy.stream_profile import _synthetic_images
    from rnnpool.deploy.quantize import quantize_model
    from rnnpool.deploy.schedule import build_schedule

    model = create_model("rnnpool_face_m4").eval()
    graph = quantize_model(model, _synthetic_images(1, 240, 320), (240, 320))
    prediction = predict_ram(build_schedule(graph))
    assert prediction.total == prediction.arena + prediction.statics + prediction.stack + prediction.exception_frame
    assert prediction.arena == build_schedule(graph).total_bytes
    assert profile_model(model, (1, 240, 320), "int8", "stream").peak_bytes == prediction.total


def test_stream_convention_errors_and_cli(capsys):
    with pytest.raises(ValueError, match="dtype int8"):
        profile_model(create_model("rnnpool_face_m4"), (1, 240, 320), "fp32", "stream")
    with pytest.raises(NotImplementedError, match="does not support"):
        profile_model(create_model("densenet121_rnnpool"), (3, 224, 224), "int8", "stream")
    main(["profile", "rnnpool_face_m4", "--convention", "stream"])
    out = capsys.readouterr().out
    assert "dtype int8  convention 'stream'" in out and "peak RAM" in out and "arena" in out
