"""Rounding primitives and requantize: reference vs literal Python-int definitions, Numba vs reference."""

from __future__ import annotations

import math
from fractions import Fraction

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from repq_hw.kernels.rounding import (
    MODE_IDS,
    ROUNDING_MODES,
    mode_id,
    requantize,
    requantize_ref,
    round_div,
    round_div_ref,
    round_div_vec,
    rounding_rshift,
    rounding_rshift_ref,
    rounding_rshift_vec,
    saturate,
    saturate_ref,
    saturate_vec,
)
from repq_hw.lower.constants import quantize_multiplier

I64_MIN, I64_MAX = -(1 << 63), (1 << 63) - 1
I32_MIN, I32_MAX = -(1 << 31), (1 << 31) - 1


# --- literal definitions on unbounded Python ints (an independent oracle) -------------------------
def lit_rshift(x: int, s: int, mode: str) -> int:
    if s == 0:
        return x
    h = 1 << (s - 1)
    if mode == "floor":
        return x >> s
    if mode == "half_up":
        return (x + h) >> s
    if mode == "half_away":
        return ((abs(x) + h) >> s) * (1 if x >= 0 else -1)
    return round(Fraction(x, 1 << s))  # Fraction.__round__: ties to even


def lit_div(n: int, d: int, mode: str) -> int:
    v = Fraction(n, d)
    if mode == "floor":
        return math.floor(v)
    if mode == "half_up":
        return math.floor(v + Fraction(1, 2))
    if mode == "half_away":
        return math.floor(abs(v) + Fraction(1, 2)) * (1 if v >= 0 else -1)
    return round(v)


def lit_requant(acc, m, s, off, zp, lo, hi, mode):
    return min(max(lit_rshift(acc * m + off, s, mode) + zp, lo), hi)


def edge_values() -> list[int]:
    vals = {0, 1, -1, I64_MIN, I64_MIN + 1, I64_MIN + 2, I64_MAX, I64_MAX - 1, I64_MAX - 2}
    for i in range(63):
        for d in (0, 1, 2):
            for v in ((1 << i) + d, (1 << i) - d, -(1 << i) + d, -(1 << i) - d):
                if I64_MIN <= v <= I64_MAX:
                    vals.add(v)
    return sorted(vals)


EDGES = np.array(edge_values(), dtype=np.int64)


def both_threads(fn, *args, **kw):
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        a = fn(*args, **kw)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        b = fn(*args, **kw)
    finally:
        numba.set_num_threads(old)
    return a, b


# --- rounding_rshift ------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ROUNDING_MODES)
def test_rshift_edge_sweep_vs_literal(mode):
    shifts = np.arange(63, dtype=np.int64)
    xs, ss = np.meshgrid(EDGES, shifts, indexing="ij")
    ref = rounding_rshift_ref(xs, ss, mode)
    fast = rounding_rshift_vec(xs, ss, mode)
    assert np.array_equal(ref, fast)
    exp = np.array([[lit_rshift(int(x), int(s), mode) for s in shifts] for x in EDGES], dtype=np.int64)
    assert np.array_equal(ref, exp)


def test_rshift_scalar_numba_matches():
    for mode, mid in MODE_IDS.items():
        for x in EDGES[::7]:
            for s in (0, 1, 2, 7, 31, 32, 62):
                assert rounding_rshift(int(x), s, mid) == lit_rshift(int(x), s, mode)


