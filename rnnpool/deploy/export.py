"""One call from a zoo model to C that ran and was checked: quantize, schedule, generate, build, run, compare.

``export_c`` builds with the host gcc (``target="host"``), cross-compiles for a Cortex-M4 and runs the program
in QEMU, measuring its RAM, flash and instructions (``"cortex-m4"``, see :mod:`rnnpool.deploy.programs`), or
builds a flashable image for an STM32F439 board (``"stm32f439"``, not run here). The program's outputs
(every head's checksum and the detections, or the classifier's logits) are compared with the NumPy int8
reference; where they differ, a traced host build names the first map that does. ``check`` runs the built
program on more images (the M4 build in QEMU at the RAM it claimed) and compares each one the same way.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

from ..models import create_model, is_fitted_file, is_zoo_name, model_info
from ..models.checkpoint import checkpoint_config, create_model_from_checkpoint, fitted_input_shape, load_checkpoint, load_weights, model_state
from .codegen import MemoryPlan, generate_c
from .fake_quant import checkpoint_ranges
from .int8_reference import DetectionSettings, fnv1a, int8_detections, key_score, run_int8
from .programs import (NS_PER_SYSTICK, ExportError, RamLimitError, build_stm32, measure_m4, parse_program_output, run_host, run_m4,
                       run_tool)
from .quantize import QuantizedGraph, quantize_model
from .ram import arena_budget, predict_ram
from .schedule import Schedule, build_schedule, layer_by_layer_peak
from ..errors import InvalidInputError

TARGETS = ("host", "cortex-m4", "stm32f439")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm")
M4_CLOCK_HZ = 168e6  # the paper's STM32F439
STM32_RAM_BYTES, STM32_CCM_BYTES = 192 * 1024, 64 * 1024
STM32_RESERVED_BYTES = 8 * 1024  # its stack, handler stack and the runtime's own statics


def load_image(path: Union[str, Path], channels: int, size: Sequence[int]) -> np.ndarray:
    """uint8 (H, W, C) image resized (bilinear) to ``size`` = (H, W), grey for 1 channel."""
    try:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB").resize((size[1], size[0]), Image.BILINEAR)
            array = np.array(img, dtype=np.uint8)
    except (OSError, ValueError) as err:
        raise InvalidInputError(f"cannot read image {path}: {err}") from None
    return array.reshape(size[0], size[1], channels)


def image_files(source: Union[str, Path], limit: int, what: str = "calibration source") -> List[Path]:
    """Up to ``limit`` images: the file itself, or a folder's images (searched recursively, sorted); ``what``
    names ``source`` in the error where it does not exist."""
    source = Path(source)
    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
        if not files:
            raise InvalidInputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {source}")
        return files
    if source.is_file():
        return [source]
    raise FileNotFoundError(f"{what} {source} does not exist")


def image_tensor(image: np.ndarray) -> torch.Tensor:
    """A uint8 (H, W, C) image (what the int8 program reads) as the float model's (C, H, W) input in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255


def calibration_images(source: Union[str, Path], channels: int, size: Sequence[int], limit: int = 32) -> List[torch.Tensor]:
    """Up to ``limit`` float (C, H, W) images from an image file or a folder (searched recursively)."""
    return [image_tensor(load_image(f, channels, size)) for f in image_files(source, limit)]


def load_model(name: str, weights: Optional[str] = None, seed: int = 0,
               input_size: Optional[int] = None) -> Tuple[torch.nn.Module, str, Tuple[int, int, int]]:
    """A zoo model in eval mode: with ``weights`` from a checkpoint (checked to be this model's), else its
    initialisation under ``seed`` (the same weights every time). Returns (model, weights description, (C, H, W)).

    ``name`` may also be a classifier from outside the zoo: a model saved by ``rnnpool fit`` (``*.pt``, or the
    run that trained it), ``torchvision:NAME`` or ``package.module:factory``; the C path takes those whose layers
    it supports (convolutions, MobileNetV2 blocks, RNNPool, global pooling, one linear layer)."""
    if not is_zoo_name(name):
        return _outside_model(name, weights, seed, input_size)
    info = model_info(name)
    torch.manual_seed(seed)
    kwargs = {}
    if info.task == "classification":
        kwargs["input_size"] = input_size or info.input_shape[1]
    if weights and info.task == "classification":  # the checkpoint knows the classes and model options
        model = create_model_from_checkpoint(weights, name, **kwargs)
    else:
        model = create_model(name, **kwargs)
        if weights:
            load_weights(model, weights, name)
    described = str(weights) if weights else f"initialisation with seed {seed} (untrained)"
    model.eval()
    if info.task == "detection":
        shape = (model.in_channels, *model.input_size)
    else:
        shape = (3, kwargs["input_size"], kwargs["input_size"])
    return model, described, shape


