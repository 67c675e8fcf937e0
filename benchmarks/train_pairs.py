"""Train the paper's pairs with one recipe and print accuracy side by side (baseline vs RNNPool).

    python benchmarks/train_pairs.py --data ../shared/data/cifar10 --input-size 64 --epochs 30 \
        [--pairs mobilenetv2_035:mobilenetv2_035_rnnpool mobilenetv2:mobilenetv2_rnnpool] \
        [--variants mobilenetv2_035_rnnpool@downsample=avg ...] [--per-class 500] [--project runs/pairs]

CIFAR-10 (the same ten classes as the paper's ImageNet-10) is the small real stand-in here: images are
upsampled to --input-size. --per-class (and --test-per-class) subsample the training (test) split so a CPU run
stays short. --data-on-device decodes the images once onto the device and augments there (on a GPU the JPEG
loader is the bottleneck otherwise); every model of the invocation trains on that one decoding.
--time-budget MIN fits the runs into MIN minutes of wall time: each model gets an equal share of what is left,
its epoch count (at most --epochs) is chosen from a timed probe of its own training steps and validation on the
real batches, and the run stops at its share in any case (--time-limit); the rows record the epochs chosen and
done. Jobs started side by side on one GPU share it by time slices and end up at one pace; a probe taken
while the others are still loading sees less load than the run will, so cap such jobs with --epochs
(benchmarks/cuda_checks.sh training says what fitted on an H200).
--variants adds single runs of a model with model options (the pooling ablation of the paper's Table 2:
``mobilenetv2_035_rnnpool@downsample=avg``, ``...@downsample=renet``, ``mobilenetv2_035@last_pool=rnnpool``).
Writes benchmarks/results/train_pairs.json (or --json) after each model with its top-1 on the test split (all
of it, or --test-per-class images of each class), the validation curve, MAdds and peak RAM at that input size,
and the recipe and machine it was trained with; rows of models it did not train are kept (so separate
invocations, run side by side, share one table).
"""
import argparse
import csv
import itertools
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Tuple

import torch

from rnnpool.analysis import profile_model
from rnnpool.data.classification import build_classification_data
from rnnpool.data.on_device import device_batches
from rnnpool.engine import ClassifyConfig, train_classifier
from rnnpool.engine.loop import resolve_device
from rnnpool.engine.run_dir import append_metrics, plot_curves
from rnnpool.models import create_model
from _report import earlier_results, run_info, write_json  # benchmarks/_report.py, next to this script


def subsample(data: Path, per_class: int, out: Path, test_per_class: int = 0) -> Path:
    """Link the first ``per_class`` training images of each class (0: all) and the first ``test_per_class``
    val/test images of each class (0: the whole split) into ``out``."""
    for split in ("train", "val", "test"):
        if not (data / split).is_dir():
            continue
        for folder in sorted(p for p in (data / split).iterdir() if p.is_dir()):
            target = out / split / folder.name
            target.mkdir(parents=True)
            files = sorted(folder.iterdir())
            keep = per_class if split == "train" else test_per_class
            for f in files[:keep] if keep else files:
                (target / f.name).symlink_to(f.resolve())
    return out