def test_rshift_small_table():
    # ties: 5/2 = 2.5, -5/2 = -2.5, 6/4 = 1.5
    x = np.array([5, -5, 6, -6, 7, -7])
    assert rounding_rshift_ref(x, [1, 1, 2, 2, 1, 1], "half_up").tolist() == [3, -2, 2, -1, 4, -3]
    assert rounding_rshift_ref(x, [1, 1, 2, 2, 1, 1], "half_even").tolist() == [2, -2, 2, -2, 4, -4]
    assert rounding_rshift_ref(x, [1, 1, 2, 2, 1, 1], "half_away").tolist() == [3, -3, 2, -2, 4, -4]
    assert rounding_rshift_ref(x, [1, 1, 2, 2, 1, 1], "floor").tolist() == [2, -3, 1, -2, 3, -4]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(I64_MIN, I64_MAX), min_size=1, max_size=20),
    st.integers(0, 62),
    st.sampled_from(ROUNDING_MODES),
)
def test_rshift_hypothesis(xs, s, mode):
    x = np.array(xs, dtype=np.int64)
    ref = rounding_rshift_ref(x, s, mode)
    assert np.array_equal(ref, rounding_rshift_vec(x, s, mode))
    assert ref.tolist() == [lit_rshift(v, s, mode) for v in xs]


def test_rshift_bad_args():
    with pytest.raises(ValueError, match="63"):
        rounding_rshift_ref(5, 63, "floor")
    with pytest.raises(ValueError, match="-1"):
        rounding_rshift_vec(5, -1, "floor")
    with pytest.raises(ValueError, match="half_down"):
        rounding_rshift_ref(5, 1, "half_down")
    with pytest.raises(ValueError, match="bankers"):
        mode_id("bankers")
    with pytest.raises(ValueError):
        rounding_rshift_ref(np.array([1.5]), 1, "floor")


# --- round_div / saturate -------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ROUNDING_MODES)
def test_round_div_edges(mode):
    dens = np.array(
        [1, 2, 3, 4, 5, 7, 10, 255, 256, 1 << 31, (1 << 62) - 1, 1 << 62, I64_MAX], dtype=np.int64
    )
    ns, ds = np.meshgrid(EDGES, dens, indexing="ij")
    ref = round_div_ref(ns, ds, mode)
    assert np.array_equal(ref, round_div_vec(ns, ds, mode))
    exp = np.array([[lit_div(int(n), int(d), mode) for d in dens] for n in EDGES], dtype=np.int64)
    assert np.array_equal(ref, exp)
    # division by 2^s is the rounding shift
    s = np.arange(0, 63)
    assert np.array_equal(
        round_div_ref(EDGES[:, None], np.int64(1) << s[None, :], mode),
        rounding_rshift_ref(EDGES[:, None], s[None, :], mode),
    )


@settings(max_examples=200, deadline=None)
@given(st.integers(I64_MIN, I64_MAX), st.integers(1, I64_MAX), st.sampled_from(ROUNDING_MODES))
def test_round_div_hypothesis(n, d, mode):
    r = int(round_div_ref(n, d, mode))
    assert r == lit_div(n, d, mode)
    assert round_div(n, d, MODE_IDS[mode]) == r


def test_round_div_bad():
    with pytest.raises(ValueError, match="denominator"):
        round_div_ref(3, 0, "floor")
    with pytest.raises(ValueError, match="denominator"):
        round_div_vec(3, -2, "floor")


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.integers(I64_MIN, I64_MAX), min_size=1, max_size=20),
    st.integers(I64_MIN, I64_MAX),
    st.integers(0, 1 << 40),
)
def test_saturate_hypothesis(xs, lo, width):
    hi = min(lo + width, I64_MAX)
    ref = saturate_ref(np.array(xs, dtype=np.int64), lo, hi)
    assert np.array_equal(ref, saturate_vec(np.array(xs, dtype=np.int64), lo, hi))
    assert ref.tolist() == [min(max(v, lo), hi) for v in xs]


def test_saturate():
    x = np.array([-300, -128, 0, 127, 300, I64_MIN, I64_MAX])
    assert saturate_ref(x, -128, 127).tolist() == [-128, -128, 0, 127, 127, -128, 127]
    for v in x.tolist():
        assert saturate(v, -128, 127) == min(max(v, -128), 127)
    with pytest.raises(ValueError):
        saturate_ref(x, 5, 4)


