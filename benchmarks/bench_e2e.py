"""End to end: bit-exact integer emulator (backend "fast") vs timm's fp32 forward in PyTorch, same threads.

For each model/bit width: images/s of one batch (default 8) for both, timed alternately (emulator, torch,
emulator, ...) so that both see the same machine state, medians over --repeats; the ratio is taken from
those medians.  Before timing, the emulator's output for the first image is checked bit for bit against
the numpy reference backend (``run_graph(..., "ref")``) on the same input codes (results do not depend
on the batch: tests/emu/test_bitexact.py).  Then the per-op time breakdown of one emulated forward, and
the non-GEMM share two ways: by op (a GEMM chain with its fused requantize / LUT / add epilogue counts as
GEMM), and strict (1 - the bare GEMM products, timed alone on the same inputs, over the median forward).

    .venv/bin/python benchmarks/bench_e2e.py [--models deit_small_patch16_224] [--bits 8,4] [--batch 8]
        [--threads N] [--repeats 5] [--json out.json]

Graphs are lowered once and cached under runs/bench_ir/ (see _common.py); Swin models go through the
Swin lowering (``--models swin_tiny_patch4_window7_224``).
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import cached_graph, machine, reexec_as_avx2_proxy, save_json


def breakdown(g, codes, run_graph) -> tuple[float, dict[str, float]]:
    """Wall time of one forward and the time per op kind (progress-callback deltas).  A fused chain
    (``kernels.fused``) is timed as one entry ``"<first>+<last> (fused)"``: its first node computes it."""
    from repq_hw.emu import fast

    plan = fast.prepare(g)
    index = {n.name: i for i, n in enumerate(g.nodes)}
    tm: dict[str, float] = collections.defaultdict(float)
    last = [0.0]

    def prog(node):
        t = time.perf_counter()
        chain = plan.fusion(index[node.name]) if fast.FUSE else None
        key = f"{node.op.value}+{g.nodes[chain[0][-1]].op.value} (fused)" if chain else node.op.value
        tm[key] += t - last[0]
        last[0] = t

    last[0] = t0 = time.perf_counter()
    run_graph(g, codes, "fast", progress=prog)
    return time.perf_counter() - t0, dict(tm)


def pure_gemms(g, codes, run_graph):
    """A callable running the linear layers' bare GEMM products (``gemm_vnni.gemm_packed`` on each GEMM node's
    real input, int32 out, no requantize / LUT / add epilogue): the strict GEMM part of a forward."""
    from repq_hw.emu import fast
    from repq_hw.kernels import gemm_vnni as G

    plan = fast.prepare(g)
    taps = run_graph(g, codes, "fast", keep_all=True)
    work = []
    for i, n in enumerate(g.nodes):
        s = plan.step(i)
        if n.op.value == "gemm" and isinstance(s, fast._Gemm):
            x = taps[n.inputs[0]]
            work.append((np.ascontiguousarray(x).reshape(-1, x.shape[-1]), s.pk))
    del taps

    def run():
        for x, pk in work:
            G.gemm_packed(x, pk)

    return run


def gemm_share(tm: dict[str, float]) -> float:
    """Share of the linear-layer GEMMs (``gemm``, and the fused ``gemm+requant`` chain, which is mostly
    GEMM) in a breakdown; q.k^T (``bmm_qk``) and attn x V count as non-GEMM, as in issue #15."""
    tot = sum(tm.values())
    g = sum(t for k, t in tm.items() if k == "gemm" or k.startswith("gemm+"))
    return g / tot if tot else 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="deit_small_patch16_224")
    ap.add_argument("--bits", default="8,4", help="comma list: W=A bit widths")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-breakdown", action="store_true")
    ap.add_argument("--no-fuse", action="store_true", help="run the unfused plan (fast.FUSE = False)")
    ap.add_argument("--json")
    ap.add_argument("--avx2-proxy", action="store_true",
                    help="re-run limited to AVX2 (Numba target features and torch's kernels): an AVX2-only proxy")
    a = ap.parse_args()
    if a.avx2_proxy:
        reexec_as_avx2_proxy()

    import numba
    import torch

    from repq_hw.emu import fast
    from repq_hw.emu.execute import run_graph
    from repq_hw.models.registry import create_model

    numba.set_num_threads(min(a.threads, numba.config.NUMBA_NUM_THREADS))
    torch.set_num_threads(a.threads)
    fast.FUSE = not a.no_fuse
    print(f"machine: {machine()}; fused chains: {fast.FUSE}")
    print(f"threads: numba {numba.get_num_threads()}, torch {torch.get_num_threads()}; batch {a.batch}; "
          f"medians of {a.repeats}, emulator and torch timed alternately\n")
    rows, results = [], {}
    for model in a.models.split(","):
        torch.manual_seed(0)
        fm = create_model(model).eval()
        x = torch.randn(a.batch, 3, 224, 224, generator=torch.Generator().manual_seed(1))
        for bits in (int(b) for b in a.bits.split(",")):
            g, codes0 = cached_graph(model, bits, bits)
            codes = np.concatenate([codes0] * (-(-a.batch // len(codes0))))[:a.batch]
            t0 = time.perf_counter()
            plan = fast.prepare(g, eager=True)
            t_prep = time.perf_counter() - t0
            t0 = time.perf_counter()
            out = run_graph(g, codes, "fast")
            t_first = time.perf_counter() - t0
            ref = run_graph(g, codes[:1], "ref")
            exact = all(np.array_equal(out[k][:1], ref[k]) for k in g.outputs)
            te, tt, tg = [], [], []
            gemms = pure_gemms(g, codes, run_graph)
            gemms()
            with torch.no_grad():
                fm(x)
                for _ in range(a.repeats):  # emulator, torch, bare GEMMs in turn: one machine state for all
                    t0 = time.perf_counter()
                    run_graph(g, codes, "fast")
                    te.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    fm(x)
                    tt.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    gemms()
                    tg.append(time.perf_counter() - t0)
            me, mt, pure = statistics.median(te), statistics.median(tt), statistics.median(tg)
            key = f"{model} W{bits}A{bits}"
            paths = collections.Counter(plan.gemm_paths().values())
            results[key] = {"emu_s": te, "torch_s": tt, "exact": exact, "prepare_s": t_prep,
                            "first_call_s": t_first, "gemm_paths": dict(paths)}
            rows.append((key, a.batch / me, a.batch / mt, mt / me, exact, ",".join(f"{k}x{v}" for k, v in paths.items())))
            print(f"{key}: emulator {me * 1e3:.0f} ms/batch, torch fp32 {mt * 1e3:.0f} ms/batch, ratio {mt / me:.2f}, "
                  f"bit-exact vs numpy ref: {exact}  (prepare {t_prep:.2f} s, first call {t_first:.2f} s)", flush=True)
            if not a.no_breakdown:
                tot, tm = breakdown(g, codes, run_graph)
                results[key]["breakdown_s"] = tm
                print(f"  per-op breakdown of one forward ({tot * 1e3:.0f} ms):")
                for op, t in sorted(tm.items(), key=lambda kv: -kv[1]):
                    if t / tot >= 0.001:
                        print(f"    {op:26s} {t * 1e3:8.1f} ms  {100 * t / tot:5.1f}%")
                share = gemm_share(tm)
                strict = 1 - pure / me
                results[key].update(non_gemm_share=1 - share, pure_gemm_s=pure, non_gemm_share_strict=strict)
                print(f"  non-GEMM share by op: {100 * (1 - share):.1f}% (GEMM chains with their fused epilogues "
                      "counted as GEMM)")
                print(f"  non-GEMM share, strict: {100 * strict:.1f}% (target <= 30%): the bare GEMM products "
                      f"alone take {pure * 1e3:.1f} ms of the {me * 1e3:.1f} ms median forward")
    print("\n| model | emulator img/s | torch fp32 img/s | emulator / torch | bit-exact | GEMM paths |")
    print("|---|---|---|---|---|---|")
    for key, ie, it, r, ex, p in rows:
        print(f"| {key} | {ie:.1f} | {it:.1f} | {r:.2f}x | {ex} | {p} |")
    for key, _, _, r, _, _ in rows:
        print(f"goal >= 4x on {key}: {'met' if r >= 4 else 'NOT met'} ({r:.2f}x)")
        if "non_gemm_share_strict" in results[key]:
            sh = results[key]["non_gemm_share_strict"]
            print(f"goal non-GEMM <= 30% (strict) on {key}: {'met' if sh <= 0.30 else 'NOT met'} ({100 * sh:.1f}%)")
    save_json(a.json, {"machine": machine(), "threads": a.threads, "batch": a.batch, "results": results})


if __name__ == "__main__":
    main()
