"""Fuzz tier (issue #10): mutate a copy of a committed golden set -- bytes of its files, fields of its
manifest, raw bytes of the manifest -- and require that ``verify`` either rejects it with a message naming
the file or the field, or the mutation was semantically a no-op (then verify says OK and every file and
every non-free manifest field is identical to the original). Never another exception type, never the
"internal error" safety net."""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from repq_hw.golden import verify_golden_set
from repq_hw.golden.model import GOLDEN_ROOT
from repq_hw.golden.verify import FREE_FIELDS, INTERNAL

SRC = GOLDEN_ROOT / "vit_digits.w4a4.seed0"
FREE = [tuple(f.split(".")) for f in FREE_FIELDS]

pytestmark = [pytest.mark.fuzz,
              pytest.mark.skipif(not (SRC / "manifest.json").is_file(), reason="the committed W4A4 set is missing")]

ORIGINAL_MANIFEST = json.loads((SRC / "manifest.json").read_text()) if (SRC / "manifest.json").is_file() else {}
LISTED = sorted(f["path"] for f in ORIGINAL_MANIFEST.get("files", []))


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return Path(shutil.copytree(SRC, tmp_path_factory.mktemp("fuzz") / "set"))


def _paths(doc, prefix=()):
    """Every (path, value) in a JSON document, containers included (the root excluded)."""
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield prefix + (k,), v
            yield from _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield prefix + (i,), v
            yield from _paths(v, prefix + (i,))


def _get_parent(doc, path):
    for p in path[:-1]:
        doc = doc[p]
    return doc


def _strict_equal(a, b) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_strict_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_strict_equal(x, y) for x, y in zip(a, b))
    return a == b


def _without_free(doc):
    d = copy.deepcopy(doc)
    for f in FREE:
        parent = d
        for p in f[:-1]:
            parent = parent.get(p, {}) if isinstance(parent, dict) else {}
        if isinstance(parent, dict):
            parent.pop(f[-1], None)
    return d


ALL_PATHS = list(_paths(ORIGINAL_MANIFEST))
LEAVES = [(p, v) for p, v in ALL_PATHS if not isinstance(v, (dict, list))]
CONTAINERS = [(p, v) for p, v in ALL_PATHS if isinstance(v, (dict, list))]

_VALUES = st.one_of(st.integers(-(2**70), 2**70), st.integers(-3, 3), st.booleans(), st.none(),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                    st.sampled_from(["../../etc/passwd", "/etc/passwd", "tensors/../../x", "hex", "uint4", "int32",
                                     "half_up", "floor", "NC", ""]),
                    st.lists(st.integers(0, 8), max_size=3), st.just({}))


@st.composite
def mutations(draw):
    kind = draw(st.sampled_from(["field", "field", "field", "bytes", "truncate", "manifest_bytes"]))
    if kind == "field":
        # mostly leaves, mostly type-preserving edits: those pass the schema and test the re-derivation
        pool = LEAVES if draw(st.integers(0, 3)) else CONTAINERS
        path, old = draw(st.sampled_from(pool))
        ops = ["replace", "delete"]
        if isinstance(old, bool):
            ops += ["flip"] * 3
        elif isinstance(old, int):
            ops += ["delta"] * 4
        elif isinstance(old, float):
            ops += ["scale"] * 3
        elif isinstance(old, str):
            ops += ["append"] * 2
        elif isinstance(old, list) and old:
            ops += ["drop"] * 2
        op = draw(st.sampled_from(ops))
        arg = None
        if op == "replace":
            arg = draw(_VALUES)
        elif op == "delta":
            arg = draw(st.integers(-5, 5))
        elif op == "scale":
            arg = draw(st.sampled_from([0.5, 2.0, -1.0, 1.0 + 2**-40, 1.0]))
        elif op == "append":
            arg = draw(st.sampled_from(["x", "/", "..", " ", "\n"]))
        elif op == "drop":
            arg = draw(st.integers(0, len(old) - 1))
        return {"kind": kind, "path": path, "op": op, "arg": arg}
    if kind in ("bytes", "truncate"):
        rel = draw(st.sampled_from(LISTED))
        return {"kind": kind, "file": rel, "at": draw(st.floats(0, 1)), "byte": draw(st.integers(0, 255))}
    return {"kind": kind, "at": draw(st.floats(0, 1)), "byte": draw(st.sampled_from([32, 10, 48, 57, 102, 34, 44, 125]))}


