"""Library functions behind the CLI: load a model and its data, calibrate, evaluate, ablate.

The data source is either ``"digits"`` (the bundled scikit-learn digits split, for the ``*_digits`` and
``test_*`` models) or an ImageFolder directory laid out like ImageNet val (timm models).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from repq_hw.evaluate import Accuracy, batches, evaluate
from repq_hw.models.registry import create_model, digits_model_names, model_config
from repq_hw.quant.model import QuantConfig, build_calibrated, save_calibrated

DIGITS = "digits"


def default_data(model_name: str) -> str | None:
    return DIGITS if model_name in digits_model_names() else None


def _check_data(model_name: str, data: str | None) -> str:
    if data is None:
        data = default_data(model_name)
    if data is None:
        raise ValueError(f"model {model_name!r} needs --data DIR (an ImageFolder laid out like ImageNet val)")
    return data


def calibration_images(model: torch.nn.Module, model_name: str, data: str | None, n: int = 32,
                       seed: int = 0) -> torch.Tensor:
    """The calibration batch: n images, seeded, from the digits train split or an ImageFolder."""
    data = _check_data(model_name, data)
    if n < 1:
        raise ValueError(f"calibration size must be >= 1, got {n}")
    if data == DIGITS:
        from repq_hw.data.digits import calibration_batch

        return calibration_batch(n, seed=seed)
    from repq_hw.data.imagefolder import timm_eval_loader

    ds = timm_eval_loader(data, model).dataset
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(ds), generator=g)[:n].tolist()
    return torch.stack([ds[i][0] for i in idx])


def eval_batches(model: torch.nn.Module, model_name: str, data: str | None, batch_size: int = 100,
                 limit: int | None = None):
    """(iterable of (images, labels), number of batches) for evaluation."""
    data = _check_data(model_name, data)
    if data == DIGITS:
        from repq_hw.data.digits import load_digits_split

        x, y = load_digits_split("test")
        if limit is not None:
            x, y = x[:limit], y[:limit]
        return list(batches(x, y, batch_size)), (len(x) + batch_size - 1) // batch_size
    from repq_hw.data.imagefolder import timm_eval_loader

    loader = timm_eval_loader(data, model, batch_size=batch_size, limit=limit)
    return loader, len(loader)


@dataclass
class CalibrationResult:
    model: torch.nn.Module
    cfg: QuantConfig
    seconds: float


def calibrate_model(float_model: torch.nn.Module, images: torch.Tensor, cfg: QuantConfig,
                    progress: bool = True) -> CalibrationResult:
    """Calibrate a copy of float_model (the float model is left untouched)."""
    t0 = time.perf_counter()
    q = build_calibrated(copy.deepcopy(float_model), images, cfg, progress=progress)
    return CalibrationResult(q, cfg, time.perf_counter() - t0)


def run_calibrate(model_name: str, cfg: QuantConfig, checkpoint: str | None = None, pretrained: bool = False,
                  data: str | None = None, calib_data: str | None = None, calib_size: int = 32,
                  seed: int = 0, out_dir: str | Path | None = None, evaluate_acc: bool = True,
                  eval_limit: int | None = None, progress: bool = True) -> dict:
    """Calibrate a model, optionally evaluate float vs fake-quant, optionally save. Returns a summary."""
    torch.manual_seed(seed)
    model = create_model(model_name, checkpoint=checkpoint, pretrained=pretrained)
    calib = calibration_images(model, model_name, calib_data or data, calib_size, seed)
    res = calibrate_model(model, calib, cfg, progress)
    summary = {"model": model_name, "config": cfg, "calib_seconds": res.seconds, "calibrated": res.model}
    if evaluate_acc:
        batches_, n = eval_batches(model, model_name, data, limit=eval_limit)
        summary["float"], _ = evaluate(model, batches_, "float", progress, n)
        summary["quant"], _ = evaluate(res.model, batches_, cfg.label, progress, n)
    if out_dir is not None:
        extra = {"calibration": {"data": calib_data or data or default_data(model_name), "n": calib_size,
                                 "seed": seed, "seconds": round(res.seconds, 3)},
                 "checkpoint": str(checkpoint) if checkpoint else None}
        if evaluate_acc:
            extra["accuracy"] = {k: summary[k].__dict__ for k in ("float", "quant")}
        save_calibrated(res.model, cfg, model_config(model_name), out_dir, extra)
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
                 progress: bool = True) -> list[tuple[str, str, Accuracy]]:
    """The paper's ablation on one model: float, then every row of ABLATION_ROWS at WbAb."""
    model = create_model(model_name, checkpoint=checkpoint)
    calib = calibration_images(model, model_name, data, calib_size, seed)
    data_batches, n = eval_batches(model, model_name, data)
    rows = [("float", "fp32", evaluate(model, data_batches, "float", progress, n)[0])]
    for b in bits:
        for label, kw in ABLATION_ROWS:
            cfg = QuantConfig(w_bits=b, a_bits=b, **kw)
            q = calibrate_model(model, calib, cfg, progress).model
            rows.append((label, cfg.label, evaluate(q, data_batches, f"{label} {cfg.label}", progress, n)[0]))
    return rows


def ablation_markdown(model_name: str, rows: list[tuple[str, str, Accuracy]]) -> str:
    lines = [f"**{model_name}** (digits test split, n={rows[0][2].n})", "",
             "| method | bits | top-1 % | top-5 % | loss |", "|---|---|---:|---:|---:|"]
    for label, bits, acc in rows:
        lines.append(f"| {label} | {bits} | {acc.top1:.2f} | {acc.top5:.2f} | {acc.loss:.4f} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# Integer side: lower, run, fidelity.


def lower_calibrated(qmodel: torch.nn.Module, cfg: QuantConfig, model_name: str, calib: torch.Tensor,
                     lcfg=None, out_dir: str | Path | None = None):
    """Lower a calibrated ViT/DeiT to the integer IR; optionally save it (graph.json + constants.npz)."""
    from repq_hw.ir.graph import save_graph
    from repq_hw.lower.vit import LowerConfig, lower_vit

    g = lower_vit(qmodel, cfg, calib, lcfg or LowerConfig(), meta={"model": model_name})
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
    return lower_calibrated(q, cfg, name, calib, out_dir=out_dir)


def run_fidelity(model_name: str, configs: list[QuantConfig], data: str | None = None,
                 checkpoint: str | None = None, calib_size: int = 32, seed: int = 0, backend: str = "fast",
                 eval_limit: int | None = None, progress: bool = True):
    """The fidelity ladder for each QuantConfig; returns FidelityReports."""
    from repq_hw.fidelity import fidelity

    model = create_model(model_name, checkpoint=checkpoint)
    calib = calibration_images(model, model_name, data, calib_size, seed)
    data_batches, _ = eval_batches(model, model_name, data, limit=eval_limit)
    xs = torch.cat([b[0] for b in data_batches])
    ys = torch.cat([b[1] for b in data_batches])
    reports = []
    for cfg in configs:
        q = calibrate_model(model, calib, cfg, progress).model
        g = lower_calibrated(q, cfg, model_name, calib)
        reports.append(fidelity(model, q, g, xs, ys, cfg.label, backend=backend))
    return reports


def host_input_codes(g, images: np.ndarray) -> np.ndarray:
    """Host-side preprocessing: float images -> the graph input's codes, as the fake-quant input quantizer
    computes them (float32 division, round half to even, zero point, clamp)."""
    info = g.tensors[g.inputs[0]]
    t = info.type
    x = np.asarray(images, dtype=np.float32) / np.float32(info.scale)
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
