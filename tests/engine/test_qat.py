"""Quantization-aware fine-tuning through the training engine: the run, its checkpoints (which keep the
activation ranges), resuming, and the int8 program exported from it."""
from __future__ import annotations

import math

import pytest
import torch

from rnnpool.cli import main
from rnnpool.deploy.export import export_c
from rnnpool.deploy.fake_quant import RANGES_KEY
from rnnpool.deploy.programs import toolchain_available
from rnnpool.engine import ClassifyConfig, DetectConfig, train_classifier, train_detector
from rnnpool.errors import InvalidInputError
from rnnpool.models import create_model

from .test_classify import SMALL
from .test_detect import make_square_faces


def _float_weights(tmp_path, name: str) -> str:
    torch.manual_seed(0)
    path = tmp_path / f"{name}_float.pt"
    torch.save({"model": create_model(name).state_dict(), "model_name": name}, path)
    return str(path)


def test_detector_qat_run_resumes_and_exports_without_calibration(tmp_path):
    gt = make_square_faces(tmp_path / "faces", count=6)
    common = dict(model="rnnpool_face_m4", train=str(gt), val=str(gt), epochs=2, batch_size=3, input_size=64, workers=0,
                  device="cpu", project=str(tmp_path), warmup_epochs=0, eval_period=1, lr=0.002, qat=True, qat_calibration=4,
                  weights=_float_weights(tmp_path, "rnnpool_face_m4"))
    straight = train_detector(DetectConfig(name="straight", **common))
    assert not math.isnan(straight["last_epoch"]["val_ap"])  # validated (in the int8 arithmetic)
    train_detector(DetectConfig(name="resumed", stop_epoch=1, **common))
    train_detector(DetectConfig(name="resumed", resume=str(tmp_path / "resumed" / "weights" / "last.pt"), **common))
    a, b = (torch.load(tmp_path / name / "weights" / "last.pt", weights_only=False) for name in ("straight", "resumed"))
    assert a[RANGES_KEY] == b[RANGES_KEY] and len(a[RANGES_KEY]) > 10
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])  # the resumed run read its ranges back
    start = torch.load(common["weights"], weights_only=False)["model"]
    assert any(not torch.equal(start[k], a["model"][f"detector.{k}"]) for k in start)  # it trained
    if not toolchain_available("host"):
        pytest.skip("gcc/make not installed")
    image = next((tmp_path / "faces" / "images").glob("*.jpg"))
    report = export_c("rnnpool_face_m4", tmp_path / "c", str(tmp_path / "straight" / "weights" / "last.pt"), None, "host", str(image))
    assert report["calibration"]["method"] == "qat" and report["bit_exact"], report.get("mismatches")


def test_qat_needs_float_weights_and_a_qat_checkpoint_to_resume(tmp_path):
    gt = make_square_faces(tmp_path / "faces", count=3)
    common = dict(model="rnnpool_face_m4", train=str(gt), epochs=1, batch_size=3, input_size=64, workers=0, device="cpu",
                  project=str(tmp_path))
    with pytest.raises(InvalidInputError, match="give its --weights"):
        DetectConfig(qat=True, **common)
    with pytest.raises(InvalidInputError, match="do not exist"):
        DetectConfig(qat=True, weights=str(tmp_path / "none.pt"), **common)
    train_detector(DetectConfig(name="float", **common))
    float_run = str(tmp_path / "float" / "weights" / "last.pt")
    with pytest.raises(InvalidInputError, match="not a QAT run's checkpoint"):
        train_detector(DetectConfig(name="float", qat=True, weights=float_run, resume=float_run, **common))
    with pytest.raises(SystemExit, match="give its --weights"):
        main(["train", "detect", "--model", "rnnpool_face_m4", "--train", str(gt), "--qat"])


def test_classifier_qat_run_keeps_ranges(color_data, tmp_path):
    train_classifier(ClassifyConfig(data=str(color_data), epochs=1, project=str(tmp_path), name="float", **SMALL))
    weights = str(tmp_path / "float" / "weights" / "last.pt")
    result = train_classifier(ClassifyConfig(data=str(color_data), epochs=1, project=str(tmp_path), name="qat", qat=True,
                                             weights=weights, qat_calibration=6, **{**SMALL, "lr": 0.005}))
    assert result["final"]["samples"] == 18  # validated (in the int8 arithmetic)
    checkpoint = torch.load(tmp_path / "qat" / "weights" / "last.pt", weights_only=False)
    assert "logits" in checkpoint[RANGES_KEY]
