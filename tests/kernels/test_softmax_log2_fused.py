"""Fused softmax -> log2_code (kernels/fused.py, int32-lane kernel and its legacy fallback) against
``log2_code_ref(softmax_ref(...))``, bit for bit: random and extreme rows, every rounding mode, several
(F, E, P, bits), both gather implementations (explicit vector gather and its plain-loop twin)."""

from __future__ import annotations

import numpy as np
import pytest

from repq_hw.kernels import fused as FU
from repq_hw.kernels import log2_code as L2
from repq_hw.kernels.log2_code import log2_code_ref, log2_code_table, log2_thresholds
from repq_hw.kernels.rounding import ROUNDING_MODES
from repq_hw.kernels.softmax import softmax_fast2_consts, softmax_ref

I32_MIN, I32_MAX = -(1 << 31), (1 << 31) - 1
# (M, s, F, E, P): the DeiT-S W8A8 / W4A4 attributes (lowered graphs), and synthetic ones
ATTRS = [(1647706136, 36, 10, 22, 16), (1315147583, 28, 10, 22, 16), (1 << 20, 22, 8, 15, 16),
         (3, 1, 2, 4, 8), (12345, 9, 6, 29, 12), (12345, 9, 6, 23, 12), (2147483647, 0, 12, 20, 19), (0, 5, 4, 10, 8)]
DELTAS = [(8, 0.0083, 24), (4, 0.0084, 15), (8, 1.0, None), (3, 0.5, None), (2, 0.05, None)]


