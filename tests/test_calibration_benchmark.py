"""benchmarks/calibration.py at smoke size: each calibration method and set gives a row scored on real faces."""
import json
import sys
from pathlib import Path

import pytest

from .conftest import SHARED_DATA, load_benchmark

ROOT = Path(__file__).resolve().parents[1]
FACES = SHARED_DATA / "faces"
WEIGHTS = ROOT / "benchmarks" / "weights"


def _module():
    return load_benchmark("calibration")


def test_methods_are_parsed_or_refused():
    bench = _module()
    assert bench.parse_method("minmax") == ("minmax", 99.99, False)
    assert bench.parse_method("percentile@99.9+equalize") == ("percentile", 99.9, True)
    for bad in ("percentile", "mse@99", "minmax+other", "kl"):
        with pytest.raises(SystemExit, match="calibration method"):
            bench.parse_method(bad)


@pytest.mark.skipif(not (FACES / "val_bbx_gt.txt").is_file() or not (WEIGHTS / "rnnpool_face_m4.pt").is_file(),
                    reason="needs ../shared/data/faces and benchmarks/weights")
def test_rows_per_method_and_set_on_real_faces(tmp_path, monkeypatch):
    bench = _module()
    out = tmp_path / "calibration.json"
    # an earlier run's rows: the same model with other weights stays, with these weights it is measured again
    other = {"model": "rnnpool_face_m4", "method": "minmax", "weights": str(tmp_path / "other" / "rnnpool_face_m4.pt")}
    out.write_text(json.dumps({"results": [other, {**other, "weights": str(WEIGHTS / "rnnpool_face_m4.pt")}]}))
    monkeypatch.setattr(sys, "argv", ["calibration.py", "--faces", str(FACES), "--models", "rnnpool_face_m4", "--weights",
                                      str(WEIGHTS), "--sets", "2", "--methods", "minmax", "mse+equalize", "--val-limit", "3",
                                      "--json", str(out)])
    bench.main()
    kept, *rows = json.loads(out.read_text())["results"]
    assert kept == other
    assert all(Path(r["weights"]).resolve() == (WEIGHTS / "rnnpool_face_m4.pt").resolve() for r in rows)
    assert [(r["method"], r["calibration_set"]) for r in rows] == [("minmax", 0), ("mse+equalize", 0), ("minmax", 1),
                                                                   ("mse+equalize", 1)]
    assert all(r["images"] == 3 and r["float"] == rows[0]["float"] and r["drop"] == pytest.approx(r["float"] - r["int8"])
               for r in rows)
    assert all(10 < r["head_sqnr_db"] < 60 for r in rows)
