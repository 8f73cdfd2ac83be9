"""Integer Swin: the data-movement ops against timm's own code, both executors bit for bit on every tensor,
the shifted-window mask rule, the lowering's refusals and the MAC counts against a closed form."""

import copy

import numpy as np
import pytest
import torch
import torch.nn as nn

from repq_hw.emu.execute import run_graph
from repq_hw.fidelity import input_codes
from repq_hw.ir.ops import Op
from repq_hw.kernels.windows import patch_merge, window_partition, window_reverse
from repq_hw.lower import lower_model
from repq_hw.lower.swin import mask_offset
from repq_hw.lower.vit import LoweringError
from repq_hw.quant.model import QuantConfig, build_calibrated
from tests.conftest import calibrated, image_shape, lowered

SWIN_TESTS = ["test_swin", "test_swin_pad"]


def assert_all_equal(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert np.array_equal(a[k], b[k]), f"tensor {k} differs"


# -- data movement against timm ------------------------------------------------------------------------


@pytest.mark.parametrize("side, win, shift", [(8, 4, 0), (8, 4, 2), (14, 4, 2), (7, 4, 2), (12, 5, 2), (6, 3, 1)])
def test_window_partition_and_reverse_match_timm(side, win, shift):
    from timm.models.swin_transformer import window_partition as t_part
    from timm.models.swin_transformer import window_reverse as t_rev

    rng = np.random.default_rng(side * 100 + win * 10 + shift)
    b, c, pad = 3, 5, 17
    x = rng.integers(-1000, 1000, (b, side * side, c)).astype(np.int32)
    t = torch.from_numpy(x.astype(np.float64)).reshape(b, side, side, c)
    t = torch.roll(t, (-shift, -shift), dims=(1, 2))
    hp = -(-side // win) * win
    t = nn.functional.pad(t, (0, 0, 0, hp - side, 0, hp - side), value=float(pad))
    want = t_part(t, (win, win)).reshape(b, -1, c)
    got = window_partition(x, side, side, win, shift, pad)
    assert np.array_equal(got, want.numpy())
    # reverse: timm's window_reverse, crop, roll back; windows carry distinct values everywhere
    w = rng.integers(-1000, 1000, got.shape).astype(np.int32)
    tw = torch.from_numpy(w.astype(np.float64)).reshape(-1, win, win, c)
    back = t_rev(tw, (win, win), hp, hp)[:, :side, :side]
    back = torch.roll(back, (shift, shift), dims=(1, 2)).reshape(b, side * side, c)
    assert np.array_equal(window_reverse(w, side, side, win, shift), back.numpy())
    assert np.array_equal(window_reverse(got, side, side, win, shift), x)  # inverse on the kept tokens


@pytest.mark.parametrize("side", [8, 7])
def test_patch_merge_matches_timm(side):
    from timm.models.swin_transformer import PatchMerging

    rng = np.random.default_rng(side)
    c = 3
    x = rng.integers(-30000, 30000, (2, side * side, c)).astype(np.int16)
    pm = PatchMerging(c)
    pm.norm, pm.reduction = nn.Identity(), nn.Identity()
    want = pm(torch.from_numpy(x.astype(np.float64)).reshape(2, side, side, c))
    assert np.array_equal(patch_merge(x, side, side), want.reshape(2, -1, 4 * c).numpy())


def test_windowed_heads_match_timm_layout():
    """SPLIT_HEADS(windows=G) of [G*N, h*d] is timm's qkv reshape of [B*G, N, h*d] -> [B*G, h, N, d]."""
    from repq_hw.ir.graph import Graph, IntType, Node, TensorInfo

    g_, n, h, d = 4, 9, 3, 2
    x = np.arange(2 * g_ * n * h * d, dtype=np.int32).reshape(2, g_ * n, h * d)
    g = Graph([], {}, [], [], {}, {}, {})
    g.tensors["x"] = TensorInfo("x", IntType(True, 32, (g_ * n, h * d)), None, 0, "")
    g.tensors["y"] = TensorInfo("y", IntType(True, 32, (g_ * h, n, d)), None, 0, "")
    g.tensors["z"] = TensorInfo("z", IntType(True, 32, (g_ * n, h * d)), None, 0, "")
    g.nodes += [Node("s", Op.SPLIT_HEADS, ["x"], ["y"], {"heads": h, "windows": g_}, {}),
                Node("m", Op.MERGE_HEADS, ["y"], ["z"], {"windows": g_}, {})]
    g.inputs.append("x")
    g.outputs.append("z")
    out = run_graph(g, x, "ref", keep_all=True)
    want = torch.from_numpy(x).reshape(2 * g_, n, h, d).permute(0, 2, 1, 3).reshape(2, g_ * h, n, d)
    assert np.array_equal(out["y"], want.numpy())
    assert np.array_equal(out["z"], x)


# -- both executors, bit for bit ------------------------------------------------------------------------


@pytest.mark.parametrize("name", SWIN_TESTS)
@pytest.mark.parametrize("bits", [8, 6, 4])
def test_ref_equals_fast_on_every_tensor(name, bits):
    q, g, _ = lowered(name, bits)
    ops = {n.op for n in g.nodes}
    assert {Op.WINDOW_PARTITION, Op.WINDOW_REVERSE, Op.PATCH_MERGE, Op.AVG_POOL} <= ops
    shifts = {n.attrs["shift"] for n in g.nodes if n.op == Op.WINDOW_PARTITION}
    assert 0 in shifts and len(shifts) > 1  # unshifted and shifted blocks
    x = torch.randn(7, *image_shape(q), generator=torch.Generator().manual_seed(bits))
    codes = input_codes(q, x)
    ref = run_graph(g, codes, "ref", keep_all=True)
    fast = run_graph(g, codes, "fast", keep_all=True)
    assert len(ref) == len(g.tensors)
    assert_all_equal(ref, fast)
    for i in (0, 6):  # batch 1 gives the batch-7 rows
        one = run_graph(g, codes[i:i + 1], "fast", keep_all=True)
        for k in one:
            assert np.array_equal(one[k][0], fast[k][i]), (i, k)


@pytest.mark.parametrize("name", SWIN_TESTS)
@pytest.mark.parametrize("bits", [8, 4])
def test_fused_plan_gives_the_reference_logits(name, bits):
    """Without taps the fast plan may fuse chains (emu/fast.py); the graph outputs stay the reference's."""
    from repq_hw.kernels import gemm_vnni

    q, g, _ = lowered(name, bits)
    codes = input_codes(q, torch.randn(7, *image_shape(q), generator=torch.Generator().manual_seed(11)))
    ref_all = run_graph(g, codes, "ref", keep_all=True)
    ref = {k: ref_all[k] for k in g.outputs}
    from repq_hw.emu import fast as fast_plan

    for path in ("vnni", "portable"):  # the GEMM chains fuse on the vnni packing only
        with gemm_vnni.force_path(path):
            plan = fast_plan.prepare(g, eager=True)
            chains = {i: c for i in range(len(g.nodes)) if (c := plan.fusion(i)) is not None}
            fused = {(g.nodes[i].op, g.nodes[c[0][-1]].op) for i, c in chains.items()}
            assert {(Op.SOFTMAX, Op.LOG2_CODE), (Op.ATTN_V, Op.REQUANT)} <= fused
            if path == "vnni":  # windowed q, k, v heads written by the qkv chain
                assert {(Op.GEMM, Op.SPLIT_HEADS), (Op.GEMM, Op.LUT), (Op.GEMM, Op.ADD)} <= fused
            for i, (ends, step, _) in chains.items():  # each chain, on the reference's own inputs
                ys = step([ref_all[t] for t in g.nodes[i].inputs + list(getattr(step, "extra_inputs", ()))])
                assert ys is not None
                for j, y in zip(ends, ys):
                    want = ref_all[g.nodes[j].outputs[0]]
                    assert y.dtype == want.dtype and np.array_equal(y, want), (g.nodes[i].name, g.nodes[j].name)
            assert_all_equal(ref, run_graph(g, codes, "fast"))


def test_padding_is_exercised():
    _, g, _ = lowered("test_swin_pad", 8)
    parts = [n for n in g.nodes if n.op == Op.WINDOW_PARTITION]
    assert any(n.attrs["height"] % n.attrs["window"] for n in parts)
    assert any(n.attrs["height"] % n.attrs["window"] and n.attrs["shift"] for n in parts)
    assert any(n.attrs["height"] % 2 for n in g.nodes if n.op == Op.PATCH_MERGE)


def test_thread_count_does_not_change_results(numba_threads):
    q, g, _ = lowered("test_swin_pad", 6)
    codes = input_codes(q, torch.randn(7, *image_shape(q), generator=torch.Generator().manual_seed(2)))
    numba_threads(1)
    one = run_graph(g, codes, "fast", keep_all=True)
    numba_threads(2)
    two = run_graph(g, codes, "fast", keep_all=True)
    assert_all_equal(one, two)


@pytest.mark.parametrize("bits", [8, 6, 4])
def test_bundled_swin_bit_exact_on_real_images(bits):
    from repq_hw.data.digits import load_digits_split
    from repq_hw.pipeline import calibrated_and_lowered, host_input_codes

    _, q, g, _ = calibrated_and_lowered("swin_digits", QuantConfig(w_bits=bits, a_bits=bits))
    xs, _ = load_digits_split("test")
    codes = host_input_codes(g, xs[:7].numpy())
    ref = run_graph(g, codes, "ref", keep_all=True)
    fast = run_graph(g, codes, "fast", keep_all=True)
    assert_all_equal(ref, fast)
    one = run_graph(g, codes[2:3], "ref", keep_all=True)
    for k in one:
        assert np.array_equal(one[k][0], fast[k][2]), k


# -- the mask rule -------------------------------------------------------------------------------------


def test_masked_logits_give_probability_zero_and_the_rest_is_the_unmasked_softmax():
    """Every masked (shifted-window) entry is exactly 0, and each row's unmasked entries are what the softmax
    reference gives on the unmasked logits alone: the mask excludes, it does not perturb."""
    from repq_hw.kernels.softmax import softmax_ref

    q, g, _ = lowered("test_swin_pad", 8)
    codes = input_codes(q, torch.randn(2, *image_shape(q), generator=torch.Generator().manual_seed(3)))
    taps = run_graph(g, codes, "ref", keep_all=True)
    blocks = [n for n in g.nodes if n.op == Op.ADD_CONST and n.name.endswith("bias_mask")]
    checked = 0
    for node in blocks:
        pre = node.name.removesuffix(".attn.bias_mask")
        sm = next(n for n in g.nodes if n.name == f"{pre}.attn.softmax")
        blk = q.get_submodule(pre)
        if blk.attn_mask is None:
            continue
        heads = blk.attn.num_heads
        masked = np.repeat(blk.attn_mask.numpy() != 0, heads, axis=0)  # [nW*h, N, N], window-major
        gh = g.tensors[node.outputs[0]].type.shape[0]
        assert masked.shape[0] == gh and masked.any()
        prob = taps[sm.outputs[0]]
        assert np.all(prob[:, masked] == 0)
        logits = taps[node.outputs[0]].astype(np.int64)
        a = sm.attrs
        for b in range(prob.shape[0]):
            for r in range(0, gh, 3):
                for i in range(0, prob.shape[2], 5):
                    keep = ~masked[r, i]
                    want = softmax_ref(logits[b, r, i][keep][None].astype(np.int32), a["multiplier"], a["shift"],
                                       a["frac_bits"], a["lut_bits"], a["out_bits"], a["rounding"])[0]
                    assert np.array_equal(prob[b, r, i][keep], want)
                    checked += 1
    assert checked > 0


def test_mask_offset_is_the_smallest_that_the_proof_needs():
    sm = {"lut_bits": 22, "frac_bits": 10, "shift": 40, "multiplier": 1 << 30}
    k = mask_offset(1000, sm)
    # d*M >= (E+2) 2^(F+s) + 2^s for every d >= K - 2B, and not for K - 1
    need = ((22 + 2) * (1 << 10) + 1) << 40
    assert (k - 2000) * (1 << 30) >= need > (k - 2001) * (1 << 30)


# -- refusals -------------------------------------------------------------------------------------------


def _calibrate(model, x):
    return build_calibrated(model, x, QuantConfig(), progress=False)


def test_unsupported_swin_variants_are_refused_naming_the_module():
    from timm.models.swin_transformer import SwinTransformer

    kw = dict(patch_size=2, in_chans=3, num_classes=10, embed_dim=16, depths=(2, 2), num_heads=(1, 2), mlp_ratio=2.0)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    per_stage = SwinTransformer(img_size=32, window_size=((4, 4), (2, 2)), **kw).eval()
    with pytest.raises(LoweringError, match="different window sizes"):
        lower_model(_calibrate(per_stage, x), QuantConfig(), x)
    xr = torch.randn(4, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    rect = SwinTransformer(img_size=(32, 48), window_size=4, **kw).eval()
    with pytest.raises(LoweringError, match=r"patch_embed.img_size: 32x48 is not square"):
        lower_model(_calibrate(rect, xr), QuantConfig(), xr)
    rect_win = SwinTransformer(img_size=32, window_size=(4, 2), **kw).eval()
    with pytest.raises(LoweringError, match=r"layers.0.blocks.0.window_size: 4x2 is not square"):
        lower_model(_calibrate(rect_win, x), QuantConfig(), x)


def test_swin_v2_is_refused():
    from timm.models.swin_transformer_v2 import SwinTransformerV2

    from repq_hw.lower.swin import check_swin

    v2 = SwinTransformerV2(img_size=32, patch_size=2, embed_dim=16, depths=(2,), num_heads=(1,), window_size=4,
                           num_classes=10).eval()
    with pytest.raises(LoweringError, match="SwinTransformer \\(v1\\), got SwinTransformerV2 \\(Swin v2"):
        check_swin(v2)
    with pytest.raises(LoweringError, match="Swin v2"):
        lower_model(v2, QuantConfig(), torch.zeros(1, 3, 32, 32))


def test_other_quant_settings_are_refused():
    m, _, _, x = calibrated("test_swin", 4)
    q = build_calibrated(copy.deepcopy(m), x, QuantConfig(zero_point="mean"), progress=False)
    with pytest.raises(LoweringError, match="zero_point='round'"):
        lower_model(q, QuantConfig(zero_point="mean"), x)


# -- fidelity on a random model --------------------------------------------------------------------------


def test_integer_tracks_fake_quant_on_random_swin():
    from repq_hw.fidelity import fidelity

    m, q, cfg, x = calibrated("test_swin_pad", 8)
    _, g, _ = lowered("test_swin_pad", 8)
    xs = torch.randn(32, *image_shape(m), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ys = m(xs).argmax(1)
    rep = fidelity(m, q, g, xs, ys, "W8A8")
    assert rep.rows[-1].cosine > 0.999
    assert len(rep.sqnr) > 20 and min(rep.sqnr.values()) > 15


# -- cost: MACs against a closed form -------------------------------------------------------------------


def swin_closed_form_macs(img, patch, chans, embed, depths, heads, window, mlp_ratio, classes) -> dict:
    """Per image, from the architecture: patch conv; per block qkv, q.k^T and attn.V over the (padded) windows,
    proj, fc1, fc2; per stage transition the 4C -> 2C reduction; the head on the pooled features."""
    side = img // patch
    c = embed
    out = {"gemm": side * side * embed * chans * patch * patch, "qk": 0, "attn_v": 0}
    for s, depth in enumerate(depths):
        if s > 0:
            side = -(-side // 2)
            out["gemm"] += side * side * 4 * c * 2 * c
            c *= 2
        t = side * side
        w = min(window, side)  # timm shrinks the window to a smaller grid
        tp = (-(-side // w) * w) ** 2  # tokens after padding to whole windows
        hidden = int(c * mlp_ratio)
        out["gemm"] += depth * (tp * c * 3 * c + tp * c * c + 2 * t * c * hidden)
        out["qk"] += depth * tp * w * w * c
        out["attn_v"] += depth * tp * w * w * c
    out["gemm"] += c * classes
    out["total"] = sum(out.values())
    return out


def check_swin_counts(g, cf):
    from repq_hw.cost.counts import count_graph

    gc = count_graph(g)
    tot = gc.totals()
    per = gc.per_op_type()
    assert per["gemm"]["mac_equiv"] == cf["gemm"]
    assert per["bmm_qk"]["mac_equiv"] == cf["qk"]
    assert per["attn_v_shift"]["shift_adds"] == cf["attn_v"]
    assert tot["mac_equiv"] == cf["total"]
    assert "avg_pool" in per


@pytest.mark.parametrize("name", SWIN_TESTS)
def test_counts_equal_the_closed_form(name):
    from repq_hw.models.registry import TEST_MODEL_CONFIGS

    kw = TEST_MODEL_CONFIGS[name][1]
    cf = swin_closed_form_macs(kw["img_size"], kw["patch_size"], kw["in_chans"], kw["embed_dim"], kw["depths"],
                               kw["num_heads"], kw["window_size"], kw["mlp_ratio"], kw["num_classes"])
    check_swin_counts(lowered(name, 8)[1], cf)


@pytest.mark.slow
def test_swin_tiny_lowers_runs_bit_exact_and_counts_its_macs():
    """Swin-T with random weights: lowered, both executors equal on every tensor at batch 1, and the IR's MACs
    equal the closed form (about 4.5 GMAC per image)."""
    from repq_hw.models.registry import create_model

    torch.manual_seed(0)
    m = create_model("swin_tiny_patch4_window7_224")
    x = torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    cfg = QuantConfig(w_bits=8, a_bits=8)
    q = build_calibrated(m, x, cfg, progress=False)
    g = lower_model(q, cfg, x)
    codes = input_codes(q, x[:1])
    assert_all_equal(run_graph(g, codes, "ref", keep_all=True), run_graph(g, codes, "fast", keep_all=True))
    cf = swin_closed_form_macs(224, 4, 3, 96, (2, 2, 6, 2), (3, 6, 12, 24), 7, 4.0, 1000)
    assert cf["total"] / 1e9 == pytest.approx(4.5, rel=0.02)
    check_swin_counts(g, cf)


# -- hostile IR: the validator refuses malformed Swin nodes ------------------------------------------------


def _mutated(mutate):
    import copy as _copy

    from repq_hw.ir.validate import IRValidationError, validate_graph

    _, g, _ = lowered("test_swin_pad", 8)
    g2 = _copy.deepcopy(g)
    mutate(g2)
    with pytest.raises(IRValidationError) as e:
        validate_graph(g2)
    return str(e.value)


def _node(g, op, pred=lambda n: True):
    return next(n for n in g.nodes if n.op == op and pred(n))


@pytest.mark.parametrize("mutation, message", [
    (lambda g: _node(g, Op.WINDOW_PARTITION, lambda n: n.attrs["shift"]).attrs.__setitem__("shift", 4),
     "shift 4 must be below the window 4"),
    (lambda g: _node(g, Op.WINDOW_PARTITION).attrs.__setitem__("window", 5), "window_partition"),
    (lambda g: _node(g, Op.WINDOW_PARTITION).attrs.__setitem__("pad_value", 300), "pad_value 300 outside uint8"),
    (lambda g: _node(g, Op.WINDOW_REVERSE).attrs.__setitem__("height", 15), "window_reverse"),
    (lambda g: _node(g, Op.PATCH_MERGE).attrs.__setitem__("width", 6), "patch_merge"),
    (lambda g: _node(g, Op.SPLIT_HEADS, lambda n: "windows" in n.attrs).attrs.__setitem__("windows", 5),
     "do not split into 5 windows"),
    (lambda g: _node(g, Op.AVG_POOL).attrs.__setitem__("rounding", "nearest"), "rounding attribute"),
    (lambda g: _node(g, Op.ADD_CONST).__setattr__("consts", {}), "missing constant role 'value'"),
])
def test_validator_refuses_malformed_swin_nodes(mutation, message):
    assert message in _mutated(mutation)


def test_validator_refuses_a_bias_that_does_not_tile():
    def mutate(g):
        node = _node(g, Op.ADD_CONST, lambda n: n.name.endswith("bias_mask") and g.constants[n.consts["value"]].shape[0] > 2)
        c = node.consts["value"]
        v = g.constants[c]
        g.constants[c] = np.ascontiguousarray(v[:-1])
        from repq_hw.ir.graph import IntType

        g.const_types[c] = IntType(True, 32, g.constants[c].shape)

    assert "does not tile input" in _mutated(mutate)
