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


# --- byte tables, 64 codes per vpermi2b (lut.byte_table / lookup_bytes_row; the fused fc1 -> GELU chain) ------


def _impls():
    from repq_hw.kernels import simd

    return [simd.GENERIC] + ([simd.NATIVE] if simd.has_vbmi() else [])


@pytest.mark.parametrize("impl", _impls())
def test_permb2_and_select_eq_u8_match_their_definition(impl):
    from numba import njit

    from repq_hw.kernels.simd import load16, permb2, select_eq_u8, store16

    @njit
    def run(tag, lo, hi, x, key, k, o1, o2):
        store16(o1, 0, permb2(tag, load16(lo, 0), load16(hi, 0), load16(x, 0)))
        store16(o2, 0, select_eq_u8(load16(key, 0), k, load16(lo, 0), load16(hi, 0)))

    rng = np.random.default_rng(21)
    for k in (0, 3, 255):
        lo, hi, x = (rng.integers(0, 256, 64, dtype=np.uint8) for _ in range(3))
        x[:4] = [0, 63, 64, 255]  # bit 7 is ignored, bit 6 picks the table
        key = rng.integers(0, 4, 64, dtype=np.uint8)
        key[:2] = k & 255
        o1, o2 = np.zeros(64, np.uint8), np.zeros(64, np.uint8)
        run(impl, lo, hi, x, key, k, o1, o2)
        both = np.concatenate([lo, hi])
        assert np.array_equal(o1, both[x & 127])
        assert np.array_equal(o2, np.where(key == (k & 255), lo, hi))


@pytest.mark.parametrize("impl", _impls())
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_lookup_bytes_row_equals_the_reference(impl, dtype):
    from numba import njit

    from repq_hw.kernels.lut import byte_table, lookup_bytes_row

    @njit
    def run(tag, q, base, tbl, nseg, out, rows):
        n = q.shape[0] // rows
        ib, sb = np.empty(n, np.uint8), np.empty(n, np.uint8)
        for r in range(rows):
            lookup_bytes_row(tag, q[r * n:], n, base, tbl, nseg, ib, sb, out, r * n)

    rng = np.random.default_rng(22)
    info = np.iinfo(dtype)
    for size in (1, 64, 127, 128, 129, 1024, 2048):  # 1 .. 16 segments, partial last segment
        for n in (1, 63, 64, 65, 200):  # whole and partial 64-code groups
            in_min = int(rng.integers(-600, 600))
            table = rng.integers(info.min, info.max, size, endpoint=True).astype(np.int64)
            bt = byte_table(table, dtype)
            assert bt is not None and bt[1] == (size + 127) // 128 and bt[0].dtype == dtype
            q = rng.integers(in_min, in_min + size, 3 * n).astype(np.int32)
            q[:2] = [in_min, in_min + size - 1]
            out = np.full(3 * n, 7, dtype)
            run(impl, q, -in_min, bt[0], bt[1], out, 3)
            assert np.array_equal(out, lut_lookup_ref(q, table, in_min).astype(dtype)), (size, n)


def test_byte_table_refuses_what_it_cannot_hold():
    from repq_hw.kernels.lut import byte_table

    t = np.arange(300)
    assert byte_table(t, np.uint8) is None  # 299 does not fit one byte
    assert byte_table(t % 256, np.int16) is None  # not a byte output
    assert byte_table(np.zeros(2049, np.int64), np.uint8) is None  # 17 segments
    assert byte_table(np.zeros(0, np.int64), np.uint8) is None
    assert byte_table(np.array([-1, 5]), np.uint8) is None
    got = byte_table(np.array([-128, 127]), np.int8)
    assert got is not None and got[1] == 1 and got[0][:2].tolist() == [-128, 127] and not got[0][2:].any()
