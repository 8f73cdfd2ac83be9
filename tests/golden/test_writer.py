"""Golden-set writer: manifest schema, determinism, atomicity, overwrite rules, layer selection, reader."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from repq_hw.golden import Formats, GoldenError, GoldenSet, Selection, validate_manifest, write_golden_set
from repq_hw.golden import writer as gw
from repq_hw.golden.reader import validate_provenance
from tests.golden.helpers import tiny_graph, tiny_set


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_manifest_and_provenance_follow_the_schema():
    p = tiny_set()
    m = json.loads((p / "manifest.json").read_text())
    validate_manifest(m)
    validate_provenance(json.loads((p / "provenance.json").read_text()))
    assert m["model"] == "test_deit" and m["bits"] == {"w": 4, "a": 4, "label": "w4a4"} and m["seed"] == 0
    assert m["inputs"]["count"] == 2 and m["inputs"]["ids"] == ["input:0", "input:1"]
    g, _ = tiny_graph()
    assert m["ir"]["hash"] == g.hash()


def test_schema_rejects_a_broken_manifest():
    import jsonschema

    m = json.loads((tiny_set() / "manifest.json").read_text())
    for mutate in (lambda d: d.pop("ir"), lambda d: d["tensors"][0].update(bits=0),
                   lambda d: d["tensors"][0]["files"]["hex"].update(lane_order="msb"),
                   lambda d: d["files"][0].update(path="/abs/path"), lambda d: d.update(extra=1)):
        bad = json.loads(json.dumps(m))
        mutate(bad)
        with pytest.raises(jsonschema.ValidationError):
            validate_manifest(bad)


def test_every_file_is_listed_with_its_sha256_and_no_absolute_paths():
    p = tiny_set()
    m = json.loads((p / "manifest.json").read_text())
    listed = {f["path"]: f for f in m["files"]}
    on_disk = _files(p)
    assert set(on_disk) - set(listed) == {"manifest.json", "provenance.json"}
    for path, f in listed.items():
        assert hashlib.sha256(on_disk[path]).hexdigest() == f["sha256"] and len(on_disk[path]) == f["bytes"]
    assert str(p) not in (p / "manifest.json").read_text()
    assert str(Path.home()) not in (p / "manifest.json").read_text()


def test_ops_in_execution_order_with_inputs_outputs_constants():
    g, _ = tiny_graph()
    m = GoldenSet(tiny_set()).manifest
    assert [o["name"] for o in m["ops"]] == [n.name for n in g.nodes]
    assert [o["index"] for o in m["ops"]] == list(range(len(g.nodes)))
    names = {t["name"] for t in m["tensors"]}
    consts = {c["name"] for c in m["constants"]}
    for o, n in zip(m["ops"], g.nodes):
        assert [i["tensor"] for i in o["inputs"]] == n.inputs and [x["tensor"] for x in o["outputs"]] == n.outputs
        assert set(n.inputs + n.outputs) <= names and set(n.consts.values()) <= consts
        assert o["attrs"] == n.attrs and o["spec"]
    sm = next(o for o in m["ops"] if o["name"] == "blocks.0.attn.softmax")
    assert sm["attrs"]["rounding"] == "half_even" and sm["derived"]["rounding_id"] == 1
    assert sm["constants"] == {"lut": "blocks.0.attn.softmax.lut"} and sm["spec"] == ["docs/ops/softmax.md"]
    rq = next(o for o in m["ops"] if o["name"] == "blocks.0.attn.q")
    assert set(rq["constants"]) == {"multiplier", "shift"} and rq["derived"]["out_max"] == 15
    assert isinstance(rq["scale"]["output"], float)


def test_tap_names_follow_the_ir():
    p = tiny_set()
    gs = GoldenSet(p)
    e = gs.tensor_entry("blocks.0.attn.softmax.out")
    assert e["files"]["hex"]["path"] == "tensors/blocks.0.attn.softmax.out.hex"
    assert e["producer"] == "blocks.0.attn.softmax" and e["op"] == "softmax" and e["role"] == "output"
    assert e["ir_type"] == "uint17" and e["dtype"] == "uint32" and e["bits"] == 17 and not e["signed"]
    assert e["files"]["hex"]["digits_per_lane"] == 5 and e["files"]["hex"]["word_width"] == 17
    assert e["files"]["hex"]["lane_order"] == "lane0_lsb" and e["layout"] == "HNN"
    assert (p / "constants/blocks.0.attn.qkv.weight.coe").is_file()
    assert gs.tensor_entry("input")["role"] == "graph_input"


def test_every_format_holds_the_emulator_values():
    from repq_hw.emu.execute import run_graph

    g, codes = tiny_graph()
    env = run_graph(g, codes, backend="ref", keep_all=True)
    gs = GoldenSet(tiny_set())
    for name in ("input", "blocks.0.norm1.out", "blocks.0.attn.qk.out", "blocks.1.mlp.gelu_in.out", "head.logits.out"):
        for f in ("npy", "hex", "bin"):
            np.testing.assert_array_equal(gs.tensor(name, f), env[name])
    for f in ("npy", "hex", "bin", "coe", "mif"):
        np.testing.assert_array_equal(gs.constant("blocks.0.norm1.multiplier", f), g.constants["blocks.0.norm1.multiplier"])
    e = gs.tensor_entry("blocks.0.attn.qkv.out")
    deq = gs.dequantize("blocks.0.attn.qkv.out")
    np.testing.assert_allclose(deq, (env["blocks.0.attn.qkv.out"] - e["zero_point"]) * np.asarray(e["scale"]))
    assert gs.graph().hash() == g.hash()


def test_two_runs_are_byte_identical(tmp_path):
    g, codes = tiny_graph()
    sel = Selection(ops=("blocks.1.*",))
    a = write_golden_set(g, codes, tmp_path / "a", selection=sel, progress=False)
    b = write_golden_set(g, codes, tmp_path / "b", selection=sel, progress=False, backend="ref")
    fa, fb = _files(a), _files(b)
    fa.pop("provenance.json"), fb.pop("provenance.json")
    assert fa == fb
    # the IR copy is canonical: rewriting from the loaded copy gives the same bytes
    c = write_golden_set(GoldenSet(a).graph(), GoldenSet(a).input_codes(), tmp_path / "c", selection=sel,
                         progress=False)
    fc = _files(c)
    fc.pop("provenance.json")
    assert fc == fa


def test_refuses_to_overwrite_without_force(tmp_path):
    g, codes = tiny_graph()
    sel = Selection(ops=("head*",))
    out = write_golden_set(g, codes, tmp_path / "s", selection=sel, progress=False)
    before = _files(out)
    with pytest.raises(GoldenError, match="exists"):
        write_golden_set(g, codes, out, selection=sel, progress=False)
    assert _files(out) == before
    write_golden_set(g, codes, out, selection=Selection(ops=("norm",)), progress=False, force=True)
    assert [o["name"] for o in GoldenSet(out).ops] == ["norm"]
    other = tmp_path / "not_a_set"
    other.mkdir()
    (other / "keep.txt").write_text("precious")
    with pytest.raises(GoldenError, match="not a golden set"):
        write_golden_set(g, codes, other, selection=sel, progress=False, force=True)
    assert (other / "keep.txt").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not_a_set", "s"]  # no temporary leftovers


def test_interrupted_write_leaves_no_complete_looking_set(tmp_path, monkeypatch):
    g, codes = tiny_graph()
    real = gw._write_one
    calls = {"n": 0}

    def flaky(path, data):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt("simulated interruption")
        real(path, data)

    monkeypatch.setattr(gw, "_write_one", flaky)
    sel = Selection(ops=("blocks.0.attn.*",))
    with pytest.raises(KeyboardInterrupt):
        write_golden_set(g, codes, tmp_path / "s", selection=sel, progress=False)
    assert list(tmp_path.iterdir()) == []  # neither the set nor its temporary directory

    # a hard kill (no cleanup runs): the partial directory never carries the final name nor a manifest
    calls["n"] = 0
    monkeypatch.setattr(gw.shutil, "rmtree", lambda *a, **k: None)
    with pytest.raises(KeyboardInterrupt):
        write_golden_set(g, codes, tmp_path / "s", selection=sel, progress=False)
    left = list(tmp_path.iterdir())
    assert not (tmp_path / "s").exists()
    assert len(left) == 1 and left[0].name.startswith(".s.tmp-") and not (left[0] / "manifest.json").exists()
    assert not gw.is_golden_set(left[0])
    with pytest.raises(GoldenError, match="incomplete"):
        GoldenSet(left[0])


def test_interrupted_replacement_keeps_the_old_set(tmp_path, monkeypatch):
    g, codes = tiny_graph()
    out = write_golden_set(g, codes, tmp_path / "s", selection=Selection(ops=("norm",)), progress=False)
    before = _files(out)

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(gw, "_write_one", boom)
    with pytest.raises(KeyboardInterrupt):
        write_golden_set(g, codes, out, selection=Selection(ops=("head",)), progress=False, force=True)
    assert _files(out) == before


def test_layer_selection():
    g, codes = tiny_graph()
    m, _ = gw.build_set(g, __import__("repq_hw.emu.execute", fromlist=["run_graph"]).run_graph(
        g, codes, keep_all=True), input_ids=["a", "b"], model=None, seed=None,
        selection=Selection(ops=("blocks.1.attn.*",), op_types=("softmax", "gemm")), formats=Formats(tensors=("hex",)))
    assert [o["name"] for o in m["ops"]] == ["blocks.1.attn.qkv", "blocks.1.attn.softmax", "blocks.1.attn.proj"]
    assert [t["name"] for t in m["tensors"]] == [
        "input", "blocks.1.norm1.out", "blocks.1.attn.qkv.out", "blocks.1.attn.qk.out", "blocks.1.attn.softmax.out",
        "blocks.1.attn.proj_in.out", "blocks.1.attn.proj.out"]
    assert {c["op"] for c in m["constants"]} == {"blocks.1.attn.qkv", "blocks.1.attn.softmax", "blocks.1.attn.proj"}
    assert all(set(t["files"]) == {"hex"} for t in m["tensors"])
    assert not any(t["selected_producer"] for t in m["tensors"] if t["name"] in ("input", "blocks.1.norm1.out"))
    m2, _ = gw.build_set(g, __import__("repq_hw.emu.execute", fromlist=["run_graph"]).run_graph(
        g, codes, keep_all=True), input_ids=["a", "b"], model=None, seed=None,
        selection=Selection(op_types=("layernorm",), exclude=("norm", "blocks.2.*")), formats=Formats())
    assert [o["name"] for o in m2["ops"]] == ["blocks.0.norm1", "blocks.0.norm2", "blocks.1.norm1", "blocks.1.norm2"]
    with pytest.raises(GoldenError, match="matches no op"):
        gw.build_set(g, {"input": codes}, input_ids=["a", "b"], model=None, seed=None,
                     selection=Selection(ops=("nothing*",)), formats=Formats())
    with pytest.raises(GoldenError, match="unknown op type"):
        Selection(op_types=("conv",))


def test_lanes_and_rom_limit(tmp_path):
    g, codes = tiny_graph()
    p = write_golden_set(g, codes, tmp_path / "s", selection=Selection(ops=("blocks.0.attn.softmax",)),
                         formats=Formats(tensors=("hex",), constants=("hex", "coe", "mif"), lanes=4,
                                         rom_max_words=100), progress=False)
    gs = GoldenSet(p)
    e = gs.tensor_entry("blocks.0.attn.softmax.out")["files"]["hex"]
    assert e["lanes_per_word"] == 4 and e["word_width"] == 4 * 4 * 5 and e["words"] == -(-2 * 3 * 17 * 17 // 4)
    line = (p / e["path"]).read_text().split("\n")[0]
    vals = gs.tensor("blocks.0.attn.softmax.out").reshape(-1)
    assert line == "".join(f"{int(v):05x}" for v in vals[:4][::-1])
    assert set(gs.constant_entry("blocks.0.attn.softmax.lut")["files"]) == {"hex"}  # 1024 words > 100


def test_graph_with_two_inputs_or_float_codes_is_refused(tmp_path):
    g, codes = tiny_graph()
    with pytest.raises(GoldenError, match="integers"):
        write_golden_set(g, codes.astype(np.float32), tmp_path / "s", progress=False)
