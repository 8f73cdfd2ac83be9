"""``repq-hw`` command line: a thin layer over :mod:`repq_hw.pipeline`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from repq_hw.argtypes import (
    bits,
    bits_list,
    check_writable_dir,
    check_writable_file,
    load_npy,
    names_list,
    nonneg_int,
    positive_int,
    seed,
)
from repq_hw.errors import InputError

DEMO_OUT = Path("runs/demo")
PLUGIN_COMMANDS = ("repq_hw.golden.command", "repq_hw.cost.command")
DEBUG_ENV = "REPQ_HW_DEBUG"
FAST_FLOAT_HELP = ("opt out of the reproducible float mode: torch's CPU-specific float kernels (faster on "
                   "AVX-512), results recorded as reproducible: false")
PLOT_SUFFIXES = (".png", ".svg", ".pdf")


def add_fast_float(p: argparse.ArgumentParser) -> None:
    """``--fast-float`` after a subcommand (its own dest: a subparser's default would overwrite the global
    ``repq-hw --fast-float``)."""
    p.add_argument("--fast-float", dest="fast_float_sub", action="store_true", help=FAST_FLOAT_HELP)


def _model_args(p: argparse.ArgumentParser, default: str | None = "vit_digits") -> None:
    p.add_argument("--model", default=default, help="model name (see `repq-hw models`)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", help="local weights: .safetensors, or .pth/.bin (weights_only)")
    src.add_argument("--pretrained", action="store_true", help="timm hub weights (needs a network)")
    p.add_argument("--data", help="'digits' (default for the bundled *_digits models), 'mnist' (default for "
                                  "vit_mnist: its 3,000-image MNIST test split), an ImageFolder directory, or, "
                                  "for evaluating the bundled models only, 'mnist-digits' (5,000 MNIST digits "
                                  "in the digits format), 'digits+mnist' (360 + 5,000) or 'digits-all' (all 1,797 digits)")


def _quant_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--w-bits", type=bits, help="weight bits, 2..8 (default 4)")
    p.add_argument("--a-bits", type=bits, help="activation bits, 2..8 (default 4)")
    p.add_argument("--method", choices=("repq", "naive"), default="repq")
    p.add_argument("--no-reparam", action="store_true", help="keep post-LN quantizers channel-wise")
    p.add_argument("--zero-point", choices=("round", "mean"), default=None,
                   help="z~ of the reparameterized quantizer: round (default; integer pipeline) or mean "
                        "(the reference mode)")
    p.add_argument("--reference", action="store_true",
                   help="the reference mode: reproduce the RepQ-ViT code bit for bit (= --zero-point mean; "
                        "fake-quant only, cannot be lowered to integers)")
    p.add_argument("--calib-data", help="ImageFolder for calibration (default: --data)")
    p.add_argument("--calib-size", type=positive_int, default=32, help="calibration images (default 32)")
    p.add_argument("--seed", type=seed, default=0, help="calibration seed (default 0)")
    p.add_argument("--eval-limit", type=positive_int, help="evaluate on the first N images only")
    add_fast_float(p)


def add_cluster_args(p: argparse.ArgumentParser) -> None:
    """Where the work runs (repq_hw.execution): a local Dask cluster by default."""
    g = p.add_argument_group("execution (default: a local Dask cluster sized to this machine)")
    g.add_argument("--scheduler", metavar="ADDR", help="connect to a running Dask scheduler, e.g. tcp://HOST:8786")
    g.add_argument("--workers", type=positive_int, help="worker processes of the local cluster (default: one per core)")
    g.add_argument("--no-cluster", action="store_true", help="run everything in this process (no Dask)")
    g.add_argument("--shard-size", type=positive_int, help="images per task (default 64)")


def _runner(a):
    from repq_hw.execution import runner_from_args

    return runner_from_args(a)


def _cfg(a, w_bits: int | None = None, a_bits: int | None = None):
    from repq_hw.quant.model import QuantConfig

    zero_point = a.zero_point or "round"
    if getattr(a, "reference", False):
        clash = [f for f, bad in (("--method naive", a.method != "repq"), ("--no-reparam", a.no_reparam),
                                  ("--zero-point round", a.zero_point == "round")) if bad]
        if clash:
            raise InputError(f"--reference reproduces RepQ-ViT (method repq, reparameterized, z~ = mean(z)); "
                             f"it cannot be combined with {', '.join(clash)}")
        zero_point = "mean"
    return QuantConfig(w_bits=w_bits or a.w_bits or 4, a_bits=a_bits or a.a_bits or 4, method=a.method,
                       reparam=not a.no_reparam, zero_point=zero_point)


def check_model(name: str, what: str = "--model") -> None:
    from repq_hw.models.registry import supported_models

    if name not in supported_models():
        raise InputError(f"{what}: unknown model {name!r}; supported models: {', '.join(supported_models())}")


def available_images(model_name: str, data: str | None, split: str) -> tuple[int, str] | None:
    """(number of images, description) that ``data`` (or the model's default data) offers for ``split``
    ("train" is what calibration draws from for the digits; an ImageFolder serves both); None when the
    model needs --data and none was given (the pipeline says so)."""
    from repq_hw.pipeline import DIGITS, DIGITS_ALL, DIGITS_EVAL_ONLY, MNIST, MNIST_DIGITS, default_data

    data = data or default_data(model_name)
    if data is None:
        return None
    if data in DIGITS_EVAL_ONLY:  # evaluation-only sets: calibration draws from the digits train split
        if split == "train":
            data = DIGITS
        else:
            from repq_hw.data.digits import split_indices
            from repq_hw.data.mnist import MNIST_NUM_IMAGES

            n = (len(split_indices("test")) + len(split_indices("train")) if data == DIGITS_ALL
                 else MNIST_NUM_IMAGES + (0 if data == MNIST_DIGITS else len(split_indices("test"))))
            return n, f"data set {data!r}"
    if data == DIGITS:
        from repq_hw.data.digits import load_digits_split

        return len(load_digits_split(split)[0]), f"the digits {split} split"
    if data == MNIST:
        from repq_hw.data.mnist import mnist_split_indices

        return len(mnist_split_indices(split)), f"the MNIST {split} split"
    from repq_hw.data.imagefolder import list_image_folder

    return len(list_image_folder(data)[0]), f"image folder {data}"


def check_counts(model_name: str, data: str | None, calib_data: str | None = None,
                 calib_size: int | None = None, eval_limit: int | None = None) -> None:
    """Before any work: --calib-size and --eval-limit must not exceed the images there are (no silent
    truncation: the records would name a count that was not used)."""
    if calib_size is not None:
        have = available_images(model_name, calib_data or data, "train")
        if have and calib_size > have[0]:
            raise InputError(f"--calib-size {calib_size}: {have[1]} has only {have[0]} images")
    if eval_limit is not None:
        have = available_images(model_name, data, "test")
        if have and eval_limit > have[0]:
            raise InputError(f"--eval-limit {eval_limit}: {have[1]} has only {have[0]} images")


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

    check_writable_dir(a.out, "--out")
    if a.no_eval and a.eval_limit is not None:
        raise InputError("--eval-limit has no effect with --no-eval")
    check_model(a.model)
    check_counts(a.model, a.data, a.calib_data, a.calib_size, None if a.no_eval else a.eval_limit)
    s = run_calibrate(a.model, _cfg(a), a.checkpoint, a.pretrained, a.data, a.calib_data, a.calib_size,
                      a.seed, a.out, evaluate_acc=not a.no_eval, eval_limit=a.eval_limit)
    _print_summary(s)
    return 0


def cmd_eval(a) -> int:
    from repq_hw.evaluate import evaluate
    from repq_hw.models.registry import create_model
    from repq_hw.pipeline import eval_batches, run_calibrate

    if a.bits is not None or a.sqnr_plot is not None:
        raise InputError(f"{'--bits' if a.bits is not None else '--sqnr-plot'} needs --integer "
                         "(the plain evaluation takes --w-bits / --a-bits)")
    if a.calibrated:
        from repq_hw.quant.model import load_calibrated

        given = [o for o, v in (("--checkpoint", a.checkpoint), ("--pretrained", a.pretrained),
                                ("--calib-data", a.calib_data), ("--w-bits", a.w_bits), ("--a-bits", a.a_bits))
                 if v]
        if given:
            raise InputError(f"--calibrated: {', '.join(given)} would be ignored (the folder fixes the model, "
                             "its weights and its quantization)")
        q, cfg, meta = load_calibrated(a.calibrated)
        name = meta["model"]["name"]
        check_counts(name, a.data, eval_limit=a.eval_limit)
        fmodel = create_model(name, checkpoint=meta.get("checkpoint"), pretrained=bool(meta.get("pretrained", False)))
        with _runner(a) as r:
            data, n = eval_batches(fmodel, name, a.data, limit=a.eval_limit, runner=r)
            print(f"model {name}  {cfg.label} (loaded from {a.calibrated})")
            print(f"  float      : {evaluate(fmodel, data, 'float', True, n, runner=r)[0].row()}")
            print(f"  fake-quant : {evaluate(q, data, cfg.label, True, n, runner=r)[0].row()}")
        return 0
    check_model(a.model)
    check_counts(a.model, a.data, a.calib_data, a.calib_size, a.eval_limit)
    cfg = _cfg(a)
    with _runner(a) as r:
        s = run_calibrate(a.model, cfg, a.checkpoint, a.pretrained, a.data, a.calib_data, a.calib_size,
                          a.seed, None, evaluate_acc=True, eval_limit=a.eval_limit, runner=r)
    _print_summary(s)
    return 0


def cmd_fidelity_eval(a) -> int:
    from repq_hw.fidelity import plot_sqnr
    from repq_hw.pipeline import run_fidelity

    ignored = [o for o, v in (("--calibrated", a.calibrated), ("--pretrained", a.pretrained),
                              ("--calib-data", a.calib_data)) if v]
    if ignored:
        raise InputError(f"--integer does not take {', '.join(ignored)} (it calibrates --model on --data, "
                         "with --checkpoint weights if given)")
    if a.bits is not None and (a.w_bits or a.a_bits):
        raise InputError("give --bits (W = A bits, several settings) or --w-bits / --a-bits, not both")
    if a.sqnr_plot:
        check_writable_file(a.sqnr_plot, "--sqnr-plot", PLOT_SUFFIXES)
    check_model(a.model)
    check_counts(a.model, a.data, None, a.calib_size, a.eval_limit)
    cfgs = [_cfg(a)] if a.bits is None else [_cfg(a, b, b) for b in a.bits]
    with _runner(a) as r:
        reports = run_fidelity(a.model, cfgs, a.data, a.checkpoint, a.calib_size, a.seed,
                               eval_limit=a.eval_limit, runner=r)
    for r in reports:
        print(r.table())
        print("  " + r.targets().line())
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

    check_writable_dir(a.out, "--out")
    g = run_lower(a.calibrated, a.out, a.data)
    print(f"lowered {g.meta.get('model')} W{g.meta['w_bits']}A{g.meta['a_bits']}: {len(g.nodes)} nodes, "
          f"{sum(c.size for c in g.constants.values())} constant integers -> {a.out}/ (graph.json, constants.npz)")
    return 0


def npy_input_codes(path: str, g, what: str = "--npy"):
    """The graph input codes from a .npy file: float images [B, C, H, W] (host-quantized) or integer codes,
    checked against the IR's input (shape, finite values, code range) with errors naming ``what``."""
    import numpy as np

    x = load_npy(path, what)
    name = g.inputs[0]
    t = g.tensors[name].type
    if x.dtype.kind not in "iuf":
        raise InputError(f"{what} {path!r}: dtype {x.dtype}; expected float images or integer input codes")
    if x.ndim != len(t.shape) + 1 or tuple(x.shape[1:]) != t.shape:
        raise InputError(f"{what} {path!r}: shape {list(x.shape)}, the IR's input {name!r} takes "
                         f"[B, {', '.join(map(str, t.shape))}]")
    if x.shape[0] == 0:
        raise InputError(f"{what} {path!r}: holds no images (batch size 0)")
    if x.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(x)))
        if bad:
            raise InputError(f"{what} {path!r}: {bad} NaN or infinite value(s)")
        from repq_hw.pipeline import host_input_codes  # host preprocessing (imports torch)

        return host_input_codes(g, x)
    lo, hi = int(x.min()), int(x.max())
    if lo < t.min or hi > t.max:
        raise InputError(f"{what} {path!r}: integer codes in [{lo}, {hi}], outside the input's {t.name} "
                         f"range [{t.min}, {t.max}]")
    return x.astype(t.storage)


