"""Off-the-shelf face detectors nobody here trained, on the same validation images and with the same evaluator
as benchmarks/train_faces.py: a reference a user recognises, not a contest.

    pip install -e ".[reference]"      # OpenCV 4.x: its wheels ship the Haar cascades (5.x wheels do not)
    python benchmarks/reference_detectors.py --val ../shared/data/faces/val_bbx_gt.txt

Detectors: OpenCV's bundled Viola-Jones Haar cascades (``haarcascade_frontalface_default.xml`` and
``haarcascade_frontalface_alt2.xml``) at their usual settings (scale step 1.1, 3 neighbours, faces from
16 px), on the grey full-resolution image; each detection's score is its final stage's weight
(``detectMultiScale3(outputRejectLevels=True)``), so the WIDER FACE protocol can rank them. YuNet
(``cv2.FaceDetectorYN``) is not here: no wheel ships its weights, and nothing is downloaded at run time.
Writes benchmarks/results/reference_detectors.json.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

from rnnpool.data import load_face_annotations
from rnnpool.metrics.widerface import evaluate_widerface, truth_from_boxes
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--val", required=True, help="validation annotations (WIDER FACE .txt, .json or .csv)")
    parser.add_argument("--image-root", default=None)
    parser.add_argument("--json", default="benchmarks/results/reference_detectors.json")
    args = parser.parse_args()
    try:
        import cv2
    except ImportError:
        sys.exit('error: this benchmark needs OpenCV 4.x: pip install -e ".[reference]"')
    data = load_face_annotations(args.val, args.image_root)
    truth = truth_from_boxes({r.name: r.boxes for r in data.records}, {r.name: r.invalid for r in data.records})
    rows = []
    for cascade_file in CASCADES:
        started = time.time()
        predictions = haar_predictions(cv2, cascade_file, data.records)
        seconds = time.time() - started
        rows.append({"detector": f"OpenCV Haar cascade {cascade_file}", "opencv": cv2.__version__,
                     "ap": evaluate_widerface(predictions, truth)["all"]["ap"],
                     "ap_le3": evaluate_widerface(predictions, truth, max_faces=3)["all"]["ap"],
                     "images": len(data.records), "detections": int(sum(len(p) for p in predictions.values())),
                     "seconds_per_image": seconds / max(len(data.records), 1),
                     "settings": {"scale_factor": SCALE_FACTOR, "min_neighbors": MIN_NEIGHBORS, "min_size": MIN_SIZE,
                                  "input": "grey, full resolution"}})
        r = rows[-1]
        print(f"{r['detector']:60s} AP {r['ap']:.3f}  AP<=3 {r['ap_le3']:.3f}  ({r['detections']} detections, "
              f"{1e3 * r['seconds_per_image']:.0f} ms/image)")
    write_json(args.json, {**run_info(), "val": args.val, "results": rows})


if __name__ == "__main__":
    main()
