"""Fused Numba kernels for calibration and fake-quantization (float32 data on the CPU).

The percentile search scores every candidate (delta, zero point) by the mean squared error of
fake-quantizing the calibration data with it. Written as torch expressions (``quantizers.py``, the
definition) that is ~9 full passes over the data per candidate; these kernels make one pass per chunk
and score all candidates of a row while the chunk sits in cache. The same element-wise arithmetic
serves the fake-quant forward of the calibrated model.

Contract:
  * every uniform dequantized value equals the torch definition's bit for bit: the kernels repeat its
    float32 operations in the same order (IEEE division, round-half-to-even, clamp, subtract, multiply);
  * the log-sqrt(2) kernel reads the definition's float32 level table (``log_sqrt2_table``) but rounds
    -2 log2(x / delta) exactly, from the bits of the float32 ratio, where the definition rounds torch's
    float32 log2 (which may err by an ulp): an element whose -2 log2 lies within that error of a
    half-integer can get the neighbouring code;
  * squared errors are accumulated in float64, per fixed chunk of ``CHUNK`` elements with a fixed
    order inside, and the chunk sums are added in chunk order: results do not depend on the thread
    count. torch's float32 mean rounds differently, so two candidates whose scores differ by float32
    rounding may rank the other way round; the search keeps the first of equal scores either way;
  * tail selection copies values, never computes them: it returns exactly what ``torch.topk`` does.

Numba note (0.68): ``np.zeros`` inside a ``prange`` body gave wrong results here twice -- an
``inline="always"`` helper holding ``np.zeros(8)`` made inf sums, and ``np.zeros(top + 2)`` read back
garbage (probably allocation hoisting dropping the fill). Helpers are plain ``@njit`` functions and
per-iteration buffers are ``np.empty`` filled explicitly.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

CHUNK = 1 << 15  # elements per partial sum (128 KiB of float32: stays in L2 while 3 candidates pass)
# float32 bit patterns: rint(-2 log2(1.f)) is 0 while f < (2^1/4 - 1) * 2^23 (irrational, so never
# equal), -1 while f < (2^3/4 - 1) * 2^23, else -2.
F_ROUND_TO_0 = math.ceil((2.0**0.25 - 1.0) * 2**23)
F_ROUND_TO_1 = math.ceil((2.0**0.75 - 1.0) * 2**23)
INF_BITS = 0x7F800000


@njit(cache=True)
def _sum_sq(err):
    """sum(err^2) of a float32 or float64 buffer in float64, in a fixed order: 8 interleaved partial
    sums (a single float64 add chain is latency-bound; fastmath reordering is not used), then a tree."""
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
    m = err.shape[0] // 8 * 8
    for j in range(0, m, 8):
        e0 = np.float64(err[j])
        e1 = np.float64(err[j + 1])
        e2 = np.float64(err[j + 2])
        e3 = np.float64(err[j + 3])
        e4 = np.float64(err[j + 4])
        e5 = np.float64(err[j + 5])
        e6 = np.float64(err[j + 6])
        e7 = np.float64(err[j + 7])
        a0 += e0 * e0
        a1 += e1 * e1
        a2 += e2 * e2
        a3 += e3 * e3
        a4 += e4 * e4
        a5 += e5 * e5
        a6 += e6 * e6
        a7 += e7 * e7
    for j in range(m, err.shape[0]):
        e = np.float64(err[j])
        a0 += e * e
    return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))


@njit(cache=True)
def _fake_quant(x, d, z, top):
    """(clamp(rint(x / d) + z, 0, top) - z) * d in float32, in the torch definition's order (all float32)."""
    q = min(max(np.rint(x / d) + z, np.float32(0.0)), top)
    return (q - z) * d


@njit(parallel=True, cache=True)
def _uniform_sq_err(rows, deltas, zps, levels):
    """rows [C, n] f32; deltas, zps [C, K] f32 -> [C, K] f64 sums of (fake_quant(x) - x)^2."""
    C, n = rows.shape
    K = deltas.shape[1]
    nch = (n + CHUNK - 1) // CHUNK
    part = np.zeros((C * nch, K))
    top = np.float32(levels)
    for t in prange(C * nch):
        c = t // nch
        j0 = (t - c * nch) * CHUNK
        j1 = min(n, j0 + CHUNK)
        err = np.empty(j1 - j0, np.float32)
        for k in range(K):
            d = deltas[c, k]
            z = zps[c, k]
            for j in range(j0, j1):
                err[j - j0] = _fake_quant(rows[c, j], d, z, top) - rows[c, j]
            part[t, k] = _sum_sq(err)
    out = np.zeros((C, K))
    for c in range(C):
        for i in range(nch):
            for k in range(K):
                out[c, k] += part[c * nch + i, k]
    return out


