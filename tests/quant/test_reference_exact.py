"""Reference mode (zero_point="mean"): the quantiles and the reparameterization of the RepQ-ViT code, bit
for bit.

The official code is not part of this repository; the tests compare against small independent
statements written here:
  * torch.quantile's arithmetic (q rounded to float32, rank in float64 or, older torch, float32, torch's
    lerp with the fused or unfused multiply-add), evaluated with exact rational arithmetic and an explicit
    round-to-nearest-even to float32;
  * the reference's reparameterization order, element-wise steps in numpy float32 (IEEE single, as
    torch's element-wise kernels), the two reductions (mean, mm) through the same torch calls as the
    reference makes.
and, where the result is torch's own float arithmetic, against torch.quantile itself.
"""

from __future__ import annotations

import copy
import math
from fractions import Fraction

import numpy as np
import pytest
import torch

import repq_hw.quant.quantizers as qz
from repq_hw.models.registry import create_model
from repq_hw.quant.model import (
    QuantConfig,
    quantize_model,
    reparam_pairs,
    reparameterize,
    reparameterized_params,
    set_quant_state,
)
from repq_hw.quant.quantizers import (
    PERCENTILES,
    QuantileArithmetic,
    fma_f32,
    percentile_bounds,
    tail_quantiles,
    torch_quantile_arithmetic,
)

# ---------------------------------------------------------------------------------------------------
# Independent statement of torch.quantile (exact rationals, explicit rounding)


def round_f32(v: Fraction) -> np.float32:
    """The float32 nearest to the rational v, ties to the even significand (finite results only)."""
    c = np.float32(float(v))
    cands = {c, np.nextafter(c, np.float32(np.inf)), np.nextafter(c, np.float32(-np.inf))}
    cands = [x for x in cands if np.isfinite(x)]
    best = min(cands, key=lambda x: (abs(Fraction(float(x)) - v), int(np.array(x).view(np.int32)) & 1))
    return np.float32(best)


def lerp_statement(a: np.float32, b: np.float32, w: np.float32, fused: bool) -> np.float32:
    """torch's float32 lerp: a + w (b - a) for |w| < 0.5, else b - (b - a)(1 - w); fused: one rounding
    of each multiply-add, else the product is rounded first."""
    F = lambda x: Fraction(float(x))
    d = round_f32(F(b) - F(a))
    if abs(F(w)) < Fraction(1, 2):
        if fused:
            return round_f32(F(a) + F(w) * F(d))
        return round_f32(F(a) + F(round_f32(F(w) * F(d))))
    one_minus_w = round_f32(1 - F(w))
    if fused:
        return round_f32(F(b) - F(d) * F(one_minus_w))
    return round_f32(F(b) - F(round_f32(F(d) * F(one_minus_w))))


def quantile_statement(x: np.ndarray, q: float, rank: str, fused: bool) -> np.float32:
    """torch.quantile(x, q) (linear) of a float32 vector, as a plain function of the sorted values."""
    s = sorted(float(v) for v in x)
    n = len(s)
    qf = Fraction(float(np.float32(q)))  # the Python float becomes a tensor of x's dtype
    if rank == "float64":
        r = Fraction(float(qf * (n - 1)))  # one double rounding (float(Fraction) rounds to nearest)
        lo = math.floor(r)
        w = round_f32(r - lo)
    else:
        r = Fraction(float(round_f32(qf * (n - 1))))
        lo = math.floor(r)
        w = np.float32(float(r - lo))  # exact
    hi = math.ceil(r)
    return lerp_statement(np.float32(s[lo]), np.float32(s[hi]), w, fused)


def expected_arithmetic() -> QuantileArithmetic:
    """What this torch is known to compute: float64 ranks since PyTorch PR #187574 (the pinned torch
    2.14.1 has them); the lerp is fused wherever torch's CPU capability has FMA."""
    fused = torch.backends.cpu.get_cpu_capability() != "DEFAULT"
    return QuantileArithmetic("float64", fused)


def bits(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float32).view(np.int32)


# ---------------------------------------------------------------------------------------------------
# The statements themselves


