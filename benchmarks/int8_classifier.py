"""int8 top-1 of a trained RNNPool classifier: float vs post-training quantization vs quantization-aware tuning.

    python benchmarks/int8_classifier.py --data ../shared/data/cifar10 [--model mobilenetv2_035_rnnpool]
        [--input-size 64] [--per-class 1000] [--test-per-class 200] [--epochs 15] [--qat-epochs 2]
        [--calibration minmax] [--no-equalize] [--json benchmarks/results/int8_classifier.json]

Trains the float classifier with the engine (CIFAR-10 upsampled to --input-size, --per-class training images
per class) and validates it on the first --test-per-class test images of each class; then measures on those
test images (resized and centre-cropped as for evaluation, as uint8 pixels: what the int8 program reads) the
top-1 of: the float
model, its int8 reference (``run_int8``, the arithmetic the generated C runs bit for bit) calibrated on 32
training images, and the int8 reference of the same weights after --qat-epochs of quantization-aware
fine-tuning (``rnnpool train classify --qat``; the ranges it kept, no calibration). The target (issue 10):
int8 within 0.5 points of float.

--float-weights CKPT skips the float training and quantizes an already trained classifier instead (its model
and input size are the checkpoint's; e.g. ``benchmarks/weights/h200/mobilenetv2_035_rnnpool_cifar64.pt``,
trained on all 50,000 CIFAR-10 images by benchmarks/train_pairs.py on a GPU); --per-class then only sizes the
quantization-aware fine-tuning's data.
"""
import argparse
import sys
import tempfile
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import numpy as np
import torch

from rnnpool.data.classification import ImageClassFolder, classification_transforms
from rnnpool.deploy.accuracy import int8_top1
from rnnpool.deploy.fake_quant import checkpoint_ranges
from rnnpool.deploy.quantize import quantize_model
from rnnpool.engine import ClassifyConfig, evaluate_checkpoint, train_classifier
from rnnpool.models.checkpoint import checkpoint_config, create_model_from_checkpoint, load_checkpoint
from _report import run_info, write_json  # benchmarks/_report.py, next to this script
from train_pairs import subsample

TARGET_DROP = 0.005
CALIBRATION_IMAGES = 32


def spread(count: int, total: int) -> List[int]:
    """``count`` indices spread evenly over ``total`` items (the classes are stored one after another)."""
    return sorted(set(np.linspace(0, total - 1, min(count, total)).round().astype(int).tolist()))


