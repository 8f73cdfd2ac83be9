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
import hashlib
import json
import math
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
from repq_hw.quant.quantizers import LogSqrt2Quantizer, UniformQuantizer, check_bits, scratch_buffers
from repq_hw.errors import InputError
from repq_hw.strict_json import read_strict_json

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
        zero_point: "round" (integer z~ = round(mean z), required by the integer pipeline) or "mean"
            (the reference mode: the reference code's fractional mean; with it, calibration reproduces the
            reference's quantizer parameters, reparameterized weights and fake-quant logits bit for bit on
            the same torch, CPU and thread count). Both share every other operation (reparameterize()).
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


def reparameterized_params(s: torch.Tensor, z: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor,
                           weight: torch.Tensor, bias: torch.Tensor, zero_point: str = "round"):
    """The RepQ-ViT reparameterization of one LayerNorm -> Linear pair, in the reference code's order.

    Args:
        s, z: the Linear's channel-wise input scales and zero points [C].
        gamma, beta: the LayerNorm affine [C]; weight [out, C], bias [out]: the Linear.
        zero_point: "mean" (the reference mode: z~ = mean(z)) or "round" (z~ = round(mean(z))).

    Returns:
        (s~, z~, gamma', beta', weight', bias') in the dtype of the inputs.

    Every step is one tensor operation in the inputs' dtype (float32 for every supported model), in the
    order of ``classification/test_quant.py`` of the reference: m = -z * s; s~ = mean(s); z~ = mean(z);
    m~ = -z~ * s~; r = s / s~; b = m / r - m~; gamma' = gamma / r; beta' = beta / r - b; W' = W * r (per
    input column); bias' = bias + mm(W', b). Algebraically b = -s~ (z - z~), so the reparameterized
    per-tensor quantizer (s~, z~) sees beta' = (beta + s (z - z~)) / r and bias' = bias - W (s (z - z~)).

    The default mode departs from the reference in one place only: z~ is rounded (torch.round of the
    same float32 mean) so that the per-tensor zero point is an integer, as the integer pipeline needs;
    every other operation, its order and its dtype are the reference's, so the two modes share all the
    rounding errors except those that follow from z~ itself.
    """
    if zero_point not in ("round", "mean"):
        raise ValueError(f"zero_point must be 'round' or 'mean', got {zero_point!r}")
    act_min = -z * s
    s_t = torch.mean(s)
    z_t = torch.mean(z)
    if zero_point == "round":
        z_t = torch.round(z_t)
    target_min = -z_t * s_t
    r = s / s_t
    b = act_min / r - target_min
    gamma_new = gamma / r
    beta_new = beta / r - b
    w_new = weight * r
    bias_new = bias + torch.mm(w_new, b.reshape(-1, 1)).reshape(-1)
    return s_t, z_t, gamma_new, beta_new, w_new, bias_new


@torch.no_grad()
def reparameterize(model: nn.Module, zero_point: str = "round") -> int:
    """RepQ-ViT scale reparameterization of every post-LN channel-wise quantizer; returns the count.

    With channel scales s and zero points z of the next Linear's input quantizer, s~ = mean(s),
    z~ = mean(z) ("mean", the reference mode) or round(mean(z)) ("round"), r = s / s~:
    LayerNorm gamma' = gamma / r, beta' = (beta + s (z - z~)) / r; Linear W' = W r (per input column),
    b' = b - W (s (z - z~)). The input quantizer becomes per tensor (s~, z~) and the weight quantizer is
    re-initialised. Computed by :func:`reparameterized_params`: the reference code's float32 operations in
    its order, in both modes (only z~ differs), so that the reference mode reproduces the reference's
    parameters bit for bit (on the same torch, CPU and thread count: torch.mean and torch.mm are torch's).
    A Linear the timm model built without a bias has a zero bias here, so bias' = 0 + mm(W', b) where the
    reference stores mm(W', b): the same values, except that a -0.0 there is +0.0 here.
    """
    pairs = reparam_pairs(model)
    for _, norm, lname, lin in pairs:
        q = lin.input_quantizer
        if not (q.inited and q.channel_wise):
            raise RuntimeError(f"{lname}: input quantizer must be calibrated channel-wise before reparam")
        dt = lin.weight.dtype
        s_t, z_t, gamma, beta, w, b = reparameterized_params(
            q.delta.reshape(-1).to(dt), q.zero_point.reshape(-1).to(dt), norm.weight.data, norm.bias.data,
            lin.weight.data, lin.bias.data, zero_point)
        norm.weight.copy_(gamma)
        norm.bias.copy_(beta)
        lin.weight.copy_(w)
        lin.bias.copy_(b)
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
        with scratch_buffers():  # the forward's temporaries in reused buffers (same values)
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
#
# A calibrated folder is input like any other: quant.json may have been written by hand, truncated, or
# crafted. Loading never imports or calls anything the JSON names (the model is built from the registry's
# own configuration after the recorded one was checked against it), validates every field
# (:func:`validate_calibrated_meta`) and every tensor (:func:`check_calibrated_state`), and raises
# InputError naming the file, the field or tensor, what was expected and what was found.

