"""Fuzz tier: mutate the bytes and the JSON fields of a real IR (the committed vit_digits W4A4 copy) and
require that every mutation is either refused with an InputError naming the file, or loads and runs with
the ref and fast backends giving identical outputs (identical to the unmutated graph's where the mutation
changes nothing the executors read).  Never another exception type, never ref != fast."""

from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from repq_hw.emu import fast
from repq_hw.emu.execute import run_graph
from repq_hw.errors import InputError
from repq_hw.ir.graph import load_graph
from repq_hw.ir.ops import Op

pytestmark = pytest.mark.fuzz

GOLDEN_IR = Path(__file__).resolve().parents[2] / "golden_vectors" / "vit_digits.w4a4.seed0" / "ir"
FUZZ = settings(max_examples=50, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@functools.cache
def original():
    g = load_graph(GOLDEN_IR)
    t = g.tensors[g.inputs[0]].type
    x = np.random.default_rng(0).integers(t.min, t.max + 1, (1, *t.shape)).astype(t.storage)
    return g, x, run_graph(g, x, "ref"), _semantic_key(g)


def _semantic_key(g):
    return fast._key(g)[1:]  # structure digest + constants content: what the executors read


@functools.cache
def original_files():
    doc = json.loads((GOLDEN_IR / "graph.json").read_bytes())
    return (GOLDEN_IR / "graph.json").read_bytes(), (GOLDEN_IR / "constants.npz").read_bytes(), doc


def check(d: Path) -> str:
    """The property: refused with an InputError naming a file of d, or ref == fast (== original if no-op)."""
    try:
        g = load_graph(d)
    except InputError as e:
        msg = str(e)
        assert str(d / "graph.json") in msg or str(d / "constants.npz") in msg or str(d) in msg, msg
        event(f"rejected: {type(e).__name__}")
        return "rejected"
    g0, x0, ref0, key0 = original()
    t = g.tensors[g.inputs[0]].type
    if t == g0.tensors[g0.inputs[0]].type:
        x = x0
    else:
        x = np.random.default_rng(1).integers(t.min, t.max + 1, (1, *t.shape)).astype(t.storage)
    ref = run_graph(g, x, "ref")
    out = run_graph(g, x, "fast")
    assert ref.keys() == out.keys()
    for k in ref:
        assert np.array_equal(ref[k], out[k]), f"ref != fast on {k}"
    if _semantic_key(g) == key0 and x is x0:
        for k in ref0:
            assert np.array_equal(ref[k], ref0[k]), f"no-op mutation changed {k}"
        event("ran: no-op, equal to the original")
        return "no-op"
    event("ran: ref == fast")
    return "ran"


def write_ir(d: Path, graph_json: bytes, constants: bytes) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "graph.json").write_bytes(graph_json)
    (d / "constants.npz").write_bytes(constants)
    return d


# ---------------------------------------------------------------------------------------------
# byte mutations


@st.composite
def byte_edits(draw, size: int):
    edits = []
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, size - 1))
        kind = draw(st.sampled_from(["set", "delete", "insert", "digit"]))
        edits.append((kind, pos, draw(st.integers(0, 255))))
    return edits


def apply_bytes(raw: bytes, edits) -> bytes:
    b = bytearray(raw)
    for kind, pos, val in edits:
        pos = min(pos, len(b) - 1) if b else 0
        if kind == "set" and b:
            b[pos] = val
        elif kind == "delete" and b:
            del b[pos]
        elif kind == "insert":
            b.insert(pos, val)
        elif kind == "digit" and b:  # nudge the nearest digit: mostly a different number, still JSON
            for i in range(pos, min(pos + 64, len(b))):
                if 48 <= b[i] <= 57:
                    b[i] = 48 + (b[i] - 48 + 1 + val % 9) % 10
                    break
    return bytes(b)


@FUZZ
@given(data=st.data(), keep_hash=st.booleans())
def test_fuzz_graph_json_bytes(data, keep_hash):
    raw, npz, doc = original_files()
    if not keep_hash:  # without the hash the mutated structure reaches the parser and the validator
        doc = dict(doc)
        doc.pop("ir_hash")
        raw = json.dumps(doc).encode()
    edits = data.draw(byte_edits(len(raw)))
    with tempfile.TemporaryDirectory() as tmp:
        check(write_ir(Path(tmp) / "ir", apply_bytes(raw, edits), npz))


@FUZZ
@given(data=st.data(), keep_hash=st.booleans())
def test_fuzz_constants_npz_bytes(data, keep_hash):
    raw, npz, doc = original_files()
    if not keep_hash:
        doc = dict(doc)
        doc.pop("ir_hash")
        raw = json.dumps(doc).encode()
    edits = data.draw(byte_edits(len(npz)))
    with tempfile.TemporaryDirectory() as tmp:
        check(write_ir(Path(tmp) / "ir", raw, apply_bytes(npz, edits)))


# ---------------------------------------------------------------------------------------------
# structured mutations (hash dropped): JSON fields and constant values

