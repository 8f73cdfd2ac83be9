"""Fast exact GEMM / batched matmul kernels on packed weights, bit-identical to ``gemm.py``'s references.

Paths (chosen once per weight matrix, see :func:`choose_path`; force one with :func:`force_path` or the
``path=`` argument -- no environment variable changes anything):

``vnni``      AVX-512 VNNI: ``vpdpbusd`` (u8 x s8, 64 MACs per instruction), 8 x 32 register tile of int32
              accumulators (16 zmm), weights packed (panel of 32 columns, k/4, 32 lanes, 4 bytes).
``u8s8``      AVX2, small codes (e.g. W4A4): ``vpmaddubsw`` (32 MACs per instruction) summed in int16 lanes
              for ``T`` steps (proved exact, ``gemm_pack.u8s8_period``), then widened into int32
              accumulators with ``vpmaddwd`` by ones; 6 x 16 tile.
``f32``       AVX2 + FMA, any 8-bit codes: FMA on integer-valued float32 (exact while every partial sum
              stays <= 2^24: K is cut into such chunks, chunk sums are added in int32), 6 x 16 tile.  On
              CPUs whose vector integer multiplier is narrower than their two FMA pipes (e.g. Zen 1,
              where ``vpmaddwd`` issues on one pipe) it can beat ``i16``; on the Zen 1 this was measured
              on it ran at the same speed, so it is not chosen automatically (it packs 4-byte weights).
``i16``       AVX2, any 8-bit codes: ``vpmaddwd`` on int16 operands (16 MACs per instruction), 6 x 16 tile.
``portable``  plain Numba int16 dot products (any CPU, no intrinsics); the bit-identical
              fallback for CPUs without AVX2/VNNI.

A path whose instructions the CPU lacks can still be forced: it then runs the same kernel with the
portable LLVM IR twins of the instructions (``simd.GENERIC``), which is how the tests exercise the VNNI
kernel on machines without VNNI.  Every kernel accumulates in int32 only when ``gemm_pack`` proved that no
partial sum can wrap (``PackedGemm.safe``); otherwise the call goes to ``gemm.gemm_zp`` / ``gemm.bmm_zp``
(int64 accumulation, the reference's OverflowError), so results and errors are the reference's always.

Threads: tiles are distributed with ``prange``; every output element is computed by exactly one tile in
a fixed summation order, so the result does not depend on the thread count.
"""

from __future__ import annotations

import contextlib

import numpy as np
from numba import njit, prange

from . import gemm as _gemm
from . import simd
from .gemm_pack import I32_MAX, PackedGemm, pack_gemm, u8s8_period
from .simd import (
    add16,
    add32,
    bcast8,
    bcast16,
    bcastf8,
    dpbusd,
    f8_to_i32,
    fmaf8,
    lane,
    load8,
    load16,
    loadf8,
    madd_i16,
    madd_u8s8,
    mul32,
    splat16,
    store8,
    store16,
    widen16,
    zero8,
    zero16,
    zerof8,
)

__all__ = [
    "PATHS",
    "available_paths",
    "bmm_zp_fast",
    "choose_path",
    "force_path",
    "gemm_packed",
    "gemm_zp_fast",
    "prepare_gemm",
]

PATHS = ("vnni", "u8s8", "f32", "i16", "portable")

FORCE_PATH: str | None = None
"""Module-level switch: when set, every kernel of this module uses this path (tests, benchmarks)."""

MIN_U8S8_PERIOD = 4  # below this the int16 widening costs more than vpmaddubsw saves: use i16


def available_paths() -> tuple[str, ...]:
    """The paths that run native instructions on this CPU, fastest first (``portable`` always)."""
    out = []
    if simd.has_vnni512():
        out.append("vnni")
    if simd.has_avx2():
        out += ["u8s8", "i16", "f32"] if simd.has_fma() else ["u8s8", "i16"]
    out.append("portable")
    return tuple(out)


@contextlib.contextmanager
def force_path(path: str | None):
    """``with force_path("portable"): ...`` runs every GEMM of this module on that path."""
    global FORCE_PATH
    if path is not None and path not in PATHS:
        raise ValueError(f"unknown GEMM path {path!r}; expected one of {PATHS}")
    old = FORCE_PATH
    FORCE_PATH = path
    try:
        yield
    finally:
        FORCE_PATH = old


def _tag(path: str) -> simd.Impl:
    native = simd.has_vnni512() if path == "vnni" else simd.has_avx2()
    return simd.NATIVE if native else simd.GENERIC


def choose_path(a_max: int, b_absmax: int, path: str | None = None) -> str:
    """The path for a GEMM with activation codes <= a_max and shifted weights |b| <= b_absmax."""
    p = path or FORCE_PATH
    if p is not None:
        if p not in PATHS:
            raise ValueError(f"unknown GEMM path {p!r}; expected one of {PATHS}")
        return p
    avail = available_paths()
    if "vnni" in avail:
        return "vnni"
    if "u8s8" in avail and u8s8_period(a_max, b_absmax) >= MIN_U8S8_PERIOD:
        return "u8s8"
    if "i16" in avail:  # f32 measured equal on Zen 1 and packs 2x the bytes: only when forced
        return "i16"
    return "portable"


# ---------------------------------------------------------------------------------------------
# Tile stores
# ---------------------------------------------------------------------------------------------


