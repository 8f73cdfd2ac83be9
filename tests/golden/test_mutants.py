"""Mutants: wrong implementations of the ops must FAIL against the directed golden sets, with the
mismatch named (op, tensor, index), while the reference passes. Python mutants swap one primitive of the
spec traces (repq_hw/golden/coverage.py); the RTL mutants are edited copies of sim/rtl replayed on the
directed sets (repq_hw/golden/rtl.py `replay(..., sim_dir=...)`)."""

import re
import shutil

import numpy as np
import pytest

from repq_hw.golden import GoldenSet
from repq_hw.golden.coverage import (
    REFERENCE,
    TRACES,
    Prims,
    check_output,
    op_data,
    rdiv,
    rshift,
    set_coverage,
)
from repq_hw.golden.model import GOLDEN_ROOT
from repq_hw.golden.rtl import SIM_DIR, have_icarus, replay
from tests.golden.helpers import committed_paths

DIRECTED = sorted(p for p in (GOLDEN_ROOT / "directed").iterdir() if (p / "manifest.json").is_file())


def _swap(src, dst):
    return lambda mode: dst if mode == src else mode


def _unsigned(m):
    """The multiplier's 32-bit pattern read as unsigned (Python ints: the products exceed int64)."""
    return (np.asarray(m, dtype=np.int64) & 0xFFFFFFFF).astype(object)


_he2hu = _swap("half_even", "half_up")
MUTANTS = {
    # name: (primitives, op types whose directed sets must catch it)
    "half_up_for_half_even": (Prims(rshift=lambda x, s, mode, step: rshift(x, s, _he2hu(mode)),
                                    rdiv=lambda n, d, mode, step: rdiv(n, d, _he2hu(mode))),
                              {"requantize", "layernorm", "softmax", "attn_v_shift"}),
    "floor_division_in_layernorm": (Prims(rdiv=lambda n, d, mode, step: rdiv(n, d, "floor" if step == "ln_div" else mode)),
                                    {"layernorm"}),
    "dropped_eps_q": (Prims(eps=lambda eps_q: 0), {"layernorm"}),
    "missing_saturation": (Prims(clamp=lambda x, lo, hi, step: x), {"requantize", "layernorm", "add"}),
    "unsigned_multiplier": (Prims(multiplier=_unsigned), {"requantize", "layernorm"}),
}


def _findings(sets, prims):
    out = []
    for d in sets:
        gs = GoldenSet(d)
        for op in gs.ops:
            if op["op"] not in TRACES:
                continue
            data = op_data(op, gs.tensor, gs.tensor_entry, gs.constant)
            mm = check_output(op, data, gs.tensor(op["outputs"][0]["tensor"]), prims)
            if mm is not None:
                out.append((d.name, mm))
    return out


def test_the_reference_passes_every_directed_and_committed_op():
    assert _findings(DIRECTED + committed_paths(), REFERENCE) == []


def test_the_sets_cover_every_traced_op_type():
    types = {o["op"] for d in DIRECTED for o in GoldenSet(d).ops}
    assert set(TRACES) <= types


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_python_mutant_fails_on_the_directed_sets(name):
    prims, must = MUTANTS[name]
    found = _findings(DIRECTED, prims)
    assert found, f"mutant {name} passes every directed set"
    for set_name, mm in found:
        text = str(mm)
        assert f"op {mm.op!r}" in text and f"tensor {mm.tensor!r}" in text and "index [" in text, text
        assert mm.tensor.startswith(mm.op) and mm.count >= 1
    caught = {mm.op_type for _, mm in found}
    assert must <= caught, f"{name}: not caught in {must - caught}"
    for bits in ("w4a4", "w8a8"):  # both bit settings catch it
        assert {mm.op_type for s, mm in found if s.endswith(bits)} >= must
    print(f"\n{name}: {len(found)} failing op(s), e.g.")
    for s, mm in found[:4]:
        print(f"  {s}: {mm}")
    on_committed = _findings(committed_paths(), prims)
    print(f"  on the committed model sets: {len(on_committed)} failing op(s)")