def parse_spec(spec: str) -> Tuple[str, Dict[str, Any]]:
    """``name@key=value,key=value`` -> (name, {key: value}); values are int, float or text."""
    name, _, options = spec.partition("@")
    kwargs: Dict[str, Any] = {}
    for item in filter(None, options.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            sys.exit(f"error: model option {item!r} in {spec!r} is not key=value")
        for kind in (int, float):
            try:
                kwargs[key] = kind(value)
                break
            except ValueError:
                continue
        else:
            kwargs[key] = value
    return name, kwargs


def val_curve(run: Path):
    """(epoch, val top-1) of every epoch of a run (its metrics.csv)."""
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return [{"epoch": int(r["epoch"]), "top1": float(r["val_top1"])} for r in rows], sum(float(r["seconds"]) for r in rows) / 60


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def probe_seconds(name: str, kwargs: Dict[str, Any], num_classes: int, input_size: int, batches, val_batches,
                  device: torch.device, warmup: int = 10, timed: int = 30, max_seconds: float = 30.0) -> Tuple[float, float]:
    """(seconds per training epoch, seconds of each epoch's validation and bookkeeping) of ``name`` on these
    batches, from ``timed`` SGD steps (fewer, at least 3, if they pass ``max_seconds``) after ``warmup`` (kernel
    compilation, autotuning), a few validation batches and one epoch's checkpoints and plot; the model is a
    throwaway copy."""
    model = create_model(name, num_classes=num_classes, input_size=input_size, **kwargs).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    criterion = torch.nn.CrossEntropyLoss()
    batches.set_epoch(10**6)  # a pass of its own (the run starts again at epoch 0)
    steps = itertools.islice(itertools.cycle(batches), warmup + timed)
    done = 0
    for step, (images, labels, _) in enumerate(steps):
        if step == warmup:
            _sync(device)
            start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        criterion(model(images), labels).backward()
        optimizer.step()
        done = step + 1 - warmup
        if done >= 3 and time.perf_counter() - start > max_seconds:
            break
    _sync(device)
    train_epoch = (time.perf_counter() - start) / done * len(batches)
    model.eval()
    shown = min(len(val_batches), 8)
    with torch.no_grad():
        model(next(iter(val_batches))[0])  # (first use of the evaluation shapes)
        _sync(device)
        start = time.perf_counter()
        for images, _, _ in itertools.islice(val_batches, shown):
            model(images)
        _sync(device)
    validation = (time.perf_counter() - start) / shown * len(val_batches)
    with tempfile.TemporaryDirectory() as tmp:  # each epoch's bookkeeping: two checkpoints, a metrics row, the plot
        append_metrics(Path(tmp), {"epoch": 1, "train_loss": 1.0, "val_loss": 1.0})
        plot_curves(Path(tmp), [("train_loss", "val_loss")])  # (matplotlib's first use: not every epoch's)
        start = time.perf_counter()
        for name in ("last.pt", "best.pt"):
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, Path(tmp) / name)
        append_metrics(Path(tmp), {"epoch": 2, "train_loss": 0.5, "val_loss": 0.7})
        plot_curves(Path(tmp), [("train_loss", "val_loss")])
        bookkeeping = time.perf_counter() - start
    return train_epoch, validation + bookkeeping


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--pairs", nargs="*", default=["mobilenetv2_035:mobilenetv2_035_rnnpool", "mobilenetv2:mobilenetv2_rnnpool"])
    parser.add_argument("--variants", nargs="*", default=[], help="single runs NAME@key=value,... (the pooling ablation)")
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--warmup-epochs", type=int, default=1)
    parser.add_argument("--min-scale", type=float, default=0.08, help="random-resized-crop scale range (min, 1)")
    parser.add_argument("--per-class", type=int, default=0, help="training images per class (0: all)")
    parser.add_argument("--test-per-class", type=int, default=0, help="test images per class (0: all)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", action="store_true", help="mixed precision on CUDA (default: float32 everywhere)")
    parser.add_argument("--data-on-device", action="store_true", help="decode the images once onto the device, augment there")
    parser.add_argument("--time-budget", type=float, default=0.0, metavar="MIN",
                        help="fit the invocation into MIN minutes: epochs (at most --epochs) chosen per model from a timed probe "
                             "(implies --data-on-device)")
    parser.add_argument("--project", help="keep the run folders here (default: a temporary folder)")
    parser.add_argument("--json", default="benchmarks/results/train_pairs.json")
    args = parser.parse_args()

    started = time.monotonic()
    folder = Path(args.data)
    if not folder.is_dir():
        sys.exit(f"error: data folder {folder} does not exist")
    specs = [(pair, spec) for pair in args.pairs for spec in pair.split(":")] + [(spec, spec) for spec in args.variants]
    parsed = [(pair, spec, *parse_spec(spec)) for pair, spec in specs]
    with tempfile.TemporaryDirectory() as tmp:
        subset = args.per_class or args.test_per_class
        root = subsample(folder, args.per_class, Path(tmp) / "data", args.test_per_class) if subset else folder
        project = Path(args.project) if args.project else Path(tmp) / "runs"
        device = resolve_device(args.device)
        data = None
        if args.data_on_device or args.time_budget:
            train_set, val_set = build_classification_data(root, args.input_size, min_scale=args.min_scale)
            data = device_batches(train_set, val_set, device, args.batch_size, args.input_size, args.min_scale, seed=0,
                                  workers=args.workers)
        rows = []
        for index, (pair, spec, name, kwargs) in enumerate(parsed):
            epochs, share, probe = args.epochs, 0.0, {}
            if args.time_budget:
                share = (args.time_budget * 60 - (time.monotonic() - started)) / (len(parsed) - index)
                train_epoch, val_pass = probe_seconds(name, kwargs, len(train_set.classes), args.input_size, *data, device)
                # 0.9: checkpoints, the final evaluation and the profile also take their time
                epochs = max(1, min(args.epochs, int(0.9 * share / (train_epoch + val_pass))))
                probe = {"probe_train_epoch_s": train_epoch, "probe_val_s": val_pass, "minutes_share": share / 60}
                print(f"{spec}: probe {train_epoch:.1f} s per epoch + {val_pass:.1f} s validation and checkpoints -> {epochs} epochs "
                      f"in {share / 60:.1f} min", flush=True)
            cfg = ClassifyConfig(model=name, data=str(root), epochs=epochs, batch_size=args.batch_size, lr=args.lr,
                                 input_size=args.input_size, workers=args.workers, device=args.device, amp=args.amp,
                                 min_scale=args.min_scale, model_kwargs=kwargs, project=str(project),
                                 name=spec.replace("@", "_").replace(",", "_").replace("=", "-"), exist_ok=True,
                                 warmup_epochs=min(args.warmup_epochs, epochs - 1), data_on_device=data is not None,
                                 time_limit=share / 60)
            result = train_classifier(cfg, data)
            prof = profile_model(create_model(name, num_classes=len(result["classes"]), input_size=args.input_size, **kwargs),
                                 (3, args.input_size, args.input_size), "int8")
            curve, minutes = val_curve(Path(result["run"]))
            rows.append({"pair": pair, "model": spec, "top1": result["final"]["top1"], "test_images": result["final"]["samples"],
                         "madds": prof.madds, "peak_int8_kib": prof.peak_bytes / 1024, "params": prof.params,
                         "epochs": epochs, "epochs_done": result["last_epoch"]["epoch"], "warmup_epochs": cfg.warmup_epochs,
                         "input_size": args.input_size, "batch_size": args.batch_size, "lr": args.lr,
                         "min_scale": args.min_scale, "per_class": args.per_class, "amp": args.amp, "data_on_device": data is not None,
                         **probe, "curve": curve, "minutes": minutes, "run": run_info()})
            _, kept = earlier_results(args.json, {r["model"] for r in rows})
            write_json(args.json, {"results": kept + rows})  # after each model: a cut-short run keeps it
    print(f"\n{'model':40s} {'top-1':>7s} {'MAdds (M)':>10s} {'peak int8 KiB':>14s} {'params':>10s} {'epochs':>7s} {'minutes':>8s}")
    for r in rows:
        print(f"{r['model']:40s} {r['top1']:7.4f} {r['madds'] / 1e6:10.1f} {r['peak_int8_kib']:14.1f} {r['params']:10,d} "
              f"{r['epochs_done']:3d}/{r['epochs']:<3d} {r['minutes']:8.1f}")
    print(f"(recipe: SGD momentum 0.9, lr {args.lr}, {args.warmup_epochs} warm-up epoch(s) then cosine, "
          f"{'epochs fitted to the time budget, at most ' if args.time_budget else ''}{args.epochs} epochs, "
          f"batch {args.batch_size}, input {args.input_size}, random-resized crops ({args.min_scale}, 1) and flips, "
          f"{args.per_class or 'all'} train images per class; peak RAM: convention 'layer')")


if __name__ == "__main__":
    main()