FORMAT_VERSION = 1
QUANT_JSON, WEIGHTS_FILE = "quant.json", "model.safetensors"
MAX_QUANT_JSON_BYTES = 16 << 20  # a Swin-B quant.json is ~100 kB
# quant.json keys: always written, and optional ones (``extra`` of save_calibrated, the float record, ...)
META_REQUIRED = ("format_version", "repq_hw_version", "torch_version", "timm_version", "model", "quant_config",
                 "quantizers")
META_OPTIONAL = ("calibration", "checkpoint", "pretrained", "accuracy", "float_env", "weights_sha256")
EXTRA_KEYS = ("calibration", "checkpoint", "pretrained", "accuracy")  # what save_calibrated's extra may hold
CALIBRATION_KEYS = ("data", "n", "seed", "seconds")
ACCURACY_KEYS = ("top1", "top5", "loss", "n")
# repq_hw.float_env.record(): key -> allowed JSON types
FLOAT_ENV_TYPES: dict[str, tuple[type, ...]] = {
    "reproducible": (bool,), "mode": (str,), "reason": (str,), "settings": (dict,), "overridden": (dict,),
    "cpu_capability": (str, type(None)), "torch": (str,), "cpu": (str,),
}
NO_FLOAT_ENV = {"reproducible": False, "mode": "unknown",
                "reason": "quant.json holds no float_env record, so the calibration's float mode is unknown"}
MAX_ZERO_POINT = 2**31 - 1  # the integer IR stores zero points as int32
MAX_STR = 4096


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


def _sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _show(v: object) -> str:
    r = repr(v)
    return r if len(r) <= 80 else r[:77] + "..."


