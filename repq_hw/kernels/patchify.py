"""PATCHIFY: the im2col of a stride-p, kernel-p convolution (the patch embedding), spec
``docs/ops/data_movement.md``.

``patchify_ref`` is the definition (numpy reshape/transpose, used by both executors' plain path);
``patchify_fast`` is the fast plan's Numba twin (one pass, threaded over images and patch rows), bit-identical
(it moves integers; tested equal on every dtype the IR stores codes in).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["patchify_fast", "patchify_ref"]


def patchify_ref(x: np.ndarray, p: int) -> np.ndarray:
    """[B, C, H, W] -> [B, (H/p)*(W/p), C*p*p]: row gy*(W/p) + gx, column c*p*p + ky*p + kx holds
    x[b, c, gy*p + ky, gx*p + kx]."""
    b, c, hh, ww = x.shape
    y = x.reshape(b, c, hh // p, p, ww // p, p).transpose(0, 2, 4, 1, 3, 5)  # B, gh, gw, c, ky, kx
    return np.ascontiguousarray(y.reshape(b, (hh // p) * (ww // p), c * p * p))


@njit(cache=True, parallel=True)
def _patchify(x, p, out):
    b, c, hh, ww = x.shape
    gh, gw = hh // p, ww // p
    for r in prange(b * gh):
        i, gy = r // gh, r % gh
        for gx in range(gw):
            row = gy * gw + gx
            for ch in range(c):
                for ky in range(p):
                    col = (ch * p + ky) * p
                    src_y = gy * p + ky
                    for kx in range(p):
                        out[i, row, col + kx] = x[i, ch, src_y, gx * p + kx]


def patchify_fast(x: np.ndarray, p: int) -> np.ndarray:
    """Numba twin of :func:`patchify_ref` (same arguments and result)."""
    b, c, hh, ww = x.shape
    out = np.empty((b, (hh // p) * (ww // p), c * p * p), dtype=x.dtype)
    _patchify(np.ascontiguousarray(x), int(p), out)
    return out
