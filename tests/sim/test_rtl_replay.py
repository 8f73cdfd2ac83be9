"""Reference RTL (sim/rtl) replaying golden sets with Icarus Verilog: every element of a real op's golden
files goes through the unit, parameters come from the manifest, and any mismatch makes vvp fail."""

import re
import subprocess
from pathlib import Path

import pytest

from repq_hw.golden import GoldenSet
from repq_hw.golden.rtl import RTL_UNITS, SIM_DIR, replay, tb_config
from tests.golden.helpers import committed_paths, copy_set, tiny_set

pytestmark = pytest.mark.rtl

# one real op per unit and set; the W8A8 set skips the second softmax (its arithmetic does not depend on
# the bit width) to keep the tier short
W4_OPS = ["blocks.0.attn.proj_requant", "blocks.0.mlp.gelu_in", "head.logits", "head", "blocks.0.attn.qk",
          "blocks.0.attn.attn_v", "blocks.0.attn.log2_code", "norm", "blocks.0.norm1", "blocks.0.attn.softmax"]
W8_OPS = ["blocks.0.mlp.fc2_requant", "head.logits", "head", "blocks.0.attn.qk", "blocks.0.attn.attn_v",
          "blocks.0.attn.log2_code", "norm"]
# Swin's shifted block (q.k^T, the softmax of biased and masked logits), its patch merging and the head pool
SWIN_OPS = ["layers.0.blocks.1.attn.qk", "layers.0.blocks.1.attn.softmax", "layers.1.downsample.norm",
            "layers.1.downsample.reduction", "head.global_pool", "head.fc_in"]
TINY_OPS = ["blocks.0.attn.q", "patch_embed.requant", "head.logits", "patch_embed.proj", "blocks.1.attn.qk",
            "blocks.2.attn.attn_v", "blocks.0.attn.log2_code", "blocks.1.norm2", "norm", "blocks.0.attn.softmax"]


def _cases():
    sets = {p.name: p for p in committed_paths()}
    cases = []
    for name, ops in (("vit_digits.w4a4.seed0", W4_OPS), ("vit_digits.w8a8.seed0", W8_OPS),
                      ("swin_digits.w8a8.seed0", SWIN_OPS)):
        if name in sets:
            cases += [pytest.param(sets[name], op, id=f"{name}:{op}") for op in ops]
    if not cases:  # before the committed sets exist: a tiny model's set (written in a temporary folder)
        cases = [pytest.param(None, op, id=f"tiny:{op}") for op in TINY_OPS]
    return cases


@pytest.mark.parametrize("set_dir,op", _cases())
def test_unit_replays_golden_op(set_dir, op, tmp_path):
    set_dir = set_dir or tiny_set()
    r = replay(set_dir, op, build_dir=tmp_path)
    assert r.ok, r.line() + "\n" + r.output[-3000:]
    gs = GoldenSet(set_dir, validate=False)
    assert r.checked == gs.tensor_entry(gs.op(op)["outputs"][0]["tensor"])["elements"]
    print(r.line())


def _directed_cases():
    """Every op of every committed directed set (golden_vectors/directed/) that has an RTL unit."""
    from repq_hw.golden.model import GOLDEN_ROOT
    from repq_hw.golden.rtl import replayable_ops

    root = GOLDEN_ROOT / "directed"
    sets = sorted(d for d in root.glob("directed.*") if (d / "manifest.json").is_file()) if root.is_dir() else []
    return [pytest.param(d, op, id=f"{d.name}:{op}") for d in sets for op in replayable_ops(d)]


DIRECTED_CASES = _directed_cases()


@pytest.mark.parametrize("set_dir,op", DIRECTED_CASES)
def test_unit_replays_directed_op(set_dir, op, tmp_path):
    """Directed corner-case sets (ties in every mode, saturation, type extremes, sigma = 0, the softmax
    shift cap, every log2 threshold +-1, max codes): the reference RTL matches every element."""
    r = replay(set_dir, op, build_dir=tmp_path)
    assert r.ok, r.line() + "\n" + r.output[-3000:]
    assert r.checked == r.elements


