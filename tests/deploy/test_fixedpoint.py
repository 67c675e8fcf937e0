import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from rnnpool.deploy.fixedpoint import (NONLINEARITY_FUNCTIONS, build_lut, lut_lookup, quantize_multiplier,
                                      quantize_multiplier_high_word, requantize)


@given(st.floats(min_value=1e-12, max_value=1e8, allow_nan=False))
@settings(max_examples=200, deadline=None)
def test_multiplier_represents_the_real_value(m):
    mult, shift = quantize_multiplier(m)
    assert 1 <= shift <= 62
    if shift < 62:
        assert 2**30 <= mult < 2**31
    assert mult / 2**shift == pytest.approx(m, rel=2**-29, abs=2**-62)


@given(st.integers(-(2**31) + 1, 2**31 - 1), st.floats(min_value=1e-6, max_value=1e3))
@settings(max_examples=200, deadline=None)
def test_requantize_rounds_to_nearest(v, m):
    mult, shift = quantize_multiplier(m)
    got = int(requantize(np.int64(v), mult, shift))
    assert abs(got - v * mult / 2**shift) <= 0.5
    assert abs(got - v * m) <= 0.5 + abs(v * m) * 2**-29 + 1e-9


@given(st.floats(min_value=1e-12, max_value=1e3, allow_nan=False))
@settings(max_examples=200, deadline=None)
def test_high_word_multiplier(m):
    """Shift 32 exactly where M keeps 15+ bits (m in [2**-18, 1/2)), the normalized form elsewhere; either
    way M / 2**s is m to within M's last bit."""
    mult, shift = quantize_multiplier_high_word(m)
    if 2.0**-18 <= m < 0.5 - 2.0**-33:
        assert shift == 32 and 2**14 <= mult < 2**31
        assert abs(mult - m * 2**32) <= 0.5
    elif m < 2.0**-18 * (1 - 2.0**-15) or m >= 0.5:
        assert (mult, shift) == quantize_multiplier(m)
    v = 255 * 127 * 9  # a large accumulator: the requantized value is still within half a step of v * m
    assert abs(int(requantize(np.int64(v), mult, shift)) - v * m) <= 0.5 + v * 2.0**-(min(shift, 62) + 1) + 1e-9


def test_multiplier_errors_name_the_problem():
    with pytest.raises(ValueError, match="non-negative"):
        quantize_multiplier(-0.5)
    with pytest.raises(ValueError, match="too large"):
        quantize_multiplier(2.0**31)
    with pytest.raises(ValueError, match="cannot represent"):
        quantize_multiplier(math.inf)
    assert quantize_multiplier(0.0) == (0, 1)
    assert quantize_multiplier(-0.25, allow_negative=True) == (-(2**30), 32)


@pytest.mark.parametrize("name,tol", [("sigmoid", 0.003), ("tanh", 0.005), ("quant_sigmoid", 0.005), ("quant_tanh", 0.005)])
def test_lookup_tables_follow_the_function(name, tol):
    table = build_lut(NONLINEARITY_FUNCTIONS[name])
    x = np.linspace(-7.9, 7.9, 5001)
    got = lut_lookup(table, np.round(x * 4096).astype(np.int64)) / 2**14
    assert np.abs(got - NONLINEARITY_FUNCTIONS[name](x)).max() < tol
    # inputs beyond the table saturate at its ends
    assert lut_lookup(table, np.array([-(10**6), 10**6])).tolist() == [table[0], table[-1]]


@given(st.integers(-(2**40), 2**40), st.integers(-20, 40))
@settings(max_examples=300, deadline=None)
def test_shift_round_is_rounding_half_up(v, shift):
    from fractions import Fraction

    from rnnpool.deploy.fixedpoint import shift_round

    exact = Fraction(v, 2**shift) if shift >= 0 else Fraction(v * 2**-shift)
    assert int(shift_round(np.int64(v) if abs(v) < 2**40 else v, shift)) == math.floor(exact + Fraction(1, 2))
