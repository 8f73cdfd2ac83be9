"""Scale-out: images/s of the bit-exact integer emulator (``eval --integer``'s integer stage) in-process and
on local Dask clusters of 1 and 2 worker processes, same images, same run.

DeiT-S with random weights (calibrated and lowered once, cached under runs/bench_ir/, see _common.py) on
synthetic images: seeded uniform input codes in the graph input's range. For each layout: one untimed run
(loads the graph on every worker and warms Numba's caches there), then the median of --repeats timed runs
of ``Runner.emulate`` over --images images in shards of --shard-size. Every result is checked bit for bit
against the in-process run before any figure is printed. Cluster start-up is reported apart, not timed in
the images/s. The layouts are started first, then timed round-robin (each repeat runs every layout once).

    .venv/bin/python benchmarks/bench_dask.py [--model deit_small_patch16_224] [--bits 8] [--images 32]
        [--shard-size 8] [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import cached_graph, machine, save_json


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="deit_small_patch16_224")
    ap.add_argument("--bits", type=int, default=8)
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--shard-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json")
    a = ap.parse_args()

    import numpy as np

    from repq_hw.execution import ClusterConfig, Runner, local_layout, set_threads, usable_cores

    g, _ = cached_graph(a.model, a.bits, a.bits)
    t = g.tensors[g.inputs[0]].type
    codes = np.random.default_rng(0).integers(t.min, t.max + 1, size=(a.images, *t.shape)).astype(t.storage)
    cores = usable_cores()
    print(f"machine: {machine()}; usable cores {cores}")
    print(f"{a.model} W{a.bits}A{a.bits}: {a.images} synthetic images, shards of {a.shard_size}, "
          f"median of {a.repeats}")

    # (label, config): the default layout of --workers 1 (2 threads on 2 cores), the same process with one
    # thread, and --workers 2 (one thread each); all started first, then timed alternately (round-robin),
    # so that every layout sees the same machine state
    layouts = [("in-process", ClusterConfig(in_process=True, threads=cores, shard_size=a.shard_size)),
               ("1 worker", ClusterConfig(workers=1, shard_size=a.shard_size)),
               ("1 worker, 1 thread", ClusterConfig(workers=1, threads=1, shard_size=a.shard_size)),
               ("2 workers", ClusterConfig(workers=2, shard_size=a.shard_size))]
    runners, info, ref = {}, {}, None
    try:
        for label, cfg in layouts:
            cfg = ClusterConfig(workers=cfg.workers, threads=cfg.threads, in_process=cfg.in_process,
                                shard_size=cfg.shard_size, progress=False)
            t0 = time.perf_counter()
            r = Runner(cfg, log=lambda s: None)
            r.start()
            runners[label] = r
            start_s = time.perf_counter() - t0
            if cfg.in_process:
                set_threads(cores)
                n, th = 1, cores
            else:
                n = len(r.workers())
                th = local_layout(cores, cfg.workers, cfg.threads)[1]
            t1 = time.perf_counter()
            out = r.emulate(g, codes)[g.outputs[0]]  # warm-up: graph to the workers, Numba caches loaded
            info[label] = {"layout": f"{n} process(es) x {th} thread(s)", "startup_s": start_s,
                           "first_run_s": time.perf_counter() - t1, "runs": []}
            ref = out if ref is None else ref  # the in-process layout runs first
            if not np.array_equal(out, ref):
                raise SystemExit(f"{label}: logits differ from the in-process run")
        for _ in range(a.repeats):
            for label, r in runners.items():
                if label == "in-process":
                    set_threads(cores)
                t1 = time.perf_counter()
                out = r.emulate(g, codes)[g.outputs[0]]
                info[label]["runs"].append(time.perf_counter() - t1)
                if not np.array_equal(out, ref):
                    raise SystemExit(f"{label}: logits differ from the in-process run")
    finally:
        for r in runners.values():
            r.close()
    for label, d in info.items():
        d["seconds"] = statistics.median(d["runs"])
        d["images_per_s"] = a.images / d["seconds"]
        print(f"  {label:>18} ({d['layout']}): {d['images_per_s']:6.2f} img/s  (median {d['seconds']:.2f} s, "
              f"runs {', '.join(f'{t:.2f}' for t in d['runs'])}; start {d['startup_s']:.1f} s, "
              f"first run {d['first_run_s']:.1f} s)")
    ips = {k: d["images_per_s"] for k, d in info.items()}
    print(f"ratios (same run): 2 workers / 1 worker = {ips['2 workers'] / ips['1 worker']:.2f}x; "
          f"2 workers / 1 worker, 1 thread = {ips['2 workers'] / ips['1 worker, 1 thread']:.2f}x; "
          f"2 workers / in-process = {ips['2 workers'] / ips['in-process']:.2f}x; "
          f"1 worker / in-process = {ips['1 worker'] / ips['in-process']:.2f}x; every result bit-identical")
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(f"load average after the run: {' '.join(load)} (other processes share these cores)")
    results = info
    save_json(a.json, {"machine": machine(), "model": a.model, "bits": a.bits, "images": a.images,
                       "shard_size": a.shard_size, "load_average": load, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
