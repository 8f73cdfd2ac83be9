"""Hostile and careless IR / emulator input (issue #10): no silent wrap, no zip bomb, no stale plan, no
NaN codes, and a clear InputError naming the file (or node, tensor, input) instead of a traceback."""

from __future__ import annotations

import json
import resource
import shutil
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from repq_hw.emu import fast
from repq_hw.emu.execute import InputTypeError, run_graph, run_node
from repq_hw.errors import InputError
from repq_hw.ir.graph import IntType, IRFormatError, load_graph, save_graph
from repq_hw.ir.ops import Op
from repq_hw.ir.validate import IRValidationError, validate_graph
from repq_hw.lower.builder import GraphBuilder
from repq_hw.pipeline import host_input_codes

GOLDEN_IR = Path(__file__).resolve().parents[2] / "golden_vectors" / "vit_digits.w4a4.seed0" / "ir"


# ---------------------------------------------------------------------------------------------
# helpers


def gemm_graph(in_type: str = "uint8", k: int = 4, w=None):
    b = GraphBuilder()
    x = b.input("x", in_type, (3, k))
    w = np.arange(2 * k, dtype=np.uint8).reshape(2, k) % 16 if w is None else w
    b.node("mm", Op.GEMM, [x], "int32", (3, 2), attrs={"a_zp": 0},
           consts={"weight": w, "w_zp": np.zeros(2, np.int32), "bias": np.zeros(2, np.int32)})
    b.g.outputs.append("mm.out")
    return b.g


def golden_copy(tmp_path: Path) -> Path:
    d = tmp_path / "ir"
    shutil.copytree(GOLDEN_IR, d)
    return d


def edit_json(d: Path, fn, drop_hash: bool = True) -> Path:
    p = d / "graph.json"
    doc = json.loads(p.read_text())
    if drop_hash:
        doc.pop("ir_hash", None)
    fn(doc)
    p.write_text(json.dumps(doc))
    return p


def golden_input(g, n: int = 1, seed: int = 0) -> np.ndarray:
    t = g.tensors[g.inputs[0]].type
    return np.random.default_rng(seed).integers(t.min, t.max + 1, (n, *t.shape)).astype(t.storage)


def raises_naming(path: Path, fn, exc=InputError, match: str | None = None):
    with pytest.raises(exc) as ei:
        fn()
    assert str(path) in str(ei.value), f"message does not name {path}: {ei.value}"
    if match is not None:
        assert match in str(ei.value), f"{match!r} not in {ei.value}"
    return ei.value


# ---------------------------------------------------------------------------------------------
# 1. no silent wrap: operand types the kernels cannot represent exactly


def test_uint9_gemm_input_refused_by_validator_and_run_graph():
    g = gemm_graph("uint9")
    with pytest.raises(IRValidationError, match=r"'mm' \(gemm\): input is uint9"):
        validate_graph(g)
    x = np.full((1, 3, 4), 300, np.uint16)  # codes 256..511 used to be taken mod 256 by the fast path
    for backend in ("ref", "fast"):
        with pytest.raises(IRValidationError, match="uint9"):
            run_graph(g, x, backend)  # the builder does not validate: run_graph must refuse on its own


def test_gemm_uint9_would_have_wrapped():
    """The reference arithmetic on the true codes differs from the wrapped one: the refusal is not moot."""
    g = gemm_graph("uint9")
    w = g.constants["mm.weight"].astype(np.int64)
    x = np.full((3, 4), 300)
    assert not np.array_equal(x @ w.T, (x % 256) @ w.T)


@pytest.mark.parametrize("case", ["bmm_q", "bmm_k", "attn_v_v", "softmax_in", "layernorm_in", "concat_rows",
                                  "gemm_weight", "gemm_signed_in", "add_int64"])
