"""Start-up: how soon a fresh process emulates, with the Numba JIT cache cold and warm.

Each measurement is a new Python process that imports the executor, loads a cached DeiT-S IR and runs one
image (the plan packs each GEMM's weights on its first use), reporting when each phase ended (seconds from the
process's first line; the interpreter's own start-up is added from the parent's wall clock).  "cold":
an empty Numba cache directory (every kernel compiles); "warm": the same directory again (every kernel
loads from the cache).  The cache location is passed as NUMBA_CACHE_DIR to the child only; it changes
where compiled code is kept, never a result.

    .venv/bin/python benchmarks/bench_startup.py [--model deit_small_patch16_224] [--bits 8] [--warm-runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
sys.path.insert(0, sys.argv[2]); sys.path.insert(0, sys.argv[3])
from repq_hw.emu.execute import run_graph
from repq_hw.emu import fast
from repq_hw.ir.graph import load_graph
import numpy as np
t_import = time.perf_counter() - t0
g = load_graph(sys.argv[1], validate=False)
codes = np.load(sys.argv[1] + "/inputs.npy")[:1]
t_load = time.perf_counter() - t0
fast.prepare(g)  # lazy: each GEMM packs its weights on first use
t_prepare = time.perf_counter() - t0
first = []
run_graph(g, codes, "fast", progress=lambda n: first.append(time.perf_counter() - t0) if not first else None)
t_forward = time.perf_counter() - t0
print(json.dumps({"import": t_import, "load": t_load, "prepare": t_prepare, "first_node": first[0],
                  "first_image": t_forward}))
"""


def run_child(ir_dir: Path, cache: str) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD, str(ir_dir), str(HERE), str(HERE.parent)], env=env,
                         capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    d = json.loads(out.stdout.strip().splitlines()[-1])
    d["process_wall"] = wall
    d["interpreter"] = wall - d["first_image"]
    return d


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="deit_small_patch16_224")
    ap.add_argument("--bits", type=int, default=8)
    ap.add_argument("--warm-runs", type=int, default=3)
    a = ap.parse_args()
    from _common import CACHE, cached_graph, machine

    cached_graph(a.model, a.bits, a.bits)
    ir_dir = CACHE / f"{a.model}_w{a.bits}a{a.bits}"
    print(f"machine: {machine()}\n{a.model} W{a.bits}A{a.bits}, one image, times from process start (s)\n")
    with tempfile.TemporaryDirectory(prefix="numba-cache-") as cache:
        cold = run_child(ir_dir, cache)
        warm = [run_child(ir_dir, cache) for _ in range(a.warm_runs)]
    keys = ["import", "load", "prepare", "first_node", "first_image", "process_wall"]
    print("| phase (s since start) | cold JIT cache | warm JIT cache (median) |")
    print("|---|---|---|")
    for k in keys:
        print(f"| {k} | {cold[k]:.2f} | {statistics.median(w[k] for w in warm):.2f} |")
    ws = statistics.median(w["first_node"] + w["interpreter"] for w in warm)
    print(f"\nwarm process starts emulating after {ws:.2f} s (interpreter + imports + IR load + first node): "
          f"goal < 3 s {'met' if ws < 3 else 'NOT met'}; cold compile adds "
          f"{cold['first_image'] - statistics.median(w['first_image'] for w in warm):.1f} s")


if __name__ == "__main__":
    main()
