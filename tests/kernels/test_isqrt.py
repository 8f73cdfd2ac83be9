"""isqrt: the bit-pair (Numba) and math.isqrt (reference) implementations agree and are exact."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from repq_hw.kernels.isqrt import isqrt, isqrt_ref, isqrt_scalar

LIM = 1 << 62


def check_exact(n: np.ndarray, r: np.ndarray) -> None:
    for nv, rv in zip(n.tolist(), r.tolist()):
        assert rv * rv <= nv < (rv + 1) * (rv + 1), (nv, rv)


def edge_inputs() -> np.ndarray:
    vals = {0, 1, 2, 3, 4, LIM - 1, LIM - 2}
    for i in range(62):
        for d in (-2, -1, 0, 1, 2):
            v = (1 << i) + d
            if 0 <= v < LIM:
                vals.add(v)
    for r in [1, 2, 3, 255, 256, 65535, 65536, (1 << 31) - 1, 3037000499, (1 << 30) + 12345]:
        for d in (-1, 0, 1):
            for v in (r * r + d, (r + 1) * (r + 1) - 1 + d):
                if 0 <= v < LIM:
                    vals.add(v)
    return np.array(sorted(vals), dtype=np.int64)


def test_isqrt_edges():
    n = edge_inputs()
    r = isqrt_ref(n)
    assert np.array_equal(r, isqrt(n))
    check_exact(n, r)
    assert int(isqrt_ref(LIM - 1)) == (1 << 31) - 1
    assert isqrt_scalar(LIM - 1) == (1 << 31) - 1


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, LIM - 1), min_size=1, max_size=30))
def test_isqrt_hypothesis(vals):
    n = np.array(vals, dtype=np.int64)
    r = isqrt(n)
    assert np.array_equal(r, isqrt_ref(n))
    check_exact(n, r)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, (1 << 31) - 1))
def test_isqrt_around_squares(root):
    n = np.array(
        [v for v in (root * root - 1, root * root, root * root + 2 * root) if 0 <= v < LIM], np.int64
    )
    r = isqrt(n)
    assert np.array_equal(r, isqrt_ref(n))
    check_exact(n, r)


@pytest.mark.parametrize("fn", [isqrt_ref, isqrt])
def test_isqrt_domain(fn):
    with pytest.raises(ValueError, match="< 0"):
        fn(np.array([4, -1]))
    with pytest.raises(ValueError, match="2\\^62"):
        fn(np.array([LIM], dtype=np.int64))
    with pytest.raises(ValueError):
        fn(np.array([4.0]))
    assert fn(np.zeros((2, 0), np.int64)).shape == (2, 0)


def test_isqrt_threads():
    n = np.random.default_rng(3).integers(0, LIM, 20000)
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        a = isqrt(n)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        b = isqrt(n)
    finally:
        numba.set_num_threads(old)
    assert np.array_equal(a, b) and np.array_equal(a, isqrt_ref(n))