def cmd_run(a) -> int:
    import numpy as np

    from repq_hw.emu.execute import run_graph
    from repq_hw.ir.graph import load_graph

    g = load_graph(a.ir)  # before torch is imported (integer --npy codes never need it)
    labels = None
    t = g.tensors[g.inputs[0]].type
    if a.npy:
        codes = npy_input_codes(a.npy, g)
        if a.limit is not None:
            if a.limit > len(codes):
                raise InputError(f"--limit {a.limit}: --npy {a.npy!r} holds only {len(codes)} images")
            codes = codes[:a.limit]
    else:
        from repq_hw.data.digits import load_digits_split
        from repq_hw.pipeline import MNIST, default_data, host_input_codes

        # the test split of the graph's model's own data set (vit_mnist: MNIST), else the digits
        if default_data(str(g.meta.get("model", ""))) == MNIST:
            from repq_hw.data.mnist import load_mnist_split

            (xs, ys), set_name = load_mnist_split("test"), "MNIST"
        else:
            (xs, ys), set_name = load_digits_split("test"), "digits"
        if a.limit is not None and a.limit > len(xs):
            raise InputError(f"--limit {a.limit}: the {set_name} test split has only {len(xs)} images")
        if tuple(xs.shape[1:]) != t.shape:
            raise InputError(f"--ir {a.ir!r}: its input takes [B, {', '.join(map(str, t.shape))}], the {set_name} "
                             f"test images are {list(xs.shape[1:])}; give the images with --npy")
        n = a.limit or len(xs)
        codes, labels = host_input_codes(g, xs[:n].numpy()), ys[:n].numpy()
    out = run_graph(g, codes, a.backend)[g.outputs[0]][:, 0, :].astype(np.int64)
    k = min(a.topk, out.shape[1])
    top = np.argsort(-out, axis=1, kind="stable")[:, :k]
    if k < a.topk:
        print(f"--topk {a.topk}: the model has {out.shape[1]} classes; showing top-{k}")
    for i in range(min(len(out), a.show)):
        print(f"image {i}: top-{k} classes {top[i].tolist()}  int32 logits {out[i, top[i]].tolist()}")
    if labels is not None:
        print(f"integer top-1 on {len(labels)} {set_name} test images: {100 * (top[:, 0] == labels).mean():.2f}%")
    else:
        print(f"ran {len(out)} image(s) from {a.npy}")
    return 0


