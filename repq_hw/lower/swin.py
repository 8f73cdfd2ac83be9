"""Lower a calibrated Swin transformer (timm 1.0 ``SwinTransformer``, v1) to the integer IR.

Tokens are kept row-major on the stage's ``H x W`` grid (token ``y*W + x``), channels last, as timm's
NHWC layout.  One block, with every tensor's type (a = activation bits, R = residual bits; stage s):

    residual int{R} (scale s_r[s]) --LAYERNORM norm1--> uint{a} (qkv input grid)
      --WINDOW_PARTITION (roll by -shift, pad with the zero point, w x w windows)--> uint{a} [nW*N, C]
      --GEMM qkv--> int32 --SLICE q|k|v--> REQUANT (q: x softmax scale, folded) --> uint{a}
      --SPLIT_HEADS (windows=nW)--> [nW*h, N, d]
      q,k --BMM_QK--> int32 --ADD_CONST (relative position bias [+ shifted-window mask], int32)--> int32
      --SOFTMAX--> uint{P+1} --LOG2_CODE--> uint{a} --ATTN_V (with v)--> int32 --MERGE_HEADS--> [nW*N, C]
      --REQUANT--> uint{a} --GEMM proj--> int32 --REQUANT--> int{R} --WINDOW_REVERSE (crop, roll back)-->
      [H*W, C] --ADD--> residual;  then the same MLP as ViT (norm2, fc1, GELU LUT, fc2, ADD).

Stage transition (stages 1..3 start with it): PATCH_MERGE (2x2 gather on the residual, zero pad on an odd
side) --LAYERNORM (downsample.norm, reparameterized into reduction)--> uint{a} --GEMM reduction--> int32
--REQUANT--> int{R} at the next stage's residual scale.

Input: PATCHIFY + GEMM (the patch conv) --REQUANT--> int{R} (its own scale) --LAYERNORM patch_embed.norm-->
int{R} on the stage-0 residual grid.  Head: LAYERNORM norm --> int{R} (its own scale) --AVG_POOL--> [1, C]
--REQUANT--> uint{a} (head input grid) --GEMM head--> int32 --REQUANT--> int32 logits on one common scale.

Residual scale: one per stage, ``s_r[s] = headroom * max|residual of stage s| / (2^(R-1) - 1)``, over the
calibration batch (every block input, the mid-block residual, the input of the next downsample or of the
final norm).  A stage's scale never meets another's: the only crossing is the reduction GEMM, whose
requantization lands on the new stage's grid (docs/lowering.md, "Swin").

Masked logits: the shifted-window mask (float -100) is an additive int32 constant ``-K`` with K large
enough that every masked probability is exactly 0 (proof in docs/lowering.md); K is derived per block from
the accumulator bound and the softmax's own constants.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn

from repq_hw.ir.graph import Graph, IntType
from repq_hw.ir.ops import Op
from repq_hw.ir.validate import absmax_centered
from repq_hw.lower.vit import LowerConfig, LoweringError, ViTLowering, _f, _uq, lower_with
from repq_hw.quant.model import QuantConfig
from repq_hw.quant.modules import ExplicitWindowAttention, QuantConv2d, QuantLinear

SWIN_CLASS = "timm.models.swin_transformer.SwinTransformer"


def _pair(v, where: str) -> int:
    """The side of a square (h, w) pair; refuses a rectangle."""
    a, b = (v, v) if isinstance(v, int) else tuple(v)
    if a != b:
        raise LoweringError(f"{where}: {a}x{b} is not square; the integer Swin lowering supports square "
                            "inputs and windows only")
    return int(a)


def check_swin(model: nn.Module) -> None:
    """Refuse what the lowering does not cover, naming the module and why."""
    from timm.models.swin_transformer import PatchMerging, SwinTransformer, SwinTransformerBlock

    if type(model) is not SwinTransformer:
        name = type(model).__name__
        why = " (Swin v2: scaled cosine attention and a log-spaced position MLP)" if "V2" in name else ""
        raise LoweringError(f"model: the Swin lowering needs timm's SwinTransformer (v1), got {name}{why}")
    if model.training:
        raise LoweringError("model: must be in eval mode (dropout and drop-path are not integer ops)")
    pe = model.patch_embed
    _pair(pe.img_size, "patch_embed.img_size")
    if not isinstance(pe.proj, QuantConv2d):
        raise LoweringError("patch_embed.proj: expected the quantized patch-embedding conv")
    if not isinstance(getattr(pe, "norm", None), nn.LayerNorm):
        raise LoweringError("patch_embed.norm: the Swin lowering needs a LayerNorm after the patch embedding")
    if getattr(model, "absolute_pos_embed", None) is not None:
        raise LoweringError("absolute_pos_embed: not supported by the integer Swin lowering")
    if model.global_pool != "avg":
        raise LoweringError(f"head.global_pool: expected 'avg', got {model.global_pool!r}")
    if not isinstance(model.head.fc, QuantLinear):
        raise LoweringError("head.fc: expected a quantized Linear classifier")
    windows = set()
    for s, layer in enumerate(model.layers):
        ds = layer.downsample
        if s == 0 and not isinstance(ds, nn.Identity):
            raise LoweringError("layers.0.downsample: the first stage must not downsample")
        if s > 0 and not isinstance(ds, PatchMerging):
            raise LoweringError(f"layers.{s}.downsample: expected timm's PatchMerging, got {type(ds).__name__}")
        for j, blk in enumerate(layer.blocks):
            where = f"layers.{s}.blocks.{j}"
            if not isinstance(blk, SwinTransformerBlock):
                raise LoweringError(f"{where}: expected a SwinTransformerBlock, got {type(blk).__name__}")
            if getattr(blk, "dynamic_mask", False):
                raise LoweringError(f"{where}: dynamic_mask is not supported (the mask must be a constant)")
            if not isinstance(blk.attn, ExplicitWindowAttention):
                raise LoweringError(f"{where}.attn: expected the quantized explicit window attention")
            windows.add(_pair(blk.window_size, f"{where}.window_size"))
            _pair(blk.shift_size, f"{where}.shift_size")
            _pair(blk.input_resolution, f"{where}.input_resolution")
            act = blk.mlp.act
            if not (isinstance(act, nn.GELU) and act.approximate == "none"):
                raise LoweringError(f"{where}.mlp.act: expected nn.GELU (erf), got {act}")
            if not isinstance(getattr(blk.mlp, "norm", nn.Identity()), nn.Identity):
                raise LoweringError(f"{where}.mlp.norm: an MLP norm is not supported by the integer lowering")
    if len(windows) > 1:
        raise LoweringError(f"layers: blocks use different window sizes {sorted(windows)}; the integer Swin "
                            "lowering needs one window size for every stage")


@torch.no_grad()
def swin_calibration_stats(model: nn.Module, images: torch.Tensor) -> dict:
    """The ranges the lowering needs that RepQ-ViT does not calibrate, on the calibrated fake-quant model:
    per-stage residual max|x|, the patch-conv output (before its norm), the final norm's output, and every
    fc1 output (the GELU input)."""
    stats = {"residual_absmax": [0.0] * len(model.layers), "fc1_absmax": {}, "embed_absmax": 0.0,
             "norm_absmax": 0.0}
    hooks = []

    def residual(stage):
        def hook(_, args):
            r = stats["residual_absmax"]
            r[stage] = max(r[stage], args[0].abs().max().item())
        return hook

    def put(key):
        def hook(_, args, out):
            stats[key] = max(stats[key], out.abs().max().item())
        return hook

    for s, layer in enumerate(model.layers):
        for j, blk in enumerate(layer.blocks):
            hooks.append(blk.register_forward_pre_hook(residual(s)))
            hooks.append(blk.norm2.register_forward_pre_hook(residual(s)))
            hooks.append(blk.mlp.act.register_forward_pre_hook(
                lambda _, a, k=(s, j): stats["fc1_absmax"].__setitem__(k, a[0].abs().max().item())))
        if s + 1 < len(model.layers):
            hooks.append(model.layers[s + 1].downsample.register_forward_pre_hook(residual(s)))
    hooks.append(model.norm.register_forward_pre_hook(residual(len(model.layers) - 1)))
    hooks.append(model.patch_embed.proj.register_forward_hook(put("embed_absmax")))
    hooks.append(model.norm.register_forward_hook(put("norm_absmax")))
    try:
        model(images)
    finally:
        for h in hooks:
            h.remove()
    return stats


class SwinLowering(ViTLowering):
    """Builds the Swin graph: patch embedding, stages of (patch merging, blocks), head."""

    def __init__(self, model: nn.Module, qcfg: QuantConfig, stats: dict, lcfg: LowerConfig, meta: dict):
        self.m, self.q, self.c, self.stats = model, qcfg, lcfg, stats
        from repq_hw.lower.builder import GraphBuilder

        self.b = GraphBuilder(meta)
        self.a_type = f"uint{qcfg.a_bits}"
        self.r_type = f"int{lcfg.residual_bits}"
        self.rmax = (1 << (lcfg.residual_bits - 1)) - 1
        self.stage_scales = [lcfg.residual_headroom * a / self.rmax for a in stats["residual_absmax"]]
        if not all(s > 0 and math.isfinite(s) for s in self.stage_scales):
            raise LoweringError(f"residual ranges {stats['residual_absmax']} must be positive and finite")
        self.s_r = self.stage_scales[0]
        self.rnd = lcfg.rounding

    def _grid_scale(self, absmax: float, what: str) -> float:
        s = self.c.residual_headroom * absmax / self.rmax
        if not (s > 0 and math.isfinite(s)):
            raise LoweringError(f"{what}: calibrated range {absmax} must be positive and finite")
        return s

    # -- pieces -----------------------------------------------------------------------------------
    def embed(self) -> tuple[str, int]:
        pe = self.m.patch_embed
        conv = pe.proj
        s_in, z_in, in_bits = _uq(conv.input_quantizer, "patch_embed.proj input quantizer")
        cin = conv.in_channels
        side = _pair(pe.img_size, "patch_embed.img_size")
        p = conv.kernel_size[0]
        if conv.kernel_size != conv.stride or conv.kernel_size[0] != conv.kernel_size[1] or conv.padding != (0, 0):
            raise LoweringError("patch_embed.proj: only a square kernel = stride convolution without padding")
        if side % p:
            raise LoweringError(f"patch_embed: image side {side} is not a multiple of the patch {p}")
        x = self.b.input("input", f"uint{in_bits}", (cin, side, side), scale=s_in, zero_point=z_in, layout="CHW")
        grid = side // p
        cols = self.b.node("patch_embed.patchify", Op.PATCHIFY, [x], f"uint{in_bits}", (grid * grid, cin * p * p),
                           attrs={"patch": p}, scale=s_in, zero_point=z_in, layout="NC")
        acc, acc_scale = self.gemm("patch_embed.proj", cols, conv, s_in, z_in)
        s_pe = self._grid_scale(self.stats["embed_absmax"], "patch_embed.proj output")
        tok = self.requant("patch_embed.requant", acc, acc_scale / s_pe, self.r_type, 0, s_pe)
        out = self.layernorm_onto("patch_embed.norm", tok, pe.norm, self.r_type, self.stage_scales[0], 0,
                                  in_scale=s_pe)
        return out, grid

    def patch_merge(self, s: int, x: str, side: int) -> tuple[str, int]:
        ds = self.m.layers[s].downsample
        pre = f"layers.{s}.downsample"
        c = self.b.shape(x)[1]
        half = -(-side // 2)
        g = self.b.node(f"{pre}.gather", Op.PATCH_MERGE, [x], self.r_type, (half * half, 4 * c),
                        attrs={"height": side, "width": side}, scale=self.s_r, layout="NC")
        a_in, s1, z1 = self.layernorm(f"{pre}.norm", g, ds.norm, ds.reduction.input_quantizer)
        acc, acc_scale = self.gemm(f"{pre}.reduction", a_in, ds.reduction, s1, z1)
        self.s_r = self.stage_scales[s]
        return self.to_residual(f"{pre}.requant", acc, acc_scale), half

    def window_attention(self, s: int, j: int, x: str, side: int) -> str:
        blk = self.m.layers[s].blocks[j]
        at = blk.attn
        pre = f"layers.{s}.blocks.{j}"
        win = _pair(blk.window_size, f"{pre}.window_size")
        shift = _pair(blk.shift_size, f"{pre}.shift_size")
        if _pair(blk.input_resolution, f"{pre}.input_resolution") != side:
            raise LoweringError(f"{pre}: input_resolution {blk.input_resolution} but the token grid is {side}x{side}")
        padded = -(-side // win) * win
        n_win = (padded // win) ** 2
        a_in, s1, z1 = self.layernorm(f"{pre}.norm1", x, blk.norm1, at.qkv.input_quantizer)
        c = self.b.shape(a_in)[1]
        wins = self.b.node(f"{pre}.window_partition", Op.WINDOW_PARTITION, [a_in], self.a_type,
                           (n_win * win * win, c),
                           attrs={"height": side, "width": side, "window": win, "shift": shift, "pad_value": z1},
                           scale=s1, zero_point=z1, layout="NC")
        heads = at.num_heads
        if c % heads:
            raise LoweringError(f"{pre}.attn: {c} channels do not split into {heads} heads")
        mask = blk.attn_mask
        if (mask is None) != (shift == 0):
            raise LoweringError(f"{pre}: attn_mask must be set exactly when the block shifts (shift {shift})")

        def bias_and_mask(logits, s_logit, sm, zps):
            return self.logit_constants(pre, logits, s_logit, sm, zps, at, mask, n_win)

        upd = self.self_attention(pre, at, wins, s1, z1, heads, c // heads, windows=n_win, q_scale=float(at.scale),
                                  logit_bias=bias_and_mask)
        back = self.b.node(f"{pre}.window_reverse", Op.WINDOW_REVERSE, [upd], self.r_type, (side * side, c),
                           attrs={"height": side, "width": side, "window": win, "shift": shift}, scale=self.s_r,
                           layout="NC")
        return self.b.node(f"{pre}.add1", Op.ADD, [x, back], self.r_type, self.b.shape(x), scale=self.s_r,
                           layout="NC")

    def logit_constants(self, pre: str, logits: str, s_logit: float, sm: dict, zps, at, mask, n_win: int) -> str:
        """The relative position bias (and, for a shifted block, the mask) as one int32 constant added to the
        q.k^T accumulators: ``bias_q[h, i, j] = round_half_even(bias[h, i, j] / (s_q s_k))`` (float64 quotient),
        tiled over the windows; masked entries get ``bias_q - K`` with K from :func:`mask_offset`."""
        bias = _f(at.rel_pos_bias())[0]  # [h, N, N], float32 values from timm's table
        bias_q = np.round(bias / s_logit).astype(np.int64)
        z_q, z_k, d = zps
        q_t = self.b.type_of(self.b.g.nodes[-1].inputs[0])
        k_t = self.b.type_of(self.b.g.nodes[-1].inputs[1])
        acc_bound = d * absmax_centered(q_t, z_q) * absmax_centered(k_t, z_k)
        value = bias_q
        if mask is not None:
            m = _f(mask)  # [nW, N, N] of 0 / -100
            if m.shape[0] != n_win or not np.all((m == 0) | (m == -100.0)):
                raise LoweringError(f"{pre}.attn_mask: expected [{n_win}, N, N] of 0 / -100, got shape {m.shape}")
            k = mask_offset(acc_bound + int(np.abs(bias_q).max(initial=0)), sm)
            value = bias_q[None] - k * (m[:, None] != 0)  # [nW, h, N, N]
            value = value.reshape(-1, *bias_q.shape[1:])
        bound = acc_bound + int(np.abs(value).max(initial=0))
        if bound >= 1 << 31:
            raise LoweringError(f"{pre}.attn: q.k^T + bias + mask reaches {bound}, beyond int32")
        gh, n, _ = self.b.shape(logits)
        return self.b.node(f"{pre}.attn.bias_mask", Op.ADD_CONST, [logits], "int32", (gh, n, n),
                           consts={"value": (value, IntType(True, 32, value.shape))}, scale=s_logit, layout="HNN")

    def block(self, s: int, j: int, x: str, side: int) -> str:
        x = self.window_attention(s, j, x, side)
        blk = self.m.layers[s].blocks[j]
        return self.mlp_block(f"layers.{s}.blocks.{j}", blk, x, self.stats["fc1_absmax"][(s, j)])

    def head(self, x: str) -> str:
        s_n = self._grid_scale(self.stats["norm_absmax"], "norm output")
        y = self.layernorm_onto("norm", x, self.m.norm, self.r_type, s_n, 0)
        c = self.b.shape(y)[1]
        pooled = self.b.node("head.global_pool", Op.AVG_POOL, [y], self.r_type, (1, c), attrs={"rounding": self.rnd},
                             scale=s_n, layout="NC")
        fc = self.m.head.fc
        s_h, z_h, _ = _uq(fc.input_quantizer, "head.fc input quantizer")
        a_in = self.requant("head.fc_in", pooled, np.array([s_n / s_h]), self.a_type, z_h, s_h)
        acc, acc_scale = self.gemm("head.fc", a_in, fc, s_h, z_h)
        return self.logits("head.logits", acc, acc_scale, z_h)

    def build(self) -> Graph:
        x, side = self.embed()
        for s, layer in enumerate(self.m.layers):
            if s > 0:
                x, side = self.patch_merge(s, x, side)
            for j in range(len(layer.blocks)):
                x = self.block(s, j, x, side)
        self.b.g.outputs.append(self.head(x))
        return self.b.g


def mask_offset(bound: int, sm: dict) -> int:
    """K such that a logit lowered by K is exactly 0 after SOFTMAX (docs/lowering.md, "Swin: the mask").

    Unmasked logits lie in [-B, B] (B = ``bound``), and every row keeps one unmasked entry (its diagonal),
    so the row max m >= -B and a masked logit x <= B - K: m - x >= K - 2B.  SOFTMAX forms
    u = -rshift_round((x - m) * M, s) >= (m - x) * M / 2^s - 1/2; with K >= 2B + ceil(((E + 2) 2^F + 1) 2^s / M)
    that is u >= (E + 2) 2^F, so the exponent n = u >> F >= E + 2 and e = rshift_round(LUT[f], n) with
    LUT[f] <= 2^E is round(<= 1/4) = 0 in every rounding mode; P = round_div(0 * 2^P, S) = 0."""
    e, f, s, mult = int(sm["lut_bits"]), int(sm["frac_bits"]), int(sm["shift"]), int(sm["multiplier"])
    need = ((e + 2) * (1 << f) + 1) << s
    return 2 * bound + -(-need // mult)


def lower_swin(model: nn.Module, qcfg: QuantConfig, calib_images: torch.Tensor,
               lcfg: LowerConfig = LowerConfig(), meta: dict | None = None) -> Graph:
    """Lower a calibrated Swin (v1) to a validated integer graph (arguments as :func:`lower_vit`)."""
    return lower_with(SwinLowering, check_swin, swin_calibration_stats, "swin", model, qcfg, calib_images, lcfg,
                      meta)
