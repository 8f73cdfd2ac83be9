"""Per-kernel GMAC/s on every GEMM shape of DeiT-S (batch 8) against ceilings measured in the same run.

Ceilings are tight register-resident loops of the instruction each path is built on (12 independent
accumulators, operands re-loaded from L1 every iteration exactly as in the kernels): ``vpdpbusd``
(only where the CPU has AVX-512 VNNI), ``vpmaddubsw`` + int16 add, ``vpmaddwd``, and float32 FMA.  Each
kernel is also compared with fp32 sgemm (``torch.mm``) and with the plain Numba kernel it replaces
(``gemm.gemm_zp``), all on the same thread count; every result is checked bit for bit against the numpy
reference (``gemm_zp_ref`` / ``bmm_zp_ref`` / ``attn_v_shift_ref``) on the same inputs.

    .venv/bin/python benchmarks/bench_gemm.py [--bits 8,4] [--threads N] [--repeats 5] [--json out.json]

attn x V is not a GEMM (shift-and-add); it is listed with its equivalent MAC count: the fast kernel runs it
as dot products of power-of-two weight planes (even and odd log2 codes, one or two planes each), i.e. two to
four times that many vpdpbusd MACs (``benchmarks/bench_attn.py`` has the attention kernels in detail).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from numba import njit, prange

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import machine, save_json

from repq_hw.kernels import simd as S

B, T, E, H, D = 8, 197, 384, 6, 64  # DeiT-S, batch 8
LINEAR = {  # name: (M, K, N)
    "patch_embed": (B * 196, 768, E),
    "qkv": (B * T, E, 3 * E),
    "proj": (B * T, E, E),
    "fc1": (B * T, E, 4 * E),
    "fc2": (B * T, 4 * E, E),
    "head": (B, E, 1000),
}


# ---------------------------------------------------------------------------------------------
# Ceilings: 12 independent accumulator chains, 2 vector loads + 6 broadcasts per iteration
# ---------------------------------------------------------------------------------------------


@njit(parallel=True, cache=True)
def _ceil_madd_i16(tag, data, n, nt):
    tot = np.zeros(nt, np.int32)
    for t in prange(nt):
        z = S.zero8()
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = a8 = a9 = a10 = a11 = z
        for i in range(n):
            o = (i & 7) * 16
            b0 = S.load8(data, o)
            b1 = S.load8(data, o + 8)
            x = S.bcast8(data, o + 1)
            a0 = S.add32(a0, S.madd_i16(tag, x, b0))
            a1 = S.add32(a1, S.madd_i16(tag, x, b1))
            x = S.bcast8(data, o + 2)
            a2 = S.add32(a2, S.madd_i16(tag, x, b0))
            a3 = S.add32(a3, S.madd_i16(tag, x, b1))
            x = S.bcast8(data, o + 3)
            a4 = S.add32(a4, S.madd_i16(tag, x, b0))
            a5 = S.add32(a5, S.madd_i16(tag, x, b1))
            x = S.bcast8(data, o + 4)
            a6 = S.add32(a6, S.madd_i16(tag, x, b0))
            a7 = S.add32(a7, S.madd_i16(tag, x, b1))
            x = S.bcast8(data, o + 5)
            a8 = S.add32(a8, S.madd_i16(tag, x, b0))
            a9 = S.add32(a9, S.madd_i16(tag, x, b1))
            x = S.bcast8(data, o + 6)
            a10 = S.add32(a10, S.madd_i16(tag, x, b0))
            a11 = S.add32(a11, S.madd_i16(tag, x, b1))
        s = S.add32(S.add32(S.add32(a0, a1), S.add32(a2, a3)), S.add32(S.add32(a4, a5), S.add32(a6, a7)))
        tot[t] = S.lane(S.add32(s, S.add32(S.add32(a8, a9), S.add32(a10, a11))), 0)
    return tot


@njit(parallel=True, cache=True)
def _ceil_madd_u8s8(tag, data, n, nt):
    tot = np.zeros(nt, np.int32)
    for t in prange(nt):
        z = S.zero8()
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = a8 = a9 = a10 = a11 = z
        for i in range(n):
            o = (i & 7) * 16
            b0 = S.load8(data, o)
            b1 = S.load8(data, o + 8)
            x = S.bcast8(data, o + 1)
            a0 = S.add16(a0, S.madd_u8s8(tag, x, b0))
            a1 = S.add16(a1, S.madd_u8s8(tag, x, b1))
            x = S.bcast8(data, o + 2)
            a2 = S.add16(a2, S.madd_u8s8(tag, x, b0))
            a3 = S.add16(a3, S.madd_u8s8(tag, x, b1))
            x = S.bcast8(data, o + 3)
            a4 = S.add16(a4, S.madd_u8s8(tag, x, b0))
            a5 = S.add16(a5, S.madd_u8s8(tag, x, b1))
            x = S.bcast8(data, o + 4)
            a6 = S.add16(a6, S.madd_u8s8(tag, x, b0))
            a7 = S.add16(a7, S.madd_u8s8(tag, x, b1))
            x = S.bcast8(data, o + 5)
            a8 = S.add16(a8, S.madd_u8s8(tag, x, b0))
            a9 = S.add16(a9, S.madd_u8s8(tag, x, b1))
            x = S.bcast8(data, o + 6)
            a10 = S.add16(a10, S.madd_u8s8(tag, x, b0))
            a11 = S.add16(a11, S.madd_u8s8(tag, x, b1))
        s = S.add32(S.add32(S.add32(a0, a1), S.add32(a2, a3)), S.add32(S.add32(a4, a5), S.add32(a6, a7)))
        tot[t] = S.lane(S.add32(s, S.add32(S.add32(a8, a9), S.add32(a10, a11))), 0)
    return tot


@njit(parallel=True, cache=True)
def _ceil_dpbusd(tag, data, n, nt):
    tot = np.zeros(nt, np.int32)
    for t in prange(nt):
        z = S.zero16()
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = a8 = a9 = a10 = a11 = a12 = a13 = a14 = a15 = z
        for i in range(n):
            o = (i & 7) * 32
            b0 = S.load16(data, o)
            b1 = S.load16(data, o + 16)
            x = S.bcast16(data, o + 1)
            a0 = S.dpbusd(tag, a0, x, b0)
            a1 = S.dpbusd(tag, a1, x, b1)
            x = S.bcast16(data, o + 2)
            a2 = S.dpbusd(tag, a2, x, b0)
            a3 = S.dpbusd(tag, a3, x, b1)
            x = S.bcast16(data, o + 3)
            a4 = S.dpbusd(tag, a4, x, b0)
            a5 = S.dpbusd(tag, a5, x, b1)
            x = S.bcast16(data, o + 4)
            a6 = S.dpbusd(tag, a6, x, b0)
            a7 = S.dpbusd(tag, a7, x, b1)
            x = S.bcast16(data, o + 5)
            a8 = S.dpbusd(tag, a8, x, b0)
            a9 = S.dpbusd(tag, a9, x, b1)
            x = S.bcast16(data, o + 6)
            a10 = S.dpbusd(tag, a10, x, b0)
            a11 = S.dpbusd(tag, a11, x, b1)
            x = S.bcast16(data, o + 7)
            a12 = S.dpbusd(tag, a12, x, b0)
            a13 = S.dpbusd(tag, a13, x, b1)
            x = S.bcast16(data, o + 8)
            a14 = S.dpbusd(tag, a14, x, b0)
            a15 = S.dpbusd(tag, a15, x, b1)
        s = S.add32(S.add32(S.add32(a0, a1), S.add32(a2, a3)), S.add32(S.add32(a4, a5), S.add32(a6, a7)))
        s = S.add32(s, S.add32(S.add32(S.add32(a8, a9), S.add32(a10, a11)),
                               S.add32(S.add32(a12, a13), S.add32(a14, a15))))
        tot[t] = S.lane(s, 0)
    return tot


@njit(parallel=True, cache=True)
def _ceil_fma(data, n, nt):
    tot = np.zeros(nt, np.float32)
    for t in prange(nt):
        z = S.zerof8()
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = a8 = a9 = a10 = a11 = z
        for i in range(n):
            o = (i & 7) * 16
            b0 = S.loadf8(data, o)
            b1 = S.loadf8(data, o + 8)
            x = S.bcastf8(data, o + 1)
            a0 = S.fmaf8(x, b0, a0)
            a1 = S.fmaf8(x, b1, a1)
            x = S.bcastf8(data, o + 2)
            a2 = S.fmaf8(x, b0, a2)
            a3 = S.fmaf8(x, b1, a3)
            x = S.bcastf8(data, o + 3)
            a4 = S.fmaf8(x, b0, a4)
            a5 = S.fmaf8(x, b1, a5)
            x = S.bcastf8(data, o + 4)
            a6 = S.fmaf8(x, b0, a6)
            a7 = S.fmaf8(x, b1, a7)
            x = S.bcastf8(data, o + 5)
            a8 = S.fmaf8(x, b0, a8)
            a9 = S.fmaf8(x, b1, a9)
            x = S.bcastf8(data, o + 6)
            a10 = S.fmaf8(x, b0, a10)
            a11 = S.fmaf8(x, b1, a11)
        s = S.f8_to_i32(a0)
        for v in (a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11):
            s = S.add32(s, S.f8_to_i32(v))
        tot[t] = S.lane(s, 0)
    return tot


def ceilings(nt: int, repeats: int, n: int = 2_000_000) -> dict[str, float]:
    """GMAC/s of each instruction's tight loop on nt threads (median of repeats)."""
    d32 = np.ones(512, np.int32)
    df = np.ones(512, np.float32)
    runs = {
        "vpmaddwd": (lambda: _ceil_madd_i16(S.NATIVE, d32, n, nt), 12 * 16),
        "vpmaddubsw": (lambda: _ceil_madd_u8s8(S.NATIVE, d32, n, nt), 12 * 32),
        "fp32 fma": (lambda: _ceil_fma(df, n, nt), 12 * 8),
    }
    if not S.has_avx2():
        runs = {"fp32 fma": runs["fp32 fma"]}
    if S.has_vnni512():
        runs["vpdpbusd"] = (lambda: _ceil_dpbusd(S.NATIVE, d32, n, nt), 16 * 64)
    out = {}
    for name, (fn, macs) in runs.items():
        fn()
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        out[name] = nt * n * macs / statistics.median(ts) / 1e9
    return out


