"""Which models repq-hw supports, and how they are built and loaded.

Three families:
* timm's ImageNet models from the RepQ-ViT paper (ViT-S/B, DeiT-T/S/B, Swin-T/S/B). Weights come from
  ``--checkpoint`` (local safetensors, or .pth/.bin read with ``weights_only=True``) or from timm's own
  hub path with ``--pretrained`` (needs a network).
* the bundled real-data models trained on scikit-learn's digits (``vit_digits``, ``swin_digits``): their
  weights ship inside the package and are loaded by default.
* tiny random-weight configurations for tests (``test_*``), built from the same timm classes.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn

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
}

WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_MODEL = "vit_digits"


def digits_model_names() -> tuple[str, ...]:
    from repq_hw.models.digits_configs import DIGITS_MODEL_CONFIGS

    return tuple(DIGITS_MODEL_CONFIGS)


def supported_models() -> tuple[str, ...]:
    """All model names accepted by :func:`create_model`."""
    return digits_model_names() + TIMM_MODELS + tuple(TEST_MODEL_CONFIGS)


def _build_class(path: str, kwargs: dict) -> nn.Module:
    import importlib

    module, cls = path.rsplit(".", 1)
    return getattr(importlib.import_module(module), cls)(**kwargs)


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
        return {"name": name, "class": "timm.create_model", "kwargs": {}}
    raise ValueError(f"unknown model {name!r}; supported models: {', '.join(supported_models())}")


def bundled_weights(name: str) -> Path:
    return WEIGHTS_DIR / f"{name}.safetensors"


def bundled_info(name: str) -> dict:
    """The training record of a bundled model (float accuracy, split, preprocessing)."""
    path = WEIGHTS_DIR / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no training record {path} for bundled model {name!r}")
    return json.loads(path.read_text())


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
        raise ValueError("give either checkpoint or pretrained, not both")
    if cfg["class"] == "timm.create_model":
        import timm

        model = timm.create_model(name, pretrained=pretrained)
    else:
        if pretrained:
            raise ValueError(f"--pretrained is for timm's hub models; {name!r} is a project model")
        model = _build_class(cfg["class"], cfg["kwargs"])
        if checkpoint is None and name in digits_model_names():
            checkpoint = bundled_weights(name)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model.eval()


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a weights file without executing pickled code.

    safetensors files are read with safetensors; .pth/.pt/.bin with ``torch.load(weights_only=True)``.
    A dict with a single ``model``/``state_dict``/``model_ema`` entry (training checkpoints) is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # safetensors raises its own error types
            raise ValueError(f"checkpoint {path}: not a readable safetensors file ({e})") from e
    if path.suffix not in (".pth", ".pt", ".bin"):
        raise ValueError(f"checkpoint {path}: expected .safetensors, .pth, .pt or .bin")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"checkpoint {path}: cannot be loaded with weights_only=True ({e})") from e
    for key in ("model", "state_dict", "model_ema"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"checkpoint {path}: expected a state_dict of tensors")
    return obj


def load_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Load weights strictly, naming missing, unexpected and mis-shaped tensors."""
    state = read_state_dict(path)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        lines = [f"checkpoint {path} does not match the model:"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {', '.join(missing[:20])}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {', '.join(unexpected[:20])}")
        if shapes:
            lines.append(f"  shape mismatches ({len(shapes)}): {'; '.join(shapes[:20])}")
        raise ValueError("\n".join(lines))
    model.load_state_dict(state, strict=True)
