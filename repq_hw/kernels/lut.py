"""Table lookup ``y = table[x - in_min]`` (used for GELU; the table is built by the lowering).

The input must lie in ``[in_min, in_min + len(table) - 1]``; anything else raises (no silent clamp:
the lowering sizes the table to the proven input range).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .rounding import PARALLEL_MIN_ELEMENTS

__all__ = ["lookup_fast", "lut_lookup", "lut_lookup_ref"]


def _check(x: object, table: object, in_min: int, op: str) -> tuple[np.ndarray, np.ndarray, int]:
    t = np.asarray(table)
    if t.dtype.kind not in "iu" or t.ndim != 1 or t.shape[0] == 0:
        raise ValueError(f"{op}: table must be a non-empty 1-D integer vector, got {t.dtype} {t.shape}")
    a = np.asarray(x)
    if a.dtype.kind not in "iu":
        raise ValueError(f"{op}: x must be an integer array, got dtype {a.dtype}")
    if a.dtype == np.uint64 and a.size and int(a.max()) >= (1 << 63):
        raise ValueError(f"{op}: input {int(a.max())} outside the table range")
    if isinstance(in_min, bool) or not isinstance(in_min, (int, np.integer)):
        raise ValueError(f"{op}: in_min must be an integer, got {in_min!r}")  # noqa: TRY004 (bad attributes raise ValueError project-wide)
    lo = int(in_min)
    if not -(1 << 62) <= lo < (1 << 62):
        raise ValueError(f"{op}: in_min={lo} outside [-2^62, 2^62)")
    return a.astype(np.int64), t, lo


def lut_lookup_ref(x: object, table: np.ndarray, in_min: int) -> np.ndarray:
    """Reference lookup ``table[x - in_min]``.

    Args:
        x: integer array of input codes.
        table: 1-D integer table; entry i is the output for input ``in_min + i``.
        in_min: the input value of entry 0.

    Returns:
        array of ``x``'s shape with ``table``'s dtype.

    Raises:
        ValueError: an input outside ``[in_min, in_min + len(table) - 1]`` (the message names it).
    """
    op = "lut_lookup"
    a, t, lo = _check(x, table, in_min, op)
    hi = lo + t.shape[0] - 1
    bad = (a < lo) | (a > hi)
    if bad.any():
        val = int(a[tuple(np.argwhere(bad)[0])])
        raise ValueError(f"{op}: input {val} outside table range [{lo}, {hi}]")
    return t[a - lo]


@njit(cache=True, parallel=True)
def _lookup_flat(a: np.ndarray, t: np.ndarray, lo: int, out: np.ndarray, bad: np.ndarray) -> None:
    hi = lo + t.shape[0] - 1  # |lo| < 2^62 and len < 2^62: no overflow
    for i in prange(a.shape[0]):
        if a[i] < lo or a[i] > hi:  # compare first, so a[i] - lo is never formed out of range
            bad[i] = 1
            out[i] = t[0]
        else:
            out[i] = t[a[i] - lo]


def lut_lookup(x: object, table: np.ndarray, in_min: int) -> np.ndarray:
    """Numba lookup (bit-identical to :func:`lut_lookup_ref`, same errors).

    Args:
        x: integer array of input codes.
        table: 1-D integer table.
        in_min: the input value of entry 0.

    Returns:
        array of ``x``'s shape with ``table``'s dtype.
    """
    op = "lut_lookup"
    a, t, lo = _check(x, table, in_min, op)
    flat = np.ascontiguousarray(a).reshape(-1)
    tc = np.ascontiguousarray(t).astype(np.int64)
    out = np.empty(flat.shape[0], dtype=np.int64)
    bad = np.zeros(flat.shape[0], dtype=np.uint8)
    _lookup_flat(flat, tc, lo, out, bad)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{op}: input {int(flat[i])} outside table range [{lo}, {lo + t.shape[0] - 1}]")
    return out.astype(t.dtype).reshape(a.shape)

# ---------------------------------------------------------------------------------------------
# Fast kernel (the executor's prepared plan, ``repq_hw.emu.fast``)
# ---------------------------------------------------------------------------------------------


def lookup_fast(x: np.ndarray, table: np.ndarray, in_min: int, out_dtype) -> np.ndarray | None:
    """``lut_lookup_ref(x, table, in_min).astype(out_dtype)`` when the table fits out_dtype; None if an input
    is outside the table (the caller's fallback raises the reference's error) or the table does not fit."""
    info = np.iinfo(out_dtype)
    t = np.asarray(table)
    if t.size == 0 or int(t.min()) < info.min or int(t.max()) > info.max or x.dtype.itemsize > 4 or x.dtype == np.uint32:
        return None
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty(flat.shape[0], dtype=out_dtype)
    bad = np.zeros(1, dtype=np.uint8)
    kernel = _lookup_off_parallel if flat.shape[0] >= PARALLEL_MIN_ELEMENTS else _lookup_off
    kernel(flat, t.astype(out_dtype), int(in_min), out, bad)
    return None if bad[0] else out.reshape(x.shape)


@njit(cache=True)
def _lookup_off_range(x, table, lo, out, a, b):
    """out[i] = table[x[i] - lo] for i in [a, b); returns 1 if some index fell outside the table."""
    n = table.shape[0]
    bad = 0
    for i in range(a, b):
        v = np.int64(x[i]) - lo
        ok = (v >= 0) & (v < n)
        out[i] = table[v if ok else 0]
        bad |= np.int64(not ok)
    return bad


@njit(cache=True)
def _lookup_off(x, table, lo, out, bad):
    bad[0] = _lookup_off_range(x, table, lo, out, 0, x.shape[0])


@njit(cache=True, parallel=True)
def _lookup_off_parallel(x, table, lo, out, bad):
    n = x.shape[0]
    step = PARALLEL_MIN_ELEMENTS // 2
    nch = (n + step - 1) // step
    flags = np.empty(nch, np.int64)
    for t in prange(nch):
        flags[t] = _lookup_off_range(x, table, lo, out, t * step, min(n, (t + 1) * step))
    bad[0] = flags.max()