def test_directed_sets_reach_every_unit():
    assert DIRECTED_CASES, "golden_vectors/directed/ holds no set (repq-hw golden --directed --out golden_vectors/directed)"
    types = {GoldenSet(c.values[0], validate=False).op(c.values[1])["op"] for c in DIRECTED_CASES}
    assert types == set(RTL_UNITS)


def test_every_unit_is_covered():
    assert set(RTL_UNITS) == {"requantize", "gemm", "bmm_qk", "attn_v_shift", "softmax", "layernorm", "log2_code",
                              "avg_pool"}
    gs = GoldenSet(tiny_set())
    ops = {gs.op(o)["op"] for o in TINY_OPS}
    assert ops == set(RTL_UNITS) - {"avg_pool"}  # a ViT has no pool: the Swin set replays it
    swin = {p.name: p for p in committed_paths()}["swin_digits.w8a8.seed0"]
    assert "avg_pool" in {GoldenSet(swin, validate=False).op(o)["op"] for o in SWIN_OPS}


def test_parameters_come_from_the_manifest():
    gs = GoldenSet(tiny_set())
    cfg = tb_config(gs, "blocks.1.norm2")
    op = gs.op("blocks.1.norm2")
    assert cfg.params["EPS_Q"] == op["attrs"]["eps_q"] and cfg.params["ZP"] == op["attrs"]["zero_point"]
    assert cfg.params["F"] == op["attrs"]["frac_bits"] and cfg.params["MODE"] == 1
    assert cfg.params["C"] == 48 and cfg.params["T"] == 2 * 17
    assert cfg.files["out"] == gs.path / "tensors/blocks.1.norm2.out.hex"
    av = tb_config(gs, "blocks.2.attn.attn_v")
    assert av.params["R"] == 46341 and av.params["ZSTATE"] == 15 and av.params["V_ZP"] == gs.op(
        "blocks.2.attn.attn_v")["attrs"]["v_zp"]
    # nothing numeric is hard-coded in the testbenches: every parameter default is overridden
    for top, keys in (("tb_layernorm", cfg.params), ("tb_attn_v", av.params)):
        declared = set(re.findall(r"parameter\s+(?:signed\s+)?(?:\[[^\]]*\]\s+)?(?:integer\s+)?(\w+)\s*=",
                                  (SIM_DIR / "tb" / f"{top}.v").read_text()))
        declared |= set(re.findall(r",\s*(\w+)\s*=", " ".join(
            ln for ln in (SIM_DIR / "tb" / f"{top}.v").read_text().splitlines() if "parameter integer" in ln)))
        assert declared - {"TD", "TN"} <= set(keys), declared - set(keys)


def _flip_bit(path: Path, line: int, dst: Path, bit: int = 0) -> Path:
    lines = path.read_text().split("\n")
    v = int(lines[line - 1], 16) ^ (1 << bit)
    lines[line - 1] = f"{v:0{len(lines[line - 1])}x}"
    dst.write_text("\n".join(lines))
    return dst


@pytest.mark.parametrize("op,key,line,bit", [("blocks.0.attn.q", "out", 5, 0), ("blocks.0.attn.q", "mult", 3, 28),
                                             ("blocks.2.attn.attn_v", "v", 17, 0), ("norm", "out", 2, 0),
                                             ("blocks.0.attn.softmax", "lut", 1, 20)])
