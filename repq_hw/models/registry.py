"""Which models repq-hw supports, and how they are built and loaded.

Three families:
* timm's ImageNet models from the RepQ-ViT paper (ViT-S/B, DeiT-T/S/B, Swin-T/S/B). Weights come from
  ``--checkpoint`` (local safetensors, or .pth/.bin read with ``weights_only=True``) or from timm's own
  hub path with ``--pretrained`` (needs a network).
* the bundled real-data models trained on scikit-learn's digits (``vit_digits``, ``swin_digits``) and on 2,000
  real MNIST digits (``vit_mnist``; data set per model in ``digits_configs.MODEL_DATA``): their weights ship
  inside the package and are loaded by default.
* tiny random-weight configurations for tests (``test_*``), built from the same timm classes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn as nn

from repq_hw.errors import InputError

TIMM_MODELS = (
    "vit_small_patch16_224",
    "vit_base_patch16_224",
    "deit_tiny_patch16_224",
    "deit_small_patch16_224",
    "deit_base_patch16_224",
    "swin_tiny_patch4_window7_224",
    "swin_small_patch4_window7_224",
    "swin_base_patch4_window7_224",
)

# Tiny configurations of timm's own classes, for fast tests. (class, kwargs)
_VIT = "timm.models.vision_transformer.VisionTransformer"
_SWIN = "timm.models.swin_transformer.SwinTransformer"
_TINY_VIT = dict(img_size=32, patch_size=8, in_chans=3, num_classes=10, embed_dim=48, depth=2, num_heads=3,
                 mlp_ratio=2.0, qkv_bias=True)
TEST_MODEL_CONFIGS: dict[str, tuple[str, dict]] = {
    "test_vit": (_VIT, _TINY_VIT),
    "test_deit": (_VIT, dict(_TINY_VIT, global_pool="token", class_token=True, depth=3)),
    "test_vit_layerscale": (_VIT, dict(_TINY_VIT, init_values=0.1)),
    "test_vit_qknorm": (_VIT, dict(_TINY_VIT, qk_norm=True)),
    "test_swin": (_SWIN, dict(img_size=32, patch_size=2, in_chans=3, num_classes=10, embed_dim=24,
                              depths=(2, 2), num_heads=(2, 4), window_size=4, mlp_ratio=2.0)),
    # grids 14x14, 7x7 (not multiples of the window 4: padded, shifted and padded) and an odd 7 -> 4 merge
    "test_swin_pad": (_SWIN, dict(img_size=28, patch_size=2, in_chans=3, num_classes=10, embed_dim=16,
                                  depths=(2, 2, 1), num_heads=(1, 2, 4), window_size=4, mlp_ratio=2.0)),
}

WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_MODEL = "vit_digits"


def digits_model_names() -> tuple[str, ...]:
    from repq_hw.models.digits_configs import DIGITS_MODEL_CONFIGS

    return tuple(DIGITS_MODEL_CONFIGS)


def supported_models() -> tuple[str, ...]:
    """All model names accepted by :func:`create_model`."""
    return digits_model_names() + TIMM_MODELS + tuple(TEST_MODEL_CONFIGS)


# The only classes a model is ever built from: the timm classes the configurations above name. A class path
# read from a file (a calibrated folder's quant.json) is looked up here and never imported by its name.
ALLOWED_CLASSES: dict[str, tuple[str, str]] = {
    _VIT: ("timm.models.vision_transformer", "VisionTransformer"),
    _SWIN: ("timm.models.swin_transformer", "SwinTransformer"),
}
# model_config()'s "class" for timm's own named models (built by timm.create_model, never by a path)
TIMM_CREATE = "timm.create_model"


def allowed_class(path: object, where: str = "model class") -> type:
    """The class of an allow-listed class path; raises InputError naming ``where`` for anything else."""
    import importlib

    if not isinstance(path, str) or path not in ALLOWED_CLASSES:
        raise InputError(f"{where}: expected one of {sorted(ALLOWED_CLASSES)}, found {path!r:.80} "
                         "(models are built only from the registry's allow-listed timm classes)")
    module, cls = ALLOWED_CLASSES[path]
    return getattr(importlib.import_module(module), cls)


def class_parameters(path: str) -> set[str]:
    """The keyword arguments an allow-listed class accepts by name."""
    import inspect

    params = inspect.signature(allowed_class(path)).parameters.values()
    return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _build_class(path: str, kwargs: dict) -> nn.Module:
    cls = allowed_class(path)
    unknown = sorted(set(kwargs) - class_parameters(path))
    if unknown:
        raise InputError(f"model class {path}: unknown keyword arguments {unknown}")
    return cls(**kwargs)


def model_config(name: str) -> dict:
    """A JSON-able description of how the named model is built (recorded in calibrated models)."""
    if name in TEST_MODEL_CONFIGS:
        cls, kw = TEST_MODEL_CONFIGS[name]
        return {"name": name, "class": cls, "kwargs": kw}
    if name in digits_model_names():
        from repq_hw.models.digits_configs import DIGITS_MODEL_CONFIGS

        cls, kw = DIGITS_MODEL_CONFIGS[name]
        return {"name": name, "class": cls, "kwargs": kw}
    if name in TIMM_MODELS:
        return {"name": name, "class": TIMM_CREATE, "kwargs": {}}
    raise InputError(f"unknown model {name!r}; supported models: {', '.join(supported_models())}")


def bundled_weights(name: str) -> Path:
    return WEIGHTS_DIR / f"{name}.safetensors"


def bundled_info(name: str) -> dict:
    """The training record of a bundled model (float accuracy, split, preprocessing)."""
    path = WEIGHTS_DIR / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no training record {path} for bundled model {name!r}")
    return json.loads(path.read_text())


def _json_normal(v):
    """v as JSON would give it back (tuples become lists)."""
    return json.loads(json.dumps(v))


def _same_json(found, expected) -> bool:
    """Equality of JSON values with strict types: a bool is not a number, an int may stand for a float."""
    if isinstance(expected, bool) or isinstance(found, bool):
        return type(found) is type(expected) and found == expected
    if isinstance(expected, float):
        return isinstance(found, (int, float)) and found == expected
    if isinstance(expected, dict):
        return (isinstance(found, dict) and found.keys() == expected.keys()
                and all(_same_json(found[k], expected[k]) for k in expected))
    if isinstance(expected, list):
        return (isinstance(found, list) and len(found) == len(expected)
                and all(_same_json(a, b) for a, b in zip(found, expected)))
    return type(found) is type(expected) and found == expected


def _kwarg_value_ok(v) -> bool:
    """Constructor arguments read from a file may be plain JSON data only: numbers, bools, null, lists of
    numbers and short identifier-like words (``global_pool="token"``). They are compared with the
    registry's and never passed on, so a string naming a layer or callable can only fail to match."""
    if v is None or isinstance(v, (bool, int)):
        return True
    if isinstance(v, str):
        return 0 < len(v) <= 64 and v.replace("_", "").isalnum() and v.isascii()
    if isinstance(v, float):
        return math.isfinite(v)
    if isinstance(v, list):
        return all(isinstance(x, (bool, int, float)) and _kwarg_value_ok(x) for x in v)
    return False