def pixels(folder: Path, classes: List[str], size: int, count: int = 0) -> Iterator[Tuple[np.ndarray, int]]:
    """uint8 (H, W, 3) images with labels (``count`` spread over the classes; 0: all), resized and centre-cropped
    as for evaluation."""
    data = ImageClassFolder(folder, classification_transforms(size, False, normalize=False), classes)
    for i in spread(count or len(data), len(data)):
        image, label = data[i]
        yield (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), label


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="ImageFolder-style train/ and test/ (or val/) folders")
    parser.add_argument("--model", help="the classifier to train (default: mobilenetv2_035_rnnpool, or --float-weights' model)")
    parser.add_argument("--input-size", type=int, help="default: 64, or --float-weights' input size")
    parser.add_argument("--float-weights", metavar="CKPT", help="quantize this trained classifier instead of training one")
    parser.add_argument("--per-class", type=int, default=1000, help="training images per class (0: all)")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--qat-epochs", type=int, default=2)
    parser.add_argument("--qat-lr", type=float, default=0.002)
    parser.add_argument("--test-per-class", type=int, default=200, help="test images per class (0: all)")
    parser.add_argument("--calibration", choices=["minmax", "percentile", "mse"], default="minmax")
    parser.add_argument("--no-equalize", dest="equalize", action="store_false",
                        help="calibrate RNNPool's output channels as they are (see rnnpool.deploy.equalize)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--project", help="keep the run folders here (default: a temporary folder)")
    parser.add_argument("--json", default="benchmarks/results/int8_classifier.json")
    args = parser.parse_args()
    data = Path(args.data)
    if not (data / "train").is_dir():
        sys.exit(f"error: {data}/train does not exist")
    float_training = None  # the settings the --float-weights checkpoint was trained with
    if args.float_weights:
        checkpoint = load_checkpoint(args.float_weights)
        float_training = {**checkpoint_config(checkpoint), "epochs_done": checkpoint.get("epoch")}
        saved = float_training.get("model")
        if args.model and saved and args.model != saved:
            sys.exit(f"error: --float-weights {args.float_weights} is {saved}, not --model {args.model}")
        if args.input_size and float_training.get("input_size") and args.input_size != float_training["input_size"]:
            sys.exit(f"error: --float-weights {args.float_weights} was trained at {float_training['input_size']}, "
                     f"not --input-size {args.input_size}")
        args.model = args.model or saved
        args.input_size = args.input_size or float_training.get("input_size")
    args.model = args.model or "mobilenetv2_035_rnnpool"
    args.input_size = args.input_size or 64
    work = Path(tempfile.mkdtemp(prefix="int8_classifier_"))
    project = Path(args.project) if args.project else work / "runs"
    subset = subsample(data, args.per_class, work / "data", args.test_per_class)
    common = dict(model=args.model, data=str(subset), input_size=args.input_size, batch_size=args.batch_size,
                  workers=args.workers, device="cpu", project=str(project), exist_ok=True, min_scale=0.25)
    if args.float_weights:
        float_weights = args.float_weights
        engine_float = evaluate_checkpoint(args.model, float_weights, str(subset), input_size=args.input_size,
                                           batch_size=args.batch_size, workers=args.workers, device="cpu")
        classes = engine_float["classes"]
    else:
        trained = train_classifier(ClassifyConfig(name="float", epochs=args.epochs, lr=args.lr, warmup_epochs=1, **common))
        float_weights = str(project / "float" / "weights" / "last.pt")
        engine_float, classes = trained["final"], trained["classes"]
    tuned = train_classifier(ClassifyConfig(name="qat", epochs=args.qat_epochs, lr=args.qat_lr, warmup_epochs=0, qat=True,
                                            weights=float_weights, **common))
    qat_weights = str(project / "qat" / "weights" / "last.pt")

    test = next(subset / s for s in ("test", "val") if (subset / s).is_dir())
    calibration = [torch.from_numpy(image).permute(2, 0, 1).float() / 255
                   for image, _ in pixels(subset / "train", classes, args.input_size, CALIBRATION_IMAGES)]
    rows: Dict[str, Dict] = {}
    model = create_model_from_checkpoint(float_weights).eval()
    graph = quantize_model(model, calibration, (args.input_size, args.input_size), args.calibration, equalize=args.equalize)
    rows["post-training"] = int8_top1(model, graph, pixels(test, classes, args.input_size))
    model = create_model_from_checkpoint(qat_weights).eval()
    graph = quantize_model(model, [], (args.input_size, args.input_size), ranges=checkpoint_ranges(qat_weights))
    rows["quantization-aware"] = int8_top1(model, graph, pixels(test, classes, args.input_size))
    float_top1 = rows["post-training"]["top1_fp32"]
    results = [{"model": args.model, "quantization": kind, **r, "drop_from_float": float_top1 - r["top1_int8"]}
               for kind, r in rows.items()]
    print(f"\n{args.model} at {args.input_size}x{args.input_size}, {results[0]['images']} test images "
          f"(the engine's float top-1 on them: {engine_float['top1']:.4f}):")
    print(f"{'int8 model':20} {'float top-1':>11} {'int8 top-1':>10} {'drop':>7} {'agreement':>9}")
    for r in results:
        print(f"{r['quantization']:20} {float_top1:11.4f} {r['top1_int8']:10.4f} {100 * r['drop_from_float']:+6.2f} "
              f"{r['agreement']:9.4f}")
    recipe = ("epochs", "epochs_done", "input_size", "batch_size", "lr", "per_class")
    float_recipe = {k: float_training.get(k) for k in recipe} if float_training else None
    write_json(args.json, {"args": vars(args), "engine_float_top1": engine_float["top1"], "float_training": float_recipe,
                           "engine_qat_top1": tuned["final"]["top1"],
                           "target_drop": TARGET_DROP, "results": results, **run_info()})


if __name__ == "__main__":
    main()
