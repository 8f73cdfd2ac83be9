"""Hand-computed cases for both quantizers and the vectorised percentile search vs a loop oracle."""

import math

import pytest
import torch

from repq_hw.quant.quantizers import (
    PERCENTILES,
    LogSqrt2Quantizer,
    UniformQuantizer,
    log_sqrt2_codes,
    tail_quantiles,
    uniform_search,
)


def make_uniform(bits, delta, zp, **kw):
    q = UniformQuantizer(bits, **kw)
    q.set_params(torch.tensor(delta), torch.tensor(zp), channel_wise=kw.get("channel_wise", False))
    return q


def test_uniform_codes_hand_cases():
    # delta 0.5, zero point 3, 3 bits: codes in [0, 7]
    q = make_uniform(3, 0.5, 3.0)
    x = torch.tensor([0.25, 0.75, -0.25, -2.0, 10.0, 0.0, 1.0])
    # 0.25/0.5 = 0.5 -> ties to even 0 -> 3 ; 1.5 -> 2 -> 5 ; -0.5 -> -0 -> 3 ; -4+3 = -1 -> clamp 0 ;
    # 20+3 -> clamp 7 ; 0 -> 3 ; 2 -> 5
    assert q.codes(x).tolist() == [3, 5, 3, 0, 7, 3, 5]
    # dequantized: (code - 3) * 0.5
    assert q(x).tolist() == [0.0, 1.0, 0.0, -1.5, 2.0, 0.0, 1.0]


def test_uniform_channel_wise_axis():
    q = make_uniform(2, [1.0, 0.25], [1.0, 0.0], channel_wise=True, channel_axis=-1)
    x = torch.tensor([[[1.0, 1.0], [-3.0, 0.3]]])
    # channel 0: round(1)+1 = 2 ; round(-3)+1 = -2 -> 0 ; channel 1: 4 -> clamp 3 ; 1.2 -> 1
    assert q.codes(x).tolist() == [[[2.0, 3.0], [0.0, 1.0]]]


def test_bits_validated():
    for bad in (1, 9, 0, 4.0, True):
        with pytest.raises(ValueError, match="n_bits"):
            UniformQuantizer(bad)
        with pytest.raises(ValueError, match="n_bits"):
            LogSqrt2Quantizer(bad)


def test_log_sqrt2_hand_cases():
    q = LogSqrt2Quantizer(3)  # 8 levels, codes 0..7, reference: raw >= 8 -> 0
    q.delta, q.inited = torch.tensor(1.0), True
    x = torch.tensor([1.0, 0.5, 2**-0.5, 0.0, 2**-3.5, 2**-4, 2.0, 2**-3])
    # raw = round(-2 log2 x): 0, 2, 1, inf, 7, 8, -2, 6
    expect = [1.0, 0.5, 2**-0.5, 0.0, 2**-3.5, 0.0, 1.0, 2**-3]
    assert torch.allclose(q(x), torch.tensor(expect), rtol=1e-6, atol=0)
    assert q(x)[3] == 0 and q(x)[5] == 0  # exact zero state
    # inference form: code 7 (the smallest level) becomes the zero state as well
    qb = LogSqrt2Quantizer(3, zero_state="b_bit")
    qb.delta, qb.inited = torch.tensor(1.0), True
    assert qb(x)[4] == 0 and qb(x)[7] == 2**-3
    assert log_sqrt2_codes(x, torch.tensor(1.0), 3).tolist() == [0, 2, 1, 7, 7, 7, 0, 6]


def test_log_sqrt2_odd_codes_are_sqrt2_split():
    q = LogSqrt2Quantizer(4)
    q.delta, q.inited = torch.tensor(0.75), True
    for c in range(15):
        x = torch.tensor([0.75 * 2 ** (-c / 2)])
        # odd code 2m+1 -> delta * 2^-(m+1) * sqrt(2)
        want = 0.75 * 2 ** (-math.ceil(c / 2)) * (math.sqrt(2) if c % 2 else 1.0)
        assert q(x).item() == pytest.approx(want, rel=1e-6)


def loop_oracle(rows: torch.Tensor, bits: int):
    """The reference algorithm written plainly: per channel, torch.quantile, strict '<' scan."""
    deltas, zps = [], []
    for row in rows:
        best, best_d, best_z = 1e10, None, None
        for pct in PERCENTILES:
            mx, mn = torch.quantile(row, pct), torch.quantile(row, 1 - pct)
            d = (mx - mn) / (2**bits - 1)
            z = torch.round(-mn / d)
            xq = (torch.clamp(torch.round(row / d) + z, 0, 2**bits - 1) - z) * d
            score = (row - xq).pow(2).mean()
            if score < best:
                best, best_d, best_z = score, d, z
        deltas.append(best_d)
        zps.append(best_z)
    return torch.stack(deltas), torch.stack(zps)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_vectorised_search_matches_loop_oracle(bits):
    g = torch.Generator().manual_seed(bits)
    # heavy-tailed channels with different offsets/scales, like post-LN activations
    rows = torch.randn(16, 3000, generator=g) ** 3 * torch.rand(16, 1, generator=g) * 5 + torch.randn(16, 1, generator=g)
    d, z = uniform_search(rows, bits)
    d_ref, z_ref = loop_oracle(rows, bits)
    assert torch.allclose(d, d_ref, rtol=1e-4)
    assert (z - z_ref).abs().max() <= 1  # zero points agree up to the float32-rank rounding


def test_tail_quantiles_match_torch_quantile():
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(4, 20011, generator=g)
    up = tail_quantiles(rows, PERCENTILES, upper=True)
    lo = tail_quantiles(rows, tuple(1 - p for p in PERCENTILES), upper=False)
    s = rows.sort(dim=1).values
    for i, p in enumerate(PERCENTILES):
        for c in range(4):
            # agree within float32 rounding of the interpolation weight
            gap = (s[c, -1] - s[c, 0]).item() * 1e-4
            assert abs(up[c, i] - torch.quantile(rows[c], p)) <= gap
            assert abs(lo[c, i] - torch.quantile(rows[c], 1 - p)) <= gap


def test_search_prefers_first_of_equal_scores():
    # all candidates identical (few distinct values) -> the first (0.999) is kept, as the reference
    rows = torch.tensor([[0.0] * 500 + [1.0] * 500])
    d, z = uniform_search(rows, 4)
    assert d.item() == pytest.approx(1 / 15) and z.item() == 0


def test_constant_channel_does_not_produce_nan():
    d, z = uniform_search(torch.zeros(2, 100), 4)
    assert torch.isfinite(d).all() and torch.isfinite(z).all()
