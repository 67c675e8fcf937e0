"""int8 accuracy: the float model and the int8 reference scored with the same post-processing and WIDER FACE AP."""
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rnnpool.deploy import quantize_model
from rnnpool.deploy.accuracy import int8_accuracy

from ..conftest import SHARED_DATA
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
    assert result["ap_drop"] == pytest.approx(result["ap_fp32"] - result["ap_int8"])
    assert math.isfinite(result["head_sqnr_db"]) and result["head_sqnr_db"] > 0
    assert int8_accuracy(model, graph, str(tmp_path / "gt.txt"), limit=1)["images"] == 1


WEIGHTS = Path(__file__).resolve().parents[2] / "benchmarks" / "weights" / "rnnpool_face_m4.pt"


@pytest.mark.skipif(not (SHARED_DATA / "faces").is_dir(), reason="../shared/data/faces not present (real-data check)")
def test_float_ap_equals_the_training_engines_evaluation_on_real_faces(tmp_path):
    """On real faces with trained weights, the deployment's float AP is the training engine's evaluator's
    (another code path: S3FD.detect) on the same pixels; the int8 reference keeps most of it."""
    from rnnpool.data.faces import load_face_annotations
    from rnnpool.engine import build_detector, evaluate_detector
    from rnnpool.models import create_model

    records = load_face_annotations(SHARED_DATA / "faces" / "val_bbx_gt.txt").records[:12]
    lines = []
    for r in records:  # 320x256 images (multiples of 32: S3FD.detect runs them as they are), so both see the same pixels
        with Image.open(r.path) as img:
            sx, sy = 320 / img.width, 256 / img.height
            img.convert("L").resize((320, 256), Image.BILINEAR).save(tmp_path / f"{r.path.stem}.png")
        lines += [f"{r.path.stem}.png", str(len(r.boxes))]
        lines += [f"{x * sx:.2f} {y * sy:.2f} {w * sx:.2f} {h * sy:.2f} 0 0 0 {int(bad)} 0 0" for (x, y, w, h), bad in zip(r.boxes, r.invalid)]
    (tmp_path / "gt.txt").write_text("\n".join(lines) + "\n")
    model = create_model("rnnpool_face_m4", checkpoint_path=WEIGHTS).eval()
    calibration = [torch.from_numpy(np.array(Image.open(tmp_path / f"{r.path.stem}.png")))[None].float() / 255 for r in records[:4]]
    result = int8_accuracy(model, quantize_model(model, calibration, (256, 320)), str(tmp_path / "gt.txt"))
    engine = evaluate_detector(build_detector("rnnpool_face_m4", str(WEIGHTS)), str(tmp_path / "gt.txt"))
    assert result["ap_fp32"] > 0.1 and result["ap_fp32"] == pytest.approx(engine["ap"], abs=1e-6)
    assert result["ap_int8"] > 0.5 * result["ap_fp32"]