# --- requantize -----------------------------------------------------------------------------------
@st.composite
def requant_case(draw):
    c = draw(st.integers(1, 6))
    rows = draw(st.integers(1, 5))
    wide = draw(st.booleans())
    if wide:
        acc = draw(st.lists(st.integers(-(1 << 40), 1 << 40), min_size=rows * c, max_size=rows * c))
        acc = np.array(acc, dtype=np.int64).reshape(rows, c)
    else:
        acc = draw(st.lists(st.integers(I32_MIN, I32_MAX), min_size=rows * c, max_size=rows * c))
        acc = np.array(acc, dtype=np.int32).reshape(rows, c)
    per = draw(st.booleans())

    def vec(strat):
        return np.array(draw(st.lists(strat, min_size=c, max_size=c)), dtype=np.int64) if per else draw(strat)

    m = vec(st.integers(-(1 << 31) + 1, (1 << 31) - 1) if not wide else st.integers(-(1 << 22), (1 << 22) - 1))
    s = vec(st.integers(0, 62))
    off = vec(st.integers(-(1 << 61), 1 << 61))
    lo = draw(st.integers(-300, 300))
    hi = draw(st.integers(lo, lo + 600))
    zp = draw(st.integers(-(1 << 20), 1 << 20))
    mode = draw(st.sampled_from(ROUNDING_MODES))
    return acc, m, s, off, zp, lo, hi, mode


@settings(max_examples=150, deadline=None)
@given(requant_case())
def test_requantize_hypothesis(case):
    acc, m, s, off, zp, lo, hi, mode = case
    ref = requantize_ref(acc, m, s, off, zp, lo, hi, mode)
    fast = requantize(acc, m, s, off, zp, lo, hi, mode)
    assert ref.dtype == np.int32 and np.array_equal(ref, fast)
    c = acc.shape[-1]
    mv, sv, ov = (np.broadcast_to(np.asarray(v, dtype=np.int64), (c,)) for v in (m, s, off))
    exp = [
        [lit_requant(int(acc[i, j]), int(mv[j]), int(sv[j]), int(ov[j]), zp, lo, hi, mode) for j in range(c)]
        for i in range(acc.shape[0])
    ]
    assert ref.tolist() == exp


def test_requantize_edges_type_limits():
    acc = EDGES[(EDGES >= I32_MIN) & (EDGES <= I32_MAX)].astype(np.int32)  # +-2^i +-{0,1,2} and limits
    for mode in ROUNDING_MODES:
        for m in (0, 1, 1 << 30, (1 << 31) - 1):
            for s in (0, 1, 30, 31, 32, 61, 62):
                for off in (0, -(1 << 61), (1 << 61)):
                    a = acc[:, None]
                    ref = requantize_ref(a, m, s, off, -3, I32_MIN, I32_MAX, mode)
                    assert np.array_equal(ref, requantize(a, m, s, off, -3, I32_MIN, I32_MAX, mode))
                    exp = [lit_requant(int(v), m, s, off, -3, I32_MIN, I32_MAX, mode) for v in acc]
                    assert ref[:, 0].tolist() == exp


def test_requantize_out_dtype_and_scalar():
    y = requantize_ref(
        np.array([[100, -100]], dtype=np.int32), 1 << 30, 31, 0, 128, 0, 255, "half_even", np.uint8
    )
    assert y.dtype == np.uint8 and y.tolist() == [[178, 78]]
    assert requantize(
        np.array([[100, -100]], dtype=np.int32), 1 << 30, 31, 0, 128, 0, 255, "half_even", np.uint8
    ).tolist() == [[178, 78]]
    assert int(requantize_ref(np.int32(7), 1, 1, 0, 0, -10, 10, "half_up")) == 4
    with pytest.raises(ValueError, match="uint8"):
        requantize_ref(np.array([1]), 1, 0, 0, 0, -1, 255, "floor", np.uint8)


