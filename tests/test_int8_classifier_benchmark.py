"""benchmarks/int8_classifier.py at smoke size, on a classifier trained elsewhere (--float-weights): the float
training is skipped, the checkpoint's model and input size are used, and its recipe goes into the JSON."""
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from rnnpool.engine.classify import build_classifier

from .conftest import load_benchmark

CLASSES = ("cat", "dog")


def _image_folder(root, per_split):
    rng = np.random.default_rng(0)
    for split, count in per_split.items():
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):  # the classes differ in brightness, so a float model can tell them apart
                pixels = rng.integers(0, 120, (40, 40, 3)) + 120 * label
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i:04d}.jpg")


def _checkpoint(path, input_size=32):
    torch.manual_seed(0)
    model = build_classifier("mobilenetv2_035_rnnpool", len(CLASSES), input_size, {})
    config = {"model": "mobilenetv2_035_rnnpool", "epochs": 60, "input_size": input_size, "batch_size": 256, "lr": 0.2}
    torch.save({"model": model.state_dict(), "config": config, "epoch": 48}, path)


def _run(monkeypatch, *argv):
    monkeypatch.setattr(sys, "argv", ["int8_classifier.py", *map(str, argv)])
    load_benchmark("int8_classifier").main()


def test_float_weights_are_quantized_without_training(tmp_path, monkeypatch):
    _image_folder(tmp_path / "data", {"train": 4, "test": 3})
    _checkpoint(tmp_path / "float.pt")
    out = tmp_path / "int8.json"
    _run(monkeypatch, "--data", tmp_path / "data", "--float-weights", tmp_path / "float.pt", "--per-class", 0,
         "--test-per-class", 0, "--qat-epochs", 1, "--batch-size", 4, "--workers", 0, "--project", tmp_path / "runs",
         "--json", out)
    data = json.loads(out.read_text())
    assert data["args"]["model"] == "mobilenetv2_035_rnnpool" and data["args"]["input_size"] == 32
    assert data["float_training"] == {"epochs": 60, "epochs_done": 48, "input_size": 32, "batch_size": 256, "lr": 0.2,
                                      "per_class": None}
    assert not (tmp_path / "runs" / "float").exists()  # nothing trained in float
    rows = {r["quantization"]: r for r in data["results"]}
    assert set(rows) == {"post-training", "quantization-aware"}
    for r in rows.values():
        assert r["images"] == 6 and r["drop_from_float"] == pytest.approx(rows["post-training"]["top1_fp32"] - r["top1_int8"])
    # the engine's top-1 (float tensors) and the benchmark's float top-1 (uint8 pixels) score the same 6 images
    assert abs(data["engine_float_top1"] - rows["post-training"]["top1_fp32"]) <= 1 / 6 + 1e-9


def test_float_weights_of_another_model_or_size_are_refused(tmp_path, monkeypatch):
    _image_folder(tmp_path / "data", {"train": 1, "test": 1})
    _checkpoint(tmp_path / "float.pt")
    common = ["--data", tmp_path / "data", "--float-weights", tmp_path / "float.pt", "--json", tmp_path / "x.json"]
    with pytest.raises(SystemExit, match="is mobilenetv2_035_rnnpool, not --model mobilenetv2_rnnpool"):
        _run(monkeypatch, *common, "--model", "mobilenetv2_rnnpool")
    with pytest.raises(SystemExit, match="was trained at 32, not --input-size 64"):
        _run(monkeypatch, *common, "--input-size", "64")
