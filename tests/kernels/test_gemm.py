"""gemm_zp / bmm_zp: Numba (zero-point expansion) vs reference (direct), overflow behaviour, threads."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from repq_hw.kernels.gemm import bmm_zp, bmm_zp_ref, gemm_zp, gemm_zp_ref

I32_MIN, I32_MAX = -(1 << 31), (1 << 31) - 1


def both_threads(fn, *args):
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        a = fn(*args)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        b = fn(*args)
    finally:
        numba.set_num_threads(old)
    return a, b


def literal_gemm(a, a_zp, w, w_zp, bias):
    m, k = a.shape
    n = w.shape[0]
    return [
        [
            sum((int(a[i, t]) - a_zp) * (int(w[j, t]) - int(w_zp[j])) for t in range(k)) + int(bias[j])
            for j in range(n)
        ]
        for i in range(m)
    ]


code_arrays = st.integers(0, 2**32 - 1)


@st.composite
def gemm_case(draw):
    m, k, n = draw(st.integers(1, 6)), draw(st.integers(1, 40)), draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(code_arrays))
    kind = draw(st.sampled_from(["random", "zeros", "max", "mixed"]))
    if kind == "random":
        a = rng.integers(0, 256, (m, k), dtype=np.uint8)
        w = rng.integers(0, 256, (n, k), dtype=np.uint8)
    elif kind == "zeros":
        a, w = np.zeros((m, k), np.uint8), np.zeros((n, k), np.uint8)
    elif kind == "max":
        a, w = np.full((m, k), 255, np.uint8), np.full((n, k), 255, np.uint8)
    else:
        a = rng.choice(np.array([0, 1, 254, 255], np.uint8), (m, k))
        w = rng.choice(np.array([0, 1, 254, 255], np.uint8), (n, k))
    a_zp = draw(st.integers(-300, 300) | st.sampled_from([0, 128, 255]))
    w_zp = np.array(draw(st.lists(st.integers(-300, 300), min_size=n, max_size=n)), dtype=np.int32)
    bias = np.array(draw(st.lists(st.integers(-(1 << 24), 1 << 24), min_size=n, max_size=n)), dtype=np.int32)
    if draw(st.booleans()):
        bias = None
    return a, a_zp, w, w_zp, bias


@settings(max_examples=120, deadline=None)
@given(gemm_case())
def test_gemm_hypothesis(case):
    a, a_zp, w, w_zp, bias = case
    ref = gemm_zp_ref(a, a_zp, w, w_zp, bias)
    fast = gemm_zp(a, a_zp, w, w_zp, bias)
    assert ref.dtype == fast.dtype == np.int32
    assert np.array_equal(ref, fast)
    b = np.zeros(w.shape[0], np.int64) if bias is None else bias
    assert ref.tolist() == literal_gemm(a, a_zp, w, w_zp, b)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 3),
    st.integers(1, 7),
    st.integers(1, 7),
    st.integers(1, 70),
    st.integers(-200, 300),
    st.integers(-200, 300),
    st.integers(0, 2**32 - 1),
)
def test_bmm_hypothesis(b, m, n, k, azp, bzp, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (b, m, k), dtype=np.uint8)
    bb = rng.integers(0, 256, (b, n, k), dtype=np.uint8)
    ref = bmm_zp_ref(a, azp, bb, bzp)
    assert np.array_equal(ref, bmm_zp(a, azp, bb, bzp))
    exp = np.einsum("bmk,bnk->bmn", a.astype(np.int64) - azp, bb.astype(np.int64) - bzp)
    assert np.array_equal(ref, exp)


def test_gemm_large_k_chunks():
    # K > 32768: the int32 partial dot is split into chunks; 255*255*40000 > 2^31 would overflow one chunk
    k = 40000
    a = np.full((2, k), 255, np.uint8)
    w = np.full((3, k), 255, np.uint8)
    w_zp = np.array([255, 254, 0], np.int32)
    ref = gemm_zp_ref(a, 255, w, w_zp, None)
    assert np.array_equal(ref, gemm_zp(a, 255, w, w_zp, None))
    assert ref.tolist() == [[0, 0, 0], [0, 0, 0]]
    a[1, :] = 0
    w_zp = np.array([255, 254, 200], np.int32)
    r = gemm_zp(a, 0, w, w_zp, None)
    assert np.array_equal(r, gemm_zp_ref(a, 0, w, w_zp, None))
    assert r[0].tolist() == [0, 255 * k, 255 * 55 * k]


@pytest.mark.parametrize("fn", [gemm_zp_ref, gemm_zp])
def test_gemm_int32_overflow_raises(fn):
    k = 33100
    a = np.full((1, k), 255, np.uint8)
    w = np.full((2, k), 255, np.uint8)
    with pytest.raises(OverflowError, match="gemm_zp.*does not fit int32"):
        fn(a, 0, w, np.zeros(2, np.int32), None)  # 255*255*33100 > 2^31
    # exactly at the limit: bias brings it to INT32_MAX
    k = 1000
    a = np.full((1, k), 255, np.uint8)
    w = np.full((1, k), 255, np.uint8)
    top = 255 * 255 * k
    assert fn(a, 0, w, np.zeros(1, np.int32), np.array([I32_MAX - top], np.int32)).tolist() == [[I32_MAX]]
    assert fn(a, 0, w, np.array([510], np.int32), np.array([I32_MIN + top], np.int32)).tolist() == [[I32_MIN]]
    with pytest.raises(OverflowError, match="-2147483649"):
        fn(a, 0, w, np.array([510], np.int32), np.array([I32_MIN + top - 1], np.int32))


@pytest.mark.parametrize("fn", [bmm_zp_ref, bmm_zp])
def test_bmm_overflow_raises(fn):
    a = np.zeros((1, 1, 40000), np.uint8)
    b = np.full((1, 1, 40000), 255, np.uint8)
    with pytest.raises(OverflowError, match="bmm_zp"):
        fn(a, 255, b, 0)  # -255*255*40000


@pytest.mark.parametrize("fn", [gemm_zp_ref, gemm_zp])
def test_gemm_headroom_and_bad_args(fn):
    a = np.zeros((1, 4), np.uint8)
    w = np.zeros((2, 4), np.uint8)
    with pytest.raises(OverflowError, match="headroom"):
        fn(a, I32_MAX, w, np.array([I32_MAX, 0], np.int32), None)  # 4*(2^31+254)^2 > 2^63
    with pytest.raises(ValueError, match="uint8"):
        fn(a.astype(np.int32), 0, w, np.zeros(2, np.int32), None)
    with pytest.raises(ValueError, match="K mismatch"):
        fn(np.zeros((1, 3), np.uint8), 0, w, np.zeros(2, np.int32), None)
    with pytest.raises(ValueError, match="a_zp"):
        fn(a, 1 << 31, w, np.zeros(2, np.int32), None)
    with pytest.raises(ValueError, match="w_zp"):
        fn(a, 0, w, np.zeros(3, np.int32), None)


def test_gemm_bmm_threads():
    rng = np.random.default_rng(11)
    a = rng.integers(0, 256, (65, 300), dtype=np.uint8)
    w = rng.integers(0, 256, (70, 300), dtype=np.uint8)
    wz = rng.integers(0, 256, 70).astype(np.int32)
    bias = rng.integers(-1000, 1000, 70).astype(np.int32)
    x, y = both_threads(gemm_zp, a, 113, w, wz, bias)
    assert np.array_equal(x, y) and np.array_equal(x, gemm_zp_ref(a, 113, w, wz, bias))
    q = rng.integers(0, 256, (3, 33, 64), dtype=np.uint8)
    kk = rng.integers(0, 256, (3, 35, 64), dtype=np.uint8)
    x, y = both_threads(bmm_zp, q, 120, kk, 131)
    assert np.array_equal(x, y) and np.array_equal(x, bmm_zp_ref(q, 120, kk, 131))