@njit(cache=True, inline="always")
def _put8x2(out, ldo, r, m, c0, n, v0, v1):
    """Store 16 int32 lanes (two 256-bit vectors) at out[r, c0:c0+16], clipped to m rows and n columns."""
    if r < m:
        o = r * ldo + c0
        if c0 + 16 <= n:
            store8(out, o, v0)
            store8(out, o + 8, v1)
        else:
            for j in range(min(8, n - c0)):
                out[o + j] = lane(v0, j)
            for j in range(8, n - c0):
                out[o + j] = lane(v1, j - 8)


@njit(cache=True, inline="always")
def _put16x2(out, ldo, r, m, c0, n, v0, v1):
    """Store 32 int32 lanes (two 512-bit vectors) at out[r, c0:c0+32], clipped."""
    if r < m:
        o = r * ldo + c0
        if c0 + 32 <= n:
            store16(out, o, v0)
            store16(out, o + 16, v1)
        else:
            for j in range(min(16, n - c0)):
                out[o + j] = lane(v0, j)
            for j in range(16, n - c0):
                out[o + j] = lane(v1, j - 16)


# ---------------------------------------------------------------------------------------------
# Tiles (one register tile each; rows past m re-read row m-1 and are not stored)
# ---------------------------------------------------------------------------------------------


@njit(cache=True)
def _tile_i16(tag, a, lda, r0, m, bp, bo, k2n, cst, c0, out, ldo, n):
    """6 x 16 tile: a int16 rows (K padded to even), bp int16 panel (k/2, 16 lanes, 2), vpmaddwd."""
    last = m - 1
    o0 = min(r0, last) * lda
    o1 = min(r0 + 1, last) * lda
    o2 = min(r0 + 2, last) * lda
    o3 = min(r0 + 3, last) * lda
    o4 = min(r0 + 4, last) * lda
    o5 = min(r0 + 5, last) * lda
    z = zero8()
    c00 = z
    c01 = z
    c10 = z
    c11 = z
    c20 = z
    c21 = z
    c30 = z
    c31 = z
    c40 = z
    c41 = z
    c50 = z
    c51 = z
    for k2 in range(k2n):
        b0 = load8(bp, bo)
        b1 = load8(bp, bo + 16)
        bo += 32
        kk = 2 * k2
        x = bcast8(a, o0 + kk)
        c00 = add32(c00, madd_i16(tag, x, b0))
        c01 = add32(c01, madd_i16(tag, x, b1))
        x = bcast8(a, o1 + kk)
        c10 = add32(c10, madd_i16(tag, x, b0))
        c11 = add32(c11, madd_i16(tag, x, b1))
        x = bcast8(a, o2 + kk)
        c20 = add32(c20, madd_i16(tag, x, b0))
        c21 = add32(c21, madd_i16(tag, x, b1))
        x = bcast8(a, o3 + kk)
        c30 = add32(c30, madd_i16(tag, x, b0))
        c31 = add32(c31, madd_i16(tag, x, b1))
        x = bcast8(a, o4 + kk)
        c40 = add32(c40, madd_i16(tag, x, b0))
        c41 = add32(c41, madd_i16(tag, x, b1))
        x = bcast8(a, o5 + kk)
        c50 = add32(c50, madd_i16(tag, x, b0))
        c51 = add32(c51, madd_i16(tag, x, b1))
    q0 = load8(cst, c0)
    q1 = load8(cst, c0 + 8)
    _put8x2(out, ldo, r0, m, c0, n, add32(c00, q0), add32(c01, q1))
    _put8x2(out, ldo, r0 + 1, m, c0, n, add32(c10, q0), add32(c11, q1))
    _put8x2(out, ldo, r0 + 2, m, c0, n, add32(c20, q0), add32(c21, q1))
    _put8x2(out, ldo, r0 + 3, m, c0, n, add32(c30, q0), add32(c31, q1))
    _put8x2(out, ldo, r0 + 4, m, c0, n, add32(c40, q0), add32(c41, q1))
    _put8x2(out, ldo, r0 + 5, m, c0, n, add32(c50, q0), add32(c51, q1))