@njit(cache=True)
def _log_index_chunk(x, d, top, limit, qbuf, idx):
    """idx[j] = index into the level table for x[j] (the code, or top + 1 for the zero state).

    raw = rint(-2 log2(q)), q = x / d in float32, read off q's bits: q = 1.f * 2^(ex-127) gives
    -2 log2 q = 2(127 - ex) - 2 log2(1.f) with the last term in (-2, 0]: the exact rounding (the torch
    definition, ``log_sqrt2_raw``, rounds float32 log2 instead; see the module docstring).
    """
    m = x.shape[0]
    zero_idx = top + 1
    bits = qbuf.view(np.int32)
    for j in range(m):
        qbuf[j] = x[j] / d  # float32, as torch
    rare = 0
    for j in range(m):
        b = bits[j]
        ex = b >> 23
        f = b & 0x7FFFFF
        raw = 2 * (127 - ex) - np.int32(f >= F_ROUND_TO_0) - np.int32(f >= F_ROUND_TO_1)
        i = min(max(raw, 0), top)
        i = zero_idx if raw >= limit else i
        # b <= 0: q is +-0 or negative -> log2 -inf/NaN -> zero state; b > INF_BITS: NaN
        i = zero_idx if (b <= 0 or b > INF_BITS) else i
        rare += np.int32(ex == 0 and b > 0) + np.int32(b == INF_BITS)
        idx[j] = i
    if rare:  # subnormal q: float64 log2 of a float32 is far from any half-integer tie, so exact too;
        # q = +inf: raw = -inf, code 0
        for j in range(m):
            b = bits[j]
            if b == INF_BITS:
                idx[j] = 0
            elif b > 0 and (b >> 23) == 0:
                raw = np.int64(np.rint(-2.0 * math.log2(np.float64(qbuf[j]))))
                idx[j] = zero_idx if raw >= limit else min(max(raw, 0), top)


@njit(parallel=True, cache=True)
def _log_sqrt2_sq_err(flat, deltas, tables, limit):
    """flat [n] f32; deltas [K] f32; tables [K, 2^b + 1] f32 (log_sqrt2_table) -> [K] f64 sums of
    (x_hat - x)^2, x_hat = tables[k, index(x)]."""
    n = flat.shape[0]
    K = deltas.shape[0]
    top = tables.shape[1] - 2
    nch = (n + CHUNK - 1) // CHUNK
    part = np.zeros((nch, K))
    for t in prange(nch):
        j0 = t * CHUNK
        m = min(n, j0 + CHUNK) - j0
        x = flat[j0 : j0 + m]
        qbuf = np.empty(m, np.float32)
        idx = np.empty(m, np.int32)
        err = np.empty(m)
        for k in range(K):
            _log_index_chunk(x, deltas[k], top, limit, qbuf, idx)
            for j in range(m):
                err[j] = np.float64(tables[k, idx[j]]) - np.float64(x[j])
            part[t, k] = _sum_sq(err)
    out = np.zeros(K)
    for i in range(nch):
        for k in range(K):
            out[k] += part[i, k]
    return out


def uniform_sq_err(rows: np.ndarray, deltas: np.ndarray, zps: np.ndarray, levels: int) -> np.ndarray:
    """Sum over each row of the squared fake-quantization error, for every candidate.

    Args:
        rows: [C, n] float32, C-contiguous.
        deltas, zps: [C, K] float32 candidates (zps hold integers).
        levels: 2^b - 1, the largest code.
    """
    return _uniform_sq_err(np.ascontiguousarray(rows, dtype=np.float32),
                           np.ascontiguousarray(deltas, dtype=np.float32),
                           np.ascontiguousarray(zps, dtype=np.float32), levels)


def log_sqrt2_sq_err(flat: np.ndarray, deltas: np.ndarray, tables: np.ndarray, limit: int) -> np.ndarray:
    """Sum of the squared log-sqrt(2) fake-quantization error of flat [n] for each of deltas [K], with
    tables [K, 2^b + 1] from log_sqrt2_table; codes >= limit are the zero state."""
    return _log_sqrt2_sq_err(np.ascontiguousarray(flat, dtype=np.float32).reshape(-1),
                             np.ascontiguousarray(deltas, dtype=np.float32).reshape(-1),
                             np.ascontiguousarray(tables, dtype=np.float32), limit)


