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
  * squared errors are accumulated in float64, per fixed chunk of ``CHUNK`` elements in an order fixed
    by the compiled code (a vectorized sum, :func:`_sum_sq`), and the chunk sums are added in chunk
    order: results do not depend on the thread count. torch's float32 mean rounds differently, so two candidates whose scores differ by float32
    rounding may rank the other way round; the search keeps the first of equal scores either way;
  * tail selection copies values, never computes them: it returns exactly what ``torch.topk`` does.

Numba note (0.68): ``np.zeros`` inside a ``prange`` body gave wrong results here twice -- an
``inline="always"`` helper holding ``np.zeros(8)`` made inf sums, and ``np.zeros(top + 2)`` read back
garbage (probably allocation hoisting dropping the fill). Helpers are plain ``@njit`` functions and
per-iteration buffers are ``np.empty`` filled explicitly.

Speed notes: inner loops run over a slice from index 0 (``x[j0:j1]``, then ``range(len)``) rather than
over ``range(j0, j1)`` of the whole array: with an offset range Numba keeps its negative-index
wraparound on every access and LLVM does not vectorize the loop (measured ~10x slower). Below
``PARALLEL_MIN`` elements a kernel runs on the calling thread only (the serial and parallel drivers
share the per-chunk code, so results do not depend on which runs): a parallel region costs a thread
wake-up, which on a loaded machine can exceed the whole work of a small tensor.
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
PARALLEL_MIN = 1 << 22  # elements (times candidates, for the searches) from which kernels run in parallel


def _parallel(work: int) -> bool:
    return work >= PARALLEL_MIN


@njit(cache=True, fastmath={"reassoc"})
def _sum_sq(err):
    """sum(err^2) of a float32 or float64 buffer in float64. Each square of a float32 is exact in float64;
    the additions may be reassociated (fastmath "reassoc", nothing else), which lets LLVM vectorize the
    sum with several partial sums. The order is fixed by the compiled code (not by the data or the
    thread count), so a chunk always gets the same sum on one machine; it differs from a sequential sum
    by float64 rounding only (~1e-15 relative), far inside SCORE_TIE_BAND."""
    s = 0.0
    for j in range(err.shape[0]):
        e = np.float64(err[j])
        s += e * e
    return s


@njit(cache=True)
def _fake_quant(x, d, z, top):
    """(clamp(rint(x / d) + z, 0, top) - z) * d in float32, in the torch definition's order (all float32)."""
    q = min(max(np.rint(x / d) + z, np.float32(0.0)), top)
    return (q - z) * d


@njit(cache=True, error_model="numpy")
def _fake_quant_ieee(x, d, z, top):
    """_fake_quant without Numba's Python-style zero-divisor check (the same IEEE quotient for d != 0):
    a per-element divisor then does not stop the loop from vectorizing."""
    q = min(max(np.rint(x / d) + z, np.float32(0.0)), top)
    return (q - z) * d


@njit(cache=True, error_model="numpy")
def _err_chunk(xs, d, z, top, err):
    """err[j] = fake_quant(xs[j]) - xs[j] in float32 (xs, err: 1-D, indexed from 0; no zero-divisor
    check, d > 0: vectorized)."""
    for j in range(xs.shape[0]):
        err[j] = _fake_quant_ieee(xs[j], d, z, top) - xs[j]


@njit(cache=True)
def _uniform_sq_err_task(rows, deltas, zps, top, nch, t, part, err):
    """part[t, k] for task t = (row c, chunk i): the chunk's float64 sum of squared errors."""
    c = t // nch
    j0 = (t - c * nch) * CHUNK
    j1 = min(rows.shape[1], j0 + CHUNK)
    xs = rows[c, j0:j1]
    e = err[: j1 - j0]
    for k in range(deltas.shape[1]):
        _err_chunk(xs, deltas[c, k], zps[c, k], top, e)
        part[t, k] = _sum_sq(e)


