"""Quantized-model structure, timm-forward equivalence, reparameterization exactness, save/load."""

import copy

import pytest
import torch

from repq_hw.models.registry import TIMM_MODELS, create_model
from repq_hw.quant.model import (
    QuantConfig,
    UnsupportedModelError,
    calibrate,
    load_calibrated,
    quantize_model,
    quantizers,
    reparam_pairs,
    reparameterize,
    save_calibrated,
    set_quant_state,
)
from repq_hw.quant.modules import QuantConv2d, QuantLinear, QuantMatMul
from repq_hw.quant.quantizers import LogSqrt2Quantizer, UniformQuantizer

TINY = ["test_vit", "test_deit", "test_swin", "test_vit_layerscale"]


def images(n=8, seed=0):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", TINY)
def test_quant_off_reproduces_timm_before_and_after_reparam(name):
    torch.manual_seed(0)
    fmodel = create_model(name)
    x = images()
    with torch.no_grad():
        ref = fmodel(x)
        q = quantize_model(copy.deepcopy(fmodel), QuantConfig())
        set_quant_state(q, False)
        before = q(x)
        calibrate(q, x, QuantConfig(), progress=False)  # includes reparameterization
        set_quant_state(q, False)
        after = q(x)
    assert (before - ref).abs().max() < 1e-5
    assert (after - ref).abs().max() < 1e-5
    assert len(reparam_pairs(q)) > 0


def expected_spec(name: str, q, cfg: QuantConfig, reparam_done: bool):
    """(bits, channel_wise, kind) each quantizer must have, from the RepQ-ViT rules."""
    owner, _, role = name.rpartition(".")
    leaf = owner.rpartition(".")[2]
    if role == "weight_quantizer":
        return cfg.w_bits, True, UniformQuantizer
    if leaf == "proj" and "patch_embed" in owner:
        return 8, False, UniformQuantizer
    if role == "input_quantizer":
        return cfg.a_bits, leaf in ("qkv", "fc1", "reduction") and not reparam_done, UniformQuantizer
    if leaf == "matmul2" and role == "quantizer_A":
        return cfg.a_bits, False, LogSqrt2Quantizer
    return cfg.a_bits, False, UniformQuantizer


@pytest.mark.parametrize("name", ["test_deit", "test_swin"])
def test_bits_and_granularity_of_every_quantizer(name):
    cfg = QuantConfig(w_bits=6, a_bits=4)
    q = quantize_model(create_model(name), cfg)
    mods = dict(q.named_modules())
    n_linear = sum(isinstance(m, QuantLinear) for m in mods.values())
    assert n_linear == sum(isinstance(m, torch.nn.Linear) for m in create_model(name).modules())
    assert sum(isinstance(m, QuantConv2d) for m in mods.values()) == 1
    assert sum(isinstance(m, QuantMatMul) for m in mods.values()) == 2 * sum(
        1 for n in mods if n.endswith(".attn"))
    for stage, done in (("quantized", False), ("calibrated", True)):
        if done:
            calibrate(q, images(), cfg, progress=False)
        for qname, quant in quantizers(q):
            bits, cw, kind = expected_spec(qname, quant, cfg, done)
            assert isinstance(quant, kind), (stage, qname)
            assert quant.n_bits == bits, (stage, qname)
            if isinstance(quant, UniformQuantizer):
                assert quant.channel_wise == cw, (stage, qname)
    if name == "test_swin":
        assert any(lname.endswith("downsample.reduction") for _, _, lname, _ in reparam_pairs(q))


def capture_inputs(model, names):
    store, hooks = {}, []
    mods = dict(model.named_modules())
    for n in names:
        hooks.append(mods[n].register_forward_pre_hook(lambda m, a, n=n: store.__setitem__(n, a[0].clone())))
    return store, hooks


@pytest.mark.parametrize("name", ["test_deit", "test_swin"])
def test_round_zero_point_codes_equal_channel_wise_codes(name):
    """With z~ = round(mean z), the per-tensor codes of the reparameterized post-LN activations are the
    channel-wise codes, bit for bit (float64, so that no float rounding can move a tie)."""
    torch.manual_seed(0)
    cfg = QuantConfig(w_bits=4, a_bits=4)
    q = quantize_model(create_model(name).double(), cfg)
    x = images(4).double()
    with torch.no_grad():
        q(x)  # initial calibration: post-LN inputs channel-wise
        targets = [lname for _, _, lname, _ in reparam_pairs(q)]
        store, hooks = capture_inputs(q, targets)
        set_quant_state(q, False)
        q(x)
        before = {n: dict(q.named_modules())[n].input_quantizer.codes(store[n]) for n in targets}
        reparameterize(q, "round")
        q(x)
        after = {n: dict(q.named_modules())[n].input_quantizer.codes(store[n]) for n in targets}
    for h in hooks:
        h.remove()
    for n in targets:
        assert dict(q.named_modules())[n].input_quantizer.channel_wise is False
        assert torch.equal(before[n], after[n]), n


