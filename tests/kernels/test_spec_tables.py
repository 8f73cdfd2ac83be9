"""The spec's own example tables are tests.

Every ``docs/ops/*.md`` page must end with a ``## Examples`` section holding one or more markdown tables
whose first header cell is ``case``. Each table is matched to an op by (page, column set); every row is
run through BOTH the reference and the Numba implementation and compared with ``expected`` (a value,
a nested list, or the name of the exception that must be raised).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from repq_hw.kernels import attn_v_shift as av
from repq_hw.kernels import avg_pool
from repq_hw.kernels import gemm, isqrt, layernorm, log2_code, lut, rounding, softmax
from repq_hw.lower.constants import make_gelu_lut

DOCS = Path(__file__).resolve().parents[2] / "docs" / "ops"
REQUIRED_PAGES = {
    "requantize",
    "gemm_zp",
    "isqrt",
    "layernorm",
    "softmax",
    "log2_code",
    "attn_v_shift",
    "lut",
    "avg_pool",
}
EXCEPTIONS = {"ValueError": ValueError, "OverflowError": OverflowError}
# ops implemented by the executor itself; their tables run in tests/emu/test_spec_tables_executor.py
EXECUTOR_PAGES = {"add", "data_movement"}

# ---------------------------------------------------------------------------------------------------
# parsing


def parse_cell(text: str) -> Any:
    s = text.strip().strip("`").strip()
    if s in ("null", "None", ""):
        return None
    if s in EXCEPTIONS:
        return s
    if re.fullmatch(r"[+-]?\d+", s):
        return int(s)
    if s.startswith("["):
        return json.loads(s)
    if re.fullmatch(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?", s):
        return float(s)
    return s


def split_row(line: str) -> list[str]:
    body = line.strip()
    assert body.startswith("|") and body.endswith("|"), line
    return [c.strip() for c in body[1:-1].split("|")]


def example_tables(path: Path) -> list[tuple[list[str], list[list[str]]]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    try:
        start = next(i for i, ln in enumerate(lines) if ln.strip() == "## Examples")
    except StopIteration:
        return []
    tables, i = [], start + 1
    while i < len(lines):
        ln = lines[i].strip()
        if ln.startswith("## "):
            break
        if ln.startswith("|"):
            block = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                block.append(lines[i])
                i += 1
            header = split_row(block[0])
            assert re.fullmatch(r"\|?[\s:|-]+\|?", block[1].strip()), f"{path.name}: bad separator row"
            rows = [split_row(r) for r in block[2:]]
            for r in rows:
                assert len(r) == len(header), f"{path.name}: row {r} has {len(r)} cells, header {len(header)}"
            tables.append((header, rows))
            continue
        i += 1
    return tables


# ---------------------------------------------------------------------------------------------------
# runners: (page, columns) -> list of (name, fn(**args))


def _arr(x):
    return np.array(x, dtype=np.int64)


def _u8(x):
    return np.array(x, dtype=np.uint8)


def _i32(x):
    return None if x is None else np.array(x, dtype=np.int32)


def _scalar_rshift(x, shift, mode):
    rounding.check_shift(shift)
    return rounding.rounding_rshift(x, shift, rounding.mode_id(mode))


def _scalar_rdiv(num, den, mode):
    if den <= 0:
        raise ValueError("den")
    return round_div_scalar(num, den, rounding.mode_id(mode))


round_div_scalar = rounding.round_div

RUNNERS: dict[tuple[str, frozenset], list[tuple[str, Callable[..., Any]]]] = {
    ("requantize", frozenset({"x", "shift", "mode"})): [
        ("ref", lambda x, shift, mode: rounding.rounding_rshift_ref(x, shift, mode)),
        ("numba", lambda x, shift, mode: rounding.rounding_rshift_vec(x, shift, mode)),
        ("numba scalar", _scalar_rshift),
    ],
    ("requantize", frozenset({"num", "den", "mode"})): [
        ("ref", lambda num, den, mode: rounding.round_div_ref(num, den, mode)),
        ("numba", lambda num, den, mode: rounding.round_div_vec(num, den, mode)),
        ("numba scalar", _scalar_rdiv),
    ],
    ("requantize", frozenset({"x", "lo", "hi"})): [
        ("ref", lambda x, lo, hi: rounding.saturate_ref(x, lo, hi)),
        ("numba", lambda x, lo, hi: rounding.saturate_vec(x, lo, hi)),
    ],
    (
        "requantize",
        frozenset({"acc", "multiplier", "shift", "offset", "zero_point", "out_min", "out_max", "rounding"}),
    ): [
        (name, lambda fn=fn, **k: fn(_arr(k.pop("acc")), **k))
        for name, fn in (("ref", rounding.requantize_ref), ("numba", rounding.requantize))
    ],
    ("gemm_zp", frozenset({"a", "a_zp", "w", "w_zp", "bias"})): [
        (name, lambda fn=fn, **k: fn(_u8(k["a"]), k["a_zp"], _u8(k["w"]), _i32(k["w_zp"]), _i32(k["bias"])))
        for name, fn in (("ref", gemm.gemm_zp_ref), ("numba", gemm.gemm_zp))
    ],
    ("gemm_zp", frozenset({"q", "q_zp", "k", "k_zp"})): [  # IR op bmm_qk: kernel bmm_zp(a=q, b=k)
        (name, lambda fn=fn, **k: fn(_u8(k["q"]), k["q_zp"], _u8(k["k"]), k["k_zp"]))
        for name, fn in (("ref", gemm.bmm_zp_ref), ("numba", gemm.bmm_zp))
    ],
    ("isqrt", frozenset({"n"})): [
        ("ref", lambda n: isqrt.isqrt_ref(n)),
        ("numba", lambda n: isqrt.isqrt(n)),
    ],
    ("layernorm", frozenset({"x", "eps_q", "frac_bits", "rounding"})): [
        (name, lambda fn=fn, **k: fn(_arr(k.pop("x")), **k))
        for name, fn in (("ref", layernorm.layernorm_ref), ("numba", layernorm.layernorm))
    ],
    (
        "layernorm",
        frozenset(
            {
                "x",
                "eps_q",
                "frac_bits",
                "multiplier",
                "shift",
                "offset",
                "zero_point",
                "out_min",
                "out_max",
                "rounding",
            }
        ),
    ): [
        (name, lambda fn=fn, **k: fn(_arr(k.pop("x")), **k))
        for name, fn in (("ref", layernorm.layernorm_requant_ref), ("numba", layernorm.layernorm_requant))
    ],
    ("softmax", frozenset({"frac_bits", "lut_bits"})): [
        ("table", lambda frac_bits, lut_bits: softmax.exp2_lut(frac_bits, lut_bits)),
    ],
    ("softmax", frozenset({"x", "multiplier", "shift", "frac_bits", "lut_bits", "out_bits", "rounding"})): [
        (name, lambda fn=fn, **k: fn(_arr(k.pop("x")), **k))
        for name, fn in (("ref", softmax.softmax_ref), ("numba", softmax.softmax))
    ],
    ("log2_code", frozenset({"delta", "bits", "out_bits", "max_codes"})): [
        ("thresholds", lambda **k: log2_code.log2_thresholds(**k)),
    ],
    ("log2_code", frozenset({"p", "thresholds", "bits"})): [
        (name, lambda fn=fn, **k: fn(_arr(k["p"]), np.array(k["thresholds"], dtype=np.int64), k["bits"]))
        for name, fn in (("ref", log2_code.log2_code_ref), ("numba", log2_code.log2_code))
    ],
    (
        "attn_v_shift",
        frozenset({"c", "v", "v_zp", "bits", "shift_frac", "sqrt2_frac_bits", "rounding"}),
    ): [
        (name, lambda fn=fn, **k: fn(_u8(k.pop("c")), _u8(k.pop("v")), **k))
        for name, fn in (("ref", av.attn_v_shift_ref), ("numba", av.attn_v_shift))
    ],
    ("lut", frozenset({"x", "table", "in_min"})): [
        (name, lambda fn=fn, **k: fn(_arr(k["x"]), np.array(k["table"], dtype=np.int64), k["in_min"]))
        for name, fn in (("ref", lut.lut_lookup_ref), ("numba", lut.lut_lookup))
    ],
    ("avg_pool", frozenset({"x", "rounding"})): [
        (name, lambda fn=fn, **k: fn(_arr(k["x"]), k["rounding"]))
        for name, fn in (("ref", avg_pool.avg_pool_ref), ("numba", avg_pool.avg_pool))
    ],
    ("lut", frozenset({"in_scale", "in_min", "in_max", "out_scale", "out_zp", "out_bits"})): [
        ("gelu table", lambda **k: make_gelu_lut(**k)),
    ],
}

# ---------------------------------------------------------------------------------------------------


def _pages() -> list[Path]:
    return sorted(p for p in DOCS.glob("*.md") if p.stem not in EXECUTOR_PAGES)


def test_required_pages_exist():
    names = {p.stem for p in _pages()}
    missing = REQUIRED_PAGES - names
    assert not missing, f"spec pages missing: {sorted(missing)}"


@pytest.mark.parametrize("page", _pages(), ids=lambda p: p.stem)
def test_spec_examples(page: Path):
    tables = example_tables(page)
    assert tables, f"{page.name}: no '## Examples' table"
    n_rows = 0
    for header, rows in tables:
        assert header[0] == "case", f"{page.name}: first header cell must be 'case', got {header[0]!r}"
        assert header[-1] == "expected", f"{page.name}: last header cell must be 'expected'"
        cols = header[1:-1]
        key = (page.stem, frozenset(cols))
        assert key in RUNNERS, f"{page.name}: no runner for columns {cols}"
        assert rows, f"{page.name}: empty examples table {cols}"
        for row in rows:
            args = {c: parse_cell(v) for c, v in zip(cols, row[1:-1])}
            expected = parse_cell(row[-1])
            for impl, fn in RUNNERS[key]:
                label = f"{page.name} [{row[0]}] ({impl})"
                if isinstance(expected, str) and expected in EXCEPTIONS:
                    with pytest.raises(EXCEPTIONS[expected]):
                        fn(**dict(args))
                        pytest.fail(f"{label}: expected {expected}")
                else:
                    got = np.asarray(fn(**dict(args))).tolist()
                    assert got == expected, f"{label}: got {got}, spec says {expected}"
                n_rows += 1
    assert n_rows > 0


def test_parser_rejects_page_without_table(tmp_path: Path):
    p = tmp_path / "x.md"
    p.write_text("# x\n\nno examples here\n", encoding="utf-8")
    assert example_tables(p) == []
    p.write_text(
        "# x\n\n## Examples\n\n| case | n | expected |\n|---|---|---|\n| a | 4 | 2 |\n", encoding="utf-8"
    )
    assert example_tables(p) == [(["case", "n", "expected"], [["a", "4", "2"]])]


# ---------------------------------------------------------------------------------------------------
# the stored widths the spec states (docs/arith.md section 5, docs/ops/log2_code.md "δ in the IR") are the
# committed IRs' own

REPO = DOCS.parents[1]
COMMITTED = {"W4A4": REPO / "golden_vectors" / "vit_digits.w4a4.seed0",
             "W8A8": REPO / "golden_vectors" / "vit_digits.w8a8.seed0"}


def _committed_graph(label: str):
    d = COMMITTED[label]
    if not (d / "ir" / "graph.json").is_file():
        pytest.skip(f"no committed golden set {d.name}")
    from repq_hw.ir.graph import load_graph

    return load_graph(d / "ir", validate=False)


def _width_table() -> list[list[str]]:
    text = (DOCS.parent / "arith.md").read_text(encoding="utf-8")
    sec = text[text.index("## 5. What the IR carries"):]
    rows = [split_row(ln) for ln in sec.splitlines() if ln.startswith("|")]
    assert rows[0][:3] == ["constant (role)", "op", "rule"], rows[0]
    assert all(len(r) == 5 for r in rows), "arith.md §5: a row without 5 cells (a | inside a cell?)"
    return rows[2:]


def _types_of(cell: str) -> tuple[str, set[str] | tuple[str, str]]:
    """'int8, int9' -> ('set', {...}); 'int43 … int48' -> ('range', (lo, hi))."""
    if "…" in cell:
        lo, hi = (c.strip() for c in cell.split("…"))
        return "range", (lo, hi)
    return "set", {c.strip() for c in cell.split(",")}


@pytest.mark.parametrize("label", sorted(COMMITTED))
def test_arith_width_table_is_what_the_committed_irs_store(label):
    from repq_hw.ir.graph import int_type
    from repq_hw.lower.builder import smallest_int_type

    g = _committed_graph(label)
    col = 3 if label == "W4A4" else 4
    for row in _width_table():
        roles = re.findall(r"`(\w+)`", row[0])
        ops = re.findall(r"`(\w+)`", row[1])
        stored = {g.const_types[c].name for n in g.nodes if n.op.value in ops
                  for r, c in n.consts.items() if r in roles}
        assert stored, f"arith.md §5 row {row[0]}: no such constant in the {label} IR"
        kind, want = _types_of(row[col])
        if kind == "set":
            assert stored == want, f"arith.md §5 row {row[0]} ({label}): IR stores {sorted(stored)}"
        else:
            lo, hi = (int_type(t, (1,)) for t in want)
            ts = [int_type(t, (1,)) for t in stored]
            assert {t.signed for t in ts} == {lo.signed}, f"row {row[0]} ({label}): signedness {sorted(stored)}"
            assert min(t.bits for t in ts) == lo.bits and max(t.bits for t in ts) == hi.bits, (
                f"arith.md §5 row {row[0]} ({label}): IR stores {sorted(stored)}")
    # the rule itself: the narrowest type (>= 8 bits), except the documented explicit types
    for n in g.nodes:
        for role, c in n.consts.items():
            t = g.const_types[c]
            if role in ("weight", "value", "rows"):
                continue
            s = smallest_int_type(g.constants[c])
            assert (t.signed, t.bits) == (s.signed, s.bits), f"{c}: stored {t.name}, the rule gives {s.name}"


def test_log2_thresholds_come_from_the_manifest_scale():
    """docs/ops/log2_code.md: δ is the `scale` of the log2_code output (graph.json tensor, manifest tensor
    entry and ops[].scale.output), and log2_thresholds(δ, bits, P, L) gives the stored thresholds, for every
    log2_code op of the committed sets."""
    from repq_hw.golden import GoldenSet

    n_ops = 0
    for label, d in COMMITTED.items():
        if not (d / "manifest.json").is_file():
            continue
        gs = GoldenSet(d)
        for op in gs.ops:
            if op["op"] != "log2_code":
                continue
            entry = gs.tensor_entry(op["outputs"][0]["tensor"])
            assert op["scale"]["output"] == entry["scale"], f"{label} {op['name']}: two different scales"
        g = _committed_graph(label)
        for n in g.nodes:
            if n.op.value != "log2_code":
                continue
            prob = next(p for p in g.nodes if n.inputs[0] in p.outputs)
            assert prob.op.value == "softmax"
            delta = g.tensors[n.outputs[0]].scale
            th = g.const(n, "thresholds").astype(np.int64)
            want = log2_code.log2_thresholds(delta, int(n.attrs["bits"]), int(prob.attrs["out_bits"]), th.shape[0])
            assert np.array_equal(np.asarray(want, dtype=np.int64), th), f"{label} {n.name}"
            n_ops += 1
    if not n_ops:
        pytest.skip("no committed golden set in golden_vectors/")