# ---------------------------------------------------------------------------------------------------
# Tail selection: the k largest and k smallest values of each row, as ``torch.topk`` returns them
# (values only, most extreme first). Values are copied, never computed, so the result is exact.


@njit(parallel=True, cache=True)
def _row_tails_small_k(rows, k):
    """rows [C, n] f32, 1 <= k <= n -> (upper [C, k] descending, lower [C, k] ascending).

    Per row, two insertion-sorted buffers of length k; an element enters only if it beats the current
    k-th extreme, so for k << n nearly every element costs one comparison.
    """
    C, n = rows.shape
    upper = np.empty((C, k), np.float32)
    lower = np.empty((C, k), np.float32)
    for c in prange(C):
        hi = upper[c]
        lo = lower[c]
        for j in range(k):  # seed with the first k values, insertion-sorted
            v = rows[c, j]
            i = j
            while i > 0 and hi[i - 1] < v:
                hi[i] = hi[i - 1]
                i -= 1
            hi[i] = v
            i = j
            while i > 0 and lo[i - 1] > v:
                lo[i] = lo[i - 1]
                i -= 1
            lo[i] = v
        for j in range(k, n):
            v = rows[c, j]
            if v > hi[k - 1]:
                i = k - 1
                while i > 0 and hi[i - 1] < v:
                    hi[i] = hi[i - 1]
                    i -= 1
                hi[i] = v
            if v < lo[k - 1]:
                i = k - 1
                while i > 0 and lo[i - 1] > v:
                    lo[i] = lo[i - 1]
                    i -= 1
                lo[i] = v
    return upper, lower


@njit(parallel=True, cache=True)
def _beyond_thresholds(flat, t_hi, t_lo):
    """The elements of flat [n] that are >= t_hi and those <= t_lo, in index order (two passes over
    fixed chunks: count, then copy to the chunk's offset)."""
    n = flat.shape[0]
    nch = (n + CHUNK - 1) // CHUNK
    cnt = np.zeros((nch, 2), np.int64)
    for t in prange(nch):
        a = 0
        b = 0
        for j in range(t * CHUNK, min(n, (t + 1) * CHUNK)):
            v = flat[j]
            a += v >= t_hi
            b += v <= t_lo
        cnt[t, 0] = a
        cnt[t, 1] = b
    off = np.zeros((nch + 1, 2), np.int64)
    for t in range(nch):
        off[t + 1, 0] = off[t, 0] + cnt[t, 0]
        off[t + 1, 1] = off[t, 1] + cnt[t, 1]
    hi = np.empty(off[nch, 0], np.float32)
    lo = np.empty(off[nch, 1], np.float32)
    for t in prange(nch):
        a = off[t, 0]
        b = off[t, 1]
        for j in range(t * CHUNK, min(n, (t + 1) * CHUNK)):
            v = flat[j]
            if v >= t_hi:
                hi[a] = v
                a += 1
            if v <= t_lo:
                lo[b] = v
                b += 1
    return hi, lo


SMALL_K = 64  # rows with k above this use the threshold filter or torch.topk


