"""The Numba calibration kernels (repq_hw/quant/fused.py) against their torch / plain-Python definitions.

Fake-quantization and tail selection must agree exactly; squared-error sums are compared per element
(one element per row) exactly, and over long rows to float64 rounding.
"""

import math

import numba
import numpy as np
import pytest
import torch

from repq_hw.quant import fused
from repq_hw.quant import quantizers as qz
from repq_hw.quant.quantizers import UniformQuantizer, log_sqrt2_dequant, row_extremes


def torch_uniform_dequant(x, d, z, levels):
    """UniformQuantizer's torch expression (the definition) on broadcastable float32 tensors."""
    return (torch.clamp(torch.round(x / d) + z, 0, levels) - z) * d


def tie_heavy_values(g, n, d):
    """Values on and next to the rounding ties (k + 0.5) * d, plus values far outside the range."""
    k = torch.randint(-40, 40, (n,), generator=g).float()
    x = (k + 0.5) * d
    nudged = torch.nextafter(x, torch.full_like(x, math.inf))
    return torch.cat([x, nudged, torch.randn(n, generator=g) * 50 * d])


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_uniform_sq_err_equals_definition_per_element(bits):
    g = torch.Generator().manual_seed(bits)
    levels = 2**bits - 1
    d = torch.tensor(0.37)
    x = tie_heavy_values(g, 400, d)
    n = x.numel()
    deltas = torch.stack([d * torch.ones(n), torch.rand(n, generator=g) + 0.01], dim=1)
    zps = torch.randint(-3, levels + 4, (n, 2), generator=g).float()  # zero points outside the range too
    got = fused.uniform_sq_err(x[:, None].numpy(), deltas.numpy(), zps.numpy(), levels)
    want = (torch_uniform_dequant(x[:, None], deltas, zps, levels) - x[:, None]).double() ** 2
    assert np.array_equal(got, want.numpy())


def test_uniform_sq_err_long_rows_and_thread_count():
    g = torch.Generator().manual_seed(1)
    rows = torch.randn(3, 3 * fused.CHUNK + 17, generator=g) ** 3
    deltas = torch.rand(3, 3, generator=g) * 0.2 + 0.01
    zps = torch.randint(0, 16, (3, 3), generator=g).float()
    want = ((torch_uniform_dequant(rows[:, None, :], deltas[..., None], zps[..., None], 15)
             - rows[:, None, :]).double() ** 2).sum(dim=2)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = fused.uniform_sq_err(rows.numpy(), deltas.numpy(), zps.numpy(), 15)
    finally:
        numba.set_num_threads(threads)
    many = fused.uniform_sq_err(rows.numpy(), deltas.numpy(), zps.numpy(), 15)
    assert np.array_equal(one, many)  # fixed chunks, fixed order: independent of the thread count
    np.testing.assert_allclose(many, want.numpy(), rtol=1e-12)


def wide_positive_values(rng, n):
    """Log-uniform over the whole float32 range below 4, subnormals, zeros, negatives, NaN, inf and
    values next to exact levels 2^(-c/2)."""
    levels = 2.0 ** (-np.arange(0, 60) / 2)
    return np.concatenate([2.0 ** rng.uniform(-160, 2, n), [0.0, -0.0, -1.0, 1e-45, 3e-39, np.nan, np.inf],
                           levels, np.nextafter(levels.astype(np.float32), np.float32(0))]).astype(np.float32)


def exact_raw(v: float, d: float) -> float:
    """rint(-2 log2(fl32(v / d))) in float64: for a float32 ratio, -2 log2 is never within 1e-8 of a
    half-integer, far beyond float64's error, so this is the exact rounding."""
    q = float(np.float32(v) / np.float32(d))
    if not q > 0:
        return math.inf
    return -math.inf if math.isinf(q) else float(round(-2 * math.log2(q)))


