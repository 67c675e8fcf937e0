"""Where a generated model spends its Cortex-M4 instructions, by source line and by function.

Takes a directory written by ``rnnpool export c ... --target cortex-m4`` (its sources, Makefile and input
image), builds it again with debug information in a copy, runs it in the same QEMU as the measurement with
``-d in_asm,exec,nochain`` (every translated block's instructions, and every execution of a block) and
counts the instructions each address executes, charged to the layer whose generated ``run_<layer>``
function was entered last (layers run row by row, interleaved). ``arm-none-eabi-addr2line -i`` maps the addresses to source
lines, inlined callers included; the table charges each instruction to its innermost function and line.
The total equals the instructions the program executes (SysTick's count may differ by the few
instructions of its handler and the start-up).

    python benchmarks/profile_m4.py OUT_DIR [--top 40] [--json profile.json]

Slow: QEMU logs every block execution (~100 M lines for a 0.45 G-instruction frame, a few minutes).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rnnpool.deploy.programs import HANDLER_STACK_BYTES, MEASURE_RAM_BYTES, MEASURE_STACK_BYTES, QEMU_COMMAND  # noqa: E402


def build(src: Path, work: Path) -> Path:
    shutil.copytree(src, work, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.elf", "*.ci", "model_host*"))
    model = work / "model.c"  # each layer's row function stays a function, so the trace sees it entered
    model.write_text(model.read_text().replace("static void run_", "__attribute__((noinline)) static void run_"))
    subprocess.run(["make", "-s", "m4", "CFLAGS=-O3 -flto -g", f"RAM_BYTES={MEASURE_RAM_BYTES}",
                    f"STACK_BYTES={MEASURE_STACK_BYTES}", f"HANDLER_STACK_BYTES={HANDLER_STACK_BYTES}"], cwd=work, check=True)
    return next(work.glob("model_m4_*.elf"))


def layer_entries(elf: Path) -> Dict[int, str]:
    """Entry address -> layer, for the generated functions that run one layer's rows (run_<layer>)."""
    text = subprocess.run(["arm-none-eabi-nm", str(elf)], capture_output=True, text=True, check=True).stdout
    entries = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "tT" and parts[2].startswith("run_"):
            entries[int(parts[0], 16) & ~1] = parts[2][4:]
    return entries


def trace(elf: Path) -> Tuple[Dict[Tuple[str, int], int], Dict[int, List[int]]]:
    """(executions of each block start, keyed by (layer, address): the layer whose run_ function was entered
    last; the instruction addresses of each block)."""
    entries = layer_entries(elf)
    fifo = elf.parent / "qemu.log"
    os.mkfifo(fifo)
    proc = subprocess.Popen(QEMU_COMMAND + ["-kernel", elf.name, "-d", "in_asm,exec,nochain", "-D", fifo.name],
                            cwd=elf.parent, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs: Dict[Tuple[str, int], int] = collections.Counter()
    blocks: Dict[int, List[int]] = {}
    current: List[int] = []
    layer = "-"
    with open(fifo, "r", errors="replace") as log:
        for line in log:
            if line.startswith("Trace"):  # Trace 0: 0xHOST [00000000/PC/...]
                at = line.index("[")
                pc = int(line[at + 10:at + 18], 16)
                layer = entries.get(pc, layer)
                runs[layer, pc] += 1
            elif line.startswith("0x") and ":" in line:
                current.append(int(line[:10], 16))
            elif line.startswith("IN:"):
                current = []
            elif not line.strip() and current:
                blocks[current[0]] = current
                current = []
    proc.wait()
    return runs, blocks


def locate(elf: Path, addresses: List[int]) -> Dict[int, Tuple[str, str]]:
    """address -> (innermost function, file:line), from one addr2line run (-a marks where each address starts)."""
    text = subprocess.run(["arm-none-eabi-addr2line", "-a", "-f", "-i", "-e", str(elf)], input="\n".join(hex(a) for a in addresses),
                          capture_output=True, text=True, check=True).stdout.splitlines()
    result: Dict[int, Tuple[str, str]] = {}
    i = 0
    while i < len(text):
        address = int(text[i], 16)
        result[address] = (text[i + 1], os.path.basename(text[i + 2]).split(" ")[0])  # the innermost frame comes first
        i += 3
        while i < len(text) and not text[i].startswith("0x"):
            i += 2
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="a directory written by rnnpool export c --target cortex-m4")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--per-layer", type=int, default=6, help="functions listed under each layer")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rnnpool_profile_") as tmp:
        elf = build(args.out, Path(tmp) / "build")
        runs, blocks = trace(elf)
        per_address: Dict[Tuple[str, int], int] = collections.Counter()
        for (layer, start), n in runs.items():
            for a in blocks.get(start, [start]):
                per_address[layer, a] += n
        where = locate(elf, sorted({a for _, a in per_address}))
    total = sum(per_address.values())
    by_line: Dict[Tuple[str, str], int] = collections.Counter()
    by_function: Dict[str, int] = collections.Counter()
    by_layer: Dict[str, Dict[str, int]] = collections.defaultdict(collections.Counter)
    for (layer, a), n in per_address.items():
        by_line[where[a]] += n
        by_function[where[a][0]] += n
        by_layer[layer][where[a][0]] += n
    print(f"{total:,} instructions executed")
    print(f"\n{'function':40s} {'instructions':>14s} {'share':>7s}")
    for f, n in sorted(by_function.items(), key=lambda kv: -kv[1])[:args.top]:
        print(f"{f:40s} {n:14,d} {n / total:7.1%}")
    print(f"\n{'line':60s} {'instructions':>14s} {'share':>7s}")
    for (f, line), n in sorted(by_line.items(), key=lambda kv: -kv[1])[:args.top]:
        print(f"{f + ' ' + line:60s} {n:14,d} {n / total:7.1%}")
    print(f"\n{'layer / function':40s} {'instructions':>14s} {'share':>7s}")
    for layer, functions in sorted(by_layer.items(), key=lambda kv: -sum(kv[1].values())):
        n = sum(functions.values())
        print(f"{layer:40s} {n:14,d} {n / total:7.1%}")
        for f, m in sorted(functions.items(), key=lambda kv: -kv[1])[:args.per_layer]:
            print(f"    {f:36s} {m:14,d} {m / n:7.1%}")
    if args.json:
        args.json.write_text(json.dumps({"instructions": total, "functions": dict(by_function),
                                         "lines": {f"{f} {l}": n for (f, l), n in by_line.items()},
                                         "layers": {k: dict(v) for k, v in by_layer.items()}}, indent=1))


if __name__ == "__main__":
    main()
