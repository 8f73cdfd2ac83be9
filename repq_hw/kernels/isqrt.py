"""Exact integer square root ``floor(sqrt(n))`` for int64 ``n`` in ``[0, 2^62)``.

Two independent implementations:

* :func:`isqrt_ref` -- Python's ``math.isqrt`` element-wise (THE DEFINITION);
* :func:`isqrt_scalar` / :func:`isqrt` -- the restoring digit-by-digit (bit-pair) method, 32 iterations,
  one result bit per iteration, exactly what the RTL builds (see ``docs/ops/isqrt.md``).

Widths (n < 2^62): root < 2^31, remainder <= 2*root < 2^32, trial value 4*root+1 < 2^33, so every
register fits in 35 bits.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

__all__ = ["ISQRT_MAX_EXCL", "isqrt", "isqrt_ref", "isqrt_scalar"]

ISQRT_MAX_EXCL = 1 << 62
"""Inputs must satisfy ``0 <= n < ISQRT_MAX_EXCL``."""


def _check(n: object, op: str = "isqrt") -> np.ndarray:
    a = np.asarray(n)
    if a.dtype.kind not in "iu":
        raise ValueError(f"{op}: input must be integer, got dtype {a.dtype}")
    if a.size:
        lo, hi = int(a.min()), int(a.max())
        if lo < 0:
            raise ValueError(f"{op}: input {lo} < 0")
        if hi >= ISQRT_MAX_EXCL:
            raise ValueError(f"{op}: input {hi} >= 2^62")
    return a.astype(np.int64)


def isqrt_ref(n: object) -> np.ndarray:
    """``floor(sqrt(n))`` element-wise via ``math.isqrt`` (int64 in, int64 out).

    Args:
        n: integer scalar or array, each element in ``[0, 2^62)``.

    Returns:
        int64 array of the same shape (``r*r <= n < (r+1)^2``).

    Raises:
        ValueError: an element outside ``[0, 2^62)`` or a non-integer dtype.
    """
    a = _check(n)
    flat = [math.isqrt(int(v)) for v in a.reshape(-1)]
    return np.array(flat, dtype=np.int64).reshape(a.shape)


@njit(cache=True)
def isqrt_scalar(n: int) -> int:
    """Restoring bit-pair square root of one int64 ``n`` in ``[0, 2^62)`` (range NOT checked here).

    Iteration i = 31..0 brings down the bit pair ``n[2i+1:2i]``:
    ``rem = 4*rem + pair``; ``root = 2*root``; if ``rem >= 2*root + 1`` (= 4*old_root + 1) then
    ``rem -= 2*root + 1; root += 1``.  Invariant: ``rem = (n >> 2i) - root^2 >= 0``.

    Args:
        n: radicand.
    """
    x = np.int64(n)
    rem = np.int64(0)
    root = np.int64(0)
    for i in range(31, -1, -1):
        rem = (rem << 2) | ((x >> (2 * i)) & 3)
        root = root << 1
        trial = (root << 1) | 1
        if rem >= trial:
            rem -= trial
            root |= 1
    return root


@njit(cache=True, parallel=True)
def _isqrt_flat(a: np.ndarray) -> np.ndarray:
    out = np.empty(a.shape[0], dtype=np.int64)
    for i in prange(a.shape[0]):
        out[i] = isqrt_scalar(a[i])
    return out


def isqrt(n: object) -> np.ndarray:
    """Numba ``floor(sqrt(n))`` element-wise (bit-identical to :func:`isqrt_ref`).

    Args:
        n: integer scalar or array, each element in ``[0, 2^62)``.

    Returns:
        int64 array of the same shape.

    Raises:
        ValueError: an element outside ``[0, 2^62)``.
    """
    a = _check(n)
    return _isqrt_flat(np.ascontiguousarray(a).reshape(-1)).reshape(a.shape)