@njit(cache=True)
def _chunk_totals(part, C, nch, K):
    """Per row, the chunk sums added in chunk order."""
    out = np.zeros((C, K))
    for c in range(C):
        for i in range(nch):
            for k in range(K):
                out[c, k] += part[c * nch + i, k]
    return out


@njit(parallel=True, cache=True)
def _uniform_sq_err_par(rows, deltas, zps, levels):
    """rows [C, n] f32; deltas, zps [C, K] f32 -> [C, K] f64 sums of (fake_quant(x) - x)^2."""
    C, n = rows.shape
    K = deltas.shape[1]
    nch = (n + CHUNK - 1) // CHUNK
    part = np.zeros((C * nch, K))
    top = np.float32(levels)
    for t in prange(C * nch):
        err = np.empty(min(n, CHUNK), np.float32)
        _uniform_sq_err_task(rows, deltas, zps, top, nch, t, part, err)
    return _chunk_totals(part, C, nch, K)


@njit(cache=True)
def _uniform_sq_err_ser(rows, deltas, zps, levels):
    """_uniform_sq_err_par on the calling thread (same chunks, same order, same result)."""
    C, n = rows.shape
    K = deltas.shape[1]
    nch = (n + CHUNK - 1) // CHUNK
    part = np.zeros((C * nch, K))
    top = np.float32(levels)
    err = np.empty(min(n, CHUNK), np.float32)
    for t in range(C * nch):
        _uniform_sq_err_task(rows, deltas, zps, top, nch, t, part, err)
    return _chunk_totals(part, C, nch, K)


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


@njit(cache=True)
def _log_sqrt2_sq_err_task(flat, deltas, tables, limit, t, part, qbuf, idx, err):
    """part[t, k]: chunk t's float64 sum of (x_hat - x)^2 for candidate k."""
    n = flat.shape[0]
    top = tables.shape[1] - 2
    j0 = t * CHUNK
    m = min(n, j0 + CHUNK) - j0
    x = flat[j0 : j0 + m]
    q = qbuf[:m]
    ix = idx[:m]
    e = err[:m]
    for k in range(deltas.shape[0]):
        _log_index_chunk(x, deltas[k], top, limit, q, ix)
        tk = tables[k]
        for j in range(m):
            e[j] = np.float64(tk[ix[j]]) - np.float64(x[j])
        part[t, k] = _sum_sq(e)


@njit(parallel=True, cache=True)
def _log_sqrt2_sq_err_par(flat, deltas, tables, limit):
    """flat [n] f32; deltas [K] f32; tables [K, 2^b + 1] f32 (log_sqrt2_table) -> [K] f64 sums of
    (x_hat - x)^2, x_hat = tables[k, index(x)]."""
    n = flat.shape[0]
    K = deltas.shape[0]
    nch = (n + CHUNK - 1) // CHUNK
    part = np.zeros((nch, K))
    for t in prange(nch):
        m = min(n, CHUNK)
        _log_sqrt2_sq_err_task(flat, deltas, tables, limit, t, part, np.empty(m, np.float32),
                               np.empty(m, np.int32), np.empty(m))
    return _chunk_totals(part, 1, nch, K)[0]


@njit(cache=True)
def _log_sqrt2_sq_err_ser(flat, deltas, tables, limit):
    """_log_sqrt2_sq_err_par on the calling thread (same chunks, same order, same result)."""
    n = flat.shape[0]
    K = deltas.shape[0]
    nch = (n + CHUNK - 1) // CHUNK
    part = np.zeros((nch, K))
    m = min(n, CHUNK)
    qbuf, idx, err = np.empty(m, np.float32), np.empty(m, np.int32), np.empty(m)
    for t in range(nch):
        _log_sqrt2_sq_err_task(flat, deltas, tables, limit, t, part, qbuf, idx, err)
    return _chunk_totals(part, 1, nch, K)[0]


