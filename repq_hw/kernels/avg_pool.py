"""Integer global average pool over tokens (Swin's head), spec: ``docs/ops/avg_pool.md``.

For every channel c of ``x[..., T, C]`` (signed or unsigned integers of at most 32 bits)::

    S_c   = sum_t x[t, c]                 exact in int64 (|S_c| <= T * 2^31 < 2^63 for T < 2^32)
    out_c = round_div(S_c, T, rounding)   same grid as the input (the mean), shape [..., 1, C]

``round_div`` is the rounding division of ``docs/ops/requantize.md`` (half_up, half_even, half_away,
floor): ties of S_c / T are decided exactly on integers, never in float.  The result lies between the
smallest and the largest input of its channel, so it always fits the input's type.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .rounding import mode_id, round_div, round_div_ref

__all__ = ["MAX_TOKENS", "avg_pool", "avg_pool_ref"]

MAX_TOKENS = 1 << 31  # T * 2^31 < 2^63: the int64 sum of int32 inputs cannot overflow


def _check(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind not in "iu" or x.dtype.itemsize > 4 and x.dtype != np.int64:
        raise TypeError(f"avg_pool: expected an integer array of <= 32-bit values, got {x.dtype}")
    if x.ndim < 2:
        raise ValueError(f"avg_pool: expected [..., T, C], got shape {x.shape}")
    t = x.shape[-2]
    if not 1 <= t < MAX_TOKENS:
        raise ValueError(f"avg_pool: the number of tokens T = {t} must be in [1, 2^31)")
    if x.size and (int(x.min()) < -(1 << 31) or int(x.max()) > (1 << 31) - 1):
        raise ValueError("avg_pool: input values must fit int32")
    return x


def avg_pool_ref(x: np.ndarray, rounding: str) -> np.ndarray:
    """The definition: int64 column sums, then ``round_div_ref(sum, T, rounding)``; returns int64 [..., 1, C]."""
    x = _check(x)
    s = x.astype(np.int64).sum(axis=-2, keepdims=True)
    return round_div_ref(s, np.int64(x.shape[-2]), rounding)


@njit(cache=True, parallel=True)
def _avg_pool_rows(x, mode):
    r, t, c = x.shape
    out = np.empty((r, 1, c), dtype=np.int64)
    for i in prange(r):
        for j in range(c):
            s = np.int64(0)
            for k in range(t):
                s += np.int64(x[i, k, j])
            out[i, 0, j] = round_div(s, np.int64(t), mode)
    return out


def avg_pool(x: np.ndarray, rounding: str) -> np.ndarray:
    """Numba twin of :func:`avg_pool_ref` (same arguments, same int64 result, bit for bit)."""
    x = _check(x)
    mid = mode_id(rounding)
    lead = x.shape[:-2]
    t, c = x.shape[-2:]
    y = _avg_pool_rows(np.ascontiguousarray(x).reshape(-1, t, c), mid)
    return y.reshape(*lead, 1, c)
