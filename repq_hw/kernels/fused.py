"""Fused chains of the fast backend: each composes the fast kernels of its ops and adds no arithmetic.

A chain runs only where no caller asked for the intermediate tensor (``run_graph`` without ``keep_all``; the
plan in ``repq_hw.emu.fast`` finds the chains): the intermediate never reaches memory, and every output bit
is the unfused plan's, hence the reference's (tests/emu/test_fast_paths.py compares the fused result with
the unfused tensors on real graphs).  Each op's own code stays in its module.  (q.k^T -> softmax -> log2_code
per row tile was tried and measured 2x slower than q.k^T followed by the softmax -> log2_code chain on Zen 5:
the softmax row loops did not vectorize on the tile's scratch buffer; so it is not fused.)

==========================  ==========================================  =====================================
chain                       composes                                    intermediate that is not stored
==========================  ==========================================  =====================================
``softmax_log2_code``       ``softmax.softmax_fast_row`` then the       the uint{P} probabilities
                            ``log2_code`` table (``log2_code_table``,
                            the reference evaluated on every input)
``gemm_requant``            ``gemm_vnni._tile_vnni`` (8 x 32 tiles of   the int32 GEMM products
                            one 8-row block) then the requantize row
                            kernel (``rounding._requant_row``)
``gemm_requant_lut``        the same, then the lookup table             the int32 products and the
                            (``lut.lookup_fast``'s indexing): fc1 ->    requantized codes
                            GELU-input requantize -> GELU
``gemm_requant_slices``     the same, requantizing several column       the int32 GEMM products and the
                            slices (q, k, v) with their own constants   slices
==========================  ==========================================  =====================================
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .gemm_vnni import _a_u8, _rowsum_u8, _tag, _tile_vnni
from .rounding import _requant_row
from .softmax import softmax_fast_consts, softmax_fast_row

__all__ = ["gemm_requant", "gemm_requant_lut", "gemm_requant_slices", "softmax_log2_code"]


@njit(cache=True, parallel=True)
def _softmax_log2_rows(x, m, s, half_s, f, p, lut, mode, table, out, bad):
    rows, n = x.shape
    nt = table.shape[0]
    chunk = 64
    for c in prange((rows + chunk - 1) // chunk):
        row = np.empty(n, np.uint32)
        for i in range(c * chunk, min(rows, (c + 1) * chunk)):
            softmax_fast_row(x, i, m, s, half_s, f, p, lut, mode, row)
            miss = 0
            for j in range(n):
                v = np.int64(row[j])
                ok = v < nt
                out[i, j] = table[v if ok else 0]
                miss |= np.int64(not ok)
            if miss:
                bad[0] = 1


def softmax_log2_code(x: np.ndarray, multiplier: int, shift: int, frac_bits: int, lut_bits: int, out_bits: int,
                      rounding, table: np.ndarray, out_dtype) -> np.ndarray | None:
    """``log2_code(softmax(x, ...))`` without storing the probabilities; None where a fast precondition fails
    (the caller then runs the two ops unfused, which gives the reference's result or error).

    Args:
        x: int32 scores ``[..., N]`` (softmax over the last axis).
        multiplier, shift, frac_bits, lut_bits, out_bits, rounding: the softmax node's attributes.
        table: ``log2_code_table(thresholds, bits, in_bits)`` of the log2_code node (every possible input).
        out_dtype: the log2_code output's storage dtype.

    Returns:
        the codes, ``x``'s shape, or None.
    """
    k = softmax_fast_consts(x, multiplier, shift, frac_bits, lut_bits, out_bits, rounding)
    if k is None:
        return None
    x2 = np.ascontiguousarray(x).reshape(-1, x.shape[-1])
    out = np.empty(x2.shape, dtype=out_dtype)
    bad = np.zeros(1, dtype=np.uint8)
    _softmax_log2_rows(x2, *k, table.astype(out_dtype, copy=False), out, bad)
    return None if bad[0] else out.reshape(x.shape)


# ---------------------------------------------------------------------------------------------
# GEMM (vnni path) -> requantize: each 8-row block of int32 products is requantized while in cache
# ---------------------------------------------------------------------------------------------


@njit(cache=True, inline="always")
def _block_products(tag, a, lda, r0, rows, bp, kqn, npan, cst, ev, rowsum, use_rs, n):
    """The int32 products of the 8-row block starting at row r0 (``rows`` <= 8 of them live): [8, n]."""
    acc = np.empty(8 * n, np.int32)
    a_blk = a[r0 * lda:]
    rs_blk = rowsum[r0:]
    for p in range(npan):
        _tile_vnni(tag, a_blk, lda, 0, rows, bp, p * kqn * 128, kqn, cst, ev, rs_blk, use_rs, p * 32, acc, n, n)
    return acc.reshape(8, n)


def _vnni_operands(x: np.ndarray, pk, width: int):
    """(uint8 activations padded for the vnni tiles, their row stride, row sums) for a ``vnni`` packing; None
    where the chain's preconditions fail (another path, another shape, codes above the packing's a_max)."""
    if pk.path != "vnni" or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != pk.k:
        return None
    m = x.shape[0]
    if m == 0 or width == 0 or pk.n == 0 or (pk.a_max < 255 and int(x.max()) > pk.a_max):
        return None
    a8, kp = _a_u8(x, 4)
    rowsum = np.zeros(m, dtype=np.int32)
    if pk.use_rowsum:
        _rowsum_u8(a8, m, kp, pk.k, rowsum)
    return a8, kp, rowsum


def gemm_requant(x: np.ndarray, pk, rc, out_dtype) -> np.ndarray | None:
    """``requant_fast(gemm_packed(x, pk), rc)`` without storing the int32 products, for a ``vnni`` packing;
    None otherwise or when a precondition fails (the caller runs the two nodes unfused). The one-slice case of
    :func:`gemm_requant_slices`.

    Args:
        x: uint8 activations ``[M, K]``.
        pk: ``gemm_vnni.prepare_gemm``'s packing.
        rc: ``rounding.RequantConsts`` of the requantize node.
        out_dtype: the requantize output's storage dtype.
    """
    got = _requant_slices(x, pk, [0], pk.n, [rc], out_dtype)
    return None if got is None else got[0]


@njit(cache=True, parallel=True)
def _gemm_vnni_requant_slices(tag, a, lda, m, bp, kqn, npan, cst, ev, rowsum, use_rs, n, starts, w, mult, sh, h,
                              sm, off, zp, lo, hi, e1, e2, out):
    mb = (m + 7) // 8
    for t in prange(mb):
        r0 = 8 * t
        rows = min(8, m - r0)
        acc2 = _block_products(tag, a, lda, r0, rows, bp, kqn, npan, cst, ev, rowsum, use_rs, n)
        for si in range(starts.shape[0]):
            accs = acc2[:, starts[si]:starts[si] + w]
            out_blk = out[si, r0:r0 + rows]
            for rr in range(rows):
                _requant_row(accs, rr, mult[si], sh[si], h[si], sm[si], off[si], zp[si], lo[si], hi[si], e1[si],
                             e2[si], out_blk)


def gemm_requant_slices(x: np.ndarray, pk, starts: list[int], width: int, rcs: list, out_dtype
                        ) -> list[np.ndarray] | None:
    """``[requant_fast(gemm_packed(x, pk)[:, s:s+width], rc) for s, rc in zip(starts, rcs)]`` (e.g. the q, k, v
    slices of the qkv projection) without storing the int32 products, for a ``vnni`` packing; None otherwise.
    """
    return _requant_slices(x, pk, starts, width, rcs, out_dtype)


def _requant_slices(x: np.ndarray, pk, starts: list[int], width: int, rcs: list, out_dtype
                    ) -> list[np.ndarray] | None:
    if not rcs or any(rc.c != width for rc in rcs):
        return None
    ops = _vnni_operands(x, pk, width)
    if ops is None:
        return None
    a8, kp, rowsum = ops
    m = x.shape[0]
    ns = len(rcs)
    out = np.empty((ns, m, width), dtype=out_dtype)

    def stack(name):
        return np.ascontiguousarray(np.stack([getattr(rc, name) for rc in rcs]))

    def ints(name):
        return np.array([getattr(rc, name) for rc in rcs], dtype=np.int64)

    _gemm_vnni_requant_slices(_tag("vnni"), a8, kp, m, pk.b, kp // 4, pk.panels, pk.const, pk.e, rowsum,
                              pk.use_rowsum, pk.n, np.array(starts, dtype=np.int64), width, stack("mult"),
                              stack("sh"), stack("h"), stack("sm"), stack("off"), ints("zp"), ints("lo"), ints("hi"),
                              ints("e1"), ints("e2"), out)
    return [out[s] for s in range(ns)]


@njit(cache=True, parallel=True)
def _gemm_vnni_requant_lut(tag, a, lda, m, bp, kqn, npan, cst, ev, rowsum, use_rs, n, mult, sh, h, sm, off, zp, lo,
                           hi, e1, e2, table, in_min, out, bad):
    mb = (m + 7) // 8
    nt = table.shape[0]
    for t in prange(mb):
        r0 = 8 * t
        rows = min(8, m - r0)
        q = np.empty((8, n), np.int64)
        acc2 = _block_products(tag, a, lda, r0, rows, bp, kqn, npan, cst, ev, rowsum, use_rs, n)
        miss = 0
        for rr in range(rows):
            _requant_row(acc2, rr, mult, sh, h, sm, off, zp, lo, hi, e1, e2, q)
            for j in range(n):
                v = q[rr, j] - in_min
                ok = (v >= 0) & (v < nt)
                out[r0 + rr, j] = table[v if ok else 0]
                miss |= np.int64(not ok)
        if miss:
            bad[0] = 1


def gemm_requant_lut(x: np.ndarray, pk, rc, table: np.ndarray, in_min: int, out_dtype) -> np.ndarray | None:
    """``lookup_fast(requant_fast(gemm_packed(x, pk), rc), table, in_min)`` (e.g. fc1 -> GELU-input requantize
    -> GELU table) without storing the int32 products or the requantized codes, for a ``vnni`` packing;
    None otherwise, when the table does not fit ``out_dtype`` or an index falls outside it (the caller then
    runs the nodes unfused, which raises the reference's error)."""
    if rc.c != pk.n:
        return None
    info = np.iinfo(out_dtype)
    t = np.asarray(table)
    if t.size == 0 or t.dtype.kind not in "iu" or int(t.min()) < info.min or int(t.max()) > info.max:
        return None
    ops = _vnni_operands(x, pk, pk.n)
    if ops is None:
        return None
    a8, kp, rowsum = ops
    m = x.shape[0]
    out = np.empty((m, pk.n), dtype=out_dtype)
    bad = np.zeros(1, dtype=np.uint8)
    _gemm_vnni_requant_lut(_tag("vnni"), a8, kp, m, pk.b, kp // 4, pk.panels, pk.const, pk.e, rowsum,
                           pk.use_rowsum, pk.n, rc.mult, rc.sh, rc.h, rc.sm, rc.off, rc.zp, rc.lo, rc.hi, rc.e1, rc.e2,
                           t.astype(out_dtype), int(in_min), out, bad)
    return None if bad[0] else out