def cmd_ablation(a) -> int:
    from repq_hw.pipeline import ablation_markdown, run_ablation

    for name in a.models:
        check_model(name, "--models")
    if a.checkpoint and len(a.models) > 1:
        raise InputError(f"--checkpoint is one model's weights; --models names {len(a.models)} models")
    for name in a.models:  # every model's data before the first (long) run
        check_counts(name, a.data, None, a.calib_size)
    with _runner(a) as r:
        for name in a.models:
            rows = run_ablation(name, a.bits, a.data, a.checkpoint, a.calib_size, a.seed, runner=r)
            print(ablation_markdown(name, rows))
            print()
    return 0


def cmd_sweep(a) -> int:
    from repq_hw.sweep import load_spec, run_sweep, write_results

    spec = load_spec(a.config)
    check_writable_dir(a.out, "--out")
    for name in spec.models:  # every model's data before the first (long) run
        check_counts(name, spec.data, None, spec.calib_size, spec.eval_limit)
    with _runner(a) as r:
        rows = run_sweep(spec, r, progress=not a.no_progress)
    paths = write_results(rows, a.out)
    print(f"{len(rows)} configuration(s): {paths['csv']}, {paths['markdown']}, {paths['plot']}")
    return 0


def cmd_models(a) -> int:
    from repq_hw.models.registry import supported_models

    print("\n".join(supported_models()))
    return 0


