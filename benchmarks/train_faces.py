"""Train face detectors with one S3FD recipe and print AP, MAdds and peak RAM side by side.

    python benchmarks/train_faces.py --train ../shared/data/faces/train_bbx_gt.txt \
        --val ../shared/data/faces/val_bbx_gt.txt [--models rnnpool_face_m4 rnnpool_face_quant] \
        [--epochs 100] [--input-size 320] [--batch-size 16] [--weights-out benchmarks/weights]

The paper's face table puts AP next to MAdds and peak RAM; this does the same on whatever WIDER FACE-format
data it is given (on these machines: the 853-image real face set of ../shared/data/faces). AP is the WIDER
FACE protocol over all faces and on images with at most 3 faces, each val image at its own size; the val AP
every --eval-period epochs is kept as the learning curve. With --weights-out, each model's best weights
(by val AP) are saved there as ``<model>.pt`` (what benchmarks/deploy_m4.py runs on the microcontroller).
--qat-from DIR fine-tunes DIR/<model>.pt quantization-aware instead (rnnpool train detect --qat): its AP is that
of the int8 arithmetic, its weights (with the activation ranges) go to --weights-out as <model>_qat.pt.
Writes benchmarks/results/train_faces.json after each model, keeping the rows of models it did not train
(so models trained by separate runs, each with its own --epochs, share one table). --resume --project P
continues cut-short runs from P bit for bit. --time-limit MIN ends each run after the last epoch that fits in
MIN minutes (the schedule still spans --epochs; the row says how many epochs were done). --grad-clip NORM clips
the whole gradient (10 by default, as in rnnpool train detect; 0: not clipped); --suffix names a variant's run,
weights and row (``rnnpool_face_m4_unclipped``) so that it sits beside the default's.
"""
import argparse
import csv
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from rnnpool.analysis import profile_model
from rnnpool.deploy.fake_quant import RANGES_KEY, FakeQuantModel
from rnnpool.engine import DetectConfig, build_detector, evaluate_detector, train_detector
from rnnpool.engine.s3fd import S3FD
from rnnpool.models import create_model, model_info
from _report import earlier_results, run_info, write_json  # benchmarks/_report.py, next to this script


def curve(run: Path):
    """(epoch, val AP, val AP on <= 3 faces) rows of a run's metrics.csv where validation ran."""
    with open(run / "metrics.csv") as f:
        return [{"epoch": int(r["epoch"]), "ap": float(r["val_ap"]), "ap_le3": float(r["val_ap_le3"]),
                 "loss": float(r["loss_conf"]) + float(r["loss_loc"])} for r in csv.DictReader(f) if r["val_ap"] != "nan"]


def train_minutes(run: Path) -> float:
    """Minutes of all the run's epochs (metrics.csv), resumed parts included."""
    with open(run / "metrics.csv") as f:
        return sum(float(r["seconds"]) for r in csv.DictReader(f)) / 60


RECIPE_KEYS = ("epochs", "lr", "input_size", "batch_size", "warmup_epochs", "eval_period", "amp")