@njit(cache=True)
def _tile_u8s8(tag, a, lda, r0, m, bp, bo, kqn, period, cst, c0, out, ldo, n):
    """6 x 16 tile: a uint8 rows (K padded to 4), bp int8 panel (k/4, 16 lanes, 4), vpmaddubsw summed in
    int16 for ``period`` k-quads (exact by gemm_pack.u8s8_period), then widened into int32."""
    last = m - 1
    o0 = min(r0, last) * lda
    o1 = min(r0 + 1, last) * lda
    o2 = min(r0 + 2, last) * lda
    o3 = min(r0 + 3, last) * lda
    o4 = min(r0 + 4, last) * lda
    o5 = min(r0 + 5, last) * lda
    z = zero8()
    c00 = z
    c01 = z
    c10 = z
    c11 = z
    c20 = z
    c21 = z
    c30 = z
    c31 = z
    c40 = z
    c41 = z
    c50 = z
    c51 = z
    for kb in range(0, kqn, period):
        ke = min(kb + period, kqn)
        s00 = z
        s01 = z
        s10 = z
        s11 = z
        s20 = z
        s21 = z
        s30 = z
        s31 = z
        s40 = z
        s41 = z
        s50 = z
        s51 = z
        for kq in range(kb, ke):
            b0 = load8(bp, bo)
            b1 = load8(bp, bo + 32)
            bo += 64
            kk = 4 * kq
            x = bcast8(a, o0 + kk)
            s00 = add16(s00, madd_u8s8(tag, x, b0))
            s01 = add16(s01, madd_u8s8(tag, x, b1))
            x = bcast8(a, o1 + kk)
            s10 = add16(s10, madd_u8s8(tag, x, b0))
            s11 = add16(s11, madd_u8s8(tag, x, b1))
            x = bcast8(a, o2 + kk)
            s20 = add16(s20, madd_u8s8(tag, x, b0))
            s21 = add16(s21, madd_u8s8(tag, x, b1))
            x = bcast8(a, o3 + kk)
            s30 = add16(s30, madd_u8s8(tag, x, b0))
            s31 = add16(s31, madd_u8s8(tag, x, b1))
            x = bcast8(a, o4 + kk)
            s40 = add16(s40, madd_u8s8(tag, x, b0))
            s41 = add16(s41, madd_u8s8(tag, x, b1))
            x = bcast8(a, o5 + kk)
            s50 = add16(s50, madd_u8s8(tag, x, b0))
            s51 = add16(s51, madd_u8s8(tag, x, b1))
        c00 = add32(c00, widen16(tag, s00))
        c01 = add32(c01, widen16(tag, s01))
        c10 = add32(c10, widen16(tag, s10))
        c11 = add32(c11, widen16(tag, s11))
        c20 = add32(c20, widen16(tag, s20))
        c21 = add32(c21, widen16(tag, s21))
        c30 = add32(c30, widen16(tag, s30))
        c31 = add32(c31, widen16(tag, s31))
        c40 = add32(c40, widen16(tag, s40))
        c41 = add32(c41, widen16(tag, s41))
        c50 = add32(c50, widen16(tag, s50))
        c51 = add32(c51, widen16(tag, s51))
    q0 = load8(cst, c0)
    q1 = load8(cst, c0 + 8)
    _put8x2(out, ldo, r0, m, c0, n, add32(c00, q0), add32(c01, q1))
    _put8x2(out, ldo, r0 + 1, m, c0, n, add32(c10, q0), add32(c11, q1))
    _put8x2(out, ldo, r0 + 2, m, c0, n, add32(c20, q0), add32(c21, q1))
    _put8x2(out, ldo, r0 + 3, m, c0, n, add32(c30, q0), add32(c31, q1))
    _put8x2(out, ldo, r0 + 4, m, c0, n, add32(c40, q0), add32(c41, q1))
    _put8x2(out, ldo, r0 + 5, m, c0, n, add32(c50, q0), add32(c51, q1))


@njit(cache=True)
def _tile_f32(a, lda, r0, m, bp, bo, k, chunk, cst, c0, out, ldo, n):
    """6 x 16 tile on integer-valued float32: a (centred codes) rows, bp float32 panel (k, 16 lanes).

    Exact: within a K-chunk every product and partial sum is an integer of magnitude <= 2^24
    (gemm_pack.f32_chunk), so no operation rounds; each chunk sum is converted to int32 (exact) and
    added to int32 accumulators, which PackedGemm.safe bounds."""
    last = m - 1
    o0 = min(r0, last) * lda
    o1 = min(r0 + 1, last) * lda
    o2 = min(r0 + 2, last) * lda
    o3 = min(r0 + 3, last) * lda
    o4 = min(r0 + 4, last) * lda
    o5 = min(r0 + 5, last) * lda
    z = zero8()
    c00 = z
    c01 = z
    c10 = z
    c11 = z
    c20 = z
    c21 = z
    c30 = z
    c31 = z
    c40 = z
    c41 = z
    c50 = z
    c51 = z
    for kb in range(0, k, chunk):
        ke = min(kb + chunk, k)
        zf = zerof8()
        f00 = zf
        f01 = zf
        f10 = zf
        f11 = zf
        f20 = zf
        f21 = zf
        f30 = zf
        f31 = zf
        f40 = zf
        f41 = zf
        f50 = zf
        f51 = zf
        for kk in range(kb, ke):
            b0 = loadf8(bp, bo)
            b1 = loadf8(bp, bo + 8)
            bo += 16
            x = bcastf8(a, o0 + kk)
            f00 = fmaf8(x, b0, f00)
            f01 = fmaf8(x, b1, f01)
            x = bcastf8(a, o1 + kk)
            f10 = fmaf8(x, b0, f10)
            f11 = fmaf8(x, b1, f11)
            x = bcastf8(a, o2 + kk)
            f20 = fmaf8(x, b0, f20)
            f21 = fmaf8(x, b1, f21)
            x = bcastf8(a, o3 + kk)
            f30 = fmaf8(x, b0, f30)
            f31 = fmaf8(x, b1, f31)
            x = bcastf8(a, o4 + kk)
            f40 = fmaf8(x, b0, f40)
            f41 = fmaf8(x, b1, f41)
            x = bcastf8(a, o5 + kk)
            f50 = fmaf8(x, b0, f50)
            f51 = fmaf8(x, b1, f51)
        c00 = add32(c00, f8_to_i32(f00))
        c01 = add32(c01, f8_to_i32(f01))
        c10 = add32(c10, f8_to_i32(f10))
        c11 = add32(c11, f8_to_i32(f11))
        c20 = add32(c20, f8_to_i32(f20))
        c21 = add32(c21, f8_to_i32(f21))
        c30 = add32(c30, f8_to_i32(f30))
        c31 = add32(c31, f8_to_i32(f31))
        c40 = add32(c40, f8_to_i32(f40))
        c41 = add32(c41, f8_to_i32(f41))
        c50 = add32(c50, f8_to_i32(f50))
        c51 = add32(c51, f8_to_i32(f51))
    q0 = load8(cst, c0)
    q1 = load8(cst, c0 + 8)
    _put8x2(out, ldo, r0, m, c0, n, add32(c00, q0), add32(c01, q1))
    _put8x2(out, ldo, r0 + 1, m, c0, n, add32(c10, q0), add32(c11, q1))
    _put8x2(out, ldo, r0 + 2, m, c0, n, add32(c20, q0), add32(c21, q1))
    _put8x2(out, ldo, r0 + 3, m, c0, n, add32(c30, q0), add32(c31, q1))
    _put8x2(out, ldo, r0 + 4, m, c0, n, add32(c40, q0), add32(c41, q1))
    _put8x2(out, ldo, r0 + 5, m, c0, n, add32(c50, q0), add32(c51, q1))


