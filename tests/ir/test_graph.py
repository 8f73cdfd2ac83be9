"""IR serialization and the validator (including a graph built to overflow its accumulator)."""

import json

import numpy as np
import pytest

from repq_hw.emu.execute import run_graph
from repq_hw.ir.graph import IR_VERSION, load_graph, save_graph
from repq_hw.ir.ops import ALL_GROUPS, Op
from repq_hw.ir.validate import IRValidationError, validate_graph
from repq_hw.lower.builder import GraphBuilder
from tests.conftest import lowered


def gemm_graph(k: int, out_type: str = "int32", a_zp: int = 0, w_value: int = 255):
    b = GraphBuilder()
    x = b.input("x", "uint8", (4, k))
    b.node("mm", Op.GEMM, [x], out_type, (4, 2), attrs={"a_zp": a_zp},
           consts={"weight": np.full((2, k), w_value, np.uint8), "w_zp": np.zeros(2, np.int32),
                   "bias": np.zeros(2, np.int32)})
    b.g.outputs.append("mm.out")
    return b.g


def test_every_op_in_exactly_one_group():
    for op in Op:
        assert sum(op in grp for grp in ALL_GROUPS) >= 1


def test_headroom_proof_accepts_and_rejects():
    # K * 255 * 255 <= 2^31 - 1  <=>  K <= 33025
    validate_graph(gemm_graph(33025))
    with pytest.raises(IRValidationError, match="does not fit the declared output int32"):
        validate_graph(gemm_graph(33026))
    # the zero point moves the bound: |a - 255| <= 255 as well, but a 16-bit accumulator overflows early
    with pytest.raises(IRValidationError, match="int16"):
        validate_graph(gemm_graph(2, out_type="int16"))


def test_overflowing_graph_would_really_overflow():
    """The rejected graph is not a false alarm: the reference kernel detects the overflow at run time."""
    g = gemm_graph(33026)
    x = np.full((1, 4, 33026), 255, np.uint8)
    with pytest.raises(OverflowError):
        run_graph(g, x, "ref")


def test_validator_checks_attributes():
    q, g, _ = lowered("test_deit", 4)
    node = next(n for n in g.nodes if n.op == Op.REQUANT)
    saved = node.attrs.pop("rounding")
    with pytest.raises(IRValidationError, match="rounding"):
        validate_graph(g)
    node.attrs["rounding"] = saved
    th = next(n for n in g.nodes if n.op == Op.LOG2_CODE)
    name = th.consts["thresholds"]
    orig = g.constants[name].copy()
    g.constants[name] = orig[::-1].copy()
    try:
        if orig.size > 1 and orig[0] != orig[-1]:
            with pytest.raises(IRValidationError, match="non-increasing"):
                validate_graph(g)
    finally:
        g.constants[name] = orig
    validate_graph(g)


def test_round_trip_and_errors(tmp_path):
    q, g, x = lowered("test_deit", 6)
    save_graph(g, tmp_path / "ir")
    g2 = load_graph(tmp_path / "ir")
    assert g2.hash() == g.hash()
    codes = q.patch_embed.proj.input_quantizer.codes(x[:2]).numpy().astype(np.uint8)
    a, b = run_graph(g, codes, "ref"), run_graph(g2, codes, "ref")
    assert all(np.array_equal(a[k], b[k]) for k in a)

    doc = json.loads((tmp_path / "ir" / "graph.json").read_text())
    doc["ir_version"] = IR_VERSION + 1
    (tmp_path / "ir" / "graph.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="ir_version"):
        load_graph(tmp_path / "ir")

    save_graph(g, tmp_path / "ir2")
    with np.load(tmp_path / "ir2" / "constants.npz") as z:
        consts = {k: z[k] for k in z.files}
    victim = next(k for k in consts if k.endswith("weight"))
    consts[victim] = consts[victim][:, :-1]
    np.savez(tmp_path / "ir2" / "constants.npz", **consts)
    with pytest.raises(ValueError, match=f"{victim}.*shape"):
        load_graph(tmp_path / "ir2")
    del consts[victim]
    np.savez(tmp_path / "ir2" / "constants.npz", **consts)
    with pytest.raises(ValueError, match=f"{victim}.*missing"):
        load_graph(tmp_path / "ir2")


def test_tampered_constant_is_detected(tmp_path):
    _, g, _ = lowered("test_deit", 4)
    save_graph(g, tmp_path / "ir")
    with np.load(tmp_path / "ir" / "constants.npz") as z:
        consts = {k: z[k] for k in z.files}
    victim = next(k for k in consts if k.endswith(".bias"))
    consts[victim] = consts[victim].copy()
    consts[victim][0] += 1
    np.savez(tmp_path / "ir" / "constants.npz", **consts)
    with pytest.raises(ValueError, match="hash mismatch"):
        load_graph(tmp_path / "ir")


def test_constant_outside_declared_width(tmp_path):
    _, g, _ = lowered("test_deit", 4)
    node = next(n for n in g.nodes if n.op == Op.GEMM)
    name = node.consts["weight"]
    orig = g.constants[name]
    bad = orig.copy()
    bad[0, 0] = 200  # declared uint4 for W4
    g.constants[name] = bad  # constants are read-only: replace, never edit in place
    try:
        with pytest.raises(IRValidationError, match=name):
            validate_graph(g)
    finally:
        g.constants[name] = orig


def test_missing_ir_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="graph.json"):
        load_graph(tmp_path)
