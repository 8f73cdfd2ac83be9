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
from llvmlite import ir as llir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

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


# ---------------------------------------------------------------------------------------------
# Codes from (e_j, S) without the probabilities: the log2 code step of the fused softmax -> log2_code
# chain (kernels/fused.py composes it with softmax.softmax_exp_row32); equal to the code table on P_j
# ---------------------------------------------------------------------------------------------

_CP_MAX = 64  # most change points of the code table the compare form takes (else: legacy kernel)


def _codes_vec(lanes: int):
    """An intrinsic ``f(erow, j, g, w, nd, base, acc)``: ``acc[j:j+lanes] = base + sum_{k<nd} w_k [erow >= g_k]``
    for 1-D C int32 arrays (in range, NOT checked), the lanes' counts held in one <lanes x i32> register
    across the nd change points (target-independent LLVM vectors: AVX-512, AVX2 or SSE).  Twin:
    :func:`_codes_scalar`."""

    @intrinsic
    def codes(typingctx, erow, j, g, w, nd, base, acc):
        for t in (erow, g, w, acc):
            if not (isinstance(t, types.Array) and t.ndim == 1 and t.layout == "C" and t.dtype == types.int32):
                raise TypeError(f"codes: expected 1-D C int32 arrays, got {t}")

        def codegen(context, builder, sig, args):
            i32 = llir.IntType(32)
            vt = llir.VectorType(i32, lanes)
            er, ga, wa, ac = (context.make_array(sig.args[k])(context, builder, args[k]) for k in (0, 2, 3, 6))

            def splat(v):
                v0 = builder.insert_element(llir.Constant(vt, llir.Undefined), v, llir.Constant(i32, 0))
                return builder.shuffle_vector(v0, llir.Constant(vt, llir.Undefined), llir.Constant(vt, None))

            ev = builder.load(builder.bitcast(builder.gep(er.data, [args[1]]), vt.as_pointer()), align=4)
            slot = cgutils.alloca_once(builder, vt)
            builder.store(splat(context.cast(builder, args[5], sig.args[5], types.int32)), slot)
            nd = context.cast(builder, args[4], sig.args[4], types.intp)
            with cgutils.for_range(builder, nd) as loop:
                gk = builder.load(builder.gep(ga.data, [loop.index]))
                wk = builder.load(builder.gep(wa.data, [loop.index]))
                sel = builder.select(builder.icmp_signed(">=", ev, splat(gk)), splat(wk), llir.Constant(vt, None))
                builder.store(builder.add(builder.load(slot), sel), slot)
            builder.store(builder.load(slot), builder.bitcast(builder.gep(ac.data, [args[1]]), vt.as_pointer()),
                          align=4)
            return context.get_dummy_value()

        return types.void(erow, j, g, w, nd, base, acc), codegen

    return codes


_codes16 = _codes_vec(16)
_codes32 = _codes_vec(32)


@njit(cache=True, inline="always")
def _codes_scalar(erow, j, g, w, nd, base, acc, lanes):
    """Plain-loop twin of the ``_codes_vec(lanes)`` intrinsics (same results)."""
    for t in range(j, j + lanes):
        a = np.int32(base)
        ej = erow[t]
        for k in range(nd):
            a += w[k] & -np.int32(ej >= g[k])
        acc[t] = a


@njit(cache=True, inline="always")
def _code_row(erow, tot, p, mode, dpts, w, base, vec, g, acc, out, i):
    """codes of one row from its e_j (``erow``, int32, padded to a multiple of 16) and S = ``tot``, without P_j:
    code(P) = base + sum_k w_k [P >= d_k] over the table's change points d_k in [1, 2^P], and since
    round_div(e * 2^P, S) is non-decreasing in e, P_j >= d  <=>  e_j >= G(d) with
      floor:               G = ceil(d*S / 2^P)
      half_up, half_away:  G = ceil((2d-1)*S / 2^(P+1))            (num >= 0: ties go up)
      half_even:           G = ceil(X / 2^(P+1)) if d even, floor(X / 2^(P+1)) + 1 if d odd, X = (2d-1)*S
    ((2d-1)*S <= 2^(P+1) * N * 2^E < 2^62: consts).  Then per 32 (16 at the end) lanes, counts in registers."""
    n = out.shape[1]
    nd = dpts.shape[0]
    for k in range(nd):
        d = dpts[k]
        if mode == 3:
            gk = (d * tot + (np.int64(1) << p) - 1) >> p
        elif mode == 1:
            xx = (2 * d - 1) * tot
            gk = ((xx + (np.int64(1) << (p + 1)) - 1) >> (p + 1)) if (d & 1) == 0 else (xx >> (p + 1)) + 1
        else:
            gk = ((2 * d - 1) * tot + (np.int64(1) << (p + 1)) - 1) >> (p + 1)
        g[k] = np.int32(min(gk, np.int64(0x7FFFFFFF)))  # e <= 2^E < 2^31: a clamped G is never reached
    n16 = erow.shape[0]
    j = 0
    if vec:
        while j + 32 <= n16:
            _codes32(erow, j, g, w, nd, base, acc)
            j += 32
        if j < n16:
            _codes16(erow, j, g, w, nd, base, acc)
    else:
        while j + 32 <= n16:
            _codes_scalar(erow, j, g, w, nd, base, acc, 32)
            j += 32
        if j < n16:
            _codes_scalar(erow, j, g, w, nd, base, acc, 16)
    for j in range(n):
        out[i, j] = acc[j]


_CP_CACHE: dict = {}


def _change_points(table: np.ndarray, out_dtype, p: int):
    """(d_k int64, w_k int32, base) of ``table.astype(out_dtype)`` over [0, 2^P]:
    ``t[P] = base + sum_k w_k [P >= d_k]``; None where the form does not apply (the table does not cover
    [0, 2^P], the codes are wider than 16 bits, or more than _CP_MAX change points).  Cached per table object."""
    key = (id(table), np.dtype(out_dtype).str, p)
    hit = _CP_CACHE.get(key)
    if hit is not None and hit[0] is table:
        return hit[1]
    got = None
    od = np.dtype(out_dtype)
    if table.ndim == 1 and table.shape[0] > (1 << p) and od.kind in "iu" and od.itemsize <= 2:
        t = table[:(1 << p) + 1].astype(od).astype(np.int64)
        d = np.flatnonzero(t[1:] != t[:-1]) + 1
        if d.size <= _CP_MAX:
            got = (d.astype(np.int64), (t[d] - t[d - 1]).astype(np.int32), int(t[0]))
    if len(_CP_CACHE) > 256:
        _CP_CACHE.clear()
    _CP_CACHE[key] = (table, got)
    return got
