"""benchmarks/deploy_m4.py's inputs: what each run calibrates on, said in words a reader can follow (no temporary
folders in the committed results), and the links it calibrates on point at those images."""
from pathlib import Path

import pytest

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
