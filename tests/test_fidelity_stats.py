"""The statistics behind the fidelity targets, against values derived by hand from the formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest

from repq_hw.fidelity import (
    Z95,
    FidelityReport,
    discordant_counts,
    paired_difference_interval,
    wilson_interval,
)


def test_z95_is_the_two_sided_95_percent_normal_quantile():
    assert Z95 == pytest.approx(1.959964, abs=1e-6)


def test_wilson_interior_point():
    # k = 90 of n = 100 with z = 2: p = 0.9, z^2/n = 0.04,
    # centre = (0.9 + 4/200) / 1.04, half = 2/1.04 * sqrt(0.9*0.1/100 + 4/(4*100^2)) = 2/1.04 * sqrt(0.001)
    iv = wilson_interval(90, 100, z=2.0)
    centre = 0.92 / 1.04
    half = 2 / 1.04 * math.sqrt(0.001)
    assert iv.estimate == pytest.approx(0.9)
    assert iv.low == pytest.approx(centre - half, rel=1e-12)  # 0.8238...
    assert iv.high == pytest.approx(centre + half, rel=1e-12)  # 0.9454...
    assert iv.low < 0.9 < iv.high


def test_wilson_at_the_edges():
    # p = 0: centre = half = z^2 / (2 (n + z^2)), so the interval is [0, z^2 / (n + z^2)];
    # n = 96, z = 2: [0, 4/100].  p = 1 mirrors it: [n / (n + z^2), 1] = [0.96, 1].
    zero = wilson_interval(0, 96, z=2.0)
    assert zero.low == pytest.approx(0.0, abs=1e-15) and zero.high == pytest.approx(0.04, rel=1e-12)
    one = wilson_interval(96, 96, z=2.0)
    assert one.low == pytest.approx(0.96, rel=1e-12) and one.high == pytest.approx(1.0, rel=1e-12)


def test_wilson_symmetry_and_default_z():
    a, b = wilson_interval(7, 50), wilson_interval(43, 50)
    assert a.low == pytest.approx(1 - b.high, abs=1e-12)
    assert a.high == pytest.approx(1 - b.low, abs=1e-12)
    # default z = Z95: k = 5307 of 5360 (99.01 %) is above 99 % but its lower bound is not
    iv = wilson_interval(5307, 5360)
    assert iv.estimate > 0.99 > iv.low


@pytest.mark.parametrize("k,n", [(0, 0), (-1, 10), (11, 10)])
def test_wilson_rejects_bad_counts(k, n):
    with pytest.raises(ValueError):
        wilson_interval(k, n)


def test_paired_wald_matches_the_differences():
    # b = 3, c = 1, n = 100, z = 2: d = 0.02, var(d_i) = 4/100 - 0.02^2 = 0.0396, half = 2 sqrt(0.0396/100)
    iv = paired_difference_interval(3, 1, 100, z=2.0, adjust=False)
    half = 2 * math.sqrt(0.0396 / 100)
    assert iv.estimate == pytest.approx(0.02)
    assert iv.low == pytest.approx(0.02 - half, rel=1e-12)
    assert iv.high == pytest.approx(0.02 + half, rel=1e-12)
    # the same from the per-item differences (population variance)
    d = np.array([1] * 3 + [-1] * 1 + [0] * 96, dtype=np.float64)
    assert iv.high - iv.estimate == pytest.approx(2 * d.std() / math.sqrt(len(d)), rel=1e-12)


def test_paired_bonett_price():
    # b = 3, c = 1, n = 98, z = 2: p12 = 4/100, p21 = 2/100, centre 0.02,
    # half = 2 sqrt((0.04 + 0.02 - 0.02^2) / 100); the estimate stays the observed 2/98
    iv = paired_difference_interval(3, 1, 98, z=2.0)
    half = 2 * math.sqrt(0.0596 / 100)
    assert iv.estimate == pytest.approx(2 / 98)
    assert iv.low == pytest.approx(0.02 - half, rel=1e-12)
    assert iv.high == pytest.approx(0.02 + half, rel=1e-12)


def test_paired_without_discordant_pairs():
    # plain Wald collapses to [0, 0]; Bonett-Price keeps a width: half = z sqrt((2/(n+2)) / (n+2)) = z sqrt(2)/(n+2)
    w = paired_difference_interval(0, 0, 98, z=2.0, adjust=False)
    assert (w.low, w.estimate, w.high) == (0.0, 0.0, 0.0)
    bp = paired_difference_interval(0, 0, 98, z=2.0)
    assert bp.high == pytest.approx(2 * math.sqrt(2) / 100, rel=1e-12)
    assert bp.low == pytest.approx(-bp.high, rel=1e-12)


def test_paired_antisymmetry():
    a, b = paired_difference_interval(9, 2, 5360), paired_difference_interval(2, 9, 5360)
    assert (a.estimate, a.low, a.high) == pytest.approx((-b.estimate, -b.high, -b.low), abs=1e-15)


@pytest.mark.parametrize("b,c,n", [(0, 0, 0), (-1, 0, 10), (6, 5, 10)])
def test_paired_rejects_bad_counts(b, c, n):
    with pytest.raises(ValueError):
        paired_difference_interval(b, c, n)


def test_discordant_counts():
    a = np.array([1, 1, 0, 0, 1, 0], dtype=bool)
    b = np.array([1, 0, 1, 0, 0, 0], dtype=bool)
    assert discordant_counts(a, b) == (2, 1)
    with pytest.raises(ValueError):
        discordant_counts(a, b[:3])


def test_report_targets_from_predictions():
    y = np.array([0, 1, 2, 3, 4, 5, 6, 7])
    fq = np.array([0, 1, 2, 3, 4, 5, 0, 0])  # 6 right
    it = np.array([0, 1, 2, 3, 4, 9, 6, 0])  # 6 right; disagrees with fq on items 5 and 6
    rep = FidelityReport("W8A8", [], predictions={"fq": fq, "int": it}, labels=y)
    st = rep.targets()
    assert st.n == 8
    assert st.agreement == wilson_interval(6, 8)
    assert st.discordant == (1, 1)  # item 6: int right, fq wrong; item 5: int wrong, fq right
    assert st.gap == paired_difference_interval(1, 1, 8)
    head = rep.targets(slice(0, 5))
    assert head.n == 5 and head.agreement.estimate == 1.0 and head.discordant == (0, 0)
    assert "n=8" in st.line() and "Wilson" in st.line()
