"""Directed corner-case golden sets (repq_hw/golden/directed.py, golden_vectors/directed/): the committed
sets verify, are exactly what the builders write, hold the corners the specs list, and `repq-hw golden
--directed` writes them."""

import json
from pathlib import Path

import numpy as np
import pytest

from repq_hw.cli import main
from repq_hw.golden import GoldenSet, verify_golden_set
from repq_hw.golden.coverage import set_coverage, set_missed
from repq_hw.golden.directed import (
    DIRECTED_BITS,
    DIRECTED_OPS,
    directed_graph,
    edge_values,
    set_name,
    write_directed,
)
from repq_hw.golden.model import GOLDEN_ROOT, compare_sets
from repq_hw.golden.writer import GoldenError

DIRECTED_ROOT = GOLDEN_ROOT / "directed"
NAMES = [set_name(t, b) for t in DIRECTED_OPS for b in DIRECTED_BITS]


def test_every_op_and_bit_setting_is_committed():
    assert sorted(p.name for p in DIRECTED_ROOT.iterdir() if p.is_dir()) == sorted(NAMES)
    size = sum(p.stat().st_size for p in DIRECTED_ROOT.rglob("*") if p.is_file())
    assert size < 2_000_000, size


@pytest.mark.parametrize("name", NAMES)
def test_committed_directed_set_verifies_and_hits_its_bins(name):
    d = DIRECTED_ROOT / name
    rep = verify_golden_set(d)  # re-executes the IR and recomputes the manifest's coverage field
    assert rep.ok, rep.text()
    gs = GoldenSet(d)
    op_type = name.split(".")[1]
    assert gs.manifest["bits"]["label"] == name.split(".")[-1]
    assert gs.manifest["coverage"] == set_coverage(d)
    assert op_type in {o["op"] for o in gs.ops}
    assert set_missed(gs.manifest["coverage"]) == {}, f"{name} misses bins"


def test_regeneration_is_byte_identical(tmp_path):
    """The committed sets are exactly what the builders write (provenance.json aside), so the README's
    generation command reproduces them."""
    paths = write_directed(tmp_path)
    assert [p.name for p in paths] == NAMES
    for p in paths:
        cmp = compare_sets(DIRECTED_ROOT / p.name, p)
        assert cmp.identical, "\n".join(cmp.lines())


def test_edge_values_are_the_spec_sweep():
    v = edge_values(-(1 << 31), (1 << 31) - 1)
    for x in (-(1 << 31), (1 << 31) - 1, (1 << 31) - 2, -(1 << 31) + 1, 0, 1, -1, (1 << 20) + 2, -(1 << 20) - 2, 7):
        assert x in v
    assert v == sorted(set(v)) and min(v) == -(1 << 31) and max(v) == (1 << 31) - 1
    assert edge_values(0, 15) == [*range(11), 13, 14, 15]  # 11 and 12 are no 2^i ± {0, 1, 2} nor a limit


def _inputs(name):
    gs = GoldenSet(DIRECTED_ROOT / name)
    return gs, gs.input_codes().astype(np.int64)


def test_corner_inputs_are_present():
    gs, acc = _inputs(set_name("requantize", 4))
    assert acc.min() == -(1 << 31) and acc.max() == (1 << 31) - 1
    mult = gs.constant(gs.op("rq_u.half_even")["constants"]["multiplier"]).astype(np.int64)
    assert (mult < 0).any() and (mult == 0).any() and mult.max() == (1 << 31) - 1
    assert {o["attrs"]["rounding"] for o in gs.ops} == {"half_up", "half_even", "half_away", "floor"}

    gs, x = _inputs(set_name("layernorm", 8))
    rows = x[0]
    assert any((r == r[0]).all() for r in rows)  # constant rows
    assert rows.min() == -(1 << 15) and rows.max() == (1 << 15) - 1
    assert {o["attrs"]["eps_q"] for o in gs.ops} >= {0, 9}

    gs, x = _inputs(set_name("softmax", 4))
    assert any((r == r[0]).all() for r in x[0]) and x.min() == -(1 << 31) and x.max() == (1 << 31) - 1

    gs, p = _inputs(set_name("log2_code", 8))
    for o in gs.ops:
        t = gs.constant(o["constants"]["thresholds"]).astype(np.int64)
        assert o["derived"]["levels"] == len(t)
        for tk in t:
            assert tk in p and (tk + 1) in p and (tk == 0 or (tk - 1) in p)
    assert 0 in p and (1 << 16) in p

    gs, x = _inputs(set_name("lut", 8))
    table = gs.constant(gs.op("gelu")["constants"]["table"])
    assert x.min() == -512 and x.max() == 511 and table[0] != table[-1] and table[-1] == 255

    gs, x = _inputs(set_name("attn_v_shift", 8))
    av = [o for o in gs.ops if o["op"] == "attn_v_shift"]
    codes = gs.tensor(av[0]["inputs"][0]["tensor"])
    assert codes.max() == 255 and av[0]["attrs"]["max_code"] in codes  # zero state and the largest code


def test_graphs_validate_and_refuse_unknown_requests():
    for t in DIRECTED_OPS:
        g, codes = directed_graph(t, 4)
        assert codes.shape[0] == 1 and len(g.inputs) == 1
    with pytest.raises(GoldenError, match="no directed set"):
        directed_graph("patchify", 4)
    with pytest.raises(GoldenError, match="bits"):
        directed_graph("add", 5)


def test_cli_writes_one_set_per_op_and_bits(tmp_path, capsys):
    out = tmp_path / "d"
    assert main(["golden", "--directed", "--op-type", "add,lut", "--bits", "4,8", "--out", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(set_name(t, b) for t in ("add", "lut") for b in (4, 8))
    assert "wrote" in capsys.readouterr().out
    m = json.loads((out / set_name("add", 8) / "manifest.json").read_text())
    assert m["coverage"]["ops"]["residual_add"]["bins"]["sat_high"] > 0
    # an existing set is never overwritten silently; --force replaces it
    assert main(["golden", "--directed", "--op-type", "add", "--bits", "4", "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["golden", "--directed", "--op-type", "add", "--bits", "4", "--out", str(out), "--force"]) == 0
    assert compare_sets(out / set_name("add", 4), DIRECTED_ROOT / set_name("add", 4)).identical


@pytest.mark.parametrize("argv,msg", [
    (["--directed", "--op-type", "add"], "--out"),
    (["--directed", "--op-type", "softmax_v2", "--out", "X"], "no directed set"),
    (["--directed", "--bits", "6", "--out", "X"], "bits"),
    (["--directed", "--ir", "somewhere", "--out", "X"], "--directed"),
])
def test_cli_refuses(argv, msg, tmp_path, capsys):
    argv = [str(tmp_path / a) if a == "X" else a for a in argv]
    assert main(["golden", *argv]) == 2
    assert msg in capsys.readouterr().err
    assert not (tmp_path / "X").exists()


def test_bits_list_is_only_for_directed(capsys):
    assert main(["golden", "--model", "vit_digits", "--bits", "4,8", "--out", "nowhere"]) == 2
    assert "--directed" in capsys.readouterr().err
    assert not Path("nowhere").exists()