def test_log_sqrt2_table_is_the_float32_expression():
    """The table holds what delta * exp2(-ceil(c/2)) * (1 + odd * (sqrt2 - 1)) gives per element."""
    x = torch.from_numpy(wide_positive_values(np.random.default_rng(0), 20_000))
    for bits, zero_state in ((3, "reference"), (4, "b_bit"), (8, "reference")):
        d = torch.tensor(0.8)
        raw = torch.round(-2.0 * torch.log2(x / d))
        limit = qz._log_limit(bits, zero_state)
        code = torch.clamp(raw, 0, 2**bits - 1)
        xq = d * torch.exp2(-torch.ceil(code / 2)) * (1.0 + torch.remainder(code, 2) * (math.sqrt(2.0) - 1.0))
        want = torch.where(~(raw < limit), torch.zeros_like(xq), xq)
        got = log_sqrt2_dequant(x, d, bits, zero_state)
        assert torch.equal(got.view(torch.int32), want.view(torch.int32))


@pytest.mark.parametrize("bits,zero_state", [(3, "reference"), (4, "b_bit"), (8, "reference")])
def test_log_sqrt2_sq_err_is_exact_per_element(bits, zero_state):
    """Per element: (table[exact code] - x)^2, with the code from the exact rounding of -2 log2."""
    x = wide_positive_values(np.random.default_rng(bits), 600)
    x = x[np.isfinite(x)]  # calibration data is finite (checked before the search)
    d = 0.8
    table = qz.log_sqrt2_table(d, bits).numpy()
    limit = qz._log_limit(bits, zero_state)
    want = []
    for v in x:
        raw = exact_raw(v, d)
        i = 2**bits if raw >= limit else int(min(max(raw, 0), 2**bits - 1))
        e = float(table[i]) - float(v)
        want.append(e * e)  # a product, as the kernel: Python's e ** 2 goes through pow() and may differ
    got = [fused.log_sqrt2_sq_err(x[i : i + 1], np.array([d], np.float32), table[None], limit)[0]
           for i in range(x.size)]
    assert got == want


def test_log_sqrt2_kernel_codes_agree_with_torch_log2():
    """The torch definition rounds float32 log2, which may err by an ulp: codes differ only there."""
    x = torch.softmax(torch.randn(256, 197, generator=torch.Generator().manual_seed(0)) * 4, dim=-1).reshape(-1)
    d = torch.tensor(0.9)
    table = qz.log_sqrt2_table(d, 4)
    e = log_sqrt2_dequant(x, d, 4, "reference").double() - x.double()
    torch_err = (e * e).numpy()
    sample = np.arange(0, x.numel(), 13)
    got = np.array([fused.log_sqrt2_sq_err(x[i : i + 1].numpy(), d.numpy()[None], table[None].numpy(), 16)[0]
                    for i in sample])
    assert np.mean(got == torch_err[sample]) > 0.999


def test_log_sqrt2_sq_err_thread_count_and_sum():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(5 * fused.CHUNK + 3, generator=g) ** 6
    deltas = torch.tensor([0.99, 0.5, 0.25])
    tables = torch.stack([qz.log_sqrt2_table(d, 4) for d in deltas]).numpy()
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = fused.log_sqrt2_sq_err(x.numpy(), deltas.numpy(), tables, 16)
    finally:
        numba.set_num_threads(threads)
    assert np.array_equal(one, fused.log_sqrt2_sq_err(x.numpy(), deltas.numpy(), tables, 16))
    sums = [((log_sqrt2_dequant(x, d, 4, "reference").double() - x.double()) ** 2).sum().item() for d in deltas]
    np.testing.assert_allclose(one, sums, rtol=1e-12)


def topk_both(rows, k):
    return (torch.topk(rows, k, dim=1, largest=True).values, torch.topk(rows, k, dim=1, largest=False).values)


@pytest.mark.parametrize("shape,k", [((5, 1), 1), ((7, 50), 50), ((384, 1000), 3), ((3, 4000), 64),
                                     ((2, 300), 65)])