def test_other_narrowing_operands_refused(case):
    b = GraphBuilder()
    if case in ("bmm_q", "bmm_k"):
        q = b.input("q", "uint9" if case == "bmm_q" else "uint8", (1, 2, 3))
        k = b.input("k", "uint9" if case == "bmm_k" else "uint8", (1, 2, 3))
        b.node("qk", Op.BMM_QK, [q, k], "int32", (1, 2, 2), attrs={"q_zp": 0, "k_zp": 0})
        out = "qk.out"
    elif case == "attn_v_v":
        c = b.input("c", "uint4", (1, 2, 2))
        v = b.input("v", "uint9", (1, 2, 3))
        b.node("av", Op.ATTN_V, [c, v], "int32", (1, 2, 3),
               attrs={"bits": 4, "max_code": 14, "shift_frac": 8, "sqrt2_frac_bits": 15, "v_zp": 0,
                      "rounding": "half_even"})
        out = "av.out"
    elif case == "softmax_in":
        x = b.input("x", "int40", (2, 4))
        from repq_hw.kernels import exp2_lut
        b.node("sm", Op.SOFTMAX, [x], "uint17", (2, 4),
               attrs={"multiplier": 1 << 20, "shift": 20, "frac_bits": 4, "lut_bits": 12, "out_bits": 16,
                      "rounding": "half_even"}, consts={"lut": exp2_lut(4, 12)})
        out = "sm.out"
    elif case == "layernorm_in":
        x = b.input("x", "int40", (2, 4))
        b.node("ln", Op.LAYERNORM, [x], "uint8", (2, 4),
               attrs={"eps_q": 1, "frac_bits": 8, "zero_point": 0, "rounding": "half_even"},
               consts={"multiplier": np.ones(4, np.int32), "shift": np.zeros(4, np.int8),
                       "offset": np.zeros(4, np.int64)})
        out = "ln.out"
    elif case == "concat_rows":
        x = b.input("x", "int8", (2, 4))
        b.node("cat", Op.CONCAT_TOKENS, [x], "int8", (3, 4), consts={"rows": np.full((1, 4), 1000, np.int16)})
        out = "cat.out"
    elif case == "gemm_weight":
        g = gemm_graph(w=np.full((2, 4), 300, np.uint16))
        out = None
    elif case == "gemm_signed_in":
        g = gemm_graph("int8")
        out = None
    else:
        x = b.input("x", "int64", (2, 4))
        y = b.input("y", "int64", (2, 4))
        b.node("add", Op.ADD, [x, y], "int64", (2, 4))
        out = "add.out"
    if out is not None:
        b.g.outputs.append(out)
        g = b.g
    with pytest.raises(IRValidationError):
        validate_graph(g)
    feeds = {n: np.zeros((1, *g.tensors[n].type.shape), g.tensors[n].type.storage) for n in g.inputs}
    for backend in ("ref", "fast"):
        with pytest.raises(IRValidationError):
            run_graph(g, feeds, backend)


def test_executor_cast_refuses_values_that_do_not_fit():
    """Defence in depth: even with valid declared types, an array of a wider dtype is never wrapped."""
    g = gemm_graph("uint8")
    node = g.nodes[0]
    x = np.full((1, 3, 4), 300, np.int16)
    with pytest.raises(IRValidationError, match="do not fit the uint8"):
        run_node(g, node, [x], "ref")
    ok = run_node(g, node, [np.full((1, 3, 4), 200, np.int16)], "fast")
    assert np.array_equal(ok, run_node(g, node, [np.full((1, 3, 4), 200, np.uint8)], "ref"))


def test_uint64_tensors_refused():
    b = GraphBuilder()
    x = b.input("x", "uint64", (2, 4))
    b.node("r", Op.REQUANT, [x], "int8", (2, 4), attrs={"zero_point": 0, "rounding": "floor"},
           consts={"multiplier": np.ones(1, np.int32), "shift": np.zeros(1, np.int8)})
    b.g.outputs.append("r.out")
    with pytest.raises(IRValidationError, match="uint64"):
        validate_graph(b.g)


