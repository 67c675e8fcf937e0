"""Train face detectors with one S3FD recipe and print AP, MAdds and peak RAM side by side.

    python benchmarks/train_faces.py --train ../shared/data/faces/train_bbx_gt.txt \
        --val ../shared/data/faces/val_bbx_gt.txt [--models rnnpool_face_m4 rnnpool_face_quant] \
        [--epochs 10] [--input-size 320] [--batch-size 16]

The paper's face table puts AP next to MAdds and peak RAM; this does the same on whatever WIDER FACE-format
data it is given (on these machines: the 853-image real face set of ../shared/data/faces). AP is the WIDER
FACE protocol over all faces and on images with at most 3 faces, each val image at its own size.
Writes benchmarks/results/train_faces.json.
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

from rnnpool.analysis import profile_model
from rnnpool.engine import DetectConfig, build_detector, evaluate_detector, train_detector
from rnnpool.models import create_model, model_info
from _report import write_json  # benchmarks/_report.py, next to this script


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", required=True, help="training annotations (WIDER FACE .txt, .json or .csv)")
    parser.add_argument("--val", required=True, help="validation annotations")
    parser.add_argument("--image-root", default=None)
    parser.add_argument("--models", nargs="+", default=["rnnpool_face_m4", "rnnpool_face_quant"])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--input-size", type=int, default=320, help="square training crops")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", default="benchmarks/results/train_faces.json")
    args = parser.parse_args()
    for path in (args.train, args.val):
        if not Path(path).is_file():
            sys.exit(f"error: annotation file {path} does not exist")

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            start = time.time()
            cfg = DetectConfig(model=name, train=args.train, image_root=args.image_root, epochs=args.epochs,
                               batch_size=args.batch_size, input_size=args.input_size, lr=args.lr,
                               warmup_epochs=min(1, args.epochs - 1), workers=args.workers, device=args.device,
                               project=tmp, name=name)
            result = train_detector(cfg)
            model = build_detector(name, str(Path(result["run"]) / "weights" / "last.pt"), args.device)
            val = evaluate_detector(model, args.val, args.image_root)
            prof = profile_model(create_model(name), model_info(name).input_shape, "int8")
            rows.append({"model": name, "ap": val["ap"], "ap_le3": val["ap_le3"], "val_images": val["images"],
                         "final_loss": result["last_epoch"]["loss_conf"] + result["last_epoch"]["loss_loc"],
                         "madds": prof.madds, "peak_int8_kib": prof.peak_bytes / 1024, "params": prof.params,
                         "input": "x".join(map(str, model_info(name).input_shape)), "minutes": (time.time() - start) / 60})
            write_json(args.json, {"args": vars(args), "results": rows})  # after each model: a cut-short run keeps it
    print(f"\n{'model':22s} {'AP':>6s} {'AP<=3':>6s} {'MAdds (M)':>10s} {'peak int8 KiB':>14s} {'params':>9s} {'train min':>9s}")
    for r in rows:
        print(f"{r['model']:22s} {r['ap']:6.3f} {r['ap_le3']:6.3f} {r['madds'] / 1e6:10.1f} {r['peak_int8_kib']:14.1f} "
              f"{r['params']:9,d} {r['minutes']:9.1f}")
    print(f"(S3FD recipe, SGD lr {args.lr}, cosine, {args.epochs} epochs, {args.input_size}x{args.input_size} crops; "
          f"MAdds and peak RAM ('layer' convention, int8) at each model's own input size)")


if __name__ == "__main__":
    main()
