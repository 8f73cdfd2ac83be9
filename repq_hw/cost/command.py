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
DEFAULT_MODEL = "vit_digits"
DEFAULT_BITS = (8, 6, 4)
DEFAULT_CALIB_SIZE = 32


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse_bits(s: str) -> list[int]:
    try:
        bits = [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--bits must be comma-separated integers, got {s!r}") from None
    if not bits or any(not 2 <= b <= 8 for b in bits):
        raise argparse.ArgumentTypeError(f"--bits entries must be integers in 2..8, got {s!r}")
    if len(set(bits)) != len(bits):
        raise argparse.ArgumentTypeError(f"--bits entries repeat in {s!r}")
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


def _check_options(a) -> None:
    """Options that the chosen graph source would silently ignore are errors, and so is an --out that
    cannot be written (checked before any work)."""
    from repq_hw.argtypes import check_writable_dir
    from repq_hw.errors import InputError

    source = "--ir" if a.ir else "--skeleton" if a.skeleton else None
    if source:
        given = [o for o, v in (("--checkpoint", a.checkpoint), ("--data", a.data), ("--eval-limit", a.eval_limit),
                                ("--calib-size", a.calib_size), ("--seed", a.seed))
                 if v is not None]
        if a.no_accuracy:
            given.append("--no-accuracy")
        if a.ir and a.bits is not None:
            given.insert(0, "--bits")
        if a.ir and a.model is not None:
            given.insert(0, "--model")
        if given:
            raise InputError(f"{source} does not use {', '.join(given)} (they apply to calibrating --model)")
    elif a.no_accuracy and a.eval_limit is not None:
        raise InputError("--eval-limit has no effect with --no-accuracy")
    check_writable_dir(a.out, "--out")


def cmd_cost(a) -> int:
    from repq_hw.cost.energy import MemoryConfig
    from repq_hw.cost.report import FLOAT_VARIANTS, cost_summary
    from repq_hw.cost.tech import load_tech

    _check_options(a)
    model_name = a.model or DEFAULT_MODEL
    bits = a.bits or list(DEFAULT_BITS)
    tech = load_tech(a.tech)  # fail early on a bad table
    mem = MemoryConfig(act_sram_kb=a.sram_kb, weight_sram_kb=a.weight_sram_kb, batch=a.batch, dram_point=a.dram,
                       fuse_elementwise=not a.no_streaming)
    acc, src, model = {}, "", model_name
    if a.ir:
        from repq_hw.ir.graph import load_graph

        graphs = {}
        for d in a.ir:
            _log(f"[cost] loading {d}")
            g = load_graph(d)
            label = f"W{g.meta['w_bits']}A{g.meta['a_bits']}" if {"w_bits", "a_bits"} <= set(g.meta) else Path(d).name
            if label in graphs:
                label = f"{label} ({Path(d).name})"
            if label in graphs:
                from repq_hw.errors import InputError

                raise InputError(f"--ir {d}: two IR folders would both be reported as {label!r}")
            graphs[label] = g
        model = next(iter(graphs.values())).meta.get("model", "ir")
    elif a.skeleton:
        from repq_hw.cost.skeleton import vit_skeleton

        graphs = {f"W{b}A{b}": vit_skeleton(model_name, b, b) for b in bits}
    else:
        from repq_hw.cli import check_counts, check_model

        calib_size = DEFAULT_CALIB_SIZE if a.calib_size is None else a.calib_size
        check_model(model_name)
        check_counts(model_name, a.data, None, calib_size, None if a.no_accuracy else a.eval_limit)
        graphs, acc, src = model_graphs(model_name, bits, a.checkpoint, a.data, calib_size, a.seed or 0,
                                        accuracy=not a.no_accuracy, eval_limit=a.eval_limit)
    _log("[cost] counting, pricing" + ("" if a.no_plots else ", plotting") + " ...")
    cost_summary(graphs, a.out, accuracy=acc, tech=tech, mem=mem, floats=() if a.no_float else FLOAT_VARIANTS,
                 plots=not a.no_plots, model=model, accuracy_source=src)
    return 0


def register(subparsers) -> argparse.ArgumentParser:
    from repq_hw.argtypes import positive_float, positive_int, seed

    p = subparsers.add_parser(
        "cost", help="hardware cost: op / memory counts and energy estimate of the integer graph",
        description="Count operations and memory traffic of the integer IR, price them with a technology "
                    "table (default Horowitz ISSCC 2014, 45 nm) and a small memory model, and compare "
                    "fp32 / fp16 / integer bit settings. All numbers are analytical estimates "
                    "(rules: docs/cost_model.md).")
    p.add_argument("--model", help=f"model to calibrate and lower (default {DEFAULT_MODEL}), or the --skeleton "
                                   "architecture")
    p.add_argument("--checkpoint", help="local weights for --model")
    p.add_argument("--data", help="calibration / evaluation data for --model (default: digits)")
    p.add_argument("--bits", type=parse_bits, help="comma-separated WbAb settings (default 8,6,4)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--ir", action="append", metavar="DIR",
                     help="count a saved IR folder instead of calibrating (repeatable)")
    src.add_argument("--skeleton", action="store_true",
                   help="count the lowering's structural twin of --model (ViT/DeiT names, e.g. "
                        "deit_small_patch16_224): no calibration, no data, no accuracy")
    p.add_argument("--tech", help="technology table: YAML file or a name in sim/tech (default horowitz_45nm)")
    p.add_argument("--sram-kb", type=positive_float, default=256.0,
                   help="activation SRAM capacity in KB (default 256)")
    p.add_argument("--weight-sram-kb", type=positive_float,
                   help="weight SRAM in KB (default: the largest op's constants)")
    p.add_argument("--batch", type=positive_int, default=1, help="images per weight fetch from DRAM (default 1)")
    p.add_argument("--dram", choices=("low", "mid", "high"), default="mid", help="point in the DRAM energy range")
    p.add_argument("--no-streaming", action="store_true",
                   help="store every IR tensor (no streaming of element-wise / row-wise consumers)")
    p.add_argument("--no-float", action="store_true", help="skip the fp32 / fp16 twins")
    p.add_argument("--no-accuracy", action="store_true", help="skip the accuracy measurement (--model only)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--out", default=str(DEFAULT_OUT), help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--calib-size", type=positive_int, help=f"calibration images (default {DEFAULT_CALIB_SIZE})")
    p.add_argument("--seed", type=seed, help="calibration seed (default 0)")
    p.add_argument("--eval-limit", type=positive_int, help="evaluate on the first N images only")
    from repq_hw.cli import add_fast_float

    add_fast_float(p)
    p.set_defaults(func=cmd_cost)
    return p
