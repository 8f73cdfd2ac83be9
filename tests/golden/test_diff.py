"""`repq-hw golden diff SET DUMP`: first divergence of a device dump from a golden set (issue 13 A)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from repq_hw.cli import main
from repq_hw.errors import InputError
from repq_hw.golden import GoldenSet
from repq_hw.golden import formats as fmt
from repq_hw.golden.diff import DumpError, diff_dump, load_dump
from tests.golden.helpers import committed_paths

SETS = committed_paths()
pytestmark = pytest.mark.skipif(not SETS, reason="no committed golden set in golden_vectors/")


@pytest.fixture(scope="module")
def gs():
    return GoldenSet(SETS[0])


def _dump(gs, dst: Path) -> Path:
    """A device dump equal to the set: its tensors/*.hex copied."""
    dst.mkdir()
    for p in (gs.path / "tensors").iterdir():
        shutil.copy(p, dst / p.name)
    return dst


def _write(gs, dump: Path, name: str, values: np.ndarray, f: str = "hex"):
    e = gs.tensor_entry(name)
    for old in dump.glob(f"{name}.*"):
        old.unlink()
    if f == "hex":
        data = fmt.encode_hex(values.reshape(-1), e["bits"], e["signed"])
    elif f == "npy":
        data = fmt.npy_bytes(values, e["dtype"])
    else:
        data = fmt.encode_bin(values, e["dtype"])
    (dump / f"{name}.{f}").write_bytes(data)


def test_identical_dump_has_no_divergence(gs, tmp_path, capsys):
    d = _dump(gs, tmp_path / "dump")
    rep = diff_dump(gs, d)
    assert not rep.diverged and rep.first_op is None
    assert len(rep.ops) == len(gs.ops) and all(o.mismatches == 0 for o in rep.ops)
    assert main(["golden", "diff", str(gs.path), str(d)]) == 0
    out = capsys.readouterr().out
    assert "no divergence" in out and "per op, in execution order" in out


@pytest.mark.parametrize("op_type", ["gemm", "softmax", "attn_v_shift", "requantize", "add", "layernorm", "lut",
                                     "bmm_qk", "log2_code"])
def test_one_flipped_element_is_named_with_coordinates_and_inputs(gs, tmp_path, op_type, capsys):
    op = next(o for o in gs.ops if o["op"] == op_type)
    name = op["outputs"][0]["tensor"]
    e = gs.tensor_entry(name)
    exp = gs.tensor(name).astype(np.int64)
    flat = exp.size // 2 + 3
    idx = tuple(int(i) for i in np.unravel_index(flat, exp.shape))
    bad = exp.copy()
    new = int(exp[idx]) ^ 1
    bad[idx] = new
    d = _dump(gs, tmp_path / "dump")
    _write(gs, d, name, bad)
    rep = diff_dump(gs, d)
    assert rep.diverged and rep.first_op.op == op["name"]
    assert [o.op for o in rep.ops if o.mismatches] == [op["name"]]  # downstream dumps are still golden
    assert rep.first_op.mismatches == 1 and rep.first_op.max_abs == 1
    t = rep.first
    assert f"op #{op['index']} {op['name']} ({op_type}" in t
    assert f"tensor {name}" in t
    assert f"flat index {flat} = [{', '.join(map(str, idx))}]" in t
    assert f"image={idx[0]}" in t
    hexd = fmt.hex_digits(e["bits"])
    mask = (1 << e["bits"]) - 1
    assert f"expected {int(exp[idx])} (0x{int(exp[idx]) & mask:0{hexd}x})" in t
    assert f"got {new} (0x{new & mask:0{hexd}x})" in t
    assert "op inputs at this element" in t
    # the inputs printed are the op's own input tensors at that element / row
    for r in op["inputs"]:
        assert r["tensor"] in t
    if op_type in ("requantize", "add", "lut", "log2_code"):
        x = gs.tensor(op["inputs"][0]["tensor"]).astype(np.int64)
        assert f"[{', '.join(map(str, idx))}] = {int(x[idx])} " in t
    if op_type == "gemm":
        assert f"row m={idx[-2]}" in t and f"w[{idx[-1]}, :]" in t and "bias[" in t and "a_zp" in t
    assert main(["golden", "diff", str(gs.path), str(d)]) == 1
    out = capsys.readouterr().out
    assert "FIRST DIVERGENCE" in out and op["name"] in out


def test_first_in_execution_order_wins_and_table_counts(gs, tmp_path):
    ops = [o for o in gs.ops if o["op"] in ("gemm", "requantize")]
    early, late = ops[0], ops[-1]
    d = _dump(gs, tmp_path / "dump")
    for op, k in ((late, 5), (early, 3)):
        n = op["outputs"][0]["tensor"]
        a = gs.tensor(n).astype(np.int64).reshape(-1).copy()
        a[:k] ^= 2
        _write(gs, d, n, a)
    rep = diff_dump(gs, d)
    assert rep.first_op.op == early["name"]
    counts = {o.op: (o.mismatches, o.max_abs) for o in rep.ops}
    assert counts[early["name"]] == (3, 2) and counts[late["name"]] == (5, 2)
    assert f"{3}/{gs.tensor_entry(early['outputs'][0]['tensor'])['elements']}" in rep.table()


def test_npy_and_bin_dumps_and_tensors_subdir(gs, tmp_path):
    d = tmp_path / "dump"
    (d / "tensors").mkdir(parents=True)
    names = [o["outputs"][0]["tensor"] for o in gs.ops]
    for i, n in enumerate(names):
        a = gs.tensor(n).astype(np.int64)
        if i == 3:
            a = a.copy()
            a.reshape(-1)[7] += 1
        # npy of a wider dtype, flat: accepted by element count
        if i % 3 == 0:
            (d / "tensors" / f"{n}.npy").write_bytes(fmt.npy_bytes(a.reshape(-1), "int64"))
        elif i % 3 == 1:
            _write(gs, d / "tensors", n, a, "bin")
        else:
            _write(gs, d, n, a, "hex")
    rep = diff_dump(gs, d)
    assert rep.first_op.op == gs.ops[3]["name"] and "flat index 7 " in rep.first


def test_mapping_file(gs, tmp_path):
    d = _dump(gs, tmp_path / "dump")
    n = gs.ops[0]["outputs"][0]["tensor"]
    a = gs.tensor(n).astype(np.int64)
    a.reshape(-1)[0] += 1
    (d / f"{n}.hex").unlink()
    e = gs.tensor_entry(n)
    (tmp_path / "rtl_out.txt").write_bytes(fmt.encode_hex(a.reshape(-1), e["bits"], e["signed"]))
    m = tmp_path / "map.json"
    m.write_text(json.dumps({n: {"path": "rtl_out.txt", "format": "hex"}}))
    rep = diff_dump(gs, d, m)
    assert rep.first_op.op == gs.ops[0]["name"] and "flat index 0 " in rep.first
    m.write_text(json.dumps({"no.such.tensor": "x.hex"}))
    with pytest.raises(DumpError, match="no.such.tensor"):
        diff_dump(gs, d, m)
    m.write_text(json.dumps({n: "rtl_out.txt"}))
    with pytest.raises(DumpError, match="format 'txt'"):
        diff_dump(gs, d, m)


def test_missing_tensors_are_named(gs, tmp_path, capsys):
    d = _dump(gs, tmp_path / "dump")
    gone = [gs.ops[1]["outputs"][0]["tensor"], gs.ops[-1]["outputs"][0]["tensor"]]
    for n in gone:
        (d / f"{n}.hex").unlink()
    with pytest.raises(DumpError) as ei:
        load_dump(gs, d)
    assert isinstance(ei.value, InputError)
    msg = str(ei.value)
    assert all(n in msg for n in gone) and "misses 2 of" in msg
    # the CLI prints one line, exit 2
    assert main(["golden", "diff", str(gs.path), str(d)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("repq-hw: error:") and gone[0] in err[0]
    # --partial compares what is there and lists what is not
    rep = diff_dump(gs, d, partial=True)
    assert not rep.diverged and rep.skipped == gone and "not in dump" in rep.table()
    with pytest.raises(DumpError, match="no such directory"):
        diff_dump(gs, tmp_path / "nowhere")


@pytest.mark.parametrize("f", ["hex", "npy", "bin"])
def test_wrong_size_is_named(gs, tmp_path, f):
    d = _dump(gs, tmp_path / "dump")
    n = gs.ops[2]["outputs"][0]["tensor"]
    a = gs.tensor(n).astype(np.int64).reshape(-1)[:-5]
    _write(gs, d, n, a, f)
    with pytest.raises(DumpError) as ei:
        diff_dump(gs, d)
    msg = str(ei.value)
    assert n in msg and f"{a.size + 5} elements" in msg


def test_malformed_and_duplicated_files_are_named(gs, tmp_path):
    d = _dump(gs, tmp_path / "dump")
    n = gs.ops[0]["outputs"][0]["tensor"]
    p = d / f"{n}.hex"
    data = bytearray(p.read_bytes())
    data[0:1] = b"z"
    p.write_bytes(bytes(data))
    with pytest.raises(DumpError, match=f"{n}.*invalid hex character"):
        diff_dump(gs, d)
    shutil.copy(gs.path / "tensors" / f"{n}.hex", p)
    e = gs.tensor_entry(n)
    (d / f"{n}.npy").write_bytes(fmt.npy_bytes(gs.tensor(n), e["dtype"]))
    with pytest.raises(DumpError, match="more than once"):
        diff_dump(gs, d)
