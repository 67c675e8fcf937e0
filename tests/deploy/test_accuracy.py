"""int8 accuracy: the float model and the int8 reference scored with the same post-processing and WIDER FACE AP."""
import math
import subprocess
import sys

import pytest
from PIL import Image

from rnnpool.deploy import quantize_model
from rnnpool.deploy.accuracy import int8_accuracy

from .conftest import input_shape, live_model, smooth_images, to_uint8


def test_int8_accuracy_scores_both_models_on_annotated_images(tmp_path):
    model = live_model("rnnpool_face_m4")
    images = smooth_images(input_shape(model), 5)
    lines = []
    for i, image in enumerate(images[2:]):
        Image.fromarray(to_uint8(image)[..., 0]).resize((400, 300)).save(tmp_path / f"img_{i}.png")
        lines += [f"img_{i}.png", "2", "40 30 60 80 0 0 0 0 0 0", "200 100 90 120 0 0 0 0 0 0"]
    (tmp_path / "gt.txt").write_text("\n".join(lines) + "\n")
    graph = quantize_model(model, images[:2])
    result = int8_accuracy(model, graph, str(tmp_path / "gt.txt"))
    assert result["images"] == 3
    assert 0 <= result["ap_fp32"] <= 1 and 0 <= result["ap_int8"] <= 1
    assert result["ap_drop"] == pytest.approx(result["ap_fp32"] - result["ap_int8"])
    assert math.isfinite(result["head_sqnr_db"]) and result["head_sqnr_db"] > 0
    assert int8_accuracy(model, graph, str(tmp_path / "gt.txt"), limit=1)["images"] == 1


def test_deploy_needs_no_training_engine():
    """The house reads top-down: deploying (accuracy included) imports neither rnnpool.engine nor the yaml
    its run folders use (tqdm comes with torch itself)."""
    code = ("import sys, rnnpool.deploy, rnnpool.deploy.accuracy, rnnpool.deploy.export; "
            "print(sorted(m for m in sys.modules if m.startswith('rnnpool.engine') or m == 'yaml'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
