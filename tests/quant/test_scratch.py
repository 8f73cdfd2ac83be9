"""Scratch buffers of the calibration forward (quantizers.scratch_buffers): reused memory, same values.

calibrate() runs its forward with the quantized modules' temporaries in reused buffers (a quantizer output
that only feeds the next product, the attention scores, the search's contiguous copy). These tests compare
that path with the plain one bit for bit.
"""

import contextlib
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import repq_hw.quant.model as qmodel
from repq_hw.models.registry import create_model
from repq_hw.quant import quantizers as qz
from repq_hw.quant.model import QuantConfig, build_calibrated, quantize_model, set_quant_state
from repq_hw.quant.modules import QuantLinear
from repq_hw.quant.quantizers import UniformQuantizer, scratch, scratch_active, scratch_buffers

CONFIGS = [QuantConfig(4, 4), QuantConfig(8, 8, zero_point="mean"), QuantConfig(3, 3, log_zero_state="b_bit"),
           QuantConfig(4, 4, reparam=False), QuantConfig(4, 4, method="naive")]


def _calibrated_state(name, cfg, monkeypatch, use_scratch):
    monkeypatch.setattr(qmodel, "scratch_buffers", scratch_buffers if use_scratch else contextlib.nullcontext)
    torch.manual_seed(0)
    m = create_model(name)
    g = torch.Generator().manual_seed(3)
    res = 28 if name == "test_swin_pad" else 32
    x = torch.randn(16, 3, res, res, generator=g)
    q = build_calibrated(copy.deepcopy(m), x, cfg, progress=False)
    with torch.no_grad():
        out = q(x[:4])
    return {k: v.clone() for k, v in q.state_dict().items()}, out


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.label}-{c.method}-{c.zero_point}-{c.reparam}")
@pytest.mark.parametrize("name", ["test_vit", "test_deit", "test_swin_pad"])
def test_calibration_with_scratch_buffers_is_bit_identical(name, cfg, monkeypatch):
    plain, plain_out = _calibrated_state(name, cfg, monkeypatch, use_scratch=False)
    fast, fast_out = _calibrated_state(name, cfg, monkeypatch, use_scratch=True)
    assert plain.keys() == fast.keys()
    differing = [k for k in plain if not torch.equal(plain[k], fast[k])]
    assert not differing, differing[:5]
    assert torch.equal(plain_out, fast_out)


def test_scratch_slots_are_reused_and_only_while_active():
    like = torch.zeros(1)
    assert not scratch_active() and scratch("a", (4, 5), like) is None
    with scratch_buffers():
        assert scratch_active()
        a = scratch("a", (4, 5), like)
        assert a.shape == (4, 5) and a.is_contiguous() and a.dtype == torch.float32
        b = scratch("a", (2, 3), like)  # smaller: the same memory
        assert b.data_ptr() == a.data_ptr()
        c = scratch("b", (2, 3), like)  # another slot: other memory
        assert c.data_ptr() != a.data_ptr()
        d = scratch("a", (10, 10), like)  # larger: grown
        assert d.numel() == 100
        with scratch_buffers():  # nested: its own slots, the outer ones back afterwards
            assert scratch("a", (1,), like).data_ptr() != d.data_ptr()
        assert scratch("a", (10, 10), like).data_ptr() == d.data_ptr()
    assert not scratch_active()


def test_quant_linear_out_is_f_linear():
    g = torch.Generator().manual_seed(0)
    for n_in, n_out in ((48, 144), (384, 1152), (7, 5)):
        lin = torch.nn.Linear(n_in, n_out)
        ql = QuantLinear(lin, UniformQuantizer(4), 4)
        x = torch.randn(3, 17, n_in, generator=g)
        with torch.no_grad():
            want = ql(x)
            out = torch.full((3, 17, n_out), float("nan"))
            got = ql(x, out=out)
        assert got.data_ptr() == out.data_ptr() and torch.equal(got, want)
        assert torch.equal(want, F.linear(ql.input_quantizer(x), ql.weight_quantizer(ql.weight), ql.bias))


def test_strided_operand_into_scratch_equals_plain_forward():
    """q / k^T of the attention: calibrated on the scratch copy, fake-quantized from it, the same values
    (and the same calibration) as the plain path on the strided view."""
    g = torch.Generator().manual_seed(1)
    qkv = (torch.randn(4, 19, 3 * 2 * 8, generator=g) ** 3).reshape(4, 19, 3, 2, 8).permute(2, 0, 3, 1, 4)
    q, k, _ = qkv.unbind(0)
    for x in (q, k.transpose(-2, -1)):
        plain, fast = UniformQuantizer(4), UniformQuantizer(4)
        want = plain(x)
        with scratch_buffers():
            out = scratch("out", x.shape, x)
            got = fast(x, out=out)
            assert got.data_ptr() == out.data_ptr()
            assert torch.equal(got, want)
        assert torch.equal(plain.delta, fast.delta) and torch.equal(plain.zero_point, fast.zero_point)
        with scratch_buffers():  # calibrated: the forward alone
            assert torch.equal(fast(x, out=scratch("out", x.shape, x)), want)


def test_explicit_attention_scratch_path_equals_plain_with_quantizers_off():
    torch.manual_seed(0)
    m = quantize_model(create_model("test_vit"), QuantConfig())
    set_quant_state(m, False)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = m(x)
        with scratch_buffers():
            got = m(x)
    assert torch.equal(want, got)


@pytest.mark.parametrize("fused_madd", [True, False])
def test_lerp_columns_is_torch_lerp_per_column(fused_madd):
    rng = np.random.default_rng(4)
    a = rng.standard_normal((300, 4)).astype(np.float32)
    b = (a + rng.standard_normal((300, 4)).astype(np.float32) * np.float32(3.0)).astype(np.float32)
    w = np.array([0.1234567, 0.7654321, 0.49999997, 0.5], dtype=np.float32)
    got = qz._lerp_columns(a, b, w, fused_madd)
    want = np.stack([qz.torch_lerp_f32(a[:, j], b[:, j], w[j], fused_madd) for j in range(4)], axis=1)
    assert np.array_equal(got.view(np.int32), want.view(np.int32))
