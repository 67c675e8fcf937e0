"""benchmarks/deploy_m4.py's inputs: what each run calibrates on, said in words a reader can follow (no temporary
folders in the committed results), and the links it calibrates on point at those images; --check's top-1 of the
classifier on the M4, scored against an independent float path."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rnnpool.deploy.export import image_tensor, load_image
from rnnpool.deploy.graph import build_graph, run_float
from rnnpool.deploy.programs import toolchain_available
from rnnpool.engine.classify import build_classifier

from .conftest import SHARED_DATA, load_benchmark


def test_synthetic_images_say_what_they_are(tmp_path):
    data = load_benchmark("deploy_m4")._synthetic_images(tmp_path, 3)
    assert data.about == "2 smooth random images (no real data given)"
    assert len(list(Path(data.calib).iterdir())) == 2 and len(data.run) == 2


@pytest.mark.skipif(not (SHARED_DATA / "faces").is_dir() or not (SHARED_DATA / "cifar10").is_dir(), reason="needs ../shared/data")
def test_real_calibration_images_are_named_by_portable_paths(tmp_path):
    deploy = load_benchmark("deploy_m4")
    faces = deploy._face_images(SHARED_DATA / "faces", tmp_path)
    cifar = deploy._cifar_images(SHARED_DATA / "cifar10", tmp_path)
    assert faces.about == "the first 32 training images of ../shared/data/faces"
    assert cifar.about == "32 training images, the first 3-4 of each of 10 classes, of ../shared/data/cifar10"
    linked = sorted(Path(faces.calib).iterdir())
    assert len(linked) == 32 and all(p.resolve().is_relative_to((SHARED_DATA / "faces").resolve()) for p in linked)
    per_class = {}
    for p in Path(cifar.calib).iterdir():
        per_class[p.resolve().parent.name] = per_class.get(p.resolve().parent.name, 0) + 1
    assert len(per_class) == 10 and sorted(per_class.values()) == [3] * 8 + [4] * 2


def _classifier_data(root, classes, per_class):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label, name in enumerate(sorted(classes)):
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):  # the classes differ in brightness
                pixels = rng.integers(0, 120, (32, 32, 3)) + 120 * label
                Image.fromarray(pixels.astype(np.uint8)).save(root / split / name / f"{i:04d}.jpg")


@pytest.mark.skipif(not toolchain_available("cortex-m4"), reason="gcc-arm-none-eabi / qemu-system-arm not installed (see .ci/run)")
def test_check_scores_the_classifier_from_the_m4s_own_class_scores(tmp_path, monkeypatch):
    """--check N: the trained classifier's program runs in QEMU on N test images (the first of each class in turn),
    each bit-exact with the int8 reference; its top-1 is scored from the M4's logits against labels in the
    checkpoint's class order (not the folders' sorted order), next to the float model's on the same images."""
    classes = ["dog", "cat"]  # the checkpoint's order: label 0 is dog
    _classifier_data(tmp_path / "cifar", classes, 3)
    (tmp_path / "weights").mkdir()
    torch.manual_seed(0)
    model = build_classifier("mobilenetv2_035_rnnpool", 2, 64, {})
    torch.save({"model": model.state_dict(), "config": {"model": "mobilenetv2_035_rnnpool", "input_size": 64}, "classes": classes},
               tmp_path / "weights" / "mobilenetv2_035_rnnpool_cifar64.pt")
    out = tmp_path / "deploy.json"
    monkeypatch.setattr(sys, "argv", ["deploy_m4.py", "--weights-dir", str(tmp_path / "weights"), "--cifar", str(tmp_path / "cifar"),
                                      "--faces", str(tmp_path / "no_faces"), "--models", "mobilenetv2_035_rnnpool_cifar64",
                                      "--check", "4", "--json", str(out)])
    load_benchmark("deploy_m4").main()
    row = json.loads(out.read_text())["results"][0]
    assert row["model"] == "mobilenetv2_035_rnnpool_cifar64" and row["zoo_model"] == "mobilenetv2_035_rnnpool"
    assert row["fits"] and row["ram_bytes"] <= 32 * 1024 and row["input"] == {"height": 64, "width": 64, "channels": 3}
    checked = row["checked"]
    assert checked["images"] == 4 and checked["bit_exact"] == 4
    names = [Path(r["image"]).parent.name for r in checked["runs"]]
    assert names == ["dog", "cat", "dog", "cat"]
    labels = [classes.index(n) for n in names]
    m4 = [int(np.argmax(r["logits"])) for r in checked["runs"]]
    # the float oracle: the deployment graph's float path (normalisation folded into the first conv)
    model.eval()
    graph = build_graph(model, (64, 64))
    floats = [int(run_float(graph, image_tensor(load_image(r["image"], 3, (64, 64)))[None])[graph.logits].flatten().argmax())
              for r in checked["runs"]]
    top1 = checked["top1"]
    assert top1["images"] == 4 and top1["top1_m4"] == sum(p == l for p, l in zip(m4, labels)) / 4
    assert top1["top1_fp32"] == sum(p == l for p, l in zip(floats, labels)) / 4
    assert top1["agreement"] == sum(a == b for a, b in zip(m4, floats)) / 4


def test_cifar_tests_need_every_class_the_checkpoint_names(tmp_path):
    _classifier_data(tmp_path / "cifar", ["cat", "dog"], 1)
    with pytest.raises(SystemExit, match=r"no folder of the classes \['bird'\]"):
        load_benchmark("deploy_m4")._cifar_tests(tmp_path / "cifar", ["cat", "bird"], 2)