@njit(cache=True, inline="always")
def _vnni_epi(acc, q, e, rs, use_rs):
    v = add32(acc, q)
    if use_rs:
        v = add32(v, mul32(e, splat16(rs)))
    return v


@njit(cache=True)
def _tile_vnni(tag, a, lda, r0, m, bp, bo, kqn, cst, ev, rowsum, use_rs, c0, out, ldo, n):
    """8 x 32 tile: a uint8 rows (K padded to 4), bp int8 panel (k/4, 32 lanes, 4), vpdpbusd into 16
    int32 accumulators; epilogue ``+ const[n] (+ e[n] * rowsum[m])``."""
    last = m - 1
    o0 = min(r0, last) * lda
    o1 = min(r0 + 1, last) * lda
    o2 = min(r0 + 2, last) * lda
    o3 = min(r0 + 3, last) * lda
    o4 = min(r0 + 4, last) * lda
    o5 = min(r0 + 5, last) * lda
    o6 = min(r0 + 6, last) * lda
    o7 = min(r0 + 7, last) * lda
    z = zero16()
    c00 = z
    c01 = z
    c10 = z
    c11 = z
    c20 = z
    c21 = z
    c30 = z
    c31 = z
    c40 = z
    c41 = z
    c50 = z
    c51 = z
    c60 = z
    c61 = z
    c70 = z
    c71 = z
    for kq in range(kqn):
        b0 = load16(bp, bo)
        b1 = load16(bp, bo + 64)
        bo += 128
        kk = 4 * kq
        x = bcast16(a, o0 + kk)
        c00 = dpbusd(tag, c00, x, b0)
        c01 = dpbusd(tag, c01, x, b1)
        x = bcast16(a, o1 + kk)
        c10 = dpbusd(tag, c10, x, b0)
        c11 = dpbusd(tag, c11, x, b1)
        x = bcast16(a, o2 + kk)
        c20 = dpbusd(tag, c20, x, b0)
        c21 = dpbusd(tag, c21, x, b1)
        x = bcast16(a, o3 + kk)
        c30 = dpbusd(tag, c30, x, b0)
        c31 = dpbusd(tag, c31, x, b1)
        x = bcast16(a, o4 + kk)
        c40 = dpbusd(tag, c40, x, b0)
        c41 = dpbusd(tag, c41, x, b1)
        x = bcast16(a, o5 + kk)
        c50 = dpbusd(tag, c50, x, b0)
        c51 = dpbusd(tag, c51, x, b1)
        x = bcast16(a, o6 + kk)
        c60 = dpbusd(tag, c60, x, b0)
        c61 = dpbusd(tag, c61, x, b1)
        x = bcast16(a, o7 + kk)
        c70 = dpbusd(tag, c70, x, b0)
        c71 = dpbusd(tag, c71, x, b1)
    q0 = load16(cst, c0)
    q1 = load16(cst, c0 + 16)
    e0 = load16(ev, c0)
    e1 = load16(ev, c0 + 16)
    rr = min(r0, last)
    _put16x2(out, ldo, r0, m, c0, n, _vnni_epi(c00, q0, e0, rowsum[rr], use_rs),
             _vnni_epi(c01, q1, e1, rowsum[rr], use_rs))
    rr = min(r0 + 1, last)
    _put16x2(out, ldo, r0 + 1, m, c0, n, _vnni_epi(c10, q0, e0, rowsum[rr], use_rs),
             _vnni_epi(c11, q1, e1, rowsum[rr], use_rs))
    rr = min(r0 + 2, last)
    _put16x2(out, ldo, r0 + 2, m, c0, n, _vnni_epi(c20, q0, e0, rowsum[rr], use_rs),
             _vnni_epi(c21, q1, e1, rowsum[rr], use_rs))
    rr = min(r0 + 3, last)
    _put16x2(out, ldo, r0 + 3, m, c0, n, _vnni_epi(c30, q0, e0, rowsum[rr], use_rs),
             _vnni_epi(c31, q1, e1, rowsum[rr], use_rs))
    rr = min(r0 + 4, last)
    _put16x2(out, ldo, r0 + 4, m, c0, n, _vnni_epi(c40, q0, e0, rowsum[rr], use_rs),
             _vnni_epi(c41, q1, e1, rowsum[rr], use_rs))
    rr = min(r0 + 5, last)
    _put16x2(out, ldo, r0 + 5, m, c0, n, _vnni_epi(c50, q0, e0, rowsum[rr], use_rs),
             _vnni_epi(c51, q1, e1, rowsum[rr], use_rs))
    rr = min(r0 + 6, last)
    _put16x2(out, ldo, r0 + 6, m, c0, n, _vnni_epi(c60, q0, e0, rowsum[rr], use_rs),
             _vnni_epi(c61, q1, e1, rowsum[rr], use_rs))
    rr = min(r0 + 7, last)
    _put16x2(out, ldo, r0 + 7, m, c0, n, _vnni_epi(c70, q0, e0, rowsum[rr], use_rs),
             _vnni_epi(c71, q1, e1, rowsum[rr], use_rs))


