"""Fixed-point arithmetic shared by the int8 reference and the generated C (the two must agree bit for bit).

A real multiplier ``m`` is stored as an integer ``M`` and a right shift ``s`` with ``m ~= M / 2**s``
(``|M|`` in [2**30, 2**31), as CMSIS-NN/TFLM do; convolutions use ``s = 32`` where ``M`` keeps enough bits,
see :func:`quantize_multiplier_high_word`). Requantization is then
``requantize(v, M, s) = (v * M + 2**(s-1)) >> s`` in 64-bit integers (round half up, arithmetic shift),
which the C runtime computes with exactly the same expression.

The recurrent cells run in Q-formats: hidden states and nonlinearity outputs in Q14 (int16), the
pre-activations in Q12 (int32). Sigmoid and tanh are lookup tables over [-8, 8) in steps of 1/128.
"""
from __future__ import annotations

import math
from typing import Callable, Tuple

import numpy as np
from ..errors import InvalidInputError

STATE_BITS = 14  # hidden states and gate values: value = q / 2**14
PRE_BITS = 12  # pre-activations: value = q / 2**12
LUT_SHIFT = 5  # one table entry per 2**5 Q12 steps (1/128)
LUT_SIZE = 1 << (16 - LUT_SHIFT)  # covers Q12 values in [-2**15, 2**15), i.e. [-8, 8)
INT16_MIN, INT16_MAX = -(1 << 15), (1 << 15) - 1


def quantize_multiplier(m: float, allow_negative: bool = False) -> Tuple[int, int]:
    """(M, s) with ``m ~= M / 2**s``, ``|M|`` in [2**30, 2**31) and 1 <= s <= 62 (0 gives (0, 1))."""
    if not math.isfinite(m):
        raise InvalidInputError(f"cannot represent multiplier {m!r} in fixed point")
    if m < 0 and not allow_negative:
        raise InvalidInputError(f"multiplier must be non-negative here, got {m}")
    if m == 0:
        return 0, 1
    frac, exp = math.frexp(abs(m))  # abs(m) = frac * 2**exp, frac in [0.5, 1)
    q = int(round(frac * (1 << 31)))
    if q == 1 << 31:
        q //= 2
        exp += 1
    shift = 31 - exp
    if shift < 1:
        raise InvalidInputError(f"multiplier {m} is too large for fixed-point requantization (>= 2**30)")
    if shift > 62:  # tiny multiplier: drop precision instead of overflowing the shift
        q >>= shift - 62
        shift = 62
    return (-q if m < 0 else q), shift


HIGH_WORD_SHIFT = 32  # the high-word form: (v * M + 2**31) >> 32, one SMMLAR on the Cortex-M4
HIGH_WORD_MIN_MULT = 1 << 14  # below this, M keeps too few bits in the high-word form


def quantize_multiplier_high_word(m: float) -> Tuple[int, int]:
    """(M, 32) with ``m ~= M / 2**32`` where that keeps ``M`` in [2**14, 2**31) (m in [2**-18, 1/2)): the
    requantization is then the rounded high word of ``v * M``, one instruction on the M4 (SMMLAR, which
    also adds the output zero point). ``M`` keeps 15 to 31 bits, so the error stays far below an int8
    step. Other multipliers get :func:`quantize_multiplier`'s normalized form."""
    if math.isfinite(m) and m > 0:
        q = int(round(m * 2.0 ** HIGH_WORD_SHIFT))
        if HIGH_WORD_MIN_MULT <= q < 1 << 31:
            return q, HIGH_WORD_SHIFT
    return quantize_multiplier(m)


def requantize(v: np.ndarray, mult, shift) -> np.ndarray:
    """``(v * mult + 2**(shift-1)) >> shift`` elementwise in int64 (mult, shift broadcast)."""
    v = np.asarray(v, dtype=np.int64)
    mult = np.asarray(mult, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    return (v * mult + (np.int64(1) << (shift - 1))) >> shift


def shift_round(v: np.ndarray, shift) -> np.ndarray:
    """``v * 2**-shift`` rounded half up: ``(v + 2**(shift-1)) >> shift`` for shift > 0, ``v << -shift`` else.

    The requantization of the recurrent cells, whose weights are scaled by powers of two per row."""
    v = np.asarray(v, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    right = np.maximum(shift, 0)
    return ((v << np.maximum(-shift, 0)) + np.where(right > 0, np.int64(1) << np.maximum(right - 1, 0), 0)) >> right


def saturate(v: np.ndarray, low: int, high: int, dtype) -> np.ndarray:
    """Clamp to [low, high] and cast."""
    return np.clip(v, low, high).astype(dtype)


def build_lut(fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """int16 Q14 table of ``fn`` sampled at the centre of each bucket of Q12 inputs."""
    centres = (np.arange(LUT_SIZE, dtype=np.float64) * (1 << LUT_SHIFT) + (1 << (LUT_SHIFT - 1)) - (1 << 15)) / (1 << PRE_BITS)
    return saturate(np.round(fn(centres) * (1 << STATE_BITS)), INT16_MIN, INT16_MAX, np.int16)


def lut_lookup(table: np.ndarray, pre: np.ndarray) -> np.ndarray:
    """Table value for Q12 pre-activations (clamped to the table's range), as int64."""
    index = (np.clip(pre, INT16_MIN, INT16_MAX) + (1 << 15)) >> LUT_SHIFT
    return table[index].astype(np.int64)


NONLINEARITY_FUNCTIONS = {
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "tanh": np.tanh,
    "quant_sigmoid": lambda x: np.clip((x + 1.0) / 2.0, 0.0, 1.0),
    "quant_tanh": lambda x: np.clip(x, -1.0, 1.0),
}

__all__ = ["HIGH_WORD_SHIFT", "INT16_MAX", "INT16_MIN", "LUT_SHIFT", "LUT_SIZE", "NONLINEARITY_FUNCTIONS", "PRE_BITS", "STATE_BITS",
           "build_lut", "lut_lookup", "quantize_multiplier", "quantize_multiplier_high_word", "requantize", "saturate", "shift_round"]
