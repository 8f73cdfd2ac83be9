"""Shared helpers of the benchmark scripts: cached lowered graphs, timing, machine description.

Lowered graphs are cached under ``runs/bench_ir/<model>_w<W>a<A>/`` (gitignored) so that a benchmark run
does not re-calibrate: the first run of a model calibrates it on a few random 224x224 images (random
weights, seeded) and saves the IR; later runs load it (and its input codes) in about a second.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CACHE = ROOT / "runs" / "bench_ir"
CALIB_IMAGES = 8
INPUT_IMAGES = 8  # the cached input batch (codes of seeded random images)


def cached_graph(model: str, w_bits: int, a_bits: int, *, verbose: bool = True):
    """(graph, input codes uint8 [INPUT_IMAGES, 3, 224, 224]) for a timm model, cached on disk."""
    from repq_hw.ir.graph import load_graph, save_graph

    d = CACHE / f"{model}_w{w_bits}a{a_bits}"
    if (d / "graph.json").is_file() and (d / "inputs.npy").is_file():
        return load_graph(d, validate=False), np.load(d / "inputs.npy")
    import torch

    from repq_hw.fidelity import input_codes
    from repq_hw.lower import lower_model
    from repq_hw.models.registry import create_model
    from repq_hw.quant.model import QuantConfig, build_calibrated

    t0 = time.perf_counter()
    if verbose:
        print(f"[cache] calibrating and lowering {model} W{w_bits}A{a_bits} (first run only) ...", flush=True)
    torch.manual_seed(0)
    m = create_model(model)
    x = torch.randn(CALIB_IMAGES, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    cfg = QuantConfig(w_bits=w_bits, a_bits=a_bits)
    q = build_calibrated(m, x, cfg, progress=False)
    g = lower_model(q, cfg, x, meta={"model": model})
    xin = torch.randn(INPUT_IMAGES, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    codes = input_codes(q, xin)
    save_graph(g, d)
    np.save(d / "inputs.npy", codes)
    if verbose:
        print(f"[cache] {model} W{w_bits}A{a_bits} ready in {time.perf_counter() - t0:.0f} s -> {d}", flush=True)
    return g, codes


def median_time(fn, repeats: int, warmup: int = 1) -> tuple[float, list[float]]:
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` untimed runs."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), ts


def machine() -> str:
    """One line: CPU model, SIMD level that matters here, core count, date."""
    name = "?"
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and name == "?":
                    name = line.split(":", 1)[1].strip()
                if line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    simd = "avx512_vnni" if "avx512_vnni" in flags else "avx2" if "avx2" in flags else "baseline"
    try:
        import llvmlite.binding as ll

        cpu = ll.get_host_cpu_name()
    except Exception:  # pragma: no cover
        cpu = "?"
    return (f"{name} ({cpu}, {simd}), {os.cpu_count()} cores, {platform.python_version()}, "
            f"{time.strftime('%Y-%m-%d')}")


def save_json(path: str | None, obj: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(obj, indent=1))