def _apply_field(doc, mu):
    parent = _get_parent(doc, mu["path"])
    key, old, op, arg = mu["path"][-1], _get_parent(doc, mu["path"] + (None,)), mu["op"], mu["arg"]
    if op == "delete":
        del parent[key]
    elif op == "replace":
        parent[key] = arg
    elif op == "flip":
        parent[key] = not old
    elif op == "delta":
        parent[key] = old + arg
    elif op == "scale":
        parent[key] = old * arg
    elif op == "append":
        parent[key] = old + arg
    elif op == "drop":
        del old[arg]


def _names_of(mu) -> tuple[str, ...]:
    """What a rejection must mention (one of): the file, or the nearest field name on the mutated path
    (or the manifest file, when the edit made it invalid JSON: NaN / Infinity)."""
    if mu["kind"] in ("bytes", "truncate"):
        return (mu["file"],)
    if mu["kind"] == "manifest_bytes":
        return ("manifest",)
    field = next(str(p) for p in reversed(mu["path"]) if isinstance(p, str))
    arg = mu["arg"]
    if isinstance(arg, float) and not math.isfinite(arg):
        return field, "manifest.json: "
    return (field,)


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow],
          database=None)
@given(mu=mutations(), execute=st.sampled_from([False, False, False, True]))
def test_verify_rejects_a_mutated_set_naming_it_or_the_mutation_was_a_no_op(work, mu, execute):
    mpath = work / "manifest.json"
    original_bytes = (SRC / "manifest.json").read_bytes()
    touched = None
    try:
        if mu["kind"] == "field":
            doc = copy.deepcopy(ORIGINAL_MANIFEST)
            _apply_field(doc, mu)
            mpath.write_text(json.dumps(doc, sort_keys=True, indent=1) + "\n")
        elif mu["kind"] == "manifest_bytes":
            data = bytearray(original_bytes)
            i = min(int(mu["at"] * len(data)), len(data) - 1)
            data[i] = mu["byte"]
            mpath.write_bytes(bytes(data))
        else:
            touched = work / mu["file"]
            data = bytearray(touched.read_bytes())
            i = min(int(mu["at"] * len(data)), max(len(data) - 1, 0))
            if mu["kind"] == "truncate":
                data = data[:i]
            elif data:
                data[i] = mu["byte"]
            touched.write_bytes(bytes(data))

        rep = verify_golden_set(work, execute=execute)  # never raises by contract; a raise fails the test
        text = rep.text()
        assert INTERNAL not in text, f"{mu}: {text}"

        files_same = all((work / rel).read_bytes() == (SRC / rel).read_bytes() for rel in LISTED)
        try:
            now = json.loads(mpath.read_text())
            manifest_same = _strict_equal(_without_free(now), _without_free(ORIGINAL_MANIFEST))
        except ValueError:
            now, manifest_same = None, False
        if rep.ok:
            assert files_same and manifest_same, f"verify accepted a semantic change {mu}"
        else:
            assert any(n in text for n in _names_of(mu)), f"{mu}: the report does not name {_names_of(mu)}:\n{text}"
            if mu["kind"] != "field" or _strict_equal(now, ORIGINAL_MANIFEST):
                assert not (files_same and manifest_same), f"verify rejected a no-op {mu}:\n{text}"
    finally:
        mpath.write_bytes(original_bytes)
        if touched is not None:
            touched.write_bytes((SRC / mu["file"]).read_bytes())