def _outside_model(name: str, weights: Optional[str], seed: int,
                   input_size: Optional[int]) -> Tuple[torch.nn.Module, str, Tuple[int, int, int]]:
    """A classifier that is not a zoo name (see :func:`load_model`), in eval mode, at its trained or fitted input."""
    source = weights or (name if is_fitted_file(name) else None)  # read once: it may carry the model and its input
    checkpoint = load_checkpoint(source) if source else {}
    carried = checkpoint.get("fitted_model")
    fitted_shape = checkpoint.get("input_shape") or (fitted_input_shape(name) if weights and is_fitted_file(name) else None)
    size = input_size or checkpoint_config(checkpoint).get("input_size") or (fitted_shape[-1] if fitted_shape else 224)
    torch.manual_seed(seed)
    if isinstance(carried, torch.nn.Module):  # a file of rnnpool fit, or its run's checkpoint: it carries the model
        model = carried
    else:
        model = create_model(name)
        if weights:
            from ..engine.classify import with_classes  # (the engine imports the deploy package)

            state = model_state(checkpoint)
            linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
            if linears and f"{linears[-1]}.weight" in state:
                model = with_classes(model, state[f"{linears[-1]}.weight"].shape[0])
            model.load_state_dict(state)
    described = str(weights) if weights else (f"{name} as fitted (untrained)" if is_fitted_file(name)
                                              else f"initialisation with seed {seed} (untrained)")
    return model.eval(), described, (3, int(size), int(size))


def reference_output(graph: QuantizedGraph, image: np.ndarray, settings: DetectionSettings) -> Dict:
    """What the program must print for ``image``, from the NumPy int8 reference."""
    values = run_int8(graph, image)
    if graph.logits is not None:
        logits = values[graph.logits].reshape(-1)
        return {"hashes": [], "detections": [], "logits": fnv1a(logits), "classes": [int(v) for v in logits], "values": values}
    hashes = [(fnv1a(values[h.conf]), fnv1a(values[h.loc])) for h in graph.heads]
    detections = [{"box100": [int(np.float32(v) * np.float32(100)) for v in d["box"]], "key": d["key"], "anchor": d["anchor"]}
                  for d in int8_detections(graph, values, settings)]
    return {"hashes": hashes, "detections": detections, "logits": None, "classes": [], "values": values}


def compare_outputs(program: Dict, reference: Dict, box_tolerance: int = 2) -> List[str]:
    """Differences between the program's and the reference's outputs (empty: bit-exact).

    Checksums, logits and each detection's integer score and anchor must be equal; box corners (float32
    decode, printed in 1/100 px) may differ by ``box_tolerance`` hundredths because libm's expf is not NumPy's."""
    problems = []
    for i, (got, want) in enumerate(zip(program["hashes"], reference["hashes"])):
        if got != want:
            problems.append(f"head {i} outputs differ (checksums {got[0]:08x}/{got[1]:08x} vs {want[0]:08x}/{want[1]:08x})")
    if len(program["hashes"]) != len(reference["hashes"]):
        problems.append(f"{len(program['hashes'])} heads printed, {len(reference['hashes'])} expected")
    if reference["logits"] is not None and (program["logits"] != reference["logits"] or program["classes"] != reference["classes"]):
        problems.append(f"logits {program['classes']} differ from the reference's {reference['classes']}")
    if len(program["detections"]) != len(reference["detections"]):
        problems.append(f"{len(program['detections'])} detections, the reference has {len(reference['detections'])}")
    for got, want in zip(program["detections"], reference["detections"]):
        if (got["key"], got["anchor"]) != (want["key"], want["anchor"]) or max(
                abs(a - b) for a, b in zip(got["box100"], want["box100"])) > box_tolerance:
            problems.append(f"detection {got} differs from the reference's {want}")
    return problems


def first_differing_map(out: Path, reference: Dict, timeout: float = 600) -> Optional[str]:
    """Build the program with MODEL_TRACE on the host and name the first map whose rows differ from the reference."""
    run_tool(["make", "-s", "trace"], out, timeout)
    traced = parse_program_output(run_tool(["./model_trace", "input.raw"], out, timeout))
    for name, value in traced["maps"].items():
        if name in reference["values"] and fnv1a(reference["values"][name]) != value:
            return name
    return None


