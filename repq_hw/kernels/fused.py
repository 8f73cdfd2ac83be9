"""Fused chains of the fast backend: each composes the fast kernels of its ops and adds no arithmetic.

A chain runs only where no caller asked for the intermediate tensor (``run_graph`` without ``keep_all``; the
plan in ``repq_hw.emu.fast`` finds the chains): the intermediate never reaches memory, and every output bit
is the unfused plan's, hence the reference's (tests/emu/test_fast_paths.py compares the fused result with
the unfused tensors on real graphs).  Each op's own code stays in its module.  (q.k^T -> softmax -> log2_code
is not fused.  Per row tile it measured 2x slower on Zen 5: the softmax row loops did not vectorize on the
tile's scratch buffer.  Per head, with one head's scores in a per-thread [N, N] buffer, it was bit-exact and
1.03-1.13x the pair in isolation, but gave no gain inside a forward on Zen 5, so it was not kept: the
scores of a batch of 8 (7.5 MB for DeiT-S) stay in the 32 MB L3 between the two kernels.)

==========================  ==========================================  =====================================
chain                       composes                                    intermediate that is not stored
==========================  ==========================================  =====================================
``softmax_log2_code``       ``softmax.softmax_exp_row32`` then          the uint{P} probabilities
                            ``log2_code._code_row`` (codes from per-row
                            thresholds on e, equal to the log2_code
                            table, the reference evaluated on every
                            input); legacy ``softmax_fast_row`` + table
                            as fallback
``gemm_requant``            the packing's tiles (``gemm_vnni``:         the int32 GEMM products
                            ``_tile_vnni`` 8 x 32, ``_tile_u8s8`` /
                            ``_tile_i16`` 6 x 16 on AVX2), panel by
                            panel over a block of <= 32 rows, then
                            ``rounding.requant_run`` on
                            each row of the block
``gemm_requant_lut``        the same, then the lookup table             the int32 products and the
                            (``lut.lookup_fast``'s indexing; on VBMI    requantized codes
                            CPUs ``lut.lookup_bytes_row``, 64 codes
                            per vpermi2b): fc1 -> GELU-input
                            requantize -> GELU
``gemm_requant_slices``     the same, requantizing several column       the int32 GEMM products and the
                            slices (q, k, v) with their own constants,  slices, the requantized codes
                            each written in split-heads order           before the head split
``gemm_requant_add``        the GEMM -> requantize block, then the      the int32 products and the
                            saturating add of the residual stream       requantized codes
                            (``add.sat_add``'s arithmetic)
``merge_heads_requant``     attention x V's fast kernel, then the       the int32 [B, N, H*d] merged
                            requantize row kernel on the gathered       heads
                            heads (merge heads -> requantize)
==========================  ==========================================  =====================================
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from . import lut, simd
from .gemm_pack import u8s8_period
from .gemm_vnni import _a_i16, _a_u8, _rowsum_u8, _tag, _tile_i16, _tile_u8s8, _tile_vnni
from .log2_code import _change_points, _code_row
from .lut import lookup_bytes_row
from .rounding import requant_run
from .softmax import softmax_exp_row32, softmax_fast2_consts, softmax_fast_consts, softmax_fast_row

__all__ = ["gemm_requant", "gemm_requant_add", "gemm_requant_lut", "gemm_requant_slices", "merge_heads_requant",
           "softmax_log2_code"]


@njit(cache=True, parallel=True)
def _softmax_log2_rows_legacy(x, m, s, half_s, f, p, lut, mode, table, out, bad):
    """The previous fused kernel (int64 lanes, float64 division, table lookup per element): the fallback
    where :func:`softmax_fast2_consts` or the change-point form does not apply, and the benchmark's baseline."""
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


@njit(cache=True, inline="always")
def _softmax_log2_row(x, i, m, s, c, dlim, ub, p, et, mode, vec, dpts, w, base, uidx, erow, g, acc, out):
    tot = softmax_exp_row32(x, i, m, s, c, dlim, ub, et, mode, vec, uidx, erow)
    _code_row(erow, tot, p, mode, dpts, w, base, vec, g, acc, out, i)