def uniform_sq_err(rows: np.ndarray, deltas: np.ndarray, zps: np.ndarray, levels: int) -> np.ndarray:
    """Sum over each row of the squared fake-quantization error, for every candidate.

    Args:
        rows: [C, n] float32, C-contiguous.
        deltas, zps: [C, K] float32 candidates (zps hold integers).
        levels: 2^b - 1, the largest code.
    """
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    deltas = np.ascontiguousarray(deltas, dtype=np.float32)
    kernel = _uniform_sq_err_par if _parallel(rows.size * deltas.shape[1]) else _uniform_sq_err_ser
    return kernel(rows, deltas, np.ascontiguousarray(zps, dtype=np.float32), levels)


def log_sqrt2_sq_err(flat: np.ndarray, deltas: np.ndarray, tables: np.ndarray, limit: int) -> np.ndarray:
    """Sum of the squared log-sqrt(2) fake-quantization error of flat [n] for each of deltas [K], with
    tables [K, 2^b + 1] from log_sqrt2_table; codes >= limit are the zero state."""
    flat = np.ascontiguousarray(flat, dtype=np.float32).reshape(-1)
    deltas = np.ascontiguousarray(deltas, dtype=np.float32).reshape(-1)
    kernel = _log_sqrt2_sq_err_par if _parallel(flat.size * deltas.size) else _log_sqrt2_sq_err_ser
    return kernel(flat, deltas, np.ascontiguousarray(tables, dtype=np.float32), limit)


# ---------------------------------------------------------------------------------------------------
# Tail selection: the k largest and k smallest values of each row, as ``torch.topk`` returns them
# (values only, most extreme first). Values are copied, never computed, so the result is exact.


TAIL_BLOCK = 32  # elements checked at once against both current k-th extremes


@njit(cache=True)
def _row_tails_one(r, k, hi, lo):
    """The k largest (descending) and smallest (ascending) of row r into hi, lo.

    Two insertion-sorted buffers of length k; an element enters only if it beats the current k-th
    extreme. A block of TAIL_BLOCK elements none of which beats the k-th extremes as they stand at its
    start changes nothing and is skipped after one vectorized check; any other block is inserted
    element by element, so the buffers go through exactly the states of the element-by-element scan.
    Block indices are unsigned (no wraparound code, so the check vectorizes) and everything is inline
    (a call per block, with its array arguments, costs more than the block).
    """
    n = r.shape[0]
    for j in range(k):  # seed with the first k values, insertion-sorted
        v = r[j]
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
    un = np.uint64(n)
    j0 = np.uint64(k)
    while j0 < un:
        j1 = min(un, j0 + np.uint64(TAIL_BLOCK))
        t_hi = hi[k - 1]
        t_lo = lo[k - 1]
        hit = False
        for j in range(j0, j1):
            hit |= (r[j] > t_hi) | (r[j] < t_lo)
        if hit:
            for j in range(j0, j1):
                v = r[j]
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
        j0 = j1


@njit(parallel=True, cache=True)
def _row_tails_par(rows, k):
    """rows [C, n] f32, 1 <= k <= n -> (upper [C, k] descending, lower [C, k] ascending)."""
    C = rows.shape[0]
    upper = np.empty((C, k), np.float32)
    lower = np.empty((C, k), np.float32)
    for c in prange(C):
        _row_tails_one(rows[c], k, upper[c], lower[c])
    return upper, lower


@njit(cache=True)
def _row_tails_ser(rows, k):
    """_row_tails_par on the calling thread."""
    C = rows.shape[0]
    upper = np.empty((C, k), np.float32)
    lower = np.empty((C, k), np.float32)
    for c in range(C):
        _row_tails_one(rows[c], k, upper[c], lower[c])
    return upper, lower


@njit(cache=True)
def _beyond_counts(xs, t_hi, t_lo):
    a = 0
    b = 0
    for j in range(xs.shape[0]):
        a += xs[j] >= t_hi
        b += xs[j] <= t_lo
    return a, b


