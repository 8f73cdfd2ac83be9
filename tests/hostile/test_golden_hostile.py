"""Hostile and careless golden-set input (issue #10) and the float-reproducibility record of sets (issue #11).

* verify re-derives every manifest field a testbench reads from the set's IR copy: an edited zero point,
  scale, width, shape, attribute, lane packing or file name fails, naming the field;
* replay verifies first: a corrupt set is refused ("corrupt", naming the file or field) before any simulation;
* names that become paths cannot leave their directory (``meta.model``, tensor / node names), and paths a
  manifest names cannot point outside the set (``..``, absolute, symbolic links);
* CLI numbers and ``--out`` are checked at parse time / before any work;
* malformed manifests, missing files and wrong-length files raise an ``InputError`` naming the file;
* the manifest's ``reproducible`` flag, ``float_env`` in provenance.json, and ``compare_sets`` reasons.

Uses the committed W4A4 set (numpy only: nothing here calibrates a model).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from repq_hw.cli import main
from repq_hw.errors import InputError
from repq_hw.golden import GoldenError, GoldenSet, Selection, verify_golden_set, write_golden_set
from repq_hw.golden.formats import FormatError
from repq_hw.golden.model import GOLDEN_ROOT, compare_sets
from repq_hw.golden.reader import member
from repq_hw.golden.writer import Formats, canonical_json, check_relpath, set_name

W4 = GOLDEN_ROOT / "vit_digits.w4a4.seed0"
HEX_ONLY = Formats(tensors=("hex",), constants=("hex",))

pytestmark = pytest.mark.skipif(not (W4 / "manifest.json").is_file(), reason="the committed W4A4 set is missing")


@pytest.fixture
def w4(tmp_path) -> Path:
    return Path(shutil.copytree(W4, tmp_path / "set"))


def _load(d: Path) -> dict:
    return json.loads((d / "manifest.json").read_text())


def _save(d: Path, m: dict) -> None:
    (d / "manifest.json").write_bytes(canonical_json(m))


def _op(m, name):
    return next(o for o in m["ops"] if o["name"] == name)


def _tensor(m, name):
    return next(t for t in m["tensors"] if t["name"] == name)


def _const(m, name):
    return next(c for c in m["constants"] if c["name"] == name)


def _files_outside(root: Path, inside: Path) -> list[str]:
    """Every file under ``root`` that is not under ``inside``."""
    out = []
    for d, _, files in os.walk(root):
        for f in files:
            p = Path(d) / f
            if not p.resolve().is_relative_to(inside.resolve()):
                out.append(str(p))
    return out


# ---------------------------------------------------------------------------------------------------
# 1. verify covers every manifest field a testbench reads


def _e_op_zp(m):
    _op(m, "blocks.0.attn.proj_requant")["attrs"]["zero_point"] += 1
    return "ops[7](blocks.0.attn.proj_requant).attrs.zero_point"


def _e_gemm_a_zp(m):
    _op(m, "blocks.0.attn.qkv")["attrs"]["a_zp"] += 1
    return "attrs.a_zp"


def _e_softmax_shift(m):
    _op(m, "blocks.0.attn.softmax")["attrs"]["shift"] += 1
    return "(blocks.0.attn.softmax).attrs.shift"


def _e_tensor_zp(m):
    _tensor(m, "blocks.0.norm1.out")["zero_point"] += 1
    return "(blocks.0.norm1.out).zero_point"


def _e_tensor_scale(m):
    _tensor(m, "blocks.0.norm1.out")["scale"] *= 1.5
    return "(blocks.0.norm1.out).scale"


def _e_width(m):
    t = _tensor(m, "blocks.0.mlp.gelu_in.out")
    t["bits"] = 12
    return "(blocks.0.mlp.gelu_in.out).bits"


def _e_signed(m):
    _tensor(m, "blocks.0.attn.qk.out")["signed"] = False
    return "(blocks.0.attn.qk.out).signed"


def _e_shape(m):
    t = _tensor(m, "blocks.0.attn.softmax.out")
    t["shape"] = [t["shape"][0] * t["shape"][1], 1, t["shape"][2]]  # same element count, other shape
    return "(blocks.0.attn.softmax.out).shape"


def _e_derived(m):
    _op(m, "blocks.0.attn.attn_v")["derived"]["sqrt2_multiplier"] += 1
    return "derived.sqrt2_multiplier"


def _e_inline_values(m):
    c = next(c for c in m["constants"] if "values" in c)
    c["values"][0] += 1
    return f"({c['name']}).values[0]"


def _e_lanes(m):
    _tensor(m, "blocks.0.attn.qk.out")["files"]["hex"]["lanes_per_word"] = 2
    return "(blocks.0.attn.qk.out).files.hex.lanes_per_word"


def _e_consumer(m):
    _op(m, "head")["inputs"][0]["tensor"] = "blocks.0.norm1.out"
    return "(head).inputs[0].tensor"


def _e_constant_role(m):
    _op(m, "blocks.0.attn.qkv")["constants"]["weight"] = "blocks.0.attn.proj.weight"
    return "(blocks.0.attn.qkv).constants.weight"


def _e_bits_label(m):
    m["bits"]["w"] = 8
    return "bits.w"


def _e_reproducible(m):
    m["reproducible"] = not m["reproducible"]
    return "reproducible"


def _e_true_for_one(m):
    _op(m, "blocks.0.attn.softmax")["attrs"]["shift"] = bool(_op(m, "blocks.0.attn.softmax")["attrs"]["shift"])
    return "attrs.shift"


EDITS = [_e_op_zp, _e_gemm_a_zp, _e_softmax_shift, _e_tensor_zp, _e_tensor_scale, _e_width, _e_signed, _e_shape,
         _e_derived, _e_inline_values, _e_lanes, _e_consumer, _e_constant_role, _e_bits_label, _e_reproducible,
         _e_true_for_one]


@pytest.mark.parametrize("edit", EDITS, ids=[e.__name__[3:] for e in EDITS])
def test_an_edited_inline_manifest_value_fails_verify_naming_the_field(w4, edit):
    m = _load(w4)
    field = edit(m)
    _save(w4, m)
    rep = verify_golden_set(w4, execute=False)  # every file still matches its sha256
    assert not rep.ok, f"verify accepted an edit of {field}"
    assert field in rep.problems[0], rep.text()
    assert "internal error" not in rep.text()


def test_full_verify_names_the_field_too(w4):
    m = _load(w4)
    field = _e_op_zp(m)
    _save(w4, m)
    rep = verify_golden_set(w4)
    assert not rep.ok and any(field in p for p in rep.problems), rep.text()


def test_renamed_file_with_a_consistent_manifest_is_caught(w4):
    """Rename a tensor file and every manifest reference to it: hashes all match, the name does not."""
    m = _load(w4)
    old, new = "tensors/blocks.0.attn.qk.out.hex", "tensors/blocks.0.attn.qk.out2.hex"
    (w4 / old).rename(w4 / new)
    for fe in m["files"] + [_tensor(m, "blocks.0.attn.qk.out")["files"]["hex"]]:
        if fe["path"] == old:
            fe["path"] = new
    m["files"].sort(key=lambda f: f["path"])
    _save(w4, m)
    rep = verify_golden_set(w4, execute=False)
    assert not rep.ok and "(blocks.0.attn.qk.out).files.hex.path" in rep.text(), rep.text()


def test_edited_ir_hash_and_ir_copy(w4):
    m = _load(w4)
    m["ir"]["hash"] = "0" * 64
    _save(w4, m)
    rep = verify_golden_set(w4, execute=False)
    assert not rep.ok and "manifest field ir.hash" in rep.text()
    shutil.copy(W4 / "manifest.json", w4 / "manifest.json")
    g = w4 / "ir" / "graph.json"
    raw = g.read_bytes()
    hit = re.search(rb'"eps_q": ?(\d+)', raw)
    assert hit, "the IR copy has a layernorm eps_q attribute"
    g.write_bytes(raw[:hit.start(1)] + str(int(hit.group(1)) + 1).encode() + raw[hit.end(1):])
    rep = verify_golden_set(w4, execute=False)
    assert not rep.ok and "sha256 mismatch: ir/graph.json" in rep.text(), rep.text()


def test_free_fields_are_free_and_an_untouched_copy_verifies(w4):
    m = _load(w4)
    m["model"], m["seed"], m["inputs"]["ids"] = "renamed", 7, ["a", "b"]
    _save(w4, m)
    rep = verify_golden_set(w4, execute=False)
    assert rep.ok, rep.text()


# ---------------------------------------------------------------------------------------------------
# 1b. replay verifies first


def _no_simulation(monkeypatch):
    import subprocess

    from repq_hw.golden import rtl

    def boom(*a, **k):
        raise AssertionError("a simulation was started on a corrupt set")

    monkeypatch.setattr(rtl, "compile_tb", boom)
    monkeypatch.setattr(subprocess, "run", boom)


def test_replay_refuses_a_corrupted_hex_before_any_simulation(w4, monkeypatch):
    from repq_hw.golden.rtl import CorruptSetError, replay

    f = w4 / "tensors/blocks.0.attn.softmax.out.hex"
    data = bytearray(f.read_bytes())
    data[10] = ord("f") if data[10] != ord("f") else ord("e")
    f.write_bytes(bytes(data))
    _no_simulation(monkeypatch)
    with pytest.raises(CorruptSetError, match="corrupt") as e:
        replay(w4, "blocks.0.attn.softmax")
    assert "tensors/blocks.0.attn.softmax.out.hex" in str(e.value)
    assert isinstance(e.value, InputError)


def test_replay_refuses_an_edited_field_and_the_cli_says_corrupt(w4, monkeypatch, capsys):
    m = _load(w4)
    field = _e_op_zp(m)
    _save(w4, m)
    _no_simulation(monkeypatch)
    assert main(["golden", "replay", str(w4), "--op", "blocks.0.attn.proj_requant"]) == 2
    err = capsys.readouterr().err
    assert "corrupt" in err and field in err


def test_replay_of_an_unknown_op_is_an_input_error(w4):
    from repq_hw.golden.rtl import replay

    with pytest.raises(InputError, match="not in this set"):
        replay(w4, "no.such.op", check=False)


# ---------------------------------------------------------------------------------------------------
# 2. paths


@pytest.mark.parametrize("model", ["../../evil", "/tmp/evil_abs", "..", "a/b/c", ".hidden", "-rf"])
def test_set_name_is_one_safe_segment(model):
    name = set_name(model, None, 0, 4, 4)
    assert "/" not in name and not name.startswith((".", "-")) and name not in ("", ".", "..")
    assert Path(name).name == name


def test_meta_model_cannot_choose_a_path_outside_the_working_directory(tmp_path, monkeypatch):
    from repq_hw.ir.graph import load_graph, save_graph

    g = load_graph(W4 / "ir")
    g.meta["model"] = "../../evil"
    g.meta["w_bits"] = "/../../evil2"
    ir = tmp_path / "ir"
    save_graph(g, ir)
    np.save(tmp_path / "codes.npy", GoldenSet(W4).input_codes())
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    assert main(["golden", "--ir", str(ir), "--inputs", str(tmp_path / "codes.npy"), "--ops", "head*",
                 "--formats", "hex", "--const-formats", "hex", "--no-progress"]) == 0
    written = [p for p in work.iterdir()]
    assert len(written) == 1 and (written[0] / "manifest.json").is_file()
    outside = [p for p in _files_outside(tmp_path, work) if not p.startswith((str(ir), str(tmp_path / "codes.npy")))]
    assert outside == []
    assert not (tmp_path / "evil").exists() and not Path("/evil2").exists()


def _renamed_ir(tmp_path: Path, old: str, new: str) -> Path:
    """A copy of the committed IR with one name replaced everywhere (graph.json edited by hand)."""
    d = tmp_path / "ir_bad"
    shutil.copytree(W4 / "ir", d)
    doc = json.loads((d / "graph.json").read_text())
    doc.pop("ir_hash", None)
    text = json.dumps(doc).replace(json.dumps(old), json.dumps(new))
    (d / "graph.json").write_text(text)
    return d


@pytest.mark.parametrize("old,new", [("head.logits.out", "../../x"), ("head.logits", "../../y"),
                                     ("head.logits.out", "/abs/z")])
def test_a_hand_edited_ir_name_cannot_write_outside_the_set(tmp_path, old, new):
    from repq_hw.ir.graph import load_graph

    try:
        g = load_graph(_renamed_ir(tmp_path, old, new))
    except InputError:
        pytest.skip("the IR validator already refuses this name")
    out_root = tmp_path / "out" / "deep"
    before = set(_files_outside(tmp_path, tmp_path / "ir_bad"))
    with pytest.raises(GoldenError, match="cannot be used as a file name"):
        write_golden_set(g, GoldenSet(W4).input_codes(), out_root / "set", formats=HEX_ONLY, progress=False)
    assert set(_files_outside(tmp_path, tmp_path / "ir_bad")) == before  # nothing written anywhere
    assert not (tmp_path / "x").exists() and not Path("/abs/z").exists()


@pytest.mark.parametrize("bad", ["../../etc/passwd", "/etc/passwd", "tensors/../../../etc/passwd", "tensors/..",
                                 "tensors//input.hex", "./tensors/input.hex", "tensors\\input.hex"])
def test_manifest_paths_outside_the_set_are_refused(w4, bad):
    m = _load(w4)
    m["tensors"][0]["files"]["hex"]["path"] = bad
    m["files"][[f["path"] for f in m["files"]].index("tensors/input.hex")]["path"] = bad
    _save(w4, m)
    rep = verify_golden_set(w4)
    assert not rep.ok and "path" in rep.problems[0] and "manifest" in rep.problems[0], rep.text()
    gs = GoldenSet(w4, validate=False)
    with pytest.raises(GoldenError, match="inside the set|outside"):
        gs.tensor("input")
    from repq_hw.golden.rtl import CorruptSetError, replay

    with pytest.raises(CorruptSetError, match="corrupt"):
        replay(w4, "blocks.0.norm1")


def test_a_symlink_out_of_the_set_is_refused_even_with_identical_bytes(w4, tmp_path):
    f = w4 / "tensors/input.hex"
    outside = tmp_path / "outside.hex"
    outside.write_bytes(f.read_bytes())
    f.unlink()
    f.symlink_to(outside)
    rep = verify_golden_set(w4)
    assert not rep.ok and "symbolic link" in rep.text(), rep.text()
    with pytest.raises(GoldenError, match="symbolic link"):
        GoldenSet(w4).tensor("input")
    with pytest.raises(GoldenError, match="symbolic link"):
        member(w4, "tensors/input.hex")


def test_check_relpath_unit():
    assert check_relpath("tensors/blocks.0.attn.qk.out.hex")
    for bad in ("", "/x", "..", "a/../b", "a/", "a\\b", "a\nb", "tensors/x.hex\n", ".x"):
        with pytest.raises(GoldenError):
            check_relpath(bad)


# ---------------------------------------------------------------------------------------------------
# 3. CLI numbers and --out


@pytest.mark.parametrize("args,opt", [
    (["--images", "0"], "--images"), (["--images", "-3"], "--images"), (["--images", "two"], "--images"),
    (["--lanes", "0"], "--lanes"), (["--lanes", "-1"], "--lanes"), (["--rom-max-words", "-1"], "--rom-max-words"),
    (["--seed", "-1"], "--seed"), (["--calib-size", "0"], "--calib-size"), (["--image-ids", "0,-2"], "--image-ids"),
    (["--image-ids", ","], "--image-ids"), (["--formats", "hex,foo"], "--formats"), (["--formats", ""], "--formats"),
    (["--const-formats", "hex,txt"], "--const-formats"), (["--bits", "1"], "--bits"), (["--w-bits", "99"], "--w-bits"),
])
def test_bad_golden_numbers_are_argparse_errors(args, opt, capsys):
    with pytest.raises(SystemExit) as e:
        main(["golden", "--model", "vit_digits", "--bits", "4", *args, "--out", "x"] if opt != "--bits"
             else ["golden", "--model", "vit_digits", *args, "--out", "x"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {opt}" in err and "Traceback" not in err


def _no_lowering(monkeypatch):
    from repq_hw.golden import model as gm

    def boom(*a, **k):
        raise AssertionError("calibration started before --out was checked")

    monkeypatch.setattr(gm, "lower_model", boom)
    monkeypatch.setattr(gm, "digits_inputs", boom)


def test_unusable_out_is_found_before_any_work(tmp_path, monkeypatch, capsys):
    _no_lowering(monkeypatch)
    f = tmp_path / "a_file"
    f.write_text("x")
    assert main(["golden", "--model", "vit_digits", "--bits", "4", "--out", str(f / "set")]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["golden", "--model", "vit_digits", "--bits", "4", "--out", str(f)]) == 2
    assert "--out" in capsys.readouterr().err


def test_existing_out_is_never_silently_overwritten(tmp_path, monkeypatch, capsys):
    _no_lowering(monkeypatch)
    d = tmp_path / "mine"
    d.mkdir()
    (d / "notes.txt").write_text("keep me")
    assert main(["golden", "--model", "vit_digits", "--bits", "4", "--out", str(d)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["golden", "--model", "vit_digits", "--bits", "4", "--out", str(d), "--force"]) == 2
    assert "not a golden set" in capsys.readouterr().err
    assert (d / "notes.txt").read_text() == "keep me" and sorted(p.name for p in d.iterdir()) == ["notes.txt"]


def test_bits_with_ir_is_refused(tmp_path, capsys):
    assert main(["golden", "--ir", str(W4 / "ir"), "--bits", "4", "--out", str(tmp_path / "s")]) == 2
    assert "--model" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------
# 4. malformed manifest, missing and wrong-length files


@pytest.mark.parametrize("damage", ["truncate", "empty", "list", "nan", "binary"])
def test_malformed_manifest_is_an_input_error_naming_the_file(w4, damage):
    p = w4 / "manifest.json"
    data = p.read_bytes()
    p.write_bytes({"truncate": data[: len(data) // 2], "empty": b"", "list": b"[1, 2]\n",
                   "nan": data.replace(b'"seed": 0', b'"seed": NaN', 1), "binary": b"\xff\xfe" + data}[damage])
    with pytest.raises(InputError, match="manifest.json"):
        GoldenSet(w4)
    rep = verify_golden_set(w4)
    assert not rep.ok and "manifest.json" in rep.problems[0] and "internal error" not in rep.text()


def test_missing_and_wrong_length_files_name_the_file(w4):
    (w4 / "tensors/blocks.0.attn.qk.out.hex").unlink()
    f = w4 / "tensors/blocks.0.norm1.out.hex"
    f.write_bytes(f.read_bytes()[:-2])
    gs = GoldenSet(w4)
    with pytest.raises(GoldenError, match="tensors/blocks.0.attn.qk.out.hex"):
        gs.tensor("blocks.0.attn.qk.out")
    with pytest.raises(GoldenError, match="tensors/blocks.0.norm1.out.hex"):
        gs.tensor("blocks.0.norm1.out")
    rep = verify_golden_set(w4)
    text = rep.text()
    assert "missing file tensors/blocks.0.attn.qk.out.hex" in text
    assert "tensors/blocks.0.norm1.out.hex" in text and "internal error" not in text


def test_format_errors_are_input_errors():
    from repq_hw.golden import formats as fmt

    with pytest.raises(FormatError, match="x.hex"):
        fmt.decode("hex", b"0\n1\n", bits=4, signed=False, dtype="uint8", shape=(3,), what="x.hex")
    with pytest.raises(InputError, match="not ASCII"):
        fmt.decode("coe", b"\xff", bits=4, signed=False, dtype="uint8", shape=(1,), what="x.coe")
    assert issubclass(FormatError, ValueError)


# ---------------------------------------------------------------------------------------------------
# issue 11: reproducible flag, float_env in provenance, compare_sets


def _head_set(g, out: Path, **kw) -> Path:
    return write_golden_set(g, GoldenSet(W4).input_codes(), out, selection=Selection(ops=("head*",)),
                            formats=HEX_ONLY, progress=False, **kw)


def test_reproducible_flag_comes_from_the_ir_record(tmp_path):
    from repq_hw.ir.graph import load_graph

    g = load_graph(W4 / "ir")
    g.meta.pop("float_env", None)  # an IR without the record (made before it existed, or by hand)
    a = _head_set(g, tmp_path / "a")
    assert GoldenSet(a).manifest["reproducible"] is False  # no record: not reproducible
    g.meta["float_env"] = {"reproducible": True, "mode": "reproducible"}
    b = _head_set(g, tmp_path / "b")
    assert GoldenSet(b).manifest["reproducible"] is True and GoldenSet(b).reproducible
    g.meta["float_env"] = {"reproducible": "yes", "mode": "odd"}  # only a real True counts
    c = _head_set(g, tmp_path / "c")
    assert GoldenSet(c).manifest["reproducible"] is False
    assert verify_golden_set(b).ok and verify_golden_set(c).ok


def test_float_env_goes_to_provenance_only(tmp_path):
    from repq_hw.golden import validate_manifest
    from repq_hw.golden.reader import validate_provenance
    from repq_hw.ir.graph import load_graph

    g = load_graph(W4 / "ir")
    rec = {"reproducible": False, "mode": "fast-float", "reason": "REPQ_HW_FAST_FLOAT=1", "settings": {},
           "cpu_capability": "AVX512", "torch": "2.9.9", "cpu": "Some CPU"}
    a = _head_set(g, tmp_path / "a", float_env=rec)
    b = _head_set(g, tmp_path / "b")
    prov = json.loads((a / "provenance.json").read_text())
    assert prov["float_env"] == rec
    validate_provenance(prov)
    assert "float_env" not in json.loads((b / "provenance.json").read_text())
    validate_manifest(GoldenSet(a).manifest)
    assert (a / "manifest.json").read_bytes() == (b / "manifest.json").read_bytes()  # CPU never in the manifest
    assert compare_sets(a, b).identical
    with pytest.raises(GoldenError, match="float_env"):
        _head_set(g, tmp_path / "c", float_env="AVX2")


def test_compare_sets_says_why_sets_may_differ(tmp_path):
    from repq_hw.ir.graph import load_graph

    g = load_graph(W4 / "ir")
    g.meta["float_env"] = {"reproducible": True, "mode": "reproducible"}
    a = _head_set(g, tmp_path / "a", float_env={"reproducible": True, "mode": "reproducible", "torch": "2.5.1"})
    g.meta["float_env"] = {"reproducible": False, "mode": "fast-float"}
    b = _head_set(g, tmp_path / "b", float_env={"reproducible": False, "mode": "fast-float", "torch": "2.6.0"})
    c = compare_sets(a, b)
    assert not c.identical and any("manifest.json" in d for d in c.differences)
    text = c.text()
    assert "set B was made in fast-float mode (reproducible: false)" in text
    assert "set A" not in " ".join(r for r in c.reasons if "reproducible: false" in r)
    assert "torch versions differ" in text and "2.5.1" in text and "2.6.0" in text
    assert "IR hashes differ" in text


def test_compare_sets_same_ir_points_at_the_integer_code(w4):
    f = w4 / "tensors/head.out.hex"
    f.write_bytes(f.read_bytes().replace(b"0", b"1", 1))
    c = compare_sets(W4, w4, labels=("committed", "copy"))
    assert c.differences == ["tensors/head.out.hex: bytes differ"]
    assert any("same IR" in r for r in c.reasons) and not any("fast-float" in r for r in c.reasons)


def test_committed_check_cli_prints_the_reasons(tmp_path, capsys):
    root = tmp_path / "gv"
    shutil.copytree(GOLDEN_ROOT, root)
    f = root / "vit_digits.w4a4.seed0" / "tensors/head.out.hex"
    f.write_bytes(f.read_bytes().replace(b"0", b"1", 1))
    assert main(["golden", "committed", "--check", "--root", str(root), "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "why: both sets hold the same IR" in out and "tensors/head.out.hex: bytes differ" in out


def test_the_committed_manifests_carry_reproducible():
    m = _load(W4)
    assert m["reproducible"] is (json.loads((W4 / "ir" / "graph.json").read_text())["meta"]
                                 .get("float_env", {}).get("reproducible", False) is True)
    digest = hashlib.sha256((W4 / "manifest.json").read_bytes()).hexdigest()
    assert f"{digest}  vit_digits.w4a4.seed0/manifest.json" in (GOLDEN_ROOT / "SHA256SUMS").read_text()
