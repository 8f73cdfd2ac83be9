"""Golden vectors: time to write a full golden set of DeiT-S for one image (every op, default formats).

Uses ``repq_hw.golden.write_golden_set`` on the cached IR (emulator backend "fast"), then reports the
wall time, the set's size on disk and MB/s.  The set is written to a temporary directory and removed.
Bit-exactness: the set's tensors come from ``run_graph(..., "fast", keep_all=True)``; this script checks
its graph output against the numpy reference backend for the same image.

    .venv/bin/python benchmarks/bench_golden.py [--model deit_small_patch16_224] [--bits 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def dir_bytes(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="deit_small_patch16_224")
    ap.add_argument("--bits", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    import numpy as np
    from _common import cached_graph, machine

    try:
        from repq_hw.golden import write_golden_set
    except ImportError as e:  # pragma: no cover
        print(f"repq_hw.golden is not available ({e}): nothing to measure")
        return
    from repq_hw.emu.execute import run_graph

    g, codes = cached_graph(a.model, a.bits, a.bits)
    one = codes[:1]
    ref = run_graph(g, one, "ref")
    fast = run_graph(g, one, "fast")
    exact = all(np.array_equal(ref[k], fast[k]) for k in g.outputs)
    print(f"machine: {machine()}\n{a.model} W{a.bits}A{a.bits}, one image, every op, default formats; "
          f"output bit-exact vs numpy ref: {exact}")
    times, size = [], 0
    for _ in range(a.repeats):
        d = Path(tempfile.mkdtemp(prefix="golden-bench-"))
        try:
            t0 = time.perf_counter()
            out = write_golden_set(g, one, d / "set", model=a.model, progress=False)
            times.append(time.perf_counter() - t0)
            size = dir_bytes(out)
        finally:
            shutil.rmtree(d, ignore_errors=True)
    t = statistics.median(times)
    print(f"| golden set | files MB | median s | MB/s |\n|---|---|---|---|\n"
          f"| {a.model} W{a.bits}A{a.bits}, 1 image | {size / 1e6:.0f} | {t:.1f} | {size / 1e6 / t:.0f} |")
    print(f"goal < 30 s: {'met' if t < 30 else 'NOT met'} (runs {[round(x, 1) for x in times]}, cpu count {os.cpu_count()})")


if __name__ == "__main__":
    main()
