"""Lowering: quantized model -> pure-integer IR (float scales become integers only in constants.py).

:func:`lower_model` picks the lowering by the model's class: ``vit.lower_vit`` (timm VisionTransformer:
ViT, DeiT) or ``swin.lower_swin`` (timm SwinTransformer v1)."""

from __future__ import annotations


def lower_model(model, qcfg, calib_images, lcfg=None, meta=None):
    """Lower a calibrated ViT/DeiT/Swin to a validated integer graph (see ``lower_vit`` / ``lower_swin``)."""
    from timm.models.swin_transformer import SwinTransformer

    from repq_hw.lower.vit import LowerConfig, LoweringError, lower_vit

    lcfg = lcfg or LowerConfig()
    name = type(model).__name__
    if isinstance(model, SwinTransformer) or "Swin" in name:
        from repq_hw.lower.swin import lower_swin

        return lower_swin(model, qcfg, calib_images, lcfg, meta)
    from timm.models.vision_transformer import VisionTransformer

    if isinstance(model, VisionTransformer):
        return lower_vit(model, qcfg, calib_images, lcfg, meta)
    raise LoweringError(f"model: no integer lowering for {name} (supported: timm VisionTransformer, "
                        "SwinTransformer v1)")
