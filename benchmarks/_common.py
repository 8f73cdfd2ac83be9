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
    proxy = (" -- AVX2-ONLY PROXY (Numba and torch limited to AVX2 on this CPU; not a Zen 1 measurement)"
             if os.environ.get(_PROXY_MARK) else "")
    return (f"{name} ({cpu}, {simd}), {os.cpu_count()} cores, {platform.python_version()}, "
            f"{time.strftime('%Y-%m-%d')}{proxy}")


_PROXY_MARK = "REPQ_BENCH_AVX2_PROXY"
TORCH_AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
"""torch's AVX2 kernels on an AVX-512 CPU (ATEN alone is not enough: oneDNN and MKL pick their own ISA)."""


def reexec_as_avx2_proxy() -> None:
    """Re-run this script (same arguments) with both sides limited to AVX2: Numba compiles for the host's
    features minus AVX-512 / AVX-VNNI / AMX (so repq_hw's kernels take their AVX2 paths:
    ``kernels.simd.cpu_features`` follows NUMBA_CPU_FEATURES), torch dispatches its AVX2 kernels.  A proxy
    for an AVX2-only CPU on this silicon (same caches, clocks and core), never a measurement of one.
    Returns at once inside the re-run process."""
    if os.environ.get(_PROXY_MARK):
        return
    import llvmlite.binding as ll

    feats = []
    for f in ll.get_host_cpu_features().flatten().split(","):
        name = f[1:]
        off = name.startswith(("avx512", "avxvnni", "amx", "avx10", "avxifma", "avxneconvert", "avxvnniint"))
        feats.append(("-" if off else f[0]) + name)
    env = dict(os.environ, NUMBA_CPU_FEATURES=",".join(feats), **TORCH_AVX2_ENV, **{_PROXY_MARK: "1"})
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def save_json(path: str | None, obj: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(obj, indent=1))
