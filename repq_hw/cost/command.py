"""``repq-hw cost``: op / memory counts and an energy estimate of integer graphs, with float and bit-width
comparisons, JSON / CSV files and figures. Registered into the main CLI by ``register(subparsers)``.

Sources of graphs: ``--model`` (calibrate and lower at each ``--bits`` setting; the only path that needs
torch, imported lazily), ``--ir DIR`` (saved IR folders), or ``--skeleton`` (the structural twin of the
lowering for a named ViT/DeiT architecture: counts without calibration or data).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

DEFAULT_OUT = Path("runs/cost")


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse_bits(s: str) -> list[int]:
    try:
        bits = [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--bits must be comma-separated integers, got {s!r}") from None
    if not bits or any(not 2 <= b <= 8 for b in bits):
        raise argparse.ArgumentTypeError(f"--bits entries must be integers in 2..8, got {s!r}")
    return bits


def model_graphs(model_name: str, bits: list[int], checkpoint: str | None = None, data: str | None = None,
                 calib_size: int = 32, seed: int = 0, accuracy: bool = True, eval_limit: int | None = None,
                 progress=_log):
    """Calibrate and lower ``model_name`` at W{b}A{b} for each b; with ``accuracy``, measure top-1 of the
    float model (fp32 and fp16, PyTorch) and of each integer graph (the emulator) on the evaluation split.

    Returns ({label: Graph}, {label: top-1 %}, description of the accuracy source).
    """
    import numpy as np
    import torch

    from repq_hw.emu.execute import run_graph
    from repq_hw.fidelity import input_codes
    from repq_hw.models.registry import create_model
    from repq_hw.pipeline import calibrate_model, calibration_images, eval_batches, lower_calibrated
    from repq_hw.quant.model import QuantConfig

    t0 = time.perf_counter()
    fmodel = create_model(model_name, checkpoint=checkpoint)
    calib = calibration_images(fmodel, model_name, data, calib_size, seed)
    acc: dict[str, float] = {}
    src = ""
    if accuracy:
        batches, _ = eval_batches(fmodel, model_name, data, limit=eval_limit)
        xs = torch.cat([b[0] for b in batches])
        ys = torch.cat([b[1] for b in batches]).numpy()
        progress(f"[cost] float model on {len(xs)} evaluation images (fp32, fp16) ...")
        with torch.no_grad():
            acc["fp32"] = 100 * float((fmodel(xs).argmax(1).numpy() == ys).mean())
            half = create_model(model_name, checkpoint=checkpoint).half()
            acc["fp16"] = 100 * float((half(xs.half()).float().argmax(1).numpy() == ys).mean())
        src = (f"top-1 on {len(xs)} evaluation images: fp32 / fp16 = float model in PyTorch, "
               "WbAb = integer emulator")
    graphs = {}
    for i, b in enumerate(bits, 1):
        cfg = QuantConfig(w_bits=b, a_bits=b)
        progress(f"[cost] {i}/{len(bits)} {cfg.label}: calibrating on {len(calib)} images, lowering ...")
        q = calibrate_model(fmodel, calib, cfg, progress=False).model
        g = lower_calibrated(q, cfg, model_name, calib)
        graphs[cfg.label] = g
        if accuracy:
            progress(f"[cost] {i}/{len(bits)} {cfg.label}: integer emulator on {len(xs)} images ...")
            out = run_graph(g, input_codes(q, xs), "fast")[g.outputs[0]][:, 0, :]
            acc[cfg.label] = 100 * float((np.argmax(out, axis=1) == ys).mean())
    progress(f"[cost] graphs ready in {time.perf_counter() - t0:.1f} s")
    return graphs, acc, src


def cmd_cost(a) -> int:
    from repq_hw.cost.energy import MemoryConfig
    from repq_hw.cost.report import FLOAT_VARIANTS, cost_summary
    from repq_hw.cost.tech import load_tech

    tech = load_tech(a.tech)  # fail early on a bad table
    mem = MemoryConfig(act_sram_kb=a.sram_kb, weight_sram_kb=a.weight_sram_kb, batch=a.batch, dram_point=a.dram,
                       fuse_elementwise=not a.no_streaming)
    acc, src, model = {}, "", a.model
    if a.ir:
        from repq_hw.ir.graph import load_graph

        graphs = {}
        for d in a.ir:
            _log(f"[cost] loading {d}")
            g = load_graph(d)
            label = f"W{g.meta['w_bits']}A{g.meta['a_bits']}" if {"w_bits", "a_bits"} <= set(g.meta) else Path(d).name
            if label in graphs:
                label = f"{label} ({Path(d).name})"
            graphs[label] = g
        model = next(iter(graphs.values())).meta.get("model", "ir")
    elif a.skeleton:
        from repq_hw.cost.skeleton import vit_skeleton

        graphs = {f"W{b}A{b}": vit_skeleton(a.model, b, b) for b in a.bits}
    else:
        graphs, acc, src = model_graphs(a.model, a.bits, a.checkpoint, a.data, a.calib_size, a.seed,
                                        accuracy=not a.no_accuracy, eval_limit=a.eval_limit)
    _log("[cost] counting, pricing" + ("" if a.no_plots else ", plotting") + " ...")
    cost_summary(graphs, a.out, accuracy=acc, tech=tech, mem=mem, floats=() if a.no_float else FLOAT_VARIANTS,
                 plots=not a.no_plots, model=model, accuracy_source=src)
    return 0


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "cost", help="hardware cost: op / memory counts and energy estimate of the integer graph",
        description="Count operations and memory traffic of the integer IR, price them with a technology "
                    "table (default Horowitz ISSCC 2014, 45 nm) and a small memory model, and compare "
                    "fp32 / fp16 / integer bit settings. All numbers are analytical estimates "
                    "(rules: docs/cost_model.md).")
    p.add_argument("--model", default="vit_digits", help="model to calibrate and lower (default vit_digits)")
    p.add_argument("--checkpoint", help="local weights for --model")
    p.add_argument("--data", help="calibration / evaluation data for --model (default: digits)")
    p.add_argument("--bits", type=parse_bits, default=[8, 6, 4], help="comma-separated WbAb settings (default 8,6,4)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--ir", action="append", metavar="DIR",
                     help="count a saved IR folder instead of calibrating (repeatable)")
    src.add_argument("--skeleton", action="store_true",
                   help="count the lowering's structural twin of --model (ViT/DeiT names, e.g. "
                        "deit_small_patch16_224): no calibration, no data, no accuracy")
    p.add_argument("--tech", help="technology table: YAML file or a name in sim/tech (default horowitz_45nm)")
    p.add_argument("--sram-kb", type=float, default=256.0, help="activation SRAM capacity in KB (default 256)")
    p.add_argument("--weight-sram-kb", type=float, help="weight SRAM in KB (default: the largest op's constants)")
    p.add_argument("--batch", type=int, default=1, help="images per weight fetch from DRAM (default 1)")
    p.add_argument("--dram", choices=("low", "mid", "high"), default="mid", help="point in the DRAM energy range")
    p.add_argument("--no-streaming", action="store_true",
                   help="store every IR tensor (no streaming of element-wise / row-wise consumers)")
    p.add_argument("--no-float", action="store_true", help="skip the fp32 / fp16 twins")
    p.add_argument("--no-accuracy", action="store_true", help="skip the accuracy measurement (--model only)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--out", default=str(DEFAULT_OUT), help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--calib-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-limit", type=int, help="evaluate on the first N images only")
    p.set_defaults(func=cmd_cost)
    return p
