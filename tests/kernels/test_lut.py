"""LUT lookup and the GELU table: Numba vs reference, range errors, +-0.5 LSB vs float64 GELU."""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from repq_hw.kernels.lut import lut_lookup, lut_lookup_ref
from repq_hw.lower.constants import gelu_erf, make_gelu_lut


@settings(max_examples=150, deadline=None)
@given(
    st.integers(-(1 << 40), 1 << 40),
    st.integers(1, 300),
    st.integers(0, 2**32 - 1),
    st.sampled_from([np.uint8, np.int32, np.int64]),
)
def test_lut_hypothesis(in_min, size, seed, dtype):
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype)
    table = rng.integers(max(info.min, -(1 << 40)), min(info.max, 1 << 40), size, endpoint=True).astype(dtype)
    x = rng.integers(in_min, in_min + size, (3, 7))
    x[0, 0], x[0, 1] = in_min, in_min + size - 1
    ref = lut_lookup_ref(x, table, in_min)
    fast = lut_lookup(x, table, in_min)
    assert ref.dtype == fast.dtype == table.dtype
    assert np.array_equal(ref, fast)
    assert ref.tolist() == [[int(table[v - in_min]) for v in row] for row in x.tolist()]


@pytest.mark.parametrize("fn", [lut_lookup_ref, lut_lookup])
def test_lut_out_of_range(fn):
    table = np.arange(10, dtype=np.uint8)
    with pytest.raises(ValueError, match="input -6 outside"):
        fn(np.array([-5, -6]), table, -5)
    with pytest.raises(ValueError, match="input 5 outside"):
        fn(np.array([4, 5]), table, -5)
    with pytest.raises(ValueError, match="outside"):
        fn(np.array([np.iinfo(np.int64).max]), table, -(1 << 62))
    with pytest.raises(ValueError, match="table"):
        fn(np.array([0]), np.array([], np.uint8), 0)
    assert fn(np.array([-5, 4]), table, -5).tolist() == [0, 9]


@pytest.mark.parametrize(
    "in_scale,in_min,in_max,out_scale,out_zp,out_bits",
    [
        (0.01, -600, 600, 0.03, 10, 8),
        (0.05, -128, 127, 0.02, 0, 8),
        (0.1, -40, 40, 0.25, 3, 4),
        (0.003, -2000, 3000, 0.01, -2, 10),
    ],
)
def test_gelu_lut_half_lsb(in_scale, in_min, in_max, out_scale, out_zp, out_bits):
    t = make_gelu_lut(in_scale, in_min, in_max, out_scale, out_zp, out_bits)
    assert len(t) == in_max - in_min + 1
    assert t.dtype == (np.uint8 if out_bits <= 8 else np.int32)
    qmax = (1 << out_bits) - 1
    x = np.arange(in_min, in_max + 1)
    ideal = (
        np.array([0.5 * v * in_scale * (1 + math.erf(v * in_scale / math.sqrt(2))) for v in x]) / out_scale
        + out_zp
    )
    tv = t.astype(np.float64)
    inner = (ideal >= -0.5) & (ideal <= qmax + 0.5)
    assert (np.abs(tv[inner] - ideal[inner]) <= 0.5 + 1e-9).all()
    assert (tv[ideal < -0.5] == 0).all() and (tv[ideal > qmax + 0.5] == qmax).all()
    got = lut_lookup(x, t, in_min)
    assert np.array_equal(got, t) and np.array_equal(lut_lookup_ref(x, t, in_min), t)


def test_gelu_values_and_errors():
    assert gelu_erf(0.0) == 0.0
    assert abs(gelu_erf(1.0) - 0.8413447460685429) < 1e-15
    t = make_gelu_lut(1.0, -2, 2, 1.0, 1, 2)  # gelu(-2,-1,0,1,2) = -0.0455,-0.1587,0,0.8413,1.9545
    assert t.tolist() == [1, 1, 1, 2, 3]
    with pytest.raises(ValueError, match="in_scale"):
        make_gelu_lut(0.0, 0, 1, 1.0, 0, 8)
    with pytest.raises(ValueError, match="range"):
        make_gelu_lut(1.0, 3, 2, 1.0, 0, 8)
    with pytest.raises(ValueError, match="out_bits"):
        make_gelu_lut(1.0, 0, 2, 1.0, 0, 0)


def test_lut_threads():
    rng = np.random.default_rng(12)
    table = make_gelu_lut(0.01, -1000, 1000, 0.02, 20, 8)
    x = rng.integers(-1000, 1001, (197, 3072))
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        a = lut_lookup(x, table, -1000)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        b = lut_lookup(x, table, -1000)
    finally:
        numba.set_num_threads(old)
    assert np.array_equal(a, b) and np.array_equal(a, lut_lookup_ref(x, table, -1000))
