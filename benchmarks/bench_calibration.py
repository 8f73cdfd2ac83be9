"""Calibration time: RepQ-ViT on DeiT-S (random weights), 32 images, W4/A4, on this machine's threads.

Compares, in the same run:
  * one float forward of the batch (the unit: calibration needs at least one forward);
  * repq_hw calibration (Numba search and fake-quant kernels of repq_hw/quant/fused.py);
  * the same with the Numba kernels switched off (the torch expressions, which are the definition);
  * each calibration run as a ratio to a float forward timed just before it (what compares across runs
    and code versions on a shared machine);
  * optionally the reference code's search algorithm (a Python loop over channels, torch.quantile per
    channel and per candidate) swapped in for the uniform search.
The torch-expression variant must produce exactly the same scales (checked); for the reference loop the
script counts the quantizers whose scales agree within 1e-4 and bit for bit (the quantiles are
torch.quantile's in both; its float32 scores can rank near-tied candidates differently). Prints medians and ratios.

    .venv/bin/python benchmarks/bench_calibration.py [--model deit_small_patch16_224] [--repeats 3]
        [--skip-reference] [--skip-torch]
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
    """Median calibration time, and the median of each run's ratio to one float forward timed just
    before it (the machine may be shared: the ratio is what compares across runs and code versions)."""
    times, ratios = [], []
    for _ in range(repeats):
        fwd = time_forward(model, images)
        m = copy.deepcopy(model)
        t0 = time.perf_counter()
        build_calibrated(m, images, cfg, progress=False)
        times.append(time.perf_counter() - t0)
        ratios.append(times[-1] / fwd)
    return statistics.median(times), times, scales(m), statistics.median(ratios), ratios


def time_forward(model, images):
    with torch.no_grad():
        t0 = time.perf_counter()
        model(images)
        return time.perf_counter() - t0


def scales(model):
    from repq_hw.quant.model import quantizers

    return {n: q.delta.detach().clone() for n, q in quantizers(model)}


def same_scales(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def close_count(a, b, rtol):
    """How many quantizers have every scale within rtol (a near-tie between two percentile candidates
    can rank differently under float32 quantile ranks and float32 sums, which moves a scale further)."""
    return sum(torch.allclose(a[k], b[k], rtol=rtol, atol=0.0) for k in a)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="deit_small_patch16_224")
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--skip-torch", action="store_true",
                    help="time only the Numba calibration (no torch-expression or reference-loop runs)")
    a = ap.parse_args()
    torch.manual_seed(0)
    model = create_model(a.model)
    images = torch.randn(a.images, 3, 224, 224)
    cfg = QuantConfig(w_bits=4, a_bits=4)
    print(f"{a.model}, {a.images} images, {cfg.label}, torch threads {torch.get_num_threads()}")
    # warm-up: Numba's JIT cache and thread pool, torch's allocator (not part of any timing)
    build_calibrated(copy.deepcopy(model), images[:2], cfg, progress=False)
    fwd = time_forward(model, images)
    print(f"  one float forward of the batch        : {fwd:7.2f} s")
    ours, all_ours, ref_scales, ratio, all_ratios = time_calibration(model, images, cfg, a.repeats)
    print(f"  repq_hw calibration (median of {a.repeats})    : {ours:7.2f} s   runs {[round(t, 2) for t in all_ours]}")
    print(f"  ratio to a float forward timed just before each run: median {ratio:.2f}x, "
          f"runs {[round(r, 2) for r in all_ratios]}")
    if a.skip_torch:
        return
    original_fusable = qz._fusable
    qz._fusable = lambda x: False
    try:
        plain, _, plain_scales, _, _ = time_calibration(model, images, cfg, 1)
    finally:
        qz._fusable = original_fusable
    print(f"  torch expressions, no Numba (1 run)   : {plain:7.2f} s   speed-up {plain / ours:.1f}x, "
          f"same scales: {same_scales(ref_scales, plain_scales)}")
    if not a.skip_reference:
        original = qz.uniform_search
        qz.uniform_search = reference_loop_search
        try:
            ref, _, loop_scales, _, _ = time_calibration(model, images, cfg, 1)
        finally:
            qz.uniform_search = original
        print(f"  reference-style loop search (1 run)   : {ref:7.2f} s   speed-up {ref / ours:.1f}x, "
              f"quantizers with scales within 1e-4: {close_count(ref_scales, loop_scales, 1e-4)}, "
              f"identical: {sum(torch.equal(ref_scales[k], loop_scales[k]) for k in ref_scales)} of "
              f"{len(ref_scales)}")
    print(f"  goal < 8 s on 2 cores: {'met' if ours < 8 else 'NOT met'} on this machine")


if __name__ == "__main__":
    main()