def check_program(out: Union[str, Path], graph: QuantizedGraph, images: Sequence[Union[str, Path]], settings: DetectionSettings,
                  run: Callable[[], Dict]) -> Dict:
    """Run the program built in ``out`` on each of ``images`` (``run()`` runs it on ``out/input.raw``) and compare
    every output with the int8 reference, as for the one image of ``export_c``. Returns the count that were
    bit-exact and a row per image: its outputs (the classifier's logits, or the number of detections), its
    mismatches and, on the M4, its instructions. ``out/input.raw`` is left as it was."""
    out = Path(out)
    raw = out / "input.raw"
    kept = raw.read_bytes() if raw.is_file() else None
    c, h, w = graph.input_shape
    rows: List[Dict] = []
    try:
        for path in images:
            image = load_image(path, c, (h, w))
            image.tofile(raw)
            program = run()
            problems = compare_outputs(program, reference_output(graph, image, settings))
            row: Dict = {"image": str(path), "bit_exact": not problems}
            if problems:
                row["mismatches"] = problems[:3]
            if graph.logits is not None:
                row["logits"] = program["classes"]
            else:
                row["detections"] = len(program["detections"])
            if "systick_ticks" in program["measured"]:
                row["instructions"] = program["measured"]["systick_ticks"] * NS_PER_SYSTICK
            rows.append(row)
    finally:
        if kept is None:
            raw.unlink(missing_ok=True)
        else:
            raw.write_bytes(kept)
    return {"images": len(rows), "bit_exact": sum(r["bit_exact"] for r in rows), "runs": rows}


def instruction_spread(counts: Sequence[int]) -> str:
    """The instructions of several runs of one program in words: one figure where they agree to 0.05 M, else the range."""
    low, high = min(counts) / 1e6, max(counts) / 1e6
    return f"{low:,.1f} M instructions each" if high - low < 0.05 else f"{low:,.1f}-{high:,.1f} M instructions"


def _write_input_image(out: Path, image: np.ndarray) -> None:
    """The image as a C array, the camera of the STM32 build."""
    pixels = ", ".join(str(int(v)) for v in image.reshape(-1))
    (out / "input_image.c").write_text(
        "/* Generated by rnnpool.deploy.export: the image the STM32 build reads as its camera. */\n#include <stdint.h>\n\n"
        f"const uint32_t input_image_bytes = {image.size};\nconst uint8_t input_image[{image.size}] = {{{pixels}}};\n")


def _schedule_summary(schedule: Schedule, plan: MemoryPlan, graph: QuantizedGraph) -> Dict:
    largest = sorted(schedule.buffers, key=lambda b: -b.size)[:6]
    baseline = layer_by_layer_peak(graph)
    return {"arena_bytes": plan.arena_bytes, "ccm_arena_bytes": plan.ccm_bytes, "weight_bytes": plan.weight_bytes,
            "largest_buffers": [{"name": b.name, "bytes": b.size, "layer": schedule.graph.layer_of(b.layer)} for b in largest],
            "rnnpool_row_cache": schedule.cache_rows, "choices": schedule.choices, "budget_bytes": schedule.budget,
            "layer_by_layer_bytes": baseline[0], "layer_by_layer_peak": {"layer": baseline[1], "tensors": baseline[2]}}


