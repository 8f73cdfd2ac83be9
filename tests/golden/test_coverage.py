"""Functional coverage (repq_hw/golden/coverage.py, `repq-hw golden coverage`): bins per op, re-derived
from stored tensors; the committed model sets and the directed sets together hit every bin."""

import hashlib
import json

import numpy as np
import pytest

from repq_hw.cli import main
from repq_hw.golden import verify_golden_set
from repq_hw.golden.coverage import (
    BINS,
    OpData,
    log2_bins,
    missed,
    rdiv,
    rshift,
    set_coverage,
    table,
    totals,
    trace_layernorm,
    trace_requantize,
    trace_softmax,
)
from repq_hw.golden.model import GOLDEN_ROOT
from repq_hw.golden.reader import validate_manifest
from tests.golden.helpers import committed_paths, copy_set

DIRECTED = sorted(p for p in (GOLDEN_ROOT / "directed").iterdir() if (p / "manifest.json").is_file())


def _sha(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.mark.parametrize("x,s,mode,want", [(5, 1, "half_up", 3), (-5, 1, "half_up", -2), (5, 1, "half_even", 2),
                                           (7, 1, "half_even", 4), (-5, 1, "half_away", -3), (-5, 1, "floor", -3),
                                           (-14, 2, "half_even", -4), (-7, 0, "half_up", -7),
                                           ((1 << 63) - 1, 62, "half_up", 2), (-(1 << 63), 62, "half_away", -2)])
def test_rshift_follows_the_spec_table(x, s, mode, want):
    assert int(rshift(np.int64(x), np.int64(s), mode)) == want


@pytest.mark.parametrize("n,d,mode,want", [(7, 2, "half_up", 4), (-7, 2, "half_up", -3), (-7, 2, "half_even", -4),
                                           (10, 4, "half_even", 2), (-10, 3, "floor", -4), (-1, 3, "half_away", 0)])
def test_rdiv_follows_the_spec_table(n, d, mode, want):
    assert int(rdiv(np.int64(n), np.int64(d), mode)) == want


def _op(op, attrs, derived, consts):
    return {"name": "t", "op": op, "attrs": attrs, "derived": derived, "constants": {k: k for k in consts},
            "inputs": [{"tensor": "x"}], "outputs": [{"tensor": "y"}]}


def test_requantize_bins_on_the_spec_rows():
    acc = np.array([[[3, -3, 1000, -1000]]], np.int64)
    op = _op("requantize", {"zero_point": 0, "rounding": "half_even"}, {"out_min": -128, "out_max": 127}, ())
    d = OpData(op, [acc], [(-(1 << 31), (1 << 31) - 1)], {"multiplier": np.array([1 << 30]), "shift": np.array([31])})
    y, bins = trace_requantize(d)
    assert y.tolist() == [[[2, -2, 127, -128]]]  # ties 1.5 / -1.5 to even; 500 / -500 clamp
    assert bins["tie.half_even"] == 2 and bins["sat_high"] == 1 and bins["sat_low"] == 1
    assert bins["neg_multiplier"] == 0 and bins["acc_type_max"] == 0


def test_layernorm_bins_on_the_spec_rows():
    x = np.array([[[0, 1], [5, 5]]], np.int64)
    op = _op("layernorm", {"eps_q": 3, "frac_bits": 0, "rounding": "half_up", "zero_point": 0},
             {"out_min": -128, "out_max": 127}, ())
    consts = {"multiplier": np.array([1 << 30]), "shift": np.array([30]), "offset": np.array([0])}
    y, bins = trace_layernorm(OpData(op, [x], [(-32768, 32767)], consts))
    assert y.tolist() == [[[0, 1], [0, 0]]]  # spec: "ties ±0.5 half_up" -> [0, 1]; constant row -> 0
    assert bins["div_tie.half_up"] == 2 and bins["constant_row"] == 1 and bins["sigma_zero"] == 0
    op["attrs"]["eps_q"] = 0
    _, bins = trace_layernorm(OpData(op, [x], [(-32768, 32767)], consts))
    assert bins["sigma_zero"] == 1


def test_softmax_bins_on_the_worked_example():
    from repq_hw.kernels.softmax import exp2_lut

    x = np.array([[[10, 7, 3], [5, 5, 5]]], np.int64)
    op = _op("softmax", {"multiplier": 3, "shift": 1, "frac_bits": 2, "lut_bits": 4, "out_bits": 8,
                         "rounding": "half_even"}, {}, ())
    y, bins = trace_softmax(OpData(op, [x], [(-(1 << 31), (1 << 31) - 1)], {"lut": exp2_lut(2, 4).astype(np.int64)}))
    assert y[0, 0].tolist() == [152, 76, 28] and y[0, 1].tolist() == [85, 85, 85]
    assert bins["exp_tie.half_even"] == 2  # -4.5 and -10.5 (the spec's two ties)
    assert bins["all_equal_row"] == 1 and bins["shift_cap"] == 0


def test_log2_bins_follow_the_thresholds():
    t = np.array([215, 152, 107, 76, 53, 38, 26])
    b = log2_bins(t, (0, 256))
    assert "code.0" in b and "t_plus1.0" in b and "zero_state" in b and "p_zero" in b
    assert log2_bins(np.array([5, 5, 0]), (0, 10)).count("code.1") == 0  # equal thresholds: code 1 unreachable
    assert "t_minus1.2" not in log2_bins(np.array([5, 5, 0]), (0, 10))


def test_traces_reproduce_every_committed_output():
    for d in committed_paths() + DIRECTED:
        set_coverage(d, check=True)  # raises GoldenError naming the op if a trace disagrees with a stored output


def test_committed_and_directed_sets_hit_every_bin():
    assert committed_paths(), "the committed model sets are missing"
    committed = [set_coverage(d) for d in committed_paths()]
    directed = [set_coverage(d) for d in DIRECTED]
    print("\ncommitted model sets:\n" + table(committed))
    print("\ncommitted + directed sets:\n" + table(committed + directed))
    assert missed(committed + directed) == {}
    assert missed(directed) == {}  # the directed sets alone reach every corner
    assert set(totals(committed + directed)) == set(BINS)
    assert missed(committed), "the model sets alone miss corners (that is why the directed sets exist)"


def test_coverage_field_is_written_and_verified(tmp_path):
    s = copy_set(DIRECTED[0], tmp_path / "s")
    m = json.loads((s / "manifest.json").read_text())
    assert "coverage" in m and verify_golden_set(s).ok
    op = next(iter(m["coverage"]["ops"]))
    b = next(iter(m["coverage"]["ops"][op]["bins"]))
    m["coverage"]["ops"][op]["bins"][b] += 1
    (s / "manifest.json").write_text(json.dumps(m, sort_keys=True, indent=1) + "\n")
    rep = verify_golden_set(s)
    assert not rep.ok and any(f"coverage.ops.{op}.bins.{b}" in p for p in rep.problems), rep.text()
    assert verify_golden_set(s, execute=False).ok  # without re-execution: its schema only
    # the CLI rewrites the field from the stored tensors
    assert main(["golden", "coverage", str(s)]) == 0
    assert verify_golden_set(s).ok
    # schema: counts are non-negative integers, ops have a type
    m = json.loads((s / "manifest.json").read_text())
    m["coverage"]["ops"][op]["bins"][b] = -1
    with pytest.raises(Exception, match="minimum|-1"):
        validate_manifest(m)


def test_cli_prints_the_table_and_leaves_committed_sets_alone(capsys):
    before = {d: _sha(d / "manifest.json") for d in committed_paths()}
    assert main(["golden", "coverage", "--no-write", *map(str, committed_paths())]) == 0
    out = capsys.readouterr().out
    assert "softmax" in out and "shift_tie.half_even" in out and "missed:" in out
    assert {d: _sha(d / "manifest.json") for d in committed_paths()} == before


def test_a_set_whose_output_the_trace_does_not_reproduce_is_refused(tmp_path, capsys):
    import hashlib as h

    s = copy_set(GOLDEN_ROOT / "directed" / "directed.add.w4a4", tmp_path / "s")
    f = s / "tensors/residual_add.out.hex"
    lines = f.read_text().split("\n")
    lines[0] = f"{(int(lines[0], 16) ^ 1):02x}"
    f.write_text("\n".join(lines))
    m = json.loads((s / "manifest.json").read_text())
    for fe in m["files"]:
        if fe["path"] == "tensors/residual_add.out.hex":
            fe["sha256"] = h.sha256(f.read_bytes()).hexdigest()
    (s / "manifest.json").write_text(json.dumps(m, sort_keys=True, indent=1) + "\n")
    assert main(["golden", "coverage", "--no-write", str(s)]) == 2
    err = capsys.readouterr().err
    assert "residual_add" in err and "index [0, 0, 0]" in err
