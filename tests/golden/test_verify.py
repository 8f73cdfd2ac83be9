"""`repq-hw golden verify`: re-execution, hashes, and naming of the first mismatching tensor and index."""

import json

import numpy as np
import pytest

from repq_hw.cli import main
from repq_hw.golden import Selection, verify_golden_set, write_golden_set
from tests.golden.helpers import copy_set, tiny_graph, tiny_set


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    """Blocks 1..2 and the head, all tensor formats (copied per test before tampering)."""
    g, codes = tiny_graph()
    return write_golden_set(g, codes, tmp_path_factory.mktemp("v") / "s", progress=False,
                            selection=Selection(ops=("blocks.1.attn.*", "head*")))


def test_a_fresh_set_verifies(small_set):
    rep = verify_golden_set(small_set)
    assert rep.ok, rep.text()
    assert rep.elements_checked > 0 and rep.files_checked == sum(
        len(e["files"]) for k in ("tensors", "constants") for e in json.loads((small_set / "manifest.json").read_text())[k])


def test_the_full_tiny_set_verifies_with_the_reference_backend():
    rep = verify_golden_set(tiny_set(), backend="ref")
    assert rep.ok, rep.text()


def _flip_hex_line(path, line, new):
    lines = path.read_text().split("\n")
    assert lines[line - 1] != new and len(lines[line - 1]) == len(new)
    lines[line - 1] = new
    path.write_text("\n".join(lines))


def test_one_tampered_hex_element_is_named(small_set, tmp_path):
    s = copy_set(small_set, tmp_path / "s")
    name = "blocks.1.attn.softmax.out"
    f = s / f"tensors/{name}.hex"
    old = f.read_text().split("\n")[40]  # element 40 = index [0, 0, 2, 6] of [2, 3, 17, 17]
    _flip_hex_line(f, 41, f"{int(old, 16) ^ 1:05x}")
    rep = verify_golden_set(s)
    assert not rep.ok
    m = rep.first_mismatch
    assert (m.kind, m.name, m.fmt, m.index, m.line, m.count) == ("tensor", name, "hex", (0, 0, 2, 6), 41, 1)
    assert m.expected == int(old, 16) and m.found == int(old, 16) ^ 1
    assert any("sha256 mismatch" in p and f"{name}.hex" in p for p in rep.problems)
    assert f"first mismatching tensor '{name}'" in rep.text() and "index [0, 0, 2, 6]" in rep.text()


def test_out_of_range_pattern_is_a_mismatch_not_a_crash(small_set, tmp_path):
    s = copy_set(small_set, tmp_path / "s")
    f = s / "tensors/blocks.1.norm1.out.hex"      # uint4: one digit per element
    _flip_hex_line(f, 3, "0" if f.read_text().split("\n")[2] != "0" else "1")
    lines = f.read_text().split("\n")
    lines[9] = "f" if lines[9] != "f" else "e"
    f.write_text("\n".join(lines))
    rep = verify_golden_set(s)
    assert rep.first_mismatch.name == "blocks.1.norm1.out" and rep.first_mismatch.index == (0, 0, 2)
    assert rep.first_mismatch.count == 2


def test_tampered_npy_and_bin_payloads_are_named(small_set, tmp_path):
    s = copy_set(small_set, tmp_path / "s")
    name = "blocks.1.attn.qkv.out"  # int32 [2, 17, 144]
    npy = s / f"tensors/{name}.npy"
    a = np.load(npy)
    a[1, 3, 7] += 1
    np.save(npy, a)
    b = s / f"tensors/{name}.bin"
    raw = bytearray(b.read_bytes())
    raw[4 * (17 * 144 + 5)] ^= 0x10   # element [1, 0, 5]
    b.write_bytes(bytes(raw))
    rep = verify_golden_set(s)
    mm = {(m.fmt, m.index) for m in rep.mismatches if m.name == name}
    assert mm == {("npy", (1, 3, 7)), ("bin", (1, 0, 5))}


def test_tampered_constant_is_named(small_set, tmp_path):
    s = copy_set(small_set, tmp_path / "s")
    f = s / "constants/blocks.1.attn.qkv.weight.hex"
    first = f.read_text().split("\n")[0]
    _flip_hex_line(f, 1, "0" if first != "0" else "1")
    rep = verify_golden_set(s)
    m = rep.first_mismatch
    assert (m.kind, m.name, m.index) == ("constant", "blocks.1.attn.qkv.weight", (0, 0))


def test_missing_extra_and_incomplete(small_set, tmp_path):
    s = copy_set(small_set, tmp_path / "s")
    (s / "tensors/head.out.bin").unlink()
    (s / "tensors/stray.hex").write_text("0\n")
    rep = verify_golden_set(s)
    assert any("missing file tensors/head.out.bin" in p for p in rep.problems)
    assert any("not listed" in p and "stray.hex" in p for p in rep.problems)
    (s / "manifest.json").unlink()
    rep = verify_golden_set(s)
    assert not rep.ok and "incomplete" in rep.problems[0]


def test_tampered_ir_copy_is_refused(small_set, tmp_path):
    s = copy_set(small_set, tmp_path / "s")
    gj = s / "ir/graph.json"
    gj.write_text(gj.read_text().replace('"heads":3', '"heads":1'))
    rep = verify_golden_set(s)
    assert not rep.ok and any("ir/graph.json" in p for p in rep.problems)


def test_cli_exit_codes(small_set, tmp_path, capsys):
    assert main(["golden", "verify", str(small_set)]) == 0
    assert capsys.readouterr().out.startswith("OK ")
    s = copy_set(small_set, tmp_path / "s")
    f = s / "tensors/head.logits.out.hex"
    _flip_hex_line(f, 2, f"{(int(f.read_text().split()[1], 16) + 1) % (1 << 32):08x}")
    assert main(["golden", "verify", str(s)]) == 1
    out = capsys.readouterr().out
    assert "first mismatching tensor 'head.logits.out'" in out and "index [0, 0, 1]" in out
