"""Fast, branch-free Numba twins of the non-GEMM ops, for the executor's prepared plan (``repq_hw.emu.fast``).

Each kernel computes exactly its op's ``_ref`` (``rounding.requantize_ref``, ``softmax.softmax_ref``,
``log2_code.log2_code_ref``, ``attn_v_shift.attn_v_shift_ref``, ``layernorm.layernorm_requant_ref``,
``lut.lookup_ref``) on the inputs the executor gives it, under preconditions that the wrapper checks
first; when a precondition fails the wrapper returns None and the caller runs the op's ordinary kernel,
so results and errors are always the reference's.  What makes them fast:

* rounding right shifts without branches: ``q = x >> s``, ``r = x - (q << s)``, ``q + up(r, half, mode)``;
* division by a per-row constant as a float64 reciprocal multiply with a one-step integer fix-up
  (exact: see :func:`_floor_div_recip`);
* requantization without per-element overflow tests when ``|acc| <= 2^31``, ``|M| < 2^31`` and
  ``|offset| < 2^61`` make ``|acc*M + offset + 2^(s-1)| < 2^63`` a theorem, and the rounding shift one
  add and one shift (:func:`_rshift_add`);
* the log2 code as one table lookup over every possible input (built from ``log2_code_ref`` itself);
* attention x V as two int16 GEMMs (``vpmaddwd``) of power-of-two weights.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import attn_v_shift as _av
from . import gemm_vnni as _gemm_fast
from . import simd
from .gemm_vnni import _pack_i16_rows, _put8x2, _tag
from .log2_code import log2_code_ref
from .rounding import mode_id
from .simd import add32, bcast8, load8, madd_i16, zero8

__all__ = [
    "attn_v_fast",
    "layernorm_requant_fast",
    "log2_code_table",
    "lookup_fast",
    "requant_fast",
    "sat_add",
    "softmax_fast",
    "table_lookup",
]

_I32_MIN = -(1 << 31)
_I32_MAX = (1 << 31) - 1
_LIM62 = 1 << 62
_LIM61 = 1 << 61

# ---------------------------------------------------------------------------------------------
# Scalar primitives (inlined)
# ---------------------------------------------------------------------------------------------


@njit(cache=True, inline="always")
def _half(s):
    """2^(s-1) for s >= 1; 1 for s == 0 (then r == 0 < half, so nothing rounds up)."""
    return (np.int64(1) << max(s - 1, 0)) if s > 0 else np.int64(1)


@njit(cache=True, inline="always")
def _rshift(x, s, half, mode):
    """Branch-free ``rounding_rshift(x, s, mode)`` for int64 x and s in [0, 62], ``half = _half(s)``.

    q = floor(x / 2^s), r = x - q*2^s in [0, 2^s); rounds up iff r > half, or r == half and the tie goes
    up: half_up always, half_even iff q is odd, half_away iff x >= 0; floor never."""
    q = x >> s
    r = x - (q << s)
    tie = (mode == 0) | ((mode == 1) & ((q & 1) == 1)) | ((mode == 2) & (x >= 0))
    up = ((r > half) | ((r == half) & tie)) & (mode != 3)
    return q + np.int64(up)


@njit(cache=True, inline="always")
def _floor_div_recip(num, den, inv):
    """(floor(num / den), num mod den) for int64 num with |num| < 2^53 and den >= 1, inv = 1.0 / den.

    float64(num) is exact; inv and the product are each correctly rounded, so the estimate differs from
    num/den by at most |num/den| * 2^-51.9 < 1 whenever |num/den| < 2^51 (always: |num| < 2^53, den >= 1
    gives |num/den| < 2^53 -- callers keep |num/den| < 2^40), hence floor(estimate) is q-1, q or q+1 and
    one correction step of the remainder into [0, den) makes it exact."""
    q = np.int64(np.floor(np.float64(num) * inv))
    r = num - q * den
    lo = r < 0
    q -= np.int64(lo)
    r += den * np.int64(lo)
    hi = r >= den
    q += np.int64(hi)
    r -= den * np.int64(hi)
    return q, r


@njit(cache=True, inline="always")
def _round_div_fix(num, den, q, r, mode):
    """Apply the rounding of ``round_div(num, den, mode)`` to the floor quotient q and remainder r."""
    rest = den - r
    tie = (mode == 0) | ((mode == 1) & ((q & 1) == 1)) | ((mode == 2) & (num >= 0))
    up = ((r > rest) | ((r == rest) & tie)) & (mode != 3) & (r != 0)
    return q + np.int64(up)


# ---------------------------------------------------------------------------------------------
# Requantize
# ---------------------------------------------------------------------------------------------


@njit(cache=True, inline="always")
def _rshift_add(v, s, h, sm, e1, e2):
    """``rounding_rshift(v, s, mode)`` as one add and one shift, for |v| < 2^62 + 2^61 (so v + h, with
    h = 2^(s-1) <= 2^61, cannot overflow): h = 2^(s-1) (0 if s == 0 or mode is floor), sm = (s > 0),
    e1 = (mode == half_even), e2 = (mode == half_away).

    half_up:   floor((v + h) / 2^s)                      ties up
    half_even: floor((v + h - 1 + (q & 1)) / 2^s)        q = floor(v / 2^s); a tie goes up iff q is odd
    half_away: floor((v + h - (v < 0)) / 2^s)            a negative tie stays at q (away from zero)
    floor:     floor(v / 2^s)                            (h = 0)
    Non-ties are unaffected by the -1 adjustments because the remainder is an integer."""
    q = v >> s
    d = e1 * (sm - (q & sm)) + e2 * (sm & np.int64(v < 0))
    return (v + h - d) >> s


@njit(cache=True)
def _requant_row(acc, i, mult, sh, h, sm, off, zp, lo, hi, e1, e2, out):
    for j in range(acc.shape[1]):
        v = np.int64(acc[i, j]) * mult[j] + off[j]  # |.| < 2^62 + 2^61: proved by RequantConsts
        y = _rshift_add(v, sh[j], h[j], sm[j], e1, e2)
        out[i, j] = min(max(y, lo), hi) + zp


@njit(cache=True)
def _requant_rows(acc, mult, sh, h, sm, off, zp, lo, hi, e1, e2, out):
    for i in range(acc.shape[0]):
        _requant_row(acc, i, mult, sh, h, sm, off, zp, lo, hi, e1, e2, out)


@njit(cache=True, parallel=True)
def _requant_rows_parallel(acc, mult, sh, h, sm, off, zp, lo, hi, e1, e2, out):
    for i in prange(acc.shape[0]):
        _requant_row(acc, i, mult, sh, h, sm, off, zp, lo, hi, e1, e2, out)


PARALLEL_MIN_ELEMENTS = 1 << 16
"""Element-wise kernels split rows over threads from this size on (below it the fork/join costs more)."""


class RequantConsts:
    """Per-node constants of a requantization, checked once: None from :meth:`make` when the fast kernel
    cannot prove the absence of int64 overflow (the caller then uses the ordinary kernel)."""

    __slots__ = ("c", "e1", "e2", "h", "half", "hi", "lo", "mode", "mult", "off", "sh", "sm", "zp")

    @staticmethod
    def make(c: int, multiplier, shift, offset, zero_point: int, out_min: int, out_max: int, rounding):
        def vec(v):
            a = np.asarray(v)
            if a.dtype.kind not in "iu":
                return None
            a = a.astype(np.int64)
            if a.ndim == 0 or a.shape == (1,):
                a = np.full(c, int(a.reshape(-1)[0]), dtype=np.int64)
            return a if a.shape == (c,) else None

        mult, sh, off = vec(multiplier), vec(shift), vec(offset)
        if mult is None or sh is None or off is None:
            return None
        if c and (np.abs(mult).max() >= (1 << 31) or sh.min() < 0 or sh.max() > 62
                  or np.abs(off).max() >= _LIM61):
            return None
        zp, lo, hi = int(zero_point), int(out_min), int(out_max)
        if not (_I32_MIN <= zp <= _I32_MAX and _I32_MIN <= lo <= hi <= _I32_MAX):
            return None
        self = RequantConsts()
        self.c, self.mult, self.sh, self.off = c, mult, sh, off
        self.half = np.where(sh > 0, np.left_shift(1, np.maximum(sh - 1, 0)), 1).astype(np.int64)
        self.zp, self.lo, self.hi = zp, lo - zp, hi - zp
        self.mode = mode_id(rounding)
        self.sm = (sh > 0).astype(np.int64)
        self.h = np.where(self.mode == 3, 0, np.where(sh > 0, self.half, 0)).astype(np.int64)
        self.e1, self.e2 = int(self.mode == 1), int(self.mode == 2)
        return self


def requant_fast(acc: np.ndarray, rc: RequantConsts, out_dtype) -> np.ndarray | None:
    """``requantize_ref(acc, ...)`` for ``|acc| <= 2^31`` (int8/16/32 or uint8/16 storage); None otherwise."""
    if acc.dtype.kind not in "iu" or acc.dtype.itemsize > 4 or acc.dtype == np.uint32 or acc.shape[-1] != rc.c:
        return None
    a2 = np.ascontiguousarray(acc).reshape(-1, rc.c)
    out = np.empty(a2.shape, dtype=out_dtype)
    kernel = _requant_rows_parallel if a2.size >= PARALLEL_MIN_ELEMENTS else _requant_rows
    kernel(a2, rc.mult, rc.sh, rc.h, rc.sm, rc.off, rc.zp, rc.lo, rc.hi, rc.e1, rc.e2, out)
    return out.reshape(acc.shape)


# ---------------------------------------------------------------------------------------------
# Softmax (+ optional fused log2 code table)
# ---------------------------------------------------------------------------------------------


@njit(cache=True, parallel=True)
def _softmax_rows(x, m, s, half_s, f, p, lut, mode, out):
    rows, n = x.shape
    mask = (np.int64(1) << f) - 1
    for i in prange(rows):
        mx = np.int64(x[i, 0])
        for j in range(1, n):
            mx = max(mx, np.int64(x[i, j]))
        tot = np.int64(0)
        for j in range(n):
            t = _rshift((np.int64(x[i, j]) - mx) * m, s, half_s, mode)  # (x-mx)*M: |.| < 2^63 (ref)
            u = -t
            nsh = min(u >> f, 62)
            e = _rshift(lut[u & mask], nsh, _half(nsh), mode)  # in [0, 2^E], E <= 30
            out[i, j] = np.uint32(e)
            tot += e
        inv = 1.0 / np.float64(tot)
        for j in range(n):
            num = np.int64(out[i, j]) << p  # < 2^(E+P) <= 2^52 (wrapper), tot in [2^E, n*2^E]
            q, r = _floor_div_recip(num, tot, inv)
            out[i, j] = np.uint32(_round_div_fix(num, tot, q, r, mode))


def softmax_fast(x: np.ndarray, multiplier: int, shift: int, frac_bits: int, lut_bits: int, out_bits: int,
                 rounding) -> np.ndarray | None:
    """``softmax_ref`` for int32 ``x`` when ``lut_bits + out_bits <= 52``; None otherwise."""
    from .softmax import _check_attrs, exp2_lut

    if x.dtype != np.int32 or lut_bits + out_bits > 52:
        return None
    mode = mode_id(rounding)
    try:
        _, m, s, f, e, p = _check_attrs(x[..., :1] if x.ndim else x, multiplier, shift, frac_bits, lut_bits,
                                        out_bits, "softmax")
    except (ValueError, OverflowError):
        return None
    if x.shape[-1] == 0 or x.shape[-1] * (1 << e) >= (1 << 52):
        return None
    lut = exp2_lut(f, e)
    x2 = np.ascontiguousarray(x).reshape(-1, x.shape[-1])
    out = np.empty(x2.shape, dtype=np.uint32)
    _softmax_rows(x2, m, s, (1 << (s - 1)) if s > 0 else 1, f, p, lut, mode, out)
    return out.reshape(x.shape)


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
# Saturating add of two tensors (residual stream)
# ---------------------------------------------------------------------------------------------


@njit(cache=True)  # memory-bound: serial (no fork/join cost)
def _sat_add(x, y, lo, hi, out):
    for i in range(x.shape[0]):
        out[i] = min(max(np.int64(x[i]) + np.int64(y[i]), lo), hi)


def sat_add(x: np.ndarray, y: np.ndarray, lo: int, hi: int, out_dtype) -> np.ndarray:
    """``clip(x + y, lo, hi)`` (exact, int64 intermediate) for integer arrays of the same shape."""
    xf = np.ascontiguousarray(x).reshape(-1)
    yf = np.ascontiguousarray(y).reshape(-1)
    out = np.empty(xf.shape[0], dtype=out_dtype)
    _sat_add(xf, yf, lo, hi, out)
    return out.reshape(x.shape)


# ---------------------------------------------------------------------------------------------
# LayerNorm + requantize
# ---------------------------------------------------------------------------------------------


@njit(cache=True)
def _isqrt(n):
    """floor(sqrt(n)) for 0 <= n < 2^62: float estimate, then exact integer correction."""
    r = np.int64(np.sqrt(np.float64(n)))
    while r * r > n:
        r -= 1
    while (r + 1) * (r + 1) <= n:
        r += 1
    return r


@njit(cache=True, parallel=True)
def _ln_rows(x, eps, f, mult, sh, half, off, zp, lo, hi, mode, out, bad):
    t, c = x.shape
    cc = np.int64(c)
    for i in prange(t):
        s = np.int64(0)
        q = np.int64(0)
        for j in range(c):
            v = np.int64(x[i, j])
            s += v
            q += v * v
        tot = cc * q - s * s + eps
        if tot >= (np.int64(1) << 62):
            bad[i] = 1
            continue
        sigma = _isqrt(tot)
        if sigma == 0:
            for j in range(c):  # norm = 0
                y = _rshift(off[j], sh[j], half[j], mode)
                out[i, j] = min(max(y, lo), hi) + zp
            continue
        inv = 1.0 / np.float64(sigma)
        for j in range(c):
            num = (cc * np.int64(x[i, j]) - s) << f  # |.| < 2^32 * 2^F <= 2^52 (wrapper: F <= 20)
            qq, r = _floor_div_recip(num, sigma, inv)
            nrm = _round_div_fix(num, sigma, qq, r, mode)
            if nrm < -(np.int64(1) << 31) or nrm > (np.int64(1) << 31) - 1:
                bad[i] = 1
            v = nrm * mult[j] + off[j]  # |norm| < 2^31 (else flagged), |M| < 2^31, |off| < 2^62
            y = _rshift(v, sh[j], half[j], mode)
            out[i, j] = min(max(y, lo), hi) + zp


def layernorm_requant_fast(x: np.ndarray, eps_q: int, frac_bits: int, rc: RequantConsts, out_dtype
                           ) -> np.ndarray | None:
    """``layernorm_requant_ref`` for int8/16/32 ``x [T, C]`` with ``C*max|x| < 2^31``, ``frac_bits <= 20``;
    None otherwise, or when a row fails a headroom test (the caller's fallback raises the reference's error).
    """
    if x.ndim != 2 or x.dtype.kind != "i" or x.dtype.itemsize > 4 or not 0 <= frac_bits <= 20:
        return None
    t, c = x.shape
    if c == 0 or c != rc.c or not 0 <= int(eps_q) < _LIM62:
        return None
    xmax = max(abs(int(x.min(initial=0))), abs(int(x.max(initial=0))))
    if c * xmax >= (1 << 31):
        return None
    out = np.empty((t, c), dtype=out_dtype)
    bad = np.zeros(t, dtype=np.uint8)
    _ln_rows(np.ascontiguousarray(x), int(eps_q), int(frac_bits), rc.mult, rc.sh, rc.half, rc.off, rc.zp, rc.lo,
             rc.hi, rc.mode, out, bad)
    return None if bad.any() else out


# ---------------------------------------------------------------------------------------------
# Attention x V as two int16 GEMMs
# ---------------------------------------------------------------------------------------------


@njit(cache=True)
def _tile_av(tag, ae, ao, lda, r0, m, bp, bo, k2n, c0, oe, oo, ldo, n):
    """3 x 16 tile of acc_even = ae.dv and acc_odd = ao.dv (vpmaddwd), stored to oe / oo (int32)."""
    last = m - 1
    o0 = min(r0, last) * lda
    o1 = min(r0 + 1, last) * lda
    o2 = min(r0 + 2, last) * lda
    z = zero8()
    e00 = z
    e01 = z
    e10 = z
    e11 = z
    e20 = z
    e21 = z
    d00 = z
    d01 = z
    d10 = z
    d11 = z
    d20 = z
    d21 = z
    for k2 in range(k2n):
        b0 = load8(bp, bo)
        b1 = load8(bp, bo + 16)
        bo += 32
        kk = 2 * k2
        x = bcast8(ae, o0 + kk)
        y = bcast8(ao, o0 + kk)
        e00 = add32(e00, madd_i16(tag, x, b0))
        e01 = add32(e01, madd_i16(tag, x, b1))
        d00 = add32(d00, madd_i16(tag, y, b0))
        d01 = add32(d01, madd_i16(tag, y, b1))
        x = bcast8(ae, o1 + kk)
        y = bcast8(ao, o1 + kk)
        e10 = add32(e10, madd_i16(tag, x, b0))
        e11 = add32(e11, madd_i16(tag, x, b1))
        d10 = add32(d10, madd_i16(tag, y, b0))
        d11 = add32(d11, madd_i16(tag, y, b1))
        x = bcast8(ae, o2 + kk)
        y = bcast8(ao, o2 + kk)
        e20 = add32(e20, madd_i16(tag, x, b0))
        e21 = add32(e21, madd_i16(tag, x, b1))
        d20 = add32(d20, madd_i16(tag, y, b0))
        d21 = add32(d21, madd_i16(tag, y, b1))
    _put8x2(oe, ldo, r0, m, c0, n, e00, e01)
    _put8x2(oe, ldo, r0 + 1, m, c0, n, e10, e11)
    _put8x2(oe, ldo, r0 + 2, m, c0, n, e20, e21)
    _put8x2(oo, ldo, r0, m, c0, n, d00, d01)
    _put8x2(oo, ldo, r0 + 1, m, c0, n, d10, d11)
    _put8x2(oo, ldo, r0 + 2, m, c0, n, d20, d21)


@njit(cache=True, parallel=True)
def _attn_v_i16(tag, c, v, vz, te, to, r, q, half_q, mode, out):
    nb, m, n = c.shape
    d = v.shape[2]
    k2n = (n + 1) // 2
    kp = 2 * k2n
    npan = (d + 15) // 16
    for i in prange(nb):
        ae = np.zeros(m * kp, dtype=np.int16)
        ao = np.zeros(m * kp, dtype=np.int16)
        for rr in range(m):
            for kk in range(n):
                cd = c[i, rr, kk]
                ae[rr * kp + kk] = te[cd]
                ao[rr * kp + kk] = to[cd]
        vt = np.ascontiguousarray(v[i].T)  # [d, n]: rows are the output columns
        bp = np.empty(npan * k2n * 32, dtype=np.int16)
        cst = np.empty(npan * 16, dtype=np.int32)
        _pack_i16_rows(vt, vz, bp, cst, 0, k2n, npan)
        oe = np.empty(m * d, dtype=np.int32)
        oo = np.empty(m * d, dtype=np.int32)
        for p in range(npan):
            for r0 in range(0, m, 3):
                _tile_av(tag, ae, ao, kp, r0, m, bp, p * k2n * 32, k2n, p * 16, oe, oo, d, d)
        for rr in range(m):
            for t in range(d):
                out[i, rr, t] = np.int64(oe[rr * d + t]) + _rshift(np.int64(oo[rr * d + t]) * r, q, half_q, mode)


def attn_v_fast(c: np.ndarray, v: np.ndarray, v_zp: int, bits: int, shift_frac: int, sqrt2_frac_bits: int,
                rounding) -> np.ndarray:
    """``attn_v_shift_ref`` (same arguments, result and errors): the shift-and-add sums as int16 GEMMs of
    power-of-two weights when they provably fit int32, else the ordinary Numba kernel.

    Weights: even code 2j -> 2^(F-j), odd code 2j+1 -> 2^(F-j-1), zero state -> 0 (the reference's
    acc_even / acc_odd exactly).  int16 needs 2^F <= 2^14; int32 sums need N * V * 2^F <= 2^31 - 1 with
    V = max(|v_zp|, |255 - v_zp|) >= |v - v_zp| (every partial sum is bounded by the same)."""
    op = "attn_v_shift"
    mid = mode_id(rounding)
    ca, va, zp, z, f, q, r = _av._check(c, v, v_zp, bits, shift_frac, sqrt2_frac_bits, op)
    nb, m, n = ca.shape
    vmax = max(abs(zp), abs(255 - zp))
    if f > 14 or n * vmax * (1 << f) > _I32_MAX or _gemm_fast.FORCE_PATH == "portable" or not simd.has_avx2():
        return _av.attn_v_shift(c, v, v_zp, bits, shift_frac, sqrt2_frac_bits, rounding)
    codes = np.arange(256)
    live = (codes != z) & ((codes + 1) // 2 <= f)
    te = np.where(live & (codes % 2 == 0), np.left_shift(1, np.clip(f - codes // 2, 0, 62)), 0).astype(np.int16)
    to = np.where(live & (codes % 2 == 1), np.left_shift(1, np.clip(f - codes // 2 - 1, 0, 62)), 0).astype(np.int16)
    out = np.empty((nb, m, va.shape[2]), dtype=np.int64)
    if out.size == 0:
        return out
    _attn_v_i16(_tag("i16"), np.ascontiguousarray(ca), np.ascontiguousarray(va), zp, te, to, r, q,
                (1 << (q - 1)) if q > 0 else 1, mid, out)
    return out