@njit(cache=True)
def _dot_portable(a, b, kp):
    """Plain Numba int16 dot product (LLVM vectorizes this reduction by itself).

    Each product is < 2^8 * 2^9 and every partial sum is bounded by PackedGemm.safe, so the int32 casts
    never wrap (Numba would otherwise widen int32 * int32 to int64)."""
    s = np.int32(0)
    for kk in range(kp):
        s = np.int32(s + np.int32(a[kk]) * np.int32(b[kk]))
    return s


@njit(cache=True)
def _row_portable(a, kp, r, bp, cst, out, n):
    """Row r of the portable GEMM: a int16 [M, kp] flat, bp int16 [N', kp] flat rows of b."""
    ar = a[r * kp:(r + 1) * kp]
    for c in range(n):
        out[r * n + c] = np.int32(_dot_portable(ar, bp[c * kp:(c + 1) * kp], kp) + cst[c])


# ---------------------------------------------------------------------------------------------
# Whole GEMMs (one matrix) and batched matmuls (pack the second operand per batch, in the kernel)
# ---------------------------------------------------------------------------------------------


@njit(cache=True, parallel=True)
def _gemm_i16(tag, a, lda, m, bp, k2n, npan, cst, out, n):
    mb = (m + 5) // 6
    for t in prange(npan * mb):
        p = t // mb
        r0 = (t - p * mb) * 6
        _tile_i16(tag, a, lda, r0, m, bp, p * k2n * 32, k2n, cst, p * 16, out, n, n)


@njit(cache=True, parallel=True)
def _gemm_f32(a, lda, m, bp, k, chunk, npan, cst, out, n):
    mb = (m + 5) // 6
    for t in prange(npan * mb):
        p = t // mb
        r0 = (t - p * mb) * 6
        _tile_f32(a, lda, r0, m, bp, p * k * 16, k, chunk, cst, p * 16, out, n, n)


@njit(cache=True, parallel=True)
def _gemm_u8s8(tag, a, lda, m, bp, kqn, period, npan, cst, out, n):
    mb = (m + 5) // 6
    for t in prange(npan * mb):
        p = t // mb
        r0 = (t - p * mb) * 6
        _tile_u8s8(tag, a, lda, r0, m, bp, p * kqn * 64, kqn, period, cst, p * 16, out, n, n)


@njit(cache=True, parallel=True)
def _gemm_vnni(tag, a, lda, m, bp, kqn, npan, cst, ev, rowsum, use_rs, out, n):
    mb = (m + 7) // 8
    for t in prange(npan * mb):
        p = t // mb
        r0 = (t - p * mb) * 8
        _tile_vnni(tag, a, lda, r0, m, bp, p * kqn * 128, kqn, cst, ev, rowsum, use_rs, p * 32, out, n, n)


@njit(cache=True, parallel=True)
def _gemm_portable(a, kp, m, bp, cst, out, n):
    for r in prange(m):
        _row_portable(a, kp, r, bp, cst, out, n)


@njit(cache=True, parallel=True)
def _rowsum_u8(a, m, lda, k, out):
    for r in prange(m):
        row = a[r * lda:r * lda + k]  # a 0-based view: the reduction vectorizes (an offset index did not)
        s = np.int32(0)
        for kk in range(k):
            s += np.int32(row[kk])
        out[r] = s


