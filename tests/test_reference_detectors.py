"""benchmarks/reference_detectors.py: OpenCV's Haar cascade finds real faces, scored for the WIDER FACE ranking."""
from pathlib import Path

import numpy as np
import pytest

from rnnpool.data import load_face_annotations

from .conftest import SHARED_DATA, load_benchmark

cv2 = pytest.importorskip("cv2", reason='needs OpenCV 4.x: pip install -e ".[reference]"')
VAL = SHARED_DATA / "faces" / "val_bbx_gt.txt"


def _module():
    return load_benchmark("reference_detectors")


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two (x, y, w, h) boxes."""
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


@pytest.mark.skipif(not VAL.is_file(), reason="needs ../shared/data/faces")
def test_haar_cascade_finds_annotated_faces():
    if not (Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml").is_file():
        pytest.skip("this OpenCV wheel ships no Haar cascades (5.x); use 4.x")
    records = load_face_annotations(VAL).records[:20]
    predictions = _module().haar_predictions(cv2, "haarcascade_frontalface_default.xml", records)
    assert set(predictions) == {r.name for r in records}
    assert all(p.ndim == 2 and p.shape[1] == 5 for p in predictions.values())
    matched = [max((_iou(d[:4], b) for b in r.boxes), default=0.0) >= 0.5 for r in records for d in predictions[r.name]]
    assert sum(matched) >= 3, f"only {sum(matched)} Haar detections overlap an annotated face"
