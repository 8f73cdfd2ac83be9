"""Table lookup ``y = table[x - in_min]`` (used for GELU; the table is built by the lowering).

The input must lie in ``[in_min, in_min + len(table) - 1]``; anything else raises (no silent clamp:
the lowering sizes the table to the proven input range).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .rounding import PARALLEL_MIN_ELEMENTS
from .simd import load16, permb2, select_eq_u8, store16

__all__ = ["byte_table", "lookup_bytes_row", "lookup_fast", "lut_lookup", "lut_lookup_ref"]


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


# ---------------------------------------------------------------------------------------------
# Byte tables, 64 codes at a time (AVX-512 VBMI; the fused fc1 -> GELU chain of kernels/fused.py)
# ---------------------------------------------------------------------------------------------
# A table whose entries fit one byte is cut into segments of 128 entries; each segment is one vpermi2b lookup
# of 64 indices (their low 7 bits), and a byte compare of the segment number (index >> 7) picks the right
# segment's result.  A lowered GELU table (2^10 entries) is 8 segments: ~24 vector instructions per 64 codes,
# where the scalar loop measured ~0.4 ns per code on Zen 5.

BYTE_TABLE_MAX_SEGMENTS = 16
"""Tables of up to 2048 entries go through :func:`lookup_bytes_row` (segment numbers must fit a byte; past ~16
segments the compares cost more than the scalar loop)."""


def byte_table(table: np.ndarray, out_dtype) -> tuple[np.ndarray, int] | None:
    """(the table in ``out_dtype`` padded with zeros to whole 128-entry segments, the segment count) for
    :func:`lookup_bytes_row`; None unless out_dtype is one byte wide, every entry fits it and the table has at
    most ``BYTE_TABLE_MAX_SEGMENTS`` segments."""
    dt = np.dtype(out_dtype)
    t = np.asarray(table)
    if dt.itemsize != 1 or dt.kind not in "iu" or t.ndim != 1 or t.size == 0 or t.dtype.kind not in "iu":
        return None
    info = np.iinfo(dt)
    if int(t.min()) < info.min or int(t.max()) > info.max:
        return None
    nseg = (t.size + 127) // 128
    if nseg > BYTE_TABLE_MAX_SEGMENTS:
        return None
    tbl = np.zeros(nseg * 128, dtype=dt)
    tbl[:t.size] = t
    return tbl, nseg


@njit(cache=True, inline="always")
def lookup_bytes_row(ptag, q, n, base, tbl, nseg, ib, sb, out, o):
    """out[o + j] = tbl[q[j] + base] for j < n (q: int32), where the caller proved every q[j] + base in [0, 128 * nseg)
    (``tbl``, ``nseg``: :func:`byte_table`; ``out``: 1-D, tbl's dtype).  ``ib``, ``sb``: uint8 scratch of >= n
    entries (index & 127, index >> 7).  ``ptag``: simd.NATIVE on VBMI CPUs, simd.GENERIC (the lane-by-lane twin)
    elsewhere."""
    b = np.int32(base)
    for j in range(n):
        t = np.int32(q[j] + b)  # in [0, 128 * nseg): 32-bit lanes (int64 lanes measured 2.6x slower)
        ib[j] = np.uint8(t & np.int32(127))
        sb[j] = np.uint8(t >> np.int32(7))
    nv = n // 64 * 64
    for j0 in range(0, nv, 64):
        iv = load16(ib, j0)
        sv = load16(sb, j0)
        r = permb2(ptag, load16(tbl, 0), load16(tbl, 64), iv)
        for k in range(1, nseg):
            r = select_eq_u8(sv, k, permb2(ptag, load16(tbl, 128 * k), load16(tbl, 128 * k + 64), iv), r)
        store16(out, o + j0, r)
    for j in range(nv, n):
        out[o + j] = tbl[np.int64(sb[j]) * 128 + ib[j]]
