"""The face detectors as int8 C on a Cortex-M4 (qemu mps2-an386): peak RAM, flash, instructions per image.

    python benchmarks/deploy_m4.py [--image IMG] [--calib DIR] [--weights-quant W] [--weights-m4 W]
                                   [--val ANNOTATIONS --image-root DIR] [--json benchmarks/results/deploy_m4.json]

For rnnpool_face_quant (640x480 RGB) and rnnpool_face_m4 (320x240 grey): generate C, cross-compile, run in
QEMU feeding the image row by row (the camera; not counted in RAM), and report RAM = static data + the
stack high-water mark (painted and measured), flash (code + constants), instructions per image (SysTick
under -icount shift=0) and whether the output is bit-exact with the NumPy int8 reference. With --val,
also the AP of the float model and of the int8 reference on those annotations (accuracy drop).
Target (issue 5): both models within 256 KB of RAM, bit-exact.
"""
import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from rnnpool.deploy.export import calibration_images, export_c, toolchain_available
from _report import write_json  # benchmarks/_report.py, next to this script

SHARED_FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"
MODELS = ("rnnpool_face_quant", "rnnpool_face_m4")
LIMIT = 256 * 1024


def _default_image(folder: Path) -> str:
    faces = sorted((SHARED_FACES / "images").glob("*.jpg"))
    if faces:
        return str(faces[0])
    rng = np.random.default_rng(0)
    path = folder / "synthetic.png"
    small = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    Image.fromarray(small).resize((640, 480), Image.BILINEAR).save(path)
    return str(path)


def _accuracy(model_name: str, weights, calib: str, val: str, image_root, limit: int):
    from rnnpool.deploy.accuracy import int8_accuracy
    from rnnpool.deploy.quantize import quantize_model
    from rnnpool.engine.detect import build_detector

    detector = build_detector(model_name, weights)
    model = detector.detector
    graph = quantize_model(model, calibration_images(calib, model.in_channels, model.input_size))
    return int8_accuracy(detector, graph, val, image_root, limit)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", help="image to run (default: the first of ../shared/data/faces, else synthetic)")
    parser.add_argument("--calib", help="calibration images (default: the run image)")
    parser.add_argument("--weights-quant", dest="weights_quant")
    parser.add_argument("--weights-m4", dest="weights_m4")
    parser.add_argument("--val", help="annotations for the fp32 vs int8 AP comparison")
    parser.add_argument("--image-root", dest="image_root")
    parser.add_argument("--val-limit", dest="val_limit", type=int, default=0, help="first N val images (0: all)")
    parser.add_argument("--json", default="benchmarks/results/deploy_m4.json")
    args = parser.parse_args()
    if not toolchain_available("cortex-m4"):
        sys.exit("error: needs gcc-arm-none-eabi, libnewlib-arm-none-eabi and qemu-system-arm (apt-get install ...)")
    work = Path(tempfile.mkdtemp(prefix="rnnpool_m4_"))
    image = args.image or _default_image(work)
    rows = []
    for name, weights in zip(MODELS, (args.weights_quant, args.weights_m4)):
        report = export_c(name, work / name, weights, args.calib, "cortex-m4", image)
        row = {k: report[k] for k in ("model", "weights", "input", "arena_bytes", "layer_by_layer_bytes", "static_ram_bytes",
                                      "stack_bytes", "ram_bytes", "flash_bytes", "instructions", "bit_exact")}
        row["detections"] = len(report["detections"])
        row["fits_256kb"] = report["ram_bytes"] <= LIMIT
        if args.val:
            row["accuracy"] = _accuracy(name, weights, args.calib or image, args.val, args.image_root, args.val_limit)
        rows.append(row)
    print(f"image: {image} (fed row by row; not counted in RAM)")
    print(f"{'model':20} {'input':>11} {'arena':>9} {'layer-by-layer':>14} {'static':>9} {'stack':>6} {'RAM':>9} "
          f"{'<=256KB':>7} {'flash':>9} {'instructions':>14} {'bit-exact':>9}")
    for r in rows:
        size = f"{r['input']['width']}x{r['input']['height']}x{r['input']['channels']}"
        print(f"{r['model']:20} {size:>11} {r['arena_bytes']:>9,} {r['layer_by_layer_bytes']:>14,} {r['static_ram_bytes']:>9,} "
              f"{r['stack_bytes']:>6,} {r['ram_bytes']:>9,} {str(r['fits_256kb']):>7} {r['flash_bytes']:>9,} "
              f"{r['instructions']:>14,} {str(r['bit_exact']):>9}")
        if "accuracy" in r:
            a = r["accuracy"]
            print(f"  {a['images']} val images: AP fp32 {a['ap_fp32']:.4f}, int8 {a['ap_int8']:.4f}, "
                  f"drop {a['ap_drop']:+.4f}; head-output SQNR {a['head_sqnr_db']:.1f} dB")
    write_json(args.json, {"image": image, "limit_bytes": LIMIT, "results": rows})


if __name__ == "__main__":
    main()
