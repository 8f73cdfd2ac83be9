"""Lower a calibrated ViT/DeiT (``zero_point="round"``) to the integer IR.

The data flow of one block, with every tensor's type (a = activation bits, R = residual bits):

    residual int{R} --LAYERNORM(norm1)--> uint{a} (qkv input grid, z~ integer)
      --GEMM qkv--> int32 --SLICE q|k|v--> REQUANT --> uint{a} (q, k, v grids) --SPLIT_HEADS-->
      q,k --BMM_QK--> int32 --SOFTMAX--> uint{P+1} (Q0.P) --LOG2_CODE--> uint{a} log2 codes
      codes,v --ATTN_V (shift-add, sqrt2 split)--> int32 --MERGE_HEADS--> REQUANT --> uint{a} (proj input)
      --GEMM proj--> int32 --REQUANT--> int{R} --ADD(residual, saturating)--> residual
    residual --LAYERNORM(norm2)--> uint{a} --GEMM fc1--> int32 --REQUANT--> int{G} (GELU input grid)
      --LUT gelu--> uint{a} (fc2 input grid) --GEMM fc2--> int32 --REQUANT--> int{R} --ADD--> residual

Head: SELECT_TOKEN(class token) --LAYERNORM(norm)--> uint{a} --GEMM head--> int32 --REQUANT--> int32 logits
on one common scale. Input: the 8-bit codes of the patch-embedding input quantizer (host-side
preprocessing: ``code = clamp(round(x / s_in) + z_in, 0, 255)``), PATCHIFY (im2col), GEMM, REQUANT onto the
residual grid, ADD_CONST (position embedding), CONCAT_TOKENS (class token + its position embedding).

The residual stream is not quantized by RepQ-ViT; here it is int{R} (default R = 16) with one scale for
the whole model, ``s_r = headroom * max|residual over calibration| / (2^(R-1) - 1)``; see docs/lowering.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from repq_hw.ir.graph import Graph, IntType
from repq_hw.ir.ops import Op
from repq_hw.ir.validate import validate_graph
from repq_hw.lower.builder import GraphBuilder, signed_multipliers
from repq_hw.lower.constants import exp2_lut, log2_thresholds, make_gelu_lut, quantize_multiplier
from repq_hw.quant.model import QuantConfig, quantizers
from repq_hw.quant.modules import ExplicitAttention, QuantConv2d
from repq_hw.quant.quantizers import LogSqrt2Quantizer, UniformQuantizer
from repq_hw.errors import InputError


class LoweringError(InputError):
    """The calibrated model cannot be lowered; the message names the module and what was expected."""


@dataclass(frozen=True)
class LowerConfig:
    """Integer design choices of the lowering (see docs/lowering.md).

    Args:
        residual_bits: R, width of the residual stream.
        residual_headroom: s_r covers headroom x the calibrated max |residual|.
        ln_frac_bits: F of the LayerNorm's normalised value (Q.F).
        softmax_frac_bits: exp2 LUT index bits.
        softmax_lut_bits: fraction bits of the exp2 LUT entries.
        softmax_out_bits: P, fraction bits of the softmax probability (Q0.P).
        attn_max_shift: cap on the attn.V shift precision F; log2 codes > 2F-1 become the zero state.
        sqrt2_frac_bits: fraction bits of the fixed-point sqrt(2).
        gelu_in_bits: G, width of the signed GELU-input grid (the LUT has 2^G entries).
        rounding: rounding mode of every requantization / division.
    """

    residual_bits: int = 16
    residual_headroom: float = 2.0
    ln_frac_bits: int = 16
    softmax_frac_bits: int = 10
    softmax_lut_bits: int = 22
    softmax_out_bits: int = 16
    attn_max_shift: int = 12
    sqrt2_frac_bits: int = 15
    gelu_in_bits: int = 10
    rounding: str = "half_even"


def _f(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().cpu().numpy()


def _check_vit(model: nn.Module) -> None:
    from timm.models.vision_transformer import VisionTransformer

    if not isinstance(model, VisionTransformer):
        raise LoweringError(f"the ViT/DeiT lowering needs a timm VisionTransformer, got {type(model).__name__}")
    checks = [
        (model.cls_token is not None and model.global_pool == "token", "global_pool='token' with a class token"),
        (getattr(model, "num_reg_tokens", 0) == 0, "no register tokens"),
        (not getattr(model, "no_embed_class", False), "position embedding on the class token"),
        (isinstance(model.norm_pre, nn.Identity), "no norm_pre"),
        (isinstance(model.fc_norm, nn.Identity), "no fc_norm"),
        (isinstance(getattr(model.patch_embed, "norm", nn.Identity()), nn.Identity), "no patch_embed.norm"),
        (isinstance(model.patch_embed.proj, QuantConv2d), "a quantized patch-embedding conv"),
    ]
    for ok, what in checks:
        if not ok:
            raise LoweringError(f"model: unsupported configuration, the integer lowering needs {what}")
    for i, blk in enumerate(model.blocks):
        for attr in ("ls1", "ls2"):
            if not isinstance(getattr(blk, attr), nn.Identity):
                raise LoweringError(f"blocks.{i}.{attr}: LayerScale is not supported by the integer lowering")
        if not isinstance(blk.attn, ExplicitAttention):
            raise LoweringError(f"blocks.{i}.attn: expected the quantized explicit attention")
        if not isinstance(getattr(blk.mlp, "norm", nn.Identity()), nn.Identity):
            raise LoweringError(f"blocks.{i}.mlp.norm: an MLP norm is not supported by the integer lowering")
        act = blk.mlp.act
        if not (isinstance(act, nn.GELU) and act.approximate == "none"):
            raise LoweringError(f"blocks.{i}.mlp.act: expected nn.GELU (erf), got {act}")


@torch.no_grad()
def calibration_stats(model: nn.Module, images: torch.Tensor) -> dict:
    """Ranges the lowering needs that RepQ-ViT does not calibrate: the residual stream and fc1 outputs,
    observed on the calibrated fake-quant model."""
    stats = {"residual_absmax": 0.0, "fc1_absmax": {}}
    hooks = []

    def residual(_, args):
        stats["residual_absmax"] = max(stats["residual_absmax"], args[0].abs().max().item())

    for i, blk in enumerate(model.blocks):
        hooks.append(blk.register_forward_pre_hook(residual))
        hooks.append(blk.mlp.act.register_forward_pre_hook(
            lambda _, a, i=i: stats["fc1_absmax"].__setitem__(i, a[0].abs().max().item())))
    hooks.append(model.norm.register_forward_pre_hook(residual))
    try:
        model(images)
    finally:
        for h in hooks:
            h.remove()
    return stats


def _uq(q: nn.Module, where: str) -> tuple[float, int, int]:
    """(scale, integer zero point, bits) of a calibrated per-tensor uniform quantizer."""
    if not isinstance(q, UniformQuantizer) or q.channel_wise or not q.inited:
        raise LoweringError(f"{where}: expected a calibrated per-tensor uniform quantizer")
    z = float(q.zero_point)
    if z != round(z):
        raise LoweringError(f"{where}: zero point {z} is not an integer (calibrate with zero_point='round')")
    return float(q.delta), int(round(z)), q.n_bits


def _weights(lin: nn.Module, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(codes [N, K] uint, zero points [N] int32, scales [N] float64) of a per-channel weight quantizer."""
    wq = lin.weight_quantizer
    if not wq.inited or not wq.channel_wise:
        raise LoweringError(f"{where}: weight quantizer must be calibrated per channel")
    w = lin.weight.detach()
    codes = wq.codes(w).reshape(w.shape[0], -1)
    zp = wq.zero_point.reshape(-1)
    if not torch.equal(zp, torch.round(zp)):
        raise LoweringError(f"{where}: weight zero points are not integers")
    return codes.to(torch.int64).numpy(), zp.to(torch.int64).numpy().astype(np.int32), _f(wq.delta).reshape(-1)