def test_lowered_graphs_still_valid():
    g = load_graph(GOLDEN_IR)
    validate_graph(g)
    x = golden_input(g, 2)
    a, b = run_graph(g, x, "ref"), run_graph(g, x, "fast")
    assert all(np.array_equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------------------------
# 2. zip bomb: sizes come from the declaration and the headers, before any decompression


def _write_bomb(path: Path, keep: dict[str, bytes], victim: str, header_shape, data_bytes: int) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, raw in keep.items():
            zf.writestr(name, raw)
        with zf.open(victim + ".npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(
                f, {"descr": "|u1", "fortran_order": False, "shape": tuple(header_shape)})
            chunk = bytes(16 << 20)
            for _ in range(data_bytes // len(chunk)):
                f.write(chunk)


@pytest.fixture(scope="module")
def bomb_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("bomb")
    src = save_graph(gemm_graph(), root / "src")
    with zipfile.ZipFile(src / "constants.npz") as zf:
        keep = {n: zf.read(n) for n in zf.namelist() if n != "mm.weight.npy"}
    dirs = {}
    gib = 1 << 30
    for case, header_shape in (("header_lies_shape", (gib,)), ("data_beyond_header", (2, 4))):
        d = root / case
        shutil.copytree(src, d)
        _write_bomb(d / "constants.npz", keep, "mm.weight", header_shape, gib)
        assert (d / "constants.npz").stat().st_size < 16 << 20  # tiny compressed, 1 GiB inflated
        dirs[case] = d
    d = root / "declared_huge"  # graph.json agrees with the bomb: refused by the declared-size limits
    shutil.copytree(root / "header_lies_shape", d)
    edit_json(d, lambda doc: doc["constants"]["mm.weight"].update(shape=[gib]))
    dirs["declared_huge"] = d
    return dirs


@pytest.mark.parametrize("case,match", [("header_lies_shape", "has shape (1073741824,), expected (2, 4)"),
                                        ("data_beyond_header", "the archive says"),
                                        ("declared_huge", "more than")])
def test_zip_bomb_refused_without_inflating(bomb_dirs, case, match):
    d = bomb_dirs[case]
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    try:
        err = raises_naming(d / ("graph.json" if case == "declared_huge" else "constants.npz"),
                            lambda: load_graph(d), IRFormatError, match)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20, f"peak traced memory {peak / 2**20:.1f} MiB while refusing: {err}"
    growth_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0
    assert growth_kib < 256 << 10, f"peak RSS grew by {growth_kib / 1024:.0f} MiB"


# ---------------------------------------------------------------------------------------------
# 3. no stale fast plan


def test_constants_are_read_only_after_load_and_creation():
    g = load_graph(GOLDEN_IR)
    name = next(iter(g.constants))
    with pytest.raises(ValueError, match="read-only"):
        g.constants[name][...] = 0
    g2 = gemm_graph()
    with pytest.raises(ValueError, match="read-only"):
        g2.constants["mm.bias"][0] = 1
    g2.constants["mm.bias"] = np.ones(2, np.uint8)  # replacing is the way to change a constant
    assert not g2.constants["mm.bias"].flags.writeable
    b = np.ones(2, np.uint8)
    g2.constants["mm.bias"] = b
    assert b.flags.writeable and g2.constants["mm.bias"] is not b  # stored as an immutable copy
    sealed = g2.constants["mm.bias"]
    g2.constants["mm.bias"] = sealed  # already immutable: kept as it is
    assert g2.constants["mm.bias"] is sealed
    with pytest.raises(InputError, match="mm.bias.*integer array"):  # an immutable float array is still refused
        g2.constants["mm.bias"] = np.frombuffer(np.ones(2).tobytes(), np.float64)


def _assert_ref_equals_fast(g, x):
    a, b = run_graph(g, x, "ref", keep_all=True), run_graph(g, x, "fast", keep_all=True)
    bad = [k for k in a if not np.array_equal(a[k], b[k])]
    assert not bad, f"fast differs from ref on {bad[:5]}"
    return a


def test_constants_cannot_be_made_writable_again():
    g = load_graph(GOLDEN_IR)
    x = golden_input(g, 2)
    before = _assert_ref_equals_fast(g, x)
    p1 = fast.prepare(g)
    node = next(n for n in g.nodes if n.op == Op.GEMM)
    bias = g.constants[node.consts["bias"]]
    for arr in (bias, bias.view(), bias.reshape(-1)[::1]):
        with pytest.raises(ValueError, match="WRITEABLE"):
            arr.setflags(write=True)
    with pytest.raises(ValueError, match="read-only"):
        bias += 100
    assert fast.prepare(g) is p1  # nothing changed: the plan is kept
    after = _assert_ref_equals_fast(g, x)
    assert all(np.array_equal(after[k], before[k]) for k in before)


def test_a_view_taken_before_storing_does_not_alias_the_graph():
    g = gemm_graph()
    x = np.arange(12, dtype=np.uint8).reshape(1, 3, 4)
    w = np.arange(8, dtype=np.uint8).reshape(2, 4)
    wview = w.view()  # a writable view taken before the array went into the graph
    g.constants["mm.weight"] = w
    assert w.flags.writeable and wview.flags.writeable  # the caller's arrays are left as they are
    assert not g.constants["mm.weight"].flags.writeable
    before = _assert_ref_equals_fast(g, x)["mm.out"]
    p1 = fast.prepare(g)
    wview[0, 0] = 15  # the caller's array changes; the graph holds its own copy
    w[1, 1] = 0
    assert g.constants["mm.weight"][0, 0] == 0 and g.constants["mm.weight"][1, 1] == 5
    assert fast.prepare(g) is p1
    assert np.array_equal(_assert_ref_equals_fast(g, x)["mm.out"], before)


def test_an_unsealed_constant_is_keyed_by_its_content():
    """An array that bypasses the store (dict.__setitem__) is writable; the plan then digests its content,
    so an in-place edit of it still rebuilds the plan."""
    g = gemm_graph()
    x = np.arange(12, dtype=np.uint8).reshape(1, 3, 4)
    w = np.arange(8, dtype=np.uint8).reshape(2, 4)
    dict.__setitem__(g.constants, "mm.weight", w)
    before = _assert_ref_equals_fast(g, x)["mm.out"]
    p1 = fast.prepare(g)
    assert fast.prepare(g) is p1
    w[0, 0] = 15
    assert fast.prepare(g) is not p1
    assert not np.array_equal(_assert_ref_equals_fast(g, x)["mm.out"], before)


def test_replaced_constant_and_edited_attribute_rebuild_plan():
    g = load_graph(GOLDEN_IR)
    x = golden_input(g, 1)
    _assert_ref_equals_fast(g, x)
    p1 = fast.prepare(g)
    node = next(n for n in g.nodes if n.op == Op.GEMM)
    name = node.consts["bias"]
    g.constants[name] = (g.constants[name].astype(np.int64) - 77).astype(g.constants[name].dtype)
    p2 = fast.prepare(g)
    assert p2 is not p1
    _assert_ref_equals_fast(g, x)
    rq = next(n for n in g.nodes if n.op == Op.REQUANT)
    rq.attrs["zero_point"] = int(rq.attrs["zero_point"]) + 1  # attributes are in the key too
    p3 = fast.prepare(g)
    assert p3 is not p2
    assert fast.prepare(g) is p3  # and an unchanged graph keeps its plan
    for same_value in (float(rq.attrs["zero_point"]), np.int64(rq.attrs["zero_point"])):  # a new type: new key
        old = rq.attrs["zero_point"]
        rq.attrs["zero_point"] = same_value
        p4 = fast.prepare(g)
        assert p4 is not p3
        rq.attrs["zero_point"] = old
        p3 = fast.prepare(g)
        assert p3 is not p4


def test_structure_key_tells_value_types_apart():
    """1, True, 1.0, numpy's 1 (signed and unsigned), [1] and (1,) are different attribute values to the plan
    key (the validator may treat them differently); the same value again gives the same key; an attribute
    pickle refuses falls back to the JSON digest."""
    g = gemm_graph()
    x = np.arange(12, dtype=np.uint8).reshape(1, 3, 4)
    node = g.nodes[0]
    keys = []
    for v in (1, True, 1.0, np.int64(1), np.uint64(1), [1], (1,)):
        node.attrs["probe"] = v
        keys.append(fast._structure_key(g))
    assert len(set(keys)) == len(keys)
    node.attrs["probe"] = 1
    assert fast._structure_key(g) == keys[0]
    node.attrs["probe"] = lambda: 1  # not picklable
    assert fast._structure_key(g)[:1] == b"j"
    del node.attrs["probe"]
    _assert_ref_equals_fast(g, x)
    assert fast.prepare(g) is fast.prepare(g)  # and an unchanged graph keeps its plan


def _edits_that_break_validation(g):
    """(what, edit) pairs: each turns a valid graph into one validate_graph refuses; every edit is one that
    the fast plan's key must see (validation runs once per plan)."""
    gemm = next(n for n in g.nodes if n.op == Op.GEMM)
    first_out = g.nodes[0].outputs[0]
    return [
        ("an attribute", lambda: gemm.attrs.update(a_zp=1 << 40)),
        ("a tensor type", lambda: setattr(g.tensors[first_out], "type",
                                          IntType(True, 64, g.tensors[first_out].type.shape))),
        ("a constant type", lambda: g.const_types.update({gemm.consts["bias"]: IntType(True, 64, (1,))})),
        ("the graph outputs", lambda: g.outputs.append("no_such_tensor")),
        ("the op's kind", lambda: setattr(gemm, "op", gemm.op.value)),  # a str with the same value
    ]


@pytest.mark.parametrize("which", range(5))
def test_validation_is_not_skipped_after_an_edit(which):
    g = load_graph(GOLDEN_IR)
    x = golden_input(g, 1)
    run_graph(g, x, "fast")
    run_graph(g, x, "fast")  # the second call takes the plan's cached validation
    _what, edit = _edits_that_break_validation(g)[which]
    edit()
    with pytest.raises(IRValidationError):
        run_graph(g, x, "fast")
    with pytest.raises(IRValidationError):  # and again: a failed validation is not recorded as passed
        run_graph(g, x, "fast")


# ---------------------------------------------------------------------------------------------
# 4. NaN / inf images and out-of-range codes


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_images_refused(bad):
    g = load_graph(GOLDEN_IR)
    img = np.zeros((2, *g.tensors[g.inputs[0]].type.shape), np.float32)
    img[1, 0, 3, 5] = bad
    with pytest.raises(InputError, match=r"'input'.*index \[1, 0, 3, 5\]"):
        host_input_codes(g, img)
    img64 = img.astype(np.float64)
    with pytest.raises(InputError, match=r"index \[1, 0, 3, 5\]"):
        host_input_codes(g, img64)
    assert host_input_codes(g, np.zeros_like(img)).dtype == np.uint8


def test_non_numeric_images_and_bad_scale_refused():
    g = load_graph(GOLDEN_IR)
    shape = (1, *g.tensors[g.inputs[0]].type.shape)
    with pytest.raises(InputError, match="real-valued"):
        host_input_codes(g, np.zeros(shape, dtype=object))
    g.tensors[g.inputs[0]].scale = float("nan")
    with pytest.raises(InputError, match="scale"):
        host_input_codes(g, np.zeros(shape, np.float32))


@pytest.mark.parametrize("value,dtype", [(256, np.int32), (-1, np.int16), (1 << 40, np.int64),
                                         ((1 << 64) - 1, np.uint64)])
def test_out_of_range_codes_refused_not_clipped(value, dtype):
    g = load_graph(GOLDEN_IR)
    x = np.zeros((1, *g.tensors[g.inputs[0]].type.shape), dtype)
    x[0, 0, 1, 2] = value
    with pytest.raises(InputError, match=r"outside uint8 .*index \(0, 0, 1, 2\)"):
        run_graph(g, x, "fast")


# ---------------------------------------------------------------------------------------------
# 5. run_graph arguments


def test_run_graph_refuses_wrong_kinds_of_input():
    torch = pytest.importorskip("torch")
    g = load_graph(GOLDEN_IR)
    shape = (1, *g.tensors[g.inputs[0]].type.shape)
    cases = [(torch.zeros(shape, dtype=torch.uint8), InputTypeError, "torch.Tensor"),
             (np.zeros(shape, np.float32).tolist(), InputTypeError, "list"),
             (np.zeros(shape, np.float32), InputTypeError, "dtype float32"),
             (np.zeros(shape, bool), InputTypeError, "dtype bool"),
             (np.zeros((1, 3, 32, 32), np.uint8), InputError, "expected shape [B, 1, 32, 32]"),
             (np.zeros((0, *shape[1:]), np.uint8), InputError, "empty batch"),
             ({"input": np.zeros(shape, np.uint8), "inptu": 1}, InputError, "unknown graph inputs"),
             ({}, InputError, "missing graph inputs")]
    for x, exc, match in cases:
        with pytest.raises(exc) as ei:
            run_graph(g, x, "ref")
        assert match in str(ei.value), (match, ei.value)
        if exc is InputTypeError:
            assert "'input'" in str(ei.value) and "[B, 1, 32, 32]" in str(ei.value)
    with pytest.raises(InputError, match="backend"):
        run_graph(g, np.zeros(shape, np.uint8), backend=None)


# ---------------------------------------------------------------------------------------------
# 5. malformed files: an InputError naming the file, never a traceback


def _set_attr(op, key, value):
    def fn(doc):
        next(n for n in doc["nodes"] if n["op"] == op)["attrs"][key] = value
    return fn


def _del_attr(op, key):
    def fn(doc):
        del next(n for n in doc["nodes"] if n["op"] == op)["attrs"][key]
    return fn


def _swap_first_two_nodes(doc):
    doc["nodes"][0], doc["nodes"][1] = doc["nodes"][1], doc["nodes"][0]


def _cycle(doc):
    doc["nodes"][1]["inputs"] = [doc["nodes"][2]["outputs"][0]]


def _dup_node(doc):
    doc["nodes"][2]["name"] = doc["nodes"][1]["name"]


def _dup_tensor(doc):
    doc["tensors"].append(dict(doc["tensors"][0]))


def _dangling(doc):
    doc["nodes"][3]["inputs"] = ["no.such.tensor"]


def _dangling_const(doc):
    n = next(n for n in doc["nodes"] if n["op"] == "gemm")
    n["consts"]["weight"] = "no.such.constant"


JSON_EDITS = {
    "empty nodes": (lambda d: d.update(nodes=[]), "'nodes' is empty"),
    "empty outputs": (lambda d: d.update(outputs=[]), "'outputs' is empty"),
    "no nodes field": (lambda d: d.pop("nodes"), "missing field 'nodes'"),
    "nodes not a list": (lambda d: d.update(nodes={"a": 1}), "'nodes' must be a list"),
    "unknown op": (lambda d: d["nodes"][0].update(op="conv9"), "unknown op 'conv9'"),
    "op not a string": (lambda d: d["nodes"][0].update(op=[1]), "unknown op [1]"),
    "missing attr": (_del_attr("gemm", "a_zp"), "missing attribute 'a_zp'"),
    "string attr": (_set_attr("gemm", "a_zp", "127"), "attribute 'a_zp' must be an integer"),
    "bool attr": (_set_attr("patchify", "patch", True), "attribute 'patch' must be an integer"),
    "float attr": (_set_attr("slice", "stop", 96.0), "attribute 'stop' must be an integer"),
    "huge attr": (_set_attr("softmax", "shift", 10 ** 30), "attribute 'shift' = 1000000000000000000000000000000"),
    "huge int zero point": (_set_attr("gemm", "a_zp", -(10 ** 40)), "outside"),
    "bad rounding": (_set_attr("requantize", "rounding", 3), "rounding attribute"),
    "dangling tensor": (_dangling, "'no.such.tensor' is never produced"),
    "dangling constant": (_dangling_const, "'no.such.constant' (weight) is missing"),
    "out of order": (_swap_first_two_nodes, "is produced only later"),
    "cycle": (_cycle, "is produced only later"),
    "duplicate node": (_dup_node, "duplicate node name"),
    "duplicate tensor": (_dup_tensor, "declared twice"),
    "bad dtype name": (lambda d: d["tensors"][0].update(dtype="uint 8"), "dtype must be"),
    "bit width 65": (lambda d: d["tensors"][0].update(dtype="int65"), "dtype must be"),
    "shape of strings": (lambda d: d["tensors"][0].update(shape=["1", 32, 32]), "shape must be"),
    "negative shape": (lambda d: d["tensors"][0].update(shape=[-1, 32, 32]), "shape must be"),
    "tensor not object": (lambda d: d["tensors"].__setitem__(0, 7), "a tensor must be an object"),
    "uint9 gemm input": (lambda d: [t.update(dtype="uint9") for t in d["tensors"]
                                    if t["name"] in ("input", "patch_embed.patchify.out")],
                         "gemm): input is uint9"),
    "graph output undeclared": (lambda d: d.update(outputs=["nope"]), "'nope' is never produced"),
    "input not declared": (lambda d: d.update(inputs=["nope"]), "'nope' is not a declared tensor"),
    "ir_version bool": (lambda d: d.update(ir_version=True), "ir_version True"),
    "meta not object": (lambda d: d.update(meta=[]), "'meta' must be a dict"),
    "const declared uint64": (lambda d: d["constants"][next(iter(d["constants"]))].update(dtype="uint64"),
                              "uint64 is not supported"),
}


@pytest.mark.parametrize("case", sorted(JSON_EDITS))
def test_malformed_graph_json_names_the_file(tmp_path, case):
    fn, match = JSON_EDITS[case]
    d = golden_copy(tmp_path)
    p = edit_json(d, fn)
    raises_naming(p, lambda: load_graph(d), InputError, match)


RAW_EDITS = {
    "truncated": (lambda b: b[: len(b) // 2], "not valid JSON"),
    "empty": (lambda b: b"", "not valid JSON"),
    "not utf-8": (lambda b: b"\xff\xfe" + b, "not UTF-8"),
    "top-level list": (lambda b: b"[1, 2]", "top level must be a JSON object"),
    "deep nesting": (lambda b: b"[" * 100000 + b"]" * 100000, "not valid JSON"),
    "duplicate key": (lambda b: b[:-1] + b', "inputs": ["input"]}', "duplicate keys in one object: 'inputs'"),
    "NaN literal": (lambda b: b.replace(b'"zero_point": 127', b'"zero_point": NaN', 1), "NaN"),
    "huge float": (lambda b: b.replace(b'"zero_point": 127', b'"zero_point": 1e999', 1), "overflows a float"),
    "huge integer text": (lambda b: b.replace(b'"zero_point": 127', b'"zero_point": ' + b"9" * 5000, 1),
                          "not valid JSON"),
    "tampered (hash kept)": (lambda b: b.replace(b'"a_zp":127', b'"a_zp":126', 1), "IR hash mismatch"),
}


@pytest.mark.parametrize("case", sorted(RAW_EDITS))
def test_malformed_graph_json_bytes_name_the_file(tmp_path, case):
    fn, match = RAW_EDITS[case]
    d = golden_copy(tmp_path)
    p = d / "graph.json"
    raw = p.read_bytes()
    if case != "tampered (hash kept)":
        doc = json.loads(raw)
        doc.pop("ir_hash")
        raw = json.dumps(doc, indent=1).encode()
    p.write_bytes(fn(raw))
    raises_naming(p, lambda: load_graph(d), InputError, match)


def _npz_rewrite(p: Path, fn) -> None:
    with np.load(p) as z:
        arrays = {k: z[k] for k in z.files}
    fn(arrays)
    np.savez(p, **arrays)


NPZ_EDITS = {
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "not a valid npz"),
    "not a zip": (lambda p: p.write_bytes(b"hello"), "not a valid npz"),
    "empty file": (lambda p: p.write_bytes(b""), "not a valid npz"),
    "corrupt data": (lambda p: p.write_bytes(p.read_bytes()[:5000] + bytes(100) + p.read_bytes()[5100:]),
                     "constant"),
    "missing member": (lambda p: _npz_rewrite(p, lambda a: a.pop(min(a))), "is missing"),
    "extra member": (lambda p: _npz_rewrite(p, lambda a: a.update(extra=np.zeros(3, np.int8))),
                     "'extra.npy' is not a constant declared"),
    "float member": (lambda p: _npz_rewrite(p, lambda a: a.update({k: a[k].astype(np.float32) for k in
                                                                   [min(a)]})), "expected an integer dtype"),
    "object member": (lambda p: _npz_rewrite(p, lambda a: a.update({k: np.array([{}] * a[k].size, dtype=object)
                                                                    for k in [min(a)]})),
                      "expected an integer dtype"),
    "wrong dtype": (lambda p: _npz_rewrite(p, lambda a: a.update({k: a[k].astype(np.int64) for k in
                                                                  [min(a)]})), "expected"),
    "big-endian": (lambda p: _npz_rewrite(p, lambda a: a.update({k: a[k].astype(a[k].dtype.newbyteorder(">"))
                                                                 for k in [min(a)]})), "expected"),
    "wrong shape": (lambda p: _npz_rewrite(p, lambda a: a.update({k: a[k].reshape(-1)[:-1] for k in
                                                                  [min(a)]})), "has shape"),
    "tampered value": (lambda p: _npz_rewrite(p, lambda a: a.update({k: a[k] ^ 1 for k in [min(a)]})),
                       "IR hash mismatch"),
}


@pytest.mark.parametrize("case", sorted(NPZ_EDITS))
def test_malformed_constants_npz_names_the_file(tmp_path, case):
    fn, match = NPZ_EDITS[case]
    d = golden_copy(tmp_path)
    p = d / "constants.npz"
    fn(p)
    named = d / "graph.json" if match == "IR hash mismatch" else p
    raises_naming(named, lambda: load_graph(d), InputError, match)


def test_missing_files_name_the_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="graph.json") as ei:
        load_graph(tmp_path)
    assert isinstance(ei.value, InputError) and str(tmp_path) in str(ei.value)


def test_fortran_ordered_member_reads_as_the_same_values(tmp_path):
    """A legitimate variant the header check must not refuse: a Fortran-ordered .npy member."""
    g = gemm_graph()
    d = save_graph(g, tmp_path / "ir")
    _npz_rewrite(d / "constants.npz", lambda a: a.update({"mm.weight": np.asfortranarray(a["mm.weight"])}))
    with zipfile.ZipFile(d / "constants.npz") as zf, zf.open("mm.weight.npy") as f:
        np.lib.format.read_magic(f)
        assert np.lib.format.read_array_header_1_0(f)[1] is True  # really stored Fortran-ordered
    g2 = load_graph(d)  # the ir_hash (values, not layout) still matches
    assert np.array_equal(g2.constants["mm.weight"], g.constants["mm.weight"])
    assert g2.constants["mm.weight"].flags.c_contiguous and not g2.constants["mm.weight"].flags.writeable


def test_copies_of_a_graph_keep_read_only_constants():
    import copy
    import pickle

    g = gemm_graph()
    for g2 in (copy.deepcopy(g), pickle.loads(pickle.dumps(g))):
        assert not g2.constants["mm.weight"].flags.writeable
        assert g2.hash() == g.hash()
    g.constants = {k: v.copy() for k, v in g.constants.items()}  # even a plain dict assigned wholesale
    assert not g.constants["mm.weight"].flags.writeable


def test_tampered_softmax_table_is_refused():
    """The executors rebuild the exp2 table from the attributes; the stored copy is the RTL's ROM image,
    so a table that differs from the attributes' table by one LSB is refused, not silently ignored."""
    g = load_graph(GOLDEN_IR)
    validate_graph(g)
    node = next(n for n in g.nodes if n.op == Op.SOFTMAX)
    name = node.consts["lut"]
    bad = g.constants[name].copy()
    bad[3] += 1
    g.constants[name] = bad
    with pytest.raises(IRValidationError, match="'lut' differs from exp2_lut"):
        validate_graph(g)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.int64])
@pytest.mark.parametrize("size", [1, 7, 4096, (1 << 16) + 5, 300_001])
def test_content_digest_sees_every_single_element_edit(dtype, size):
    """The plan key's constant digest (emu/fast.py content_digest): a change of any one element, at the
    start, the end or anywhere between, changes it; so does a change of length alone."""
    rng = np.random.default_rng(size)
    a = rng.integers(0, 100, size).astype(dtype)
    d0 = fast.content_digest(a)
    assert fast.content_digest(a.copy()) == d0
    for pos in {0, size - 1, *rng.integers(0, size, 20).tolist()}:
        b = a.copy()
        b[pos] += 1
        assert fast.content_digest(b) != d0, pos
    assert fast.content_digest(np.concatenate([a, np.zeros(1, dtype)])) != d0  # a zero appended