def merged_results(path: str, args: dict, rows: list) -> dict:
    """This run's rows added to those already in ``path`` (a model trained again replaces its old row), so
    models trained by separate invocations (each with its own epochs) end up in one table."""
    earlier, kept = earlier_results(path, {r["model"] for r in rows})
    for row in kept:  # a kept row's recipe came from the earlier run's arguments, which these replace
        for key in RECIPE_KEYS:
            if key not in row and key in earlier.get("args", {}):
                row[key] = earlier["args"][key]
    return {"args": args, "results": kept + rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", required=True, help="training annotations (WIDER FACE .txt, .json or .csv)")
    parser.add_argument("--val", required=True, help="validation annotations")
    parser.add_argument("--image-root", default=None)
    parser.add_argument("--models", nargs="+", default=["rnnpool_face_m4", "rnnpool_face_quant"])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--input-size", type=int, default=320, help="square training crops")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--warmup-epochs", type=int, default=5, help="linear warm-up (the reference recipe's 5)")
    parser.add_argument("--eval-period", type=int, default=10, help="validate every N epochs (the learning curve)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", action="store_true", help="mixed precision on CUDA (default: float32 everywhere)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grad-clip", type=float, default=DetectConfig.grad_clip, metavar="NORM",
                        help="clip the whole gradient to this norm (rnnpool train detect --grad-clip; 0: not clipped)")
    parser.add_argument("--suffix", default="",
                        help="appended to each run's name, weights file and row (e.g. _clip10: a variant's row beside the default's)")
    parser.add_argument("--time-limit", type=float, default=0.0, metavar="MIN",
                        help="each model's run stops after the last epoch that fits in MIN minutes (validated there)")
    parser.add_argument("--project", help="keep the run folders here (default: a temporary folder)")
    parser.add_argument("--weights-out", help="save each model's best weights here as <model>.pt")
    parser.add_argument("--resume", action="store_true",
                        help="continue each model's run from <project>/<model>/weights/last.pt where it exists "
                             "(same settings; a cut-short benchmark goes on bit for bit)")
    parser.add_argument("--qat-from", dest="qat_from", metavar="DIR",
                        help="quantization-aware fine-tuning of DIR/<model>.pt instead of training from scratch: the run "
                             "trains and validates the int8 program's arithmetic; rows and weights are named <model>_qat")
    parser.add_argument("--json", default="benchmarks/results/train_faces.json")
    args = parser.parse_args()
    if args.resume and not args.project:
        sys.exit("error: --resume needs --project (the folder that holds the runs to continue)")
    for path in (args.train, args.val):
        if not Path(path).is_file():
            sys.exit(f"error: annotation file {path} does not exist")

    rows = []
    project = Path(args.project) if args.project else Path(tempfile.mkdtemp(prefix="train_faces_"))
    try:
        for name in args.models:
            label = (f"{name}_qat" if args.qat_from else name) + args.suffix  # the run, its weights and its row
            start = str(Path(args.qat_from) / f"{name}.pt") if args.qat_from else None
            last = project / label / "weights" / "last.pt"
            cfg = DetectConfig(model=name, weights=start, qat=bool(args.qat_from), train=args.train, val=args.val, image_root=args.image_root, epochs=args.epochs,
                               batch_size=args.batch_size, input_size=args.input_size, lr=args.lr,
                               warmup_epochs=min(args.warmup_epochs, args.epochs - 1), eval_period=args.eval_period,
                               workers=args.workers, device=args.device, amp=args.amp, seed=args.seed, project=str(project), name=label,
                               time_limit=args.time_limit, grad_clip=args.grad_clip or None,
                               exist_ok=True, resume=str(last) if args.resume and last.is_file() else None)
            result = train_detector(cfg)
            run = Path(result["run"])
            best = run / "weights" / "best.pt"
            model = build_detector(name, str(best), args.device)
            checkpoint = torch.load(best, map_location="cpu", weights_only=False)
            ranges = checkpoint.get(RANGES_KEY)
            if ranges is not None:  # evaluated as it trained: in the int8 program's arithmetic
                model = S3FD(FakeQuantModel(model.detector, ranges))
            val = evaluate_detector(model, args.val, args.image_root)
            if args.weights_out:
                out = Path(args.weights_out) / f"{label}.pt"
                out.parent.mkdir(parents=True, exist_ok=True)
                kept = {"model": checkpoint["model"], "config": checkpoint["config"], "epoch": checkpoint["epoch"]}
                torch.save({**kept, **({RANGES_KEY: ranges} if ranges is not None else {})}, out)
            prof = profile_model(create_model(name), model_info(name).input_shape, "int8")
            rows.append({"model": label, **({"qat_from": start} if start else {}), "epochs": args.epochs,
                         "epochs_done": result["last_epoch"]["epoch"], "lr": args.lr, "input_size": args.input_size, "batch_size": args.batch_size,
                         "warmup_epochs": cfg.warmup_epochs, "eval_period": args.eval_period, "amp": args.amp, "grad_clip": cfg.grad_clip, "ap": val["ap"], "ap_le3": val["ap_le3"], "val_images": val["images"],
                         "best_epoch": checkpoint["epoch"],
                         "curve": curve(run), "final_loss": result["last_epoch"]["loss_conf"] + result["last_epoch"]["loss_loc"],
                         "madds": prof.madds, "peak_int8_kib": prof.peak_bytes / 1024, "params": prof.params,
                         "input": "x".join(map(str, model_info(name).input_shape)), "minutes": train_minutes(run), "run": run_info()})
            write_json(args.json, merged_results(args.json, vars(args), rows))  # after each model: a cut-short run keeps it
    finally:
        if not args.project:
            shutil.rmtree(project, ignore_errors=True)
    print(f"\n{'model':22s} {'AP':>6s} {'AP<=3':>6s} {'best ep':>7s} {'MAdds (M)':>10s} {'peak int8 KiB':>14s} {'params':>9s} "
          f"{'train min':>9s}")
    for r in rows:
        print(f"{r['model']:22s} {r['ap']:6.3f} {r['ap_le3']:6.3f} {r['best_epoch']:7d} {r['madds'] / 1e6:10.1f} "
              f"{r['peak_int8_kib']:14.1f} {r['params']:9,d} {r['minutes']:9.1f}")
    print(f"(S3FD recipe, SGD lr {args.lr}, {args.warmup_epochs} warm-up epochs then cosine, {args.epochs} epochs, "
          f"{args.input_size}x{args.input_size} crops; MAdds and peak RAM ('layer' convention, int8) at each model's own input size)")


if __name__ == "__main__":
    main()