@pytest.mark.parametrize("fn", [requantize_ref, requantize])
def test_requantize_overflow(fn):
    a = np.array([[1 << 40]], dtype=np.int64)
    with pytest.raises(OverflowError, match="requantize.*acc\\*multiplier"):
        fn(a, 1 << 30, 0, 0, 0, 0, 255, "floor")
    a = np.array([[1 << 32]], dtype=np.int64)
    with pytest.raises(OverflowError, match="offset"):
        fn(a, 1 << 30, 62, 1 << 62, 0, 0, 255, "floor")  # 2^62 + 2^62 = 2^63
    with pytest.raises(OverflowError, match="offset"):
        fn(-a, 1 << 30, 62, -(1 << 62), 0, -5, 255, "floor")  # -2^63 is out too (|v| < 2^63)
    # just inside: 2^62 + 2^62 - 1 = 2^63 - 1
    assert fn(a, 1 << 30, 62, (1 << 62) - 1, 0, 0, 255, "floor").tolist() == [[1]]
    assert fn(-a, 1 << 30, 62, -(1 << 62) + 1, 0, -5, 255, "floor").tolist() == [[-2]]


@pytest.mark.parametrize("fn", [requantize_ref, requantize])
def test_requantize_bad_attrs(fn):
    a = np.zeros((2, 3), dtype=np.int32)
    with pytest.raises(ValueError, match="shift=63"):
        fn(a, 1, 63, 0, 0, 0, 255, "floor")
    with pytest.raises(ValueError, match="multiplier"):
        fn(a, 1 << 31, 3, 0, 0, 0, 255, "floor")
    with pytest.raises(ValueError, match="multiplier"):
        fn(a, [-(1 << 31), 1, 1], 3, 0, 0, 0, 255, "floor")
    with pytest.raises(ValueError, match="length 3"):
        fn(a, [1, 1], 3, 0, 0, 0, 255, "floor")
    with pytest.raises(ValueError, match="out_min"):
        fn(a, 1, 3, 0, 0, 10, 5, "floor")
    with pytest.raises(ValueError, match="stochastic"):
        fn(a, 1, 3, 0, 0, 0, 5, "stochastic")


def test_requantize_threads():
    rng = np.random.default_rng(5)
    acc = rng.integers(I32_MIN, I32_MAX, (257, 64)).astype(np.int32)
    m = rng.integers(1 << 30, 1 << 31, 64)
    s = rng.integers(20, 40, 64)
    off = rng.integers(-(1 << 40), 1 << 40, 64)
    a, b = both_threads(requantize, acc, m, s, off, 7, -128, 127, "half_even")
    assert np.array_equal(a, b)
    assert np.array_equal(a, requantize_ref(acc, m, s, off, 7, -128, 127, "half_even"))
    x = rng.integers(I64_MIN, I64_MAX, 5000)
    a, b = both_threads(rounding_rshift_vec, x, 17, "half_away")
    assert np.array_equal(a, b)


# --- quantize_multiplier (lowering constant of requantize) ----------------------------------------
@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=2.0**-32, max_value=2.0**31 - 1, allow_nan=False, allow_infinity=False))
def test_quantize_multiplier_error(real):
    m, s = quantize_multiplier(real)
    assert (1 << 30) <= m < (1 << 31) and 0 <= s <= 62
    err = abs(Fraction(m, 1 << s) - Fraction(real))
    assert err <= Fraction(real) * Fraction(1, 1 << 31)


def test_quantize_multiplier_edges():
    assert quantize_multiplier(0.0) == (0, 0)
    assert quantize_multiplier(1.0) == (1 << 30, 30)
    assert quantize_multiplier(0.5) == (1 << 30, 31)
    assert quantize_multiplier(2.0**30) == (1 << 30, 0)
    assert quantize_multiplier(2.0**-32) == (1 << 30, 62)
    assert quantize_multiplier(2.0**31 - 1) == ((1 << 31) - 1, 0)
    # mantissa rounding up to 2^31 renormalises: 1 - 2^-40 -> 2^30 * 2^-30
    assert quantize_multiplier(1.0 - 2.0**-40) == (1 << 30, 30)
    for bad in (-1.0, float("nan"), float("inf"), 2.0**31, 2.0**31 - 0.25, 2.0**-33, 1e-300):
        with pytest.raises(ValueError, match="quantize_multiplier"):
            quantize_multiplier(bad)