def test_mean_zero_point_reproduces_reference_formulas():
    """zero_point='mean' computes the reference code's reparameterization (act_min / target_min form)."""
    torch.manual_seed(0)
    cfg = QuantConfig(zero_point="mean")
    q = quantize_model(create_model("test_deit"), cfg)
    x = images(4)
    with torch.no_grad():
        q(x)
    pairs = reparam_pairs(q)
    want = {}
    for nname, norm, lname, lin in pairs:  # reference code, written out independently
        d, z = lin.input_quantizer.delta, lin.input_quantizer.zero_point
        act_min = -z * d
        td, tz = d.mean(), z.mean()
        target_min = -tz * td
        r = d / td
        b = act_min / r - target_min
        w_new = lin.weight * r
        want[lname] = dict(g=norm.weight / r, beta=norm.bias / r - b, w=w_new,
                           bias=lin.bias + (w_new @ b.reshape(-1, 1)).reshape(-1), td=td, tz=tz)
    with torch.no_grad():
        reparameterize(q, "mean")
    for nname, norm, lname, lin in pairs:
        w = want[lname]
        assert torch.allclose(norm.weight, w["g"], rtol=1e-5, atol=1e-6)
        assert torch.allclose(norm.bias, w["beta"], rtol=1e-4, atol=1e-5)
        assert torch.allclose(lin.weight, w["w"], rtol=1e-5, atol=1e-6)
        assert torch.allclose(lin.bias, w["bias"], rtol=1e-4, atol=1e-4)
        assert lin.input_quantizer.zero_point == pytest.approx(w["tz"].item(), rel=1e-6)
    # the reference's fractional zero point: not an integer in general
    fractional = [abs(lin.input_quantizer.zero_point.item() % 1) > 1e-6 for _, _, _, lin in pairs]
    assert any(fractional)


def test_unsupported_modules_are_refused():
    with pytest.raises(UnsupportedModelError, match="q_norm"):
        quantize_model(create_model("test_vit_qknorm"), QuantConfig())


def test_layer_scale_kept_not_dropped():
    m = create_model("test_vit_layerscale")
    with torch.no_grad():
        m.blocks[0].ls1.gamma.fill_(3.0)
    x = images(2)
    q = quantize_model(copy.deepcopy(m), QuantConfig())
    set_quant_state(q, False)
    with torch.no_grad():
        assert torch.allclose(q(x), m(x), atol=1e-5)
        m.blocks[0].ls1.gamma.fill_(1.0)
        assert not torch.allclose(q(x), m(x), atol=1e-3)  # the layer scale matters and is used


def test_quantization_changes_output_and_is_deterministic():
    m = create_model("test_deit")
    x = images()
    a = calibrate(quantize_model(copy.deepcopy(m), QuantConfig()), x, QuantConfig(), progress=False)
    b = calibrate(quantize_model(copy.deepcopy(m), QuantConfig()), x, QuantConfig(), progress=False)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
        assert not torch.allclose(a(x), m(x), atol=1e-4)


@pytest.mark.parametrize("name", ["test_deit", "test_swin"])
def test_save_load_round_trip(tmp_path, name):
    cfg = QuantConfig(w_bits=4, a_bits=6)
    m = create_model(name)
    x = images()
    q = calibrate(quantize_model(copy.deepcopy(m), cfg), x, cfg, progress=False)
    from repq_hw.models.registry import model_config

    save_calibrated(q, cfg, model_config(name), tmp_path / "cal")
    assert not list((tmp_path / "cal").glob("*.tmp"))
    q2, cfg2, meta = load_calibrated(tmp_path / "cal")
    assert cfg2 == cfg and meta["model"]["name"] == name
    with torch.no_grad():
        # weights are random per process for test models, so compare against the loaded float weights too
        assert torch.equal(q(x), q2(x))


def test_load_calibrated_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="quant.json"):
        load_calibrated(tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", TIMM_MODELS)
def test_full_size_timm_models_quantize(name):
    """Every paper model (random weights): quantization off reproduces timm before and after
    reparameterization, and W4A4 calibration yields finite outputs."""
    torch.manual_seed(0)
    fmodel = create_model(name)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = fmodel(x)
        q = quantize_model(copy.deepcopy(fmodel), QuantConfig())
        set_quant_state(q, False)
        assert (q(x) - ref).abs().max() < 1e-5
        calibrate(q, x, QuantConfig(), progress=False)
        assert torch.isfinite(q(x)).all()
        set_quant_state(q, False)
        assert (q(x) - ref).abs().max() < 1e-5
