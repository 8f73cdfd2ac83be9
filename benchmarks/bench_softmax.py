"""The fused softmax -> log2_code chain on the real DeiT-S and Swin-T graphs: legacy kernel vs the int32-lane kernel.

Gets each block's real softmax input (int32 q.k^T of an 8-image batch, ``run_graph(..., keep_all=True)``;
DeiT-S rows of N = 197, Swin-T window rows of N = 49), checks that both kernels give the unfused plan's codes
bit for bit, then times all layers with the two kernels alternately (process CPU time, min-max and median of
--repeats; the machine may be shared) and prints the ratio, the ns per element and the CPU.

    .venv/bin/python benchmarks/bench_softmax.py [--models deit_small_patch16_224,swin_tiny_patch4_window7_224]
        [--bits 8,4] [--threads 1] [--repeats 9]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import cached_graph, machine


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="deit_small_patch16_224,swin_tiny_patch4_window7_224")
    ap.add_argument("--bits", default="8,4")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=9)
    a = ap.parse_args()

    import numba
    import numpy as np

    from repq_hw.emu.execute import run_graph
    from repq_hw.ir.graph import Op
    from repq_hw.kernels import fused as FU
    from repq_hw.kernels.log2_code import log2_code_table

    numba.set_num_threads(min(a.threads, numba.config.NUMBA_NUM_THREADS))
    print(f"machine: {machine()}; numba threads {numba.get_num_threads()}; process CPU time, {a.repeats} repeats, "
          "alternating")
    for model, bits in ((mo, int(b)) for mo in a.models.split(",") for b in a.bits.split(",")):
        g, codes0 = cached_graph(model, bits, bits)
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

        def run(calls=calls, **kw):
            return [FU.softmax_log2_code(*args, **kw) for args, _ in calls]

        exact = {}
        for name, kw in (("legacy", {"legacy": True}), ("new", {}), ("new, plain-loop twins", {"vec": False})):
            exact[name] = all(np.array_equal(y, want) for y, (_, want) in zip(run(**kw), calls))
        to, tn = [], []
        for _ in range(a.repeats):
            t0 = time.process_time()
            run(legacy=True)
            to.append(time.process_time() - t0)
            t0 = time.process_time()
            run()
            tn.append(time.process_time() - t0)
        mo, mn = statistics.median(to), statistics.median(tn)
        el = sum(args[0].size for args, _ in calls)
        shapes = sorted({tuple(args[0].shape) for args, _ in calls}, reverse=True)
        print(f"{model} W{bits}A{bits}: {len(calls)} layers, shapes {shapes} int32 -> codes; per forward: "
              f"legacy {min(to) * 1e3:.1f}-{max(to) * 1e3:.1f} (median {mo * 1e3:.1f}) ms, "
              f"new {min(tn) * 1e3:.1f}-{max(tn) * 1e3:.1f} (median {mn * 1e3:.1f}) ms = {mn / el * 1e9:.2f} ns/element; "
              f"ratio of medians {mo / mn:.2f}x; bit-exact vs unfused plan: {exact}")


if __name__ == "__main__":
    main()