def test_row_extremes_equal_topk(shape, k):
    g = torch.Generator().manual_seed(k)
    rows = torch.randint(-5, 6, shape, generator=g).float()  # many ties
    rows[0] = torch.arange(shape[1]).float()  # ascending: every element enters the buffer
    for a, b in zip(row_extremes(rows, k), topk_both(rows, k)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("data", ["randn", "ascending", "constant", "outlier_block", "ties"])
def test_long_row_filter_equals_topk(data, monkeypatch):
    monkeypatch.setattr(qz, "FILTER_MIN_ELEMENTS", 1000)
    monkeypatch.setattr(qz, "FILTER_SAMPLE", 256)
    g = torch.Generator().manual_seed(3)
    n = 50_000
    row = {
        "randn": lambda: torch.randn(n, generator=g),
        "ascending": lambda: torch.arange(n).float(),
        "constant": lambda: torch.full((n,), 2.5),
        # the extremes sit in one block the strided sample may miss: the filter must fall back or hold
        "outlier_block": lambda: torch.cat([torch.randn(n - 200, generator=g), torch.full((200,), 1e3)]),
        "ties": lambda: torch.randint(0, 3, (n,), generator=g).float(),
    }[data]()[None]
    for k in (1, 51, 200, 3000):
        for a, b in zip(row_extremes(row, k), topk_both(row, k)):
            assert torch.equal(a, b), (data, k)


def test_beyond_thresholds_keeps_index_order():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(3 * fused.CHUNK + 5, generator=g).numpy()
    hi, lo = fused.beyond_thresholds(x, 2.0, -1.5)
    assert np.array_equal(hi, x[x >= np.float32(2.0)]) and np.array_equal(lo, x[x <= np.float32(-1.5)])


def attention_views(g):
    B, N, H, D = 2, 7, 3, 8
    qkv = torch.randn(B, N, 3 * H * D, generator=g).reshape(B, N, 3, H, D).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    return {"q": q, "k^T": k.transpose(-2, -1), "v": v}


@pytest.mark.parametrize("case", ["tensor", "last_axis", "axis0", "axis1", "q", "k^T", "v", "2d_t"])
def test_fused_fake_quant_is_bit_identical(case):
    g = torch.Generator().manual_seed(5)
    d0 = 0.21
    base = tie_heavy_values(g, 210, d0)  # 630 values: ties and far outliers
    if case in ("q", "k^T", "v"):
        x, cw, axis = attention_views(g)[case] * 3, False, -1
    elif case == "2d_t":
        x, cw, axis = base.reshape(30, 21).t(), False, -1
    else:
        x = base.reshape(5, 6, 21)
        cw, axis = {"tensor": (False, -1), "last_axis": (True, -1), "axis0": (True, 0), "axis1": (True, 1)}[case]
    q = UniformQuantizer(4, channel_wise=cw, channel_axis=axis)
    q.calibrate(x)
    if cw:  # make some channels hit the rounding ties exactly
        q.delta[0] = d0
    else:
        q.delta = torch.tensor(d0)
    q.zero_point = q.zero_point.round()
    got = q(x)
    d, z = q._broadcast(q.delta, x), q._broadcast(q.zero_point, x)
    want = torch_uniform_dequant(x, d, z, 15)
    assert torch.equal(got, want) and got.stride() == want.stride()
    assert torch.equal(got.view(torch.int32), want.view(torch.int32))  # -0.0 vs 0.0 too


def test_fake_quant_with_autograd_takes_the_torch_path():
    x = torch.randn(4, 8, requires_grad=True)
    q = UniformQuantizer(4)
    q.calibrate(x.detach())
    y = q(x)
    assert y.requires_grad  # the torch expression keeps the graph (round has zero gradient)


def test_calibration_refuses_non_finite_data():
    q = UniformQuantizer(4)
    q.name = "blocks.0.attn.proj.input_quantizer"
    x = torch.randn(10)
    x[3] = math.nan
    with pytest.raises(ValueError, match=r"blocks\.0\.attn\.proj\.input_quantizer.*1 NaN/inf"):
        q.calibrate(x)
    lq = qz.LogSqrt2Quantizer(4)
    with pytest.raises(ValueError, match="NaN/inf"):
        lq.calibrate(torch.tensor([0.5, math.inf]))


@pytest.mark.parametrize("bits,zero_state", [(3, "reference"), (4, "b_bit"), (8, "reference")])
def test_log_sqrt2_forward_is_bit_identical(bits, zero_state):
    x = torch.from_numpy(wide_positive_values(np.random.default_rng(bits), 20_000))
    q = qz.LogSqrt2Quantizer(bits, zero_state=zero_state)
    q.delta, q.inited = torch.tensor(0.8), True
    got, want = q(x), log_sqrt2_dequant(x, torch.tensor(0.8), bits, zero_state)
    assert torch.equal(got.view(torch.int32), want.view(torch.int32))


# --- serial and parallel drivers (fused.PARALLEL_MIN picks one by size): the same chunks in the same
# order, so every kernel must return the same bits from either; and the fast paths of quantizers.py.


def _both_drivers(monkeypatch, fn):
    """fn() once with every kernel forced serial and once forced parallel."""
    monkeypatch.setattr(fused, "PARALLEL_MIN", 1 << 62)
    serial = fn()
    monkeypatch.setattr(fused, "PARALLEL_MIN", 0)
    return serial, fn()


def _bits_equal(a, b):
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (3, 2 * fused.CHUNK + 9), (40, 333), (1, 5 * fused.CHUNK)])
def test_search_kernels_serial_equals_parallel(monkeypatch, shape):
    g = torch.Generator().manual_seed(shape[1])
    rows = (torch.randn(shape, generator=g) ** 3).numpy()
    rows[0, : min(shape[1], 50)] = np.where(np.arange(min(shape[1], 50)) % 2, 0.0, -0.0)  # signed zeros
    deltas = (torch.rand(shape[0], 3, generator=g) * 0.2 + 0.01).numpy()
    zps = torch.randint(0, 16, (shape[0], 3), generator=g).float().numpy()
    k = min(shape[1], 7)
    flat = rows.reshape(-1)
    pos = np.abs(flat)
    cands = np.array([pos.max() + 0.01, 0.5, 0.05], np.float32)
    tables = torch.stack([qz.log_sqrt2_table(float(d), 4) for d in cands]).numpy()
    th = (np.float32(np.quantile(flat, 0.9)), np.float32(np.quantile(flat, 0.1)))

    def run():
        return (fused.uniform_sq_err(rows, deltas, zps, 15), *fused.row_tails(rows, k),
                *fused.beyond_thresholds(flat, *th), fused.log_sqrt2_sq_err(pos, cands, tables, 16),
                np.int64(fused.count_nonfinite(flat)))

    for a, b in zip(*_both_drivers(monkeypatch, run)):
        assert _bits_equal(a, b)
    serial = _both_drivers(monkeypatch, run)[0]
    assert np.array_equal(serial[3], flat[flat >= th[0]]) and np.array_equal(serial[4], flat[flat <= th[1]])
    for got, want in zip(serial[1:3], topk_both(torch.from_numpy(rows), k)):
        assert torch.equal(torch.from_numpy(got), want)


