"""Fast exact GEMM / batched matmul kernels on packed weights, bit-identical to ``gemm.py``'s references.

Paths (chosen once per weight matrix, see :func:`choose_path`; force one with :func:`force_path` or the
``path=`` argument -- no environment variable changes anything):

``vnni``      AVX-512 VNNI: ``vpdpbusd`` (u8 x s8, 64 MACs per instruction), 8 x 32 register tile of int32
              accumulators (16 zmm), weights packed (panel of 32 columns, k/4, 32 lanes, 4 bytes).
              q.k^T (:func:`bmm_zp_fast`) packs k per head with 16 x 16 word transposes and starts each
              tile's accumulators at its zero-point terms (the comment opening the q.k^T section).
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
a fixed summation order (q.k^T: heads are distributed, and a remainder tile recomputes some elements of its
neighbour in the same thread, exactly), so the result does not depend on the thread count.
"""

from __future__ import annotations

import contextlib

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

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
    hsum32,
    lane,
    load8,
    load16,
    loadf8,
    madd_i16,
    madd_u8s8,
    mul32,
    sad_u8,
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


# q.k^T on the vnni path (_bmm_vnni): per head, k is packed into int8 panels of 32 columns (k - 128 as a byte
# is k ^ 0x80) and each 8 x 32 register tile of int32 accumulators starts at the zero-point terms (column
# constant + row term) and ends in plain stores: nothing is left to do after the K loop.  A remainder of
# rows or columns is covered by a tile ending at the last row / column (overlapping the previous one, whose
# values it recomputes identically), so only shapes smaller than a tile take clipped stores.

_V16 = ir.VectorType(ir.IntType(32), 16)


def _vec16_ptr(context, builder, aryty, ary, idx):
    arr = context.make_array(aryty)(context, builder, ary)
    p = cgutils.get_item_pointer(context, builder, aryty, arr, [idx], wraparound=False)
    return builder.bitcast(p, _V16.as_pointer())


@intrinsic
def _tr16_flip(typingctx, src, so, ss, dst, do, ds):
    """Transpose a 16 x 16 block of 32-bit words, flipping bit 7 of every byte: the 16 words at byte element
    ``so + j*ss`` of ``src`` (row j) become lane j of the 16 vectors stored at ``do + q*ds`` of ``dst``
    (q = 0..15), each word xor 0x80808080.  src and dst are 1-D contiguous 8-bit arrays.  Plain LLVM IR
    (shufflevector, xor): the same code for simd.NATIVE and simd.GENERIC, any CPU."""
    for arr in (src, dst):
        if not (isinstance(arr, types.Array) and arr.ndim == 1 and arr.layout == "C" and arr.dtype.bitwidth == 8):
            raise TypeError(f"_tr16_flip: expected a 1-D contiguous 8-bit array, got {arr}")
    for x in (so, ss, do, ds):
        if not isinstance(x, types.Integer):
            raise TypeError(f"_tr16_flip: expected an integer offset, got {x}")

    def codegen(context, builder, sig, args):
        sa, da = args[0], args[3]
        so_, ss_, do_, ds_ = (context.cast(builder, args[i], sig.args[i], types.intp) for i in (1, 2, 4, 5))
        it = so_.type
        rows = [builder.load(_vec16_ptr(context, builder, sig.args[0], sa,
                                        builder.add(so_, builder.mul(ss_, ir.Constant(it, j)))), align=1)
                for j in range(16)]
        # stage h exchanges bit h of the row index with bit h of the lane index (4 stages: a transpose)
        for h in (1, 2, 4, 8):
            lo = ir.Constant(_V16, [x if not x & h else 16 + x - h for x in range(16)])
            hi = ir.Constant(_V16, [x + h if not x & h else 16 + x for x in range(16)])
            new = list(rows)
            for v in range(16):
                if not v & h:
                    new[v] = builder.shuffle_vector(rows[v], rows[v + h], lo)
                    new[v + h] = builder.shuffle_vector(rows[v], rows[v + h], hi)
            rows = new
        flip = ir.Constant(_V16, [0x80808080 - (1 << 32)] * 16)
        for q in range(16):
            p = _vec16_ptr(context, builder, sig.args[3], da, builder.add(do_, builder.mul(ds_, ir.Constant(it, q))))
            builder.store(builder.xor(rows[q], flip), p, align=1)
        return context.get_dummy_value()

    return types.none(src, so, ss, dst, do, ds), codegen