def test_fma_f32_rounds_once():
    # x*y + z lands exactly half-way between two float32s after rounding to double; the exact value is
    # below the half-way point, so the answer is the lower neighbour (a naive double fma would round up)
    x = np.float32(2.0**-24 * (1 + 2.0**-23))
    y = np.float32(1 - 2.0**-23)
    z = np.float32(1 + 2.0**-23)
    assert fma_f32(x, y, z) == z
    assert np.float32(np.float64(x) * np.float64(y) + np.float64(z)) != z  # the double-rounding trap
    rng = np.random.default_rng(0)
    a, b, c = ((rng.standard_normal(300) * 10.0 ** rng.integers(-8, 8, 300)).astype(np.float32)
               for _ in range(3))
    got = fma_f32(a, b, c)
    for i in range(300):
        assert bits(got[i]) == bits(round_f32(Fraction(float(a[i])) * Fraction(float(b[i])) + Fraction(float(c[i]))))


@pytest.mark.float_dependent
def test_detected_arithmetic_is_this_torchs():
    got = torch_quantile_arithmetic()
    assert got is not None
    if torch.__version__.startswith("2.14"):
        assert got == expected_arithmetic()


@pytest.mark.float_dependent
def test_statement_equals_torch_quantile():
    arith = expected_arithmetic()
    rng = np.random.default_rng(1)
    for n in (192, 197, 1001, 6304, 25216):
        x = (rng.standard_normal(n) ** 3).astype(np.float32)
        for p in PERCENTILES:
            for q in (p, 1.0 - p):
                want = torch.quantile(torch.from_numpy(x), q).numpy()
                assert bits(quantile_statement(x, q, arith.rank, arith.fused_madd)) == bits(want), (n, q)


def test_float32_and_float64_ranks_differ():
    # the two torch generations give different quantiles on ordinary data: the detection can tell them apart
    x = (np.random.default_rng(2).standard_normal(20011)).astype(np.float32)
    a = quantile_statement(x, 0.999, "float64", True)
    b = quantile_statement(x, 0.999, "float32", True)
    assert bits(a) != bits(b)


# ---------------------------------------------------------------------------------------------------
# The tail kernels equal torch.quantile bit for bit


def same(a, b) -> bool:
    """Bit for bit, except that +0.0 and -0.0 are one value: where a row holds both, which of the equal
    zeros a sort puts at a given rank is the sort's own business (the results are numerically equal)."""
    a, b = np.float32(a), np.float32(b)
    return bool(bits(a) == bits(b)) or (a == 0 and b == 0)


def _check_rows(rows: torch.Tensor):
    up, lo = percentile_bounds(rows, PERCENTILES)
    for c in range(rows.shape[0]):
        for i, p in enumerate(PERCENTILES):
            assert same(up[c, i], torch.quantile(rows[c], p)), (rows.shape, c, p)
            assert same(lo[c, i], torch.quantile(rows[c], 1.0 - p)), (rows.shape, c, 1.0 - p)


# every size class calibration meets: weight rows (in_features 192..3072), channel-wise activations
# (tokens x images: 32 x 197 DeiT, 32 x 3136 Swin stage 1), per-tensor activations (long single rows)
SIZES = [(8, 192), (8, 193), (4, 384), (4, 768), (2, 1536), (2, 3072), (3, 6304), (2, 25216), (1, 100352),
         (1, 131073), (1, 1 << 20)]


@pytest.mark.float_dependent
@pytest.mark.parametrize("shape", SIZES, ids=[f"{c}x{n}" for c, n in SIZES])
def test_percentile_bounds_equal_torch_quantile(shape):
    g = torch.Generator().manual_seed(shape[1])
    rows = torch.randn(*shape, generator=g) ** 3 * torch.rand(shape[0], 1, generator=g) * 4 + torch.randn(
        shape[0], 1, generator=g)
    _check_rows(rows)


@pytest.mark.float_dependent
def test_percentile_bounds_equal_torch_quantile_4m():
    g = torch.Generator().manual_seed(4)
    _check_rows(torch.randn(1, 4 * (1 << 20) + 7, generator=g) * 0.3)  # a post-GELU-sized per-tensor row