def _a_u8(a: np.ndarray, group: int) -> tuple[np.ndarray, int]:
    """Row-major uint8 A with K padded to a multiple of ``group`` (no copy when already so)."""
    m, k = a.shape
    kp = -(-k // group) * group
    if kp == k and a.flags.c_contiguous:
        return a.reshape(-1), kp
    buf = np.zeros((m, kp), dtype=np.uint8)
    buf[:, :k] = a
    return buf.reshape(-1), kp


def _a_i16(a: np.ndarray) -> tuple[np.ndarray, int]:
    m, k = a.shape
    kp = k + (k & 1)
    buf = np.zeros((m, kp), dtype=np.int16) if kp != k else np.empty((m, kp), dtype=np.int16)
    buf[:, :k] = a
    return buf.reshape(-1), kp


def prepare_gemm(w: np.ndarray, w_zp, bias, a_zp: int, a_max: int = 255, path: str | None = None):
    """Pack a weight matrix for the fastest usable path; None when no fast path is proven exact.

    Args:
        w: uint8 codes ``[N, K]``.
        w_zp: per-channel zero points.
        bias: int32 ``[N]`` or None.
        a_zp: activation zero point.
        a_max: the largest activation code the packed GEMM will be called with (checked at call time).
        path: force a path (else :data:`FORCE_PATH`, else the CPU's best).

    Returns:
        a safe :class:`PackedGemm`, or None (use ``gemm.gemm_zp``).
    """
    w = np.asarray(w)
    zw = np.broadcast_to(np.asarray(w_zp, dtype=np.int64), (w.shape[0],))
    d = w.astype(np.int64) - zw[:, None]
    babs = int(np.abs(d).max(initial=0))
    p = choose_path(a_max, babs, path)
    pk = pack_gemm(w, w_zp, bias, a_zp, p, a_max)
    if not pk.safe and p == "u8s8" and path is None and FORCE_PATH is None:
        return prepare_gemm(w, w_zp, bias, a_zp, a_max, "i16")  # not provably exact in int16 sums
    return pk if pk.safe else None


def gemm_packed(a: np.ndarray, pk: PackedGemm, out: np.ndarray | None = None) -> np.ndarray:
    """``gemm_zp(a, a_zp, w, w_zp, bias)`` on packed weights: uint8 ``a [M, K]`` -> int32 ``[M, N]``.

    Raises ValueError when ``a`` is not uint8 [M, K] or holds a code above ``pk.a_max``.
    """
    if a.dtype != np.uint8 or a.ndim != 2 or a.shape[1] != pk.k:
        raise ValueError(f"gemm_packed: expected uint8 [M, {pk.k}], got {a.dtype} {a.shape}")
    m = a.shape[0]
    if out is None:
        out = np.empty((m, pk.n), dtype=np.int32)
    if m == 0 or pk.n == 0:
        return out
    if pk.a_max < 255 and int(a.max()) > pk.a_max:
        raise ValueError(f"gemm_packed: activation code {int(a.max())} > a_max={pk.a_max} of the packing")
    o = out.reshape(-1)
    if pk.path == "i16":
        a16, kp = _a_i16(a)
        _gemm_i16(_tag("i16"), a16, kp, m, pk.b, kp // 2, pk.panels, pk.const, o, pk.n)
    elif pk.path == "f32":
        af = a.astype(np.float32)
        if pk.a_center:
            af -= np.float32(pk.a_center)
        _gemm_f32(af.reshape(-1), pk.k, m, pk.b, pk.k, pk.chunk, pk.panels, pk.const, o, pk.n)
    elif pk.path == "portable":
        a16, kp = _a_i16(a)
        _gemm_portable(a16, kp, m, pk.b, pk.const, o, pk.n)
    elif pk.path == "u8s8":
        a8, kp = _a_u8(a, 4)
        period = u8s8_period(pk.a_max, pk.b_absmax)
        _gemm_u8s8(_tag("u8s8"), a8, kp, m, pk.b, kp // 4, min(period, kp // 4 + 1), pk.panels, pk.const, o,
                   pk.n)
    elif pk.path == "vnni":
        a8, kp = _a_u8(a, 4)
        rowsum = np.zeros(m, dtype=np.int32)
        if pk.use_rowsum:
            _rowsum_u8(a8, m, kp, pk.k, rowsum)
        _gemm_vnni(_tag("vnni"), a8, kp, m, pk.b, kp // 4, pk.panels, pk.const, pk.e, rowsum, pk.use_rowsum, o,
                   pk.n)
    else:  # pragma: no cover
        raise ValueError(pk.path)
    return out


def gemm_zp_fast(a: np.ndarray, a_zp: int, w: np.ndarray, w_zp, bias, path: str | None = None) -> np.ndarray:
    """Drop-in twin of :func:`repq_hw.kernels.gemm.gemm_zp_ref` (same arguments, result and errors), packing
    the weights on every call (the executor packs once: :func:`prepare_gemm` + :func:`gemm_packed`)."""
    op = "gemm_zp"
    a = _gemm._check_codes(a, "a", op, 2)
    w = _gemm._check_codes(w, "w", op, 2)
    if a.shape[1] != w.shape[1]:
        raise ValueError(f"{op}: K mismatch, a {a.shape} vs w {w.shape}")
    n = w.shape[0]
    azp = _gemm._check_scalar_zp(a_zp, "a_zp", op)
    wzp = _gemm._check_i32_vec(w_zp, n, "w_zp", op)
    b = None if bias is None else _gemm._check_i32_vec(bias, n, "bias", op)
    _gemm._headroom(a.shape[1], azp, int(np.abs(wzp).max(initial=0)),
                    0 if b is None else int(np.abs(b).max(initial=0)), op)
    amax = int(a.max(initial=0))
    pk = prepare_gemm(w, wzp, b, azp, amax, path)
    if pk is None:
        return _gemm.gemm_zp(a, a_zp, w, w_zp, bias)
    return gemm_packed(a, pk)


# ---------------------------------------------------------------------------------------------
# Batched matmul q.k^T: the second operand is data, packed per batch inside the kernel
# ---------------------------------------------------------------------------------------------


@njit(cache=True)
def _pack_i16_rows(b, zb, bp, cst, za, k2n, npan):
    """b uint8 [N, K] (rows = output columns) -> bp int16 (panel, k/2, 16, 2) of b - zb, and
    cst[n] = -za * sum_k (b[n,k] - zb) (int32: the caller proved the bound)."""
    nn, k = b.shape
    bp[:] = 0
    cst[:] = 0
    for c in range(nn):
        p = c // 16
        j = c - p * 16
        s = np.int32(0)
        for kk in range(k):
            v = np.int32(b[c, kk]) - np.int32(zb)
            s += v
            bp[((p * k2n + (kk >> 1)) * 16 + j) * 2 + (kk & 1)] = np.int16(v)
        cst[c] = np.int32(-za * s)


@njit(cache=True)
def _pack_s8_rows(b, off, bp, nr, kqn):
    """b uint8 [N, K] -> bp int8 (panel, k/4, nr, 4) of b - off."""
    nn, k = b.shape
    bp[:] = 0
    for c in range(nn):
        p = c // nr
        j = c - p * nr
        for kk in range(k):
            bp[((p * kqn + (kk >> 2)) * nr + j) * 4 + (kk & 3)] = np.int8(np.int32(b[c, kk]) - np.int32(off))


@njit(cache=True, parallel=True)
def _bmm_i16(tag, a, za, b, zb, out):
    nb, m, k = a.shape
    nn = b.shape[1]
    k2n = (k + 1) // 2
    kp = 2 * k2n
    npan = (nn + 15) // 16
    for i in prange(nb):
        a16 = np.zeros(m * kp, dtype=np.int16)
        for r in range(m):
            for kk in range(k):
                a16[r * kp + kk] = np.int16(a[i, r, kk])
        bp = np.empty(npan * k2n * 32, dtype=np.int16)
        cst = np.empty(npan * 16, dtype=np.int32)
        _pack_i16_rows(b[i], zb, bp, cst, za, k2n, npan)
        o = out[i].reshape(-1)
        for p in range(npan):
            for r0 in range(0, m, 6):
                _tile_i16(tag, a16, kp, r0, m, bp, p * k2n * 32, k2n, cst, p * 16, o, nn, nn)


@njit(cache=True, parallel=True)
def _bmm_portable(a, za, b, zb, out):
    nb, m, k = a.shape
    nn = b.shape[1]
    kp = k + (k & 1)
    npad = (nn + 3) // 4 * 4
    for i in prange(nb):
        a16 = np.zeros(m * kp, dtype=np.int16)
        for r in range(m):
            for kk in range(k):
                a16[r * kp + kk] = np.int16(a[i, r, kk])
        b16 = np.zeros(npad * kp, dtype=np.int16)
        cst = np.zeros(npad, dtype=np.int32)
        for c in range(nn):
            s = np.int32(0)
            for kk in range(k):
                v = np.int32(b[i, c, kk]) - np.int32(zb)
                b16[c * kp + kk] = np.int16(v)
                s += v
            cst[c] = np.int32(-za * s)
        o = out[i].reshape(-1)
        for r in range(m):
            _row_portable(a16, kp, r, b16, cst, o, nn)


@njit(cache=True)
def _pack_s8_panels32(b, i, off, kqn, b8, bp):
    """b[i] uint8 [N, K] -> bp int8 (panel of 32 rows, k/4, 32, 4) of b - off, moving 4-byte groups (b8: a
    [N, 4*kqn] uint8 scratch holding b - off, zero padded; bp is zeroed where no row or k reaches)."""
    nn, k = b.shape[1], b.shape[2]
    kp = 4 * kqn
    for c in range(nn):
        row = b[i, c]
        o = c * kp
        for kk in range(k):
            b8[o + kk] = np.uint8((np.int32(row[kk]) - np.int32(off)) & 255)
        for kk in range(k, kp):
            b8[o + kk] = 0
    s32 = b8.view(np.uint32)
    d32 = bp.view(np.uint32)
    if nn % 32:
        d32[:] = 0
    for c in range(nn):
        p = c >> 5
        j = c & 31
        for kq in range(kqn):
            d32[(p * kqn + kq) * 32 + j] = s32[c * kqn + kq]


@njit(cache=True)
def bmm_vnni_prep_into(a, i, za, b, zb, off, a8, rowsum, bp, cst, ev):
    """Batch i of q.k^T on the vnni path, packed once into caller-owned scratch: a8 (uint8 rows with K padded
    to 4; used only where K is not a multiple of 4), row sums, bp (int8 panels of b - off), per-column
    constants cst and row-sum factors ev = off - zb; bp, cst and ev are sized for the panels and stay zero
    past N and K (allocated zeroed once, those entries are never written).  Returns the a8 rows.

    off is 128 (``bmm_vnni_offset``), so b - off as a byte is b ^ 0x80: b's rows are moved four bytes at a
    time with one xor.  Row sums are only formed where e != 0 (the tile adds e * rowsum only then)."""
    m, k = a.shape[1], a.shape[2]
    nn = b.shape[1]
    kqn = (k + 3) // 4
    kp = 4 * kqn
    e = np.int32(off - zb)
    if kp == k:
        a8 = a[i].reshape(-1)
    else:
        for r in range(m):
            for kk in range(k):
                a8[r * kp + kk] = a[i, r, kk]
    if e != 0:
        for r in range(m):
            row = a8[r * kp:(r + 1) * kp]
            s = np.int32(0)
            for kk in range(kp):
                s += np.int32(row[kk])
            rowsum[r] = s
    d32 = bp.view(np.uint32)  # panel columns past N and k past K stay 0 (never written)
    flip = np.uint32(0x80808080)
    for c in range(nn):
        row = b[i, c]
        base = (c >> 5) * kqn * 32 + (c & 31)
        if kp == k:
            w = row.view(np.uint32)
            for kq in range(kqn):
                d32[base + kq * 32] = w[kq] ^ flip
        else:
            for kk in range(k):
                bp[(base + (kk >> 2) * 32) * 4 + (kk & 3)] = np.int8(np.int32(row[kk]) - np.int32(off))
        s = np.int32(0)
        for kk in range(k):
            s += np.int32(row[kk])
        s -= np.int32(k) * np.int32(off)
        # const = -za*colsum(b - off) - K*za*e  (gemm_pack's identity with bias 0)
        cst[c] = np.int32(-za * s - k * za * e)
        ev[c] = e
    return a8


@njit(cache=True)
def bmm_vnni_rows(tag, a8, kp, r0, rows, rowsum, bp, cst, ev, use_rs, nn, out):
    """Rows r0 .. r0+rows-1 (rows <= 8) of one batch's q.k^T into out [rows, nn] (int32, 1-D)."""
    kqn = kp // 4
    a_blk = a8[r0 * kp:]
    rs_blk = rowsum[r0:]
    for p in range((nn + 31) // 32):
        _tile_vnni(tag, a_blk, kp, 0, rows, bp, p * kqn * 128, kqn, cst, ev, rs_blk, use_rs, p * 32, out, nn, nn)


@njit(cache=True, parallel=True)
def _bmm_vnni(tag, a, za, b, zb, off, out):
    nb, m, k = a.shape
    nn = b.shape[1]
    kqn = (k + 3) // 4
    npan = (nn + 31) // 32
    nch = min(nb, 16)  # scratch allocated once per chunk of batches
    for ch in prange(nch):
        a8s = np.zeros(m * 4 * kqn, dtype=np.uint8)
        rowsum = np.zeros(m, dtype=np.int32)
        bp = np.zeros(npan * kqn * 128, dtype=np.int8)
        cst = np.zeros(npan * 32, dtype=np.int32)
        ev = np.zeros(npan * 32, dtype=np.int32)
        for i in range(ch * nb // nch, (ch + 1) * nb // nch):
            a8 = bmm_vnni_prep_into(a, i, za, b, zb, off, a8s, rowsum, bp, cst, ev)
            o = out[i].reshape(-1)
            for r0 in range(0, m, 8):
                bmm_vnni_rows(tag, a8, 4 * kqn, r0, min(8, m - r0), rowsum, bp, cst, ev, off != zb, nn, o[r0 * nn:])


def bmm_vnni_offset(k: int, za: int, zb: int) -> int | None:
    """The int8 offset of b on the vnni path (b - off must fit int8 for codes 0..255), or None when the
    int32 accumulation cannot be proved exact (then the caller uses ``gemm.bmm_zp``)."""
    off = 128  # b - 128 fits int8 for every code 0..255 (zb itself fits only when zb = 128: the same)
    e = off - zb
    # |dot| <= K*255*128, |e*rowsum| <= |e|*K*255, |const| <= |za|*K*128 + K*|za*e|
    bound = k * 255 * 128 + abs(e) * k * 255 + abs(za) * k * 128 + k * abs(za * e)
    return off if bound <= I32_MAX else None


def bmm_zp_fast(a: np.ndarray, a_zp: int, b: np.ndarray, b_zp: int, path: str | None = None) -> np.ndarray:
    """Twin of :func:`repq_hw.kernels.gemm.bmm_zp_ref` (same arguments, result and errors)."""
    op = "bmm_zp"
    a = _gemm._check_codes(a, "a", op, 3)
    b = _gemm._check_codes(b, "b", op, 3)
    if a.shape[0] != b.shape[0] or a.shape[2] != b.shape[2]:
        raise ValueError(f"{op}: shape mismatch, a {a.shape} vs b {b.shape}")
    za = _gemm._check_scalar_zp(a_zp, "a_zp", op)
    zb = _gemm._check_scalar_zp(b_zp, "b_zp", op)
    k = a.shape[2]
    _gemm._headroom(k, za, abs(zb), 0, op)
    nb, m, nn = a.shape[0], a.shape[1], b.shape[1]
    out = np.empty((nb, m, nn), dtype=np.int32)
    if out.size == 0:
        return out
    p = choose_path(255, 255, path)
    if p == "u8s8":
        p = "i16"
    if p == "vnni":
        off = bmm_vnni_offset(k, za, zb)
        if off is not None:
            _bmm_vnni(_tag("vnni"), np.ascontiguousarray(a), za, np.ascontiguousarray(b), zb, off, out)
            return out
        return _gemm.bmm_zp(a, a_zp, b, b_zp)
    bm = max(abs(zb), abs(255 - zb))  # |b - zb|
    # |dot| <= K*255*bm, |const| <= |za|*K*bm; int16 operands need bm <= 32767
    if bm > 32767 or k * bm * (255 + abs(za)) > I32_MAX:
        return _gemm.bmm_zp(a, a_zp, b, b_zp)
    if p == "portable":
        _bmm_portable(np.ascontiguousarray(a), za, np.ascontiguousarray(b), zb, out)
    else:
        _bmm_i16(_tag("i16"), np.ascontiguousarray(a), za, np.ascontiguousarray(b), zb, out)
    return out
