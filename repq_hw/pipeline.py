"""Library functions behind the CLI: load a model and its data, calibrate, evaluate, ablate.

The data source is either ``"digits"`` (the bundled scikit-learn digits split, for the ``*_digits`` and
``test_*`` models) or an ImageFolder directory laid out like ImageNet val (timm models). Two evaluation-only
sets exist for the digits models: ``"mnist-digits"`` (5,000 MNIST digits converted to the digits format,
``repq_hw.data.mnist``), ``"digits+mnist"`` (the 360 digits test images, then those 5,000) and ``"digits-all"``
(all 1,797 digits: implementation agreement needs many images, not held-out ones); a model
evaluated on them is calibrated on the digits train split, as with ``"digits"``. ``"mnist"`` is the fixed
2,000 / 3,000 train / test split of the 5,000 real MNIST digits at full resolution (``repq_hw.data.mnist``),
the default data of the bundled ``vit_mnist``: calibrated on its train split, evaluated on its test split.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from repq_hw import float_env
from repq_hw.errors import InputError
from repq_hw.evaluate import Accuracy, batches, evaluate
from repq_hw.models.registry import create_model, digits_model_names, model_config
from repq_hw.quant.model import QuantConfig, build_calibrated, save_calibrated

DIGITS = "digits"
MNIST_DIGITS = "mnist-digits"  # evaluation only: 5,000 MNIST digits in the digits format
DIGITS_MNIST = "digits+mnist"  # evaluation only: digits test split (360) followed by MNIST_DIGITS (5,000)
DIGITS_ALL = "digits-all"  # evaluation only: all 1,797 digits, test split (360) then train split (1,437)
DIGITS_EVAL_ONLY = (MNIST_DIGITS, DIGITS_MNIST, DIGITS_ALL)
MNIST = "mnist"  # the 5,000 MNIST digits at 32x32 (padded), split 2,000 train / 3,000 test (vit_mnist's data)


def default_data(model_name: str) -> str | None:
    """The bundled models' own data set (``digits_configs.MODEL_DATA``); None for the others."""
    if model_name not in digits_model_names():
        return None
    from repq_hw.models.digits_configs import model_data

    return MNIST if model_data(model_name) == "mnist" else DIGITS


def _check_data(model_name: str, data: str | None) -> str:
    """The data source images are drawn from for calibration (the evaluation-only sets map to ``DIGITS``)."""
    if data is None:
        data = default_data(model_name)
    if data is None:
        raise ValueError(f"model {model_name!r} needs --data DIR (an ImageFolder laid out like ImageNet val)")
    if data in DIGITS_EVAL_ONLY:
        return DIGITS
    return data


def calibration_images(model: torch.nn.Module, model_name: str, data: str | None, n: int = 32,
                       seed: int = 0) -> torch.Tensor:
    """The calibration batch: n images, seeded, from the digits train split or an ImageFolder.

    Exactly n images or an InputError: a source with fewer than n images is refused (naming both
    numbers), never silently used in part, so that the recorded calibration size is the one used."""
    data = _check_data(model_name, data)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise InputError(f"calibration size must be an integer >= 1, got {n!r}")
    if data in (DIGITS, MNIST):  # the bundled real-data sets: (calibration batch, split) of each
        if data == DIGITS:
            from repq_hw.data.digits import calibration_batch as batch
            from repq_hw.data.digits import split_indices as split
        else:
            from repq_hw.data.mnist import mnist_calibration_batch as batch
            from repq_hw.data.mnist import mnist_split_indices as split
        available = len(split("train"))
        if n > available:
            label = "digits" if data == DIGITS else "MNIST"
            raise InputError(f"calibration size {n} requested, but the {label} train split has only {available} "
                             f"images (use --calib-size {available} or fewer)")
        return batch(n, seed=seed)
    from repq_hw.data.imagefolder import timm_eval_loader

    ds = timm_eval_loader(data, model).dataset
    if n > len(ds):
        raise InputError(f"calibration size {n} requested, but the image folder {data} has only {len(ds)} "
                         f"images (use --calib-size {len(ds)} or fewer, or a larger --calib-data folder)")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(ds), generator=g)[:n].tolist()
    return torch.stack([ds[i][0] for i in idx])


