"""One call from a zoo face model to C that ran and was checked: quantize, generate, build, run, compare.

``export_c`` builds with the host gcc (``target="host"``) or cross-compiles for a Cortex-M4 and runs the
program in ``qemu-system-arm -machine mps2-an386`` with semihosting (``target="cortex-m4"``). The image is
fed to the program a row at a time (semihosting reads into the streaming stage's ring buffer), as a
camera would deliver it, so the image never sits in RAM. On the M4, RAM is measured: static data from the
linked ELF plus the stack's high-water mark found by painting it; instructions come from SysTick under
``-icount shift=0`` (1 ns of virtual time per instruction, SysTick at the board's 25 MHz: 40 per tick).
The program's output checksums and detections are compared with the NumPy int8 reference.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from .codegen import format_plan, generate_c
from .int8_reference import DetectionSettings, fnv1a, int8_detections, run_int8
from .quantize import QuantizedGraph, quantize_model

TARGETS = ("host", "cortex-m4")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm")
NS_PER_SYSTICK = 40  # mps2-an386 SYSCLK is 25 MHz
QEMU_COMMAND = ["qemu-system-arm", "-machine", "mps2-an386", "-cpu", "cortex-m4", "-nographic", "-monitor", "none",
                "-serial", "none", "-semihosting-config", "enable=on,target=native", "-icount", "shift=0"]


class ExportError(RuntimeError):
    """A build or run step of the export failed; the message holds the tool's output."""


def load_image(path: Union[str, Path], channels: int, size: Sequence[int]) -> np.ndarray:
    """uint8 (H, W, C) image resized (bilinear) to ``size`` = (H, W), grey for 1 channel."""
    try:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB").resize((size[1], size[0]), Image.BILINEAR)
            array = np.array(img, dtype=np.uint8)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from None
    return array.reshape(size[0], size[1], channels)


def calibration_images(source: Union[str, Path], channels: int, size: Sequence[int], limit: int = 32) -> List[torch.Tensor]:
    """Up to ``limit`` float (C, H, W) images from an image file or a folder (searched recursively)."""
    source = Path(source)
    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
        if not files:
            raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {source}")
    elif source.is_file():
        files = [source]
    else:
        raise FileNotFoundError(f"calibration source {source} does not exist")
    return [torch.from_numpy(load_image(f, channels, size)).permute(2, 0, 1).float() / 255 for f in files]


def _run(cmd: List[str], cwd: Path, timeout: float) -> str:
    try:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise ExportError(f"{cmd[0]} is not installed (see README: gcc-arm-none-eabi, qemu-system-arm)") from None
    except subprocess.TimeoutExpired:
        raise ExportError(f"{' '.join(cmd)} ran past {timeout:.0f} s") from None
    if done.returncode != 0:
        raise ExportError(f"{' '.join(cmd)} failed (exit {done.returncode}):\n{done.stdout[-4000:]}{done.stderr[-4000:]}")
    return done.stdout + done.stderr  # qemu's semihosting console writes to stderr


def parse_program_output(text: str) -> Dict:
    """The program's ``head``/``det``/measurement lines as a dict; raises if it did not finish."""
    hashes, detections, measured, done = [], [], {}, False
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "head":
            hashes.append((int(parts[2], 16), int(parts[3], 16)))
        elif parts[0] == "det":
            detections.append({"box100": [int(v) for v in parts[1:5]], "key": int(parts[5]), "anchor": int(parts[6])})
        elif parts[0] == "done":
            done = True
        elif parts[0] == "error:":
            raise ExportError(line)
        elif len(parts) == 2 and parts[1].isdigit():
            measured[parts[0]] = int(parts[1])
    if not done:
        raise ExportError(f"the program did not finish; its output:\n{text[-2000:]}")
    return {"hashes": hashes, "detections": detections, "measured": measured}


def reference_output(graph: QuantizedGraph, image: np.ndarray, settings: DetectionSettings) -> Dict:
    """What the program must print for ``image``, from the NumPy int8 reference."""
    values = run_int8(graph, image)
    hashes = [(fnv1a(values[h.conf]), fnv1a(values[h.loc])) for h in graph.heads]
    detections = [{"box100": [int(np.float32(v) * np.float32(100)) for v in d["box"]], "key": d["key"], "anchor": d["anchor"]}
                  for d in int8_detections(graph, values, settings)]
    return {"hashes": hashes, "detections": detections}


def compare_outputs(program: Dict, reference: Dict, box_tolerance: int = 2) -> List[str]:
    """Differences between the program's and the reference's outputs (empty: bit-exact).

    Checksums and each detection's integer score and anchor must be equal; box corners (float32 decode,
    printed in 1/100 px) may differ by ``box_tolerance`` hundredths because libm's expf is not NumPy's."""
    problems = []
    for i, (got, want) in enumerate(zip(program["hashes"], reference["hashes"])):
        if got != want:
            problems.append(f"head {i} outputs differ (checksums {got[0]:08x}/{got[1]:08x} vs {want[0]:08x}/{want[1]:08x})")
    if len(program["hashes"]) != len(reference["hashes"]):
        problems.append(f"{len(program['hashes'])} heads printed, {len(reference['hashes'])} expected")
    if len(program["detections"]) != len(reference["detections"]):
        problems.append(f"{len(program['detections'])} detections, reference has {len(reference['detections'])}")
    for got, want in zip(program["detections"], reference["detections"]):
        if (got["key"], got["anchor"]) != (want["key"], want["anchor"]) or max(
                abs(a - b) for a, b in zip(got["box100"], want["box100"])) > box_tolerance:
            problems.append(f"detection {got} differs from reference {want}")
    return problems


