"""Post-softmax log2 (log-sqrt2) code by threshold comparison -- no logarithm at run time.

Input ``p`` is the Q0.P probability from the softmax kernel; thresholds ``T`` (int64, non-increasing,
length ``L <= 2^b - 1``) come from :func:`log2_thresholds` (the lowering, the only float step)::

    count = #{k : p <= T[k]}                 (a prefix 0..count-1 because T is non-increasing)
    code  = count      if count < L
            Z          otherwise,  Z = 2^b - 1, the ZERO STATE (dequantises to 0)

With ``T[k] = floor(delta * 2^(-(2k+1)/4) * 2^P)`` this is exactly
``code = round(-2 * log2(p / 2^P / delta))`` (clamped below at 0, ties to the larger code) for every
integer ``p``, with the RepQ-ViT extra state "raw code >= 2^b -> 0" and the smallest level
(raw code 2^b - 1) both mapped onto Z.  Proof: ``docs/ops/log2_code.md``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

__all__ = [
    "MAX_BITS",
    "MIN_BITS",
    "log2_code",
    "log2_code_ref",
    "log2_code_table",
    "log2_thresholds",
    "table_lookup",
    "zero_state",
]

MIN_BITS = 2
MAX_BITS = 8


def zero_state(bits: int) -> int:
    """The zero-state code ``Z = 2^bits - 1``.

    Args:
        bits: code width b (2..8).
    """
    b = int(bits)
    if not MIN_BITS <= b <= MAX_BITS:
        raise ValueError(f"log2_code: bits={b} outside [{MIN_BITS}, {MAX_BITS}]")
    return (1 << b) - 1


def log2_thresholds(delta: float, bits: int, out_bits: int, max_codes: int | None = None) -> np.ndarray:
    """Thresholds ``T[k] = floor(delta * 2^(-(2k+1)/4) * 2^P)`` for ``k = 0 .. L-1``.

    Evaluated in float64 exactly as ``math.floor(math.ldexp(delta * math.pow(2.0, -(2k+1)/4), P))``.

    Args:
        delta: the log2 quantizer's scale (the probability that maps to code 0), > 0.
        bits: code width b (2..8).
        out_bits: P, fraction bits of the softmax output.
        max_codes: L, number of non-zero-state levels (default and maximum ``2^b - 1``).

    Returns:
        int64 array of length L, non-increasing, each in ``[0, 2^62)``.

    Raises:
        ValueError: delta not finite or <= 0, bits/out_bits/max_codes out of range, threshold >= 2^62.
    """
    z = zero_state(bits)
    d = float(delta)
    if not (math.isfinite(d) and d > 0.0):
        raise ValueError(f"log2_thresholds: delta={delta!r} must be finite and > 0")
    p = int(out_bits)
    if not 1 <= p <= 31:
        raise ValueError(f"log2_thresholds: out_bits={p} outside [1, 31]")
    n = z if max_codes is None else int(max_codes)
    if not 0 <= n <= z:
        raise ValueError(f"log2_thresholds: max_codes={max_codes} outside [0, {z}]")
    out = []
    for k in range(n):
        v = math.floor(math.ldexp(d * math.pow(2.0, -(2 * k + 1) / 4.0), p))
        if v >= (1 << 62):
            raise ValueError(f"log2_thresholds: threshold {v} (k={k}, delta={d}) >= 2^62")
        out.append(v)
    return np.array(out, dtype=np.int64)


def _check(p: object, thresholds: object, bits: int, op: str) -> tuple[np.ndarray, np.ndarray, int]:
    z = zero_state(bits)
    t = np.asarray(thresholds)
    if t.dtype.kind not in "iu" or t.ndim != 1:
        raise ValueError(f"{op}: thresholds must be a 1-D integer vector, got {t.dtype} {t.shape}")
    t = t.astype(np.int64)
    if t.shape[0] > z:
        raise ValueError(f"{op}: {t.shape[0]} thresholds > 2^b - 1 = {z}")
    if t.shape[0] > 1:
        inc = np.flatnonzero(np.diff(t) > 0)
        if inc.size:
            k = int(inc[0])
            raise ValueError(
                f"{op}: thresholds increase at k={k}: T[{k}]={int(t[k])} < T[{k + 1}]={int(t[k + 1])}"
            )
    a = np.asarray(p)
    if a.dtype.kind not in "iu":
        raise ValueError(f"{op}: p must be an integer array, got dtype {a.dtype}")
    if a.dtype == np.uint64 and a.size and int(a.max()) >= (1 << 63):
        raise OverflowError(f"{op}: p value {int(a.max())} does not fit int64")
    return a.astype(np.int64), t, z


def log2_code_ref(p: object, thresholds: object, bits: int) -> np.ndarray:
    """Reference log2 code: ``count = #{k: p <= T[k]}``; ``code = count if count < L else Z``.

    Args:
        p: integer array of Q0.P probabilities (any shape).
        thresholds: int64 ``[L]``, non-increasing, ``L <= 2^b - 1``.
        bits: code width b (2..8); ``Z = 2^b - 1``.

    Returns:
        uint8 codes of ``p``'s shape.

    Raises:
        ValueError: thresholds increasing / too many, bits out of range, non-integer input.
    """
    a, t, z = _check(p, thresholds, bits, "log2_code")
    count = (a[..., None] <= t).sum(axis=-1)
    code = np.where(count < t.shape[0], count, z)
    return code.astype(np.uint8)


@njit(cache=True, parallel=True)
def _log2_code_flat(a: np.ndarray, t: np.ndarray, z: int, out: np.ndarray) -> None:
    n_t = t.shape[0]
    for i in prange(a.shape[0]):
        v = a[i]
        # binary search: the first k with v > T[k] (predicate monotone because T is non-increasing)
        lo = 0
        hi = n_t
        while lo < hi:
            mid = (lo + hi) >> 1
            if v > t[mid]:
                hi = mid
            else:
                lo = mid + 1
        out[i] = np.uint8(lo if lo < n_t else z)


def log2_code(p: object, thresholds: object, bits: int) -> np.ndarray:
    """Numba log2 code by binary search (bit-identical to :func:`log2_code_ref`).

    Args:
        p: integer array of Q0.P probabilities.
        thresholds: int64 ``[L]``, non-increasing.
        bits: code width b (2..8).

    Returns:
        uint8 codes of ``p``'s shape.
    """
    a, t, z = _check(p, thresholds, bits, "log2_code")
    flat = np.ascontiguousarray(a).reshape(-1)
    out = np.empty(flat.shape[0], dtype=np.uint8)
    _log2_code_flat(flat, t, z, out)
    return out.reshape(a.shape)

# ---------------------------------------------------------------------------------------------
# Fast kernel (the executor's prepared plan, ``repq_hw.emu.fast``)
# ---------------------------------------------------------------------------------------------


def log2_code_table(thresholds: np.ndarray, bits: int, in_bits: int) -> np.ndarray | None:
    """Every possible log2 code of an input of ``in_bits`` unsigned bits, from ``log2_code_ref`` itself
    (so a lookup is the reference by exhaustion); None when the table would exceed 2^20 entries."""
    if in_bits > 20:
        return None
    return log2_code_ref(np.arange(1 << in_bits, dtype=np.int64), thresholds, bits)


@njit(cache=True)  # memory-bound: serial (no fork/join cost)
def _lookup_u(x, table, out, bad):
    n = table.shape[0]
    for i in range(x.shape[0]):
        v = np.int64(x[i])
        ok = (v >= 0) & (v < n)
        out[i] = table[v if ok else 0]
        if not ok:
            bad[0] = 1


def table_lookup(x: np.ndarray, table: np.ndarray, out_dtype=None) -> np.ndarray | None:
    """``table[x]`` for 0 <= x < len(table); None if some x is outside (caller falls back)."""
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty(flat.shape[0], dtype=out_dtype or table.dtype)
    bad = np.zeros(1, dtype=np.uint8)
    _lookup_u(flat, table.astype(out.dtype, copy=False), out, bad)
    return None if bad[0] else out.reshape(x.shape)
