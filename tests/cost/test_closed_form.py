"""IR counts against closed-form MAC counts derived from the architecture, and the structural twin
(skeleton) against the real lowering."""

import dataclasses

import pytest
import torch

from repq_hw.cost.counts import count_graph
from repq_hw.cost.skeleton import ARCHS, LOWER_DEFAULTS, vit_skeleton
from repq_hw.lower.vit import LowerConfig


def closed_form_macs(img, patch, chans, embed, depth, hidden, classes) -> dict:
    """Per image: patch embedding conv, per block qkv / q·kᵀ / attn·V / proj / fc1 / fc2, and the head on
    the class token. Tokens N = patches + 1 (class token)."""
    p = (img // patch) ** 2
    n = p + 1
    per_block = {"qkv": n * embed * 3 * embed, "qk": n * n * embed, "attn_v": n * n * embed, "proj": n * embed * embed,
                     "fc1": n * embed * hidden, "fc2": n * hidden * embed}
    out = {"patch_embed": p * embed * chans * patch * patch, "head": embed * classes}
    out.update({k: v * depth for k, v in per_block.items()})
    out["total"] = sum(out.values())
    return out


DEIT_S = {"img": 224, "patch": 16, "chans": 3, "embed": 384, "depth": 12, "hidden": 1536, "classes": 1000}
VIT_B = {"img": 224, "patch": 16, "chans": 3, "embed": 768, "depth": 12, "hidden": 3072, "classes": 1000}


def check_counts(gc, cf):
    tot = gc.totals()
    assert tot["mac_equiv"] == cf["total"]
    assert tot["shift_adds"] == cf["attn_v"]  # attention·V as shift-adds, not multiplies
    assert tot["macs"] == cf["total"] - cf["attn_v"]
    per_type = gc.per_op_type()
    assert per_type["gemm"]["mac_equiv"] == cf["total"] - cf["qk"] - cf["attn_v"]
    assert per_type["bmm_qk"]["mac_equiv"] == cf["qk"]
    assert per_type["attn_v_shift"]["shift_adds"] == cf["attn_v"]


@pytest.mark.parametrize("name, arch, gmac", [("deit_small_patch16_224", DEIT_S, 4.6),
                                               ("vit_base_patch16_224", VIT_B, 17.6)])
def test_skeleton_matches_closed_form(name, arch, gmac):
    cf = closed_form_macs(**arch)
    assert cf["total"] / 1e9 == pytest.approx(gmac, rel=0.01)
    for bits in (8, 4):
        check_counts(count_graph(vit_skeleton(name, bits, bits)), cf)


def test_skeleton_defaults_follow_the_lowering():
    lc = LowerConfig()
    assert {f.name: getattr(lc, f.name) for f in dataclasses.fields(lc)} == LOWER_DEFAULTS


def test_archs_follow_the_model_registry():
    from repq_hw.models.registry import create_model

    for name in ("test_deit", "vit_digits"):
        if name == "vit_digits":
            from repq_hw.models.digits_configs import DIGITS_MODEL_CONFIGS

            kw = DIGITS_MODEL_CONFIGS[name][1]
            m_dims = (kw["img_size"], kw["patch_size"], kw["in_chans"], kw["embed_dim"], kw["depth"], kw["num_heads"],
                      int(kw["embed_dim"] * kw["mlp_ratio"]), kw["num_classes"])
        else:
            m = create_model(name)
            m_dims = (m.patch_embed.img_size[0], m.patch_embed.patch_size[0], m.patch_embed.proj.in_channels,
                      m.embed_dim, len(m.blocks), m.blocks[0].attn.num_heads, m.blocks[0].mlp.fc1.out_features,
                      m.num_classes)
        assert dataclasses.astuple(ARCHS[name]) == m_dims, name


def assert_same_counts(real, skel):
    a, b = count_graph(real), count_graph(skel)
    assert [n.name for n in a.nodes] == [n.name for n in b.nodes]
    for x, y in zip(a.nodes, b.nodes):
        assert x.flat() == y.flat(), x.name
    assert a.buffer_bytes == b.buffer_bytes and a.peak_bytes == b.peak_bytes
    for fmt in ("fp32", "fp16"):
        assert count_graph(real, fmt).totals() == count_graph(skel, fmt).totals()


@pytest.mark.parametrize("bits", [4, 8])
def test_skeleton_equals_real_lowering_tiny(bits):
    from tests.conftest import lowered

    _, g, _ = lowered("test_deit", bits)
    assert_same_counts(g, vit_skeleton("test_deit", bits, bits))


def lower_random_full_size(name):
    from repq_hw.lower.vit import lower_vit
    from repq_hw.models.registry import create_model
    from repq_hw.quant.model import QuantConfig, build_calibrated

    torch.manual_seed(0)
    m = create_model(name)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    cfg = QuantConfig(w_bits=4, a_bits=4)
    q = build_calibrated(m, x, cfg, progress=False)
    return lower_vit(q, cfg, x)


@pytest.mark.slow
@pytest.mark.parametrize("name, arch", [("deit_small_patch16_224", DEIT_S), ("vit_base_patch16_224", VIT_B)])
def test_full_size_lowering_matches_closed_form(name, arch):
    g = lower_random_full_size(name)
    check_counts(count_graph(g), closed_form_macs(**arch))
    assert_same_counts(g, vit_skeleton(name, 4, 4))
