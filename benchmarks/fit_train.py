"""rnnpool fit on real data: a torchvision model, fitted to a budget several times below its peak, trained.

    python benchmarks/fit_train.py --data ../shared/data/cifar10 [--model torchvision:mobilenet_v3_small]
        [--input-size 64] [--ram-divisor 4] [--per-class 1000] [--test-per-class 200] [--epochs 15]
        [--json benchmarks/results/fit_train.json]

The original (random init, 10 classes) is profiled at --input-size (int8, 'layer' convention) and fitted
with ``rnnpool fit`` to its peak / --ram-divisor. Three runs with one recipe (the engine's, on CIFAR-10
upsampled to --input-size, --per-class training images per class, validated on --test-per-class test images
per class): the original, the fitted model from scratch, and the fitted model distilled from the trained
original (``--teacher``). Writes accuracy, peak RAM, MAdds and params side by side.
"""
import argparse
import sys
import tempfile
from pathlib import Path

from rnnpool.analysis import profile_model
from rnnpool.engine import ClassifyConfig, train_classifier
from rnnpool.fit import fit_model, save_fitted
from rnnpool.models import create_model
from _report import run_info, write_json  # benchmarks/_report.py, next to this script
from train_pairs import subsample, val_curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="ImageFolder-style train/ and test/ (or val/) folders")
    parser.add_argument("--model", default="torchvision:mobilenet_v3_small")
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--ram-divisor", type=float, default=4.0, help="budget = the original's peak / this")
    parser.add_argument("--per-class", type=int, default=1000, help="training images per class (0: all)")
    parser.add_argument("--test-per-class", type=int, default=200, help="test images per class (0: all)")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--bn-momentum", type=float, default=0.1,
                        help="BatchNorm momentum of all three runs (torchvision's MobileNetV3 has 0.01: after a short "
                             "run its running statistics still lag the weights, and it evaluates at chance)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--objective", default="madds", choices=["least-replaced", "madds", "params"],
                        help="rnnpool fit's pick among the candidates that fit (the committed run: madds)")
    parser.add_argument("--json", default="benchmarks/results/fit_train.json")
    args = parser.parse_args()
    data = Path(args.data)
    if not (data / "train").is_dir():
        sys.exit(f"error: {data}/train does not exist")
    work = Path(tempfile.mkdtemp(prefix="fit_train_"))
    subset = subsample(data, args.per_class, work / "data", args.test_per_class)
    shape = (3, args.input_size, args.input_size)
    original = profile_model(create_model(args.model, num_classes=10), shape, "int8")
    budget = int(original.peak_bytes / args.ram_divisor)
    fitted, report = fit_model(create_model(args.model, num_classes=10), shape, budget, "int8", objective=args.objective,
                               name=args.model)
    print(report.table())
    fitted_file = work / "fitted.pt"
    save_fitted(fitted, report, str(fitted_file))
    chosen = report.to_dict()["candidates"][report.chosen]

    common = dict(data=str(subset), input_size=args.input_size, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                  warmup_epochs=1, min_scale=0.25, workers=args.workers, device="auto", project=str(work / "runs"),
                  bn_momentum=args.bn_momentum)
    runs = {"original": ClassifyConfig(model=args.model, name="original", **common),
            "fitted": ClassifyConfig(model=str(fitted_file), name="fitted", **common)}
    results = []
    for label, cfg in list(runs.items()) + [("fitted, distilled", None)]:
        if cfg is None:  # distilled from the trained original
            cfg = ClassifyConfig(model=str(fitted_file), name="distilled", teacher=args.model,
                                 teacher_weights=str(work / "runs" / "original" / "weights" / "last.pt"), **common)
        trained = train_classifier(cfg)
        curve, minutes = val_curve(Path(trained["run"]))
        model = create_model(args.model, num_classes=10) if label == "original" else fitted
        prof = profile_model(model, shape, "int8")
        results.append({"model": label, "top1": trained["final"]["top1"], "test_images": trained["final"]["samples"],
                        "peak_int8_bytes": prof.peak_bytes, "madds": prof.madds, "params": prof.params, "curve": curve,
                        "minutes": minutes})
    print(f"\n{args.model} at {args.input_size}x{args.input_size}, budget {budget / 1024:.1f} KiB "
          f"(the original's peak / {args.ram_divisor:g}); fitted: {chosen['replaced']} -> RNNPool "
          f"{chosen['patch']}/{chosen['stride']}, h {chosen['hidden_row']}/{chosen['hidden_summary']}")
    print(f"{'model':20} {'top-1':>7} {'peak int8':>10} {'MAdds':>8} {'params':>10}")
    for r in results:
        print(f"{r['model']:20} {100 * r['top1']:6.1f}% {r['peak_int8_bytes'] / 1024:8.1f} KiB {r['madds'] / 1e6:6.2f} M "
              f"{r['params']:10,d}")
    write_json(args.json, {"args": vars(args), "budget_bytes": budget, "fitted": chosen, "results": results, **run_info()})


if __name__ == "__main__":
    main()