@pytest.mark.float_dependent
@pytest.mark.parametrize("case", ["ties", "constant", "two_values", "huge", "tiny", "signed_zero", "softmax"])
def test_percentile_bounds_special_rows(case):
    g = torch.Generator().manual_seed(7)
    n = 5003
    if case == "ties":
        rows = torch.randint(-3, 4, (4, n), generator=g).float() * 0.25
    elif case == "constant":
        rows = torch.full((3, n), 1.5)
    elif case == "two_values":
        rows = torch.where(torch.rand(3, n, generator=g) < 0.9995, 0.0, 7.0)
    elif case == "huge":  # near the float32 limit; differences overflow to inf the way torch's do
        rows = torch.randn(3, n, generator=g).sign() * 3.0e38 * torch.rand(3, n, generator=g)
    elif case == "tiny":  # subnormal float32
        rows = torch.randn(3, n, generator=g) * 1e-40
    elif case == "signed_zero":
        rows = torch.where(torch.rand(3, n, generator=g) < 0.5, -0.0, 0.0)
    else:  # post-Softmax: most values near 0, few near 1
        rows = torch.softmax(torch.randn(2, n, generator=g) * 6, dim=1)
    _check_rows(rows)
    up = tail_quantiles(rows, PERCENTILES, upper=True)
    for c in range(rows.shape[0]):
        for i, p in enumerate(PERCENTILES):
            assert same(up[c, i], torch.quantile(rows[c], p))


def test_other_arithmetics_follow_their_statement(monkeypatch):
    # the older-torch arithmetic (float32 ranks) and the unfused lerp, forced, equal their statements
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((2, 20011)) ** 3).astype(np.float32)
    for arith in qz.QUANTILE_ARITHMETICS:
        monkeypatch.setattr(qz, "_detected", [arith])
        up, lo = percentile_bounds(torch.from_numpy(x), PERCENTILES)
        for c in range(2):
            for i, p in enumerate(PERCENTILES):
                assert bits(up[c, i]) == bits(quantile_statement(x[c], p, arith.rank, arith.fused_madd))
                assert bits(lo[c, i]) == bits(quantile_statement(x[c], 1.0 - p, arith.rank, arith.fused_madd))


def test_older_torch_large_rows_take_the_numpy_fallback(monkeypatch):
    # older torch refuses rows over 2^24 elements; the reference then uses np.percentile (limit lowered
    # here so that the test stays small)
    monkeypatch.setattr(qz, "_detected", [QuantileArithmetic("float32", True)])
    monkeypatch.setattr(qz, "QUANTILE_F32_RANK_LIMIT", 1000)
    x = (np.random.default_rng(4).standard_normal((1, 5000)) ** 3).astype(np.float32)
    up, lo = percentile_bounds(torch.from_numpy(x), PERCENTILES)
    for i, p in enumerate(PERCENTILES):
        assert bits(up[0, i]) == bits(np.float32(np.percentile(x[0], p * 100)))
        assert bits(lo[0, i]) == bits(np.float32(np.percentile(x[0], (1 - p) * 100)))
    # below the limit: the float32-rank torch.quantile statement
    small = x[:, :999]
    up, _ = percentile_bounds(torch.from_numpy(small), PERCENTILES)
    assert bits(up[0, 0]) == bits(quantile_statement(small[0], 0.999, "float32", True))


def test_unknown_arithmetic_calls_torch_quantile(monkeypatch):
    monkeypatch.setattr(qz, "_detected", [None])
    monkeypatch.setattr(qz, "_warned_unknown", [])
    rows = torch.randn(3, 2000, generator=torch.Generator().manual_seed(5))
    with pytest.warns(UserWarning, match="torch.quantile per channel"):
        up, lo = percentile_bounds(rows, PERCENTILES)
    for c in range(3):
        assert bits(up[c, 1]) == bits(torch.quantile(rows[c], PERCENTILES[1]))
        assert bits(lo[c, 2]) == bits(torch.quantile(rows[c], 1.0 - PERCENTILES[2]))


# ---------------------------------------------------------------------------------------------------
# Reparameterization in the reference's float32 order


def reparam_statement(s, z, gamma, beta, weight, bias, round_zero_point: bool):
    """The reference's loop body, one pair: numpy float32 element-wise, torch.mean / torch.mm as it calls
    them."""
    f = np.float32
    s, z, gamma, beta, weight, bias = (np.asarray(v, dtype=f) for v in (s, z, gamma, beta, weight, bias))
    act_min = (-z) * s
    s_t = torch.mean(torch.from_numpy(s)).numpy()
    z_t = torch.mean(torch.from_numpy(z)).numpy()
    if round_zero_point:
        z_t = np.rint(z_t)
    target_min = (-z_t) * s_t
    r = s / s_t
    b = act_min / r - target_min
    w_new = weight * r[None, :]
    mm = torch.mm(torch.from_numpy(np.ascontiguousarray(w_new)), torch.from_numpy(b).reshape(-1, 1)).reshape(-1)
    return [np.asarray(v, dtype=f) for v in (s_t, z_t, gamma / r, beta / r - b, w_new, bias + mm.numpy())]