def check_model_config(mc: object, where: str) -> dict:
    """Validate a recorded model description (quant.json's ``model``) against the registry.

    The name must be a supported model, the class one of :data:`ALLOWED_CLASSES` (or ``timm.create_model``
    for timm's named models) and the same as the registry's for that name, the kwargs arguments the class
    accepts, with plain numeric values, equal to the registry's. Returns the registry's own config, which
    is what the model is then built from: nothing named in the file is imported or called.
    Raises InputError naming ``where`` (the file) and the field."""
    if not isinstance(mc, dict):
        raise InputError(f"{where}: field 'model': expected an object, found {type(mc).__name__}")
    keys = {"name", "class", "kwargs"}
    if set(mc) != keys:
        raise InputError(f"{where}: field 'model': expected exactly the keys {sorted(keys)}, found "
                         f"{sorted(map(str, mc))[:10]}")
    name, cls, kwargs = mc["name"], mc["class"], mc["kwargs"]
    if not isinstance(name, str) or name not in supported_models():
        raise InputError(f"{where}: field 'model.name': expected a supported model "
                         f"({', '.join(supported_models())}), found {name!r:.80}")
    reg = model_config(name)
    if cls != reg["class"]:
        if cls != TIMM_CREATE:
            allowed_class(cls, f"{where}: field 'model.class'")  # names the allow-list for foreign classes
        raise InputError(f"{where}: field 'model.class': model {name!r} is built from {reg['class']!r}, "
                         f"found {cls!r:.80}")
    if not isinstance(kwargs, dict):
        raise InputError(f"{where}: field 'model.kwargs': expected an object, found {type(kwargs).__name__}")
    if cls != TIMM_CREATE:
        unknown = sorted(set(kwargs) - class_parameters(cls))
        if unknown:
            raise InputError(f"{where}: field 'model.kwargs': {cls} accepts no arguments {unknown}")
    for k, v in kwargs.items():
        if not _kwarg_value_ok(v):
            raise InputError(f"{where}: field 'model.kwargs.{k}': expected a finite number, bool, null, list "
                             f"of numbers or short word, found {v!r:.80}")
    expected = _json_normal(reg["kwargs"])
    diff = [k for k in sorted(set(kwargs) | set(expected))
            if k not in kwargs or k not in expected or not _same_json(kwargs[k], expected[k])]
    if diff:
        shown = "; ".join(f"{k!r:.40}: found {kwargs.get(k, '(absent)')!r:.60}, registered "
                          f"{expected.get(k, '(absent)')!r}" for k in diff[:5])
        raise InputError(f"{where}: field 'model.kwargs' does not match the registered config of {name!r}: {shown}")
    return reg