@njit(cache=True, inline="always")
def _qk_put(out, o, ok, v0, v1, nc):
    """One tile row at out[o:]: nc >= 32 lanes of v0|v1, or exactly 16 of v0, or nc < 32 lanes one by one;
    nothing when not ok (a row past M)."""
    if ok:
        if nc >= 32:
            store16(out, o, v0)
            store16(out, o + 16, v1)
        elif nc == 16:
            store16(out, o, v0)
        else:
            for j in range(min(16, nc)):
                out[o + j] = lane(v0, j)
            for j in range(16, nc):
                out[o + j] = lane(v1, j - 16)


@njit(cache=True, inline="always")
def _qk_tile32(tag, a, lda, ra, nr, kqn, bp, bo, colc, cc, rowc, out, oo, ldo, nc):
    """8 x 32 q.k^T tile: rows ra .. ra+7 of a (uint8, row stride lda; rows past nr re-read row nr-1 and are
    not stored) times the panel at bp[bo:] (k/4, 32 lanes, 4 int8); accumulators start at colc[cc + j] +
    rowc[row]; nc columns stored at out[oo + r*ldo:]."""
    last = nr - 1
    o0 = ra * lda
    o1 = (ra + min(1, last)) * lda
    o2 = (ra + min(2, last)) * lda
    o3 = (ra + min(3, last)) * lda
    o4 = (ra + min(4, last)) * lda
    o5 = (ra + min(5, last)) * lda
    o6 = (ra + min(6, last)) * lda
    o7 = (ra + min(7, last)) * lda
    q0 = load16(colc, cc)
    q1 = load16(colc, cc + 16)
    x = splat16(rowc[ra])
    c00 = add32(q0, x)
    c01 = add32(q1, x)
    x = splat16(rowc[ra + min(1, last)])
    c10 = add32(q0, x)
    c11 = add32(q1, x)
    x = splat16(rowc[ra + min(2, last)])
    c20 = add32(q0, x)
    c21 = add32(q1, x)
    x = splat16(rowc[ra + min(3, last)])
    c30 = add32(q0, x)
    c31 = add32(q1, x)
    x = splat16(rowc[ra + min(4, last)])
    c40 = add32(q0, x)
    c41 = add32(q1, x)
    x = splat16(rowc[ra + min(5, last)])
    c50 = add32(q0, x)
    c51 = add32(q1, x)
    x = splat16(rowc[ra + min(6, last)])
    c60 = add32(q0, x)
    c61 = add32(q1, x)
    x = splat16(rowc[ra + min(7, last)])
    c70 = add32(q0, x)
    c71 = add32(q1, x)
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
    _qk_put(out, oo, True, c00, c01, nc)
    _qk_put(out, oo + ldo, 1 < nr, c10, c11, nc)
    _qk_put(out, oo + 2 * ldo, 2 < nr, c20, c21, nc)
    _qk_put(out, oo + 3 * ldo, 3 < nr, c30, c31, nc)
    _qk_put(out, oo + 4 * ldo, 4 < nr, c40, c41, nc)
    _qk_put(out, oo + 5 * ldo, 5 < nr, c50, c51, nc)
    _qk_put(out, oo + 6 * ldo, 6 < nr, c60, c61, nc)
    _qk_put(out, oo + 7 * ldo, 7 < nr, c70, c71, nc)


