"""Attention x V by shift-and-add with the sqrt(2) split (no multiplier on the attention operand).

Attention codes ``c`` are log-sqrt2 codes (weight ``2^(-c/2)``) with the zero state ``Z = 2^b - 1``.
Per output row (batch i, query m) and column d, with ``dv = v[i, n, d] - v_zp``::

    acc_even = sum_{n: c even = 2j}  dv << (F - j)
    acc_odd  = sum_{n: c odd = 2j+1} dv << (F - j - 1)
    out      = acc_even + rshift_round(acc_odd * R, Q),   R = round(sqrt(2) * 2^Q)

(``Z`` contributes nothing.)  ``out`` is int64 in units of ``2^-F`` (times delta * s_v).

Exactness: every shift is a left shift (no truncation) iff ``F >= ceil(c/2)`` for every non-Z code
present; the reference raises otherwise.  Headroom: ``N * V * 2^F * R < 2^63`` with
``V = max(|v_zp|, |255 - v_zp|)``, which bounds ``|acc_odd * R|`` and ``|out|``.  Error bound against
the float ideal ``sum 2^(-c/2) * dv * 2^F``: ``rho + |acc_odd| * |R - sqrt(2) * 2^Q| / 2^Q``
(``rho = 1/2`` for the half modes, ``< 1`` for floor) -- see ``docs/ops/attn_v_shift.md``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from . import simd
from .gemm_vnni import _tile_i16, _tile_vnni
from .rounding import _rshift_add, mode_id, rounding_rshift, rounding_rshift_bf, rounding_rshift_ref
from .simd import (
    add32,
    hsum32,
    keep_first_u8,
    load16,
    max_u8,
    min_u8,
    permb,
    permb2,
    sad_u8,
    splat16,
    store16,
    xor32,
    zero16,
    zero_where_u8,
)

__all__ = ["AV_PATHS", "attn_v_path", "attn_v_shift", "attn_v_shift_fast", "attn_v_shift_ref", "sqrt2_multiplier"]

_I64_MAX = (1 << 63) - 1


def sqrt2_multiplier(frac_bits: int) -> int:
    """``R = round(sqrt(2) * 2^Q)``, computed exactly with integers (no tie exists: sqrt(2) is irrational).

    ``r0 = isqrt(2 * 4^Q) = floor(sqrt(2) * 2^Q)``; round up iff ``(2*r0 + 1)^2 < 8 * 4^Q``.

    Args:
        frac_bits: Q (1..30).

    Raises:
        ValueError: Q out of range.
    """
    q = int(frac_bits)
    if not 1 <= q <= 30:
        raise ValueError(f"attn_v_shift: sqrt2_frac_bits={q} outside [1, 30]")
    r0 = math.isqrt(2 << (2 * q))
    return r0 + 1 if (2 * r0 + 1) ** 2 < (8 << (2 * q)) else r0


def _check(c, v, v_zp, bits, shift_frac, sqrt2_frac_bits, op):
    return _check_impl(c, v, v_zp, bits, shift_frac, sqrt2_frac_bits, op, True)


def _check_static(c, v, v_zp, bits, shift_frac, sqrt2_frac_bits, op):
    """:func:`_check` without the two scans of the codes (code above Z, truncation): the fast kernel
    makes them itself while it reads the codes, and hands a failing call to the plain kernel."""
    return _check_impl(c, v, v_zp, bits, shift_frac, sqrt2_frac_bits, op, False)


def _check_impl(c, v, v_zp, bits, shift_frac, sqrt2_frac_bits, op, scan):
    ca = np.asarray(c)
    va = np.asarray(v)
    if ca.dtype != np.uint8 or va.dtype != np.uint8:
        raise ValueError(f"{op}: codes and v must be uint8, got {ca.dtype} and {va.dtype}")
    if ca.ndim != 3 or va.ndim != 3 or ca.shape[0] != va.shape[0] or ca.shape[2] != va.shape[1]:
        raise ValueError(f"{op}: expected c [B, M, N] and v [B, N, D], got {ca.shape} and {va.shape}")
    b = int(bits)
    if not 2 <= b <= 8:
        raise ValueError(f"{op}: bits={b} outside [2, 8]")
    z = (1 << b) - 1
    if scan and ca.size and int(ca.max()) > z:
        raise ValueError(f"{op}: code {int(ca.max())} > zero state {z} for bits={b}")
    if isinstance(v_zp, bool) or not isinstance(v_zp, (int, np.integer)):
        raise ValueError(f"{op}: v_zp must be an integer scalar, got {v_zp!r}")  # noqa: TRY004 (bad attributes raise ValueError project-wide)
    zp = int(v_zp)
    if not -(1 << 31) <= zp < (1 << 31):
        raise ValueError(f"{op}: v_zp={zp} outside int32")
    f = int(shift_frac)
    if not 0 <= f <= 62:
        raise ValueError(f"{op}: shift_frac={f} outside [0, 62]")
    q = int(sqrt2_frac_bits)
    r = sqrt2_multiplier(q)
    nz = ca[ca != z] if scan else ca[:0]
    if nz.size:
        cmax = int(nz.max())
        need = (cmax + 1) // 2  # ceil(c/2): even c=2j needs F >= j, odd c=2j+1 needs F >= j+1
        if f < need:
            raise ValueError(
                f"{op}: shift_frac={f} < ceil({cmax}/2) = {need}: code {cmax} would be truncated"
            )
    n = ca.shape[2]
    vmax = max(abs(zp), abs(255 - zp))
    bound = n * vmax * (1 << f) * r
    if bound > _I64_MAX:
        raise OverflowError(f"{op}: headroom violated: N*V*2^F*R = {bound} >= 2^63")
    return ca, va, zp, z, f, q, r


def attn_v_shift_ref(
    c: np.ndarray,
    v: np.ndarray,
    v_zp: int,
    bits: int,
    shift_frac: int,
    sqrt2_frac_bits: int,
    rounding: str | int,
) -> np.ndarray:
    """Reference shift-and-add attention x V.

    Args:
        c: uint8 ``[B, M, N]`` log-sqrt2 codes, ``Z = 2^b - 1`` is the zero state.
        v: uint8 ``[B, N, D]`` value codes.
        v_zp: zero point of ``v`` (int32 scalar).
        bits: b (2..8).
        shift_frac: F, fraction bits of the result (``F >= ceil(c/2)`` for every non-Z code present).
        sqrt2_frac_bits: Q (1..30), fraction bits of the sqrt(2) constant R.
        rounding: rounding mode of the ``acc_odd * R >> Q`` step.

    Returns:
        int64 ``[B, M, D]`` in units of ``2^-F``.

    Raises:
        ValueError: truncation would be needed, bad codes/attributes; OverflowError: headroom violated.
    """
    op = "attn_v_shift"
    mid = mode_id(rounding)
    ca, va, zp, z, f, q, r = _check(c, v, v_zp, bits, shift_frac, sqrt2_frac_bits, op)
    ci = ca.astype(np.int64)
    live = ci != z
    j = ci >> 1
    even = live & ((ci & 1) == 0)
    odd = live & ((ci & 1) == 1)
    one = np.int64(1)
    w_even = np.where(even, one << np.where(even, f - j, 0), 0)  # 2^(F-j) on even codes
    w_odd = np.where(odd, one << np.where(odd, f - j - 1, 0), 0)  # 2^(F-j-1) on odd codes
    dv = va.astype(np.int64) - zp
    acc_even = w_even @ dv  # [B, M, D], exact in int64 by the headroom bound
    acc_odd = w_odd @ dv
    return acc_even + rounding_rshift_ref(acc_odd * np.int64(r), q, mid)


@njit(cache=True, parallel=True)
def _attn_v_rows(
    c: np.ndarray, v: np.ndarray, zp: int, z: int, f: int, q: int, r: int, mid: int, out: np.ndarray
):
    nb, m_rows, n = c.shape
    d = v.shape[2]
    for row in prange(nb * m_rows):
        bi = row // m_rows
        mi = row - bi * m_rows
        acc_e = np.zeros(d, dtype=np.int64)
        acc_o = np.zeros(d, dtype=np.int64)
        for k in range(n):
            code = np.int64(c[bi, mi, k])
            if code == z:
                continue  # zero state: no contribution
            vr = v[bi, k]
            if (code & 1) == 0:
                sh = f - (code >> 1)  # >= 0 (checked)
                for t in range(d):
                    acc_e[t] += (np.int64(vr[t]) - zp) << sh
            else:
                sh = f - (code >> 1) - 1
                for t in range(d):
                    acc_o[t] += (np.int64(vr[t]) - zp) << sh
        for t in range(d):
            out[bi, mi, t] = acc_e[t] + rounding_rshift(acc_o[t] * r, q, mid)


def attn_v_shift(
    c: np.ndarray,
    v: np.ndarray,
    v_zp: int,
    bits: int,
    shift_frac: int,
    sqrt2_frac_bits: int,
    rounding: str | int,
) -> np.ndarray:
    """Numba shift-and-add attention x V (bit-identical to :func:`attn_v_shift_ref`).

    Args:
        c: uint8 ``[B, M, N]`` codes.
        v: uint8 ``[B, N, D]``.
        v_zp: zero point of ``v``.
        bits: b (2..8).
        shift_frac: F.
        sqrt2_frac_bits: Q (1..30).
        rounding: rounding mode.

    Returns:
        int64 ``[B, M, D]``.
    """
    op = "attn_v_shift"
    mid = mode_id(rounding)
    ca, va, zp, z, f, q, r = _check(c, v, v_zp, bits, shift_frac, sqrt2_frac_bits, op)
    out = np.empty((ca.shape[0], ca.shape[1], va.shape[2]), dtype=np.int64)
    _attn_v_rows(np.ascontiguousarray(ca), np.ascontiguousarray(va), zp, z, f, q, r, mid, out)
    return out


# ---------------------------------------------------------------------------------------------
# Fast kernel: the shift-and-add sums as dot products of power-of-two weight planes
# ---------------------------------------------------------------------------------------------
#
# Per head, acc_even = sum_n 2^(F-j) dv and acc_odd = sum_n 2^(F-j-1) dv are computed as GEMMs whose
# left operand is the *weight* 2^s of each (row, n) -- a power of two, i.e. a shifted one.  A weight
# 2^s with exponent s in [base, base + W*P) is split into P planes of W exponents: plane p holds
# 2^(s - base - W*p) where s falls in it and 0 elsewhere, so every plane entry is 0 or a power of two
# below 2^W and
#
#     acc = sum_p 2^(base + W*p) * sum_n plane_p[m, n] * dv[n, d]          (exact: integer identities)
#
# W = 8 (u8 planes, vpdpbusd, 64 u8 x s8 MACs per instruction) or 15 (int16 planes, vpmaddwd).  base is
# the smallest exponent of that parity present in the head, so the planes cover only the codes that
# occur (W4A4: one plane per parity; W8A8 with 24 codes: two).  The right operand is v - 128 in int8
# (v ^ 0x80), and sum_n w*(v - v_zp) = dot + (128 - v_zp) * sum_n w, the row sum of the plane, so every
# plane product is a u8 x s8 (or s16 x s16) dot product bounded by N * 2^(W-1) * 128 < 2^31 (checked).
# No multiplier touches the attention operand in the arithmetic: the planes are a layout of the shifts.
# Even and odd sums are kept apart, then out = acc_even + rounding_rshift(acc_odd * R, Q) exactly as in
# the reference.  A row group whose plane is all zero (no code of it in those rows) is skipped.

AV_PATHS = ("vnni", "i16", "portable")
"""Paths of :func:`attn_v_shift_fast`: ``vnni`` (u8 planes, vpdpbusd), ``i16`` (int16 planes, vpmaddwd, AVX2)
and ``portable`` (the plain Numba kernel :func:`attn_v_shift`)."""

_I32_MAX = (1 << 31) - 1
_MAX_BLOCKS = 16  # 2 parities x at most ceil(63 / 8) planes
_HEAD_CHUNKS = 16  # heads are split into at most this many chunks over the threads


def attn_v_path(path: str | None = None) -> str:
    """The attn x V path: ``path``, else the GEMM module's forced path (``gemm_vnni.force_path``: vnni ->
    vnni, u8s8 / i16 / f32 -> i16, portable -> portable), else the CPU's best."""
    from . import gemm_vnni as _g
    from . import simd as _s

    p = path or _g.FORCE_PATH
    if p is None:
        return "vnni" if _s.has_vnni512() else ("i16" if _s.has_avx2() else "portable")
    if p in ("u8s8", "f32"):
        return "i16"
    if p not in AV_PATHS:
        raise ValueError(f"unknown attn_v path {p!r}; expected one of {AV_PATHS}")
    return p


