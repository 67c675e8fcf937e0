"""Building and running a generated program: host gcc, a Cortex-M4 in QEMU (measured), or an STM32F439 image.

On the M4 (``qemu-system-arm -machine mps2-an386`` with semihosting) the image is fed row by row, as a
camera would deliver it, so it never sits in RAM. RAM is measured: static data from the linked ELF plus
the high-water mark of the painted stack; instructions come from SysTick under ``-icount shift=0``
(1 ns of virtual time per instruction, SysTick at the board's 25 MHz: 40 instructions per tick).
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Dict, List, Union

from ..errors import RnnpoolError
from .stack_usage import stack_bound

NS_PER_SYSTICK = 40  # mps2-an386 SYSCLK is 25 MHz; -icount shift=0 runs one instruction per ns
QEMU_COMMAND = ["qemu-system-arm", "-machine", "mps2-an386", "-cpu", "cortex-m4", "-nographic", "-monitor", "none",
                "-serial", "none", "-semihosting-config", "enable=on,target=native", "-icount", "shift=0"]
# What an interrupt pushes on the program's stack at worst: the Cortex-M4 FPU frame (26 words) plus 4 bytes
# of alignment. The measured high-water mark is raised by this much, so an interrupt at the deepest point fits.
EXCEPTION_FRAME_BYTES = 26 * 4 + 4
HANDLER_STACK_BYTES = 128  # the exception handlers' own stack (MSP), part of the static RAM
STRESS_SYSTICK_RELOAD = 9  # verification runs: an interrupt every 10 ticks (400 instructions)
MEASURE_RAM_BYTES, MEASURE_STACK_BYTES = 4 * 1024 * 1024, 16 * 1024  # the measuring run: the board's whole SRAM
TOOLS = {"host": ["make", "gcc"], "cortex-m4": ["make", "arm-none-eabi-gcc", "arm-none-eabi-size", "qemu-system-arm"],
         "stm32f439": ["make", "arm-none-eabi-gcc", "arm-none-eabi-size", "arm-none-eabi-objcopy"]}


class ExportError(RnnpoolError, RuntimeError):
    """A build or run step of the export failed; the message says which and holds the tool's output."""


class RamLimitError(ExportError):
    """The program needs more RAM than the target has."""

    def __init__(self, message: str, needed: int, limit: int) -> None:
        super().__init__(message)
        self.needed, self.limit = needed, limit


def toolchain_available(target: str) -> bool:
    """Whether the tools for ``target`` are on PATH."""
    return all(shutil.which(t) for t in TOOLS[target])


