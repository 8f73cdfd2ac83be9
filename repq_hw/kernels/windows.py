"""Swin's data-movement ops on the token grid: window partition/reverse with the cyclic shift, and the
2x2 patch-merging gather.  Spec: ``docs/ops/data_movement.md``.  They move integers and compute nothing,
so one numpy implementation serves both executors; the tests check them against timm's own
``window_partition`` / ``window_reverse`` / ``torch.roll`` / ``PatchMerging`` index order.

Tokens are stored row-major: token ``t = y * W + x`` of an ``H x W`` grid, channels last.  Every function
takes a batch axis in front: ``x[B, H*W, C]``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["padded_size", "patch_merge", "window_partition", "window_reverse"]


def padded_size(n: int, window: int) -> int:
    """The grid side after bottom/right padding to a multiple of the window."""
    return -(-n // window) * window


def window_partition(x: np.ndarray, height: int, width: int, window: int, shift: int, pad_value: int) -> np.ndarray:
    """[B, H*W, C] -> [B, nW*w*w, C].

    out = partition(pad(roll(grid, (-shift, -shift)), pad_value)): the grid is rolled up/left by ``shift``
    (torch.roll with negative shifts), padded at the bottom/right with ``pad_value`` to multiples of
    ``window``, then cut into w x w windows; windows in row-major order, tokens row-major inside a window.
    """
    b, _, c = x.shape
    g = x.reshape(b, height, width, c)
    if shift:
        g = np.roll(g, (-shift, -shift), axis=(1, 2))
    hp, wp = padded_size(height, window), padded_size(width, window)
    if (hp, wp) != (height, width):
        full = np.full((b, hp, wp, c), pad_value, dtype=x.dtype)
        full[:, :height, :width] = g
        g = full
    g = g.reshape(b, hp // window, window, wp // window, window, c).transpose(0, 1, 3, 2, 4, 5)
    return np.ascontiguousarray(g.reshape(b, hp * wp, c))


def window_reverse(x: np.ndarray, height: int, width: int, window: int, shift: int) -> np.ndarray:
    """[B, nW*w*w, C] -> [B, H*W, C]: the inverse of :func:`window_partition` on the kept tokens (windows back
    onto the padded grid, crop to H x W, roll down/right by ``shift``)."""
    b, _, c = x.shape
    hp, wp = padded_size(height, window), padded_size(width, window)
    g = x.reshape(b, hp // window, wp // window, window, window, c).transpose(0, 1, 3, 2, 4, 5)
    g = g.reshape(b, hp, wp, c)[:, :height, :width]
    if shift:
        g = np.roll(g, (shift, shift), axis=(1, 2))
    return np.ascontiguousarray(g.reshape(b, height * width, c))


def patch_merge(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """[B, H*W, C] -> [B, ceil(H/2)*ceil(W/2), 4C]: an odd side is padded with zeros (bottom/right), then
    out[(i, j), k*C + c] = grid[2i + dy, 2j + dx, c] with k = 2*dx + dy (timm's order: (0,0), (1,0), (0,1),
    (1,1) as (dy, dx))."""
    b, _, c = x.shape
    g = x.reshape(b, height, width, c)
    h2, w2 = height + height % 2, width + width % 2
    if (h2, w2) != (height, width):
        full = np.zeros((b, h2, w2, c), dtype=x.dtype)
        full[:, :height, :width] = g
        g = full
    g = g.reshape(b, h2 // 2, 2, w2 // 2, 2, c).transpose(0, 1, 3, 4, 2, 5)  # B, i, j, dx, dy, C
    return np.ascontiguousarray(g.reshape(b, (h2 // 2) * (w2 // 2), 4 * c))