class ViTLowering:
    """Builds the graph; one method per piece of the network, in data-flow order."""

    def __init__(self, model: nn.Module, qcfg: QuantConfig, stats: dict, lcfg: LowerConfig, meta: dict):
        self.m, self.q, self.c, self.stats = model, qcfg, lcfg, stats
        self.b = GraphBuilder(meta)
        self.a_type = f"uint{qcfg.a_bits}"
        self.r_type = f"int{lcfg.residual_bits}"
        rmax = (1 << (lcfg.residual_bits - 1)) - 1
        self.s_r = lcfg.residual_headroom * stats["residual_absmax"] / rmax
        self.rnd = lcfg.rounding

    # -- generic pieces ---------------------------------------------------------------------------
    def gemm(self, name: str, x: str, lin: nn.Module, a_scale: float, a_zp: int) -> tuple[str, np.ndarray]:
        """Integer GEMM of a QuantLinear/QuantConv2d; returns (int32 acc tensor, per-channel acc scale)."""
        codes, wzp, sw = _weights(lin, name)
        acc_scale = a_scale * sw
        bias = np.round(_f(lin.bias) / acc_scale).astype(np.int64)
        if np.abs(bias).max(initial=0) >= 1 << 31:
            raise LoweringError(f"{name}: bias does not fit int32 at the accumulator scale")
        m = self.b.shape(x)[0]
        out = self.b.node(name, Op.GEMM, [x], "int32", (m, codes.shape[0]), attrs={"a_zp": a_zp},
                          consts={"weight": (codes, IntType(False, lin.weight_quantizer.n_bits, codes.shape)),
                                  "w_zp": wzp, "bias": bias.astype(np.int32)},
                          scale=acc_scale.tolist(), layout="NC")
        return out, acc_scale

    def requant(self, name: str, x: str, real, out_type: str, zp: int, out_scale: float,
                offset=None, layout: str = "NC") -> str:
        mult, shift = signed_multipliers(real)
        consts = {"multiplier": mult, "shift": shift}
        if offset is not None:
            consts["offset"] = offset
        return self.b.node(name, Op.REQUANT, [x], out_type, self.b.shape(x), attrs={"zero_point": zp,
                           "rounding": self.rnd}, consts=consts, scale=out_scale, zero_point=zp, layout=layout)

    def to_residual(self, name: str, acc: str, acc_scale: np.ndarray) -> str:
        return self.requant(name, acc, acc_scale / self.s_r, self.r_type, 0, self.s_r)

    def layernorm(self, name: str, x: str, norm: nn.LayerNorm, out_q: nn.Module) -> tuple[str, float, int]:
        """LayerNorm of the residual stream onto the codes of the next layer's input quantizer."""
        s_out, z_out, _ = _uq(out_q, f"{name} output quantizer")
        return self.layernorm_onto(name, x, norm, self.a_type, s_out, z_out), s_out, z_out

    def layernorm_onto(self, name: str, x: str, norm: nn.LayerNorm, out_type: str, s_out: float, z_out: int,
                       in_scale: float | None = None) -> str:
        """LayerNorm of ``x`` (one scale ``in_scale``, default the residual's) onto the grid (s_out, z_out).
        The normalised value is scale-free, so only eps sees the input scale: eps_q = eps * C^2 / s_in^2."""
        c = self.b.shape(x)[-1]
        f = self.c.ln_frac_bits
        if not isinstance(norm, nn.LayerNorm) or not norm.elementwise_affine or norm.bias is None:
            raise LoweringError(f"{name}: expected an affine nn.LayerNorm with a bias, got {norm}")
        gamma, beta = _f(norm.weight), _f(norm.bias)
        mult, shift = signed_multipliers(gamma / (s_out * 2.0**f))
        offset = np.round(beta / s_out * np.exp2(shift.astype(np.float64))).astype(np.int64)
        s_in = self.s_r if in_scale is None else in_scale
        eps_q = int(round(norm.eps * c * c / s_in**2))
        return self.b.node(name, Op.LAYERNORM, [x], out_type, self.b.shape(x),
                           attrs={"eps_q": eps_q, "frac_bits": f, "zero_point": z_out, "rounding": self.rnd},
                           consts={"multiplier": mult, "shift": shift, "offset": offset},
                           scale=s_out, zero_point=z_out, layout="NC")

    # -- network pieces ---------------------------------------------------------------------------
    def embed(self) -> str:
        pe = self.m.patch_embed
        conv = pe.proj
        s_in, z_in, in_bits = _uq(conv.input_quantizer, "patch_embed.proj input quantizer")
        cin, (h, w) = conv.in_channels, pe.img_size
        p = conv.kernel_size[0]
        if conv.kernel_size != conv.stride or conv.kernel_size[0] != conv.kernel_size[1] or conv.padding != (0, 0):
            raise LoweringError("patch_embed.proj: only a square kernel = stride convolution without padding")
        x = self.b.input("input", f"uint{in_bits}", (cin, h, w), scale=s_in, zero_point=z_in, layout="CHW")
        cols = self.b.node("patch_embed.patchify", Op.PATCHIFY, [x], f"uint{in_bits}",
                           ((h // p) * (w // p), cin * p * p), attrs={"patch": p}, scale=s_in, zero_point=z_in,
                           layout="NC")
        acc, acc_scale = self.gemm("patch_embed.proj", cols, conv, s_in, z_in)
        tok = self.to_residual("patch_embed.requant", acc, acc_scale)
        pos = _f(self.m.pos_embed)[0]  # [1 + Np, E]
        rt = self.b.type_of(tok)
        pos_q = np.clip(np.round(pos / self.s_r), rt.min, rt.max).astype(np.int64)
        tok = self.b.node("pos_embed.add", Op.ADD_CONST, [tok], self.r_type, self.b.shape(tok),
                          consts={"value": (pos_q[1:], IntType(True, rt.bits, pos_q[1:].shape))},
                          scale=self.s_r, layout="NC")
        cls = np.clip(np.round((_f(self.m.cls_token)[0] + pos[:1]) / self.s_r), rt.min, rt.max).astype(np.int64)
        n, e = self.b.shape(tok)
        return self.b.node("cls_token.concat", Op.CONCAT_TOKENS, [tok], self.r_type, (n + 1, e),
                           consts={"rows": (cls, IntType(True, rt.bits, cls.shape))}, scale=self.s_r,
                           layout="NC")

    def attention(self, i: int, x: str) -> str:
        blk = self.m.blocks[i]
        at = blk.attn
        pre = f"blocks.{i}"
        a_in, s1, z1 = self.layernorm(f"{pre}.norm1", x, blk.norm1, at.qkv.input_quantizer)
        upd = self.self_attention(pre, at, a_in, s1, z1, at.num_heads, at.head_dim)
        return self.b.node(f"{pre}.add1", Op.ADD, [x, upd], self.r_type, self.b.shape(x), scale=self.s_r,
                           layout="NC")

    def self_attention(self, pre: str, at: nn.Module, a_in: str, s1: float, z1: int, h: int, d: int,
                       windows: int = 1, q_scale: float | None = None, logit_bias=None) -> str:
        """Multi-head attention of the codes ``a_in`` [G*N, C] (G = windows, each attending within itself)
        up to the residual-grid output of ``proj`` [G*N, C].

        The softmax scale is applied where the reference applies it: ViT/DeiT after q.k^T (folded into the
        softmax multiplier), Swin to q before its quantizer (``q_scale``: folded into q's requantization).
        ``logit_bias(logits, s_logit, softmax_attrs)`` may add constants to the q.k^T accumulators (Swin's
        relative position bias and shifted-window mask) and returns the new logits tensor."""
        c = h * d
        acc, acc_scale = self.gemm(f"{pre}.attn.qkv", a_in, at.qkv, s1, z1)
        qs = {}
        for j, (role, qz) in enumerate((("q", at.matmul1.quantizer_A), ("k", at.matmul1.quantizer_B),
                                        ("v", at.matmul2.quantizer_B))):
            s, z, _ = _uq(qz, f"{pre}.attn {role} quantizer")
            sl = self.b.node(f"{pre}.attn.{role}_slice", Op.SLICE, [acc], "int32", (self.b.shape(acc)[0], c),
                             attrs={"start": j * c, "stop": (j + 1) * c}, scale=acc_scale[j * c:(j + 1) * c].tolist(),
                             layout="NC")
            real = acc_scale[j * c:(j + 1) * c] / s
            if role == "q" and q_scale is not None:
                real = real * q_scale
            codes = self.requant(f"{pre}.attn.{role}", sl, real, self.a_type, z, s)
            attrs = {"heads": h} if windows == 1 else {"heads": h, "windows": windows}
            heads = self.b.node(f"{pre}.attn.{role}_heads", Op.SPLIT_HEADS, [codes], self.a_type,
                                (windows * h, self.b.shape(codes)[0] // windows, d), attrs=attrs, scale=s,
                                zero_point=z, layout="HND")
            qs[role] = (heads, s, z)
        (q, s_q, z_q), (k, s_k, z_k), (v, s_v, z_v) = qs["q"], qs["k"], qs["v"]
        gh, n = self.b.shape(q)[:2]
        logits = self.b.node(f"{pre}.attn.qk", Op.BMM_QK, [q, k], "int32", (gh, n, n),
                             attrs={"q_zp": z_q, "k_zp": z_k}, scale=s_q * s_k, layout="HNN")
        c_ = self.c
        real = s_q * s_k * (1.0 if q_scale is not None else at.scale) * math.log2(math.e) * 2.0**c_.softmax_frac_bits
        mult, shift = quantize_multiplier(real)
        p_bits = c_.softmax_out_bits
        sm_attrs = {"multiplier": mult, "shift": shift, "frac_bits": c_.softmax_frac_bits,
                    "lut_bits": c_.softmax_lut_bits, "out_bits": p_bits, "rounding": self.rnd}
        if logit_bias is not None:
            logits = logit_bias(logits, s_q * s_k, sm_attrs, (z_q, z_k, d))
        prob = self.b.node(f"{pre}.attn.softmax", Op.SOFTMAX, [logits], f"uint{p_bits + 1}", (gh, n, n),
                           attrs=sm_attrs,
                           consts={"lut": exp2_lut(c_.softmax_frac_bits, c_.softmax_lut_bits).astype(np.int64)},
                           scale=2.0**-p_bits, layout="HNN")
        lq = at.matmul2.quantizer_A
        if not isinstance(lq, LogSqrt2Quantizer):
            raise LoweringError(f"{pre}.attn.matmul2: the integer pipeline needs the log-sqrt(2) quantizer")
        bits = lq.n_bits
        n_codes = min((1 << bits) - 1, 2 * c_.attn_max_shift)  # codes 0..n_codes-1, the rest: zero state
        f_attn = (n_codes - 1) // 2 + 1
        delta = float(lq.delta)
        codes = self.b.node(f"{pre}.attn.log2_code", Op.LOG2_CODE, [prob], f"uint{bits}", (gh, n, n),
                            attrs={"bits": bits},
                            consts={"thresholds": log2_thresholds(delta, bits, p_bits, n_codes)},
                            scale=delta, layout="HNN")
        av = self.b.node(f"{pre}.attn.attn_v", Op.ATTN_V, [codes, v], "int32", (gh, n, d),
                         attrs={"v_zp": z_v, "bits": bits, "shift_frac": f_attn, "max_code": n_codes - 1,
                                "sqrt2_frac_bits": c_.sqrt2_frac_bits, "rounding": self.rnd},
                         scale=delta * s_v * 2.0**-f_attn, layout="HND")
        attrs = {} if windows == 1 else {"windows": windows}
        merged = self.b.node(f"{pre}.attn.merge_heads", Op.MERGE_HEADS, [av], "int32", (windows * n, c),
                             attrs=attrs, scale=delta * s_v * 2.0**-f_attn, layout="NC")
        s_p, z_p, _ = _uq(at.proj.input_quantizer, f"{pre}.attn.proj input quantizer")
        p_in = self.requant(f"{pre}.attn.proj_in", merged, delta * s_v * 2.0**-f_attn / s_p, self.a_type, z_p, s_p)
        acc, acc_scale = self.gemm(f"{pre}.attn.proj", p_in, at.proj, s_p, z_p)
        return self.to_residual(f"{pre}.attn.proj_requant", acc, acc_scale)

    def mlp(self, i: int, x: str) -> str:
        return self.mlp_block(f"blocks.{i}", self.m.blocks[i], x, self.stats["fc1_absmax"][i])

    def mlp_block(self, pre: str, blk: nn.Module, x: str, fc1_absmax: float) -> str:
        """norm2 -> fc1 -> GELU (LUT) -> fc2 -> residual add, for the block ``blk`` named ``pre``."""
        fc1, fc2 = blk.mlp.fc1, blk.mlp.fc2
        a_in, s1, z1 = self.layernorm(f"{pre}.norm2", x, blk.norm2, fc1.input_quantizer)
        acc, acc_scale = self.gemm(f"{pre}.mlp.fc1", a_in, fc1, s1, z1)
        g_bits = self.c.gelu_in_bits
        g_max = (1 << (g_bits - 1)) - 1
        s_g = fc1_absmax / g_max
        g_in = self.requant(f"{pre}.mlp.gelu_in", acc, acc_scale / s_g, f"int{g_bits}", 0, s_g)
        s2, z2, b2 = _uq(fc2.input_quantizer, f"{pre}.mlp.fc2 input quantizer")
        table = make_gelu_lut(s_g, -g_max - 1, g_max, s2, z2, b2).astype(np.int64)
        a2 = self.b.node(f"{pre}.mlp.gelu", Op.LUT, [g_in], self.a_type, self.b.shape(g_in),
                         attrs={"in_min": -g_max - 1}, consts={"table": table}, scale=s2, zero_point=z2,
                         layout="NC")
        acc, acc_scale = self.gemm(f"{pre}.mlp.fc2", a2, fc2, s2, z2)
        upd = self.to_residual(f"{pre}.mlp.fc2_requant", acc, acc_scale)
        return self.b.node(f"{pre}.add2", Op.ADD, [x, upd], self.r_type, self.b.shape(x), scale=self.s_r,
                           layout="NC")

    def head(self, x: str) -> str:
        tok = self.b.node("head.select_cls", Op.SELECT_TOKEN, [x], self.r_type, (1, self.b.shape(x)[1]),
                          attrs={"index": 0}, scale=self.s_r, layout="NC")
        head = self.m.head
        a_in, s_h, z_h = self.layernorm("norm", tok, self.m.norm, head.input_quantizer)
        acc, acc_scale = self.gemm("head", a_in, head, s_h, z_h)
        return self.logits("head.logits", acc, acc_scale, z_h)

    def logits(self, name: str, acc: str, acc_scale: np.ndarray, z_h: int) -> str:
        """The head GEMM's accumulators (its node is the last one built) onto one common logit scale: the
        finest that keeps the requantized logits well inside int32."""
        gnode = self.b.g.nodes[-1]
        w, wzp = self.b.g.const(gnode, "weight").astype(np.int64), self.b.g.const(gnode, "w_zp").astype(np.int64)
        amax = max(z_h, (1 << self.q.a_bits) - 1 - z_h)
        acc_bound = float((np.abs(w - wzp[:, None]).sum(1) * amax).max() + 1)
        ratio_max = 2.0 ** max(0, min(16, math.floor(30 - math.log2(acc_bound))))
        s_logit = float(acc_scale.max()) / ratio_max
        return self.requant(name, acc, acc_scale / s_logit, "int32", 0, s_logit)

    def build(self) -> Graph:
        x = self.embed()
        for i in range(len(self.m.blocks)):
            x = self.attention(i, x)
            x = self.mlp(i, x)
        logits = self.head(x)
        self.b.g.outputs.append(logits)
        return self.b.g


def lower_vit(model: nn.Module, qcfg: QuantConfig, calib_images: torch.Tensor,
              lcfg: LowerConfig = LowerConfig(), meta: dict | None = None) -> Graph:
    """Lower a calibrated ViT/DeiT to a validated integer graph.

    Args:
        model: calibrated with ``zero_point="round"`` (quantizers on).
        qcfg: its QuantConfig.
        calib_images: the calibration batch (for the residual and GELU-input ranges).
        lcfg: integer design choices.
        meta: extra graph metadata (model name, bits, ...).
    """
    return lower_with(ViTLowering, _check_vit, calibration_stats, "vit", model, qcfg, calib_images, lcfg, meta)


def lower_with(lowering: type, check, stats_of, family: str, model: nn.Module, qcfg: QuantConfig,
               calib_images: torch.Tensor, lcfg: LowerConfig, meta: dict | None) -> Graph:
    """The steps every lowering shares: refuse what is not RepQ-ViT + reparam + integer zero points, run the
    family's structural ``check``, require every quantizer calibrated, measure the ranges RepQ-ViT does not
    calibrate (``stats_of``), build with ``lowering`` and validate."""
    if qcfg.method != "repq" or not qcfg.reparam or qcfg.zero_point != "round":
        raise LoweringError("lowering needs a RepQ-ViT model calibrated with reparam and zero_point='round' "
                            f"(got method={qcfg.method}, reparam={qcfg.reparam}, zero_point={qcfg.zero_point})")
    check(model)
    for name, qz in quantizers(model):
        if not qz.inited:
            raise LoweringError(f"{name}: quantizer is not calibrated")
    stats = stats_of(model, calib_images)
    info = {"family": family, "w_bits": qcfg.w_bits, "a_bits": qcfg.a_bits, "lower_config": lcfg.__dict__,
            "residual_absmax": stats["residual_absmax"], **(meta or {})}
    g = lowering(model, qcfg, stats, lcfg, info).build()
    validate_graph(g)
    return g