def build_model(name: str) -> nn.Module:
    """The architecture of a supported model with freshly initialised weights (no weights are loaded)."""
    cfg = model_config(name)  # raises for unknown names
    if cfg["class"] == TIMM_CREATE:
        import timm

        return timm.create_model(name, pretrained=False)
    return _build_class(cfg["class"], cfg["kwargs"])


def create_model(name: str, checkpoint: str | Path | None = None, pretrained: bool = False) -> nn.Module:
    """Build a supported model in eval mode.

    Args:
        name: a name from :func:`supported_models`.
        checkpoint: local weights (.safetensors, .pth, .pt or .bin); must match the model exactly.
        pretrained: use timm's pretrained weights (downloads; timm models only). The bundled digits
            models load their shipped weights unless a checkpoint is given.
    """
    cfg = model_config(name)  # raises for unknown names
    if checkpoint is not None and pretrained:
        raise InputError("give either checkpoint or pretrained, not both")
    if cfg["class"] == TIMM_CREATE:
        import timm

        model = timm.create_model(name, pretrained=pretrained)
    else:
        if pretrained:
            raise InputError(f"--pretrained is for timm's hub models; {name!r} is a project model")
        model = _build_class(cfg["class"], cfg["kwargs"])
        if checkpoint is None and name in digits_model_names():
            checkpoint = bundled_weights(name)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model.eval()


CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a weights file without executing pickled code.

    safetensors files are read with safetensors; .pth/.pt/.bin with ``torch.load(weights_only=True)``.
    A dict with a single ``model``/``state_dict``/``model_ema`` entry (training checkpoints) is unwrapped.
    Raises FileNotFoundError for a missing file, InputError (naming the file) for anything unreadable.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if not path.is_file():
        raise InputError(f"checkpoint {path}: expected a file, found a directory or special file")
    suffix = path.suffix.lower()
    if suffix not in CHECKPOINT_SUFFIXES:
        raise InputError(f"checkpoint {path}: expected .safetensors, .pth, .pt or .bin, found "
                         f"{path.suffix or 'no suffix'!r}")
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj = load_file(str(path))
        except Exception as e:  # safetensors raises its own error types (truncated, bad header, ...)
            raise InputError(f"checkpoint {path}: not a readable safetensors file ({type(e).__name__}: {e})") \
                from e
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise InputError(f"checkpoint {path}: cannot be loaded with weights_only=True "
                             f"({type(e).__name__}: {e})") from e
        for key in ("model", "state_dict", "model_ema"):
            if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        raise InputError(f"checkpoint {path}: expected a state_dict (name -> tensor), found {type(obj).__name__}")
    bad = [repr(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise InputError(f"checkpoint {path}: expected a state_dict of named tensors; entries that are not "
                         f"({len(bad)}): {', '.join(bad[:10])}")
    return obj


# floating dtypes a --checkpoint tensor may have for a float parameter (load_state_dict converts them)
CHECKPOINT_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_state_dict(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor], what: str,
                     exact_dtype: bool = True, finite: bool = True) -> None:
    """Refuse a state dict whose keys, shapes or dtypes differ from ``own``, or whose floats are not finite,
    naming ``what`` (the file) and the first bad tensors. ``exact_dtype=False`` lets a float16, bfloat16 or
    float64 tensor stand for a float parameter (a half-precision checkpoint; load_state_dict converts it)."""
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    common = sorted(set(own) & set(state))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in common if state[k].shape != own[k].shape]
    dtypes = [f"{k}: file {state[k].dtype} vs model {own[k].dtype}" for k in common
              if state[k].dtype != own[k].dtype
              and (exact_dtype or not (own[k].is_floating_point() and state[k].dtype in CHECKPOINT_FLOATS))]
    bad_dtype = {d.split(":")[0] for d in dtypes}
    nonfinite = [k for k in common if finite and k not in bad_dtype and state[k].is_floating_point()
                 and not bool(torch.isfinite(state[k]).all())]
    if missing or unexpected or shapes or dtypes or nonfinite:
        lines = [f"{what} does not match the model:"]
        if missing:
            lines.append(f"  missing tensors ({len(missing)}): {', '.join(missing[:20])}")
        if unexpected:
            lines.append(f"  unexpected tensors ({len(unexpected)}): {', '.join(unexpected[:20])}")
        if shapes:
            lines.append(f"  shape mismatches ({len(shapes)}): {'; '.join(shapes[:20])}")
        if dtypes:
            lines.append(f"  dtype mismatches ({len(dtypes)}): {'; '.join(dtypes[:20])}")
        if nonfinite:
            lines.append(f"  tensors holding NaN/inf ({len(nonfinite)}): {', '.join(nonfinite[:20])}")
        raise InputError("\n".join(lines))


def load_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Load weights strictly, naming missing, unexpected, mis-shaped, mis-typed and non-finite tensors."""
    state = read_state_dict(path)
    check_state_dict(state, model.state_dict(), f"checkpoint {path}", exact_dtype=False)
    model.load_state_dict(state, strict=True)