@pytest.mark.parametrize("case", ["tensor", "last_axis", "axis0", "q", "k^T"])
def test_fake_quant_serial_equals_parallel_and_definition(monkeypatch, case):
    g = torch.Generator().manual_seed(11)
    base = tie_heavy_values(g, 4000, 0.21)  # 12,000 values
    if case in ("q", "k^T"):
        x, cw, axis = attention_views(g)[case] * 3, False, -1
    else:
        x = base.reshape(24, 20, 25)
        cw, axis = {"tensor": (False, -1), "last_axis": (True, -1), "axis0": (True, 0)}[case]
    q = UniformQuantizer(4, channel_wise=cw, channel_axis=axis)
    q.calibrate(x)
    d, z = q._broadcast(q.delta, x), q._broadcast(q.zero_point, x)
    want = torch_uniform_dequant(x, d, z, 15)
    for got in _both_drivers(monkeypatch, lambda: q(x)):
        assert torch.equal(got.view(torch.int32), want.view(torch.int32)) and got.stride() == want.stride()


@pytest.mark.parametrize("inplace", [True, False])
def test_log_sqrt2_from_log2_serial_parallel_and_definition(monkeypatch, inplace):
    x = torch.from_numpy(wide_positive_values(np.random.default_rng(7), 3 * fused.CHUNK))  # NaN, inf, 0, < 0
    d = torch.tensor(0.8)
    table = qz.log_sqrt2_table(d, 4).numpy()
    want = log_sqrt2_dequant(x, d, 4, "reference")

    def run():
        log2q = torch.div(x, d).log2_().numpy()
        out = log2q if inplace else np.empty_like(log2q)
        fused.log_sqrt2_from_log2(log2q, table, 16, out)
        return out

    for got in _both_drivers(monkeypatch, run):
        assert torch.equal(torch.from_numpy(got).view(torch.int32), want.view(torch.int32))
    with pytest.raises(ValueError, match="overlap"):
        buf = np.zeros(10, np.float32)
        fused.log_sqrt2_from_log2(buf[1:], table, 16, buf[:-1])