@njit(cache=True, inline="always")
def _qk_tile16(tag, a, lda, ra, nr, kqn, bp, bo, colc, cc, rowc, out, oo, ldo, nc):
    """8 x 16 q.k^T tile (the first 16 lanes of a panel; nc <= 16), otherwise as :func:`_qk_tile32`."""
    last = nr - 1
    o0 = ra * lda
    o1 = (ra + min(1, last)) * lda
    o2 = (ra + min(2, last)) * lda
    o3 = (ra + min(3, last)) * lda
    o4 = (ra + min(4, last)) * lda
    o5 = (ra + min(5, last)) * lda
    o6 = (ra + min(6, last)) * lda
    o7 = (ra + min(7, last)) * lda
    q0 = load16(colc, cc)
    c0 = add32(q0, splat16(rowc[ra]))
    c1 = add32(q0, splat16(rowc[ra + min(1, last)]))
    c2 = add32(q0, splat16(rowc[ra + min(2, last)]))
    c3 = add32(q0, splat16(rowc[ra + min(3, last)]))
    c4 = add32(q0, splat16(rowc[ra + min(4, last)]))
    c5 = add32(q0, splat16(rowc[ra + min(5, last)]))
    c6 = add32(q0, splat16(rowc[ra + min(6, last)]))
    c7 = add32(q0, splat16(rowc[ra + min(7, last)]))
    for kq in range(kqn):
        b0 = load16(bp, bo)
        bo += 128
        kk = 4 * kq
        c0 = dpbusd(tag, c0, bcast16(a, o0 + kk), b0)
        c1 = dpbusd(tag, c1, bcast16(a, o1 + kk), b0)
        c2 = dpbusd(tag, c2, bcast16(a, o2 + kk), b0)
        c3 = dpbusd(tag, c3, bcast16(a, o3 + kk), b0)
        c4 = dpbusd(tag, c4, bcast16(a, o4 + kk), b0)
        c5 = dpbusd(tag, c5, bcast16(a, o5 + kk), b0)
        c6 = dpbusd(tag, c6, bcast16(a, o6 + kk), b0)
        c7 = dpbusd(tag, c7, bcast16(a, o7 + kk), b0)
    _qk_put(out, oo, True, c0, c0, nc)
    _qk_put(out, oo + ldo, 1 < nr, c1, c1, nc)
    _qk_put(out, oo + 2 * ldo, 2 < nr, c2, c2, nc)
    _qk_put(out, oo + 3 * ldo, 3 < nr, c3, c3, nc)
    _qk_put(out, oo + 4 * ldo, 4 < nr, c4, c4, nc)
    _qk_put(out, oo + 5 * ldo, 5 < nr, c5, c5, nc)
    _qk_put(out, oo + 6 * ldo, 6 < nr, c6, c6, nc)
    _qk_put(out, oo + 7 * ldo, 7 < nr, c7, c7, nc)


@njit(cache=True)
def _qk_panels(nn):
    """The column panels covering columns 0 .. nn-1: (start, width 32 or 16) arrays.  Full 32-wide panels,
    then a remainder r as one panel ending at column nn-1 (32 wide if r > 16, else 16), which overlaps the
    panel before it; where nn is too small for that: two 16-wide panels (16 < nn < 32) or one 16-wide
    panel at 0 whose stores are clipped to nn columns (nn < 16)."""
    nf = nn // 32
    rem = nn - 32 * nf
    two = nn < 32 and rem > 16
    np_ = nf + (0 if rem == 0 else (2 if two else 1))
    cs = np.empty(np_, np.int64)
    w = np.empty(np_, np.int64)
    for t in range(nf):
        cs[t] = 32 * t
        w[t] = 32
    if two:
        cs[nf] = 0
        w[nf] = 16
        cs[nf + 1] = nn - 16
        w[nf + 1] = 16
    elif rem > 16:
        cs[nf] = nn - 32
        w[nf] = 32
    elif rem > 0:
        cs[nf] = max(nn - 16, 0)
        w[nf] = 16
    return cs, w


@njit(cache=True)
def _qk_pack(b, i, za, zb, off, kqn, cs, csum, bp, colc):
    """Head i's k (b[i]: uint8 [N, K], row c = output column c) for the tiles, any K and N: bp (panel t,
    k/4, 32 lanes, 4 bytes) int8 of b - off, K padded with 0, lane j = column cs[t] + j (lanes past N are
    not written); colc[32 t + j] = the column constant -za * (sum_k b[c, k] - K * zb); csum: scratch [N]."""
    nn, k = b.shape[1], b.shape[2]
    kp = 4 * kqn
    bf = b[i].reshape(-1)
    for c in range(nn):
        s = np.int32(0)
        for kk in range(k):
            s += np.int32(bf[c * k + kk])
        csum[c] = np.int32(-za * (s - k * zb))
    for t in range(cs.size):
        for j in range(min(32, nn - cs[t])):
            c = cs[t] + j
            colc[t * 32 + j] = csum[c]
            for kk in range(kp):
                v = np.int32(bf[c * k + kk]) - np.int32(off) if kk < k else np.int32(0)
                bp[((t * kqn + (kk >> 2)) * 32 + j) * 4 + (kk & 3)] = np.int8(v)