def run_tool(cmd: List[str], cwd: Path, timeout: float) -> str:
    try:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise ExportError(f"{cmd[0]} is not installed (see README: gcc-arm-none-eabi, qemu-system-arm)") from None
    except subprocess.TimeoutExpired:
        raise ExportError(f"{' '.join(cmd)} ran past {timeout:.0f} s") from None
    if done.returncode != 0:
        raise ExportError(f"{' '.join(cmd)} failed (exit {done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return done.stdout + done.stderr  # qemu's semihosting console writes to stderr


def parse_program_output(text: str) -> Dict:
    """The program's printed outputs and measurements as a dict; raises if it did not finish."""
    out: Dict = {"hashes": [], "detections": [], "logits": None, "classes": [], "layers": {}, "maps": {}, "measured": {}}
    done = False
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "head":
            out["hashes"].append((int(parts[2], 16), int(parts[3], 16)))
        elif parts[0] == "det":
            out["detections"].append({"box100": [int(v) for v in parts[1:5]], "key": int(parts[5]), "anchor": int(parts[6])})
        elif parts[0] == "logits":
            out["logits"] = int(parts[1], 16)
        elif parts[0] == "class":
            out["classes"].append(int(parts[2]))
        elif parts[0] == "layer":
            out["layers"][int(parts[1])] = int(parts[2])
        elif parts[0] == "map":
            out["maps"][parts[1]] = int(parts[2], 16)
        elif parts[0] == "done":
            done = True
        elif parts[0] == "error:":
            raise ExportError(line + ("\n" + text[-1000:] if "fault" in line else ""))
        elif len(parts) == 2 and parts[1].isdigit():
            out["measured"][parts[0]] = int(parts[1])
    if not done:
        raise ExportError(f"the program did not finish; its output:\n{text[-2000:]}")
    return out


def _make(out: Path, goal: str, variables: Dict[str, object], timeout: float = 600) -> None:
    run_tool(["make", "-s", goal] + [f"{k}={v}" for k, v in variables.items()], out, timeout)


def elf_sections(elf: Path) -> Dict[str, int]:
    sections = {}
    for line in run_tool(["arm-none-eabi-size", "-A", str(elf)], elf.parent, 60).splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith(".") and parts[1].isdigit():
            sections[parts[0]] = int(parts[1])
    return sections


def flash_bytes(sections: Dict[str, int]) -> int:
    return sum(sections.get(s, 0) for s in (".isr_vector", ".text", ".ARM.exidx", ".data"))


def run_host(out: Union[str, Path], timeout: float = 600) -> Dict:
    """Build with the host gcc and run on ``out/input.raw``."""
    out = Path(out)
    _make(out, "host", {})
    return parse_program_output(run_tool(["./model_host", "input.raw"], out, timeout))


def m4_elf_name(ram: int, stack: int, reload: int) -> str:
    return f"model_m4_{ram}_{stack}_{reload}.elf"


def run_m4(out: Union[str, Path], ram_bytes: int, stack_bytes: int, systick_reload: int = 0xFFFFFF,
           timeout: float = 600) -> Dict:
    """Link for ``ram_bytes`` of RAM (``stack_bytes`` of it the program's stack) and run in QEMU."""
    out = Path(out)
    variables = {"RAM_BYTES": ram_bytes, "STACK_BYTES": stack_bytes, "HANDLER_STACK_BYTES": HANDLER_STACK_BYTES,
                 "SYSTICK_RELOAD": systick_reload}
    try:
        _make(out, "m4", variables)
    except ExportError as err:
        if "overflowed" in str(err) or "will not fit" in str(err):
            raise ExportError(f"the program does not fit {ram_bytes:,} B of RAM with a {stack_bytes:,} B stack "
                              f"(the linker: {_overflow_line(str(err))})") from None
        raise
    elf = out / m4_elf_name(ram_bytes, stack_bytes, systick_reload)
    result = parse_program_output(run_tool(QEMU_COMMAND + ["-kernel", elf.name], out, timeout))
    result["elf"] = elf.name
    result["sections"] = elf_sections(elf)
    return result


def _overflow_line(text: str) -> str:
    lines = [l for l in text.splitlines() if "overflow" in l or "will not fit" in l]
    return lines[0].strip() if lines else text.strip().splitlines()[-1]


def faults_at(out: Union[str, Path], ram_bytes: int, stack_bytes: int, systick_reload: int, timeout: float = 600) -> str:
    """How a run linked with this RAM ends: "stack overflow", another error, "no fault", or "does not link"."""
    try:
        run_m4(out, ram_bytes, stack_bytes, systick_reload, timeout)
    except ExportError as err:
        text = str(err)
        if "does not fit" in text:
            return "does not link"
        return "stack overflow" if "stack overflow" in text else text.splitlines()[0]
    return "no fault"


def measure_m4(out: Union[str, Path], ram_limit: int, same_output, timeout: float = 600) -> Dict:
    """Run on the M4 within ``ram_limit`` bytes, then establish the RAM the program needs:

    1. a run with all of the board's RAM measures static data and the stack's high-water mark (painted);
    2. the claim is static + high-water + one exception frame (EXCEPTION_FRAME_BYTES), as a real
       application's interrupts push one at any point; it must not exceed ``ram_limit``;
    3. the program is linked with exactly the claimed RAM and run with SysTick interrupting every
       STRESS_SYSTICK_RELOAD + 1 ticks (interrupts everywhere, the deepest point included): it must give the
       same output (``same_output(result)``);
    4. linked with 64 bytes less, under the same interrupts, it must stop with a stack overflow: the stack
       sits at the bottom of RAM under an MPU guard region, so an overflow faults at once;
    5. the stack's static bound from GCC's call graph cross-checks the painted mark.
    """
    out = Path(out)
    first = run_m4(out, MEASURE_RAM_BYTES, MEASURE_STACK_BYTES, timeout=timeout)
    measured = first["measured"]
    static, high_water = measured["static_ram_bytes"], measured["stack_bytes"]
    stack = (high_water + EXCEPTION_FRAME_BYTES + 7) // 8 * 8
    claimed = static + stack
    if claimed > ram_limit:
        raise RamLimitError(f"the program needs {claimed:,} B of RAM (static {static:,} + stack {stack:,}), the target has "
                            f"{ram_limit:,}", claimed, ram_limit)
    stressed = run_m4(out, claimed, stack, STRESS_SYSTICK_RELOAD, timeout)
    below = faults_at(out, claimed - 64, stack - 64, STRESS_SYSTICK_RELOAD, timeout)
    elf = out / first["elf"]
    bound = stack_bound(sorted(out.glob(elf.name + "*.ci")))  # one per source, or per LTO partition
    return {"first": first, "static_ram_bytes": static, "stack_high_water_bytes": high_water,
            "exception_frame_bytes": EXCEPTION_FRAME_BYTES, "stack_bytes": stack, "ram_bytes": claimed,
            "handler_stack_bytes": measured["handler_stack_bytes"], "flash_bytes": flash_bytes(first["sections"]),
            "ticks": measured["systick_ticks"], "instructions": measured["systick_ticks"] * NS_PER_SYSTICK,
            "layer_instructions": {i: t * NS_PER_SYSTICK for i, t in first["layers"].items()},
            "claimed_ram_run": {"ram_bytes": claimed, "systick_every_ticks": STRESS_SYSTICK_RELOAD + 1,
                                "same_output": bool(same_output(stressed)),
                                "stack_high_water_bytes": stressed["measured"]["stack_bytes"]},
            "claimed_minus_64": below,
            "stack_static_bound": {"bytes": bound.bytes, "chain": bound.chain, "uncounted_library_calls": bound.unknown,
                                   "dynamic_frames": bound.dynamic}}


def build_stm32(out: Union[str, Path], timeout: float = 600) -> Dict:
    """Build the flashable STM32F439 image (.elf and .bin); its size, not a run."""
    out = Path(out)
    _make(out, "stm32", {}, timeout)
    elf = out / "model_stm32f439.elf"
    sections = elf_sections(elf)
    ram = sum(sections.get(s, 0) for s in (".stack", ".data", ".bss", ".handler_stack"))
    ccm = sections.get(".ccm", 0)
    return {"elf": elf.name, "bin": "model_stm32f439.bin", "bin_bytes": (out / "model_stm32f439.bin").stat().st_size,
            "flash_bytes": flash_bytes(sections), "sram_bytes": ram, "ccm_bytes": ccm, "sections": sections}


__all__ = ["EXCEPTION_FRAME_BYTES", "ExportError", "RamLimitError", "NS_PER_SYSTICK", "build_stm32", "elf_sections", "faults_at",
           "measure_m4", "parse_program_output", "run_host", "run_m4", "run_tool", "toolchain_available"]
