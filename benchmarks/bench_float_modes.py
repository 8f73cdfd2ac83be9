"""What the reproducible float mode costs: calibration (and one float forward) with torch's CPU float paths
pinned to AVX2 (the default) vs torch's own CPU-specific paths (``REPQ_HW_FAST_FLOAT=1``).

The settings only take effect before torch initialises, so each mode runs in its own fresh interpreter;
the two modes alternate, ``--repeats`` times each, and the script prints medians and the ratio measured
in this run, with the CPU and the capability torch reported in each mode.

    .venv/bin/python benchmarks/bench_float_modes.py [--model deit_small_patch16_224] [--images 32]
        [--bits 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, sys, time, copy
import repq_hw, torch
from repq_hw import float_env
from repq_hw.models.registry import create_model
from repq_hw.quant.model import QuantConfig, build_calibrated
model_name, n, bits = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
m = create_model(model_name).eval()
x = torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(0)) if not model_name.endswith("digits") \
    else torch.randn(n, 1, 32, 32, generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    m(x[:2])  # warm-up
    t0 = time.perf_counter(); m(x); fwd = time.perf_counter() - t0
t0 = time.perf_counter()
build_calibrated(copy.deepcopy(m), x, QuantConfig(w_bits=bits, a_bits=bits), progress=False)
cal = time.perf_counter() - t0
rec = float_env.record()
print("RESULT=" + json.dumps({"forward_s": fwd, "calibration_s": cal, "capability": rec["cpu_capability"],
                             "reproducible": rec["reproducible"], "cpu": rec["cpu"]}))
"""


def run_mode(fast: bool, args) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "REPQ_HW_FAST_FLOAT"}
    if fast:
        env["REPQ_HW_FAST_FLOAT"] = "1"
    out = subprocess.run([sys.executable, "-c", CHILD, args.model, str(args.images), str(args.bits)],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads([ln for ln in out.stdout.splitlines() if ln.startswith("RESULT=")][-1][7:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="deit_small_patch16_224")
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--bits", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    res: dict[str, list[dict]] = {"reproducible": [], "fast-float": []}
    for r in range(args.repeats):
        for mode, fast in (("reproducible", False), ("fast-float", True)):
            res[mode].append(run_mode(fast, args))
            last = res[mode][-1]
            print(f"[{r + 1}/{args.repeats}] {mode:12s} capability {last['capability']:7s} "
                  f"forward {last['forward_s']:.2f} s  calibration {last['calibration_s']:.2f} s", flush=True)
    cpu = res["reproducible"][0]["cpu"]
    med = {m: {k: statistics.median(x[k] for x in v) for k in ("forward_s", "calibration_s")}
           for m, v in res.items()}
    print(f"\n{args.model}, {args.images} images, W{args.bits}A{args.bits}, CPU {cpu}, medians of {args.repeats}:")
    for m in res:
        print(f"  {m:12s} (torch capability {res[m][0]['capability']}): forward {med[m]['forward_s']:.2f} s, "
              f"calibration {med[m]['calibration_s']:.2f} s")
    print(f"  pinned / fast: forward {med['reproducible']['forward_s'] / med['fast-float']['forward_s']:.2f}x, "
          f"calibration {med['reproducible']['calibration_s'] / med['fast-float']['calibration_s']:.2f}x")
    assert all(x["reproducible"] for x in res["reproducible"]), "the pinned mode did not record reproducible"
    assert not any(x["reproducible"] for x in res["fast-float"]), "fast float recorded reproducible"


if __name__ == "__main__":
    main()
