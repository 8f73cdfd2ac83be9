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
    vn = v.shape[0]  # divides per (checked by the caller)
    for b in prange(x.shape[0]):
        # per-image flat index i -> value[i mod V] (tiling along axis 0 = flat tiling), one whole tile at a
        # time on 0-based views: the loop vectorizes (a wrapping index into v measured ~8x slower)
        for t0 in range(0, per, vn):
            xs = x[b, t0:t0 + vn]
            os = out[b, t0:t0 + vn]
            for j in range(vn):
                os[j] = min(max(np.int64(xs[j]) + np.int64(v[j]), lo), hi)


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
