"""``repq-hw`` command line: a thin layer over :mod:`repq_hw.pipeline`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEMO_OUT = Path("runs/demo")
PLUGIN_COMMANDS = ("repq_hw.golden.command", "repq_hw.cost.command")


def _bits(s: str) -> int:
    from repq_hw.quant.quantizers import check_bits

    try:
        return check_bits(int(s), "bits")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _model_args(p: argparse.ArgumentParser, default: str | None = "vit_digits") -> None:
    p.add_argument("--model", default=default, help="model name (see `repq-hw models`)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", help="local weights: .safetensors, or .pth/.bin (weights_only)")
    src.add_argument("--pretrained", action="store_true", help="timm hub weights (needs a network)")
    p.add_argument("--data", help="'digits' (default for the bundled models) or an ImageFolder directory")


def _quant_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--w-bits", type=_bits, default=4)
    p.add_argument("--a-bits", type=_bits, default=4)
    p.add_argument("--method", choices=("repq", "naive"), default="repq")
    p.add_argument("--no-reparam", action="store_true", help="keep post-LN quantizers channel-wise")
    p.add_argument("--zero-point", choices=("round", "mean"), default="round",
                   help="z~ of the reparameterized quantizer: round (integer pipeline) or mean (reference)")
    p.add_argument("--calib-data", help="ImageFolder for calibration (default: --data)")
    p.add_argument("--calib-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-limit", type=int, help="evaluate on the first N images only")


def _cfg(a):
    from repq_hw.quant.model import QuantConfig

    return QuantConfig(w_bits=a.w_bits, a_bits=a.a_bits, method=a.method, reparam=not a.no_reparam,
                       zero_point=a.zero_point)


def _print_summary(s: dict) -> None:
    cfg = s["config"]
    print(f"model {s['model']}  {cfg.label}  method={cfg.method} reparam={cfg.reparam} "
          f"zero_point={cfg.zero_point}  calibration {s['calib_seconds']:.2f} s")
    if "float" in s:
        print(f"  float      : {s['float'].row()}")
        print(f"  fake-quant : {s['quant'].row()}")
    if "out_dir" in s:
        print(f"  calibrated model written to {s['out_dir']}/ (model.safetensors + quant.json)")


def cmd_calibrate(a) -> int:
    from repq_hw.pipeline import run_calibrate

    s = run_calibrate(a.model, _cfg(a), a.checkpoint, a.pretrained, a.data, a.calib_data, a.calib_size,
                      a.seed, a.out, evaluate_acc=not a.no_eval, eval_limit=a.eval_limit)
    _print_summary(s)
    return 0


def cmd_eval(a) -> int:
    from repq_hw.evaluate import evaluate
    from repq_hw.models.registry import create_model
    from repq_hw.pipeline import eval_batches, run_calibrate

    if a.calibrated:
        from repq_hw.quant.model import load_calibrated

        q, cfg, meta = load_calibrated(a.calibrated)
        name = meta["model"]["name"]
        fmodel = create_model(name, checkpoint=meta.get("checkpoint"))
        data, n = eval_batches(fmodel, name, a.data, limit=a.eval_limit)
        print(f"model {name}  {cfg.label} (loaded from {a.calibrated})")
        print(f"  float      : {evaluate(fmodel, data, 'float', True, n)[0].row()}")
        print(f"  fake-quant : {evaluate(q, data, cfg.label, True, n)[0].row()}")
        return 0
    s = run_calibrate(a.model, _cfg(a), a.checkpoint, a.pretrained, a.data, a.calib_data, a.calib_size,
                      a.seed, None, evaluate_acc=True, eval_limit=a.eval_limit)
    _print_summary(s)
    return 0


def cmd_fidelity_eval(a) -> int:
    from repq_hw.fidelity import plot_sqnr
    from repq_hw.pipeline import run_fidelity
    from repq_hw.quant.model import QuantConfig

    cfgs = [_cfg(a)] if a.bits is None else [QuantConfig(w_bits=b, a_bits=b)
                                             for b in (_bits(x) for x in a.bits.split(","))]
    reports = run_fidelity(a.model, cfgs, a.data, a.checkpoint, a.calib_size, a.seed, eval_limit=a.eval_limit)
    for r in reports:
        print(r.table())
        worst = sorted(r.sqnr.items(), key=lambda kv: kv[1])[:3]
        print("  lowest per-layer SQNR (integer vs fake-quant): "
              + ", ".join(f"{k.removesuffix('.out')} {v:.1f} dB" for k, v in worst))
        print()
    if a.sqnr_plot:
        plot_sqnr(reports, a.sqnr_plot, f"{a.model}: per-layer SQNR, integer emulator vs fake-quant")
        print(f"SQNR plot written to {a.sqnr_plot}")
    return 0


def cmd_lower(a) -> int:
    from repq_hw.pipeline import run_lower

    g = run_lower(a.calibrated, a.out, a.data)
    print(f"lowered {g.meta.get('model')} W{g.meta['w_bits']}A{g.meta['a_bits']}: {len(g.nodes)} nodes, "
          f"{sum(c.size for c in g.constants.values())} constant integers -> {a.out}/ (graph.json, constants.npz)")
    return 0


def cmd_run(a) -> int:
    import numpy as np

    from repq_hw.emu.execute import run_graph
    from repq_hw.ir.graph import load_graph
    from repq_hw.pipeline import host_input_codes

    g = load_graph(a.ir)
    labels = None
    if a.npy:
        x = np.load(a.npy, allow_pickle=False)
        codes = x if x.dtype.kind in "iu" else host_input_codes(g, x)
    else:
        from repq_hw.data.digits import load_digits_split

        xs, ys = load_digits_split("test")
        n = a.limit or len(xs)
        codes, labels = host_input_codes(g, xs[:n].numpy()), ys[:n].numpy()
    out = run_graph(g, codes, a.backend)[g.outputs[0]][:, 0, :].astype(np.int64)
    k = min(a.topk, out.shape[1])
    top = np.argsort(-out, axis=1, kind="stable")[:, :k]
    for i in range(min(len(out), a.show)):
        print(f"image {i}: top-{k} classes {top[i].tolist()}  int32 logits {out[i, top[i]].tolist()}")
    if labels is not None:
        print(f"integer top-1 on {len(labels)} digits test images: {100 * (top[:, 0] == labels).mean():.2f}%")
    return 0


def cmd_ablation(a) -> int:
    from repq_hw.pipeline import ablation_markdown, run_ablation

    bits = tuple(_bits(b) for b in a.bits.split(","))
    for name in a.models.split(","):
        rows = run_ablation(name, bits, a.data, a.checkpoint, a.calib_size, a.seed)
        print(ablation_markdown(name, rows))
        print()
    return 0


def cmd_models(a) -> int:
    from repq_hw.models.registry import supported_models

    print("\n".join(supported_models()))
    return 0


def cmd_demo(a) -> int:
    """The main job on the bundled default model: calibrate, evaluate, lower, emulate."""
    from repq_hw.fidelity import fidelity, plot_sqnr
    from repq_hw.models.registry import DEFAULT_MODEL
    from repq_hw.pipeline import calibration_images, eval_batches, lower_calibrated, run_calibrate
    from repq_hw.quant.model import QuantConfig

    import torch

    out = Path(a.out)
    cfg = QuantConfig(w_bits=4, a_bits=4)
    print(f"== repq-hw demo: {DEFAULT_MODEL}, RepQ-ViT {cfg.label}, calibrated on 32 digits train images ==")
    s = run_calibrate(DEFAULT_MODEL, cfg, out_dir=out / "calibrated")
    _print_summary(s)
    q = s["calibrated"]
    calib = calibration_images(q, DEFAULT_MODEL, None)
    g = lower_calibrated(q, cfg, DEFAULT_MODEL, calib, out_dir=out / "ir")
    print(f"\n== lowered to the integer IR: {len(g.nodes)} nodes -> {out / 'ir'}/ (graph.json, constants.npz)")
    from repq_hw.models.registry import create_model

    fmodel = create_model(DEFAULT_MODEL)
    data, _ = eval_batches(fmodel, DEFAULT_MODEL, None)
    xs, ys = torch.cat([b[0] for b in data]), torch.cat([b[1] for b in data])
    print(f"== integer emulator (Numba kernels) on the {len(xs)} test images ==")
    rep = fidelity(fmodel, q, g, xs, ys, cfg.label)
    print(rep.table())
    plot_sqnr([rep], out / "sqnr.png", f"{DEFAULT_MODEL}: per-layer SQNR, integer emulator vs fake-quant")
    print(f"per-layer SQNR plot: {out / 'sqnr.png'}")
    print(f"replay the integer model: .venv/bin/repq-hw run --ir {out / 'ir'}")
    from repq_hw.cost import cost_summary

    print(f"\n== hardware cost (analytical estimate) -> {out / 'cost'}/")
    cost_summary({cfg.label: g}, out / "cost", model=DEFAULT_MODEL,
                 accuracy={"fp32": rep.rows[0].top1, cfg.label: rep.rows[-1].top1},
                 accuracy_source=f"top-1 on {len(xs)} digits test images: fp32 = float model, "
                                 f"{cfg.label} = integer emulator")
    from repq_hw.golden import set_name, write_demo_golden

    print("\n== golden vectors for RTL verification ==")
    write_demo_golden(g, out / "golden" / set_name(DEFAULT_MODEL, g, 0))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="repq-hw", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    c = sub.add_parser("calibrate", help="RepQ-ViT calibration; saves the calibrated model")
    _model_args(c)
    _quant_args(c)
    c.add_argument("--out", required=True, help="output folder for model.safetensors + quant.json")
    c.add_argument("--no-eval", action="store_true", help="skip the float vs fake-quant evaluation")
    c.set_defaults(func=cmd_calibrate)

    e = sub.add_parser("eval", help="float vs fake-quant accuracy")
    _model_args(e)
    _quant_args(e)
    e.add_argument("--calibrated", help="a folder written by `repq-hw calibrate` (skips calibration)")
    e.add_argument("--integer", action="store_true",
                   help="the fidelity ladder: float, fake-quant (paper and inference form), integer emulator")
    e.add_argument("--bits", help="with --integer: comma-separated WbAb settings, e.g. 8,6,4")
    e.add_argument("--sqnr-plot", help="with --integer: write the per-layer SQNR plot (PNG) here")
    e.set_defaults(func=lambda a: cmd_fidelity_eval(a) if a.integer else cmd_eval(a))

    lo = sub.add_parser("lower", help="calibrated model folder -> integer IR folder")
    lo.add_argument("--calibrated", required=True)
    lo.add_argument("--out", required=True)
    lo.add_argument("--data", help="calibration data override (default: as recorded at calibration)")
    lo.set_defaults(func=cmd_lower)

    r = sub.add_parser("run", help="run an IR on images with the integer emulator: logits and top-k")
    r.add_argument("--ir", required=True)
    r.add_argument("--npy", help="images as .npy: float [B,C,H,W] (host-quantized) or integer input codes")
    r.add_argument("--limit", type=int, help="digits: first N test images")
    r.add_argument("--backend", choices=("fast", "ref"), default="fast")
    r.add_argument("--topk", type=int, default=3)
    r.add_argument("--show", type=int, default=5, help="print the first N images' top-k")
    r.set_defaults(func=cmd_run)

    ab = sub.add_parser("ablation", help="float / RepQ-ViT / no-reparam / naive at several bit widths")
    ab.add_argument("--models", default="vit_digits,swin_digits")
    ab.add_argument("--bits", default="8,6,4")
    ab.add_argument("--data")
    ab.add_argument("--checkpoint")
    ab.add_argument("--calib-size", type=int, default=32)
    ab.add_argument("--seed", type=int, default=0)
    ab.set_defaults(func=cmd_ablation)

    m = sub.add_parser("models", help="list supported model names")
    m.set_defaults(func=cmd_models)

    # subcommands owned by other packages: each module exposes register(subparsers)
    import importlib

    for mod in PLUGIN_COMMANDS:
        try:
            module = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name is None or not mod.startswith(e.name):  # a missing dependency inside it: a real error
                raise
            continue  # the optional package itself is absent
        module.register(sub)

    d = sub.add_parser("demo", help="the main job on the bundled default model")
    d.add_argument("--out", default=str(DEMO_OUT))
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, TypeError) as e:
        print(f"repq-hw: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