def cmd_demo(a) -> int:
    """The main job on the bundled default model: calibrate, evaluate, lower, emulate."""
    import torch

    from repq_hw.fidelity import fidelity, plot_sqnr
    from repq_hw.models.registry import DEFAULT_MODEL
    from repq_hw.pipeline import calibration_images, eval_batches, lower_calibrated, run_calibrate
    from repq_hw.quant.model import QuantConfig

    out = check_writable_dir(a.out, "--out")
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
    p.add_argument("--debug", action="store_true",
                   help=f"show the traceback of an error instead of a one-line message (or {DEBUG_ENV}=1)")
    p.add_argument("--fast-float", action="store_true", help=FAST_FLOAT_HELP + " (any subcommand, e.g. golden)")
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
    e.add_argument("--bits", type=bits_list, help="with --integer: comma-separated WbAb settings, e.g. 8,6,4")
    e.add_argument("--sqnr-plot", help="with --integer: write the per-layer SQNR plot here (.png, .svg or .pdf)")
    add_cluster_args(e)
    e.set_defaults(func=lambda a: cmd_fidelity_eval(a) if a.integer else cmd_eval(a))

    lo = sub.add_parser("lower", help="calibrated model folder -> integer IR folder")
    lo.add_argument("--calibrated", required=True)
    lo.add_argument("--out", required=True)
    lo.add_argument("--data", help="calibration data override (default: as recorded at calibration)")
    add_fast_float(lo)
    lo.set_defaults(func=cmd_lower)

    r = sub.add_parser("run", help="run an IR on images with the integer emulator: logits and top-k")
    r.add_argument("--ir", required=True)
    r.add_argument("--npy", help="images as .npy: float [B,C,H,W] (host-quantized) or integer input codes")
    r.add_argument("--limit", type=positive_int, help="the first N images (digits test split or --npy)")
    r.add_argument("--backend", choices=("fast", "ref"), default="fast")
    r.add_argument("--topk", type=positive_int, default=3)
    r.add_argument("--show", type=nonneg_int, default=5, help="print the first N images' top-k")
    r.set_defaults(func=cmd_run)

    ab = sub.add_parser("ablation", help="float / RepQ-ViT / no-reparam / naive at several bit widths")
    ab.add_argument("--models", type=names_list, default=("vit_digits", "swin_digits"),
                    help="comma-separated model names (default vit_digits,swin_digits)")
    ab.add_argument("--bits", type=bits_list, default=(8, 6, 4), help="comma-separated bit widths (default 8,6,4)")
    ab.add_argument("--data")
    ab.add_argument("--checkpoint", help="weights (only with a single --models name)")
    ab.add_argument("--calib-size", type=positive_int, default=32)
    ab.add_argument("--seed", type=seed, default=0)
    add_cluster_args(ab)
    add_fast_float(ab)
    ab.set_defaults(func=cmd_ablation)

    sw = sub.add_parser("sweep", help="a grid of models x bits x methods from a TOML/YAML file: one results "
                                      "table")
    sw.add_argument("config", help="the sweep file (.toml or .yaml; keys: models, bits, methods, integer, "
                                   "calib_size, seed, data, eval_limit, checkpoints)")
    sw.add_argument("--out", required=True, help="folder for results.csv, results.md, accuracy_vs_bits.png")
    sw.add_argument("--no-progress", action="store_true")
    add_cluster_args(sw)
    add_fast_float(sw)
    sw.set_defaults(func=cmd_sweep)

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
    add_fast_float(d)
    d.set_defaults(func=cmd_demo)
    return p