def _make(out: Path, target: str, extra: Sequence[str] = ()) -> None:
    _run(["make", "-s", "host" if target == "host" else "m4", *extra], out, timeout=600)


def _elf_sizes(elf: Path) -> Dict[str, int]:
    text = _run(["arm-none-eabi-size", "-A", str(elf)], elf.parent, timeout=60)
    sections = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith(".") and parts[1].isdigit():
            sections[parts[0]] = int(parts[1])
    return sections


def _run_m4(out: Path, ram_bytes: int, min_stack: int, timeout: float) -> Dict:
    _make(out, "cortex-m4", [f"RAM_BYTES={ram_bytes}", f"MIN_STACK={min_stack}"])
    elf = out / f"model_m4_{ram_bytes}.elf"
    result = parse_program_output(_run(QEMU_COMMAND + ["-kernel", elf.name], out, timeout))
    sections = _elf_sizes(elf)
    result["flash_bytes"] = sum(sections.get(s, 0) for s in (".text", ".ARM.exidx", ".data"))
    result["elf"] = elf.name
    return result


def run_program(out: Union[str, Path], target: str = "host", ram_bytes: int = 256 * 1024, min_stack: int = 1024,
                timeout: float = 600) -> Dict:
    """Build the generated program in ``out`` for ``target`` and run it on ``out/input.raw``; parsed output."""
    out = Path(out)
    if target == "host":
        _make(out, "host")
        return parse_program_output(_run(["./model_host", "input.raw"], out, timeout))
    return _run_m4(out, ram_bytes, min_stack, timeout)


def export_c(model_name: str, out_dir: Union[str, Path], weights: Optional[str] = None, calib: Optional[str] = None,
             target: str = "host", run_image: Optional[str] = None, ram_bytes: int = 256 * 1024,
             settings: DetectionSettings = DetectionSettings(), timeout: float = 600) -> Dict:
    """Quantize ``model_name``, write its C program to ``out_dir`` and, with ``run_image``, build and run it
    on ``target`` and check it against the int8 reference. Returns the report (see module doc)."""
    from ..engine.detect import build_detector

    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
    if calib is None and run_image is None:
        raise ValueError("calibration needs images: give --calib DIR or --run IMAGE")
    model = build_detector(model_name, weights).detector.eval()
    channels, size = model.in_channels, model.input_size
    graph = quantize_model(model, calibration_images(calib or run_image, channels, size))
    out = Path(out_dir)
    plan = generate_c(graph, out, settings)
    report: Dict = {"model": model_name, "weights": weights or "initial (untrained)", "target": target,
                    "input": {"height": size[0], "width": size[1], "channels": channels},
                    "calibration": str(calib or run_image), "arena_bytes": plan.arena_bytes,
                    "layer_by_layer_bytes": plan.layer_by_layer_bytes,
                    "layer_by_layer_peak": {"layer": plan.layer_by_layer_peak_layer, "tensors": plan.layer_by_layer_peak_tensors},
                    "arena_peak_buffers": plan.plan_peak_buffers, "weight_bytes": plan.flash_weight_bytes,
                    "image_feed": "row by row from the camera (semihosting reads on the M4) into the streaming stage's "
                                  "ring buffer; the full image is never in RAM and is not counted",
                    "plan": format_plan(plan)}
    if run_image is None:
        return report
    image = load_image(run_image, channels, size)
    image.tofile(out / "input.raw")
    reference = reference_output(graph, image, settings)
    program = run_program(out, target, ram_bytes, timeout=timeout)
    if target == "cortex-m4":
        measured = program["measured"]
        ram = measured["static_ram_bytes"] + measured["stack_bytes"]
        # Link again with exactly the RAM it claims (static + measured stack, rounded up to 8 bytes) and run.
        claimed = (ram + 7) // 8 * 8
        again = _run_m4(out, claimed, claimed - measured["static_ram_bytes"], timeout)
        report.update({
            "ram_bytes": ram, "static_ram_bytes": measured["static_ram_bytes"], "stack_bytes": measured["stack_bytes"],
            "ram_limit_bytes": ram_bytes, "flash_bytes": program["flash_bytes"],
            "instructions": measured["systick_ticks"] * NS_PER_SYSTICK,
            "claimed_ram_run": {"ram_bytes": claimed, "same_output": again["hashes"] == program["hashes"]
                                and again["detections"] == program["detections"]}})
    problems = compare_outputs(program, reference)
    report.update({
        "bit_exact": not problems, "mismatches": problems,
        "detections": [{"box": [v / 100 for v in d["box100"]], "score": float(1 / (1 + np.exp(-d["key"] / 65536))),
                        "anchor": d["anchor"]} for d in program["detections"]],
        "image": str(run_image), "detections_in": f"pixels of the {size[1]}x{size[0]} model input"})
    return report


def write_report(report: Dict, path: Union[str, Path]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(report, indent=2))


def toolchain_available(target: str) -> bool:
    """Whether the tools for ``target`` are on PATH."""
    tools = ["make", "gcc"] if target == "host" else ["make", "arm-none-eabi-gcc", "arm-none-eabi-size", "qemu-system-arm"]
    return all(shutil.which(t) for t in tools)


__all__ = ["ExportError", "TARGETS", "calibration_images", "compare_outputs", "export_c", "load_image",
           "parse_program_output", "reference_output", "run_program", "toolchain_available", "write_report"]
