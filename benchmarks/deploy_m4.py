"""The zoo's deployable models as int8 C on a Cortex-M4 (qemu mps2-an386): RAM, flash, instructions, bit-exactness.

    python benchmarks/deploy_m4.py [--weights-dir benchmarks/weights] [--faces ../shared/data/faces]
                                   [--cifar ../shared/data/cifar10] [--val-limit 0] [--smoke] [--check N]
                                   [--models M ...] [--json benchmarks/results/deploy_m4.json]

Each run goes through ``rnnpool export c --target cortex-m4``: quantize (calibrated on 32 training images,
never on the image it runs), stream every layer row by row within the RAM target, cross-compile, run in
QEMU and measure as the issue defines it: RAM = static data + the painted stack's high-water mark + one
exception frame, checked by relinking with exactly that RAM under interrupts every 10 ticks (same output)
and with 64 B less (must fault); instructions from SysTick under -icount shift=0; output bit-exact with
the NumPy int8 reference. Next to it: the RAM that ``rnnpool profile --convention stream`` predicts from
the model alone, MAdds (the traced float model's count) per instruction, a time at 168 MHz (instructions /
168e6, a lower bound: the M4 needs at least a cycle per instruction), and whether every map of the int8
model is live (differs between two images; an untrained RNNPool's is nearly constant).

Weights: ``--weights-dir/<model>.pt`` where present (benchmarks/train_faces.py writes the face detectors'),
else the seeded initialisation, said in the table (RAM and instructions do not depend on the weights;
bit-exactness means more on live maps, counted in the table). Where ``<model>_qat.pt`` (the quantization-aware
fine-tuning of those weights, ``train_faces.py --qat-from``) is there too, the program runs that, with the
activation ranges it was fine-tuned with, and the AP of both int8 models is reported against the float model's.
With the shared face set, the face detectors' WIDER FACE AP is measured for the float model and for the
int8 reference on the validation images (the accuracy the deployment keeps). ``--smoke``: Face-M4 only,
a quick check (CI's tests run the same measurement on seeded weights). ``--models``: only these models'
rows, keeping the others of an earlier run in the JSON. ``--check N``: each row with trained weights also runs
its program (linked with the RAM it claimed) on N images in QEMU and compares each output with the int8
reference: the face detectors on the first N validation images (all 170: the int8 AP is then the M4's own),
the trained CIFAR-10 classifier (``mobilenetv2_035_rnnpool_cifar64.pt``, 64x64) on N test images, scored
from the M4's own class scores next to the float model's top-1 on the same images.
"""
from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch

from rnnpool.analysis import profile_model
from rnnpool.data.classification import IMAGENET_MEAN, IMAGENET_STD
from rnnpool.data.faces import load_face_annotations
from rnnpool.deploy.export import calibration_images, export_c, image_tensor, instruction_spread, load_image, load_model
from rnnpool.deploy.fake_quant import checkpoint_ranges
from rnnpool.deploy.int8_reference import dead_maps
from rnnpool.deploy.programs import ExportError, RamLimitError, toolchain_available
from rnnpool.deploy.quantize import quantize_model
from rnnpool.models.checkpoint import load_checkpoint

from _report import earlier_results, portable_paths, run_info, write_json  # benchmarks/_report.py, next to this script

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
CLOCK_HZ = 168e6
CALIBRATION_IMAGES = 32

# What a TinyML engineer compares with (quoted from the papers; not measured here).
REFERENCES = [
    {"what": "RNNPool-Face-Quant (paper, Table 5)", "ram": "225 KiB", "note": "the paper's own int8 M4 deployment"},
    {"what": "MCUNetV2-S face detector (MCUNetV2 paper)", "ram": "~168 KB", "note": "patch-based int8; WIDER FACE 0.85/0.81/0.55"},
    {"what": "mcunet-vww0 / MCUNetV2 VWW", "ram": "59 kB / <32 kB", "note": "Visual Wake Words on an M4"},
    {"what": "TinyEngine int8 kernels", "ram": "", "note": "~0.5 MAC per cycle on Cortex-M"},
]


@dataclass
class Run:
    model: str
    ram_kib: int
    target: str  # what the issue asks, in words
    instruction_target: Optional[float] = None
    input_size: Optional[int] = None
    weights_name: Optional[str] = None  # the weights file's stem in --weights-dir (default: the model's name)
    check: bool = True  # with --check, run the program on that many images (for trained weights)

    @property
    def name(self) -> str:
        """The row's name: the weights' where they are not the model's own."""
        return self.weights_name or self.model


