"""attn_v_shift: Numba vs reference, error bound vs the float64 ideal, truncation/headroom errors."""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from repq_hw.kernels.attn_v_shift import attn_v_shift, attn_v_shift_ref, sqrt2_multiplier
from repq_hw.kernels.rounding import ROUNDING_MODES


@st.composite
def case(draw):
    bits = draw(st.integers(2, 8))
    z = (1 << bits) - 1
    f = draw(st.integers(0, 30))
    cmax = min(z - 1, 2 * f)  # F >= ceil(c/2)
    b, m, n, d = (
        draw(st.integers(1, 2)),
        draw(st.integers(1, 4)),
        draw(st.integers(1, 30)),
        draw(st.integers(1, 9)),
    )
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    pool = {0, 1, 2, cmax, max(cmax - 1, 0), z} | set(rng.integers(0, cmax + 1, 6).tolist())
    pool = np.array(sorted(c for c in pool if c <= cmax or c == z), np.uint8)
    c = rng.choice(pool, (b, m, n))
    v = (
        rng.choice(np.array([0, 1, 127, 128, 254, 255], np.uint8), (b, n, d))
        if draw(st.booleans())
        else (rng.integers(0, 256, (b, n, d), dtype=np.uint8))
    )
    v_zp = draw(st.integers(-300, 300) | st.sampled_from([0, 128, 255]))
    q = draw(st.integers(1, 30))
    mode = draw(st.sampled_from(ROUNDING_MODES))
    return c, v, v_zp, bits, f, q, mode


def ideal_and_odd(c, v, v_zp, bits, f):
    z = (1 << bits) - 1
    ci = c.astype(np.int64)
    live = ci != z
    wgt = np.where(live, np.exp2(f - ci / 2.0), 0.0)
    dv = v.astype(np.float64) - v_zp
    ideal = wgt @ dv
    odd = live & (ci % 2 == 1)
    w_odd = np.where(odd, np.exp2(np.where(odd, f - ci // 2 - 1, 0).astype(np.float64)), 0.0)
    acc_odd = w_odd @ dv  # exact in float64 for these sizes
    return ideal, acc_odd


@settings(max_examples=150, deadline=None)
@given(case())
def test_attn_v_hypothesis_and_bound(cs):
    c, v, v_zp, bits, f, q, mode = cs
    r = sqrt2_multiplier(q)
    if c.shape[2] * max(abs(v_zp), abs(255 - v_zp)) * (1 << f) * r >= 1 << 63:
        for fn in (attn_v_shift_ref, attn_v_shift):
            with pytest.raises(OverflowError, match="headroom"):
                fn(c, v, v_zp, bits, f, q, mode)
        return
    ref = attn_v_shift_ref(c, v, v_zp, bits, f, q, mode)
    fast = attn_v_shift(c, v, v_zp, bits, f, q, mode)
    assert ref.dtype == fast.dtype == np.int64
    assert np.array_equal(ref, fast)
    ideal, acc_odd = ideal_and_odd(c, v, v_zp, bits, f)
    rho = 1.0 if mode == "floor" else 0.5
    bound = rho + np.abs(acc_odd) * abs(r - math.sqrt(2) * 2.0**q) / 2.0**q
    err = np.abs(ref.astype(np.float64) - ideal)
    # float64 slack: the ideal sums terms of magnitude up to |wgt| @ |dv|, each with ~1 ulp error
    slack = 1e-12 * (
        1.0
        + (
            np.abs(np.where(c.astype(np.int64) != (1 << bits) - 1, np.exp2(f - c / 2.0), 0.0))
            @ np.abs(v.astype(np.float64) - v_zp)
        )
    )
    assert (err <= bound + slack).all()


def test_sqrt2_multiplier():
    assert sqrt2_multiplier(15) == 46341  # sqrt(2)*32768 = 46340.95
    assert sqrt2_multiplier(1) == 3  # 2.83
    assert sqrt2_multiplier(2) == 6  # 5.66
    for q in range(1, 31):
        assert abs(sqrt2_multiplier(q) - math.sqrt(2) * 2**q) <= 0.5
    with pytest.raises(ValueError, match="sqrt2_frac_bits"):
        sqrt2_multiplier(0)


def test_attn_v_typical_error():
    rng = np.random.default_rng(9)
    bits, f, q = 4, 7, 15
    c = rng.integers(0, 16, (2, 197, 197)).astype(np.uint8)
    v = rng.integers(0, 256, (2, 197, 64), dtype=np.uint8)
    got = attn_v_shift(c, v, 128, bits, f, q, "half_even")
    assert np.array_equal(got, attn_v_shift_ref(c, v, 128, bits, f, q, "half_even"))
    ideal, acc_odd = ideal_and_odd(c, v, 128, bits, f)
    err = np.abs(got - ideal)
    assert err.max() <= 0.5 + np.abs(acc_odd).max() * 0.0499 / 2**15 + 1e-9


@pytest.mark.parametrize("fn", [attn_v_shift_ref, attn_v_shift])
def test_attn_v_errors(fn):
    v = np.zeros((1, 3, 2), np.uint8)
    c = np.array([[[0, 5, 15]]], np.uint8)  # code 5 = 2*2+1 needs F >= 3; Z = 15 ignored
    assert fn(c, v, 0, 4, 3, 15, "floor").shape == (1, 1, 2)
    with pytest.raises(ValueError, match="truncated"):
        fn(c, v, 0, 4, 2, 15, "floor")
    c2 = np.array([[[0, 6, 15]]], np.uint8)  # even 6 = 2*3 needs F >= 3
    with pytest.raises(ValueError, match="truncated"):
        fn(c2, v, 0, 4, 2, 15, "floor")
    with pytest.raises(ValueError, match="zero state"):
        fn(np.array([[[16, 0, 0]]], np.uint8), v, 0, 4, 8, 15, "floor")
    with pytest.raises(OverflowError, match="headroom"):
        fn(c, v, 0, 4, 50, 15, "floor")
    with pytest.raises(ValueError, match="round_to_odd"):
        fn(c, v, 0, 4, 3, 15, "round_to_odd")
    with pytest.raises(ValueError, match="uint8"):
        fn(c.astype(np.int32), v, 0, 4, 3, 15, "floor")


def test_attn_v_threads():
    rng = np.random.default_rng(10)
    c = rng.integers(0, 16, (3, 97, 97)).astype(np.uint8)
    v = rng.integers(0, 256, (3, 97, 32), dtype=np.uint8)
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        a = attn_v_shift(c, v, 120, 4, 8, 15, "half_up")
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        b = attn_v_shift(c, v, 120, 4, 8, 15, "half_up")
    finally:
        numba.set_num_threads(old)
    assert np.array_equal(a, b) and np.array_equal(a, attn_v_shift_ref(c, v, 120, 4, 8, 15, "half_up"))
