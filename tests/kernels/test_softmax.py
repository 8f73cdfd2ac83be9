"""Integer softmax: exp2 LUT exactness, Numba vs reference, derived error bound vs float64 softmax."""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from repq_hw.kernels.rounding import ROUNDING_MODES
from repq_hw.kernels.softmax import _exact_round_exp2, exp2_lut, softmax, softmax_ref

I32_MIN, I32_MAX = -(1 << 31), (1 << 31) - 1


def exact_lut_entry(e: int, f: int, fb: int) -> int:
    """round_half_even(2^(e - f/2^fb)) by big-integer comparison only (independent of floats)."""
    k = 1 << fb
    big = 1 << (e * k - f)  # y^k
    lo, hi = 0, 1 << (e + 1)  # binary search floor(y): v^k <= big
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if mid**k <= big:
            lo = mid
        else:
            hi = mid
    v = lo
    if v**k == big:
        return v
    big2 = 1 << ((e + 1) * k - f)  # compare (2v+1)^k with (2y)^k
    return v + 1 if (2 * v + 1) ** k < big2 else v


@pytest.mark.parametrize("fb,e", [(0, 1), (1, 4), (2, 4), (3, 15), (5, 15), (6, 20), (6, 30), (4, 1)])
def test_exp2_lut_exact(fb, e):
    lut = exp2_lut(fb, e)
    assert lut.dtype == np.int64 and lut.shape == (1 << fb,)
    assert lut.tolist() == [exact_lut_entry(e, f, fb) for f in range(1 << fb)]


@pytest.mark.parametrize("fb,e", [(8, 15), (10, 15), (10, 20), (12, 30), (12, 15)])
def test_exp2_lut_properties(fb, e):
    lut = exp2_lut(fb, e)
    assert lut[0] == 1 << e
    assert (np.diff(lut) <= 0).all()
    assert (lut > (1 << (e - 1)) - 1).all() and (lut <= 1 << e).all()
    y = np.ldexp(np.exp2(-np.arange(1 << fb) / (1 << fb)), e)
    assert (np.abs(lut - y) <= 0.5 + 1e-6).all()


def test_exp2_lut_exact_fallback_agrees():
    for fb, e in [(8, 15), (7, 23)]:
        lut = exp2_lut(fb, e)
        for f in range(1, 1 << fb, 17):
            y = math.ldexp(2.0 ** (-f / (1 << fb)), e)
            assert _exact_round_exp2(e, f, fb, math.floor(y)) == lut[f]


def test_exp2_lut_bad_args():
    with pytest.raises(ValueError, match="frac_bits"):
        exp2_lut(13, 15)
    with pytest.raises(ValueError, match="lut_bits"):
        exp2_lut(8, 0)


# --- Numba vs reference ---------------------------------------------------------------------------
CONFIGS = [(8, 15, 16), (10, 15, 16), (6, 12, 8), (10, 22, 16), (10, 30, 31), (0, 4, 4), (3, 5, 6)]


@st.composite
def softmax_case(draw):
    r, n = draw(st.integers(1, 4)), draw(st.integers(1, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["random", "extreme", "equal", "spread"]))
    if kind == "random":
        amp = draw(st.sampled_from([1, 10, 1000, 1 << 20, I32_MAX]))
        x = rng.integers(-amp, amp, (r, n), endpoint=True)
    elif kind == "extreme":
        x = rng.choice(np.array([I32_MIN, I32_MIN + 1, -1, 0, 1, I32_MAX - 1, I32_MAX]), (r, n))
    elif kind == "equal":
        x = np.full((r, n), draw(st.integers(I32_MIN, I32_MAX)))
    else:
        x = np.cumsum(rng.integers(0, 50, (r, n)), axis=1) - 1000
    m = draw(st.integers(0, I32_MAX) | st.sampled_from([0, 1, 1 << 30, I32_MAX]))
    s = draw(st.integers(0, 62))
    fb, e, p = draw(st.sampled_from(CONFIGS))
    mode = draw(st.sampled_from(ROUNDING_MODES))
    return x.astype(np.int32), m, s, fb, e, p, mode


@settings(max_examples=150, deadline=None)
@given(softmax_case())
def test_softmax_hypothesis(case):
    x, m, s, fb, e, p, mode = case
    ref = softmax_ref(x, m, s, fb, e, p, mode)
    fast = softmax(x, m, s, fb, e, p, mode)
    assert ref.dtype == fast.dtype == np.uint32
    assert np.array_equal(ref, fast)
    assert (ref <= (1 << p)).all()


# --- error bound vs the float64 ideal -------------------------------------------------------------
def softmax_bound(x, m, s, fb, e, p, mode):
    """Per-element bound (in 2^-P LSBs) of docs/ops/softmax.md and the float64 ideal, in LSBs."""
    rho = 1.0 if mode == "floor" else 0.5
    kappa = math.ldexp(float(m), -(s + fb))  # exact: M * 2^-s / 2^F  ( = real_scale * log2(e) )
    xf = x.astype(np.float64)
    z = (xf - xf.max(axis=-1, keepdims=True)) * kappa  # log2 weights, <= 0
    w = np.exp2(z)
    ideal = w / w.sum(axis=-1, keepdims=True)
    n = x.shape[-1]
    eta = rho * 2.0**-fb
    gam = 2.0**eta * (1.0 + 2.0**-e) - 1.0
    wsum = math.ldexp(1.0, e) * w.sum(axis=-1, keepdims=True)
    s_lb = np.maximum(math.ldexp(1.0, e), wsum * (1.0 - gam) - rho * (n - 1))
    term = 2.0 * gam * ideal * (1.0 - ideal) * wsum / s_lb + rho * ((1.0 - ideal) + ideal * (n - 1)) / s_lb
    return rho + math.ldexp(1.0, p) * term + 1e-6, ideal * math.ldexp(1.0, p)