def eval_batches(model: torch.nn.Module, model_name: str, data: str | None, batch_size: int = 100,
                 limit: int | None = None, runner=None):
    """(iterable of (images, labels), number of batches) for evaluation. With a distributed ``runner``
    an ImageFolder becomes ``FolderBatch`` items that the workers decode (the folder must be readable
    on every worker: checked here, naming the worker)."""
    data = data if data in DIGITS_EVAL_ONLY else _check_data(model_name, data)
    if data in (DIGITS, MNIST, *DIGITS_EVAL_ONLY):
        from repq_hw.data import digits, mnist

        x, y = {DIGITS: lambda: digits.load_digits_split("test"), MNIST_DIGITS: mnist.load_mnist_as_digits,
                DIGITS_MNIST: mnist.load_digits_and_mnist, MNIST: lambda: mnist.load_mnist_split("test"),
                DIGITS_ALL: digits.load_all_digits}[data]()
        if limit is not None:
            x, y = x[:limit], y[:limit]
        return list(batches(x, y, batch_size)), (len(x) + batch_size - 1) // batch_size
    if runner is not None and runner.distributed:
        from repq_hw.data.imagefolder import eval_transform_config, list_image_folder
        from repq_hw.execution import FolderBatch

        runner.check_paths([("--data", data)])
        samples = list_image_folder(data)[0][:limit]
        tcfg = eval_transform_config(model)
        fb = [FolderBatch(tuple(str(p) for p, _ in samples[i:i + batch_size]),
                          tuple(int(y) for _, y in samples[i:i + batch_size]), tcfg)
              for i in range(0, len(samples), batch_size)]
        return fb, len(fb)
    from repq_hw.data.imagefolder import timm_eval_loader

    loader = timm_eval_loader(data, model, batch_size=batch_size, limit=limit)
    return loader, len(loader)


@dataclass
class CalibrationResult:
    model: torch.nn.Module
    cfg: QuantConfig
    seconds: float
    n_images: int = 0  # calibration images actually used
    float_env: dict | None = None  # repq_hw.float_env.check("calibrate"): the float mode of the calibration


def calibrate_model(float_model: torch.nn.Module, images: torch.Tensor, cfg: QuantConfig,
                    progress: bool = True) -> CalibrationResult:
    """Calibrate a copy of float_model (the float model is left untouched)."""
    env = float_env.check("calibrate")
    t0 = time.perf_counter()
    q = build_calibrated(copy.deepcopy(float_model), images, cfg, progress=progress)
    return CalibrationResult(q, cfg, time.perf_counter() - t0, int(images.shape[0]), env)


def _accuracy_record(acc: Accuracy) -> dict:
    """An Accuracy as quant.json holds it: non-finite values (a model computing NaN) become null."""
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in acc.__dict__.items()}


def run_calibrate(model_name: str, cfg: QuantConfig, checkpoint: str | None = None, pretrained: bool = False,
                  data: str | None = None, calib_data: str | None = None, calib_size: int = 32,
                  seed: int = 0, out_dir: str | Path | None = None, evaluate_acc: bool = True,
                  eval_limit: int | None = None, progress: bool = True, runner=None) -> dict:
    """Calibrate a model, optionally evaluate float vs fake-quant, optionally save. Returns a summary.
    ``runner``: a started ``repq_hw.execution.Runner`` for the evaluation (None: here)."""
    torch.manual_seed(seed)
    model = create_model(model_name, checkpoint=checkpoint, pretrained=pretrained)
    calib = calibration_images(model, model_name, calib_data or data, calib_size, seed)
    res = calibrate_model(model, calib, cfg, progress)
    summary = {"model": model_name, "config": cfg, "calib_seconds": res.seconds, "calibrated": res.model}
    if evaluate_acc:
        batches_, n = eval_batches(model, model_name, data, limit=eval_limit, runner=runner)
        summary["float"], _ = evaluate(model, batches_, "float", progress, n, runner=runner)
        summary["quant"], _ = evaluate(res.model, batches_, cfg.label, progress, n, runner=runner)
    if out_dir is not None:
        # what was used, not what was asked for: the number of images in the batch, the weights' source
        # (and the source the images came from: an evaluation-only set calibrates on the digits train split)
        source = _check_data(model_name, calib_data or data)
        source = source if source in (DIGITS, MNIST) else str(Path(source).resolve())  # `lower` reopens it
        extra = {"calibration": {"data": source, "n": res.n_images,
                                 "seed": seed, "seconds": round(res.seconds, 3)},
                 # absolute: `eval --calibrated` reopens it, maybe from another working directory
                 "checkpoint": str(Path(checkpoint).resolve()) if checkpoint else None,
                 "pretrained": bool(pretrained)}
        if evaluate_acc:
            extra["accuracy"] = {k: _accuracy_record(summary[k]) for k in ("float", "quant")}
        save_calibrated(res.model, cfg, model_config(model_name), out_dir, extra, float_env=res.float_env)
        summary["out_dir"] = Path(out_dir)
    return summary