def test_a_flipped_bit_fails_the_rtl_test(op, key, line, bit, tmp_path):
    """Output files: any flipped bit fails. Inputs/constants: a bit whose effect reaches the output (the
    LSB of a 31-bit multiplier, for instance, vanishes in the rounding shift; so does the LSB of the
    softmax table entry 2^22 on this data, hence bit 20 of LUT[0], which every row reads)."""
    gs = GoldenSet(tiny_set())
    src = tb_config(gs, op).files[key]
    bad = _flip_bit(src, line, tmp_path / f"bad_{src.name}", bit)
    r = replay(tiny_set(), op, override={key: bad}, build_dir=tmp_path)
    assert r.returncode != 0 and not r.ok
    assert "MISMATCH" in r.output and (r.mismatches or 0) >= 1
    assert r.checked == r.elements  # every element was still driven through the unit


def test_a_flipped_bit_in_a_set_copy_fails_via_the_cli(tmp_path, capsys):
    from repq_hw.cli import main

    s = copy_set(tiny_set(), tmp_path / "s")
    f = s / "tensors/head.logits.out.hex"
    _flip_bit(f, 1, f)
    # a file that no longer matches its sha256 is refused before any simulation (issue 10)
    assert main(["golden", "replay", str(s), "--op", "head.logits"]) == 2
    cap = capsys.readouterr()
    assert "corrupt" in cap.err and "tensors/head.logits.out.hex" in cap.err and "FAIL" not in cap.out
    # re-recorded hashes (a deliberately edited set): the RTL itself catches the flipped bit
    import hashlib
    import json

    m = json.loads((s / "manifest.json").read_text())
    digest = hashlib.sha256(f.read_bytes()).hexdigest()
    for fe in m["files"] + [t["files"]["hex"] for t in m["tensors"] if t["name"] == "head.logits.out"]:
        if fe["path"] == "tensors/head.logits.out.hex":
            fe["sha256"] = digest
    (s / "manifest.json").write_text(json.dumps(m, sort_keys=True, indent=1) + "\n")
    assert main(["golden", "replay", str(s), "--op", "head.logits"]) == 1
    assert "FAIL head.logits" in capsys.readouterr().out
    assert main(["golden", "replay", str(tiny_set()), "--op", "head.logits"]) == 0


def test_vvp_propagates_fatal_as_a_nonzero_exit(tmp_path):
    src = tmp_path / "t.v"
    src.write_text("module t; initial begin $fatal(1, \"boom\"); end endmodule\n")
    subprocess.run(["iverilog", "-g2012", "-o", str(tmp_path / "t.vvp"), str(src)], check=True)
    r = subprocess.run(["vvp", "-n", str(tmp_path / "t.vvp")], check=False, capture_output=True, text=True)
    assert r.returncode != 0 and "boom" in r.stdout + r.stderr


def test_readmemh_reads_the_golden_width_and_sign(tmp_path):
    """`$readmemh` zero-pads a short token and never sign-extends: the golden files write the W-bit two's
    complement in exactly ceil(W/4) digits, and the testbench sign-extends from bit W-1 itself."""
    import numpy as np

    from repq_hw.golden import formats as fmt

    vals = [-1, -512, 511, 0, -2]
    (tmp_path / "m.hex").write_bytes(fmt.encode_hex(np.array(vals), 10, True))
    src = tmp_path / "t.v"
    src.write_text(f"""module t;
    reg [9:0] m [0:4];
    reg [11:0] wide [0:4];
    integer i;
    initial begin
        $readmemh("{tmp_path / 'm.hex'}", m);
        $readmemh("{tmp_path / 'm.hex'}", wide);
        for (i = 0; i < 5; i = i + 1) $display("V %0d %0d", $signed(m[i]), wide[i]);
        $finish;
    end
endmodule
""")
    subprocess.run(["iverilog", "-g2012", "-o", str(tmp_path / "t.vvp"), str(src)], check=True)
    out = subprocess.run(["vvp", "-n", str(tmp_path / "t.vvp")], check=False, capture_output=True, text=True).stdout
    got = [tuple(int(x) for x in ln.split()[1:]) for ln in out.splitlines() if ln.startswith("V ")]
    assert [g[0] for g in got] == vals
    assert [g[1] for g in got] == [v & 0x3FF for v in vals]  # a wider memory sees the zero-padded pattern
