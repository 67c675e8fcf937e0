"""Off-the-shelf face detectors nobody here trained, next to ours, on the same validation images and with the same
evaluator as benchmarks/train_faces.py: a reference a user recognises, not a contest.

    pip install -e ".[reference]"      # OpenCV 4.x: its wheels ship the Haar cascades (5.x wheels do not)
    python benchmarks/reference_detectors.py --val ../shared/data/faces/val_bbx_gt.txt \
        [--weights-dir benchmarks/weights/h200] [--models rnnpool_face_m4 rnnpool_face_quant[=PATH]] [--size-bins 16,32,64]

Detectors: OpenCV's bundled Viola-Jones Haar cascades (``haarcascade_frontalface_default.xml`` and
``haarcascade_frontalface_alt2.xml``) at their usual settings (scale step 1.1, 3 neighbours, faces from
16 px), on the grey full-resolution image; each detection's score is its final stage's weight
(``detectMultiScale3(outputRejectLevels=True)``), so the WIDER FACE protocol can rank them. YuNet
(``cv2.FaceDetectorYN``) is not here: no wheel ships its weights, and nothing is downloaded at run time.
Next to them, the RNNPool face detectors trained here (``--weights-dir/<model>.pt``, or ``<model>=PATH`` for
weights elsewhere; float, each image at its own size as in training's validation; ``--models`` with no names
leaves them out). Every row has the AP by face
size, sqrt(w * h) binned at ``--size-bins`` (the other faces ignored in each bin, as WIDER FACE's settings
do), and the time per image on this CPU. Writes benchmarks/results/reference_detectors.json.
"""
import argparse
import sys
import time
from pathlib import Path
from typing import Tuple

import numpy as np
import torch

from rnnpool.data import load_face_annotations
from rnnpool.engine.detect import build_detector, predict_faces
from rnnpool.metrics.widerface import ap_summary, parse_size_bins, truth_from_boxes
from _report import run_info, write_json  # benchmarks/_report.py, next to this script

CASCADES = ("haarcascade_frontalface_default.xml", "haarcascade_frontalface_alt2.xml")
SCALE_FACTOR, MIN_NEIGHBORS, MIN_SIZE = 1.1, 3, 16


def haar_predictions(cv2, cascade_file: str, records) -> dict:
    """(K, 5) x, y, w, h, score per image name."""
    cascade = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / cascade_file))
    if cascade.empty():
        sys.exit(f"error: OpenCV could not load {cascade_file} from {cv2.data.haarcascades}")
    predictions = {}
    for record in records:
        image = cv2.imread(str(record.path), cv2.IMREAD_GRAYSCALE)
        if image is None:
            sys.exit(f"error: OpenCV could not read {record.path}")
        boxes, _, weights = cascade.detectMultiScale3(image, scaleFactor=SCALE_FACTOR, minNeighbors=MIN_NEIGHBORS,
                                                      minSize=(MIN_SIZE, MIN_SIZE), outputRejectLevels=True)
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        predictions[record.name] = np.c_[boxes, np.asarray(weights, np.float64).reshape(-1)]
    return predictions


def score_row(predictions: dict, truth: dict, seconds: float, images: int) -> dict:
    """AP (all faces, <= 3 faces, per size setting), detections and time of one detector's predictions."""
    summary = ap_summary(predictions, truth)
    return {**{k: summary[k] for k in ("ap", "ap_le3", "ap_by_size", "faces_by_size")}, "images": images,
            "detections": int(sum(len(p) for p in predictions.values())), "seconds_per_image": seconds / max(images, 1)}


def model_weights(spec: str, weights_dir: str) -> Tuple[str, Path]:
    """``NAME`` -> (NAME, weights_dir/NAME.pt); ``NAME=PATH`` -> (NAME, PATH)."""
    name, sep, path = spec.partition("=")
    return name, Path(path) if sep else Path(weights_dir) / f"{name}.pt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--val", required=True, help="validation annotations (WIDER FACE .txt, .json or .csv)")
    parser.add_argument("--image-root", default=None)
    parser.add_argument("--weights-dir", default="benchmarks/weights/h200", help="folder of <model>.pt trained weights")
    parser.add_argument("--models", nargs="*", default=["rnnpool_face_m4", "rnnpool_face_quant"],
                        help="trained RNNPool face detectors to put next to the references, each NAME (weights "
                             "--weights-dir/NAME.pt) or NAME=PATH (none: leave them out)")
    parser.add_argument("--size-bins", default="16,32,64", help="face-size bin edges in pixels, comma-separated")
    parser.add_argument("--limit", type=int, default=0, help="the first N validation images only (0: all; a smoke run)")
    parser.add_argument("--json", default="benchmarks/results/reference_detectors.json")
    args = parser.parse_args()
    try:
        import cv2
    except ImportError:
        sys.exit('error: this benchmark needs OpenCV 4.x: pip install -e ".[reference]"')
    detectors = [model_weights(spec, args.weights_dir) for spec in args.models]
    missing = [str(weights) for _, weights in detectors if not weights.is_file()]
    if missing:
        sys.exit(f"error: no trained weights {', '.join(missing)} "
                 "(benchmarks/train_faces.py --weights-out writes them; --models with no names leaves them out)")
    try:
        size_bins = parse_size_bins(args.size_bins)
    except ValueError as err:
        sys.exit(f"error: --size-bins: {err}")
    records = load_face_annotations(args.val, args.image_root).records[: args.limit or None]
    truth = truth_from_boxes({r.name: r.boxes for r in records}, {r.name: r.invalid for r in records}, size_bins)
    rows = []
    for cascade_file in CASCADES:
        started = time.time()
        predictions = haar_predictions(cv2, cascade_file, records)
        rows.append({"detector": f"OpenCV Haar cascade {cascade_file} (OpenCV {cv2.__version__})", "trained_here": False,
                     "opencv": cv2.__version__, **score_row(predictions, truth, time.time() - started, len(records)),
                     "settings": {"scale_factor": SCALE_FACTOR, "min_neighbors": MIN_NEIGHBORS, "min_size": MIN_SIZE,
                                  "input": "grey, full resolution"}})
    for model_name, weights in detectors:
        started = time.time()
        predictions = predict_faces(build_detector(model_name, str(weights)).eval(), records)  # (float, on the CPU)
        rows.append({"detector": f"{model_name} (trained here, float, {weights.parent.name})", "trained_here": True, "weights": str(weights),
                     **score_row(predictions, truth, time.time() - started, len(records)),
                     "settings": {"input": "the model's channels, each image at its own size", "threads": torch.get_num_threads()}})
    for r in rows:
        sizes = "  ".join(f"{s} {ap:.3f}" for s, ap in r["ap_by_size"].items())
        print(f"{r['detector']:70s} AP {r['ap']:.3f}  AP<=3 {r['ap_le3']:.3f}  {sizes}  ({r['detections']} detections, "
              f"{1e3 * r['seconds_per_image']:.0f} ms/image)")
    write_json(args.json, {**run_info(), "val": args.val, "size_bins": size_bins, "images": len(records), "results": rows})


if __name__ == "__main__":
    main()