def export_c(model_name: str, out_dir: Union[str, Path], weights: Optional[str] = None, calib: Optional[str] = None,
             target: str = "host", run_image: Optional[str] = None, ram_bytes: int = 256 * 1024,
             settings: DetectionSettings = DetectionSettings(), input_size: Optional[int] = None, seed: int = 0,
             cache_rows: bool = True, calib_limit: int = 32, timeout: float = 600, calibration: str = "minmax",
             percentile: float = 99.99, equalize: bool = True, check: Sequence[Union[str, Path]] = ()) -> Dict:
    """Quantize ``model_name`` (calibrated on ``calib``: an image or a folder, by ``calibration`` "minmax",
    "percentile" or "mse", see :func:`~rnnpool.deploy.quantize.calibrate`, after equalizing RNNPool's output channels
    unless ``equalize`` is False, see :mod:`~rnnpool.deploy.equalize`; ``weights`` of a quantization-aware run bring
    the activation ranges it was fine-tuned with, and ``calib`` is then not used), write its C program to ``out_dir`` and, with
    ``run_image``, build and run it on ``target`` and check it against the int8 reference; then run it on every
    image of ``check`` too (:func:`check_program`; on the M4 the build linked with the RAM it claimed). Returns the
    report (memory, instructions, bit-exactness, outputs; ``checked`` for ``check``)."""
    if target not in TARGETS:
        raise InvalidInputError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
    if check and run_image is None:
        raise InvalidInputError("checking the program on more images needs an image to build and measure it on first (run_image / --run)")
    kept = checkpoint_ranges(weights) if weights else None  # a QAT run's: the int8 model it was fine-tuned as
    if calib is None and kept is None:
        raise InvalidInputError("int8 needs calibration images: give --calib IMAGE_OR_FOLDER (images like those the model will see)")
    model, described, (channels, height, width) = load_model(model_name, weights, seed, input_size)
    files = image_files(calib, calib_limit) if kept is None else []
    graph = quantize_model(model, [image_tensor(load_image(f, channels, (height, width))) for f in files], (height, width),
                           calibration, percentile, ranges=kept, equalize=equalize)
    budget = arena_budget(graph, ram_bytes, settings) if target == "cortex-m4" else None
    schedule = build_schedule(graph, cache_rows, budget)
    out = Path(out_dir)
    capacity = (STM32_RAM_BYTES - STM32_RESERVED_BYTES, STM32_CCM_BYTES) if target == "stm32f439" else (None, 0)
    plan = generate_c(schedule, out, settings, model_name, *capacity)
    report: Dict = {
        "model": model_name, "weights": described, "target": target, "task": graph.task,
        "input": {"height": height, "width": width, "channels": channels},
        "calibration": ({"source": str(weights), "images": 0, "method": "qat"} if kept is not None else
                        {"source": str(calib), "images": len(files), "method": calibration,
                         "equalized": [graph.layer_of(t) for t in graph.equalized],
                         **({"percentile": percentile} if calibration == "percentile" else {})}),
        "schedule": _schedule_summary(schedule, plan, graph),
        "predicted_ram": predict_ram(schedule, settings).as_dict(),
        "image_feed": "row by row from the camera (semihosting reads on the M4) into the first layer's ring; "
                      "the full image is never in RAM and is not counted"}
    if run_image is None:
        return report
    image = load_image(run_image, channels, (height, width))
    image.tofile(out / "input.raw")
    reference = reference_output(graph, image, settings)
    if target == "stm32f439":
        _write_input_image(out, image)
        report["stm32f439"] = build_stm32(out, timeout)
        program = run_host(out, timeout)  # the same model code, checked on the host
    elif target == "host":
        program = run_host(out, timeout)
    else:
        try:
            m4 = measure_m4(out, ram_bytes, lambda r: not compare_outputs(r, reference), timeout)
        except RamLimitError as err:
            largest = ", ".join(f"{b.name} ({schedule.graph.layer_of(b.layer)}) {b.size:,} B" for b in schedule.largest(4))
            traded = f"; the planner already {'; '.join(schedule.choices)}" if schedule.choices else ""
            raise RamLimitError(f"{err}; largest buffers: {largest}{traded}", err.needed, err.limit) from None
        program = m4.pop("first")
        instructions = m4["instructions"]
        layers = [{"layer": n.name, "kind": n.kind, "instructions": m4["layer_instructions"].get(i, 0)}
                  for i, n in enumerate(schedule.nodes)]
        m4.pop("layer_instructions")
        report["cortex_m4"] = {**m4, "layers": layers, "ram_limit_bytes": ram_bytes,
                               "seconds_at_168mhz_lower_bound": instructions / M4_CLOCK_HZ}
    problems = compare_outputs(program, reference)
    report.update({"bit_exact": not problems, "mismatches": problems, "image": str(run_image)})
    if problems:
        report["first_differing_map"] = first_differing_map(out, reference, timeout)
    if check:
        m4 = report.get("cortex_m4")
        rerun = ((lambda: run_m4(out, m4["ram_bytes"], m4["stack_bytes"], timeout=timeout)) if m4 else (lambda: run_host(out, timeout)))
        report["checked"] = {"on": f"the Cortex-M4 build linked with the {m4['ram_bytes']:,} B of RAM it claimed" if m4 else "the host build",
                             **check_program(out, graph, check, settings, rerun)}
    if graph.logits is not None:
        report["logits"] = program["classes"]
    else:
        report["detections"] = [{"box": [v / 100 for v in d["box100"]], "score": key_score(graph, d["key"]), "anchor": d["anchor"]}
                                for d in program["detections"]]
        report["detections_in"] = f"pixels of the {width}x{height} model input"
    return report


__all__ = ["ExportError", "TARGETS", "calibration_images", "check_program", "compare_outputs", "export_c", "image_files", "image_tensor",
           "instruction_spread", "load_image", "load_model", "reference_output"]
