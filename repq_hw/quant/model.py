"""Quantize a timm ViT/DeiT/Swin with RepQ-ViT: module replacement, calibration, scale
reparameterization, and saving/loading the calibrated model (safetensors + JSON, never pickle).

Pipeline (as ``classification/test_quant.py`` of the reference code):
  1. replace Linear/Conv2d/attention modules by quantized ones (:func:`quantize_model`);
  2. initial calibration: one forward of the calibration batch with all quantizers on; each quantizer
     calibrates on the first data it sees, so later layers see already-quantized inputs;
  3. scale reparameterization LayerNorm -> next Linear (qkv, fc1, Swin's patch-merging reduction), and the
     weight quantizers of those Linears are re-initialised;
  4. re-calibration: the reference runs a second forward, which re-calibrates exactly those weight
     quantizers; as they depend on their weights only, they are calibrated directly (same result).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from repq_hw.quant.modules import (
    ExplicitAttention,
    ExplicitWindowAttention,
    QuantConv2d,
    QuantLinear,
    QuantMatMul,
    make_post_softmax_quantizer,
)
from repq_hw.quant.quantizers import LogSqrt2Quantizer, UniformQuantizer, check_bits
from repq_hw.errors import InputError

CHANNEL_WISE_INPUTS = ("qkv", "fc1", "reduction")  # inputs calibrated per channel, then reparameterized
PATCH_EMBED_INPUT_BITS = 8
QUANTIZERS = (UniformQuantizer, LogSqrt2Quantizer)


class UnsupportedModelError(InputError):
    """The model holds a module whose computation the quantized model would not reproduce."""


@dataclass(frozen=True)
class QuantConfig:
    """How a model is quantized.

    Args:
        w_bits: weight bits (2..8), per output channel, every Linear and the patch-embedding conv.
        a_bits: activation bits (2..8); the patch-embedding input is always 8 bits.
        method: "repq" (RepQ-ViT: percentile search, log-sqrt(2) post-Softmax, channel-wise post-LN) or
            "naive" (per-tensor min-max for every activation, uniform min-max post-Softmax, min-max weights).
        reparam: apply scale reparameterization (False = RepQ-ViT's channel-wise post-LN ablation).
        zero_point: "round" (integer z~ = round(mean z): reparameterized codes equal the channel-wise codes;
            required by the integer pipeline) or "mean" (the reference code's fractional mean).
        log_zero_state: "reference" (2^b + 1 post-Softmax states) or "b_bit" (inference form).
    """

    w_bits: int = 4
    a_bits: int = 4
    method: str = "repq"
    reparam: bool = True
    zero_point: str = "round"
    log_zero_state: str = "reference"

    def __post_init__(self):
        check_bits(self.w_bits, "w_bits")
        check_bits(self.a_bits, "a_bits")
        for field, allowed in (("method", ("repq", "naive")), ("zero_point", ("round", "mean")),
                               ("log_zero_state", ("reference", "b_bit"))):
            if getattr(self, field) not in allowed:
                raise ValueError(f"{field} must be one of {allowed}, got {getattr(self, field)!r}")
        if self.method == "naive" and self.reparam:
            object.__setattr__(self, "reparam", False)  # nothing channel-wise to reparameterize

    @property
    def label(self) -> str:
        return f"W{self.w_bits}A{self.a_bits}"


def check_supported(model: nn.Module) -> None:
    """Refuse models with modules the explicit-attention rewrite would silently drop."""
    from timm.layers import Attention
    from timm.models.swin_transformer import WindowAttention

    for name, m in model.named_modules():
        if isinstance(m, Attention):
            extras = []
            if not isinstance(m.q_norm, nn.Identity) or not isinstance(m.k_norm, nn.Identity):
                extras.append("q_norm/k_norm")
            if not isinstance(getattr(m, "norm", nn.Identity()), nn.Identity):
                extras.append("norm (scale_norm)")
            if getattr(m, "gate", None) is not None:
                extras.append("gate")
            if extras:
                raise UnsupportedModelError(
                    f"module {name!r} ({type(m).__name__}) uses {', '.join(extras)}, which RepQ-ViT "
                    "quantization does not support")
        elif "Attention" in type(m).__name__ and not isinstance(m, WindowAttention):
            raise UnsupportedModelError(f"module {name!r} has unsupported attention type {type(m).__name__}")
        elif isinstance(m, nn.Conv2d) and not name.endswith("patch_embed.proj"):
            raise UnsupportedModelError(f"module {name!r}: only the patch-embedding convolution is supported")


def _set_child(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)


def quantize_model(model: nn.Module, cfg: QuantConfig) -> nn.Module:
    """Replace the modules of a timm model, in place, by quantized ones (all quantizers uncalibrated).

    Returns the same model object.
    """
    from timm.layers import Attention
    from timm.models.swin_transformer import WindowAttention

    check_supported(model)
    a_method = "percentile" if cfg.method == "repq" else "minmax"
    for name, m in list(model.named_modules()):
        if isinstance(m, (Attention, WindowAttention)):
            mm1 = QuantMatMul(UniformQuantizer(cfg.a_bits, method=a_method),
                              UniformQuantizer(cfg.a_bits, method=a_method))
            mm2 = QuantMatMul(make_post_softmax_quantizer(cfg.a_bits, a_method, cfg.log_zero_state),
                              UniformQuantizer(cfg.a_bits, method=a_method))
            cls = ExplicitAttention if isinstance(m, Attention) else ExplicitWindowAttention
            _set_child(model, name, cls(m, mm1, mm2))
    for name, m in list(model.named_modules()):
        if isinstance(m, nn.Linear):
            channel = cfg.method == "repq" and name.rpartition(".")[2] in CHANNEL_WISE_INPUTS
            in_q = UniformQuantizer(cfg.a_bits, channel_wise=channel, channel_axis=-1, method=a_method)
            _set_child(model, name, QuantLinear(m, in_q, cfg.w_bits, a_method))
        elif isinstance(m, nn.Conv2d):
            in_q = UniformQuantizer(PATCH_EMBED_INPUT_BITS, method=a_method)
            _set_child(model, name, QuantConv2d(m, in_q, cfg.w_bits, a_method))
    return model


def quantizers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QUANTIZERS)]


def set_quant_state(model: nn.Module, enabled: bool) -> None:
    """Switch every quantizer on or off (off: the model computes in float)."""
    for _, q in quantizers(model):
        q.enabled = enabled


def reparam_pairs(model: nn.Module) -> list[tuple[str, nn.LayerNorm, str, QuantLinear]]:
    """(LayerNorm, next Linear) pairs whose post-LN activations are reparameterized."""
    pairs = []
    mods = dict(model.named_modules())
    for name, m in mods.items():
        if not isinstance(m, QuantLinear):
            continue
        parent, _, leaf = name.rpartition(".")
        if leaf == "qkv":  # blocks.i.attn.qkv <- blocks.i.norm1
            norm_name = parent.rpartition(".")[0] + ".norm1"
        elif leaf == "fc1":  # blocks.i.mlp.fc1 <- blocks.i.norm2
            norm_name = parent.rpartition(".")[0] + ".norm2"
        elif leaf == "reduction":  # layers.i.downsample.reduction <- layers.i.downsample.norm
            norm_name = parent + ".norm"
        else:
            continue
        norm = mods.get(norm_name)
        if not isinstance(norm, nn.LayerNorm) or not norm.elementwise_affine:
            raise UnsupportedModelError(f"{name!r} must follow an affine LayerNorm at {norm_name!r}")
        pairs.append((norm_name, norm, name, m))
    return pairs


@torch.no_grad()
def reparameterize(model: nn.Module, zero_point: str = "round") -> int:
    """RepQ-ViT scale reparameterization of every post-LN channel-wise quantizer; returns the count.

    With channel scales s and zero points z of the next Linear's input quantizer:
    s~ = mean(s), z~ = round(mean(z)) ("round") or mean(z) ("mean"), r = s / s~;
    LayerNorm: gamma' = gamma / r, beta' = (beta + s*(z - z~)) / r;
    Linear: W' = W * r (per input column), b' = b - W @ (s*(z - z~)).
    Then the input quantizer becomes per tensor (s~, z~) and the weight quantizer is re-initialised.
    Computed in float64 and stored in the parameters' dtype.
    """
    pairs = reparam_pairs(model)
    for _, norm, lname, lin in pairs:
        q = lin.input_quantizer
        if not (q.inited and q.channel_wise):
            raise RuntimeError(f"{lname}: input quantizer must be calibrated channel-wise before reparam")
        s, z = q.delta.double(), q.zero_point.double()
        s_t = s.mean()
        z_t = torch.round(z.mean()) if zero_point == "round" else z.mean()
        r = s / s_t
        offset = s * (z - z_t)
        W, b = lin.weight.double(), lin.bias.double()
        lin.bias.copy_((b - W @ offset).to(lin.bias.dtype))
        lin.weight.copy_((W * r[None, :]).to(lin.weight.dtype))
        norm.weight.copy_((norm.weight.double() / r).to(norm.weight.dtype))
        norm.bias.copy_(((norm.bias.double() + offset) / r).to(norm.bias.dtype))
        q.set_params(s_t.to(q.delta.dtype), z_t.to(q.delta.dtype), channel_wise=False)
        lin.weight_quantizer.inited = False
    return len(pairs)


@torch.no_grad()
def calibrate(model: nn.Module, images: torch.Tensor, cfg: QuantConfig, progress: bool = True) -> nn.Module:
    """Run RepQ-ViT calibration on a quantized model (see module docstring).

    Args:
        model: output of :func:`quantize_model`.
        images: the calibration batch (the reference uses 32 images in one batch).
        cfg: the configuration the model was quantized with.
        progress: show a progress bar over the quantizers being calibrated.
    """
    model.eval()
    set_quant_state(model, True)
    qs = quantizers(model)
    n_reinit = 0
    if cfg.reparam:
        n_reinit = sum(1 for n, _ in qs if n.endswith("weight_quantizer")
                       and n.rpartition(".")[0].rpartition(".")[2] in CHANNEL_WISE_INPUTS)
    bar = tqdm(total=len(qs) + n_reinit, desc=f"calibrate {cfg.label} {cfg.method}", unit="q",
               disable=not progress, leave=False)
    for n, q in qs:
        q.on_init = lambda _q: bar.update(1)
        q.name = n
    try:
        model(images)
        if cfg.reparam:
            reparameterize(model, cfg.zero_point)
            # The reference runs a second forward here, which re-calibrates only the weight quantizers
            # that reparameterize() reset; they see nothing but their weight, so calibrate them directly.
            for _, _, _, lin in reparam_pairs(model):
                lin.weight_quantizer.calibrate(lin.weight)
    finally:
        for _, q in qs:
            q.on_init = None
        bar.close()
    missing = [n for n, q in qs if not q.inited]
    if missing:
        raise RuntimeError(f"quantizers never saw calibration data: {missing[:5]}")
    return model


def build_calibrated(model: nn.Module, images: torch.Tensor, cfg: QuantConfig,
                     progress: bool = True) -> nn.Module:
    """quantize_model + calibrate, in place."""
    return calibrate(quantize_model(model, cfg), images, cfg, progress)


# ---------------------------------------------------------------------------------------------------
# Saving and loading: safetensors (all tensors, including every quantizer's delta/zero_point) + JSON.

FORMAT_VERSION = 1


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_calibrated(model: nn.Module, cfg: QuantConfig, model_cfg: dict, out_dir: str | Path,
                    extra: dict | None = None) -> Path:
    """Write ``model.safetensors`` and ``quant.json`` into out_dir (atomically, file by file).

    Args:
        model: a calibrated model.
        cfg: its QuantConfig.
        model_cfg: how to rebuild the float model (see ``registry.model_config``).
        out_dir: target folder (created).
        extra: more JSON-able metadata (calibration set, accuracy, ...).
    """
    import timm
    from safetensors.torch import save_file

    import repq_hw

    out_dir = Path(out_dir)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    qmeta = {}
    for name, q in quantizers(model):
        qmeta[name] = {"kind": type(q).__name__, "n_bits": q.n_bits, "inited": q.inited}
        if isinstance(q, UniformQuantizer):
            qmeta[name].update(channel_wise=q.channel_wise, channel_axis=q.channel_axis, method=q.method)
        else:
            qmeta[name].update(zero_state=q.zero_state)
    meta = {
        "format_version": FORMAT_VERSION,
        "repq_hw_version": repq_hw.__version__,
        "torch_version": torch.__version__,
        "timm_version": timm.__version__,
        "model": model_cfg,
        "quant_config": dataclasses.asdict(cfg),
        "quantizers": qmeta,
        **(extra or {}),
    }
    _atomic_write(out_dir / "model.safetensors", lambda p: save_file(state, p))
    _atomic_write(out_dir / "quant.json", lambda p: Path(p).write_text(json.dumps(meta, indent=2)))
    return out_dir


def load_calibrated(in_dir: str | Path) -> tuple[nn.Module, QuantConfig, dict]:
    """Rebuild a calibrated model saved by :func:`save_calibrated`. Returns (model, cfg, metadata)."""
    from safetensors.torch import load_file

    from repq_hw.models.registry import _build_class

    in_dir = Path(in_dir)
    meta_path, weights_path = in_dir / "quant.json", in_dir / "model.safetensors"
    for p in (meta_path, weights_path):
        if not p.is_file():
            raise FileNotFoundError(f"calibrated model folder {in_dir}: missing {p.name}")
    meta = json.loads(meta_path.read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{meta_path}: format_version {meta.get('format_version')!r}, "
                         f"expected {FORMAT_VERSION}")
    cfg = QuantConfig(**meta["quant_config"])
    mc = meta["model"]
    if mc["class"] == "timm.create_model":
        import timm

        model = timm.create_model(mc["name"], pretrained=False)
    else:
        model = _build_class(mc["class"], mc["kwargs"])
    quantize_model(model, cfg)
    state = load_file(str(weights_path))
    for name, q in quantizers(model):
        info = meta["quantizers"].get(name)
        if info is None:
            raise ValueError(f"{meta_path}: no entry for quantizer {name!r}")
        if isinstance(q, UniformQuantizer):
            q.set_params(state[f"{name}.delta"], state[f"{name}.zero_point"], info["channel_wise"])
        else:
            q.delta = state[f"{name}.delta"].clone()
            q.inited = True
    model.load_state_dict(state, strict=True)
    return model.eval(), cfg, meta