# Expected, user-facing failures: bad input (InputError and the plain ValueErrors of the readers, JSON and
# text decoding included) and files that cannot be read or written. Anything else is a bug in repq-hw.
USER_ERRORS = (ValueError, OSError, EOFError)


def _one_line(e: BaseException) -> str:
    """The exception's message on one line (multi-line messages, e.g. checkpoint mismatches, joined)."""
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        msg = f"{e.filename}: {e.strerror}"
    else:
        msg = str(e) or type(e).__name__
    lines = [ln.strip() for ln in msg.splitlines() if ln.strip()]
    return "; ".join(lines) if lines else type(e).__name__


def _input_files(a) -> str:
    """The input paths given on the command line (to name them when an error does not)."""
    opts = ("calibrated", "ir", "npy", "checkpoint", "tech", "data", "calib_data", "inputs", "dir")
    got = [(str(getattr(a, o)) if o == "dir" else f"--{o.replace('_', '-')} {getattr(a, o)}") for o in opts
           if isinstance(getattr(a, o, None), (str, list)) and getattr(a, o)]
    return ", ".join(got)


def _message(e: BaseException, a) -> str:
    import json

    msg = _one_line(e)
    if isinstance(e, (json.JSONDecodeError, UnicodeDecodeError, EOFError)) and a is not None:
        kind = "invalid JSON" if isinstance(e, json.JSONDecodeError) else "unreadable input"
        files = _input_files(a)
        msg = f"{kind} ({msg})" + (f" in an input of {files}" if files else "")
    return msg


