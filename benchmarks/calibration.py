"""Post-training int8 calibration methods side by side: min/max, percentiles and least squared error, each with
and without RNNPool equalization.

    python benchmarks/calibration.py --faces ../shared/data/faces [--models rnnpool_face_m4 rnnpool_face_quant]
        [--weights benchmarks/weights] [--sets 3] [--methods minmax mse+equalize percentile@99.9 ...]
        [--classifier runs/classify/exp/weights/best.pt --cifar ../shared/data/cifar10 --test-per-class 100]
        [--json benchmarks/results/calibration.json]

Each face detector's trained weights (``WEIGHTS/<model>.pt``, as ``benchmarks/train_faces.py --weights-out``
keeps them) are quantized by each method on each of ``--sets`` disjoint sets of 32 training images of the
face set (the first is the one ``benchmarks/deploy_m4.py`` calibrates with), and the int8 reference
(``run_int8``: the arithmetic the generated C runs bit for bit) is scored against the float model on every
validation image with the WIDER FACE protocol (``rnnpool.deploy.accuracy.int8_accuracy``): AP of both, the
drop, the head outputs' SQNR and the map that loses most, per calibration set (their spread is the
measurement's noise: a few rounding ties moved by a slightly different range move the AP of 170 images by
tenths of a point). ``--classifier`` adds a classifier checkpoint, calibrated on sets of 32 training images
spread over the classes and scored by top-1 on ``--test-per-class`` test images of each class (as uint8
pixels). A method is ``minmax``, ``mse`` or ``percentile@SHARE``, with ``+equalize`` to move every RNNPool
output channel to one range first (``quantize_model(..., equalize=True)``, the library's default); without
it the method runs with ``equalize=False``.
"""
import argparse
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import torch

from rnnpool.data.faces import load_face_annotations
from rnnpool.deploy.accuracy import int8_accuracy, int8_top1, largest_loss
from rnnpool.deploy.export import image_tensor, load_image, load_model
from rnnpool.deploy.quantize import CALIBRATION_METHODS, quantize_model
from rnnpool.models.checkpoint import checkpoint_model, create_model_from_checkpoint
from _report import earlier_results, run_info, write_json  # benchmarks/_report.py, next to this script
from int8_classifier import CALIBRATION_IMAGES, pixels

DEFAULT_METHODS = ["minmax", "percentile@99.99", "mse", "minmax+equalize", "percentile@99.99+equalize", "mse+equalize"]


def parse_method(text: str) -> Tuple[str, float, bool]:
    """``minmax`` / ``mse`` / ``percentile@SHARE``, each optionally ``+equalize`` -> (method, percentile, equalize)."""
    base, plus, extra = text.partition("+")
    method, _, share = base.partition("@")
    if method not in CALIBRATION_METHODS or bool(share) != (method == "percentile") or (plus and extra != "equalize"):
        sys.exit(f"error: calibration method {text!r}: expected minmax, mse or percentile@SHARE, optionally +equalize")
    try:
        return method, float(share) if share else 99.99, bool(plus)
    except ValueError:
        sys.exit(f"error: calibration method {text!r}: {share!r} is not a number")


def face_rows(model_name: str, weights: Path, faces: Path, methods: List[str], sets: int, limit: int) -> List[Dict]:
    """One row per calibration method and set: float and int8 AP of ``model_name`` on the validation images."""
    model, _, (channels, height, width) = load_model(model_name, str(weights))
    train = load_face_annotations(str(faces / "train_bbx_gt.txt")).records
    if len(train) < sets * CALIBRATION_IMAGES:
        sys.exit(f"error: {sets} calibration sets need {sets * CALIBRATION_IMAGES} training images, the face set has {len(train)}")
    rows = []
    for index in range(sets):
        chosen = train[index * CALIBRATION_IMAGES:(index + 1) * CALIBRATION_IMAGES]
        images = [image_tensor(load_image(r.path, channels, (height, width))) for r in chosen]
        for text in methods:
            method, share, equalize = parse_method(text)
            graph = quantize_model(model, images, (height, width), method, share, equalize=equalize)
            result = int8_accuracy(model, graph, str(faces / "val_bbx_gt.txt"), limit=limit or None)
            name, _, db = largest_loss(result["tensor_sqnr_db"])
            rows.append({"model": model_name, "method": text, "calibration_set": index, "metric": "AP",
                         "images": result["images"], "float": result["ap_fp32"], "int8": result["ap_int8"],
                         "drop": result["ap_drop"], "head_sqnr_db": result["head_sqnr_db"], "worst_map": name,
                         "worst_map_sqnr_db": db, "input": f"{channels}x{height}x{width}", "weights": str(weights)})
            print(f"{model_name:24s} set {index} {text:18s} float AP {result['ap_fp32']:.4f} int8 AP {result['ap_int8']:.4f} "
                  f"drop {100 * result['ap_drop']:+.2f} points, heads {result['head_sqnr_db']:.1f} dB, "
                  f"worst map {name} {db:.1f} dB")
    return rows