def _pair_inputs(C=384, out=1152, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = torch.rand(C, generator=g) * 0.2 + 1e-3
    z = torch.round(torch.rand(C, generator=g) * 15)
    return (s, z, torch.randn(C, generator=g), torch.randn(C, generator=g) * 0.1,
            torch.randn(out, C, generator=g) * 0.05, torch.randn(out, generator=g) * 0.1)


@pytest.mark.float_dependent
@pytest.mark.parametrize("mode", ["mean", "round"])
def test_reparameterized_params_equal_the_float32_statement(mode):
    for seed in range(3):
        args = _pair_inputs(seed=seed)
        got = reparameterized_params(*args, zero_point=mode)
        want = reparam_statement(*(a.numpy() for a in args), round_zero_point=mode == "round")
        for name, g_, w_ in zip(("s~", "z~", "gamma", "beta", "W", "bias"), got, want):
            assert g_.dtype == torch.float32
            assert np.array_equal(bits(g_.numpy()), bits(w_)), (mode, seed, name)


def test_modes_differ_only_in_the_zero_point():
    args = _pair_inputs(seed=9)
    mean = reparameterized_params(*args, zero_point="mean")
    rnd = reparameterized_params(*args, zero_point="round")
    assert torch.equal(mean[0], rnd[0])  # s~, and r with it, are shared
    assert torch.equal(rnd[1], torch.round(mean[1]))
    assert torch.equal(mean[2], rnd[2]) and torch.equal(mean[4], rnd[4])  # gamma', W' do not involve z~
    # beta' = beta / r + s~ (z - z~): the modes differ by s~ (z~_round - z~_mean) (to float32 rounding)
    shift = (rnd[1] - mean[1]) * mean[0]
    assert torch.allclose(mean[3] - rnd[3], shift.expand_as(mean[3]), atol=1e-5)


@pytest.mark.float_dependent
@pytest.mark.parametrize("name", ["test_deit", "test_swin"])
def test_reparameterize_model_equals_the_statement(name):
    torch.manual_seed(0)
    model = quantize_model(create_model(name), QuantConfig(zero_point="mean"))
    model.eval()
    set_quant_state(model, True)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        model(x)  # initial calibration: channel-wise post-LN quantizers
    before = copy.deepcopy(model)
    reparameterize(model, "mean")
    pairs_before = {ln: (norm, lin) for ln, norm, _, lin in reparam_pairs(before)}
    for norm_name, norm, lname, lin in reparam_pairs(model):
        n0, l0 = pairs_before[norm_name]
        q0 = l0.input_quantizer
        want = reparam_statement(q0.delta.numpy(), q0.zero_point.numpy(), n0.weight.detach().numpy(),
                                 n0.bias.detach().numpy(), l0.weight.detach().numpy(), l0.bias.detach().numpy(),
                                 round_zero_point=False)
        got = (lin.input_quantizer.delta, lin.input_quantizer.zero_point, norm.weight, norm.bias, lin.weight,
               lin.bias)
        for what, g_, w_ in zip(("s~", "z~", "gamma", "beta", "W", "bias"), got, want):
            assert np.array_equal(bits(g_.detach().numpy()), bits(w_)), (lname, what)
        assert not lin.input_quantizer.channel_wise and not lin.weight_quantizer.inited


# ---------------------------------------------------------------------------------------------------
# The whole search equals the reference's per-channel loop (torch.quantile, float32 torch scores)


def loop_statement(x: torch.Tensor, n_bits: int):
    """The reference's search for one tensor (per tensor): candidates from torch.quantile at p and 1 - p,
    scored by torch's float32 mean of the squared error on x as laid out, strict "<" from 1e10."""
    levels = 2**n_bits - 1
    best, out = 1e10, None
    for p in PERCENTILES:
        hi, lo = torch.quantile(x.reshape(-1), p), torch.quantile(x.reshape(-1), 1.0 - p)
        d = (hi - lo) / levels
        z = (-lo / d).round()
        xq = (torch.clamp(torch.round(x / d) + z, 0, levels) - z) * d
        score = ((x - xq) ** 2).mean()
        if score < best:
            best, out = score, (d, z)
    return out


@pytest.mark.float_dependent
@pytest.mark.parametrize("n_in", [192, 384])
def test_weight_search_equals_the_reference_loop(n_in):
    # short weight rows: the three candidates lie between the two largest values, so their scores are
    # close and float32 rounding decides some rows (the near-tie path)
    g = torch.Generator().manual_seed(n_in)
    w = torch.randn(512, n_in, generator=g) * 0.05
    q = qz.UniformQuantizer(4, channel_wise=True, channel_axis=0)
    q.calibrate(w)
    near = qz._near_tie_rows(qz._uniform_scores(w, *_candidates(w, 4), 4))
    assert near, "expected some near ties on short rows"
    for c in range(w.shape[0]):
        d, z = loop_statement(w[c], 4)
        assert bits(q.delta[c]) == bits(d) and bits(q.zero_point[c]) == bits(z), c


def _candidates(rows, n_bits):
    maxs, mins = percentile_bounds(rows, PERCENTILES)
    deltas = ((maxs - mins) / (2**n_bits - 1)).clamp_min(qz.MIN_DELTA)
    return deltas, torch.round(-mins / deltas)


@pytest.mark.float_dependent
def test_channel_wise_activation_search_equals_the_reference_loop():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 50, 96, generator=g) ** 3 * torch.rand(96, generator=g) + torch.randn(96, generator=g)
    q = qz.UniformQuantizer(4, channel_wise=True, channel_axis=-1)
    q.calibrate(x)
    for c in range(96):
        d, z = loop_statement(x[:, :, c], 4)  # the reference's view of channel c
        assert bits(q.delta[c]) == bits(d) and bits(q.zero_point[c]) == bits(z), c


