"""The C runtime's fixed sizes, read from ``c/rnnpool_rt.h`` (their only home) so codegen never repeats them."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict

RUNTIME_DIR = Path(__file__).parent / "c"


def _read_limits() -> Dict[str, int]:
    text = (RUNTIME_DIR / "rnnpool_rt.h").read_text()
    limits = {name: int(value) for name, value in re.findall(r"^#define (RT_[A-Z_]+) (\d+)\b", text, re.MULTILINE)}
    for name in ("RT_MAX_KERNEL", "RT_MAX_PATCH", "RT_MAX_HIDDEN", "RT_PACK", "RT_LUT_SIZE"):
        if name not in limits:
            raise RuntimeError(f"rnnpool_rt.h does not define {name}")
    return limits


LIMITS = _read_limits()


def padded(n: int) -> int:
    """``n`` rounded up to whole packed words (RT_PACK int8): the length of a weight row."""
    pack = LIMITS["RT_PACK"]
    return (n + pack - 1) // pack * pack


def fifo_pixels(kernel: int) -> int:
    """Pixels of an MBConv block's rolling-row FIFO: kernel + 1, rounded up to even (rt_mbconv.c)."""
    return (kernel + 2) // 2 * 2


__all__ = ["LIMITS", "RUNTIME_DIR", "fifo_pixels", "padded"]