def classifier_rows(checkpoint: Path, cifar: Path, methods: List[str], sets: int, test_per_class: int) -> List[Dict]:
    """One row per calibration method and set: float and int8 top-1 of the classifier ``checkpoint``."""
    model = create_model_from_checkpoint(str(checkpoint)).eval()
    name = checkpoint_model(checkpoint)
    size = model.input_size if isinstance(model.input_size, int) else model.input_size[0]
    classes = sorted(p.name for p in (cifar / "train").iterdir() if p.is_dir())
    spread_images = list(pixels(cifar / "train", classes, size, sets * CALIBRATION_IMAGES))
    test = next(cifar / s for s in ("test", "val") if (cifar / s).is_dir())
    rows = []
    for index in range(sets):
        images = [torch.from_numpy(image).permute(2, 0, 1).float() / 255 for image, _ in spread_images[index::sets]]
        for text in methods:
            method, share, equalize = parse_method(text)
            graph = quantize_model(model, images, (size, size), method, share, equalize=equalize)
            result = int8_top1(model, graph, pixels(test, classes, size, test_per_class * len(classes)))
            rows.append({"model": name, "method": text, "calibration_set": index, "metric": "top-1",
                         "images": result["images"], "float": result["top1_fp32"], "int8": result["top1_int8"],
                         "drop": result["top1_drop"], "agreement": result["agreement"], "input": f"3x{size}x{size}",
                         "weights": str(checkpoint)})
            print(f"{name:24s} set {index} {text:18s} float top-1 {result['top1_fp32']:.4f} "
                  f"int8 top-1 {result['top1_int8']:.4f} drop {100 * result['top1_drop']:+.2f} points")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", help="folder with train_bbx_gt.txt and val_bbx_gt.txt (the shared face set)")
    parser.add_argument("--models", nargs="*", default=["rnnpool_face_m4", "rnnpool_face_quant"])
    parser.add_argument("--weights", default="benchmarks/weights", help="folder of <model>.pt trained weights")
    parser.add_argument("--methods", nargs="+", default=DEFAULT_METHODS)
    parser.add_argument("--sets", type=int, default=3, help="disjoint calibration sets of 32 training images each")
    parser.add_argument("--val-limit", type=int, default=0, help="score only the first N validation images (0: all)")
    parser.add_argument("--classifier", help="a classifier checkpoint (e.g. from benchmarks/train_pairs.py --project)")
    parser.add_argument("--cifar", help="with --classifier: ImageFolder-style train/ and test/ folders")
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--json", default="benchmarks/results/calibration.json")
    args = parser.parse_args()
    for text in args.methods:
        parse_method(text)
    if args.models and not args.faces:
        sys.exit("error: --faces is required for the face detectors (or pass --models with no names)")
    if args.classifier and not args.cifar:
        sys.exit("error: --classifier needs --cifar")
    rows: List[Dict] = []
    for name in args.models:
        weights = Path(args.weights) / f"{name}.pt"
        if not weights.is_file():
            sys.exit(f"error: no trained weights {weights} (benchmarks/train_faces.py --weights-out writes them)")
        rows += face_rows(name, weights, Path(args.faces), args.methods, args.sets, args.val_limit)
    if args.classifier:
        rows += classifier_rows(Path(args.classifier), Path(args.cifar), args.methods, args.sets, args.test_per_class)
    # an earlier run's rows are kept unless this run measured the same model with the same weights
    measured = {(r["model"], Path(r["weights"]).resolve()) for r in rows}
    _, earlier = earlier_results(args.json, set())
    kept = [r for r in earlier if (r["model"], Path(r["weights"]).resolve()) not in measured]
    write_json(args.json, {"results": kept + [{**r, "run": run_info()} for r in rows]})


if __name__ == "__main__":
    main()