RUNS = [
    Run("rnnpool_face_quant", 128, "RAM <= 128 KiB, <= 0.40 G instructions", 0.40e9),
    Run("rnnpool_face_quant", 96, "stretch: RAM <= 96 KiB", check=False),
    Run("rnnpool_face_m4", 64, "RAM <= 64 KiB, <= 0.20 G instructions", 0.20e9),
    Run("mobilenetv2_035_rnnpool", 64, "Visual Wake Words: RAM <= 64 KiB", input_size=224),
    Run("mobilenetv2_rnnpool", 256, "fits 256 KiB or says by how much", input_size=224),
    Run("mobilenetv2_035_rnnpool", 32, "the trained CIFAR-10 classifier: RAM <= 32 KiB, top-1 on the M4", input_size=64,
        weights_name="mobilenetv2_035_rnnpool_cifar64"),
]


def _link_images(files: List[Path], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(files):
        (folder / f"{i:03d}{f.suffix}").symlink_to(f.resolve())
    return folder


class Images(NamedTuple):
    """A run's images: the calibration folder (a temporary one of links), what it holds, the images to run."""

    calib: str
    about: str
    run: List[str]


def _face_images(faces: Path, work: Path) -> Images:
    """Calibration: the first training images; run and liveness: validation images."""
    train = load_face_annotations(str(faces / "train_bbx_gt.txt")).records
    val = load_face_annotations(str(faces / "val_bbx_gt.txt")).records
    calib = _link_images([Path(r.path) for r in train[:CALIBRATION_IMAGES]], work / "calib_faces")
    return Images(str(calib), f"the first {CALIBRATION_IMAGES} training images of {portable_paths(str(faces.resolve()))}", [str(r.path) for r in val[:2]])


def _in_turn(lists: List[list]) -> list:
    """The items of ``lists`` taken one from each in turn (the first of every class, then the second, ...)."""
    return [item for turn in itertools.zip_longest(*lists) for item in turn if item is not None]


def _cifar_images(cifar: Path, work: Path) -> Images:
    """Calibration: the first training images of every class in turn (3-4 each of CIFAR-10's ten); run and
    liveness: the first test image of the first two classes."""
    classes = sorted(p for p in (cifar / "train").iterdir() if p.is_dir())
    per_class = -(-CALIBRATION_IMAGES // len(classes))
    firsts = [sorted(c.glob("*.jpg"))[:per_class] for c in classes]
    files = _in_turn(firsts)[:CALIBRATION_IMAGES]
    counts = [sum(f.parent == c for f in files) for c in classes]
    calib = _link_images(files, work / "calib_cifar")
    tests = [sorted((cifar / "test" / c.name).glob("*.jpg"))[0] for c in classes[:2]]
    spread = f"{min(counts)}-{max(counts)}" if min(counts) != max(counts) else f"{min(counts)}"
    return Images(str(calib), f"{len(files)} training images, the first {spread} of each of {len(classes)} classes, of "
                  f"{portable_paths(str(cifar.resolve()))}", [str(t) for t in tests])


def _checkpoint_classes(weights: str) -> List[str]:
    """The class names a classification checkpoint was trained with (its label order)."""
    classes = load_checkpoint(weights).get("classes")
    if not classes:
        sys.exit(f"error: {weights} names no classes (a checkpoint of 'rnnpool train classify' does): its top-1 cannot be scored")
    return list(classes)


def _cifar_tests(cifar: Path, classes: List[str], count: int) -> List[Tuple[str, int]]:
    """``count`` test images with their labels (indices into ``classes``, the trained model's order): the first
    images of each class in turn."""
    missing = [c for c in classes if not (cifar / "test" / c).is_dir()]
    if missing:
        sys.exit(f"error: {cifar / 'test'} has no folder of the classes {missing} the classifier was trained on")
    firsts = [[(str(f), label) for f in sorted((cifar / "test" / c).glob("*.jpg"))] for label, c in enumerate(classes)]
    return _in_turn(firsts)[:count]


def _synthetic_images(work: Path, channels: int) -> Images:
    from PIL import Image

    folder = work / f"synthetic_{channels}"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(4):
        small = np.random.default_rng(i).integers(0, 256, (30, 40, 3), dtype=np.uint8)
        Image.fromarray(small).resize((640, 480), Image.BILINEAR).save(folder / f"img_{i}.png")
    files = sorted(folder.glob("*.png"))
    calib = _link_images(files[:2], work / f"calib_synthetic_{channels}")
    return Images(str(calib), "2 smooth random images (no real data given)", [str(f) for f in files[2:]])


def _weights(weights_dir: Path, name: str, suffix: str = "") -> Optional[str]:
    path = weights_dir / f"{name}{suffix}.pt"
    return str(path) if path.is_file() else None


@torch.no_grad()
def _device_top1(run: Run, weights: str, checked: Dict, labels: List[int]) -> Dict:
    """Top-1 of the M4's own class scores on the checked images, next to the float PyTorch model's on the same
    images (resized as the program's input is, then normalised as in training)."""
    model, _, shape = load_model(run.model, weights, input_size=run.input_size)
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
    device = float_ = agree = 0
    for r, label in zip(checked["runs"], labels):
        m4_class = int(np.argmax(r["logits"]))
        x = (image_tensor(load_image(r["image"], shape[0], shape[1:])) - mean) / std
        float_class = int(model(x[None]).argmax())
        device += m4_class == label
        float_ += float_class == label
        agree += m4_class == float_class
    n = len(labels)
    return {"images": n, "top1_m4": device / n, "top1_fp32": float_ / n, "agreement": agree / n}


def _liveness(run: Run, weights: Optional[str], calib: str, images: List[str]) -> Dict:
    model, _, shape = load_model(run.model, weights, input_size=run.input_size)
    kept = checkpoint_ranges(weights) if weights else None
    images_in = calibration_images(calib, shape[0], shape[1:], CALIBRATION_IMAGES) if kept is None else []
    graph = quantize_model(model, images_in, shape[1:], ranges=kept)
    dead = dead_maps(graph, *(load_image(i, shape[0], shape[1:]) for i in images[:2]))
    return {"maps": len(graph.tensors) - 1, "dead": dead}


def _accuracy(run: Run, weights: str, qat: Optional[str], calib: str, faces: Path, limit: int) -> Dict:
    """AP of the float model and of its int8 reference (post-training quantization); with ``qat`` (the
    quantization-aware fine-tuning of those weights), also the int8 AP of that, against the same float AP."""
    from rnnpool.deploy.accuracy import int8_accuracy

    model, _, _ = load_model(run.model, weights)
    graph = quantize_model(model, calibration_images(calib, model.in_channels, model.input_size, CALIBRATION_IMAGES),
                           model.input_size)
    result = int8_accuracy(model, graph, str(faces / "val_bbx_gt.txt"), limit=limit or None)
    if qat:
        tuned, _, _ = load_model(run.model, qat)
        graph = quantize_model(tuned, [], tuned.input_size, ranges=checkpoint_ranges(qat))
        after = int8_accuracy(tuned, graph, str(faces / "val_bbx_gt.txt"), limit=limit or None)
        result["qat"] = {"weights": qat, "ap_int8": after["ap_int8"], "ap_fp32_of_tuned_weights": after["ap_fp32"],
                         "ap_drop": result["ap_fp32"] - after["ap_int8"], "head_sqnr_db": after["head_sqnr_db"],
                         "tensor_sqnr_db": after["tensor_sqnr_db"]}
    return result


def measure(run: Run, weights: Optional[str], data: Images, work: Path, accuracy_faces: Optional[Path],
            val_limit: int, qat: Optional[str] = None, check: Sequence[str] = (), labels: Sequence[int] = ()) -> Dict:
    """One row; the program runs the quantization-aware weights ``qat`` where given, else ``weights``, and then
    on every image of ``check`` (a classifier's with their ``labels``: its top-1 on the M4)."""
    started = time.time()
    calib, images = data.calib, data.run
    deployed = qat or weights
    row: Dict = {"model": run.name, "ram_target_bytes": run.ram_kib * 1024, "target": run.target, "weights": deployed or "seeded",
                 "calibration": "the ranges of its quantization-aware fine-tuning" if qat else data.about, "image": images[0]}
    if run.name != run.model:
        row["zoo_model"] = run.model
    try:
        report = export_c(run.model, work / f"{run.name}_{run.ram_kib}", deployed, calib, "cortex-m4", images[0],
                          ram_bytes=run.ram_kib * 1024, input_size=run.input_size, calib_limit=CALIBRATION_IMAGES, check=check)
    except RamLimitError as err:
        row.update({"fits": False, "needed_bytes": err.needed, "error": str(err), "seconds": time.time() - started})
        return row
    except ExportError as err:  # e.g. the weights outgrow the board's flash: a row that says so, not a lost run
        row.update({"fits": False, "needed_bytes": None, "error": str(err).splitlines()[0], "seconds": time.time() - started})
        return row
    m4 = report["cortex_m4"]
    shape = report["input"]
    model, _, _ = load_model(run.model, weights, input_size=run.input_size)
    madds = profile_model(model, (shape["channels"], shape["height"], shape["width"]), "int8", "layer").madds
    predicted = report["predicted_ram"]["total"]
    row.update({
        "fits": True, "weights": report["weights"], "input": shape,
        "ram_bytes": m4["ram_bytes"], "static_ram_bytes": m4["static_ram_bytes"], "stack_bytes": m4["stack_bytes"],
        "stack_high_water_bytes": m4["stack_high_water_bytes"], "predicted_ram_bytes": predicted,
        "prediction_error": (predicted - m4["ram_bytes"]) / m4["ram_bytes"], "flash_bytes": m4["flash_bytes"],
        "arena_bytes": report["schedule"]["arena_bytes"], "layer_by_layer_bytes": report["schedule"]["layer_by_layer_bytes"],
        "planner_choices": report["schedule"]["choices"], "instructions": m4["instructions"], "madds": madds,
        "madds_per_instruction": madds / m4["instructions"], "ms_at_168mhz_lower_bound": 1e3 * m4["instructions"] / CLOCK_HZ,
        "instruction_target": run.instruction_target, "bit_exact": report["bit_exact"], "mismatches": report["mismatches"],
        "claimed_ram_run_same_output": m4["claimed_ram_run"]["same_output"], "claimed_minus_64": m4["claimed_minus_64"],
        "stack_static_bound_bytes": m4["stack_static_bound"]["bytes"], "layers": m4["layers"],
        "liveness": _liveness(run, deployed, calib, images)})
    if report["task"] == "detection":
        row["detections"] = len(report["detections"])
    else:
        row["logits"] = report["logits"]
    if "checked" in report:
        row["checked"] = report["checked"]
        if labels:
            row["checked"]["top1"] = _device_top1(run, deployed, report["checked"], list(labels))
    if accuracy_faces is not None and weights and report["task"] == "detection":
        row["accuracy"] = _accuracy(run, weights, qat, calib, accuracy_faces, val_limit)
    row["seconds"] = time.time() - started
    return row


def stm32_build(weights: Optional[str], calib: str, image: str, work: Path) -> Dict:
    report = export_c("rnnpool_face_quant", work / "stm32", weights, calib, "stm32f439", image, calib_limit=CALIBRATION_IMAGES)
    return {"model": "rnnpool_face_quant", **{k: report["stm32f439"][k] for k in ("flash_bytes", "sram_bytes", "ccm_bytes", "bin_bytes")},
            "bit_exact_on_host": report["bit_exact"]}


def _kib(n: int) -> str:
    return f"{n / 1024:,.1f} KiB"


def _checked_line(c: Dict) -> str:
    line = (f"run on {c['images']} images ({c['on']}): {c['bit_exact']} bit-exact with the int8 reference, "
            f"{instruction_spread([r['instructions'] for r in c['runs']])}")
    if "top1" in c:
        line += f"; top-1 on the M4 {100 * c['top1']['top1_m4']:.1f}%, float {100 * c['top1']['top1_fp32']:.1f}% on the same images"
    return line


def print_table(rows: List[Dict]) -> None:
    print(f"{'model':24} {'input':>11} {'weights':>8} {'target':>8} {'RAM':>10} {'predicted':>10} {'flash':>10} "
          f"{'instructions':>12} {'MAdds/instr':>11} {'ms@168MHz':>9} {'bit-exact':>9} {'live maps':>9}")
    for r in rows:
        if not r["fits"]:
            need = f"needs {r['needed_bytes']:,} B" if r["needed_bytes"] else r["error"]
            print(f"{r['model']:24} does not fit {_kib(r['ram_target_bytes'])}: {need}")
            continue
        size = f"{r['input']['width']}x{r['input']['height']}x{r['input']['channels']}"
        weights = "trained" if r["weights"].endswith(".pt") else "seeded"
        live = f"{r['liveness']['maps'] - len(r['liveness']['dead'])}/{r['liveness']['maps']}"
        print(f"{r['model']:24} {size:>11} {weights:>8} {r['ram_target_bytes'] // 1024:>4} KiB {_kib(r['ram_bytes']):>10} "
              f"{_kib(r['predicted_ram_bytes']):>10} {_kib(r['flash_bytes']):>10} {r['instructions'] / 1e9:>10.3f} G "
              f"{r['madds_per_instruction']:>11.3f} {r['ms_at_168mhz_lower_bound']:>9,.0f} {str(r['bit_exact']):>9} {live:>9}")
        if "accuracy" in r:
            a = r["accuracy"]
            print(f"    {a['images']} val images: AP fp32 {a['ap_fp32']:.4f}, int8 {a['ap_int8']:.4f} "
                  f"(drop {a['ap_drop']:+.4f}); head outputs at {a['head_sqnr_db']:.1f} dB SQNR")
            if "qat" in a:
                print(f"    after quantization-aware fine-tuning: int8 {a['qat']['ap_int8']:.4f} (drop from fp32 "
                      f"{a['qat']['ap_drop']:+.4f}); head outputs at {a['qat']['head_sqnr_db']:.1f} dB SQNR")
        if "checked" in r:
            print("    " + _checked_line(r["checked"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights-dir", default=str(ROOT / "benchmarks" / "weights"))
    parser.add_argument("--faces", default=str(SHARED / "faces"), help="WIDER FACE-format face set (train/val_bbx_gt.txt)")
    parser.add_argument("--cifar", default=str(SHARED / "cifar10"), help="CIFAR-10 JPEG folders (the classifiers' images)")
    parser.add_argument("--val-limit", type=int, default=0, help="first N validation images for the AP (0: all)")
    parser.add_argument("--smoke", action="store_true", help="Face-M4 only")
    parser.add_argument("--check", type=int, default=0, metavar="N",
                        help="run each trained model's program on N images in QEMU, each compared with the int8 "
                             "reference (face detectors: the first N validation images; the CIFAR-10 classifier: N test "
                             "images, the first of each class in turn, and its top-1 on the M4)")
    parser.add_argument("--models", nargs="+", choices=sorted({r.name for r in RUNS}),
                        help="run only these models' rows (and the STM32 build only with rnnpool_face_quant); the "
                             "JSON keeps the other rows of an earlier run")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "deploy_m4.json"))
    args = parser.parse_args()
    if not toolchain_available("cortex-m4"):
        sys.exit("error: needs gcc-arm-none-eabi, libnewlib-arm-none-eabi and qemu-system-arm (apt-get install ...)")
    work = Path(tempfile.mkdtemp(prefix="rnnpool_m4_"))
    faces, cifar = Path(args.faces), Path(args.cifar)
    have_faces = (faces / "train_bbx_gt.txt").is_file() and (faces / "val_bbx_gt.txt").is_file()
    face_data = _face_images(faces, work) if have_faces else _synthetic_images(work, 3)
    class_data = _cifar_images(cifar, work) if (cifar / "train").is_dir() else _synthetic_images(work, 3)
    if args.check < 0:
        sys.exit(f"error: --check must be 0 or more, got {args.check}")
    chosen = ["rnnpool_face_m4"] if args.smoke else args.models or [r.name for r in RUNS]
    runs = [r for r in RUNS if r.name in chosen]
    rows = []
    for run in runs:
        weights = _weights(Path(args.weights_dir), run.name)
        qat = _weights(Path(args.weights_dir), run.name, "_qat") if weights else None
        check, labels = [], []
        if args.check and run.check and weights:
            if "face" in run.model and have_faces:
                check = [str(r.path) for r in load_face_annotations(str(faces / "val_bbx_gt.txt")).records[:args.check]]
            elif "face" not in run.model and (cifar / "test").is_dir():
                check, labels = map(list, zip(*_cifar_tests(cifar, _checkpoint_classes(weights), args.check)))
        rows.append(measure(run, weights, face_data if "face" in run.model else class_data, work, faces if have_faces else None,
                            args.val_limit, qat, check, labels))
        print(f"{run.name} within {run.ram_kib} KiB: {rows[-1]['seconds']:.0f} s", flush=True)
    stm32 = None
    if "rnnpool_face_quant" in chosen:
        stm32 = stm32_build(_weights(Path(args.weights_dir), "rnnpool_face_quant"), face_data.calib, face_data.run[0], work)
    print_table(rows)
    if stm32:
        print(f"STM32F439 build of rnnpool_face_quant: flash {stm32['flash_bytes']:,} B, SRAM {stm32['sram_bytes']:,} B, "
              f"CCM {stm32['ccm_bytes']:,} B")
    run = run_info()
    for row in rows:
        row["run"] = run
    if stm32:
        stm32["run"] = run
    earlier, kept = earlier_results(args.json, chosen) if args.models or args.smoke else ({}, [])
    kept_stm32 = earlier.get("stm32f439") if "rnnpool_face_quant" not in chosen else None
    order = {(r.name, r.ram_kib * 1024): i for i, r in enumerate(RUNS)}
    results = sorted(kept + rows, key=lambda r: order.get((r["model"], r["ram_target_bytes"]), len(order)))
    write_json(args.json, {**run, "emulator": "qemu-system-arm -machine mps2-an386 -cpu cortex-m4 -icount shift=0",
                           "references": REFERENCES, "results": results, "stm32f439": stm32 or kept_stm32})


if __name__ == "__main__":
    main()