@njit(cache=True)
def _beyond_copy(xs, t_hi, t_lo, hi, a, lo, b):
    """Append the elements of xs >= t_hi to hi from index a, those <= t_lo to lo from b, in index
    order; blocks with neither are skipped after one vectorized check (unsigned indices, inline)."""
    un = np.uint64(xs.shape[0])
    j0 = np.uint64(0)
    while j0 < un:
        j1 = min(un, j0 + np.uint64(TAIL_BLOCK))
        hit = False
        for j in range(j0, j1):
            hit |= (xs[j] >= t_hi) | (xs[j] <= t_lo)
        if hit:
            for j in range(j0, j1):
                v = xs[j]
                if v >= t_hi:
                    hi[a] = v
                    a += 1
                if v <= t_lo:
                    lo[b] = v
                    b += 1
        j0 = j1


@njit(parallel=True, cache=True)
def _beyond_thresholds(flat, t_hi, t_lo):
    """The elements of flat [n] that are >= t_hi and those <= t_lo, in index order (two passes over
    fixed chunks: count, then copy to the chunk's offset)."""
    n = flat.shape[0]
    nch = (n + CHUNK - 1) // CHUNK
    cnt = np.zeros((nch, 2), np.int64)
    for t in prange(nch):
        a, b = _beyond_counts(flat[t * CHUNK : min(n, (t + 1) * CHUNK)], t_hi, t_lo)
        cnt[t, 0] = a
        cnt[t, 1] = b
    off = np.zeros((nch + 1, 2), np.int64)
    for t in range(nch):
        off[t + 1, 0] = off[t, 0] + cnt[t, 0]
        off[t + 1, 1] = off[t, 1] + cnt[t, 1]
    hi = np.empty(off[nch, 0], np.float32)
    lo = np.empty(off[nch, 1], np.float32)
    for t in prange(nch):
        _beyond_copy(flat[t * CHUNK : min(n, (t + 1) * CHUNK)], t_hi, t_lo, hi, off[t, 0], lo, off[t, 1])
    return hi, lo


@njit(cache=True)
def _beyond_thresholds_ser(flat, t_hi, t_lo):
    """_beyond_thresholds on the calling thread (one counting pass, then the copy)."""
    a, b = _beyond_counts(flat, t_hi, t_lo)
    hi = np.empty(a, np.float32)
    lo = np.empty(b, np.float32)
    _beyond_copy(flat, t_hi, t_lo, hi, 0, lo, 0)
    return hi, lo


SMALL_K = 64  # rows with k above this use the threshold filter or torch.topk


