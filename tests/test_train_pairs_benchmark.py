"""benchmarks/train_pairs.py, smoke-sized: the images decoded onto the device once for every model, the epochs
fitted to a time budget from a timed probe, the rows recording what was chosen and done."""
import json
import os
import subprocess
import sys
from pathlib import Path

from .engine.conftest import make_color_dataset

ROOT = Path(__file__).resolve().parents[1]


def test_time_budget_fits_the_epochs_and_the_rows_say_so(tmp_path):
    data = make_color_dataset(tmp_path / "data")
    out = tmp_path / "pairs.json"
    proc = subprocess.run([sys.executable, "benchmarks/train_pairs.py", "--data", str(data), "--pairs", "mobilenetv2_035_rnnpool",
                           "--variants", "mobilenetv2_035_rnnpool@downsample=avg", "--input-size", "32", "--epochs", "3",
                           "--batch-size", "6", "--workers", "0", "--device", "cpu", "--time-budget", "3", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "TQDM_DISABLE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("data on cpu: 36 training and 18 validation images") == 2  # each run on the device data
    rows = json.loads(out.read_text())["results"]
    assert [r["model"] for r in rows] == ["mobilenetv2_035_rnnpool", "mobilenetv2_035_rnnpool@downsample=avg"]
    for r in rows:
        assert 1 <= r["epochs_done"] <= r["epochs"] <= 3 and r["data_on_device"] and r["test_images"] == 18
        assert r["probe_train_epoch_s"] > 0 and 0 < r["minutes_share"] <= 3
        assert len(r["curve"]) == r["epochs_done"]
    assert "epochs fitted to the time budget" in proc.stdout
