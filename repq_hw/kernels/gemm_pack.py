"""Packed weights for the fast GEMM kernels (``gemm_vnni.py``), built once per weight matrix.

The fast kernels compute the same integer as :func:`repq_hw.kernels.gemm.gemm_zp_ref`::

    out[m, n] = sum_k (a[m,k] - za) * (w[n,k] - zw[n]) + bias[n]

from a *shifted* weight ``b[n,k] = w[n,k] - off[n]`` that fits the multiplier's signed operand:

    sum_k (a - za)(w - zw) = sum_k a*b  -  za*sum_k b  +  (off - zw) * (rowsum(a) - K*za)

so ``out = dot(a, b) + e[n]*rowsum(a)[m] + const[n]`` with ``e = off - zw`` and
``const = bias - za*colsum(b) - K*za*e``  (exact integer identity; ``colsum(b) = sum_k b[n,k]``).

Three layouts (``path``), each ``(panel, k-group, lanes, group bytes)`` with zero padding in N and K:

=========  ==========================  ============  ===========================================
path       B element                   ``off[n]``    multiply-add
=========  ==========================  ============  ===========================================
``portable`` int16 rows [N, K] (padded)  ``zw[n]``     plain Numba dot products (any CPU)
``i16``    int16, K in pairs, 16 cols  ``zw[n]``     ``vpmaddwd`` (AVX2)
``f32``    float32, 16 cols            ``zw[n]``     FMA on integer-valued floats, exact K-chunks
``u8s8``   int8, K in quads, 16 cols   ``zw[n]``     ``vpmaddubsw`` + int16 sums (AVX2), small codes
``vnni``   int8, K in quads, 32 cols   see below     ``vpdpbusd`` (AVX-512 VNNI)
=========  ==========================  ============  ===========================================

``i16``/``u8s8`` use ``off = zw`` so ``e = 0``: no row sums at all.  ``vnni`` needs ``b`` in int8: it uses
``off = zw`` when every ``w[n,:] - zw[n]`` fits int8, otherwise ``off = 128`` (``b = w - 128`` always fits
for uint8 codes) and pays ``e[n] * rowsum(a)[m]`` in the epilogue.

Exactness (every kernel accumulates in int32 lanes, which must never wrap).  With ``A`` = the largest
activation code (255 unless the caller knows better) and ``Bm = max|b|``:

* every partial sum of ``dot`` is bounded by ``K*A*Bm`` (each product by ``A*Bm``);
* the epilogue adds ``e[n]*rowsum`` (``|.| <= max|e| * K * A``) and ``const[n]``;
* so if ``S = K*A*Bm + max|e|*K*A + max|const| <= 2^31 - 1`` (:attr:`PackedGemm.safe`), every int32
  intermediate is the exact integer and the result equals the reference's int64 one, which then also
  fits int32 (the reference raises nowhere).  When ``S`` is too large the caller uses the reference-exact
  fallback kernel instead, which accumulates in int64 and raises the reference's OverflowError.
* ``u8s8`` also needs the int16 sums of ``vpmaddubsw`` exact: one instruction adds two products per 16-bit
  lane (``<= 2*A*Bm``), and :func:`u8s8_period` partial sums of ``T`` such pairs stay ``<= 32767``,
  after which they are widened into the int32 accumulators (``vpmaddwd`` with ones).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["I32_MAX", "NR_AVX2", "NR_VNNI", "PackedGemm", "f32_center", "f32_chunk", "pack_gemm", "u8s8_period"]

I32_MAX = (1 << 31) - 1
NR_AVX2 = 16  # columns per panel, 256-bit kernels
NR_VNNI = 32  # columns per panel, 512-bit kernel


def u8s8_period(a_max: int, b_absmax: int) -> int:
    """Largest number ``T`` of ``vpmaddubsw`` results that can be summed in an int16 lane exactly.

    One result is ``u8*s8 + u8*s8 <= 2*a_max*b_absmax`` in absolute value (must itself be <= 32767, or
    the instruction would saturate); ``T`` of them stay within int16 when ``T*2*a_max*b_absmax <= 32767``.
    Returns 0 when even one result could saturate.
    """
    pair = 2 * int(a_max) * int(b_absmax)
    if pair == 0:
        return 1 << 20
    return 32767 // pair


@dataclass
class PackedGemm:
    """One weight matrix prepared for a fast kernel (see the module docstring for every field's meaning)."""

    path: str  # "i16", "u8s8", "vnni"
    n: int
    k: int
    a_zp: int
    a_max: int  # activation bound the safety proof used
    b: np.ndarray  # packed B, 1-D (int16 or int8)
    const: np.ndarray  # int32 [panels * nr]
    e: np.ndarray  # int32 [panels * nr] (all zero unless path == "vnni" with off = 128)
    use_rowsum: bool
    b_absmax: int
    safe: bool
    a_center: int = 0  # f32 path: activations enter as a - a_center
    chunk: int = 0  # f32 path: exact K-chunk

    @property
    def nr(self) -> int:
        return {"vnni": NR_VNNI, "portable": 4}.get(self.path, NR_AVX2)

    @property
    def panels(self) -> int:
        return -(-self.n // self.nr)

    @property
    def kgroups(self) -> int:
        return -(-self.k // {"i16": 2, "portable": 2, "f32": 1}.get(self.path, 4))

    @property
    def nbytes(self) -> int:
        return self.b.nbytes + self.const.nbytes + self.e.nbytes


def _layout(b: np.ndarray, nr: int, group: int, dtype) -> np.ndarray:
    """[N, K] -> 1-D (panel, k/group, nr lanes, group) with zero padding."""
    n, k = b.shape
    p = -(-n // nr)
    kg = -(-k // group)
    full = np.zeros((p * nr, kg * group), dtype=dtype)
    full[:n, :k] = b
    return np.ascontiguousarray(full.reshape(p, nr, kg, group).transpose(0, 2, 1, 3)).reshape(-1)


def pack_gemm(w: np.ndarray, w_zp, bias, a_zp: int, path: str, a_max: int = 255) -> PackedGemm:
    """Pack uint8 weight codes ``w [N, K]`` for ``path`` ("i16", "u8s8" or "vnni").

    Args:
        w: uint8 codes, row n = output channel n.
        w_zp: per-channel zero points ``[N]`` (or scalar), int32 range.
        bias: int32 ``[N]`` or None.
        a_zp: activation zero point.
        path: kernel layout.
        a_max: the largest activation code the kernel will see (bounds the safety proof).

    Returns:
        a :class:`PackedGemm`; check ``.safe`` (and for "u8s8", :func:`u8s8_period` > 0) before use.
    """
    w = np.asarray(w)
    n, k = w.shape
    wi = w.astype(np.int64)
    zw = np.broadcast_to(np.asarray(w_zp, dtype=np.int64), (n,)).copy()
    bz = np.zeros(n, dtype=np.int64) if bias is None else np.asarray(bias, dtype=np.int64).reshape(n)
    za = int(a_zp)
    if path == "vnni":
        d = wi - zw[:, None]
        fits = (d.min(axis=1, initial=0) >= -128) & (d.max(axis=1, initial=0) <= 127)
        off = np.where(fits, zw, 128)
        nr, group, dt = NR_VNNI, 4, np.int8
    elif path == "portable":  # row-major int16 [N padded to 4, K padded to 2]: dot products over k
        off = zw
        nr, group, dt = 4, 2, np.int16
    elif path == "f32":  # float32 [panel, k, 16]; A is fed centred (a - a_center), see f32_plan
        off = zw
        nr, group, dt = NR_AVX2, 1, np.float32
    elif path in ("i16", "u8s8"):
        off = zw
        nr, group, dt = NR_AVX2, (2 if path == "i16" else 4), (np.int16 if path == "i16" else np.int8)
    else:
        raise ValueError(f"unknown packing path {path!r}")
    b = wi - off[:, None]
    lo, hi = (-(1 << 24), 1 << 24) if dt is np.float32 else (np.iinfo(dt).min, np.iinfo(dt).max)
    b_absmax = int(np.abs(b).max(initial=0))
    fits_dtype = b.size == 0 or (int(b.min()) >= lo and int(b.max()) <= hi)
    e = off - zw
    colsum = b.sum(axis=1)
    a_center = 0
    if path == "f32":
        # sum (a-za)(w-zw) = sum (a-c)*b + (c-za)*colsum(b): no row sums; A is converted as a - c
        a_center = f32_center(a_max)
        const = bz + (a_center - za) * colsum
        amag = max(a_center, a_max - a_center)
    else:
        const = bz - za * colsum - k * za * e
        amag = a_max
    bound = k * amag * b_absmax + int(np.abs(e).max(initial=0)) * k * a_max + int(np.abs(const).max(initial=0))
    safe = bool(fits_dtype and bound <= I32_MAX and (path != "u8s8" or u8s8_period(a_max, b_absmax) > 0)
                and (path != "f32" or f32_chunk(amag, b_absmax) > 0))
    p = -(-n // nr)
    cpad = np.zeros(p * nr, dtype=np.int32)
    epad = np.zeros(p * nr, dtype=np.int32)
    if safe:
        cpad[:n] = const
        epad[:n] = e
        if path == "portable":
            packed = np.zeros((p * nr, -(-k // group) * group), dtype=dt)
            packed[:n, :k] = b
            packed = packed.reshape(-1)
        else:
            packed = _layout(b, nr, group, dt)
    else:
        packed = np.zeros(0, dtype=dt)
    pg = PackedGemm(path, n, k, za, int(a_max), packed, cpad, epad, bool(np.any(e != 0)), b_absmax, safe)
    pg.a_center = a_center
    pg.chunk = f32_chunk(max(a_center, a_max - a_center), b_absmax) if path == "f32" else 0
    return pg


def f32_center(a_max: int) -> int:
    """The value subtracted from activation codes before the float32 kernel: 128 for 8-bit codes (so
    |a - c| <= 128), 0 when the codes are small already."""
    return 128 if a_max > 127 else 0


def f32_chunk(a_absmax: int, b_absmax: int) -> int:
    """Longest K-chunk whose float32 partial sums are exact: every product and partial sum is an integer
    of magnitude <= chunk * a_absmax * b_absmax <= 2^24, hence representable, so no fma/add rounds.
    (Chunk sums are converted to int32 and added there; 0 if even one product could exceed 2^24.)"""
    p = int(a_absmax) * int(b_absmax)
    return (1 << 24) // p if p else 1 << 30
