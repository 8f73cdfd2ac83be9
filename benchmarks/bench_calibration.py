"""Calibration time: RepQ-ViT on DeiT-S (random weights), 32 images, W4/A4, on this machine's threads.

Compares, in the same run, the vectorised percentile search of repq_hw against the reference code's
algorithm (a Python loop over channels, torch.quantile per channel and per candidate), by swapping the
search function; everything else (model, data, forward passes) is identical. Prints medians and ratios.

    .venv/bin/python benchmarks/bench_calibration.py [--model deit_small_patch16_224] [--repeats 3]
        [--skip-reference]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

import repq_hw.quant.quantizers as qz
from repq_hw.models.registry import create_model
from repq_hw.quant.model import QuantConfig, build_calibrated


def reference_loop_search(rows: torch.Tensor, n_bits: int):
    """The reference algorithm: one channel at a time, torch.quantile for every candidate."""
    rows = rows.detach()
    deltas, zps = torch.empty(rows.shape[0]), torch.empty(rows.shape[0])
    levels = 2**n_bits - 1
    for c in range(rows.shape[0]):
        x = rows[c]
        best = 1e10
        for pct in qz.PERCENTILES:
            try:
                mx, mn = torch.quantile(x, pct), torch.quantile(x, 1 - pct)
            except RuntimeError:  # torch.quantile refuses > 2^24 elements; the reference falls back to numpy
                import numpy as np

                mx = torch.tensor(np.percentile(x.numpy(), pct * 100), dtype=x.dtype)
                mn = torch.tensor(np.percentile(x.numpy(), (1 - pct) * 100), dtype=x.dtype)
            d = ((mx - mn) / levels).clamp_min(qz.MIN_DELTA)
            z = torch.round(-mn / d)
            score = (x - (torch.clamp(torch.round(x / d) + z, 0, levels) - z) * d).pow(2).mean()
            if score < best:
                best, deltas[c], zps[c] = score, d, z
    return deltas, zps


def time_calibration(model, images, cfg, repeats):
    times = []
    for _ in range(repeats):
        m = copy.deepcopy(model)
        t0 = time.perf_counter()
        build_calibrated(m, images, cfg, progress=False)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="deit_small_patch16_224")
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-reference", action="store_true")
    a = ap.parse_args()
    torch.manual_seed(0)
    model = create_model(a.model)
    images = torch.randn(a.images, 3, 224, 224)
    cfg = QuantConfig(w_bits=4, a_bits=4)
    print(f"{a.model}, {a.images} images, {cfg.label}, torch threads {torch.get_num_threads()}")
    with torch.no_grad():
        t0 = time.perf_counter()
        model(images)
        fwd = time.perf_counter() - t0
    print(f"  one float forward of the batch      : {fwd:7.2f} s")
    ours, all_ours = time_calibration(model, images, cfg, a.repeats)
    print(f"  repq_hw calibration (median of {a.repeats})  : {ours:7.2f} s   runs {[round(t, 2) for t in all_ours]}")
    if not a.skip_reference:
        original = qz.uniform_search
        qz.uniform_search = reference_loop_search
        try:
            ref, _ = time_calibration(model, images, cfg, 1)
        finally:
            qz.uniform_search = original
        print(f"  reference-style loop search (1 run) : {ref:7.2f} s")
        print(f"  speed-up                            : {ref / ours:7.1f}x")
    print(f"  goal < 8 s on 2 cores: {'met' if ours < 8 else 'NOT met'}")


if __name__ == "__main__":
    main()
