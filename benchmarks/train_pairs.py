"""Train the paper's pairs with one recipe and print accuracy side by side (baseline vs RNNPool).

    python benchmarks/train_pairs.py --data ../shared/data/cifar10 --input-size 64 --epochs 5 \
        [--pairs mobilenetv2:mobilenetv2_rnnpool mobilenetv2_035:mobilenetv2_035_rnnpool] [--per-class 500]

CIFAR-10 (the same ten classes as the paper's ImageNet-10) is the small real stand-in here: images are
upsampled to --input-size. --per-class subsamples the training split so a CPU run stays short. Writes
benchmarks/results/train_pairs.json with each model's top-1, MAdds and peak RAM at that input size.
"""
import argparse
import sys
import tempfile
from pathlib import Path

from rnnpool.analysis import profile_model
from rnnpool.engine import ClassifyConfig, train_classifier
from rnnpool.models import create_model
from _report import write_json  # benchmarks/_report.py, next to this script


def subsample(data: Path, per_class: int, out: Path) -> Path:
    """Link the first ``per_class`` training images of each class (and the whole val/test split) into ``out``."""
    for split in ("train", "val", "test"):
        if not (data / split).is_dir():
            continue
        for folder in sorted(p for p in (data / split).iterdir() if p.is_dir()):
            target = out / split / folder.name
            target.mkdir(parents=True)
            files = sorted(folder.iterdir())
            for f in files[:per_class] if split == "train" else files:
                (target / f.name).symlink_to(f.resolve())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--pairs", nargs="+", default=["mobilenetv2_035:mobilenetv2_035_rnnpool", "mobilenetv2:mobilenetv2_rnnpool"])
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--per-class", type=int, default=0, help="training images per class (0: all)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", default="benchmarks/results/train_pairs.json")
    args = parser.parse_args()

    data = Path(args.data)
    if not data.is_dir():
        sys.exit(f"error: data folder {data} does not exist")
    with tempfile.TemporaryDirectory() as tmp:
        root = subsample(data, args.per_class, Path(tmp) / "data") if args.per_class else data
        rows = []
        for pair in args.pairs:
            for name in pair.split(":"):
                cfg = ClassifyConfig(model=name, data=str(root), epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                     input_size=args.input_size, workers=args.workers, device=args.device,
                                     project=str(Path(tmp) / "runs"), name=name, warmup_epochs=min(1, args.epochs - 1))
                result = train_classifier(cfg)
                prof = profile_model(create_model(name, num_classes=len(result["classes"]), input_size=args.input_size),
                                     (3, args.input_size, args.input_size), "int8")
                rows.append({"pair": pair, "model": name, "top1": result["final"]["top1"], "madds": prof.madds,
                             "peak_int8_kib": prof.peak_bytes / 1024, "params": prof.params})
    print(f"\n{'model':28s} {'top-1':>7s} {'MAdds (M)':>10s} {'peak int8 KiB':>14s} {'params':>10s}")
    for r in rows:
        print(f"{r['model']:28s} {r['top1']:7.4f} {r['madds'] / 1e6:10.1f} {r['peak_int8_kib']:14.1f} {r['params']:10,d}")
    print(f"(recipe: SGD momentum 0.9, lr {args.lr}, cosine, {args.epochs} epochs, input {args.input_size}, "
          f"{args.per_class or 'all'} train images per class; convention 'layer')")
    write_json(args.json, {"args": vars(args), "results": rows})


if __name__ == "__main__":
    main()