@njit(cache=True)
def _qk_pack64(tag, b, i, za, zb, kqn, cs, bp, colc):
    """:func:`_qk_pack` for K a multiple of 64, N >= 16 and off = 128: each 16 columns x 64 bytes is one
    16 x 16 word transpose with the xor (:func:`_tr16_flip`), and the column sums are taken from the packed
    panel by vpdpbusd with ones: sum_k (b - 128) per lane, so colc = -za * (that + K * (128 - zb))."""
    nn, k = b.shape[1], b.shape[2]
    bf = b.reshape(-1)
    base = i * nn * k
    ones = splat16(0x01010101)
    kc = splat16(k * (128 - zb))
    nz = splat16(-za)
    for t in range(cs.size):
        for hh in range(2):
            c0 = cs[t] + 16 * hh
            if c0 + 16 > nn:  # the unused upper half of a 16-wide panel
                break
            po = t * kqn * 128 + 64 * hh
            for g in range(kqn // 16):
                _tr16_flip(bf, base + c0 * k + 64 * g, k, bp, po + g * 16 * 128, 128)
            s = zero16()
            for kq in range(kqn):
                s = dpbusd(tag, s, ones, load16(bp, po + kq * 128))
            store16(colc, t * 32 + 16 * hh, mul32(nz, add32(s, kc)))


@njit(cache=True, parallel=True)
def _bmm_vnni(tag, a, za, b, zb, off, out):
    """out[i] = (a[i] - za) . (b[i] - zb)^T on the vnni path (off: :func:`bmm_vnni_offset`, which proved that
    no int32 sum wraps).  Per head: row terms rowc[r] = (off - zb) * sum_k a[r, k] (vpsadbw), k packed
    (:func:`_qk_pack64` or :func:`_qk_pack`), then 8-row blocks x panels of tiles.  Heads are split among
    threads in contiguous chunks; each element is written by one thread, always with the same value."""
    nb, m, k = a.shape
    nn = b.shape[1]
    kqn = (k + 3) // 4
    kp = 4 * kqn
    cs, w = _qk_panels(nn)
    npt = cs.size
    e = np.int32(off - zb)
    fast = k % 64 == 0 and nn >= 16 and off == 128
    nr = min(8, m)
    nblk = (m + 7) // 8
    of = out.reshape(-1)
    nch = min(nb, 16)  # scratch allocated once per chunk of heads
    for ch in prange(nch):
        a8s = np.zeros(m * kp, dtype=np.uint8)  # K padded to 4 (only where K is not a multiple of 4)
        rowc = np.zeros(m, dtype=np.int32)
        csum = np.empty(nn, dtype=np.int32)
        bp = np.zeros(npt * kqn * 128, dtype=np.int8)
        colc = np.zeros(npt * 32, dtype=np.int32)
        for i in range(ch * nb // nch, (ch + 1) * nb // nch):
            if kp == k:
                a8 = a[i].reshape(-1)
            else:
                a8 = a8s
                for r in range(m):
                    for kk in range(k):
                        a8[r * kp + kk] = a[i, r, kk]
            if e != 0:
                for r in range(m):
                    acc = zero16()
                    g = 0
                    while g + 64 <= kp:
                        acc = add32(acc, sad_u8(tag, load16(a8, r * kp + g)))
                        g += 64
                    s = hsum32(acc)
                    for kk in range(g, kp):
                        s += np.int32(a8[r * kp + kk])
                    rowc[r] = np.int32(e * s)
            if fast:
                _qk_pack64(tag, b, i, za, zb, kqn, cs, bp, colc)
            else:
                _qk_pack(b, i, za, zb, off, kqn, cs, csum, bp, colc)
            ob = i * m * nn
            for bi in range(nblk):
                ra = min(8 * bi, m - nr)  # the last block ends at row m-1 (overlapping) when m >= 8
                for t in range(npt):
                    c0 = cs[t]
                    nc = min(w[t], nn - c0)
                    if w[t] == 32:
                        _qk_tile32(tag, a8, kp, ra, nr, kqn, bp, t * kqn * 128, colc, t * 32, rowc, of,
                                   ob + ra * nn + c0, nn, nc)
                    else:
                        _qk_tile16(tag, a8, kp, ra, nr, kqn, bp, t * kqn * 128, colc, t * 32, rowc, of,
                                   ob + ra * nn + c0, nn, nc)


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