def test_row_tails_block_skip_equals_element_scan():
    """Rows whose extremes arrive late, early, in runs and as ties at block edges (TAIL_BLOCK)."""
    n = 7 * fused.TAIL_BLOCK + 5
    ramp = np.arange(n, dtype=np.float32)
    rows = np.stack([ramp, ramp[::-1], np.zeros(n, np.float32), np.where(ramp % 33 == 0, ramp, -ramp),
                     np.sin(ramp).astype(np.float32), np.repeat(np.float32([1, -2, 3]), n // 3 + 1)[:n]])
    for k in (1, 3, fused.TAIL_BLOCK, fused.TAIL_BLOCK + 1):
        up, lo = fused.row_tails(rows, k)
        for c, r in enumerate(rows):  # the definition: k extremes by sorting, most extreme first
            assert np.array_equal(up[c], np.sort(r)[::-1][:k]) and np.array_equal(lo[c], np.sort(r)[:k])


def test_near_tie_rows_is_the_torch_expression():
    g = torch.Generator().manual_seed(8)
    s = torch.rand(500, 3, generator=g, dtype=torch.float64)
    s[::7, 1] = s[::7, 0] * (1 + qz.SCORE_TIE_BAND / 2)  # near ties
    s[::11, 2] = s[::11, 0]  # exact ties
    s[5, 0] = math.nan
    best = s.min(dim=1, keepdim=True).values
    want = torch.nonzero(((s - best) <= qz.SCORE_TIE_BAND * best.abs()).sum(dim=1) > 1).flatten().tolist()
    assert qz._near_tie_rows(s) == want and len(want) > 50


def test_zero_point_rounding_is_torch_round():
    """uniform_search rounds the zero points with np.rint on the CPU: half to even, -0.0 kept, as torch."""
    v = torch.tensor([-2.5, -1.5, -0.5, -0.0, 0.0, 0.5, 1.5, 2.5, 3.4999998, 1e8 + 0.5, math.nan, -math.inf])
    assert torch.equal(torch.from_numpy(np.rint(v.numpy())).view(torch.int32)[:-2], torch.round(v).view(torch.int32)[:-2])
    rows = torch.randn(6, 700, generator=torch.Generator().manual_seed(9)) * 3
    d, z = qz.uniform_search(rows, 4)
    levels = 15
    maxs, mins = qz.percentile_bounds(rows, qz.PERCENTILES)
    deltas = ((maxs - mins) / levels).clamp_min(qz.MIN_DELTA)
    zps = torch.round(-mins / deltas)
    for c in range(6):  # each row's choice is one of the torch-expression candidates, bit for bit
        assert any(z[c].view(torch.int32) == zps[c, j].view(torch.int32)
                   and d[c].view(torch.int32) == deltas[c, j].view(torch.int32) for j in range(3))


def test_reference_view_of_contiguous_data_is_its_clone_layout():
    x = torch.randn(4, 5, 6)
    for cw, axis in ((False, -1), (True, -1), (True, 0)):
        view = qz._ReferenceView(x, cw, axis)
        ref = x.clone()
        for c in (0, 3):
            got, want = view(c), (ref.select(axis, c) if cw else ref)
            assert torch.equal(got, want) and got.stride() == want.stride() and got.shape == want.shape
    strided = x.transpose(0, 2)[::2]  # not dense: the view is a clone, not x
    view = qz._ReferenceView(strided, False, -1)
    assert view(0).data_ptr() != strided.data_ptr() and torch.equal(view(0), strided)
