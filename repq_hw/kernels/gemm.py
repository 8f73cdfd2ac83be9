"""Asymmetric integer GEMM / batched matmul with zero points, int32 result.

Definition (reference)::

    out[m, n] = sum_k (a[m, k] - a_zp) * (w[n, k] - w_zp[n]) + bias[n]

Fast kernel (zero-point expansion, see ``docs/arith.md`` and ``docs/ops/gemm_zp.md``)::

    out[m, n] = dot(a[m], w[n]) - w_zp[n] * rowsum(a)[m] + const[n]
    const[n]  = bias[n] - a_zp * colsum(w)[n] + K * a_zp * w_zp[n]

``dot`` only multiplies raw uint8 codes (0..255), accumulated in int32 over K-chunks of at most
32768 (32768 * 255^2 < 2^31), chunk sums added in int64.

Headroom (both implementations, checked from the attributes before any arithmetic)::

    K * (255 + |a_zp|) * (255 + max|w_zp|) + max|bias| <= 2^63 - 1

This bounds the sum of absolute values of every term of the expansion, so every partial sum in
any order fits int64.  The final narrowing to int32 raises OverflowError naming the value.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["K_CHUNK", "bmm_zp", "bmm_zp_ref", "gemm_zp", "gemm_zp_ref"]

K_CHUNK = 32768
"""Largest K-chunk accumulated in int32 by the fast kernel (32768 * 255 * 255 < 2^31)."""

_I32_MIN = -(1 << 31)
_I32_MAX = (1 << 31) - 1
_I64_MAX = (1 << 63) - 1


def _check_codes(x: object, what: str, op: str, ndim: int) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype != np.uint8:
        raise ValueError(f"{op}: {what} must be uint8 codes, got dtype {a.dtype}")
    if a.ndim != ndim:
        raise ValueError(f"{op}: {what} must be {ndim}-D, got shape {a.shape}")
    return a


def _check_i32_vec(x: object, n: int, what: str, op: str) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.kind not in "iu":
        raise ValueError(f"{op}: {what} must be integer, got dtype {a.dtype}")
    if a.ndim == 0:
        a = np.full(n, int(a), dtype=np.int64)
    if a.shape != (n,):
        raise ValueError(f"{op}: {what} must have shape ({n},), got {a.shape}")
    a = a.astype(np.int64)
    if a.size and (int(a.min()) < _I32_MIN or int(a.max()) > _I32_MAX):
        raise ValueError(f"{op}: {what} outside int32")
    return a


def _check_scalar_zp(z: object, what: str, op: str) -> int:
    if not isinstance(z, (int, np.integer)) or isinstance(z, bool):
        raise ValueError(f"{op}: {what} must be an integer scalar, got {z!r}")  # noqa: TRY004 (bad attributes raise ValueError project-wide)
    z = int(z)
    if not _I32_MIN <= z <= _I32_MAX:
        raise ValueError(f"{op}: {what}={z} outside int32")
    return z


def _headroom(k: int, a_zp: int, w_zp_absmax: int, bias_absmax: int, op: str) -> None:
    bound = k * (255 + abs(a_zp)) * (255 + w_zp_absmax) + bias_absmax
    if bound > _I64_MAX:
        raise OverflowError(
            f"{op}: int64 headroom violated: K*(255+|a_zp|)*(255+max|w_zp|)+max|bias| = {bound} >= 2^63"
        )


def _narrow_ref(acc: np.ndarray, op: str) -> np.ndarray:
    bad = (acc < _I32_MIN) | (acc > _I32_MAX)
    if bad.any():
        i = tuple(int(t) for t in np.argwhere(bad)[0])
        raise OverflowError(f"{op}: accumulator {int(acc[i])} at index {i} does not fit int32")
    return acc.astype(np.int32)


# ---------------------------------------------------------------------------------------------
# Reference
# ---------------------------------------------------------------------------------------------


def gemm_zp_ref(a: np.ndarray, a_zp: int, w: np.ndarray, w_zp: object, bias: object | None) -> np.ndarray:
    """Reference asymmetric GEMM: ``sum_k (a[m,k]-a_zp)*(w[n,k]-w_zp[n]) + bias[n]`` (int64, exact).

    Args:
        a: uint8 activation codes ``[M, K]``.
        a_zp: activation zero point (int32 scalar, any value).
        w: uint8 weight codes ``[N, K]`` (row n = output channel n).
        w_zp: per-output-channel weight zero points, int32 ``[N]`` (or a scalar).
        bias: int32 ``[N]`` or None (zero).

    Returns:
        int32 ``[M, N]``.

    Raises:
        OverflowError: headroom condition violated or a result outside int32.
        ValueError: bad dtype / shape / zero point.
    """
    op = "gemm_zp"
    a = _check_codes(a, "a", op, 2)
    w = _check_codes(w, "w", op, 2)
    if a.shape[1] != w.shape[1]:
        raise ValueError(f"{op}: K mismatch, a {a.shape} vs w {w.shape}")
    k, n = a.shape[1], w.shape[0]
    azp = _check_scalar_zp(a_zp, "a_zp", op)
    wzp = _check_i32_vec(w_zp, n, "w_zp", op)
    b = np.zeros(n, dtype=np.int64) if bias is None else _check_i32_vec(bias, n, "bias", op)
    _headroom(k, azp, int(np.abs(wzp).max(initial=0)), int(np.abs(b).max(initial=0)), op)
    ac = a.astype(np.int64) - azp  # [M, K]
    wc = w.astype(np.int64) - wzp[:, None]  # [N, K]
    acc = ac @ wc.T + b[None, :]
    return _narrow_ref(acc, op)


def bmm_zp_ref(a: np.ndarray, a_zp: int, b: np.ndarray, b_zp: int) -> np.ndarray:
    """Reference batched matmul with per-tensor zero points: ``sum_k (a[i,m,k]-a_zp)*(b[i,n,k]-b_zp)``.

    The second operand is given row-wise (``[B, N, K]``), as ``k`` in ``q @ k^T``.

    Args:
        a: uint8 ``[B, M, K]``.
        a_zp: zero point of ``a`` (int32 scalar).
        b: uint8 ``[B, N, K]``.
        b_zp: zero point of ``b`` (int32 scalar).

    Returns:
        int32 ``[B, M, N]``.

    Raises:
        OverflowError: headroom condition violated or a result outside int32.
        ValueError: bad dtype / shape / zero point.
    """
    op = "bmm_zp"
    a = _check_codes(a, "a", op, 3)
    b = _check_codes(b, "b", op, 3)
    if a.shape[0] != b.shape[0] or a.shape[2] != b.shape[2]:
        raise ValueError(f"{op}: shape mismatch, a {a.shape} vs b {b.shape}")
    azp = _check_scalar_zp(a_zp, "a_zp", op)
    bzp = _check_scalar_zp(b_zp, "b_zp", op)
    _headroom(a.shape[2], azp, abs(bzp), 0, op)
    acc = (a.astype(np.int64) - azp) @ np.swapaxes(b.astype(np.int64) - bzp, 1, 2)
    return _narrow_ref(acc, op)


# ---------------------------------------------------------------------------------------------
# Numba
# ---------------------------------------------------------------------------------------------


@njit(cache=True)
def _dot_chunk(a16: np.ndarray, w8: np.ndarray, n: int) -> np.int32:
    """``sum_{k<n} a16[k]*w8[k]`` for codes in 0..255 and ``n <= 32768``: exact in int32 (< 2^31)."""
    s = np.int32(0)
    for kk in range(n):
        s = np.int32(s + np.int32(a16[kk]) * np.int32(w8[kk]))
    return s


@njit(cache=True, parallel=True)
def _bmm_core(
    a: np.ndarray,  # uint8 [B, M, K]
    w: np.ndarray,  # uint8 [B, N, K]
    wzp: np.ndarray,  # int64 [B, N]
    const: np.ndarray,  # int64 [B, N]
    out: np.ndarray,  # int32 [B, M, N]
    bad: np.ndarray,  # int64 [B*M, 2]: (flag, n) of the first non-int32 result of the row
) -> None:
    nb, m_rows, k = a.shape
    n_cols = w.shape[1]
    lo = np.int64(_I32_MIN)
    hi = np.int64(_I32_MAX)
    for r in prange(nb * m_rows):
        bi = r // m_rows
        mi = r - bi * m_rows
        arow = a[bi, mi].astype(np.int16)  # 0..255, widened once per row (int16 lanes for the MACs)
        rowsum = np.int64(0)
        for kk in range(k):
            rowsum += np.int64(arow[kk])  # <= 255*K
        for ni in range(n_cols):
            wrow = w[bi, ni]
            dot = np.int64(0)
            for k0 in range(0, k, K_CHUNK):
                ln = min(K_CHUNK, k - k0)
                dot += np.int64(_dot_chunk(arow[k0 : k0 + ln], wrow[k0 : k0 + ln], ln))
            v = dot - wzp[bi, ni] * rowsum + const[bi, ni]  # every term bounded by the headroom check
            if v < lo or v > hi:
                if bad[r, 0] == 0:
                    bad[r, 0] = 1
                    bad[r, 1] = ni
                out[bi, mi, ni] = 0
            else:
                out[bi, mi, ni] = np.int32(v)


def _run_core(a3, w3, wzp2, const2, op, orig_value):
    nb, m, _ = a3.shape
    out = np.empty((nb, m, w3.shape[1]), dtype=np.int32)
    bad = np.zeros((nb * m, 2), dtype=np.int64)
    _bmm_core(np.ascontiguousarray(a3), np.ascontiguousarray(w3), wzp2, const2, out, bad)
    if bad[:, 0].any():
        r = int(np.flatnonzero(bad[:, 0])[0])
        bi, mi, ni = r // m, r % m, int(bad[r, 1])
        raise OverflowError(
            f"{op}: accumulator {orig_value(bi, mi, ni)} at index {(bi, mi, ni)} does not fit int32"
        )
    return out


def gemm_zp(a: np.ndarray, a_zp: int, w: np.ndarray, w_zp: object, bias: object | None) -> np.ndarray:
    """Numba asymmetric GEMM via the zero-point expansion (bit-identical to :func:`gemm_zp_ref`).

    Args:
        a: uint8 activation codes ``[M, K]``.
        a_zp: activation zero point (int32 scalar).
        w: uint8 weight codes ``[N, K]``.
        w_zp: per-output-channel zero points, int32 ``[N]`` (or a scalar).
        bias: int32 ``[N]`` or None.

    Returns:
        int32 ``[M, N]``.
    """
    op = "gemm_zp"
    a = _check_codes(a, "a", op, 2)
    w = _check_codes(w, "w", op, 2)
    if a.shape[1] != w.shape[1]:
        raise ValueError(f"{op}: K mismatch, a {a.shape} vs w {w.shape}")
    k, n = a.shape[1], w.shape[0]
    azp = _check_scalar_zp(a_zp, "a_zp", op)
    wzp = _check_i32_vec(w_zp, n, "w_zp", op)
    b = np.zeros(n, dtype=np.int64) if bias is None else _check_i32_vec(bias, n, "bias", op)
    _headroom(k, azp, int(np.abs(wzp).max(initial=0)), int(np.abs(b).max(initial=0)), op)
    colsum = w.sum(axis=1, dtype=np.int64)  # <= 255*K
    const = b - azp * colsum + (k * azp) * wzp  # each term within the headroom bound

    def orig(bi, mi, ni):
        return int(((a[mi].astype(np.int64) - azp) * (w[ni].astype(np.int64) - int(wzp[ni]))).sum()) + int(
            b[ni]
        )

    out = _run_core(a[None], w[None], wzp[None], const[None], op, orig)
    return out[0]


def bmm_zp(a: np.ndarray, a_zp: int, b: np.ndarray, b_zp: int) -> np.ndarray:
    """Numba batched matmul with zero points (bit-identical to :func:`bmm_zp_ref`).

    Args:
        a: uint8 ``[B, M, K]``.
        a_zp: zero point of ``a`` (int32 scalar).
        b: uint8 ``[B, N, K]`` (second operand row-wise).
        b_zp: zero point of ``b`` (int32 scalar).

    Returns:
        int32 ``[B, M, N]``.
    """
    op = "bmm_zp"
    a = _check_codes(a, "a", op, 3)
    b = _check_codes(b, "b", op, 3)
    if a.shape[0] != b.shape[0] or a.shape[2] != b.shape[2]:
        raise ValueError(f"{op}: shape mismatch, a {a.shape} vs b {b.shape}")
    azp = _check_scalar_zp(a_zp, "a_zp", op)
    bzp = _check_scalar_zp(b_zp, "b_zp", op)
    k = a.shape[2]
    _headroom(k, azp, abs(bzp), 0, op)
    nb, nn = b.shape[0], b.shape[1]
    wzp = np.full((nb, nn), bzp, dtype=np.int64)
    const = -azp * b.sum(axis=2, dtype=np.int64) + k * azp * bzp

    def orig(bi, mi, ni):
        return int(((a[bi, mi].astype(np.int64) - azp) * (b[bi, ni].astype(np.int64) - bzp)).sum())

    return _run_core(a, b, wzp, const, op, orig)