# ---------------------------------------------------------------------------------------------------
# RTL mutants

rtl = pytest.mark.skipif(not have_icarus(), reason="Icarus Verilog (iverilog, vvp) is not installed")


def _mutated_sim(tmp_path, file, old, new):
    sim = tmp_path / "sim"
    shutil.copytree(SIM_DIR / "rtl", sim / "rtl")
    shutil.copytree(SIM_DIR / "tb", sim / "tb")
    src = (sim / "rtl" / file).read_text()
    assert src.count(old) == 1, f"{file}: the line to mutate is not there"
    (sim / "rtl" / file).write_text(src.replace(old, new))
    return sim


def _set(op_type, bits=4):
    return GOLDEN_ROOT / "directed" / f"directed.{op_type}.w{bits}a{bits}"


@rtl
@pytest.mark.rtl
def test_rtl_rounding_mutant_is_rejected(tmp_path):
    """half_even rounds like half_up in rq_rshift_round: every unit that rounds with it fails on a
    directed set (its half_even ties), the reference RTL passes."""
    sim = _mutated_sim(tmp_path, "rq_rshift_round.v", "2'd1:    up = (r > h) || ((r == h) && q[0]);",
                       "2'd1:    up = (r >= h);")
    for op_type, op in (("requantize", "rq_u.half_even"), ("layernorm", "ln.half_even"),
                        ("softmax", "sm.half_even"), ("attn_v_shift", "av.half_even")):
        bad = replay(_set(op_type), op, sim_dir=sim, build_dir=tmp_path / "b")
        assert not bad.ok and bad.returncode != 0 and (bad.mismatches or 0) >= 1, bad.line()
        assert bad.checked == bad.elements and "MISMATCH" in bad.output
        assert re.search(r"MISMATCH \w+ element \d+", bad.output), bad.output[-500:]
        good = replay(_set(op_type), op, build_dir=tmp_path / "g")
        assert good.ok, good.line()
        print(f"\nmutant: {bad.line()}\nreference: {good.line()}")


@rtl
@pytest.mark.rtl
def test_rtl_rounding_mutant_and_the_model_sets(tmp_path):
    """The same mutant on a committed model op: it passes exactly when the op has no half_even tie
    (coverage bin tie.half_even = 0), which is why the directed sets exist."""
    sim = _mutated_sim(tmp_path, "rq_rshift_round.v", "2'd1:    up = (r > h) || ((r == h) && q[0]);",
                       "2'd1:    up = (r >= h);")
    sets = {p.name: p for p in committed_paths()}
    if "vit_digits.w4a4.seed0" not in sets:
        pytest.skip("committed model sets missing")
    s, op = sets["vit_digits.w4a4.seed0"], "blocks.0.attn.proj_requant"
    ties = set_coverage(s)["ops"][op]["bins"]["tie.half_even"]
    r = replay(s, op, sim_dir=sim, build_dir=tmp_path / "b", check=False)  # the RTL, not the manifest, is tested
    assert r.ok == (ties == 0), (ties, r.line())
    print(f"\n{op}: {ties} half_even ties; mutant {r.line()}")


@rtl
@pytest.mark.rtl
def test_rtl_missing_low_saturation_is_rejected(tmp_path):
    sim = _mutated_sim(tmp_path, "rq_requant.v", "wire signed [63:0] c  = (r < lo) ? lo : ((r > hi) ? hi : r);",
                       "wire signed [63:0] c  = (r > hi) ? hi : r;")
    for op in ("rq_s.half_even", "rq_u.floor"):
        bad = replay(_set("requantize", 8), op, sim_dir=sim, build_dir=tmp_path / "b")
        assert not bad.ok and (bad.mismatches or 0) >= 1, bad.line()
    bad = replay(_set("layernorm", 8), "ln.half_even", sim_dir=sim, build_dir=tmp_path / "b")
    assert not bad.ok and (bad.mismatches or 0) >= 1, bad.line()