ABLATION_ROWS = (
    ("RepQ-ViT", dict(method="repq", reparam=True)),
    ("RepQ-ViT, no reparam (channel-wise post-LN)", dict(method="repq", reparam=False)),
    ("RepQ-ViT, reference z~ = mean(z)", dict(method="repq", reparam=True, zero_point="mean")),
    ("naive (per-tensor min-max, uniform post-Softmax)", dict(method="naive")),
)


def run_ablation(model_name: str, bits: tuple[int, ...] = (8, 6, 4), data: str | None = None,
                 checkpoint: str | None = None, calib_size: int = 32, seed: int = 0,
                 progress: bool = True, runner=None) -> list[tuple[str, str, Accuracy]]:
    """The paper's ablation on one model: float, then every row of ABLATION_ROWS at WbAb. Calibration
    runs here, once per row; ``runner`` (``repq_hw.execution.Runner``) evaluates on its workers."""
    model = create_model(model_name, checkpoint=checkpoint)
    calib = calibration_images(model, model_name, data, calib_size, seed)
    data_batches, n = eval_batches(model, model_name, data, runner=runner)
    rows = [("float", "fp32", evaluate(model, data_batches, "float", progress, n, runner=runner)[0])]
    for b in bits:
        for label, kw in ABLATION_ROWS:
            cfg = QuantConfig(w_bits=b, a_bits=b, **kw)
            q = calibrate_model(model, calib, cfg, progress).model
            rows.append((label, cfg.label,
                         evaluate(q, data_batches, f"{label} {cfg.label}", progress, n, runner=runner)[0]))
    return rows