def rows(rng, n, scale):
    x = rng.integers(-scale, scale + 1, (9, n)).astype(np.int64)
    x[0] = 7  # all equal
    x[1, n // 2] = 1 << 30  # one huge
    x[2] = I32_MIN
    x[2, 0] = I32_MAX  # int32 extremes
    x[3] = rng.integers(I32_MIN, I32_MAX, n, endpoint=True)
    return x.astype(np.int32)


def check(x, attrs, mode, bits, delta, lcodes, **kw):
    m, s, f, e, p = attrs
    th = log2_thresholds(delta, bits, p, lcodes)
    table = log2_code_table(th, bits, p + 1)
    want = log2_code_ref(softmax_ref(x, m, s, f, e, p, mode), th, bits)
    got = FU.softmax_log2_code(x, m, s, f, e, p, mode, table, np.uint8, **kw)
    assert got is not None and got.dtype == np.uint8
    assert np.array_equal(got, want), (attrs, mode, bits, delta, kw)
    return table


@pytest.mark.parametrize("mode", ROUNDING_MODES)
@pytest.mark.parametrize("attrs", ATTRS)
@pytest.mark.parametrize("vec", [True, False])
def test_fused_equals_reference(mode, attrs, vec):
    rng = np.random.default_rng(hash((mode, attrs)) % 2**32)
    assert softmax_fast2_consts(np.zeros((1, 1), np.int32), *attrs, mode) is not None  # the new path runs
    for n in (1, 2, 16, 49, 197, 200):
        for scale in (50, 1 << 12, 1 << 20):
            x = rows(rng, n, scale)
            for bits, delta, lc in DELTAS:
                check(x, attrs, mode, bits, delta, lc, vec=vec)


@pytest.mark.parametrize("mode", ROUNDING_MODES)
def test_fused_legacy_and_new_agree_on_real_like_rows(mode):
    rng = np.random.default_rng(5)
    x = rng.normal(0, 20000, (2, 6, 197, 197)).astype(np.int32)  # DeiT-S W8A8-like logits
    m, s, f, e, p = ATTRS[0]
    th = log2_thresholds(0.0083, 8, 16, 24)
    table = log2_code_table(th, 8, 17)
    want = log2_code_ref(softmax_ref(x, m, s, f, e, p, mode), th, 8)
    for kw in ({}, {"vec": False}, {"legacy": True}):
        assert np.array_equal(FU.softmax_log2_code(x, m, s, f, e, p, mode, table, np.uint8, **kw), want), kw


@pytest.mark.parametrize("mode", ROUNDING_MODES)
@pytest.mark.parametrize("attrs", [(1221832354, 37, 10, 22, 16), (1914980721, 30, 10, 22, 16)])
def test_fused_swin_window_rows(mode, attrs):
    """Swin-T window rows (N = 49 = 3 x 16 + 1: the 16-lane tail) with the Swin-T W8A8 / W4A4 softmax attributes
    (lowered graphs), every kernel variant, against the reference."""
    rng = np.random.default_rng(9)
    x = rng.normal(0, 40000, (2, 3, 49, 49)).astype(np.int32)
    x[0, 0, 0] = 5  # a uniform row
    x[0, 0, 1, 7] = I32_MAX  # a one-hot row
    m, s, f, e, p = attrs
    for bits, delta, lc in DELTAS[:2]:
        th = log2_thresholds(delta, bits, p, lc)
        table = log2_code_table(th, bits, p + 1)
        want = log2_code_ref(softmax_ref(x, m, s, f, e, p, mode), th, bits)
        for kw in ({}, {"vec": False}, {"legacy": True}):
            got = FU.softmax_log2_code(x, m, s, f, e, p, mode, table, np.uint8, **kw)
            assert got is not None and np.array_equal(got, want), (kw, bits)


def test_fused_preconditions_fall_back():
    rng = np.random.default_rng(6)
    x = rng.integers(-1000, 1000, (5, 33)).astype(np.int32)
    for attrs in [(7, 3, 4, 30, 16), (7, 3, 4, 29, 16)]:  # E = 30; N * 2^E >= 2^31
        assert softmax_fast2_consts(x, *attrs, "half_even") is None
        check(x, attrs, "half_even", 4, 0.3, None)  # the legacy kernel still answers exactly
    m, s, f, e, p = ATTRS[2]
    th = log2_thresholds(0.3, 4, p, None)
    table = log2_code_table(th, 4, p + 1)
    short = table[: 1 << p]  # no entry for P = 2^P: the legacy kernel answers while no P reaches it
    want = table[softmax_ref(x, m, s, f, e, p, "floor")]
    assert np.array_equal(FU.softmax_log2_code(x, m, s, f, e, p, "floor", short, np.uint8), want)
    x1 = x.copy()
    x1[0, 0] = 1 << 24  # P = 2^P there: a table miss -> None (the caller runs the ops unfused)
    assert FU.softmax_log2_code(x1, m, s, f, e, p, "floor", short, np.uint8) is None
    many = (np.arange(1 << (p + 1)) // 97 % 200).astype(np.uint8)  # > _CP_MAX change points: legacy
    want = many[softmax_ref(x, m, s, f, e, p, "floor")]
    assert np.array_equal(FU.softmax_log2_code(x, m, s, f, e, p, "floor", many, np.uint8), want)
    assert FU.softmax_log2_code(x.astype(np.int64), m, s, f, e, p, "floor", table, np.uint8) is None


def test_fused_detects_a_wrong_change_point():
    """The tests can fail: a table perturbed at one probability changes the fused codes there."""
    rng = np.random.default_rng(7)
    x = rng.normal(0, 3000, (64, 197)).astype(np.int32)
    m, s, f, e, p = ATTRS[2]
    th = log2_thresholds(0.05, 4, p, None)
    table = log2_code_table(th, 4, p + 1)
    probs = softmax_ref(x, m, s, f, e, p, "half_even")
    t2 = table.copy()
    v = int(np.bincount(probs.ravel()).argmax())
    t2[v] = (t2[v] + 1) % 15
    got = FU.softmax_log2_code(x, m, s, f, e, p, "half_even", t2, np.uint8)
    assert np.array_equal(got, t2[probs]) and not np.array_equal(got, table[probs])


def _rshift_exact(v: int, n: int, mode: str) -> int:
    """v / 2^n rounded with ``mode``, v >= 0, by exact rational comparison (independent of the kernels)."""
    q, r = divmod(v, 1 << n)
    h2 = 2 * r  # compare r with 2^(n-1) as 2r with 2^n
    if mode == "floor" or n == 0:
        return q
    if mode in ("half_up", "half_away"):
        return q + (h2 >= (1 << n))
    return q + (h2 > (1 << n) or (h2 == (1 << n) and q & 1))  # half_even


@pytest.mark.parametrize("mode", ROUNDING_MODES)
@pytest.mark.parametrize("fe", [(10, 22), (2, 4), (6, 29), (0, 1), (12, 20)])
def test_etable_equals_exact_rounding_everywhere(mode, fe):
    """The e-table, every entry: T[u] = round(LUT[u mod 2^F] / 2^(u >> F)) exactly, T[ub] = 0, read-only."""
    from repq_hw.kernels.softmax import exp2_lut, softmax_etable
    f, e = fe
    t = softmax_etable(f, e, mode)
    lut = [int(v) for v in exp2_lut(f, e)]
    ub = (e + 2) << f
    assert t.dtype == np.int32 and t.shape == (ub + 1,) and not t.flags.writeable and t[ub] == 0
    want = [_rshift_exact(lut[u & ((1 << f) - 1)], min(u >> f, 62), mode) for u in range(ub + 1)]
    assert np.array_equal(t, np.array(want, dtype=np.int64))


@pytest.mark.parametrize("nd", [0, 1, 3, 19, 64])
def test_code_intrinsics_equal_their_twin(nd):
    """_codes16 / _codes32 (register counts) against the plain-loop twin, random e, thresholds and weights."""
    from numba import njit

    @njit
    def both(erow, g, w, base, lanes, a1, a2):
        for j in range(0, erow.shape[0], lanes):
            if lanes == 32:
                L2._codes32(erow, j, g, w, g.shape[0], base, a1)
            else:
                L2._codes16(erow, j, g, w, g.shape[0], base, a1)
            L2._codes_scalar(erow, j, g, w, g.shape[0], base, a2, lanes)

    rng = np.random.default_rng(nd)
    for lanes in (16, 32):
        erow = rng.integers(0, 1 << 22, 96).astype(np.int32)
        erow[:4] = [0, (1 << 31) - 1, 5, 6]
        g = np.sort(rng.integers(0, 1 << 22, nd)).astype(np.int32)
        if nd:
            g[0] = erow[2]  # a tie: e == G counts
        w = rng.integers(-3, 4, nd).astype(np.int32)
        a1, a2 = np.full(96, -7, np.int32), np.full(96, 7, np.int32)
        both(erow, g, w, np.int32(40), lanes, a1, a2)
        want = 40 + (w[None, :] * (erow[:, None] >= g[None, :])).sum(axis=1)
        assert np.array_equal(a1, want) and np.array_equal(a2, want)


@pytest.mark.parametrize("vec", [True, False])
def test_fused_constant_table_and_single_change_point(vec):
    """nd = 0 (a constant code table) and nd = 1, every mode, n = 1 .. 200 (both lane widths and tails)."""
    rng = np.random.default_rng(8)
    m, s, f, e, p = ATTRS[0]
    const = np.full((1 << (p + 1)) + 1, 3, np.uint8)
    step = const.copy()
    step[1000:] = 9
    for mode in ROUNDING_MODES:
        for n in (1, 2, 16, 31, 32, 33, 49, 197, 200):
            x = rows(rng, n, 1 << 20)
            probs = softmax_ref(x, m, s, f, e, p, mode)
            for t in (const, step):
                got = FU.softmax_log2_code(x, m, s, f, e, p, mode, t, np.uint8, vec=vec)
                assert np.array_equal(got, t[probs]), (mode, n)