@njit(cache=True, inline="always")
def _pack_v_s8_tail(v, i, kqn, bp):
    """The rows of v[i] past the last multiple of 4 into the panel layout of :func:`_pack_v_s8`."""
    n, d = v.shape[1], v.shape[2]
    for k in range(n - n % 4, n):
        base = (k >> 2) * 128 + (k & 3)
        for t in range(d):
            bp[(t >> 5) * kqn * 128 + base + (t & 31) * 4] = np.int8(np.int32(v[i, k, t]) - 128)


@njit(cache=True)
def _pack_v_s8(v, i, kqn, npan, bp):
    """v[i] [N, D] -> int8 panels (panel of 32 columns, n/4, 32 lanes, 4) of v - 128 (zero padded)."""
    n, d = v.shape[1], v.shape[2]
    if d != 32 * npan or n % 4:
        bp[:] = 0
    for k4 in range(n // 4):
        r0 = v[i, 4 * k4]
        r1 = v[i, 4 * k4 + 1]
        r2 = v[i, 4 * k4 + 2]
        r3 = v[i, 4 * k4 + 3]
        for p in range(npan):
            o = (p * kqn + k4) * 128
            for j in range(min(32, d - 32 * p)):
                t = 32 * p + j
                bp[o + 4 * j] = np.int8(np.int32(r0[t]) - 128)
                bp[o + 4 * j + 1] = np.int8(np.int32(r1[t]) - 128)
                bp[o + 4 * j + 2] = np.int8(np.int32(r2[t]) - 128)
                bp[o + 4 * j + 3] = np.int8(np.int32(r3[t]) - 128)
    _pack_v_s8_tail(v, i, kqn, bp)


def _pack_v_indices() -> np.ndarray:
    """The byte indices of :func:`_pack_v_s8_perm`, uint8 [6, 64] (``vpermi2b``: index i < 64 picks byte i of
    the first table, 64 + i byte i of the second).  Rows 0, 1: pairs of rows 0/1 (or 2/3) of 64 codes,
    interleaved bytewise for panel 0 / panel 1 (A[2j + u] = R_u[32p + j]); rows 2, 3: two such pairs
    interleaved by 16-bit words into the panel layout (out[4j + t], j in 0..15 / 16..31); rows 4, 5: the same
    layout for D = 32 straight from rows 0-1 and 2-3 (64 bytes each)."""
    ix = np.zeros((6, 64), np.uint8)
    for p in range(2):
        for j in range(32):
            ix[p, 2 * j], ix[p, 2 * j + 1] = 32 * p + j, 64 + 32 * p + j
    for h in range(2):
        for jj in range(16):
            j = 16 * h + jj
            for t in range(4):
                ix[2 + h, 4 * jj + t] = 2 * j + t if t < 2 else 64 + 2 * j + t - 2
                ix[4 + h, 4 * jj + t] = 32 * t + j if t < 2 else 64 + 32 * (t - 2) + j
    return ix


_PACK_V_IX = _pack_v_indices().reshape(-1)  # 1-D for the vector loads


@njit(cache=True)
def _pack_v_s8_perm(ptag, v, i, kqn, bp, ix):
    """:func:`_pack_v_s8` for D = 32 or 64 by byte permutes (``vpermi2b``; ``ptag`` GENERIC: its lane-by-lane
    twin): four rows of codes at a time into the panel layout, ``v - 128`` as ``v ^ 0x80``; the zero padding
    and the rows past the last multiple of 4 (:func:`_pack_v_s8_tail`) as :func:`_pack_v_s8` does them."""
    n, d = v.shape[1], v.shape[2]
    vf = v.reshape(-1)
    flip = splat16(-2139062144)  # 0x80808080: v ^ 0x80 = v - 128 as int8
    if n % 4:
        bp[:] = 0
    i0 = load16(ix, 0)
    i1 = load16(ix, 64)
    i2 = load16(ix, 128)
    i3 = load16(ix, 192)
    i4 = load16(ix, 256)
    i5 = load16(ix, 320)
    bq = bp.view(np.uint8)
    for k4 in range(n // 4):
        r = (i * n + 4 * k4) * d
        o = k4 * 128
        if d == 64:
            r0 = load16(vf, r)
            r1 = load16(vf, r + 64)
            r2 = load16(vf, r + 128)
            r3 = load16(vf, r + 192)
            a0 = permb2(ptag, r0, r1, i0)
            b0 = permb2(ptag, r2, r3, i0)
            store16(bq, o, xor32(permb2(ptag, a0, b0, i2), flip))
            store16(bq, o + 64, xor32(permb2(ptag, a0, b0, i3), flip))
            a1 = permb2(ptag, r0, r1, i1)
            b1 = permb2(ptag, r2, r3, i1)
            o1 = (kqn + k4) * 128
            store16(bq, o1, xor32(permb2(ptag, a1, b1, i2), flip))
            store16(bq, o1 + 64, xor32(permb2(ptag, a1, b1, i3), flip))
        else:
            r01 = load16(vf, r)
            r23 = load16(vf, r + 64)
            store16(bq, o, xor32(permb2(ptag, r01, r23, i4), flip))
            store16(bq, o + 64, xor32(permb2(ptag, r01, r23, i5), flip))
    _pack_v_s8_tail(v, i, kqn, bp)


@njit(cache=True)
def _pack_v_i16(v, i, k2n, npan, bp):
    """v[i] [N, D] -> int16 panels (panel of 16 columns, n/2, 16 lanes, 2) of v - 128 (zero padded)."""
    n, d = v.shape[1], v.shape[2]
    bp[:] = 0
    for k in range(n):
        base = (k >> 1) * 32 + (k & 1)
        for t in range(d):
            p = t >> 4
            bp[p * k2n * 32 + base + (t & 15) * 2] = np.int16(np.int32(v[i, k, t]) - 128)


@njit(cache=True)
def _combine(g, d, rg, rows, nblk, bpar, bshl, blive, rs, corr, r, q, half_q, mode, out, i, m0, e_acc, o_acc):
    """out[i, m0 + rr, :] = acc_even + rounding_rshift(acc_odd * R, Q) from the plane products g (int32)."""
    for rr in range(rows):
        for t in range(d):
            e_acc[t] = 0
            o_acc[t] = 0
        for b in range(nblk):
            if blive[b] == 0:
                continue
            row = b * rg + rr
            cr = corr * np.int64(rs[row])
            sh = bshl[b]
            o = row * d
            if bpar[b] == 0:
                for t in range(d):
                    e_acc[t] += (np.int64(g[o + t]) + cr) << sh
            else:
                for t in range(d):
                    o_acc[t] += (np.int64(g[o + t]) + cr) << sh
        for t in range(d):
            out[i, m0 + rr, t] = e_acc[t] + rounding_rshift_bf(o_acc[t] * r, q, half_q, mode)


@njit(cache=True)
def _combine_fast(g, d, rg, rows, nblk, bpar, bshl, blive, rs, corr, r, q, half_q, mode, out, i, m0, e_acc,
                  o_acc):
    """:func:`_combine` in one pass per row for the block layouts of lowered models (evens first: one even
    and one odd block, or two of each -- in one pass over the two live ones where at most one per parity is
    live); any other layout goes to :func:`_combine`.  Blocks not live must have zero rows in g and zero row
    sums."""
    ne = 0
    for b in range(nblk):
        ne += bpar[b] == 0
    no = nblk - ne
    if not ((ne == 1 and no == 1) or (ne == 2 and no == 2)):
        _combine(g, d, rg, rows, nblk, bpar, bshl, blive, rs, corr, r, q, half_q, mode, out, i, m0, e_acc, o_acc)
        return
    be = 0  # the even and the odd block of the one-block form: with two blocks per parity, the live one
    bo = ne  # where at most one of each parity is live (a block that is not live adds 0: its g rows are 0)
    if ne == 2 and blive[0] + blive[1] <= 1 and blive[2] + blive[3] <= 1:
        be = 1 if blive[1] else 0
        bo = 3 if blive[3] else 2
        ne = 1
    # rounding_rshift(x, Q) as rounding._rshift_add (one add, one shift, masks): valid for |x| < 2^62 + 2^61,
    # and here |acc_odd * R| < N * V * 2^(F-1) * 2^(Q+1) * (R / 2^(Q+1)) < 2^63 * 0.71 (the headroom guard)
    h = 0 if mode == 3 else half_q
    sm = np.int64(q > 0)
    e1 = np.int64(mode == 1)
    e2 = np.int64(mode == 2)
    for rr in range(rows):
        orow = out[i, m0 + rr]  # 0-based views of the row and of its plane products: the loops vectorize
        if ne == 1:             # (runtime offsets in the index measured 2x slower)
            ge = g[(be * rg + rr) * d:]
            go = g[(bo * rg + rr) * d:]
            ce = corr * np.int64(rs[be * rg + rr])
            co = corr * np.int64(rs[bo * rg + rr])
            se = bshl[be]
            so = bshl[bo]
            for t in range(d):
                ev = (np.int64(ge[t]) + ce) << se
                od = (np.int64(go[t]) + co) << so
                orow[t] = ev + _rshift_add(od * r, q, h, sm, e1, e2)
        else:
            ge0 = g[rr * d:]
            ge1 = g[(rg + rr) * d:]
            go0 = g[(2 * rg + rr) * d:]
            go1 = g[(3 * rg + rr) * d:]
            ce0 = corr * np.int64(rs[rr])
            ce1 = corr * np.int64(rs[rg + rr])
            co0 = corr * np.int64(rs[2 * rg + rr])
            co1 = corr * np.int64(rs[3 * rg + rr])
            se0 = bshl[0]
            se1 = bshl[1]
            so0 = bshl[2]
            so1 = bshl[3]
            for t in range(d):
                ev = ((np.int64(ge0[t]) + ce0) << se0) + ((np.int64(ge1[t]) + ce1) << se1)
                od = ((np.int64(go0[t]) + co0) << so0) + ((np.int64(go1[t]) + co1) << so1)
                orow[t] = ev + _rshift_add(od * r, q, h, sm, e1, e2)


def _plane_tables(cm: int, f: int, width: int, entries: int, dtype) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """The weight planes of the fast paths for live codes 0 .. cm: the power-of-two weights 2^(F - ceil(c/2)) (the
    reference's, even and odd codes kept apart) are cut into blocks of ``width`` consecutive exponents. Returns
    (cm, block parities, block powers of two, ``entries``-entry tables per block: table[c] = 2^(exponent of c -
    shl) where code c is live, of the block's parity and in its plane, else 0)."""
    par, shl, tabs = [], [], []
    for parity in (0, 1):
        codes = np.arange(parity, cm + 1, 2)
        if codes.size == 0:
            continue
        expo = f - (codes >> 1) - parity  # 2^expo is the reference's weight
        lo = int(expo.min())
        for p in range((int(expo.max()) - lo) // width + 1):
            t = np.zeros(entries, dtype)
            e = expo - lo - width * p
            sel = (e >= 0) & (e < width)
            t[codes[sel]] = np.left_shift(1, e[sel]).astype(dtype)
            par.append(parity)
            shl.append(lo + width * p)
            tabs.append(t)
    return (cm, np.array(par, np.int64), np.array(shl, np.int64),
            np.concatenate(tabs) if tabs else np.zeros(entries, dtype))


def _vnni_tables(f: int, z: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """The u8 planes of the vnni path (8 exponents each, 64-entry byte tables for ``vpermb``), fixed by F and Z.

    Codes 0 .. cm with cm = min(2F, Z - 1, 62 or 63): every valid code (ceil(c/2) <= F) up to the table
    size; a table index is ``c & 63``, so where Z >= 64 it aliases entry 63, which is kept 0 (and a live
    code of 63 or more sends the call to another kernel)."""
    return _plane_tables(min(2 * f, z - 1, 62 if z >= 64 else 63), f, 8, 64, np.uint8)


@njit(cache=True, inline="always")
def _code_chunk(cf, base, k0, n, total, z, tail):
    """Codes cf[base + k0 : base + k0 + 64] of a row of n codes; bytes past the row read as Z (a copy through
    ``tail`` for the array's last row: no read past its end)."""
    if k0 + 64 <= n:
        return load16(cf, base + k0)
    if base + k0 + 64 <= total:
        return keep_first_u8(load16(cf, base + k0), n - k0, z)
    for t in range(64):
        tail[t] = cf[base + k0 + t] if k0 + t < n else z
    return load16(tail, 0)


@njit(cache=True)
def _live_blocks(cf, coff, n, nv, z, nblk, blo, bhi, rows, tail, rng, lv):
    """lv[b] = 1 where block b may hold a weight in these rows: the live codes of the rows (Z excluded) span
    [cmin, cmax] and the block's codes [blo[b], bhi[b]] overlap it; else 0 (then every weight of the block in
    these rows is 0)."""
    total = cf.shape[0]
    mn = splat16(-1)
    mx = zero16()
    for r in range(rows):
        base = coff + r * n
        for q4 in range(nv):
            cv = _code_chunk(cf, base, 64 * q4, n, total, z, tail)
            mn = min_u8(mn, cv)  # Z >= every code: it never lowers the minimum
            mx = max_u8(mx, zero_where_u8(cv, z))
    store16(rng, 0, mn)
    store16(rng, 64, mx)
    cmin = np.int64(255)
    cmax = np.int64(0)
    for t in range(64):
        cmin = min(cmin, np.int64(rng[t]))
        cmax = max(cmax, np.int64(rng[64 + t]))
    for b in range(nblk):
        lv[b] = np.int64(blo[b] <= cmax and bhi[b] >= cmin)


def _block_code_ranges(tbls: np.ndarray, nblk: int) -> tuple[np.ndarray, np.ndarray]:
    """(lowest, highest) code with a non-zero entry in each block's 64-entry table (255, 0 for an empty one)."""
    lo, hi = np.full(max(nblk, 1), 255, np.int64), np.zeros(max(nblk, 1), np.int64)
    for b in range(nblk):
        nz = np.flatnonzero(tbls[64 * b:64 * (b + 1)])
        if nz.size:
            lo[b], hi[b] = nz[0], nz[-1]
    return lo, hi


@njit(cache=True)
def _build_planes_vnni(ptag, cf, coff, n, nv, z, nblk, tbls, a, lda, rg, rows, rs, tail, st, lv):
    """Rows [0, rows) of a row group (codes at cf[coff + r*n + k]) as nblk u8 planes of rg rows
    (a[(b*rg + r)*lda + k] = tbls[64*b + (c & 63)], vpermb; columns N .. lda-1 read as Z, i.e. 0), their
    row sums rs (vpsadbw), and the byte-wise maxima of the codes (st[0:64]) and of the live codes (st[64:128])
    seen so far (for the validity check).  A block with lv[b] = 0 (:func:`_live_blocks`) is not built: its
    row sums are 0 and its rows of ``a`` are left as they were (never read: its products are skipped)."""
    mxa = zero16()
    mxl = zero16()
    total = cf.shape[0]
    lv0 = lv[0] != 0
    lv1 = nblk > 1 and lv[1] != 0
    lv2 = nblk > 2 and lv[2] != 0
    lv3 = nblk > 3 and lv[3] != 0
    for r in range(rg):
        if r >= rows:
            for b in range(nblk):
                rs[b * rg + r] = 0
            continue  # rows past the group: their products are computed but never read
        base = coff + r * n
        for b in range(4, nblk):
            rs[b * rg + r] = 0
        s0 = zero16()
        s1 = zero16()
        s2 = zero16()
        s3 = zero16()
        for q4 in range(nv):
            k0 = 64 * q4
            cv = _code_chunk(cf, base, k0, n, total, z, tail)
            mxa = max_u8(mxa, cv)
            mxl = max_u8(mxl, zero_where_u8(cv, z))
            o = r * lda + k0
            if lv0:
                wv = permb(ptag, load16(tbls, 0), cv)
                store16(a, o, wv)
                s0 = add32(s0, sad_u8(ptag, wv))
            if lv1:
                wv = permb(ptag, load16(tbls, 64), cv)
                store16(a, o + rg * lda, wv)
                s1 = add32(s1, sad_u8(ptag, wv))
            if lv2:
                wv = permb(ptag, load16(tbls, 128), cv)
                store16(a, o + 2 * rg * lda, wv)
                s2 = add32(s2, sad_u8(ptag, wv))
            if lv3:
                wv = permb(ptag, load16(tbls, 192), cv)
                store16(a, o + 3 * rg * lda, wv)
                s3 = add32(s3, sad_u8(ptag, wv))
            for b in range(4, nblk):
                if lv[b] != 0:
                    wv = permb(ptag, load16(tbls, 64 * b), cv)
                    store16(a, o + b * rg * lda, wv)
                    rs[b * rg + r] += hsum32(sad_u8(ptag, wv))
        rs[r] = hsum32(s0)
        if nblk > 1:
            rs[rg + r] = hsum32(s1)
        if nblk > 2:
            rs[2 * rg + r] = hsum32(s2)
        if nblk > 3:
            rs[3 * rg + r] = hsum32(s3)
    store16(st, 0, max_u8(load16(st, 0), mxa))
    store16(st, 64, max_u8(load16(st, 64), mxl))


@njit(cache=True, parallel=True)
def _av_vnni(tag, ptag, c, v, z, nblk, bpar, bshl, blo, bhi, tbls, zp, r, q, half_q, mode, out, st, pix):
    nb, m, n = c.shape
    d = v.shape[2]
    kqn = (n + 3) // 4
    nv = (n + 63) // 64
    lda = 64 * nv
    npan = (d + 31) // 32
    rg = 8
    corr = np.int64(128 - zp)
    cf = c.reshape(-1)
    nr = max(nblk, 1) * rg
    nch = min(nb, _HEAD_CHUNKS)  # scratch allocated once per chunk of heads
    for ch in prange(nch):
        blive = np.zeros(_MAX_BLOCKS, np.int64)
        bp = np.empty(npan * kqn * 128, np.int8)
        a = np.empty(nr * lda, np.uint8)
        rs = np.zeros(nr, np.int32)
        g = np.zeros(nr * d, np.int32)
        cst = np.zeros(npan * 32, np.int32)
        rs0 = np.zeros(nr, np.int32)
        tail = np.empty(64, np.uint8)
        e_acc = np.empty(d, np.int64)
        o_acc = np.empty(d, np.int64)
        rng = np.empty(128, np.uint8)
        lv = np.ones(_MAX_BLOCKS, np.int64)
        for i in range(ch * nb // nch, (ch + 1) * nb // nch):
            if d == 32 or d == 64:
                _pack_v_s8_perm(ptag, v, i, kqn, bp, pix)
            else:
                _pack_v_s8(v, i, kqn, npan, bp)
            sti = st[i]
            for m0 in range(0, m, rg):
                rows = min(rg, m - m0)
                coff = (i * m + m0) * n
                if nblk > 2:  # (one block per parity: each is as good as always live)
                    _live_blocks(cf, coff, n, nv, z, nblk, blo, bhi, rows, tail, rng, lv)
                _build_planes_vnni(ptag, cf, coff, n, nv, z, nblk, tbls, a, lda, rg, rows, rs, tail, sti, lv)
                for b in range(nblk):
                    tot = np.int64(0)
                    for rr in range(rg):
                        tot += rs[b * rg + rr]
                    blive[b] = tot != 0
                    if tot == 0:  # no code of this plane in these rows: its products are 0
                        g[b * rg * d:(b + 1) * rg * d] = 0
                    else:
                        for p in range(npan):
                            _tile_vnni(tag, a, lda, b * rg, nr, bp, p * kqn * 128, kqn, cst, cst, rs0, False, p * 32,
                                       g, d, d)
                _combine_fast(g, d, rg, rows, nblk, bpar, bshl, blive, rs, corr, r, q, half_q, mode, out, i, m0,
                              e_acc, o_acc)


def _i16_tables(f: int, z: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """The int16 planes of the i16 path (15 exponents each, 256-entry int32 tables indexed by the code), fixed
    by F and Z."""
    return _plane_tables(min(2 * f, z - 1), f, 15, 256, np.int32)


@njit(cache=True)
def _build_planes_tab(c, i, m0, rows, z, nblk, tbls, a, kp, rg, rs, st):
    """Rows m0 .. m0+rows-1 of head i as nblk int16 planes of rg rows (a[(b*rg + r)*kp + n] = tbls[256*b + c],
    zero past N and past ``rows``), their row sums rs, and st[0] = max code, st[1] = max live code."""
    n = c.shape[2]
    zz = np.int32(z)
    mxa = np.int32(0)
    mxl = np.int32(0)
    for r in range(rows):
        for k in range(n):
            cc = np.int32(c[i, m0 + r, k])
            mxa = max(mxa, cc)
            mxl = max(mxl, np.int32(0) if cc == zz else cc)
    st[0] = max(st[0], np.int64(mxa))
    st[1] = max(st[1], np.int64(mxl))
    for b in range(nblk):
        tb = tbls[256 * b:256 * (b + 1)]
        for r in range(rg):
            o = (b * rg + r) * kp
            tot = np.int32(0)
            if r < rows:
                for k in range(n):
                    wgt = tb[c[i, m0 + r, k]]
                    a[o + k] = np.int16(wgt)
                    tot += wgt
                for k in range(n, kp):
                    a[o + k] = 0
            else:
                for k in range(kp):
                    a[o + k] = 0
            rs[b * rg + r] = tot


@njit(cache=True, parallel=True)
def _av_i16(tag, c, v, z, nblk, bpar, bshl, tbls, zp, r, q, half_q, mode, out, st):
    nb, m, n = c.shape
    d = v.shape[2]
    k2n = (n + 1) // 2
    kp = 2 * k2n
    npan = (d + 15) // 16
    rg = 6
    corr = np.int64(128 - zp)
    nr = max(nblk, 1) * rg
    for i in prange(nb):
        blive = np.zeros(_MAX_BLOCKS, np.int64)
        bp = np.empty(npan * k2n * 32, np.int16)
        _pack_v_i16(v, i, k2n, npan, bp)
        a = np.empty(nr * kp, np.int16)
        rs = np.zeros(nr, np.int32)
        g = np.zeros(nr * d, np.int32)
        cst = np.zeros(npan * 16, np.int32)
        e_acc = np.empty(d, np.int64)
        o_acc = np.empty(d, np.int64)
        sti = st[i]
        for m0 in range(0, m, rg):
            rows = min(rg, m - m0)
            _build_planes_tab(c, i, m0, rows, z, nblk, tbls, a, kp, rg, rs, sti)
            for b in range(nblk):
                tot = np.int64(0)
                for rr in range(rg):
                    tot += rs[b * rg + rr]
                blive[b] = tot != 0
                if tot == 0:
                    g[b * rg * d:(b + 1) * rg * d] = 0
                else:
                    for p in range(npan):
                        _tile_i16(tag, a, kp, b * rg, nr, bp, p * k2n * 32, k2n, cst, p * 16, g, d, d)
            _combine_fast(g, d, rg, rows, nblk, bpar, bshl, blive, rs, corr, r, q, half_q, mode, out, i, m0,
                          e_acc, o_acc)


def attn_v_shift_fast(
    c: np.ndarray,
    v: np.ndarray,
    v_zp: int,
    bits: int,
    shift_frac: int,
    sqrt2_frac_bits: int,
    rounding: str | int,
    path: str | None = None,
    out_dtype=np.int64,
    impl: str | None = None,
) -> np.ndarray:
    """:func:`attn_v_shift_ref` (same arguments, result and errors) on the CPU's dot-product instructions.

    The power-of-two weights become planes (see the comment above ``AV_PATHS``); ``path`` (else
    :func:`attn_v_path`) picks ``vnni`` / ``i16`` / ``portable``.  A path whose instructions the CPU lacks
    runs with the portable LLVM twins of the instructions (``simd.GENERIC``), so every path can be tested
    anywhere.  Invalid codes, bad attributes or a bound the planes cannot prove go to :func:`attn_v_shift`
    (which raises the reference's errors).

    Args:
        c: uint8 ``[G, M, N]`` codes (G = batch x heads, or windows x heads).
        v: uint8 ``[G, N, D]``.
        v_zp: zero point of ``v``.
        bits: b (2..8).
        shift_frac: F.
        sqrt2_frac_bits: Q (1..30).
        rounding: rounding mode.
        path: force a path.
        out_dtype: int64 (the reference's), or int32 -- the executor's storage of the declared int32
            output -- which the kernel then writes directly when ``N * V * 2^F + 1 <= 2^31 - 1`` proves
            that every result fits (the doc's bound on ``|out|``); otherwise it narrows with a check.
        impl: ``"generic"`` runs the path with the portable LLVM twins of its instructions even where the
            CPU has them (tests); None: native where the CPU has the instructions.

    Returns:
        ``[G, M, D]`` of ``out_dtype``.
    """
    from .gemm_vnni import _tag

    op = "attn_v_shift"
    plain = (c, v, v_zp, bits, shift_frac, sqrt2_frac_bits, rounding)
    try:
        mid = mode_id(rounding)
        ca, va, zp, z, f, q, r = _check_static(c, v, v_zp, bits, shift_frac, sqrt2_frac_bits, op)
    except (ValueError, OverflowError, TypeError):
        return attn_v_shift(*plain)
    p = attn_v_path(path)
    nb, m, n = ca.shape
    d = va.shape[2]
    if p == "vnni" and n * (1 << 14) > _I32_MAX:  # |plane . (v - 128)| <= N * 2^7 * 2^7
        p = "portable"
    if p == "i16" and n * (1 << 21) > _I32_MAX:  # |plane . (v - 128)| <= N * 2^14 * 2^7
        p = "portable"
    out_dtype = np.dtype(out_dtype)
    if out_dtype not in (np.dtype(np.int64), np.dtype(np.int32)):
        raise ValueError(f"{op}: out_dtype must be int64 or int32, got {out_dtype}")
    vmax = max(abs(zp), abs(255 - zp))
    if out_dtype == np.int32 and n * vmax * (1 << f) + 1 > _I32_MAX:  # not provably in int32: narrow
        return _narrow32(attn_v_shift_fast(c, v, v_zp, bits, shift_frac, sqrt2_frac_bits, rounding, path,
                                           impl=impl), op)
    if p == "portable" or nb * m * n * d == 0:
        y = attn_v_shift(*plain)
        return y if out_dtype == np.int64 else y.astype(np.int32)  # bound proved above
    out = np.empty((nb, m, d), dtype=out_dtype)
    half_q = (1 << (q - 1)) if q > 0 else 1
    ca, va = np.ascontiguousarray(ca), np.ascontiguousarray(va)
    if p == "vnni":
        cm, bpar, bshl, tbls = _vnni_tables(f, z)
        blo, bhi = _block_code_ranges(tbls, len(bpar))
        st = np.zeros((nb, 128), dtype=np.uint8)
        ptag = simd.NATIVE if simd.has_vbmi() and impl != "generic" else simd.GENERIC
        _av_vnni(simd.GENERIC if impl == "generic" else _tag(p), ptag, ca, va, z, len(bpar), bpar, bshl, blo, bhi,
                 tbls, zp, r, q, half_q, mid, out, st, _PACK_V_IX)
        if int(st[:, :64].max()) > z or int(st[:, 64:].max()) > cm:
            y = attn_v_shift(*plain)  # a code above Z, one that would be truncated, or one above the tables
            return y.astype(out_dtype)  # (int32: bound proved above)
        return out
    cm, bpar, bshl, tbls = _i16_tables(f, z)
    st = np.zeros((nb, 2), dtype=np.int64)
    _av_i16(simd.GENERIC if impl == "generic" else _tag(p), ca, va, z, len(bpar), bpar, bshl, tbls, zp, r, q,
            half_q, mid, out, st)
    if int(st[:, 0].max()) > z or int(st[:, 1].max()) > cm:
        return attn_v_shift(*plain).astype(out_dtype)  # raises the reference's error
    return out


def _narrow32(y: np.ndarray, op: str) -> np.ndarray:
    if y.size and (int(y.min()) < -(1 << 31) or int(y.max()) > _I32_MAX):
        raise OverflowError(f"{op}: result [{int(y.min())}, {int(y.max())}] outside int32")
    return y.astype(np.int32)
