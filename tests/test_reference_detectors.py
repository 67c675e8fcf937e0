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


def _needs_cascades() -> None:
    if not (Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml").is_file():
        pytest.skip("this OpenCV wheel ships no Haar cascades (5.x); use 4.x")


@pytest.mark.skipif(not VAL.is_file(), reason="needs ../shared/data/faces")
def test_haar_cascade_finds_annotated_faces():
    _needs_cascades()
    records = load_face_annotations(VAL).records[:20]
    predictions = _module().haar_predictions(cv2, "haarcascade_frontalface_default.xml", records)
    assert set(predictions) == {r.name for r in records}
    assert all(p.ndim == 2 and p.shape[1] == 5 for p in predictions.values())
    matched = [max((_iou(d[:4], b) for b in r.boxes), default=0.0) >= 0.5 for r in records for d in predictions[r.name]]
    assert sum(matched) >= 3, f"only {sum(matched)} Haar detections overlap an annotated face"


WEIGHTS = Path(__file__).resolve().parents[1] / "benchmarks" / "weights"


@pytest.mark.skipif(not VAL.is_file() or not (WEIGHTS / "rnnpool_face_m4.pt").is_file(), reason="needs ../shared/data/faces and benchmarks/weights")
def test_benchmark_puts_a_trained_detector_next_to_the_cascades_by_face_size(tmp_path, monkeypatch):
    """A smoke run on 6 images: one row per cascade and per trained detector, each with AP by face size; the trained
    detector's numbers are the training engine's evaluator's on the same images."""
    import json
    import sys

    from rnnpool.engine import build_detector, evaluate_detector

    _needs_cascades()
    out = tmp_path / "ref.json"
    monkeypatch.setattr(sys, "argv", ["reference_detectors.py", "--val", str(VAL), "--weights-dir", str(tmp_path),  # (empty)
                                      "--models", f"rnnpool_face_m4={WEIGHTS / 'rnnpool_face_m4.pt'}", "--limit", "6",
                                      "--size-bins", "24,48", "--json", str(out)])
    _module().main()
    data = json.loads(out.read_text())
    assert data["images"] == 6 and [r["trained_here"] for r in data["results"]] == [False, False, True]
    assert all(list(r["ap_by_size"]) == ["<24px", "24-48px", ">=48px"] for r in data["results"])
    records = load_face_annotations(VAL).records[:6]
    subset = tmp_path / "val6.txt"  # the same 6 images and boxes, written out again for the engine's evaluator
    lines = []
    for r in records:
        lines += [str(r.path), str(len(r.boxes))]
        lines += [f"{x:g} {y:g} {w:g} {h:g} 0 0 0 {int(bad)} 0 0" for (x, y, w, h), bad in zip(r.boxes, r.invalid)]
    subset.write_text("\n".join(lines) + "\n")
    engine = evaluate_detector(build_detector("rnnpool_face_m4", str(WEIGHTS / "rnnpool_face_m4.pt")), str(subset), size_bins=(24, 48))
    ours = data["results"][2]
    assert engine["images"] == 6
    assert ours["ap"] == pytest.approx(engine["ap"], abs=1e-9) and ours["ap_by_size"] == pytest.approx(engine["ap_by_size"], abs=1e-9)
    assert ours["faces_by_size"] == engine["faces_by_size"] and sum(ours["faces_by_size"].values()) == engine["faces"]


def test_benchmark_names_missing_weights(tmp_path, monkeypatch):
    import sys

    monkeypatch.setattr(sys, "argv", ["reference_detectors.py", "--val", "x.txt", "--weights-dir", str(tmp_path),
                                      "--models", "rnnpool_face_quant"])
    with pytest.raises(SystemExit, match=f"no trained weights {tmp_path / 'rnnpool_face_quant.pt'} "):
        _module().main()
    monkeypatch.setattr(sys, "argv", ["reference_detectors.py", "--val", "x.txt", "--models", f"rnnpool_face_m4={tmp_path / 'a.pt'}"])
    with pytest.raises(SystemExit, match=f"no trained weights {tmp_path / 'a.pt'} "):
        _module().main()


def test_models_are_named_alone_or_with_their_weights():
    bench = _module()
    assert bench.model_weights("rnnpool_face_m4", "w") == ("rnnpool_face_m4", Path("w/rnnpool_face_m4.pt"))
    assert bench.model_weights("rnnpool_face_quant=x/y.pt", "w") == ("rnnpool_face_quant", Path("x/y.pt"))
