"""Attention kernels at DeiT-S shapes (6 heads, N = 197, d = 64, batch 8): attention x V (shift-add) and
q.k^T (bmm_zp), against torch fp32 ``attn @ v`` / ``q @ k^T`` measured in the same run, interleaved.

Every fast result is checked bit for bit against the numpy reference on the same inputs before it is timed.
attn x V is listed with the MAC count of the fp32 matmul it replaces (G x N x N x d); its kernels run 2 x P
times as many dot-product MACs (even and odd codes, P weight planes per parity: P = 1 at W4A4, 2 at W8A8).
q.k^T is compared with the ``vpdpbusd`` tight-loop ceiling (bench_gemm's) measured in the same run, timed
twice: alternating with torch (each finds its data evicted by the other: the 7.5 MB int32 output's cache
misses are part of the time, as in a forward) and back to back (each one's data left in cache).

    .venv/bin/python benchmarks/bench_attn.py [--threads N] [--repeats 15] [--bits 8,4] [--json out.json]

Timing: medians of ``--repeats`` runs; the fast kernel and torch are timed in alternation (one run of
each per round), so a drift in the machine's load affects both alike.  The ratio is median/median.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import machine, reexec_as_avx2_proxy, save_json

B, T, H, D = 8, 197, 6, 64


def alternate(fns: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each callable, timed round-robin (one call of each per round) after a warm-up."""
    for fn in fns.values():
        fn()
    ts = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            ts[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in ts.items()}


def lowering_codes(rng, bits: int, shape) -> tuple[np.ndarray, int]:
    """Random log2 codes as the lowering makes them: 0 .. L-1 and the zero state, L = min(Z, 24)."""
    z = (1 << bits) - 1
    ncodes = min(z, 24)
    f = (ncodes - 1) // 2 + 1
    c = rng.integers(0, ncodes + 1, shape).astype(np.uint8)
    c[c == ncodes] = z
    return c, f


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bits", default="8,4")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--json")
    ap.add_argument("--avx2-proxy", action="store_true",
                    help="re-run limited to AVX2 (Numba target features and torch's kernels): an AVX2-only proxy")
    a = ap.parse_args()
    if a.avx2_proxy:
        reexec_as_avx2_proxy()

    import numba
    import torch
    from bench_gemm import ceilings

    from repq_hw.kernels import gemm_vnni as G
    from repq_hw.kernels import simd
    from repq_hw.kernels.attn_v_shift import attn_v_path, attn_v_shift_fast, attn_v_shift_ref
    from repq_hw.kernels.gemm import bmm_zp_ref

    numba.set_num_threads(min(a.threads, numba.config.NUMBA_NUM_THREADS))
    torch.set_num_threads(a.threads)
    nt = numba.get_num_threads()
    print(f"machine: {machine()}\nthreads: {nt}; attn.V path: {attn_v_path()}; "
          f"GEMM paths: {', '.join(G.available_paths())}")
    rng = np.random.default_rng(0)
    g = B * H
    macs = g * T * T * D / 1e9
    ta, tv = torch.randn(B, H, T, T), torch.randn(B, H, T, D)
    tq, tk = torch.randn(B, H, T, D), torch.randn(B, H, T, D)
    rows = []
    paths = ["vnni", "i16"] if simd.has_vnni512() else (["i16"] if simd.has_avx2() else ["portable"])
    for bits in (int(b) for b in a.bits.split(",")):
        hi = (1 << bits) - 1
        c, f = lowering_codes(rng, bits, (g, T, T))
        v = rng.integers(0, hi + 1, (g, T, D), dtype=np.uint8)
        vz = int(rng.integers(0, hi + 1))
        ref = attn_v_shift_ref(c, v, vz, bits, f, 15, "half_even")
        for p in paths:
            exact = bool(np.array_equal(attn_v_shift_fast(c, v, vz, bits, f, 15, "half_even", path=p), ref))
            exact32 = bool(np.array_equal(attn_v_shift_fast(c, v, vz, bits, f, 15, "half_even", path=p,
                                                            out_dtype=np.int32), ref))
            args = (c, v, vz, bits, f, 15, "half_even")
            t = alternate({
                "int32": lambda args=args, p=p: attn_v_shift_fast(*args, path=p, out_dtype=np.int32),
                "int64": lambda args=args, p=p: attn_v_shift_fast(*args, path=p),
                "torch": lambda: ta @ tv,
            }, a.repeats)
            for kind in ("int32", "int64"):
                rows.append({"bits": bits, "kernel": f"attn.V ({kind} out)", "path": p, "ms": 1e3 * t[kind],
                             "gmacs": macs / t[kind], "torch_ms": 1e3 * t["torch"],
                             "x_torch": t["torch"] / t[kind], "exact": exact and exact32})
        q = rng.integers(0, hi + 1, (g, T, D), dtype=np.uint8)
        k = rng.integers(0, hi + 1, (g, T, D), dtype=np.uint8)
        qz, kz = int(rng.integers(0, hi + 1)), int(rng.integers(0, hi + 1))
        exact = bool(np.array_equal(G.bmm_zp_fast(q, qz, k, kz), bmm_zp_ref(q, qz, k, kz)))
        qargs = (q, qz, k, kz)
        fast = {"fast": lambda qargs=qargs: G.bmm_zp_fast(*qargs)}
        ref_t = {"torch": lambda: tq @ tk.transpose(-1, -2)}
        t = alternate(fast | ref_t, a.repeats)
        # back to back: each one's inputs and 7.5 MB output stay in cache from its previous call
        tb = alternate(fast, a.repeats) | alternate(ref_t, a.repeats)
        for kind, tt in (("q.k^T (bmm_zp)", t), ("q.k^T (bmm_zp), back to back", tb)):
            rows.append({"bits": bits, "kernel": kind, "path": G.choose_path(255, 255),
                         "ms": 1e3 * tt["fast"], "gmacs": macs / tt["fast"], "torch_ms": 1e3 * tt["torch"],
                         "x_torch": tt["torch"] / tt["fast"], "exact": exact})
    ceil = ceilings(nt, 5, 400_000)
    print("ceilings (tight loops, GMAC/s): " + ", ".join(f"{k} {v:.0f}" for k, v in ceil.items()))
    print("\n| bits | kernel | path | median ms | GMAC/s | % of vpdpbusd ceiling | torch fp32 ms | x torch | "
          "bit-exact |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        pc = f"{100 * r['gmacs'] / ceil['vpdpbusd']:.0f}%" if "vpdpbusd" in ceil else "n/a"
        print(f"| W{r['bits']}A{r['bits']} | {r['kernel']} | {r['path']} | {r['ms']:.3f} | {r['gmacs']:.1f} | {pc} | "
              f"{r['torch_ms']:.3f} | {r['x_torch']:.2f} | {r['exact']} |")
    print("\nGMAC/s: the fp32 matmul's MAC count (48 x 197 x 197 x 64) over the median time.")
    save_json(a.json, {"machine": machine(), "threads": nt, "ceilings": ceil, "rows": rows})


if __name__ == "__main__":
    main()
