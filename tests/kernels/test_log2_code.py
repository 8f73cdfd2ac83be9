"""log2 code by thresholds: exact vs the float64 log-sqrt2 formula, Numba vs reference, errors."""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from repq_hw.kernels.log2_code import log2_code, log2_code_ref, log2_thresholds, zero_state


def float_code(p: np.ndarray, delta: float, bits: int, out_bits: int, n_levels: int):
    """RepQ-ViT log-sqrt2 code from float64: round(-2 log2(p/delta)), clamped at 0, >= L -> Z.

    Returns (codes, near_boundary_mask)."""
    z = (1 << bits) - 1
    pf = p.astype(np.float64) / 2.0**out_bits
    with np.errstate(divide="ignore"):
        v = -2.0 * np.log2(pf / delta)  # +inf at p = 0 (handled below)
    v = np.where(p == 0, 1e300, v)
    raw = np.floor(v + 0.5)  # ties (measure zero) -> larger code, as p <= T
    code = np.where(raw < 0, 0, raw)
    code = np.where((p == 0) | (code >= n_levels), z, code).astype(np.int64)
    frac = v - np.floor(v)
    near = (np.abs(frac - 0.5) < 1e-9) & (p > 0)
    return code, near


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("delta", [1.0, 0.5, 0.3183, 0.9, 2.0**-3 * 1.37])
@pytest.mark.parametrize("out_bits", [8, 16])
def test_log2_code_vs_float_formula(bits, delta, out_bits):
    t = log2_thresholds(delta, bits, out_bits)
    p = np.arange(0, (1 << out_bits) + 1, dtype=np.uint32)
    got = log2_code(p, t, bits)
    assert np.array_equal(got, log2_code_ref(p, t, bits))
    exp, near = float_code(p, delta, bits, out_bits, len(t))
    ok = ~near
    assert near.sum() <= 2
    assert np.array_equal(got[ok].astype(np.int64), exp[ok])


def test_log2_code_max_codes_and_zero_state():
    t = log2_thresholds(1.0, 4, 16, max_codes=5)
    assert len(t) == 5
    p = np.arange(0, 1 << 16 + 1, 7, dtype=np.uint32)
    got = log2_code(p, t, 4)
    exp, near = float_code(p, 1.0, 4, 16, 5)
    assert np.array_equal(got[~near].astype(np.int64), exp[~near])
    assert set(np.unique(got).tolist()) <= {0, 1, 2, 3, 4, 15}
    assert zero_state(4) == 15 and zero_state(8) == 255
    # the smallest reference level (raw code 2^b - 1) is also the zero state
    t3 = log2_thresholds(1.0, 3, 16)
    assert len(t3) == 7
    p_small = np.array([int(t3[6]), int(t3[6]) + 1, 0], dtype=np.uint32)
    assert log2_code_ref(p_small, t3, 3).tolist() == [7, 6, 7]


def test_thresholds_definition():
    t = log2_thresholds(0.75, 8, 16)
    assert len(t) == 255 and t.dtype == np.int64
    assert (np.diff(t) <= 0).all()
    for k in (0, 1, 10, 254):
        assert t[k] == math.floor(0.75 * 2 ** (-(2 * k + 1) / 4) * 2**16)
    with pytest.raises(ValueError, match="delta"):
        log2_thresholds(0.0, 4, 16)
    with pytest.raises(ValueError, match="bits"):
        log2_thresholds(1.0, 9, 16)
    with pytest.raises(ValueError, match="max_codes"):
        log2_thresholds(1.0, 4, 16, max_codes=16)
    with pytest.raises(ValueError, match="2\\^62"):
        log2_thresholds(1e30, 4, 31)


@settings(max_examples=150, deadline=None)
@given(
    st.integers(2, 8),
    st.lists(st.integers(0, 1 << 31), min_size=0, max_size=255),
    st.lists(st.integers(0, (1 << 31) + 5), min_size=1, max_size=50),
)
def test_log2_code_hypothesis(bits, tvals, pvals):
    z = (1 << bits) - 1
    t = np.array(sorted(tvals, reverse=True)[:z], dtype=np.int64)
    p = np.array(pvals, dtype=np.int64)
    ref = log2_code_ref(p, t, bits)
    assert np.array_equal(ref, log2_code(p, t, bits))
    for pv, c in zip(pvals, ref.tolist()):
        cnt = sum(1 for v in t.tolist() if pv <= v)
        assert c == (cnt if cnt < len(t) else z)


@pytest.mark.parametrize("fn", [log2_code_ref, log2_code])
def test_log2_code_errors(fn):
    p = np.array([1, 2, 3], np.uint32)
    with pytest.raises(ValueError, match="increase"):
        fn(p, np.array([10, 5, 7]), 4)
    with pytest.raises(ValueError, match="thresholds"):
        fn(p, np.arange(20)[::-1], 4)
    with pytest.raises(ValueError, match="bits"):
        fn(p, np.array([5]), 1)
    assert fn(np.zeros((2, 3), np.uint32), np.array([], np.int64), 2).tolist() == [[3] * 3] * 2


def test_log2_code_threads():
    p = np.random.default_rng(2).integers(0, 1 << 16, (64, 197)).astype(np.uint32)
    t = log2_thresholds(0.9, 4, 16)
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        a = log2_code(p, t, 4)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        b = log2_code(p, t, 4)
    finally:
        numba.set_num_threads(old)
    assert np.array_equal(a, b) and np.array_equal(a, log2_code_ref(p, t, 4))
