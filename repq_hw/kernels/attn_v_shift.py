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

from .rounding import mode_id, rounding_rshift, rounding_rshift_ref

__all__ = ["attn_v_shift", "attn_v_shift_ref", "sqrt2_multiplier"]

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
    if ca.size and int(ca.max()) > z:
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
    nz = ca[ca != z]
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