def test_deploy_needs_no_training_engine():
    """The house reads top-down: deploying (accuracy included) imports neither rnnpool.engine nor the yaml
    its run folders use (tqdm comes with torch itself)."""
    code = ("import sys, rnnpool.deploy, rnnpool.deploy.accuracy, rnnpool.deploy.export; "
            "print(sorted(m for m in sys.modules if m.startswith('rnnpool.engine') or m == 'yaml'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_tensor_sqnr_names_every_map_and_equals_a_direct_computation():
    from rnnpool.deploy.accuracy import tensor_sqnr
    from rnnpool.deploy.graph import build_graph, run_float
    from rnnpool.deploy.int8_reference import dequantize, run_int8

    model = live_model("rnnpool_face_m4")
    images = smooth_images(input_shape(model), 4)
    graph = quantize_model(model, images[:2])
    pictures = [to_uint8(image) for image in images[2:]]
    table = tensor_sqnr(model, graph, pictures)
    assert list(table)[:3] == ["input", "stages.0.0", "stages.0.1.0"] and "heads.3.loc" in table
    assert table["input"] > 100  # the image is exact
    # one map by hand: float graph against the dequantized int8 map, powers summed over both images
    signal = noise = 0.0
    for picture in pictures:
        x = torch.from_numpy(picture).permute(2, 0, 1).float()[None] / 255
        f = run_float(build_graph(model), x)["head0_conf"][0].permute(1, 2, 0).double().numpy()
        q = dequantize(graph, "head0_conf", run_int8(graph, picture)["head0_conf"]).reshape(f.shape)
        signal, noise = signal + (f**2).sum(), noise + ((f - q) ** 2).sum()
    assert table["heads.0.conf"] == pytest.approx(10 * np.log10(signal / noise), abs=1e-6)
    assert 10 < table["heads.0.conf"] < 60  # int8: tens of dB, neither exact nor noise


def test_int8_top1_counts_what_the_model_and_the_integer_reference_predict():
    """The float top-1 against the classifier's own forward on normalised input (not the deploy graph), the int8
    top-1 against run_int8's argmax."""
    from rnnpool.deploy.accuracy import int8_top1
    from rnnpool.deploy.int8_reference import run_int8

    model = live_model("mobilenetv2_035_rnnpool", input_size=64)
    images = smooth_images(input_shape(model), 8, seed=3)
    graph = quantize_model(model, images[:4], (64, 64))
    mean, std = torch.tensor([0.485, 0.456, 0.406])[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    with torch.no_grad():
        float_classes = [int(model(((i - mean) / std)[None]).argmax()) for i in images]
    int8_classes = [int(run_int8(graph, to_uint8(i))["logits"].reshape(-1).argmax()) for i in images]
    labels = float_classes[:4] + [(c + 1) % 1000 for c in float_classes[4:]]  # half right for the float model
    result = int8_top1(model, graph, [(to_uint8(i), label) for i, label in zip(images, labels)])
    assert result["images"] == 8 and result["top1_fp32"] == 0.5
    assert result["top1_int8"] == np.mean([c == label for c, label in zip(int8_classes, labels)])
    assert result["agreement"] == np.mean([a == b for a, b in zip(float_classes, int8_classes)])


def test_tensor_sqnr_measures_an_equalized_map_in_its_own_units():
    """An equalized RNNPool map holds gain * (x - centre) per channel; its SQNR is against that, not against x."""
    from rnnpool.deploy.accuracy import tensor_sqnr
    from rnnpool.deploy.graph import build_graph, run_float
    from rnnpool.deploy.int8_reference import dequantize, run_int8

    model = live_model("rnnpool_face_m4")
    images = smooth_images(input_shape(model), 3)
    graph = quantize_model(model, images[:2], equalize=True)
    (pool, (gain, centre)), = graph.equalized.items()
    picture = to_uint8(images[2])
    x = torch.from_numpy(picture).permute(2, 0, 1).float()[None] / 255
    f = run_float(build_graph(model), x)[pool][0].double()
    f = (gain.double()[:, None, None] * (f - centre.double()[:, None, None])).permute(1, 2, 0).numpy()
    q = dequantize(graph, pool, run_int8(graph, picture)[pool]).reshape(f.shape)
    expected = 10 * np.log10((f**2).sum() / ((f - q) ** 2).sum())
    assert tensor_sqnr(model, graph, [picture])[graph.layer_of(pool)] == pytest.approx(expected, abs=1e-6)
    assert 10 < expected < 60


def test_largest_loss_is_the_steepest_fall_past_the_first_layer():
    from rnnpool.deploy.accuracy import largest_loss

    sqnr = {"input": 150.0, "stem": 30.0, "pool": 29.0, "block": 18.0, "head": 17.5}
    assert largest_loss(sqnr) == ("block", 29.0, 18.0)  # the image -> stem fall is the first layer's, not counted
    with pytest.raises(ValueError, match="at least three maps"):
        largest_loss({"input": 150.0, "stem": 30.0})
