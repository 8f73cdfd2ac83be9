"""cocotb 2.x testbenches (sim/cocotb) replaying golden ops on the reference units under Icarus Verilog and
Verilator, built and run from pytest with cocotb's Python runner (cocotb_tools.runner). The Python side
reads the golden set with the project's reader and is the scoreboard; a unit with the same interface under
other port names is driven through a port mapping, and a unit with a bug is caught."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from tests.golden.helpers import committed_paths, tiny_set

REPO = Path(__file__).resolve().parents[2]


def _load_runner():
    """sim/cocotb/run.py, imported under a name of its own (it is a script, not a package module)."""
    spec = importlib.util.spec_from_file_location("repq_cocotb_run", REPO / "sim" / "cocotb" / "run.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


cocotb_run = _load_runner()

pytestmark = pytest.mark.rtl

W4 = "vit_digits.w4a4.seed0"
# (op in the committed W4A4 set, op in the tiny fallback set, max_elements: 0 = every element)
UNITS = {
    "requant": ("blocks.0.attn.proj_requant", "patch_embed.requant", 0),
    "gemm_tile": ("head", "head", 0),
    "attn_v": ("blocks.0.attn.attn_v", "blocks.2.attn.attn_v", 256),
}


def _set_and_op(unit: str) -> tuple[Path, str, int]:
    sets = {p.name: p for p in committed_paths()}
    committed, tiny, limit = UNITS[unit]
    if W4 in sets:
        return sets[W4], committed, limit
    return tiny_set(), tiny, limit


def _need(sim: str) -> None:
    ok, why = cocotb_run.have_simulator(sim)
    if not ok:
        pytest.skip(why)


def test_cocotb_is_2x():
    if importlib.util.find_spec("cocotb") is None:
        pytest.skip("cocotb is not installed (pip install '.[dev]')")
    import cocotb

    assert int(cocotb.__version__.split(".")[0]) >= 2, cocotb.__version__
    from cocotb_tools import runner  # noqa: F401  (the 2.x Python runner)


@pytest.mark.parametrize("sim", cocotb_run.SIMULATORS)
@pytest.mark.parametrize("unit", sorted(UNITS))
def test_unit_matches_golden(unit, sim, tmp_path):
    _need(sim)
    set_dir, op, limit = _set_and_op(unit)
    assert cocotb_run.bench_for(set_dir, op) == unit
    tests, fails, xml = cocotb_run.run(set_dir, op, sim, max_elements=limit, build_dir=tmp_path / "build")
    assert tests == 1 and fails == 0, f"{unit} under {sim}: {fails} of {tests} cocotb test(s) failed ({xml})"


def test_bmm_qk_on_the_gemm_tile(tmp_path):
    _need("icarus")
    sets = {p.name: p for p in committed_paths()}
    set_dir, op = (sets[W4], "blocks.0.attn.qk") if W4 in sets else (tiny_set(), "blocks.1.attn.qk")
    tests, fails, _ = cocotb_run.run(set_dir, op, "icarus", max_elements=130, build_dir=tmp_path / "b")
    assert (tests, fails) == (1, 0)


# A unit of one's own: the reference requantizer behind other port names, optionally with a bug that flips
# the lowest bit of every 7th result. The bench reaches it through `ports` and must catch the bug.
OWN_UNIT = """
`timescale 1ns/1ps
module my_requant #(parameter integer BUG = 0) (
    input wire ck, input wire reset, input wire vld_i, input wire signed [31:0] acc_i,
    input wire signed [31:0] m_i, input wire [5:0] s_i, input wire signed [63:0] off_i,
    input wire signed [31:0] zp_i, input wire signed [31:0] lo_i, input wire signed [31:0] hi_i,
    input wire [1:0] rnd_i, output wire vld_o, output wire signed [31:0] q_o);
    wire signed [31:0] y;
    reg [2:0] n = 0;
    rq_requant #(.ACC_W(32)) u (.clk(ck), .rst(reset), .in_valid(vld_i), .acc(acc_i), .mult(m_i), .shift(s_i),
        .offset(off_i), .zp(zp_i), .out_min(lo_i), .out_max(hi_i), .mode(rnd_i), .out_valid(vld_o), .y(y));
    always @(posedge ck) if (vld_o) n <= (n == 6) ? 0 : n + 1;
    assign q_o = (BUG != 0 && n == 6) ? (y ^ 32'sd1) : y;
endmodule
"""
OWN_PORTS = {"clk": "ck", "rst": "reset", "in_valid": "vld_i", "acc": "acc_i", "mult": "m_i", "shift": "s_i",
             "offset": "off_i", "zp": "zp_i", "out_min": "lo_i", "out_max": "hi_i", "mode": "rnd_i",
             "out_valid": "vld_o", "y": "q_o"}


@pytest.mark.parametrize("bug", [0, 1])
def test_own_unit_through_port_mapping(bug, tmp_path):
    _need("icarus")
    set_dir, op, _ = _set_and_op("requant")
    src = tmp_path / "my_requant.v"
    src.write_text(OWN_UNIT)
    rtl = REPO / "sim" / "rtl"
    tests, fails, _ = cocotb_run.run(set_dir, op, "icarus", bench="requant", toplevel="my_requant",
                                     sources=[rtl / "rq_rshift_round.v", rtl / "rq_requant.v", src],
                                     ports=OWN_PORTS, parameters={"BUG": bug}, max_elements=700,
                                     build_dir=tmp_path / "build")
    assert tests == 1
    assert fails == bug, "the scoreboard must pass the correct unit and catch the buggy one"