def _debug_requested(argv: list[str], args) -> bool:
    if os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    if args is not None:
        return bool(args.debug)
    return "--debug" in argv  # the parser itself failed: honour a --debug anywhere


def main(argv: list[str] | None = None) -> int:
    """Run one command. Bad input: one line ``repq-hw: error: ...`` and exit 2 (argparse does the same for
    bad arguments); an internal error: one line saying so, exit 1; Ctrl-C: exit 130. ``--debug`` (or
    REPQ_HW_DEBUG=1) re-raises instead, with the traceback."""
    whole_process = argv is None  # the console script / ``python -m``: this process ends when main returns
    argv = sys.argv[1:] if argv is None else list(argv)
    args = None
    try:
        args = build_parser().parse_args(argv)
        if args.fast_float or getattr(args, "fast_float_sub", False):
            from repq_hw.float_env import use_fast_float

            use_fast_float()  # before anything imports torch (parsing does not)
        return args.func(args)
    except KeyboardInterrupt:
        if _debug_requested(argv, args):
            raise
        print("repq-hw: interrupted", file=sys.stderr)
        if whole_process:  # the exit is decided and everything started was shut down on the way out (the
            import signal  # runner's close): end here, so that no late signal (the local cluster's
            # shutdown sent a stray SIGINT under load: exit -2) and no exit handler can change the status
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_IGN)
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):
                    pass
            os._exit(130)
        return 130
    except BrokenPipeError:  # the output was piped into e.g. `head`, which has exited: stop quietly
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes stdout at exit
        except (OSError, ValueError):
            pass
        return 141
    except MemoryError:
        if _debug_requested(argv, args):
            raise
        print("repq-hw: error: out of memory (inputs too large for this machine?); rerun with --debug for "
              "the traceback", file=sys.stderr)
        return 1
    except USER_ERRORS as e:
        if _debug_requested(argv, args):
            raise
        print(f"repq-hw: error: {_message(e, args)}", file=sys.stderr)
        return 2
    except Exception as e:
        if _debug_requested(argv, args):
            raise
        print(f"repq-hw: internal error (a bug in repq-hw, not in your input): {type(e).__name__}: "
              f"{_one_line(e)}; rerun with --debug (repq-hw --debug ...) for the traceback", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