ODD_VALUES = st.one_of(
    st.integers(-3, 3), st.integers(-(1 << 70), 1 << 70), st.booleans(), st.floats(allow_nan=False,
                                                                                   allow_infinity=False),
    st.text(max_size=4), st.none(), st.lists(st.integers(0, 4), max_size=3), st.just({}))
TYPE_NAMES = st.sampled_from(["uint1", "uint4", "uint8", "uint9", "uint16", "uint31", "uint32", "uint63",
                              "uint64", "int2", "int8", "int16", "int17", "int32", "int33", "int64", "int",
                              "float32", "int0", "int65"])


@st.composite
def field_mutation(draw, doc):
    nodes, tensors = doc["nodes"], doc["tensors"]
    kind = draw(st.sampled_from(["attr_nudge", "attr_odd", "attr_delete", "tensor_dtype", "tensor_shape",
                                 "tensor_meta", "swap_nodes", "rewire", "const_dtype", "const_shape", "op",
                                 "top_level", "consts_role"]))
    i = draw(st.integers(0, len(nodes) - 1))
    j = draw(st.integers(0, len(tensors) - 1))
    node = nodes[i]
    keys = sorted(node["attrs"])
    if kind == "attr_nudge" and keys:
        key = draw(st.sampled_from(keys))
        if isinstance(node["attrs"][key], int):
            node["attrs"][key] += draw(st.integers(-3, 3))
    elif kind == "attr_odd" and keys:
        node["attrs"][draw(st.sampled_from(keys))] = draw(ODD_VALUES)
    elif kind == "attr_delete" and keys:
        del node["attrs"][draw(st.sampled_from(keys))]
    elif kind == "tensor_dtype":
        tensors[j]["dtype"] = draw(TYPE_NAMES)
    elif kind == "tensor_shape" and tensors[j]["shape"]:
        a = draw(st.integers(0, len(tensors[j]["shape"]) - 1))
        tensors[j]["shape"][a] = draw(st.one_of(st.integers(-1, 3), st.just(tensors[j]["shape"][a] + 1),
                                                ODD_VALUES))
    elif kind == "tensor_meta":  # metadata only: must be a no-op or refused
        field = draw(st.sampled_from(["scale", "zero_point", "layout"]))
        tensors[j][field] = draw(ODD_VALUES)
    elif kind == "swap_nodes":
        k = draw(st.integers(0, len(nodes) - 1))
        nodes[i], nodes[k] = nodes[k], nodes[i]
    elif kind == "rewire" and node["inputs"]:
        node["inputs"][draw(st.integers(0, len(node["inputs"]) - 1))] = tensors[j]["name"]
    elif kind in ("const_dtype", "const_shape"):
        name = draw(st.sampled_from(sorted(doc["constants"])))
        if kind == "const_dtype":
            doc["constants"][name]["dtype"] = draw(TYPE_NAMES)
        else:
            doc["constants"][name]["shape"] = draw(st.lists(st.integers(0, 200), max_size=3))
    elif kind == "op":
        node["op"] = draw(st.sampled_from([o.value for o in Op] + ["conv", ""]))
    elif kind == "top_level":
        key = draw(st.sampled_from(["inputs", "outputs", "tensors", "constants", "nodes", "meta", "ir_version"]))
        if draw(st.booleans()):
            doc.pop(key)
        else:
            doc[key] = draw(ODD_VALUES)
    elif kind == "consts_role" and node["consts"]:
        role = draw(st.sampled_from(sorted(node["consts"])))
        node["consts"][role] = draw(st.sampled_from(sorted(doc["constants"]) + ["missing.const"]))
    return kind


@FUZZ
@given(data=st.data())
def test_fuzz_graph_json_fields(data):
    _, npz, doc = original_files()
    doc = json.loads(json.dumps(doc))
    doc.pop("ir_hash")
    event(f"mutation: {data.draw(field_mutation(doc))}")
    with tempfile.TemporaryDirectory() as tmp:
        check(write_ir(Path(tmp) / "ir", json.dumps(doc).encode(), npz))


@FUZZ
@given(data=st.data())
def test_fuzz_constant_values(data):
    """Re-saved constants with edited values (valid archives, no hash): the validator's proofs decide."""
    doc = dict(original_files()[2])
    doc.pop("ir_hash")
    with np.load(GOLDEN_IR / "constants.npz") as z:
        arrays = {k: z[k] for k in z.files}
    for _ in range(data.draw(st.integers(1, 3))):
        name = data.draw(st.sampled_from(sorted(arrays)))
        a = arrays[name].copy()
        if a.size:
            info = np.iinfo(a.dtype)
            flat = a.reshape(-1)
            idx = data.draw(st.integers(0, flat.size - 1))
            flat[idx] = data.draw(st.one_of(st.integers(int(info.min), int(info.max)),
                                            st.sampled_from([int(info.min), int(info.max), 0, 1])))
        arrays[name] = a
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "ir"
        d.mkdir()
        np.savez(d / "constants.npz", **arrays)
        (d / "graph.json").write_bytes(json.dumps(doc).encode())
        check(d)
