"""Peak resident memory of one DeiT-S batch: the integer emulator vs PyTorch fp32, each in a fresh process.

The emulator process imports only the executor (no torch), loads the cached IR, prepares the plan and
runs one batch; the PyTorch process builds timm's model and runs the same batch size under no_grad.
Peak RSS is the child's ``ru_maxrss`` after the run.

    .venv/bin/python benchmarks/bench_memory.py [--model deit_small_patch16_224] [--bits 8] [--batch 8]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

EMU = r"""
import json, resource, sys
sys.path.insert(0, sys.argv[3])
import numpy as np
from repq_hw.emu.execute import run_graph
from repq_hw.ir.graph import load_graph
g = load_graph(sys.argv[1], validate=False)
codes = np.load(sys.argv[1] + "/inputs.npy")
b = int(sys.argv[2])
codes = np.concatenate([codes] * (-(-b // len(codes))))[:b]
run_graph(g, codes, "fast")
assert "torch" not in sys.modules
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

TORCH = r"""
import json, resource, sys
sys.path.insert(0, sys.argv[3])
import torch
from repq_hw.models.registry import create_model
m = create_model(sys.argv[1]).eval()
with torch.no_grad():
    m(torch.randn(int(sys.argv[2]), 3, 224, 224))
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def child(code: str, *args) -> float:
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mb"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="deit_small_patch16_224")
    ap.add_argument("--bits", type=int, default=8)
    ap.add_argument("--batch", type=int, default=8)
    a = ap.parse_args()
    from _common import CACHE, cached_graph, machine

    cached_graph(a.model, a.bits, a.bits)
    ir_dir = CACHE / f"{a.model}_w{a.bits}a{a.bits}"
    emu = child(EMU, ir_dir, a.batch, HERE.parent)
    pt = child(TORCH, a.model, a.batch, HERE.parent)
    print(f"machine: {machine()}\n{a.model}, batch {a.batch}, peak RSS of a fresh process")
    print("| process | peak RSS (MiB) |\n|---|---|")
    print(f"| emulator W{a.bits}A{a.bits} (fast backend) | {emu:.0f} |\n| PyTorch fp32 (timm) | {pt:.0f} |")
    print(f"emulator / torch = {emu / pt:.2f}: goal <= 1 {'met' if emu <= pt else 'NOT met'}")


if __name__ == "__main__":
    main()