@njit(cache=True, parallel=True)
def _softmax_log2_rows(x, m, s, c, dlim, ub, p, et, mode, vec, dpts, w, base, out):
    """The fused chain, int32 lanes (softmax.softmax_exp_row32 then :func:`_code_row`); the rounding mode
    is dispatched once so that each row loop is compiled for a constant mode."""
    rows, n = x.shape
    n16 = (n + 15) // 16 * 16
    chunk = 32
    for ch in prange((rows + chunk - 1) // chunk):
        uidx = np.full(n16, ub, np.int32)  # pad lanes: T[ub] = 0
        erow = np.zeros(n16, np.int32)
        acc = np.zeros(n16, np.int32)
        g = np.zeros(dpts.shape[0], np.int32)
        for i in range(ch * chunk, min(rows, (ch + 1) * chunk)):
            if mode == 0:
                _softmax_log2_row(x, i, m, s, c, dlim, ub, p, et, 0, vec, dpts, w, base, uidx, erow, g, acc, out)
            elif mode == 1:
                _softmax_log2_row(x, i, m, s, c, dlim, ub, p, et, 1, vec, dpts, w, base, uidx, erow, g, acc, out)
            elif mode == 2:
                _softmax_log2_row(x, i, m, s, c, dlim, ub, p, et, 2, vec, dpts, w, base, uidx, erow, g, acc, out)
            else:
                _softmax_log2_row(x, i, m, s, c, dlim, ub, p, et, 3, vec, dpts, w, base, uidx, erow, g, acc, out)


def softmax_log2_code(x: np.ndarray, multiplier: int, shift: int, frac_bits: int, lut_bits: int, out_bits: int,
                      rounding, table: np.ndarray, out_dtype, *, vec: bool = True,
                      legacy: bool = False) -> np.ndarray | None:
    """``log2_code(softmax(x, ...))`` without storing the probabilities; None where a fast precondition fails
    (the caller then runs the two ops unfused, which gives the reference's result or error).

    Args:
        x: int32 scores ``[..., N]`` (softmax over the last axis).
        multiplier, shift, frac_bits, lut_bits, out_bits, rounding: the softmax node's attributes.
        table: ``log2_code_table(thresholds, bits, in_bits)`` of the log2_code node (every possible input).
        out_dtype: the log2_code output's storage dtype.
        vec: explicit vector gather and code step (``softmax.gather16``, :func:`_codes_vec`) or their
            plain-loop twins (same bits).
        legacy: force the previous kernel (baseline for benchmarks and tests).

    Returns:
        the codes, ``x``'s shape, or None.
    """
    k2 = None if legacy else softmax_fast2_consts(x, multiplier, shift, frac_bits, lut_bits, out_bits, rounding)
    cp = None if k2 is None else _change_points(table, out_dtype, k2[5])
    x2 = np.ascontiguousarray(x).reshape(-1, x.shape[-1]) if x.ndim else x
    if cp is not None:
        out = np.empty(x2.shape, dtype=out_dtype)
        _softmax_log2_rows(x2, *k2, bool(vec), *cp, out)
        return out.reshape(x.shape)
    k = softmax_fast_consts(x, multiplier, shift, frac_bits, lut_bits, out_bits, rounding)
    if k is None:
        return None
    out = np.empty(x2.shape, dtype=out_dtype)
    bad = np.zeros(1, dtype=np.uint8)
    _softmax_log2_rows_legacy(x2, *k, table.astype(out_dtype, copy=False), out, bad)
    return None if bad[0] else out.reshape(x.shape)


# ---------------------------------------------------------------------------------------------
# GEMM (vnni, u8s8, i16 paths) -> requantize [-> split heads | -> lookup table | -> residual add]
# ---------------------------------------------------------------------------------------------
#
# Rows go in blocks of up to ROWS_PER_BLOCK (one block per prange iteration); inside a block each 32-column
# weight panel is used by all its 8-row (vnni) or 6-row (u8s8, i16: 16-column panels) tiles in turn (it stays
# in L1), the int32 products of the block land
# in a per-thread buffer (<= 256 KiB, in L2) and are requantized row by row from there (long contiguous runs:
# the requantize loops vectorize), so the products never reach memory.

ROWS_PER_BLOCK = 32

LUT_BYTES_GENERIC = False
"""Tests: run the byte-table lookup of the fc1 -> GELU chain on its generic twin (any CPU, also without VBMI)."""


def _block_rows(n: int, tile_rows: int = 8) -> int:
    """Rows per block for n output columns: a multiple of the tile's rows, at most ROWS_PER_BLOCK, products
    <= 256 KiB."""
    t = tile_rows
    return max(t, min(ROWS_PER_BLOCK // t * t, (65536 // max(n, 1)) // t * t))


CHAIN_PATHS = ("vnni", "u8s8", "i16")
"""The GEMM packings the chains run on (their tiles: ``gemm_vnni._tile_vnni`` 8 x 32, ``_tile_u8s8`` and
``_tile_i16`` 6 x 16)."""


def _block_at(tag, a, a16, ev, lda, m, bp, kq, period, npan, cst, rowsum, use_rs, n, r0, rb, acc):
    """The int32 products of rows [r0, r0 + rows) into ``acc`` (row stride n), panel by panel; returns rows.

    The packing's tiles are picked from the argument *types* while compiling (so a kernel compiles only its
    own path's tiles, and an AVX2 target never sees a VNNI instruction): a16 (int16 rows) not None -> i16;
    else ev (the vnni packing's e) None -> u8s8; else vnni.  a: uint8 rows (vnni, u8s8); kq: the tiles' K
    step count (k-quads, or k-pairs for i16); period: the u8s8 int16 summing period.  (Numba only: the
    implementations are the overload below.)"""
    raise NotImplementedError("_block_at runs inside Numba kernels only")


@overload(_block_at, inline="always")
def _block_at_impl(tag, a, a16, ev, lda, m, bp, kq, period, npan, cst, rowsum, use_rs, n, r0, rb, acc):
    if not isinstance(a16, types.NoneType):
        def i16(tag, a, a16, ev, lda, m, bp, kq, period, npan, cst, rowsum, use_rs, n, r0, rb, acc):
            rows = min(rb, m - r0)
            for p in range(npan):
                for s6 in range(0, rows, 6):
                    _tile_i16(tag, a16[(r0 + s6) * lda:], lda, 0, min(6, rows - s6), bp, p * kq * 32, kq, cst,
                              p * 16, acc[s6 * n:], n, n)
            return rows
        return i16
    if isinstance(ev, types.NoneType):
        def u8s8(tag, a, a16, ev, lda, m, bp, kq, period, npan, cst, rowsum, use_rs, n, r0, rb, acc):
            rows = min(rb, m - r0)
            for p in range(npan):
                for s6 in range(0, rows, 6):
                    _tile_u8s8(tag, a[(r0 + s6) * lda:], lda, 0, min(6, rows - s6), bp, p * kq * 64, kq, period,
                               cst, p * 16, acc[s6 * n:], n, n)
            return rows
        return u8s8

    def vnni(tag, a, a16, ev, lda, m, bp, kq, period, npan, cst, rowsum, use_rs, n, r0, rb, acc):
        rows = min(rb, m - r0)
        for p in range(npan):
            for s8 in range(0, rows, 8):
                _tile_vnni(tag, a[(r0 + s8) * lda:], lda, 0, min(8, rows - s8), bp, p * kq * 128, kq, cst, ev,
                           rowsum[r0 + s8:], use_rs, p * 32, acc[s8 * n:], n, n)
        return rows
    return vnni


@njit(cache=True, parallel=True)
def _chain_slices(tag, a, a16, ev, lda, m, bp, kq, period, npan, cst, rowsum, use_rs, n, rb, starts, w, d,
                  mult, sh, h, off, has_off, zp, lo, hi, e1, e2, row_stride, head_stride, groups, tokens, head_block,
                  out):
    """out[s, dst(r) + hd * head_stride + j] = requantize(product[r, starts[s] + hd * d + j]) (slice s, head hd,
    j < d).  Rows r = (b, g, t) of B images x groups x tokens: dst(r) = (b*groups + g) * head_block
    + t * row_stride (split-heads order; the row-major [m, w] slice is one head of d = w, groups = 1,
    tokens = m, row_stride = w, head_block = 0)."""
    per_image = groups * tokens
    heads = w // d
    for blk in prange((m + rb - 1) // rb):
        acc = np.empty(rb * n, np.int32)
        qrow = np.empty(w, out.dtype)
        r0 = blk * rb
        rows = _block_at(tag, a, a16, ev, lda, m, bp, kq, period, npan, cst, rowsum, use_rs, n, r0, rb, acc)
        for si in range(starts.shape[0]):
            dst = out[si]
            c0 = starts[si]
            for rr in range(rows):
                r = r0 + rr
                b = r // per_image
                g = (r - b * per_image) // tokens
                base = (b * groups + g) * head_block + (r - b * per_image - g * tokens) * row_stride
                if heads == 1:
                    requant_run(acc[rr * n + c0:], w, mult[c0:], sh[c0:], h[c0:], off[c0:], has_off, e1, e2,
                                lo[si], hi[si], zp[si], dst[base:])
                    continue
                # the whole slice row in one run (one call per head of d = 64 measured 1.6x slower), then the
                # heads copied to their places
                requant_run(acc[rr * n + c0:], w, mult[c0:], sh[c0:], h[c0:], off[c0:], has_off, e1, e2, lo[si],
                            hi[si], zp[si], qrow)
                for hd in range(heads):
                    o = dst[base + hd * head_stride:]
                    src = qrow[hd * d:]
                    for j in range(d):
                        o[j] = src[j]


def _gemm_operands(x: np.ndarray, pk, width: int) -> tuple | None:
    """The leading arguments of the GEMM chain kernels for x against the packing ``pk`` (tile tag,
    padded activations, packed weights, constants, row sums: see ``_block_at``); None where the chain's
    preconditions fail (a path without chain tiles, another shape, codes above the packing's a_max)."""
    if pk.path not in CHAIN_PATHS or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != pk.k:
        return None
    m = x.shape[0]
    if m == 0 or width == 0 or pk.n == 0 or (pk.a_max < 255 and int(x.max()) > pk.a_max):
        return None
    rowsum = np.zeros(max(m, 1) if pk.path == "vnni" else 1, dtype=np.int32)
    a8 = a16 = ev = None
    period = 0
    if pk.path == "i16":
        a16, kp = _a_i16(x)
        kq = kp // 2
    else:
        a8, kp = _a_u8(x, 4)
        kq = kp // 4
        if pk.path == "u8s8":
            period = min(u8s8_period(pk.a_max, pk.b_absmax), kq + 1)
        else:
            ev = pk.e
            if pk.use_rowsum:
                _rowsum_u8(a8, m, kp, pk.k, rowsum)
    return (_tag(pk.path), a8, a16, ev, kp, m, pk.b, kq, period, pk.panels, pk.const, rowsum,
            pk.use_rowsum and pk.path == "vnni", pk.n)


def _rows_per_block(pk) -> int:
    return _block_rows(pk.n, 8 if pk.path == "vnni" else 6)


def gemm_requant(x: np.ndarray, pk, rc, out_dtype, consts: tuple | None = None) -> np.ndarray | None:
    """``requant_fast(gemm_packed(x, pk), rc)`` without storing the int32 products, for a chain packing (``CHAIN_PATHS``);
    None otherwise or when a precondition fails (the caller runs the two nodes unfused). The one-slice case of
    :func:`gemm_requant_slices`.

    Args:
        x: uint8 activations ``[M, K]``.
        pk: ``gemm_vnni.prepare_gemm``'s packing.
        rc: ``rounding.RequantConsts`` of the requantize node.
        out_dtype: the requantize output's storage dtype.
        consts: ``slice_consts([0], pk.n, [rc], pk.n)``, made once by a caller that runs the chain often.
    """
    got = _requant_slices(x, pk, [0], pk.n, [rc], out_dtype, None, consts)
    return None if got is None else got[0]


def gemm_requant_slices(x: np.ndarray, pk, starts: list[int], width: int, rcs: list, out_dtype,
                        heads: tuple[int, int, int] | None = None, consts: tuple | None = None
                        ) -> list[np.ndarray] | None:
    """``[requant_fast(gemm_packed(x, pk)[:, s:s+width], rc) for s, rc in zip(starts, rcs)]`` (e.g. the q, k, v
    slices of the qkv projection) without storing the int32 products, for a chain packing (``CHAIN_PATHS``); None otherwise
    (also for constants of different rounding modes).

    ``heads = (H, G, N)``: each result is also split into heads as ``SPLIT_HEADS`` with H heads and G windows
    does (x's M = B*G*N rows are B images of G windows of N tokens): ``[B, G*H, N, width/H]``.
    ``consts``: ``slice_consts(starts, width, rcs, pk.n)``, made once by a caller that runs the chain often."""
    return _requant_slices(x, pk, starts, width, rcs, out_dtype, heads, consts)


def slice_consts(starts: list[int], width: int, rcs: list, n: int) -> tuple | None:
    """The requantize constants of :func:`gemm_requant_slices` laid out for its kernel (a pure function of
    its arguments): per GEMM column (mult32, sh32, h, off, and whether any offset is non-zero; one full-width
    slice uses rc's own arrays), per
    slice (starts, zp, lo, hi), and the rounding mode's (e1, e2); None where the slices do not fit the n
    columns, a constant set has another width, or the rounding modes differ."""
    if (not rcs or len(starts) != len(rcs) or any(rc.c != width for rc in rcs) or len({rc.mode for rc in rcs}) != 1
            or min(starts) < 0 or max(starts) + width > n):
        return None
    names = ("mult32", "sh32", "h", "off")
    if list(starts) == [0] and width == n:
        cols = tuple(getattr(rcs[0], k) for k in names)
    else:
        cols = tuple(np.zeros(n, getattr(rcs[0], k).dtype) for k in names)
        for s0, rc in zip(starts, rcs):
            for k, col in zip(names, cols):
                col[s0:s0 + width] = getattr(rc, k)
    per_slice = tuple(np.array(v, np.int64) for v in (starts, [rc.zp for rc in rcs], [rc.lo for rc in rcs],
                                                      [rc.hi for rc in rcs]))
    return (*cols, any(rc.has_off for rc in rcs)), per_slice, (rcs[0].e1, rcs[0].e2)


def _requant_slices(x: np.ndarray, pk, starts: list[int], width: int, rcs: list, out_dtype,
                    heads: tuple[int, int, int] | None = None, consts: tuple | None = None
                    ) -> list[np.ndarray] | None:
    if consts is None:
        consts = slice_consts(starts, width, rcs, pk.n)
        if consts is None:
            return None
    (mult, sh, h, off, has_off), (starts_a, zp, lo, hi), (e1, e2) = consts
    m = x.shape[0]
    hh, groups, tokens = (1, 1, max(m, 1)) if heads is None else (int(v) for v in heads)
    if hh < 1 or groups < 1 or tokens < 1 or width % hh or m % (groups * tokens):
        return None
    d = width // hh
    head = _gemm_operands(x, pk, width)
    if head is None:
        return None
    if heads is None:
        row_stride, head_stride, head_block = width, d, 0
    else:
        row_stride, head_stride, head_block = d, tokens * d, hh * tokens * d
    ns = starts_a.shape[0]
    out = np.empty((ns, m * width), dtype=out_dtype)
    _chain_slices(*head, _rows_per_block(pk), starts_a, width, d, mult, sh, h, off, has_off, zp, lo, hi, e1, e2,
                  row_stride, head_stride, groups, tokens, head_block, out)
    shape = (m, width) if heads is None else (m // (groups * tokens), groups * hh, tokens, d)
    return [out[si].reshape(shape) for si in range(ns)]


@njit(cache=True, parallel=True)
def _chain_requant_lut(tag, a, a16, ev, lda, m, bp, kq, period, npan, cst, rowsum, use_rs, n,
                       mult, sh, h, off, has_off, zp, lo, hi, e1, e2, rb, table, in_min, in_table, out, bad):
    """``in_table``: every requantized code (clamped to [lo + zp, hi + zp]) indexes the table, so the lookups
    need no bounds check (the caller proved it); else each index is checked and a miss is reported."""
    ntab = table.shape[0]
    for blk in prange((m + rb - 1) // rb):
        acc = np.empty(rb * n, np.int32)
        q = np.empty(n, np.int32)
        r0 = blk * rb
        rows = _block_at(tag, a, a16, ev, lda, m, bp, kq, period, npan, cst, rowsum, use_rs, n, r0, rb, acc)
        miss = 0
        for rr in range(rows):
            requant_run(acc[rr * n:], n, mult, sh, h, off, has_off, e1, e2, lo, hi, zp, q)
            orow = out[r0 + rr]
            if in_table:  # (an explicit 16-lane gather measured no faster on Zen 5)
                for j in range(n):
                    orow[j] = table[q[j] - in_min]
            else:
                for j in range(n):
                    v = q[j] - in_min
                    ok = (v >= 0) & (v < ntab)
                    orow[j] = table[v if ok else 0]
                    miss |= np.int64(not ok)
        if miss:
            bad[0] = 1


@njit(cache=True, parallel=True)
def _chain_requant_lut8(tag, a, a16, ev, lda, m, bp, kq, period, npan, cst, rowsum, use_rs, n,
                        mult, sh, h, off, has_off, zp, lo, hi, e1, e2, rb, ptag, tbl, nseg, base, out):
    """The chain with a byte table (``lut.byte_table``) looked up 64 codes at a time (``lut.lookup_bytes_row``);
    every requantized code + base is in the table (the caller proved it).  out: 1-D [m * n]."""
    for blk in prange((m + rb - 1) // rb):
        acc = np.empty(rb * n, np.int32)
        q = np.empty(n, np.int32)
        ib = np.empty(n, np.uint8)
        sb = np.empty(n, np.uint8)
        r0 = blk * rb
        rows = _block_at(tag, a, a16, ev, lda, m, bp, kq, period, npan, cst, rowsum, use_rs, n, r0, rb, acc)
        for rr in range(rows):
            requant_run(acc[rr * n:], n, mult, sh, h, off, has_off, e1, e2, lo, hi, zp, q)
            lookup_bytes_row(ptag, q, n, base, tbl, nseg, ib, sb, out, (r0 + rr) * n)


def gemm_requant_lut(x: np.ndarray, pk, rc, table: np.ndarray, in_min: int, out_dtype) -> np.ndarray | None:
    """``lookup_fast(requant_fast(gemm_packed(x, pk), rc), table, in_min)`` (e.g. fc1 -> GELU-input requantize
    -> GELU table) without storing the int32 products or the requantized codes, for a chain packing (``CHAIN_PATHS``);
    None otherwise, when the table does not fit ``out_dtype`` or an index falls outside it (the caller then
    runs the nodes unfused, which raises the reference's error)."""
    if rc.c != pk.n:
        return None
    info = np.iinfo(out_dtype)
    t = np.asarray(table)
    if t.size == 0 or t.dtype.kind not in "iu" or int(t.min()) < info.min or int(t.max()) > info.max:
        return None
    head = _full_width_args(x, pk, rc)
    if head is None:
        return None
    out = np.empty((x.shape[0], pk.n), dtype=out_dtype)
    in_table = rc.lo + rc.zp - int(in_min) >= 0 and rc.hi + rc.zp - int(in_min) < t.size
    bt = lut.byte_table(t, out_dtype) if in_table and (LUT_BYTES_GENERIC or simd.has_vbmi()) else None
    if bt is not None:
        ptag = simd.GENERIC if LUT_BYTES_GENERIC else simd.NATIVE
        _chain_requant_lut8(*head, _rows_per_block(pk), ptag, bt[0], bt[1], -int(in_min), out.reshape(-1))
        return out
    bad = np.zeros(1, dtype=np.uint8)
    _chain_requant_lut(*head, _rows_per_block(pk), t.astype(out_dtype), int(in_min), in_table, out, bad)
    return None if bad[0] else out


def _full_width_args(x: np.ndarray, pk, rc) -> tuple | None:
    """The leading arguments of the one-requantizer chain kernels (``_gemm_operands``, then the requantizer's
    compact constants) for x against the whole packing; None where the chain's preconditions fail."""
    head = _gemm_operands(x, pk, pk.n)
    if head is None:
        return None
    return (*head, rc.mult32, rc.sh32, rc.h, rc.off, rc.has_off, rc.zp, rc.lo, rc.hi, rc.e1, rc.e2)


# ---------------------------------------------------------------------------------------------
# attention x V (any path) -> merge heads -> requantize: the int32 heads are requantized while gathered
# ---------------------------------------------------------------------------------------------


@njit(cache=True, parallel=True)
def _merge_heads_requant_rows(y, groups, heads, mult, sh, h, off, has_off, zp, lo, hi, e1, e2, out):
    """y: int32/int64 [B, groups*heads, N, d]; out: [B*groups*N, heads*d] with row (b, g, t) column
    (hd, j) = requantize(y[b, g*heads + hd, t, j]) under the constants of column hd*d + j.  Rows go in
    chunks (one gather buffer per chunk, not per row); heads are copied through 0-based row views."""
    nb, _, nt, d = y.shape
    rows = nb * groups * nt
    c = heads * d
    nch = min(rows, 64)
    for ch in prange(nch):
        row = np.empty(c, y.dtype)
        for r in range(ch * rows // nch, (ch + 1) * rows // nch):
            b = r // (groups * nt)
            g = (r - b * groups * nt) // nt
            t = r - b * groups * nt - g * nt
            for hd in range(heads):
                src = y[b, g * heads + hd, t]
                dst = row[hd * d:]
                for j in range(d):
                    dst[j] = src[j]
            requant_run(row, c, mult, sh, h, off, has_off, e1, e2, lo, hi, zp, out[r])


def merge_heads_requant(y: np.ndarray, groups: int, rc, out_dtype) -> np.ndarray | None:
    """``requant_fast(merge_heads(y, windows=groups), rc)``: y ``[B, G*H, N, d]`` (int32 or int64, |y| <= 2^31,
    e.g. attention x V) to ``[B, G*N, H*d]`` codes without storing the merged int32 tensor; None where a
    precondition fails (the caller runs the nodes unfused)."""
    if y.ndim != 4 or y.dtype not in (np.int32, np.int64) or groups < 1 or y.shape[1] % groups:
        return None
    nb, gh, nt, d = y.shape
    heads = gh // groups
    if rc.c != heads * d or (y.dtype == np.int64 and y.size and int(np.abs(y).max()) > (1 << 31)):
        return None
    out = np.empty((nb * groups * nt, heads * d), dtype=out_dtype)
    _merge_heads_requant_rows(np.ascontiguousarray(y), groups, heads, rc.mult32, rc.sh32, rc.h, rc.off, rc.has_off,
                              rc.zp, rc.lo, rc.hi, rc.e1, rc.e2, out)
    return out.reshape(nb, groups * nt, heads * d)


# ---------------------------------------------------------------------------------------------
# GEMM (vnni, u8s8, i16 paths) -> requantize -> saturating add of the residual stream
# ---------------------------------------------------------------------------------------------


@njit(cache=True, parallel=True)
def _chain_requant_add(tag, a, a16, ev, lda, m, bp, kq, period, npan, cst, rowsum, use_rs, n,
                       mult, sh, h, off, has_off, zp, lo, hi, e1, e2, rb, res, add_lo, add_hi, out):
    for blk in prange((m + rb - 1) // rb):
        acc = np.empty(rb * n, np.int32)
        q = np.empty(n, np.int32)
        r0 = blk * rb
        rows = _block_at(tag, a, a16, ev, lda, m, bp, kq, period, npan, cst, rowsum, use_rs, n, r0, rb, acc)
        for rr in range(rows):
            requant_run(acc[rr * n:], n, mult, sh, h, off, has_off, e1, e2, lo, hi, zp, q)  # in [lo + zp, hi + zp]
            rrow, orow = res[r0 + rr], out[r0 + rr]  # 0-based row views: the loop vectorizes
            for j in range(n):
                orow[j] = min(max(np.int64(rrow[j]) + q[j], add_lo), add_hi)


def gemm_requant_add(x: np.ndarray, pk, rc, residual: np.ndarray, add_min: int, add_max: int, out_dtype
                     ) -> np.ndarray | None:
    """``sat_add(residual, requant_fast(gemm_packed(x, pk), rc), add_min, add_max)`` (e.g. the attention or MLP
    output projection added to the residual stream) without storing the int32 products or the requantized
    codes, for a chain packing (``CHAIN_PATHS``); None where a precondition fails (the caller runs the nodes unfused).

    Args:
        x: uint8 activations ``[M, K]``; residual: integer ``[M, N]`` (N = the GEMM's outputs).
        add_min, add_max: the add's saturation bounds (its output type), int32 values.
    """
    if (rc.c != pk.n or residual.ndim != 2 or residual.shape != (x.shape[0], pk.n) or residual.dtype.kind not in "iu"
            or residual.dtype.itemsize > 4 or residual.dtype == np.uint32):
        return None
    head = _full_width_args(x, pk, rc)
    if head is None:
        return None
    out = np.empty((x.shape[0], pk.n), dtype=out_dtype)
    _chain_requant_add(*head, _rows_per_block(pk), np.ascontiguousarray(residual), int(add_min), int(add_max),
                       out)
    return out