def ablation_markdown(model_name: str, rows: list[tuple[str, str, Accuracy]]) -> str:
    split = "MNIST test split" if default_data(model_name) == MNIST else "digits test split"
    lines = [f"**{model_name}** ({split}, n={rows[0][2].n})", "",
             "| method | bits | top-1 % | top-5 % | loss |", "|---|---|---:|---:|---:|"]
    for label, bits, acc in rows:
        lines.append(f"| {label} | {bits} | {acc.top1:.2f} | {acc.top5:.2f} | {acc.loss:.4f} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# Integer side: lower, run, fidelity.


def lower_calibrated(qmodel: torch.nn.Module, cfg: QuantConfig, model_name: str, calib: torch.Tensor,
                     lcfg=None, out_dir: str | Path | None = None, calib_float_env: dict | None = None):
    """Lower a calibrated ViT/DeiT/Swin to the integer IR; optionally save it (graph.json + constants.npz).

    The lowering runs float forwards too (residual and GELU-input ranges), so the IR is reproducible only
    if both this process and the calibration ran in the reproducible float mode: ``calib_float_env`` is
    the calibration's record (quant.json's ``float_env``) when it ran elsewhere; None means this process.
    ``graph.meta["float_env"]`` keeps only the CPU-independent part: ``reproducible`` and ``mode``."""
    from repq_hw.ir.graph import save_graph
    from repq_hw.lower import lower_model
    from repq_hw.lower.vit import LowerConfig

    now = float_env.check("lower")
    reproducible = bool(now["reproducible"])
    if calib_float_env is not None:
        reproducible = reproducible and calib_float_env.get("reproducible") is True
    env = {"reproducible": reproducible, "mode": now["mode"]}
    g = lower_model(qmodel, cfg, calib, lcfg or LowerConfig(), meta={"model": model_name, "float_env": env})
    if out_dir is not None:
        save_graph(g, out_dir)
    return g


def run_lower(calibrated_dir: str | Path, out_dir: str | Path, data: str | None = None, calib_size: int = 32,
              seed: int = 0):
    """``repq-hw lower``: calibrated model folder -> IR folder. The calibration batch is rebuilt from the
    calibration record (same data, size and seed) to measure the residual and GELU-input ranges."""
    from repq_hw.quant.model import load_calibrated

    q, cfg, meta = load_calibrated(calibrated_dir)
    name = meta["model"]["name"]
    cal = meta.get("calibration", {})
    data = data or cal.get("data") or default_data(name)
    calib = calibration_images(q, name, data, cal.get("n", calib_size), cal.get("seed", seed))
    return lower_calibrated(q, cfg, name, calib, out_dir=out_dir,
                            calib_float_env=meta.get("float_env") or {"reproducible": False})


def run_fidelity(model_name: str, configs: list[QuantConfig], data: str | None = None,
                 checkpoint: str | None = None, calib_size: int = 32, seed: int = 0, backend: str = "fast",
                 eval_limit: int | None = None, progress: bool = True, runner=None):
    """The fidelity ladder for each QuantConfig; returns FidelityReports. Calibration and lowering run
    here, once per configuration; with ``runner`` (``repq_hw.execution.Runner``) the models and the
    integer emulator run on its workers (bit-identical), which decode an ImageFolder themselves."""
    from repq_hw.fidelity import fidelity

    model = create_model(model_name, checkpoint=checkpoint)
    calib = calibration_images(model, model_name, data, calib_size, seed)
    folder = data not in (None, DIGITS, MNIST, *DIGITS_EVAL_ONLY) and runner is not None and runner.distributed
    if folder:  # FolderBatch items of fidelity's float batch size, decoded on the workers
        xs, _ = eval_batches(model, model_name, data, batch_size=64, limit=eval_limit, runner=runner)
        ys = None
    else:
        data_batches, _ = eval_batches(model, model_name, data, limit=eval_limit)
        xs = torch.cat([b[0] for b in data_batches])
        ys = torch.cat([b[1] for b in data_batches])
    reports = []
    for cfg in configs:
        q = calibrate_model(model, calib, cfg, progress).model
        g = lower_calibrated(q, cfg, model_name, calib)
        reports.append(fidelity(model, q, g, xs, ys, cfg.label, backend=backend, runner=runner))
        if runner is not None:
            runner.release(g)
    return reports


def host_input_codes(g, images: np.ndarray) -> np.ndarray:
    """Host-side preprocessing: float images -> the graph input's codes, as the fake-quant input quantizer
    computes them (float32 division, round half to even, zero point, clamp).

    Raises InputError for images that are not a real-valued array, that hold a NaN or an infinity (naming
    the input tensor and the first bad index), or for a graph input without a finite positive scale.
    Finite values beyond the input range clamp, as the fake-quant quantizer does."""
    from repq_hw.errors import InputError

    name = g.inputs[0]
    info = g.tensors[name]
    t = info.type
    scale = info.scale
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not np.isfinite(scale) or scale <= 0:
        raise InputError(f"graph input {name!r}: quantizing float images needs a finite positive scalar "
                         f"scale, the graph has {scale!r}")
    try:
        raw = np.asarray(images)
    except (TypeError, ValueError) as e:
        raise InputError(f"images for input {name!r}: not an array ({e})") from None
    if raw.dtype.kind not in "fiu":
        raise InputError(f"images for input {name!r}: expected a real-valued (float) array, got dtype {raw.dtype}")
    bad = ~np.isfinite(raw)
    if bad.any():
        i = tuple(int(v) for v in np.unravel_index(int(np.flatnonzero(bad)[0]), raw.shape))
        raise InputError(f"images for input {name!r}: non-finite value {raw[i]} at index {list(i)} "
                         f"({int(bad.sum())} non-finite in all)")
    with np.errstate(over="ignore"):  # a finite value beyond float32 or the code range clamps
        x = raw.astype(np.float32) / np.float32(scale)
    codes = np.clip(np.round(x) + info.zero_point, t.min, t.max)
    return codes.astype(t.storage)


def calibrated_and_lowered(model_name: str, cfg: QuantConfig, checkpoint: str | None = None,
                           data: str | None = None, calib_size: int = 32, seed: int = 0, lcfg=None,
                           progress: bool = False):
    """(float model, calibrated model, graph, calibration images) in one call, for a supported ViT/DeiT."""
    model = create_model(model_name, checkpoint=checkpoint)
    calib = calibration_images(model, model_name, data, calib_size, seed)
    q = calibrate_model(model, calib, cfg, progress).model
    g = lower_calibrated(q, cfg, model_name, calib, lcfg)
    return model, q, g, calib
