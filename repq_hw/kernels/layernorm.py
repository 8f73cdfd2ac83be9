"""Integer LayerNorm normalisation (and the fused normalisation + per-channel requantize).

Per row of ``x`` (int32 ``[T, C]``, residual-stream codes, zero point 0)::

    S       = sum_c x_c                      int64 (|S| < 2^31 by the headroom condition)
    Q       = sum_c x_c^2                    int64
    var_n   = C*Q - S^2                      = C^2 * variance >= 0, exact, < 2^62
    sigma_n = isqrt(var_n + eps_q)           < 2^31
    d_c     = C*x_c - S                      |d_c| < 2^32
    norm_c  = round_div(d_c * 2^F, sigma_n)  int32, Q(F) fixed point of (x - mean)/sqrt(var + eps)
    (sigma_n == 0, i.e. a constant row with eps_q == 0: norm_c = 0 by definition)

Headroom (checked by both implementations; see ``docs/ops/layernorm.md``):
    H1  C * max|x| < 2^31        (=> |S| < 2^31, S^2 < 2^62, C*Q < 2^62, |d_c| < 2^32)
    H2  var_n + eps_q < 2^62     (isqrt domain), eps_q in [0, 2^62)
    F in [0, 30]                 (=> |d_c| * 2^F < 2^62)
    the result must fit int32    (else OverflowError)
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from .isqrt import isqrt_ref, isqrt_scalar
from .rounding import (
    INT64_MAX,
    RequantConsts,
    _cast_out,
    _check_requant_attrs,
    mode_id,
    requant_scalar,
    requantize_ref,
    round_div,
    round_div_ref,
)

__all__ = [
    "MAX_FRAC_BITS",
    "layernorm",
    "layernorm_ref",
    "layernorm_requant",
    "layernorm_requant_fast",
    "layernorm_requant_ref",
]

MAX_FRAC_BITS = 30
_I32_MIN = -(1 << 31)
_I32_MAX = (1 << 31) - 1
_LIM62 = 1 << 62


def _check_inputs(x: object, eps_q: object, frac_bits: object, op: str) -> tuple[np.ndarray, int, int]:
    a = np.asarray(x)
    if a.dtype.kind not in "iu":
        raise ValueError(f"{op}: x must be an integer array, got dtype {a.dtype}")
    if a.ndim != 2:
        raise ValueError(f"{op}: x must be [T, C], got shape {a.shape}")
    a = a.astype(np.int64)
    eps = int(eps_q)
    if not 0 <= eps < _LIM62:
        raise ValueError(f"{op}: eps_q={eps} outside [0, 2^62)")
    f = int(frac_bits)
    if not 0 <= f <= MAX_FRAC_BITS:
        raise ValueError(f"{op}: frac_bits={f} outside [0, {MAX_FRAC_BITS}]")
    c = a.shape[1]
    if c == 0:
        raise ValueError(f"{op}: C must be >= 1")
    xmax = int(np.abs(a).max(initial=0))
    if c * xmax >= (1 << 31):
        raise OverflowError(f"{op}: headroom H1 violated: C*max|x| = {c}*{xmax} = {c * xmax} >= 2^31")
    return a, eps, f


def layernorm_ref(x: np.ndarray, eps_q: int, frac_bits: int, rounding: str | int) -> np.ndarray:
    """Reference integer LayerNorm normalisation: Q(F) codes of ``(x - mean) / sqrt(var + eps)``.

    Args:
        x: int32 ``[T, C]`` residual-stream codes (zero point 0).
        eps_q: ``round(eps * C^2 / s^2)`` (int64 >= 0) computed by the lowering.
        frac_bits: F, the number of fraction bits of the output (0..30).
        rounding: rounding mode of the final division.

    Returns:
        int32 ``[T, C]``.

    Raises:
        OverflowError: headroom H1/H2 violated or a result outside int32.
        ValueError: bad attribute (eps_q, frac_bits, rounding) or shape.
    """
    op = "layernorm"
    mid = mode_id(rounding)
    a, eps, f = _check_inputs(x, eps_q, frac_bits, op)
    c = np.int64(a.shape[1])
    s = a.sum(axis=1, keepdims=True)  # [T, 1]
    q = (a * a).sum(axis=1, keepdims=True)
    var_n = c * q - s * s  # >= 0 (Cauchy-Schwarz), < 2^62 by H1
    tot = var_n + np.int64(eps)  # < 2^62 + 2^62: no int64 overflow
    if (tot >= _LIM62).any():
        t = int(np.flatnonzero(tot[:, 0] >= _LIM62)[0])
        raise OverflowError(
            f"{op}: headroom H2 violated: var_n + eps_q = {int(tot[t, 0])} >= 2^62 in row {t}"
        )
    sigma = isqrt_ref(tot)  # [T, 1]
    d = c * a - s  # |d| < 2^32
    num = d * np.int64(1 << f)  # |num| < 2^62
    zero = sigma == 0
    norm = round_div_ref(num, np.where(zero, 1, sigma), mid)
    norm = np.where(zero, 0, norm)  # constant row with eps_q == 0: norm := 0 (d is 0 there anyway)
    bad = (norm < _I32_MIN) | (norm > _I32_MAX)
    if bad.any():
        i = tuple(int(v) for v in np.argwhere(bad)[0])
        raise OverflowError(f"{op}: normalised value {int(norm[i])} at index {i} does not fit int32")
    return norm.astype(np.int32)


def layernorm_requant_ref(
    x: np.ndarray,
    eps_q: int,
    frac_bits: int,
    multiplier: object,
    shift: object,
    offset: object,
    zero_point: int,
    out_min: int,
    out_max: int,
    rounding: str | int,
    out_dtype: type | None = None,
) -> np.ndarray:
    """Reference LayerNorm op: :func:`layernorm_ref` followed by :func:`requantize_ref` (folded affine).

    Args:
        x: int32 ``[T, C]``.
        eps_q: integer epsilon (see :func:`layernorm_ref`).
        frac_bits: F of the normalised intermediate.
        multiplier: per-channel ``[C]`` (or scalar) multiplier in ``(-2^31, 2^31)`` (sign of gamma).
        shift: per-channel ``[C]`` (or scalar) shift in ``[0, 62]``.
        offset: per-channel ``[C]`` (or scalar) int64 offset.
        zero_point: output zero point.
        out_min: output minimum.
        out_max: output maximum.
        rounding: rounding mode used by both the division and the requantize shift.
        out_dtype: result dtype (default int32).

    Returns:
        ``[T, C]`` array of ``out_dtype``.
    """
    norm = layernorm_ref(x, eps_q, frac_bits, rounding)
    return requantize_ref(norm, multiplier, shift, offset, zero_point, out_min, out_max, rounding, out_dtype)


# ---------------------------------------------------------------------------------------------
# Numba
# ---------------------------------------------------------------------------------------------


@njit(cache=True)
def _ln_row(xr: np.ndarray, eps: int, f: int, mid: int, out: np.ndarray) -> int:
    """Normalise one row into ``out`` (int64). Returns 0, or 1 if H2 fails, or 2 if a value leaves int32."""
    c = xr.shape[0]
    s = np.int64(0)
    q = np.int64(0)
    for j in range(c):
        v = np.int64(xr[j])
        s += v
        q += v * v
    var_n = np.int64(c) * q - s * s
    tot = var_n + eps
    if tot >= np.int64(1) << 62:
        out[0] = tot
        return 1
    sigma = isqrt_scalar(tot)
    scale = np.int64(1) << f
    for j in range(c):
        if sigma == 0:
            out[j] = 0
        else:
            d = np.int64(c) * np.int64(xr[j]) - s
            out[j] = round_div(d * scale, sigma, mid)
    for j in range(c):
        if out[j] < _I32_MIN or out[j] > _I32_MAX:
            out[0] = out[j]
            return 2
    return 0


@njit(cache=True, parallel=True)
def _layernorm_rows(x: np.ndarray, eps: int, f: int, mid: int, out: np.ndarray, bad: np.ndarray) -> None:
    t, c = x.shape
    for i in prange(t):
        row = np.empty(c, dtype=np.int64)
        flag = _ln_row(x[i], eps, f, mid, row)
        if flag != 0:
            bad[i, 0] = flag
            bad[i, 1] = row[0]
            continue
        for j in range(c):
            out[i, j] = np.int32(row[j])


@njit(cache=True, parallel=True)
def _layernorm_requant_rows(
    x: np.ndarray,
    eps: int,
    f: int,
    mult: np.ndarray,
    lim: np.ndarray,
    sh: np.ndarray,
    off: np.ndarray,
    zp: int,
    lo: int,
    hi: int,
    mid: int,
    out: np.ndarray,
    bad: np.ndarray,
) -> None:
    t, c = x.shape
    imax = np.int64(INT64_MAX)
    for i in prange(t):
        row = np.empty(c, dtype=np.int64)
        flag = _ln_row(x[i], eps, f, mid, row)
        if flag != 0:
            bad[i, 0] = flag
            bad[i, 1] = row[0]
            continue
        for j in range(c):
            a = row[j]
            if a > lim[j] or a < -lim[j]:
                bad[i, 0] = 3
                bad[i, 1] = j
                break
            p = a * mult[j]
            o = off[j]
            if (o >= 0 and p > imax - o) or (o < 0 and p < -imax - o):
                bad[i, 0] = 4
                bad[i, 1] = j
                break
            out[i, j] = np.int32(requant_scalar(p + o, sh[j], zp, lo, hi, mid))


def _raise_ln(bad: np.ndarray, op: str) -> None:
    if bad[:, 0].any():
        i = int(np.flatnonzero(bad[:, 0])[0])
        flag, val = int(bad[i, 0]), int(bad[i, 1])
        if flag == 1:
            raise OverflowError(f"{op}: headroom H2 violated: var_n + eps_q = {val} >= 2^62 in row {i}")
        if flag == 2:
            raise OverflowError(f"{op}: normalised value {val} in row {i} does not fit int32")
        raise OverflowError(f"{op}: requantize product overflows int64 in row {i}, channel {val}")


def layernorm(x: np.ndarray, eps_q: int, frac_bits: int, rounding: str | int) -> np.ndarray:
    """Numba integer LayerNorm normalisation (bit-identical to :func:`layernorm_ref`).

    Args:
        x: int32 ``[T, C]``.
        eps_q: integer epsilon (>= 0).
        frac_bits: F (0..30).
        rounding: rounding mode of the final division.

    Returns:
        int32 ``[T, C]``.
    """
    op = "layernorm"
    mid = mode_id(rounding)
    a, eps, f = _check_inputs(x, eps_q, frac_bits, op)
    out = np.empty(a.shape, dtype=np.int32)
    bad = np.zeros((a.shape[0], 2), dtype=np.int64)
    _layernorm_rows(np.ascontiguousarray(a), eps, f, mid, out, bad)
    _raise_ln(bad, op)
    return out


def layernorm_requant(
    x: np.ndarray,
    eps_q: int,
    frac_bits: int,
    multiplier: object,
    shift: object,
    offset: object,
    zero_point: int,
    out_min: int,
    out_max: int,
    rounding: str | int,
    out_dtype: type | None = None,
) -> np.ndarray:
    """Numba fused LayerNorm + per-channel requantize (bit-identical to :func:`layernorm_requant_ref`).

    Args:
        x: int32 ``[T, C]``.
        eps_q: integer epsilon.
        frac_bits: F of the normalised intermediate.
        multiplier: per-channel (or scalar) multiplier in ``(-2^31, 2^31)`` (sign of gamma).
        shift: per-channel (or scalar) shift in ``[0, 62]``.
        offset: per-channel (or scalar) int64 offset.
        zero_point: output zero point.
        out_min: output minimum.
        out_max: output maximum.
        rounding: rounding mode (division and requantize shift).
        out_dtype: result dtype (default int32).
    """
    op = "layernorm"
    mid = mode_id(rounding)
    a, eps, f = _check_inputs(x, eps_q, frac_bits, op)
    c = a.shape[1]
    mult, sh, off, zp, lo, hi = _check_requant_attrs(
        multiplier, shift, offset, zero_point, out_min, out_max, c, "requantize"
    )
    lim = np.where(mult != 0, np.int64(INT64_MAX) // np.maximum(np.abs(mult), 1), np.int64(INT64_MAX))
    out = np.empty(a.shape, dtype=np.int32)
    bad = np.zeros((a.shape[0], 2), dtype=np.int64)
    _layernorm_requant_rows(np.ascontiguousarray(a), eps, f, mult, lim, sh, off, zp, lo, hi, mid, out, bad)
    _raise_ln(bad, op)
    return _cast_out(out, out_dtype, lo, hi, "requantize")

# ---------------------------------------------------------------------------------------------
# Fast kernel (the executor's prepared plan, ``repq_hw.emu.fast``)
# ---------------------------------------------------------------------------------------------


@njit(cache=True, inline="always")
def _isqrt(n):
    """floor(sqrt(n)) for 0 <= n < 2^62: float estimate, then exact integer correction."""
    r = np.int64(np.sqrt(np.float64(n)))
    while r * r > n:
        r -= 1
    while (r + 1) * (r + 1) <= n:
        r += 1
    return r


_MAGIC = 1.5 * 2.0**52
"""x + _MAGIC for |x| < 2^51 rounds x to the nearest integer n (ulp 1 in [2^52, 2^53)); the low 32 bits of
the result's bit pattern are n mod 2^32 (the magic's are 0)."""


@intrinsic
def _f64_bits(typingctx, v):
    """The IEEE bit pattern of a float64 as int64 (an LLVM bitcast: no instruction)."""
    if v != types.float64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


@njit(cache=True, inline="always")
def _rq(nrm, j, m32, sh, h, sm, off, oh, zp, lo, hi, mode):
    """Requantize one int32-range ``nrm`` of channel j: ``rounding._rshift_add`` with the mode a literal.
    v = nrm*M + off: |nrm| < 2^31, |M| < 2^31 (a 32x32 -> 64 multiply), |off| < 2^61 (RequantConsts), so
    |v| < 2^62 + 2^61 and v + h (h = 2^(s-1) <= 2^61) cannot overflow; oh = off + h."""
    p = np.int64(nrm) * np.int64(m32[j])
    sj = sh[j]
    if mode == 0:
        y = (p + oh[j]) >> sj
    elif mode == 1:
        v = p + off[j]
        y = (v + h[j] - (sm[j] - ((v >> sj) & sm[j]))) >> sj
    elif mode == 2:
        v = p + off[j]
        y = (v + h[j] - (sm[j] & np.int64(v < 0))) >> sj
    else:
        y = (p + off[j]) >> sj
    return min(max(y, lo), hi) + zp


@njit(cache=True, inline="always")
def _fast_row(x, i, eps, p2f, fast, tmask, m32, sh, h, sm, off, oh, zp, lo, hi, out, mode):
    """One row of ``layernorm_requant_ref`` into ``out[i]``; ``mode`` is a literal at every call site, so
    each mode compiles to its own branch-free, vectorisable element loops.  Returns 1 when the row fails
    H2, else 0.  The wrapper has checked H1 and |norm| < 2*sqrt(C-1)*2^F + 1 <= 2^31 - 3 (see below).

    norm_c = round(X_c), X_c = d_c*2^F/sigma = x_c*a - b, a = C*2^F/sigma, b = S*2^F/sigma; with sigma := 1
    when sigma = 0 (then every d_c = 0 and norm = 0, as defined).  |d_c| <= sqrt((C-1)*var_n) (Cauchy-
    Schwarz) and sigma + 1 > sqrt(var_n), so |X_c| < 2*sqrt(C-1)*2^F.

    Fast loop (``fast``: C*X*2^F <= 2^46, X a bound on |x|), the target being N = floor(X_c + c0) with
    c0 = delta (floor: N = floor(X_c), as delta < 1/sigma) or c0 = 1/2 + delta (half modes: N = floor(X_c + 1/2),
    as the fraction of X_c + 1/2 is a multiple of 1/(2 sigma) and delta < 1/(2 sigma)), delta = inv/4:
      T' = fl(fl(x*A) - B), A = fl(cf*inv), B = fl(fl(sf*inv) - c1), c1 = c0 - 1/2, inv = fl(1/sigma),
      cf = C*2^F and sf = S*2^F exact.  With u = 2^-53, |x*a|, |b| <= C*X*2^F/sigma and |c1| <= 1/2:
      err = |T' - (X_c + c1)| <= u*(8.01*C*X*2^F/sigma + 1.01) < 1/(8 sigma)   (C*X*2^F <= 2^46, sigma < 2^31)
    (a fused multiply-add only removes roundings).  delta (within 0.1 % of 1/(4 sigma)) exceeds err and
    delta + err < 1/(2 sigma), so T' lies in (N - 1/2, N + 1/2): rint(T') = N, and fl(T' + 1.5*2^52) =
    1.5*2^52 + N exactly (|T'| < 2^31).  The half modes differ only on ties X_c + 1/2 in Z; these need
    d*2^(F+1) = sigma*odd, i.e. sigma = 0 mod 2^(F+1) (``tmask``): only such rows of half_even/half_away take
    the exact loop, all other rows give floor(X_c + 1/2) in every half mode.

    Exact loop (quantities are integers in float64, |.| < 2^53): num = cf*x - sf = d_c*2^F (|num| < 2^52),
    q0 = floor(fl(num*inv)) is within 1 of floor(num/sigma) (|X| < 2^31: relative error 2^-52), r0 =
    num - q0*sigma exact (|q0*sigma| <= |num| + 2*sigma), one fix-up step gives (q, r), r in [0, sigma),
    and the mode compares r with sigma/2 exactly."""
    c = x.shape[1]
    cc = np.int64(c)
    s = np.int64(0)
    q = np.int64(0)
    for j in range(c):
        v = np.int64(x[i, j])
        s += v
        q += v * v
    tot = (cc * q - s * s) + eps  # var_n in [0, 2^62) by H1, eps in [0, 2^62): < 2^63
    if tot >= (np.int64(1) << 62):  # H2
        return 1
    sig = max(_isqrt(tot), np.int64(1))  # sigma 0: constant row, d = 0 everywhere -> norm 0 either way
    sigf = np.float64(sig)
    inv = 1.0 / sigf
    cf = np.float64(cc) * p2f
    sf = np.float64(s) * p2f
    if fast and (mode == 0 or mode == 3 or (sig & tmask) != 0):
        c1 = 0.25 * inv - 0.5 if mode == 3 else 0.25 * inv  # c0 - 1/2
        a = cf * inv
        b = sf * inv - c1
        for j in range(c):
            rr = (np.float64(x[i, j]) * a - b) + _MAGIC  # = MAGIC + N, N = norm_c
            nrm = np.int32(_f64_bits(rr))  # low 32 bits of the pattern: norm (|norm| < 2^31)
            out[i, j] = _rq(nrm, j, m32, sh, h, sm, off, oh, zp, lo, hi, mode)
        return 0
    hs = 0.5 * sigf
    for j in range(c):
        num = cf * np.float64(x[i, j]) - sf
        qf = np.floor(num * inv)
        r = num - qf * sigf
        neg = r < 0.0
        qf = qf - 1.0 if neg else qf
        r = r + sigf if neg else r
        big = r >= sigf
        qf = qf + 1.0 if big else qf
        r = r - sigf if big else r
        qi = np.int32(qf)
        if mode == 0:
            up = r >= hs
        elif mode == 1:
            up = (r > hs) | ((r == hs) & ((qi & 1) == 1))
        elif mode == 2:
            up = (r > hs) | ((r == hs) & (num >= 0.0))
        else:
            up = False
        out[i, j] = _rq(qi + np.int32(up), j, m32, sh, h, sm, off, oh, zp, lo, hi, mode)
    return 0


@njit(cache=True, parallel=True, fastmath={"contract"})  # contract: see _fast_row (exact either way)
def _ln_rows_0(x, eps, p2f, fast, tmask, m32, sh, h, sm, off, oh, zp, lo, hi, out, bad):
    for i in prange(x.shape[0]):
        bad[i] = _fast_row(x, i, eps, p2f, fast, tmask, m32, sh, h, sm, off, oh, zp, lo, hi, out, 0)


@njit(cache=True, parallel=True, fastmath={"contract"})  # contract: see _fast_row (exact either way)
def _ln_rows_1(x, eps, p2f, fast, tmask, m32, sh, h, sm, off, oh, zp, lo, hi, out, bad):
    for i in prange(x.shape[0]):
        bad[i] = _fast_row(x, i, eps, p2f, fast, tmask, m32, sh, h, sm, off, oh, zp, lo, hi, out, 1)


@njit(cache=True, parallel=True, fastmath={"contract"})  # contract: see _fast_row (exact either way)
def _ln_rows_2(x, eps, p2f, fast, tmask, m32, sh, h, sm, off, oh, zp, lo, hi, out, bad):
    for i in prange(x.shape[0]):
        bad[i] = _fast_row(x, i, eps, p2f, fast, tmask, m32, sh, h, sm, off, oh, zp, lo, hi, out, 2)


@njit(cache=True, parallel=True, fastmath={"contract"})  # contract: see _fast_row (exact either way)
def _ln_rows_3(x, eps, p2f, fast, tmask, m32, sh, h, sm, off, oh, zp, lo, hi, out, bad):
    for i in prange(x.shape[0]):
        bad[i] = _fast_row(x, i, eps, p2f, fast, tmask, m32, sh, h, sm, off, oh, zp, lo, hi, out, 3)


_LN_ROWS = (_ln_rows_0, _ln_rows_1, _ln_rows_2, _ln_rows_3)
"""One kernel per rounding mode id (each compiles on first use only)."""


def layernorm_requant_fast(x: np.ndarray, eps_q: int, frac_bits: int, rc: RequantConsts, out_dtype, *,
                           _force_exact: bool = False) -> np.ndarray | None:
    """``layernorm_requant_ref`` for int8/16/32 ``x [T, C]`` with ``C*max|x| < 2^31`` (H1), ``frac_bits <= 20``
    and ``2*sqrt(C-1)*2^F + 1 < 2^31 - 2`` (no norm can leave int32); None otherwise, or when a row fails H2
    (the caller's fallback raises the reference's error).  ``_force_exact`` (tests) runs every row through
    the exact (remainder) element loop.
    """
    if x.ndim != 2 or x.dtype.kind != "i" or x.dtype.itemsize > 4 or not 0 <= frac_bits <= 20:
        return None
    t, c = x.shape
    f = int(frac_bits)
    if c == 0 or c != rc.c or not 0 <= int(eps_q) < _LIM62 or 4 * (c - 1) << (2 * f) >= ((1 << 31) - 3) ** 2:
        return None
    if x.dtype.itemsize <= 2:
        xb = 1 << (8 * x.dtype.itemsize - 1)  # the dtype's bound on |x|
    else:
        xb = max(-int(x.min(initial=0)), int(x.max(initial=0)))
    if c * xb >= (1 << 31):
        if x.dtype.itemsize <= 2:
            xb = max(-int(x.min(initial=0)), int(x.max(initial=0)))
        if c * xb >= (1 << 31):
            return None  # H1
    out = np.empty((t, c), dtype=out_dtype)
    if t == 0:
        return out
    bad = np.zeros(t, dtype=np.uint8)
    fast = (c * xb) << f <= (1 << 46) and not _force_exact  # the fast loop's error bound (see _fast_row)
    _LN_ROWS[rc.mode](np.ascontiguousarray(x), int(eps_q), float(1 << f), fast, (2 << f) - 1,
                      rc.mult.astype(np.int32), rc.sh, rc.h, rc.sm, rc.off, rc.off + rc.h, rc.zp, rc.lo, rc.hi, out, bad)
    return None if bad.any() else out