def row_tails(rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(k largest descending, k smallest ascending) of each row of a finite float32 [C, n] array."""
    return _row_tails_small_k(np.ascontiguousarray(rows, dtype=np.float32), k)


def beyond_thresholds(flat: np.ndarray, t_hi: float, t_lo: float) -> tuple[np.ndarray, np.ndarray]:
    """Elements of a float32 [n] array >= t_hi, and those <= t_lo (unsorted)."""
    return _beyond_thresholds(np.ascontiguousarray(flat, dtype=np.float32).reshape(-1),
                              np.float32(t_hi), np.float32(t_lo))


# ---------------------------------------------------------------------------------------------------
# Uniform fake-quantization of a contiguous float32 tensor, bit-identical to the torch expression of
# UniformQuantizer.forward: (clamp(rint(x / d) + z, 0, 2^b - 1) - z) * d, element by element in float32.


@njit(parallel=True, cache=True)
def _fake_quant_uniform(x, d, z, levels, inner, out):
    """x, out [n] f32 (C order); d, z [m] f32 per channel, channel of element i = (i // inner) % m.

    Per tensor: m = 1, inner = n. Channels on the last axis: inner = 1. On axis 0: inner = n / m.
    """
    n = x.shape[0]
    m = d.shape[0]
    top = np.float32(levels)
    nblk = n // inner  # blocks of `inner` elements that share one channel
    if inner >= CHUNK or nblk == 1:  # few long blocks: parallel inside each block
        for b in range(nblk):
            c = b % m
            dc = d[c]
            zc = z[c]
            base = b * inner
            for t in prange((inner + CHUNK - 1) // CHUNK):
                for i in range(base + t * CHUNK, base + min(inner, (t + 1) * CHUNK)):
                    out[i] = _fake_quant(x[i], dc, zc, top)
    elif inner == 1:  # channels on the last axis: rows of m elements
        rows = n // m
        for r in prange(rows):
            i0 = r * m
            for c in range(m):
                out[i0 + c] = _fake_quant(x[i0 + c], d[c], z[c], top)
    else:
        for b in prange(nblk):
            c = b % m
            dc = d[c]
            zc = z[c]
            for i in range(b * inner, (b + 1) * inner):
                out[i] = _fake_quant(x[i], dc, zc, top)


def fake_quant_uniform(x: np.ndarray, d: np.ndarray, z: np.ndarray, levels: int, inner: int,
                       out: np.ndarray) -> None:
    """Fake-quantize a C-contiguous float32 array into out (same shape, C-contiguous); see
    :func:`_fake_quant_uniform` for the channel map."""
    _fake_quant_uniform(x.reshape(-1), np.ascontiguousarray(d, dtype=np.float32).reshape(-1),
                        np.ascontiguousarray(z, dtype=np.float32).reshape(-1), levels, inner,
                        out.reshape(-1))


@njit(parallel=True, cache=True)
def _fake_quant_strided_4d(x, d, z, levels, out):
    """Per-tensor fake-quantization of a strided 4-D view into out (same shape, any strides)."""
    A, B, C, D = x.shape
    top = np.float32(levels)
    for ab in prange(A * B):
        a = ab // B
        b = ab - a * B
        for c in range(C):
            for e in range(D):
                out[a, b, c, e] = _fake_quant(x[a, b, c, e], d, z, top)


def fake_quant_strided(x: np.ndarray, d: float, z: float, levels: int, out: np.ndarray) -> None:
    """Per-tensor fake-quantization of a strided float32 array of at most 4 dims into out."""
    if x.ndim > 4 or x.shape != out.shape:
        raise ValueError(f"fake_quant_strided: expected two arrays of one shape with <= 4 dims, got "
                         f"{x.shape} and {out.shape}")
    shape4 = (1,) * (4 - x.ndim) + x.shape
    _fake_quant_strided_4d(x.reshape(shape4) if x.ndim < 4 else x, np.float32(d), np.float32(z), levels,
                           out.reshape(shape4) if out.ndim < 4 else out)


@njit(parallel=True, cache=True)
def _count_nonfinite(flat):
    n = flat.shape[0]
    nch = (n + CHUNK - 1) // CHUNK
    cnt = np.zeros(nch, np.int64)
    for t in prange(nch):
        c = 0
        for j in range(t * CHUNK, min(n, (t + 1) * CHUNK)):
            v = flat[j]
            c += not (v - v == 0)  # NaN and +-inf give NaN
        cnt[t] = c
    return cnt.sum()


def count_nonfinite(x: np.ndarray) -> int:
    """How many elements of a float32 array are NaN or +-inf (one parallel pass)."""
    return int(_count_nonfinite(np.ascontiguousarray(x, dtype=np.float32).reshape(-1)))


@njit(parallel=True, cache=True)
def _log_sqrt2_from_log2(log2q, table, limit, out):
    """out[i] = table[index], index = clamp(rint(-2 * log2q[i]), 0, 2^b - 1) if that raw < limit else
    2^b (zero state; NaN too): the definition's arithmetic after its float32 log2, element by element."""
    n = log2q.shape[0]
    top = np.float32(table.shape[0] - 2)
    lim = np.float32(limit)
    zero = np.float32(0.0)
    zero_idx = table.shape[0] - 1
    for t in prange((n + CHUNK - 1) // CHUNK):
        for i in range(t * CHUNK, min(n, (t + 1) * CHUNK)):
            raw = np.rint(np.float32(-2.0) * log2q[i])
            idx = zero_idx
            if raw < lim:
                idx = np.int64(min(max(raw, zero), top))
            out[i] = table[idx]


def log_sqrt2_from_log2(log2q: np.ndarray, table: np.ndarray, limit: int, out: np.ndarray) -> None:
    """Finish the log-sqrt(2) fake-quantization from float32 log2(x / delta) (C-contiguous) into out."""
    _log_sqrt2_from_log2(log2q.reshape(-1), np.ascontiguousarray(table, dtype=np.float32), limit,
                         out.reshape(-1))