def sweep_rows(n: int, rng) -> list[np.ndarray]:
    rows = [np.zeros(n), np.full(n, I32_MAX), np.full(n, I32_MIN)]
    r = np.full(n, -(1 << 20))
    r[0] = 0
    rows.append(r)
    r = np.full(n, I32_MIN)
    r[-1] = I32_MAX
    rows.append(r)
    rows.append(np.arange(n) - n)
    rows.append(-(np.arange(n) ** 2))
    for amp in (3, 100, 10_000, 1 << 24):
        rows.append(rng.integers(-amp, amp, n, endpoint=True))
    rows.append(rng.normal(0, 3000, n).round())
    return [np.clip(v, I32_MIN, I32_MAX).astype(np.int32) for v in rows]


@pytest.mark.parametrize("fb,e,p", [(8, 15, 16), (10, 15, 16), (10, 22, 16), (6, 12, 8), (9, 20, 20)])
@pytest.mark.parametrize("mode", ["half_even", "half_up", "floor"])
def test_softmax_error_bound(fb, e, p, mode):
    rng = np.random.default_rng(fb * 100 + e)
    worst_excess = -np.inf
    for n in (1, 2, 3, 16, 197):
        for m, s in [
            (0, 0),
            (1 << 30, 30),
            (1 << 30, 26),
            (1518500250, 33),
            (I32_MAX, 0),
            (1 << 30, 40),
            (12345, 7),
        ]:
            x = np.stack(sweep_rows(n, rng))
            got = softmax(x, m, s, fb, e, p, mode).astype(np.float64)
            bound, ideal = softmax_bound(x, m, s, fb, e, p, mode)
            err = np.abs(got - ideal)
            worst_excess = max(worst_excess, float((err - bound).max()))
    assert worst_excess <= 0.0


def test_softmax_measured_error_typical():
    """Seeded random attention rows, logits ~ N(0, 3) in real units: error in 2^-16 LSBs stays small."""
    rng = np.random.default_rng(2024)
    real_scale = 3.0 / 2000.0  # one accumulator step in real units
    res = {}
    for fb, e in [(8, 15), (10, 15), (10, 22)]:
        from repq_hw.lower.constants import quantize_multiplier

        m, s = quantize_multiplier(real_scale * math.log2(math.e) * 2**fb)
        x = rng.normal(0, 2000, (64, 197)).round().astype(np.int32)
        got = softmax(x, m, s, fb, e, 16, "half_even").astype(np.float64)
        bound, ideal = softmax_bound(x, m, s, fb, e, 16, "half_even")
        err = np.abs(got - ideal)
        assert (err <= bound).all()
        res[(fb, e)] = float(err.max())
    # measured 19.6 / 15.8 / 4.5 LSB (2^-16) for this seed; guards at ~1.25x (the bound itself is checked above)
    assert res[(8, 15)] <= 25.0 and res[(10, 15)] <= 20.0 and res[(10, 22)] <= 6.0, res


def test_softmax_known_rows():
    # equal logits: each gets round(2^P / N)
    x = np.zeros((1, 3), np.int32)
    for fn in (softmax_ref, softmax):
        assert fn(x, 1 << 30, 30, 8, 15, 16, "half_even").tolist() == [[21845, 21845, 21845]]
        assert fn(np.zeros((1, 1), np.int32), 5, 3, 8, 15, 16, "floor").tolist() == [[65536]]
        # one element 2^-30 below in log2 units -> e = 0 except the max: exact one-hot
        assert fn(np.array([[0, -30]], np.int32), 1, 0, 0, 15, 16, "half_even").tolist() == [[65536, 0]]


@pytest.mark.parametrize("fn", [softmax_ref, softmax])
def test_softmax_bad_attrs(fn):
    x = np.zeros((2, 3), np.int32)
    with pytest.raises(ValueError, match="shift"):
        fn(x, 1, 63, 8, 15, 16, "floor")
    with pytest.raises(ValueError, match="multiplier"):
        fn(x, 1 << 31, 3, 8, 15, 16, "floor")
    with pytest.raises(ValueError, match="frac_bits"):
        fn(x, 1, 3, 13, 15, 16, "floor")
    with pytest.raises(ValueError, match="lut_bits"):
        fn(x, 1, 3, 8, 31, 16, "floor")
    with pytest.raises(ValueError, match="out_bits"):
        fn(x, 1, 3, 8, 15, 32, "floor")
    with pytest.raises(ValueError, match="nearest"):
        fn(x, 1, 3, 8, 15, 16, "nearest")
    with pytest.raises(OverflowError, match="int32"):
        fn(np.array([[1 << 31]], np.int64), 1, 3, 8, 15, 16, "floor")


def test_softmax_threads():
    rng = np.random.default_rng(4)
    x = rng.integers(-30000, 30000, (300, 197)).astype(np.int32)
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        a = softmax(x, 1 << 30, 36, 10, 15, 16, "half_even")
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        b = softmax(x, 1 << 30, 36, 10, 15, 16, "half_even")
    finally:
        numba.set_num_threads(old)
    assert np.array_equal(a, b) and np.array_equal(a, softmax_ref(x, 1 << 30, 36, 10, 15, 16, "half_even"))
