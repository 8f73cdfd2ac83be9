"""Fused softmax -> log2_code (kernels/fused.py, int32-lane kernel and its legacy fallback) against
``log2_code_ref(softmax_ref(...))``, bit for bit: random and extreme rows, every rounding mode, several
(F, E, P, bits), both gather implementations (explicit vector gather and its plain-loop twin)."""

from __future__ import annotations

import numpy as np
import pytest

from repq_hw.kernels import fused as FU
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