PATH_CEILING = {"vnni": "vpdpbusd", "u8s8": "vpmaddubsw", "i16": "vpmaddwd", "f32": "fp32 fma", "portable": "vpmaddwd"}


def timed(fn, repeats):
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bits", default="8,4")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json")
    a = ap.parse_args()

    import numba
    import torch

    from repq_hw.kernels import gemm_vnni as G
    from repq_hw.kernels.attn_v_shift import attn_v_path, attn_v_shift_ref
    from repq_hw.kernels.attn_v_shift import attn_v_shift_fast as attn_v_fast
    from repq_hw.kernels.gemm import bmm_zp, bmm_zp_ref, gemm_zp, gemm_zp_ref

    numba.set_num_threads(min(a.threads, numba.config.NUMBA_NUM_THREADS))
    torch.set_num_threads(a.threads)
    nt = numba.get_num_threads()
    print(f"machine: {machine()}\nthreads: {nt}; available paths: {', '.join(G.available_paths())}")
    ceil = ceilings(nt, a.repeats)
    print("ceilings (tight loops, GMAC/s): " + ", ".join(f"{k} {v:.1f}" for k, v in ceil.items())
          + ("" if "vpdpbusd" in ceil else "; vpdpbusd: n/a (this CPU has no AVX-512 VNNI)"))
    rng = np.random.default_rng(0)
    rows = []
    for bits in (int(b) for b in a.bits.split(",")):
        hi = (1 << bits) - 1
        for name, (m, k, n) in LINEAR.items():
            act_max = 255 if name == "patch_embed" else hi  # the patch-embedding input stays 8-bit
            x = rng.integers(0, act_max + 1, (m, k), dtype=np.uint8)
            w = rng.integers(0, hi + 1, (n, k), dtype=np.uint8)
            wz = rng.integers(0, hi + 1, n)
            az = int(rng.integers(0, act_max + 1))
            bias = rng.integers(-(1 << 16), 1 << 16, n).astype(np.int32)
            pk = G.prepare_gemm(w, wz, bias, az, act_max)
            ceil = ceilings(nt, 3, 400_000)  # re-measured next to each kernel: the machine's load drifts
            y = G.gemm_packed(x, pk)
            exact = bool(np.array_equal(y, gemm_zp_ref(x, az, w, wz, bias)))
            t_fast = timed(lambda: G.gemm_packed(x, pk), a.repeats)
            t_old = timed(lambda: gemm_zp(x, az, w, wz, bias), max(1, a.repeats // 2))
            ta, tb = torch.randn(m, k), torch.randn(k, n)
            t_mm = timed(lambda: torch.mm(ta, tb), a.repeats)
            macs = m * k * n / 1e9
            rows.append((f"W{bits}A{bits}", name, f"{m}x{k}x{n}", pk.path, macs / t_fast, ceil[PATH_CEILING[pk.path]],
                         macs / t_mm, macs / t_old, exact))
        # q.k^T: 48 x (197x64 . 64x197)
        q = rng.integers(0, hi + 1, (B * H, T, D), dtype=np.uint8)
        kk = rng.integers(0, hi + 1, (B * H, T, D), dtype=np.uint8)
        qz, kz = int(rng.integers(0, hi + 1)), int(rng.integers(0, hi + 1))
        exact = bool(np.array_equal(G.bmm_zp_fast(q, qz, kk, kz), bmm_zp_ref(q, qz, kk, kz)))
        ceil = ceilings(nt, 3, 400_000)
        t_fast = timed(lambda: G.bmm_zp_fast(q, qz, kk, kz), a.repeats)
        t_old = timed(lambda: bmm_zp(q, qz, kk, kz), max(1, a.repeats // 2))
        tq, tk = torch.randn(B * H, T, D), torch.randn(B * H, D, T)
        t_mm = timed(lambda: torch.bmm(tq, tk), a.repeats)
        macs = B * H * T * T * D / 1e9
        path = "i16" if G.choose_path(255, 255) in ("u8s8", "f32", "i16") else G.choose_path(255, 255)
        rows.append((f"W{bits}A{bits}", "q.k^T (bmm_zp)", f"{B * H}x{T}x{D}x{T}", path, macs / t_fast,
                     ceil[PATH_CEILING[path]], macs / t_mm, macs / t_old, exact))
        # attn x V (shift-add): codes as the lowering makes them
        lbits = bits
        z = (1 << lbits) - 1
        ncodes = min(z, 24)
        f = (ncodes - 1) // 2 + 1
        c = rng.integers(0, ncodes + 1, (B * H, T, T)).astype(np.uint8)
        c[c == ncodes] = z
        v = rng.integers(0, hi + 1, (B * H, T, D), dtype=np.uint8)
        vz = int(rng.integers(0, hi + 1))
        exact = bool(np.array_equal(attn_v_fast(c, v, vz, lbits, f, 15, "half_even"),
                                    attn_v_shift_ref(c, v, vz, lbits, f, 15, "half_even")))
        ceil = ceilings(nt, 3, 400_000)
        t_fast = timed(lambda: attn_v_fast(c, v, vz, lbits, f, 15, "half_even"), a.repeats)
        from repq_hw.kernels.attn_v_shift import attn_v_shift

        t_old = timed(lambda: attn_v_shift(c, v, vz, lbits, f, 15, "half_even"), max(1, a.repeats // 2))
        ta, tv = torch.randn(B * H, T, T), torch.randn(B * H, T, D)
        t_mm = timed(lambda: torch.bmm(ta, tv), a.repeats)
        rows.append((f"W{bits}A{bits}", "attn.V (shift-add)", f"{B * H}x{T}x{T}x{D}", attn_v_path(), macs / t_fast,
                     ceil["vpdpbusd" if attn_v_path() == "vnni" else "vpmaddwd"] / 2, macs / t_mm, macs / t_old, exact))
    print("\n| bits | layer | M x K x N | path | GMAC/s | % of ceiling | torch fp32 GMAC/s | x torch | "
          "plain Numba GMAC/s | bit-exact |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]:.1f} | {100 * r[4] / r[5]:.0f}% | {r[6]:.1f} | "
              f"{r[4] / r[6]:.2f} | {r[7]:.1f} | {r[8]} |")
    print("\n% of ceiling: against the tight loop of the path's own instruction, re-measured just before "
          "each row (attn.V: half the ceiling of its path's instruction, as it runs at least two plane products "
          "for one MAC count; benchmarks/bench_attn.py has the details).")
    save_json(a.json, {"machine": machine(), "threads": nt, "ceilings": ceil, "rows": rows})


if __name__ == "__main__":
    main()