def row_tails(rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(k largest descending, k smallest ascending) of each row of a finite float32 [C, n] array."""
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    return (_row_tails_par if _parallel(rows.size) else _row_tails_ser)(rows, k)


def beyond_thresholds(flat: np.ndarray, t_hi: float, t_lo: float) -> tuple[np.ndarray, np.ndarray]:
    """Elements of a float32 [n] array >= t_hi, and those <= t_lo (unsorted)."""
    flat = np.ascontiguousarray(flat, dtype=np.float32).reshape(-1)
    kernel = _beyond_thresholds if _parallel(flat.size) else _beyond_thresholds_ser
    return kernel(flat, np.float32(t_hi), np.float32(t_lo))


# ---------------------------------------------------------------------------------------------------
# Uniform fake-quantization of a contiguous float32 tensor, bit-identical to the torch expression of
# UniformQuantizer.forward: (clamp(rint(x / d) + z, 0, 2^b - 1) - z) * d, element by element in float32.


@njit(cache=True)
def _fq_slice(xs, d, z, top, os):
    """os[i] = fake_quant(xs[i]) for one (d, z) (1-D slices indexed from 0: vectorized)."""
    for i in range(xs.shape[0]):
        os[i] = _fake_quant(xs[i], d, z, top)


@njit(cache=True, error_model="numpy")
def _fq_channels(x, d, z, top, out, r0, r1):
    """Rows r0..r1-1 of a last-axis tensor x, out [rows * m] (m = d.shape[0] channels): element c of a
    row takes channel c's (d[c], z[c]). Each row is a slice indexed from 0, and the division has no
    Python zero-divisor check (error_model="numpy"; the same IEEE quotient, and delta > 0 here), so
    the loop vectorizes."""
    m = d.shape[0]
    for r in range(r0, r1):
        xs = x[r * m : (r + 1) * m]
        os = out[r * m : (r + 1) * m]
        for c in range(m):
            os[c] = _fake_quant_ieee(xs[c], d[c], z[c], top)


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
            base = b * inner
            for t in prange((inner + CHUNK - 1) // CHUNK):
                i0 = base + t * CHUNK
                i1 = base + min(inner, (t + 1) * CHUNK)
                _fq_slice(x[i0:i1], d[c], z[c], top, out[i0:i1])
    elif inner == 1:  # channels on the last axis: rows of m elements
        rows = n // m
        step = max(1, CHUNK // m)  # rows per task
        for t in prange((rows + step - 1) // step):
            _fq_channels(x, d, z, top, out, t * step, min(rows, (t + 1) * step))
    else:
        for b in prange(nblk):
            c = b % m
            _fq_slice(x[b * inner : (b + 1) * inner], d[c], z[c], top, out[b * inner : (b + 1) * inner])


@njit(cache=True)
def _fake_quant_uniform_ser(x, d, z, levels, inner, out):
    """_fake_quant_uniform on the calling thread."""
    n = x.shape[0]
    m = d.shape[0]
    top = np.float32(levels)
    if inner == 1 and m > 1:
        _fq_channels(x, d, z, top, out, 0, n // m)
    else:
        for b in range(n // inner):
            c = b % m
            _fq_slice(x[b * inner : (b + 1) * inner], d[c], z[c], top, out[b * inner : (b + 1) * inner])


def fake_quant_uniform(x: np.ndarray, d: np.ndarray, z: np.ndarray, levels: int, inner: int,
                       out: np.ndarray) -> None:
    """Fake-quantize a C-contiguous float32 array into out (same shape, C-contiguous); see
    :func:`_fake_quant_uniform` for the channel map."""
    kernel = _fake_quant_uniform if _parallel(x.size) else _fake_quant_uniform_ser
    kernel(x.reshape(-1), np.ascontiguousarray(d, dtype=np.float32).reshape(-1),
           np.ascontiguousarray(z, dtype=np.float32).reshape(-1), levels, inner, out.reshape(-1))


@njit(cache=True)
def _fq_strided_plane(xp, d, z, top, op):
    """op[c, e] = fake_quant(xp[c, e]) for one 2-D plane of a strided view."""
    for c in range(xp.shape[0]):
        xs = xp[c]
        os = op[c]
        for e in range(xs.shape[0]):
            os[e] = _fake_quant(xs[e], d, z, top)


@njit(parallel=True, cache=True)
def _fake_quant_strided_4d(x, d, z, levels, out):
    """Per-tensor fake-quantization of a strided 4-D view into out (same shape, any strides)."""
    A, B = x.shape[0], x.shape[1]
    top = np.float32(levels)
    for ab in prange(A * B):
        a = ab // B
        b = ab - a * B
        _fq_strided_plane(x[a, b], d, z, top, out[a, b])


@njit(cache=True)
def _fake_quant_strided_4d_ser(x, d, z, levels, out):
    """_fake_quant_strided_4d on the calling thread."""
    top = np.float32(levels)
    for a in range(x.shape[0]):
        for b in range(x.shape[1]):
            _fq_strided_plane(x[a, b], d, z, top, out[a, b])


def fake_quant_strided(x: np.ndarray, d: float, z: float, levels: int, out: np.ndarray) -> None:
    """Per-tensor fake-quantization of a strided float32 array of at most 4 dims into out."""
    if x.ndim > 4 or x.shape != out.shape:
        raise ValueError(f"fake_quant_strided: expected two arrays of one shape with <= 4 dims, got "
                         f"{x.shape} and {out.shape}")
    shape4 = (1,) * (4 - x.ndim) + x.shape
    kernel = _fake_quant_strided_4d if _parallel(x.size) else _fake_quant_strided_4d_ser
    kernel(x.reshape(shape4) if x.ndim < 4 else x, np.float32(d), np.float32(z), levels,
           out.reshape(shape4) if out.ndim < 4 else out)


@njit(cache=True)
def _count_nonfinite_slice(xs):
    c = 0
    for j in range(xs.shape[0]):
        v = xs[j]
        c += not (v - v == 0)  # NaN and +-inf give NaN
    return c


@njit(parallel=True, cache=True)
def _count_nonfinite(flat):
    n = flat.shape[0]
    nch = (n + CHUNK - 1) // CHUNK
    cnt = np.zeros(nch, np.int64)
    for t in prange(nch):
        cnt[t] = _count_nonfinite_slice(flat[t * CHUNK : min(n, (t + 1) * CHUNK)])
    return cnt.sum()


def count_nonfinite(x: np.ndarray) -> int:
    """How many elements of a float32 array are NaN or +-inf (one parallel pass)."""
    flat = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    return int(_count_nonfinite(flat) if _parallel(flat.size) else _count_nonfinite_slice(flat))


@njit(cache=True, inline="always")
def _log_sqrt2_entry(v, table, lim):
    """table[clamp(rint(-2 v), 0, 2^b - 1)] if rint(-2 v) < lim, else table[2^b] (the zero state; NaN too);
    the index is selected, not branched, so the loops below vectorize."""
    raw = np.rint(np.float32(-2.0) * v)
    idx = min(max(raw, np.float32(0.0)), np.float32(table.shape[0] - 2))
    idx = idx if raw < lim else np.float32(table.shape[0] - 1)
    return table[np.int32(idx)]


@njit(cache=True, error_model="numpy")
def _log_sqrt2_from_log2_slice(ls, table, lim, os):
    for i in range(ls.shape[0]):
        os[i] = _log_sqrt2_entry(ls[i], table, lim)


@njit(cache=True, error_model="numpy")
def _log_sqrt2_from_log2_inplace(ls, table, lim):
    """_log_sqrt2_from_log2_slice with out = ls (one array: no overlap to check)."""
    for i in range(ls.shape[0]):
        ls[i] = _log_sqrt2_entry(ls[i], table, lim)


@njit(parallel=True, cache=True)
def _log_sqrt2_from_log2(log2q, table, limit, out, inplace):
    """out[i] = table[index], index = clamp(rint(-2 * log2q[i]), 0, 2^b - 1) if that raw < limit else
    2^b (zero state; NaN too): the definition's arithmetic after its float32 log2, element by element."""
    n = log2q.shape[0]
    lim = np.float32(limit)
    for t in prange((n + CHUNK - 1) // CHUNK):
        i0 = t * CHUNK
        i1 = min(n, (t + 1) * CHUNK)
        if inplace:
            _log_sqrt2_from_log2_inplace(log2q[i0:i1], table, lim)
        else:
            _log_sqrt2_from_log2_slice(log2q[i0:i1], table, lim, out[i0:i1])


def log_sqrt2_from_log2(log2q: np.ndarray, table: np.ndarray, limit: int, out: np.ndarray) -> None:
    """Finish the log-sqrt(2) fake-quantization from float32 log2(x / delta) (C-contiguous) into out."""
    log2q, out, table = log2q.reshape(-1), out.reshape(-1), np.ascontiguousarray(table, dtype=np.float32)
    inplace = log2q.ctypes.data == out.ctypes.data
    if not inplace and np.may_share_memory(log2q, out):
        raise ValueError("log_sqrt2_from_log2: out must be log2q itself or not overlap it")
    if _parallel(log2q.size):
        _log_sqrt2_from_log2(log2q, table, limit, out, inplace)
    elif inplace:
        _log_sqrt2_from_log2_inplace(log2q, table, np.float32(limit))
    else:
        _log_sqrt2_from_log2_slice(log2q, table, np.float32(limit), out)
