"""Saturating add of two tensors (the residual stream): ``clip(x + y, lo, hi)``, and of a constant tiled along
axis 0 (``add_const``: position embedding, Swin's relative position bias + window mask), spec ``docs/ops/add.md``.

The references are the executor's own numpy expressions (``emu/execute.py: run_node``, ops ``add`` and
``add_const``); this module holds the fast backend's kernels, bit-identical to them.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["sat_add", "sat_add_tiled"]


@njit(cache=True)  # memory-bound: serial (no fork/join cost)
def _sat_add(x, y, lo, hi, out):
    for i in range(x.shape[0]):
        out[i] = min(max(np.int64(x[i]) + np.int64(y[i]), lo), hi)


def sat_add(x: np.ndarray, y: np.ndarray, lo: int, hi: int, out_dtype) -> np.ndarray:
    """``clip(x + y, lo, hi)`` (exact, int64 intermediate) for integer arrays of the same shape."""
    xf = np.ascontiguousarray(x).reshape(-1)
    yf = np.ascontiguousarray(y).reshape(-1)
    out = np.empty(xf.shape[0], dtype=out_dtype)
    _sat_add(xf, yf, lo, hi, out)
    return out.reshape(x.shape)


@njit(cache=True, parallel=True)
def _sat_add_tiled(x, v, lo, hi, out):
    per = x.shape[1]
    vn = v.shape[0]
    for b in prange(x.shape[0]):
        j = 0
        for i in range(per):  # per-image flat index i -> value[i mod V] (tiling along axis 0 = flat tiling)
            out[b, i] = min(max(np.int64(x[b, i]) + np.int64(v[j]), lo), hi)
            j += 1
            if j == vn:
                j = 0


def sat_add_tiled(x: np.ndarray, value: np.ndarray, lo: int, hi: int, out_dtype) -> np.ndarray | None:
    """``clip(x[b, t] + value[t mod V0], lo, hi)`` for x ``[B, T0, ...]`` and value ``[V0, ...]`` with the
    same trailing axes and V0 dividing T0; None when the shapes do not tile (the caller runs the reference)."""
    if x.ndim != value.ndim + 1 or x.shape[2:] != value.shape[1:] or x.shape[1] % value.shape[0]:
        return None
    b = x.shape[0]
    xf = np.ascontiguousarray(x).reshape(b, -1)
    out = np.empty(xf.shape, dtype=out_dtype)
    _sat_add_tiled(xf, np.ascontiguousarray(value).reshape(-1), lo, hi, out)
    return out.reshape(x.shape)
