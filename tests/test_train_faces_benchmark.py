"""benchmarks/train_faces.py, smoke-sized: an unclipped variant trained beside its model (clipped to norm 10 by
default, as rnnpool train detect) keeps a row, weights and a recipe line of its own."""
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from .conftest import load_benchmark
from .engine.test_detect import make_square_faces

ROOT = Path(__file__).resolve().parents[1]


def test_a_suffixed_unclipped_variant_gets_its_own_row_weights_and_recipe(tmp_path):
    gt = make_square_faces(tmp_path / "faces", count=6, size=64)
    out, weights = tmp_path / "faces.json", tmp_path / "weights"
    common = [sys.executable, "benchmarks/train_faces.py", "--train", str(gt), "--val", str(gt), "--models", "rnnpool_face_a",
              "--epochs", "2", "--input-size", "64", "--batch-size", "3", "--warmup-epochs", "1", "--eval-period", "1",
              "--workers", "0", "--device", "cpu", "--weights-out", str(weights), "--json", str(out)]
    for extra in ([], ["--grad-clip", "0", "--suffix", "_unclipped"]):
        proc = subprocess.run(common + extra, cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "TQDM_DISABLE": "1"})
        assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    rows = {r["model"]: r for r in data["results"]}
    assert set(rows) == {"rnnpool_face_a", "rnnpool_face_a_unclipped"}
    assert rows["rnnpool_face_a"]["grad_clip"] == 10.0 and rows["rnnpool_face_a_unclipped"]["grad_clip"] is None
    assert all(len(r["curve"]) == 2 and r["epochs_done"] == 2 for r in rows.values())
    for name in rows:  # the detector's weights, loadable as that model
        assert torch.load(weights / f"{name}.pt", weights_only=False)["model"]
    text = load_benchmark("readme_tables").train_faces_table(data)
    assert text.count("gradient clipped to norm 10") == 1 and "| rnnpool_face_a_unclipped |" in text