def _bad(path, field: str, expected: str, found: object) -> InputError:
    return InputError(f"{path}: field {field!r}: expected {expected}, found {_show(found)}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    """A finite JSON number (ints of any size are finite; math.isfinite would overflow on 10**400)."""
    return _is_int(v) or (isinstance(v, float) and math.isfinite(v))


def _check_str(v, path, field: str, optional: bool = False) -> None:
    if optional and v is None:
        return
    if not isinstance(v, str) or not 0 < len(v) <= MAX_STR or "\0" in v:
        raise _bad(path, field, f"a non-empty string of at most {MAX_STR} characters" +
                   (" or null" if optional else ""), v)


def _check_obj(v, path, field: str, required: tuple, optional: tuple = ()) -> None:
    """v is a JSON object holding all of required, and otherwise only optional keys."""
    if not isinstance(v, dict):
        raise _bad(path, field, "an object", v)
    missing = [k for k in required if k not in v]
    unknown = sorted(str(k) for k in v if k not in required and k not in optional)
    if missing:
        raise InputError(f"{path}: field {field!r}: missing keys {missing}")
    if unknown:
        raise InputError(f"{path}: field {field!r}: unknown keys {unknown[:10]} (known: "
                         f"{sorted(required + optional)})")


def _check_float_env(env, path) -> dict:
    _check_obj(env, path, "float_env", ("reproducible",), tuple(k for k in FLOAT_ENV_TYPES if k != "reproducible"))
    for k, v in env.items():
        if not isinstance(v, FLOAT_ENV_TYPES[k]):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in FLOAT_ENV_TYPES[k])
            raise _bad(path, f"float_env.{k}", names, v)
        if isinstance(v, str) and len(v) > MAX_STR:
            raise _bad(path, f"float_env.{k}", f"at most {MAX_STR} characters", v)
        if isinstance(v, dict):
            for kk, vv in v.items():
                if not (vv is None or isinstance(vv, str)) or len(kk) > MAX_STR or len(vv or "") > MAX_STR:
                    raise _bad(path, f"float_env.{k}.{kk}", "a string or null", vv)
    return dict(env)


def _check_quant_config(qc, path) -> QuantConfig:
    names = tuple(f.name for f in dataclasses.fields(QuantConfig))
    _check_obj(qc, path, "quant_config", names)
    for k in ("w_bits", "a_bits"):
        try:
            check_bits(qc[k], k)
        except ValueError as e:
            raise InputError(f"{path}: field 'quant_config.{k}': {e}") from None
    if not isinstance(qc["reparam"], bool):
        raise _bad(path, "quant_config.reparam", "true or false", qc["reparam"])
    for k, allowed in (("method", ("repq", "naive")), ("zero_point", ("round", "mean")),
                       ("log_zero_state", ("reference", "b_bit"))):
        if not isinstance(qc[k], str) or qc[k] not in allowed:
            raise _bad(path, f"quant_config.{k}", f"one of {list(allowed)}", qc[k])
    if qc["method"] == "naive" and qc["reparam"]:
        raise _bad(path, "quant_config.reparam", "false for method 'naive' (nothing is reparameterized)", True)
    return QuantConfig(**qc)


def _quantizer_entry_keys(kind: str) -> tuple[str, ...]:
    base = ("kind", "n_bits", "inited")
    return base + (("channel_wise", "channel_axis", "method") if kind == "UniformQuantizer" else ("zero_state",))


def _check_quantizers_meta(qmeta, path) -> None:
    if not isinstance(qmeta, dict) or not qmeta:
        raise _bad(path, "quantizers", "a non-empty object (quantizer name -> description)", qmeta)
    kinds = tuple(c.__name__ for c in QUANTIZERS)
    for name, info in qmeta.items():
        where = f"quantizers.{name}"
        if not isinstance(info, dict):
            raise _bad(path, where, "an object", info)
        if info.get("kind") not in kinds:
            raise _bad(path, f"{where}.kind", f"one of {list(kinds)}", info.get("kind"))
        _check_obj(info, path, where, _quantizer_entry_keys(info["kind"]))
        try:
            check_bits(info["n_bits"], "n_bits")
        except ValueError as e:
            raise InputError(f"{path}: field '{where}.n_bits': {e}") from None


def _check_calibration(cal, path) -> None:
    _check_obj(cal, path, "calibration", CALIBRATION_KEYS)
    _check_str(cal["data"], path, "calibration.data", optional=True)
    if not _is_int(cal["n"]) or not 1 <= cal["n"] <= 10**9:
        raise _bad(path, "calibration.n", "the number of calibration images, an integer >= 1", cal["n"])
    if not _is_int(cal["seed"]) or not 0 <= cal["seed"] < 2**64:
        raise _bad(path, "calibration.seed", "an integer in 0..2^64-1", cal["seed"])
    if not _is_num(cal["seconds"]) or not 0 <= cal["seconds"] <= 1e9:
        raise _bad(path, "calibration.seconds", "a number of seconds in [0, 1e9]", cal["seconds"])


def _check_accuracy(acc, path) -> None:
    _check_obj(acc, path, "accuracy", (), ("float", "quant"))
    for which, a in acc.items():
        _check_obj(a, path, f"accuracy.{which}", ACCURACY_KEYS)
        for k in ("top1", "top5"):
            if a[k] is not None and not (_is_num(a[k]) and 0 <= a[k] <= 100):
                raise _bad(path, f"accuracy.{which}.{k}", "a percentage in [0, 100] or null", a[k])
        if a["loss"] is not None and not (_is_num(a["loss"]) and 0 <= a["loss"] <= 1e30):
            raise _bad(path, f"accuracy.{which}.loss", "a finite number >= 0 or null", a["loss"])
        if not _is_int(a["n"]) or not 0 <= a["n"] <= 10**12:
            raise _bad(path, f"accuracy.{which}.n", "an integer >= 0", a["n"])


def validate_calibrated_meta(meta: object, path: str | Path) -> dict:
    """Check every field of a calibrated folder's quant.json (``path`` is named in every error).

    Checks the keys (required, optional, nothing unknown) at every level, the types and ranges of every
    value, the model description against the registry (:func:`repq_hw.models.registry.check_model_config`:
    an allow-listed class, nothing to import or call), the quantization config (bits via ``check_bits``)
    and the shape of each quantizer entry; entries are matched against the rebuilt model by
    :func:`load_calibrated`. Returns a copy of the metadata with ``float_env`` filled in (a folder
    without the record counts as ``reproducible: false``).
    """
    from repq_hw.models.registry import check_model_config

    _check_obj(meta, path, "(top level)", META_REQUIRED, META_OPTIONAL)
    if meta["format_version"] != FORMAT_VERSION or not _is_int(meta["format_version"]):
        raise _bad(path, "format_version", str(FORMAT_VERSION), meta["format_version"])
    for k in ("repq_hw_version", "torch_version", "timm_version"):
        _check_str(meta[k], path, k)
    check_model_config(meta["model"], str(path))
    _check_quant_config(meta["quant_config"], path)
    _check_quantizers_meta(meta["quantizers"], path)
    if "calibration" in meta:
        _check_calibration(meta["calibration"], path)
    if "checkpoint" in meta:
        _check_str(meta["checkpoint"], path, "checkpoint", optional=True)
    if "pretrained" in meta and not isinstance(meta["pretrained"], bool):
        raise _bad(path, "pretrained", "true or false", meta["pretrained"])
    if "accuracy" in meta:
        _check_accuracy(meta["accuracy"], path)
    sha = meta.get("weights_sha256")
    if "weights_sha256" in meta and not (isinstance(sha, str) and len(sha) == 64
                                         and all(c in "0123456789abcdef" for c in sha)):
        raise _bad(path, "weights_sha256", "64 lower-case hex digits", sha)
    out = dict(meta)
    out["float_env"] = _check_float_env(meta["float_env"], path) if "float_env" in meta else dict(NO_FLOAT_ENV)
    return out


def _read_quant_json(path: Path) -> object:
    """Parse quant.json strictly (repq_hw/strict_json.py); errors name the file."""
    return read_strict_json(path, max_bytes=MAX_QUANT_JSON_BYTES, want_object=False)


def _reparameterized_inputs(model: nn.Module, cfg: QuantConfig) -> set[str]:
    if not cfg.reparam:
        return set()
    return {f"{lname}.input_quantizer" for _, _, lname, _ in reparam_pairs(model)}


def expected_quantizers(model: nn.Module, cfg: QuantConfig) -> dict[str, tuple[dict, tuple[int, ...]]]:
    """For a model fresh from :func:`quantize_model`: quantizer name -> (its quant.json entry after
    calibration with cfg, the shape of its delta / zero_point tensors)."""
    reparam = _reparameterized_inputs(model, cfg)
    out = {}
    for name, q in quantizers(model):
        entry = {"kind": type(q).__name__, "n_bits": q.n_bits, "inited": True}
        shape: tuple[int, ...] = ()
        if isinstance(q, UniformQuantizer):
            cw = q.channel_wise and name not in reparam
            entry.update(channel_wise=cw, channel_axis=q.channel_axis, method=q.method)
            if cw:
                parent = model.get_submodule(name.rpartition(".")[0])
                shape = (parent.weight.shape[0],) if q.channel_axis == 0 else (parent.in_features,)
        else:
            entry.update(zero_state=q.zero_state)
        out[name] = (entry, shape)
    return out


def _check_quantizers_match(qmeta: dict, expected: dict, path) -> None:
    missing = [n for n in expected if n not in qmeta]
    unexpected = [n for n in qmeta if n not in expected]
    if missing or unexpected:
        raise InputError(f"{path}: field 'quantizers' does not match the model's quantizers: "
                         f"missing ({len(missing)}) {missing[:5]}, unexpected ({len(unexpected)}) "
                         f"{[str(n) for n in unexpected[:5]]}")
    for name, (entry, _) in expected.items():
        for k, v in entry.items():
            got = qmeta[name][k]
            if type(got) is not type(v) or got != v:
                raise _bad(path, f"quantizers.{name}.{k}", _show(v), got)


def check_calibrated_state(state: dict[str, torch.Tensor], model: nn.Module, cfg: QuantConfig,
                           path: str | Path) -> None:
    """Check the tensors of model.safetensors against the model built from quant.json.

    Every tensor the model has must be there, and nothing else, with the model's dtype (float32) and
    shape; a quantizer's delta / zero_point have the shape its entry implies (a scalar, or one value per
    channel). Every step delta is finite and >= MIN_DELTA (calibration never produces smaller ones), every
    zero point finite, integer-valued (except the reparameterized ones of ``zero_point="mean"``) and within
    int32; every other float tensor finite. Raises InputError naming ``path`` and the tensor.
    """
    from repq_hw.models.registry import check_state_dict
    from repq_hw.quant.quantizers import MIN_DELTA

    expected = expected_quantizers(model, cfg)
    own = dict(model.state_dict())
    for name, (_, shape) in expected.items():
        own[f"{name}.delta"] = torch.empty(shape, device="meta")
        if f"{name}.zero_point" in own:
            own[f"{name}.zero_point"] = torch.empty(shape, device="meta")
    check_state_dict(state, own, f"{path}", finite=False)
    reparam = _reparameterized_inputs(model, cfg)
    min_delta = torch.tensor(MIN_DELTA, dtype=torch.float32)
    for name in expected:
        d = state[f"{name}.delta"]
        if not bool(torch.isfinite(d).all()) or not bool((d >= min_delta).all()):
            bad = d.reshape(-1)[~(torch.isfinite(d.reshape(-1)) & (d.reshape(-1) >= min_delta))]
            raise InputError(f"{path}: tensor {name}.delta: expected finite quantization steps >= {MIN_DELTA}, "
                             f"found {bad.numel()} bad value(s), e.g. {bad[0].item()!r}")
        zk = f"{name}.zero_point"
        if zk not in state:
            continue
        z = state[zk].reshape(-1)
        integral = not (cfg.zero_point == "mean" and name in reparam)
        ok = torch.isfinite(z) & (z.abs() <= MAX_ZERO_POINT)
        if integral:
            ok &= z == torch.round(z)
        if not bool(ok.all()):
            what = "integer-valued " if integral else ""
            raise InputError(f"{path}: tensor {zk}: expected finite {what}zero points within "
                             f"+-{MAX_ZERO_POINT}, found {_show(z[~ok][0].item())}")
    nonfinite = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if nonfinite:
        raise InputError(f"{path}: tensors holding NaN/inf ({len(nonfinite)}): {', '.join(nonfinite[:10])}")


def save_calibrated(model: nn.Module, cfg: QuantConfig, model_cfg: dict, out_dir: str | Path,
                    extra: dict | None = None, float_env: dict | None = None) -> Path:
    """Write ``model.safetensors`` and ``quant.json`` into out_dir (atomically, file by file).

    Args:
        model: a calibrated model.
        cfg: its QuantConfig.
        model_cfg: how to rebuild the float model (``registry.model_config``; must match the registry).
        out_dir: target folder (created).
        extra: more metadata, keys from :data:`EXTRA_KEYS` (calibration record, checkpoint, accuracy).
        float_env: the calibration's float-mode record (``repq_hw.float_env.check``); None records the
            float mode in force now.

    quant.json is validated with :func:`validate_calibrated_meta` before anything is written, so that a
    folder this writes always loads; it records the sha256 of model.safetensors.
    """
    import timm
    from safetensors.torch import save_file

    import repq_hw
    from repq_hw import float_env as _float_env

    out_dir = Path(out_dir)
    meta_path = out_dir / QUANT_JSON
    unknown = sorted(set(extra or {}) - set(EXTRA_KEYS))
    if unknown:
        raise InputError(f"save_calibrated: extra keys {unknown} are not recorded in quant.json "
                         f"(known: {list(EXTRA_KEYS)})")
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    qmeta = {}
    for name, q in quantizers(model):
        if not q.inited:
            raise InputError(f"save_calibrated: quantizer {name!r} is not calibrated")
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
        "float_env": float_env if float_env is not None else _float_env.record(),
    }
    meta = json.loads(json.dumps(meta, allow_nan=False))  # as it will be read back (tuples -> lists)
    validate_calibrated_meta(meta, meta_path)
    digest = {}

    def write_weights(p):
        save_file(state, p)
        digest["sha256"] = _sha256_file(p)

    _atomic_write(out_dir / WEIGHTS_FILE, write_weights)
    meta["weights_sha256"] = digest["sha256"]
    _atomic_write(meta_path, lambda p: Path(p).write_text(json.dumps(meta, indent=2, allow_nan=False)))
    return out_dir


def load_calibrated(in_dir: str | Path) -> tuple[nn.Module, QuantConfig, dict]:
    """Rebuild a calibrated model saved by :func:`save_calibrated`. Returns (model, cfg, metadata).

    Every entry point (CLI lower / eval, the Python API) goes through here: quant.json is validated
    (:func:`validate_calibrated_meta`), the model is built from the registry's configuration (nothing the
    file names is imported or called), the quantizer entries and every tensor of model.safetensors are
    checked against it (:func:`check_calibrated_state`), and so is the recorded sha256. The metadata holds
    ``float_env`` (``reproducible: false`` when the folder has no record). Errors are InputError naming
    the file; a missing file is FileNotFoundError.
    """
    from safetensors.torch import load as load_safetensors

    from repq_hw.models.registry import build_model

    in_dir = Path(in_dir)
    meta_path, weights_path = in_dir / QUANT_JSON, in_dir / WEIGHTS_FILE
    for p in (meta_path, weights_path):
        if not p.is_file():
            raise FileNotFoundError(f"calibrated model folder {in_dir}: missing {p.name}")
    meta = validate_calibrated_meta(_read_quant_json(meta_path), meta_path)
    cfg = QuantConfig(**meta["quant_config"])
    model = quantize_model(build_model(meta["model"]["name"]), cfg)
    _check_quantizers_match(meta["quantizers"], expected_quantizers(model, cfg), meta_path)
    data = weights_path.read_bytes()
    try:
        state = load_safetensors(data)
    except Exception as e:  # safetensors raises its own error types (truncated, bad header, ...)
        raise InputError(f"{weights_path}: not a readable safetensors file ({type(e).__name__}: {e}); "
                         "the file may be truncated") from None
    check_calibrated_state(state, model, cfg, weights_path)
    sha = meta.get("weights_sha256")
    if sha is not None and hashlib.sha256(data).hexdigest() != sha:
        raise InputError(f"{weights_path}: sha256 {hashlib.sha256(data).hexdigest()} differs from the "
                         f"weights_sha256 {sha} recorded in {meta_path} (the file was modified, or the two "
                         "files come from different calibrations)")
    del data
    for name, q in quantizers(model):
        if isinstance(q, UniformQuantizer):
            q.set_params(state[f"{name}.delta"], state[f"{name}.zero_point"], meta["quantizers"][name]["channel_wise"])
        else:
            q.delta = state[f"{name}.delta"].clone()
            q.inited = True
    model.load_state_dict(state, strict=True)
    return model.eval(), cfg, meta
