"""Saturating add of two tensors (the residual stream): ``clip(x + y, lo, hi)``, spec ``docs/ops/add.md``.

The reference is the executor's own numpy expression (``emu/execute.py: run_node``, op ``add``); this module
holds the fast backend's kernel, bit-identical to it.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["sat_add"]


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
