"""The fused softmax -> log2_code chain on the real DeiT-S graph: legacy kernel vs the int32-lane kernel.

Gets each block's real softmax input (int32 q.k^T of an 8-image batch, ``run_graph(..., keep_all=True)``),
checks that both kernels give the unfused plan's codes bit for bit, then times the 12 layers with the two
kernels alternately (medians of --repeats) and prints the ratio and the CPU.

    .venv/bin/python benchmarks/bench_softmax.py [--bits 8,4] [--threads 2] [--repeats 9]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import cached_graph, machine


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="deit_small_patch16_224")
    ap.add_argument("--bits", default="8,4")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--repeats", type=int, default=9)
    a = ap.parse_args()

    import numba
    import numpy as np

    from repq_hw.emu.execute import run_graph
    from repq_hw.ir.graph import Op
    from repq_hw.kernels import fused as FU
    from repq_hw.kernels.log2_code import log2_code_table

    numba.set_num_threads(min(a.threads, numba.config.NUMBA_NUM_THREADS))
    print(f"machine: {machine()}; numba threads {numba.get_num_threads()}; medians of {a.repeats}, alternating")
    for bits in (int(b) for b in a.bits.split(",")):
        g, codes0 = cached_graph(a.model, bits, bits)
        codes = np.concatenate([codes0] * (-(-a.batch // len(codes0))))[:a.batch]
        vals = run_graph(g, codes, "fast", keep_all=True)
        calls = []
        for sm in (n for n in g.nodes if n.op == Op.SOFTMAX):
            lg = next(n for n in g.nodes if n.op == Op.LOG2_CODE and n.inputs[0] == sm.outputs[0])
            mid_t, out_t = g.tensors[sm.outputs[0]].type, g.tensors[lg.outputs[0]].type
            table = log2_code_table(g.const(lg, "thresholds"), int(lg.attrs["bits"]), mid_t.bits)
            at = sm.attrs
            args = (vals[sm.inputs[0]], int(at["multiplier"]), int(at["shift"]), int(at["frac_bits"]),
                    int(at["lut_bits"]), int(at["out_bits"]), at["rounding"], table, out_t.storage)
            calls.append((args, vals[lg.outputs[0]]))

        def run(**kw):
            return [FU.softmax_log2_code(*args, **kw) for args, _ in calls]

        exact = {}
        for name, kw in (("legacy", {"legacy": True}), ("new", {}), ("new, plain-loop twins", {"vec": False})):
            exact[name] = all(np.array_equal(y, want) for y, (_, want) in zip(run(**kw), calls))
        to, tn = [], []
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            run(legacy=True)
            to.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            run()
            tn.append(time.perf_counter() - t0)
        mo, mn = statistics.median(to), statistics.median(tn)
        x0 = calls[0][0][0]
        print(f"{a.model} W{bits}A{bits}: {len(calls)} layers x {x0.shape} int32 -> codes; "
              f"legacy {mo * 1e3:.1f} ms, new {mn * 1e3:.1f} ms per forward; ratio {mo / mn:.2f}x; "
              f"bit-exact vs unfused plan: {exact}")


if __name__ == "__main__":
    main()