@pytest.mark.float_dependent
def test_per_tensor_search_on_a_strided_view_equals_the_reference_loop():
    # k^T of the attention: the reference scores its clone (contiguous here, the view not being dense)
    g = torch.Generator().manual_seed(4)
    qkv = torch.randn(2, 50, 3, 3, 16, generator=g).permute(2, 0, 3, 1, 4)
    kt = qkv.unbind(0)[1].transpose(-2, -1)
    for bits_ in (3, 4, 6):
        q = qz.UniformQuantizer(bits_)
        q.calibrate(kt)
        d, z = loop_statement(kt.clone(), bits_)
        assert bits(q.delta) == bits(d) and bits(q.zero_point) == bits(z)


@pytest.mark.float_dependent
def test_log_sqrt2_near_tie_uses_the_reference_score(monkeypatch):
    # force the near-tie path (band = everything) and compare with the reference's float32 scores
    monkeypatch.setattr(qz, "SCORE_TIE_BAND", 1e9)
    g = torch.Generator().manual_seed(6)
    attn = torch.softmax(torch.randn(2, 3, 50, 50, generator=g) * 3, dim=-1)
    d = qz.log_sqrt2_search(attn, 4, "reference", original=attn)
    cands = tail_quantiles(attn.reshape(1, -1), PERCENTILES, upper=True)[0]
    scores = [qz.reference_log_sqrt2_score(attn, c, 4) for c in cands]
    assert bits(d) == bits(cands[qz._reference_pick(scores)])


@pytest.mark.float_dependent
def test_near_tie_rows_take_the_reference_choice(monkeypatch):
    # where float64 and float32 scores rank two close candidates differently (seen on a Swin-T fc1 weight
    # row), the reference's float32 choice wins: rig the float64 scores so that each row's reference
    # choice looks 1e-6 worse than the other candidates
    g = torch.Generator().manual_seed(8)
    w = torch.randn(64, 192, generator=g) * 0.05
    deltas, _ = _candidates(w, 4)
    want = [loop_statement(w[c], 4) for c in range(64)]
    rigged = torch.ones(64, 3, dtype=torch.float64)
    for c, (d, _) in enumerate(want):
        k = [bits(deltas[c, j]) == bits(d) for j in range(3)].index(True)
        rigged[c, k] += 1e-6
    monkeypatch.setattr(qz, "_uniform_scores", lambda *a: rigged.clone())
    d, z = qz.uniform_search(w, 4)
    assert all(bits(d[c]) == bits(want[c][0]) and bits(z[c]) == bits(want[c][1]) for c in range(64))
    monkeypatch.setattr(qz, "SCORE_TIE_BAND", -1.0)  # without the near-tie step the rigged scores win
    d, _ = qz.uniform_search(w, 4)
    assert any(bits(d[c]) != bits(want[c][0]) for c in range(64))
