"""Structural twins of lowered ViT/DeiT graphs, for counting without calibrating.

``vit_skeleton(arch, w_bits, a_bits)`` builds an IR :class:`Graph` with exactly the nodes, tensor types and
shapes, attributes and constant *types/shapes* that ``repq_hw.lower.vit.lower_vit`` produces for that
architecture, but with placeholder (zero, read-only, unallocated) constant values. Every counting rule of
:mod:`repq_hw.cost.counts` depends only on those, so a skeleton gives the same counts as the real lowering
in milliseconds instead of minutes (full-size DeiT-S / ViT-B): ``tests/cost`` checks node-by-node equality
with the real lowering. A skeleton is not a valid IR for execution (it is never validated or run).
Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from repq_hw.ir.graph import Graph, IntType, Node, TensorInfo
from repq_hw.ir.ops import Op

# The defaults of repq_hw.lower.vit.LowerConfig (kept in step by tests/cost/test_closed_form.py).
LOWER_DEFAULTS = {"residual_bits": 16, "residual_headroom": 2.0, "ln_frac_bits": 16, "softmax_frac_bits": 10,
                      "softmax_lut_bits": 22, "softmax_out_bits": 16, "attn_max_shift": 12, "sqrt2_frac_bits": 15,
                      "gelu_in_bits": 10, "rounding": "half_even"}


@dataclass(frozen=True)
class ViTArch:
    """The shape parameters of a timm VisionTransformer with a class token."""

    img_size: int
    patch_size: int
    in_chans: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_hidden: int
    num_classes: int

    @property
    def patches(self) -> int:
        return (self.img_size // self.patch_size) ** 2

    @property
    def tokens(self) -> int:
        return self.patches + 1

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads


ARCHS: dict[str, ViTArch] = {
    "deit_tiny_patch16_224": ViTArch(224, 16, 3, 192, 12, 3, 768, 1000),
    "deit_small_patch16_224": ViTArch(224, 16, 3, 384, 12, 6, 1536, 1000),
    "deit_base_patch16_224": ViTArch(224, 16, 3, 768, 12, 12, 3072, 1000),
    "vit_small_patch16_224": ViTArch(224, 16, 3, 384, 12, 6, 1536, 1000),
    "vit_base_patch16_224": ViTArch(224, 16, 3, 768, 12, 12, 3072, 1000),
    "vit_digits": ViTArch(32, 4, 1, 96, 6, 3, 384, 10),
    "test_deit": ViTArch(32, 8, 3, 48, 3, 3, 96, 10),
}


class _Skel:
    def __init__(self, meta: dict):
        self.g = Graph([], {}, [], [], {}, {}, meta)

    def tensor(self, name: str, type_name: str, shape) -> str:
        signed = type_name.startswith("int")
        bits = int(type_name[3:] if signed else type_name[4:])
        self.g.tensors[name] = TensorInfo(name, IntType(signed, bits, tuple(shape)))
        return name

    def const(self, name: str, signed: bool, bits: int, shape) -> str:
        t = IntType(signed, bits, tuple(shape))
        self.g.constants[name] = np.broadcast_to(np.zeros((), t.storage), t.shape)
        self.g.const_types[name] = t
        return name

    def node(self, name: str, op: Op, inputs: list[str], out_type: str, shape, attrs=None, consts=None) -> str:
        out = self.tensor(f"{name}.out", out_type, shape)
        cn = {role: self.const(f"{name}.{role}", *spec) for role, spec in (consts or {}).items()}
        self.g.nodes.append(Node(name, op, list(inputs), [out], dict(attrs or {}), cn))
        return out

    def shape(self, t: str) -> tuple[int, ...]:
        return self.g.tensors[t].type.shape


def vit_skeleton(arch: ViTArch | str, w_bits: int, a_bits: int, lower_config: dict | None = None,
                 in_bits: int = 8, model: str | None = None) -> Graph:
    """The structural twin of ``lower_vit`` for ``arch`` (a :class:`ViTArch` or a name in ``ARCHS``) at
    W{w_bits}A{a_bits}; ``lower_config`` overrides LOWER_DEFAULTS."""
    if isinstance(arch, str):
        if arch not in ARCHS:
            hint = (" (skeletons are ViT/DeiT twins; count a Swin from its lowered IR: --model, or --ir DIR)"
                    if "swin" in arch.lower() else "")
            raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHS)}{hint}")
        model = model or arch
        arch = ARCHS[arch]
    lc = dict(LOWER_DEFAULTS, **(lower_config or {}))
    unknown = set(lc) - set(LOWER_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown lower_config fields {sorted(unknown)}")
    r, rnd = lc["residual_bits"], lc["rounding"]
    at, rt, wt = f"uint{a_bits}", f"int{r}", (False, w_bits)
    s = _Skel({"family": "vit", "w_bits": w_bits, "a_bits": a_bits, "lower_config": lc,
               "model": model or "vit", "skeleton": True})
    e, h, d, hid = arch.embed_dim, arch.num_heads, arch.head_dim, arch.mlp_hidden
    npatch, n = arch.patches, arch.tokens

    def gemm(name, x, n_out, k):
        m = s.shape(x)[0]
        return s.node(name, Op.GEMM, [x], "int32", (m, n_out), attrs={"a_zp": 0},
                      consts={"weight": (*wt, (n_out, k)), "w_zp": (False, 8, (n_out,)), "bias": (True, 32, (n_out,))})

    def requant(name, x, out_type, channels):
        return s.node(name, Op.REQUANT, [x], out_type, s.shape(x), attrs={"zero_point": 0, "rounding": rnd},
                      consts={"multiplier": (True, 32, (channels,)), "shift": (False, 8, (channels,))})

    def layernorm(name, x):
        c = s.shape(x)[-1]
        return s.node(name, Op.LAYERNORM, [x], at, s.shape(x),
                      attrs={"eps_q": 0, "frac_bits": lc["ln_frac_bits"], "zero_point": 0, "rounding": rnd},
                      consts={"multiplier": (True, 32, (c,)), "shift": (False, 8, (c,)), "offset": (True, 64, (c,))})

    p = arch.patch_size
    x = s.tensor("input", f"uint{in_bits}", (arch.in_chans, arch.img_size, arch.img_size))
    s.g.inputs.append(x)
    cols = s.node("patch_embed.patchify", Op.PATCHIFY, [x], f"uint{in_bits}", (npatch, arch.in_chans * p * p),
                  attrs={"patch": p})
    acc = gemm("patch_embed.proj", cols, e, arch.in_chans * p * p)
    tok = requant("patch_embed.requant", acc, rt, e)
    tok = s.node("pos_embed.add", Op.ADD_CONST, [tok], rt, (npatch, e), consts={"value": (True, r, (npatch, e))})
    x = s.node("cls_token.concat", Op.CONCAT_TOKENS, [tok], rt, (n, e), consts={"rows": (True, r, (1, e))})
    f_, lut_bits, p_bits = lc["softmax_frac_bits"], lc["softmax_lut_bits"], lc["softmax_out_bits"]
    n_codes = min((1 << a_bits) - 1, 2 * lc["attn_max_shift"])
    f_attn = (n_codes - 1) // 2 + 1
    g_bits = lc["gelu_in_bits"]
    for i in range(arch.depth):
        pre = f"blocks.{i}"
        a_in = layernorm(f"{pre}.norm1", x)
        acc = gemm(f"{pre}.attn.qkv", a_in, 3 * e, e)
        heads = {}
        for j, role in enumerate("qkv"):
            sl = s.node(f"{pre}.attn.{role}_slice", Op.SLICE, [acc], "int32", (n, e),
                        attrs={"start": j * e, "stop": (j + 1) * e})
            codes = requant(f"{pre}.attn.{role}", sl, at, e)
            heads[role] = s.node(f"{pre}.attn.{role}_heads", Op.SPLIT_HEADS, [codes], at, (h, n, d),
                                 attrs={"heads": h})
        logits = s.node(f"{pre}.attn.qk", Op.BMM_QK, [heads["q"], heads["k"]], "int32", (h, n, n),
                        attrs={"q_zp": 0, "k_zp": 0})
        prob = s.node(f"{pre}.attn.softmax", Op.SOFTMAX, [logits], f"uint{p_bits + 1}", (h, n, n),
                      attrs={"multiplier": 0, "shift": 0, "frac_bits": f_, "lut_bits": lut_bits, "out_bits": p_bits,
                             "rounding": rnd}, consts={"lut": (False, lut_bits + 1, (1 << f_,))})
        codes = s.node(f"{pre}.attn.log2_code", Op.LOG2_CODE, [prob], f"uint{a_bits}", (h, n, n),
                       attrs={"bits": a_bits}, consts={"thresholds": (False, p_bits + 1, (n_codes,))})
        av = s.node(f"{pre}.attn.attn_v", Op.ATTN_V, [codes, heads["v"]], "int32", (h, n, d),
                    attrs={"v_zp": 0, "bits": a_bits, "shift_frac": f_attn, "max_code": n_codes - 1,
                           "sqrt2_frac_bits": lc["sqrt2_frac_bits"], "rounding": rnd})
        merged = s.node(f"{pre}.attn.merge_heads", Op.MERGE_HEADS, [av], "int32", (n, e))
        p_in = requant(f"{pre}.attn.proj_in", merged, at, 1)
        acc = gemm(f"{pre}.attn.proj", p_in, e, e)
        upd = requant(f"{pre}.attn.proj_requant", acc, rt, e)
        x = s.node(f"{pre}.add1", Op.ADD, [x, upd], rt, (n, e))
        a_in = layernorm(f"{pre}.norm2", x)
        acc = gemm(f"{pre}.mlp.fc1", a_in, hid, e)
        g_in = requant(f"{pre}.mlp.gelu_in", acc, f"int{g_bits}", hid)
        a2 = s.node(f"{pre}.mlp.gelu", Op.LUT, [g_in], at, (n, hid), attrs={"in_min": -(1 << (g_bits - 1))},
                    consts={"table": (False, 8, (1 << g_bits,))})
        acc = gemm(f"{pre}.mlp.fc2", a2, e, hid)
        upd = requant(f"{pre}.mlp.fc2_requant", acc, rt, e)
        x = s.node(f"{pre}.add2", Op.ADD, [x, upd], rt, (n, e))
    tok = s.node("head.select_cls", Op.SELECT_TOKEN, [x], rt, (1, e), attrs={"index": 0})
    a_in = layernorm("norm", tok)
    acc = gemm("head", a_in, arch.num_classes, e)
    s.g.outputs.append(requant("head.logits", acc, "int32", arch.num_classes))
    return s.g


def closed_form_macs(arch: ViTArch | str) -> dict[str, int]:
    """MAC count of one image from the architecture alone (attention·V counted as MACs)."""
    a = ARCHS[arch] if isinstance(arch, str) else arch
    n, e, hid = a.tokens, a.embed_dim, a.mlp_hidden
    per_block = {"qkv": n * e * 3 * e, "q·kᵀ": n * n * e, "attn·V": n * n * e, "proj": n * e * e,
                 "fc1": n * e * hid, "fc2": n * hid * e}
    out = {"patch_embed": a.patches * e * a.in_chans * a.patch_size**2}
    out.update({k: v * a.depth for k, v in per_block.items()})
    out["head"] = e * a.num_classes
    out["total"] = sum(out.values())
    return out
