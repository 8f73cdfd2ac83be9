"""The examples tables of the ops the executor implements itself (add, data movement) are tests."""

from pathlib import Path

import numpy as np
import pytest

from repq_hw.emu.execute import run_node
from repq_hw.ir.graph import Graph, IntType, Node, TensorInfo
from repq_hw.ir.ops import Op
from tests.kernels.test_spec_tables import example_tables, parse_cell

DOCS = Path(__file__).resolve().parents[2] / "docs" / "ops"
EXECUTOR_PAGES = ("add", "data_movement")


def one_node_graph(op: Op, x: np.ndarray, out_shape, attrs=None, consts=None, bits=16) -> tuple[Graph, Node]:
    t_in = IntType(True, bits, x.shape)
    tensors = {"x": TensorInfo("x", t_in), "y": TensorInfo("y", IntType(True, bits, out_shape))}
    cnames = {}
    constants, ctypes = {}, {}
    for role, v in (consts or {}).items():
        constants[role] = np.asarray(v, dtype=np.int64)
        ctypes[role] = IntType(True, 64, constants[role].shape)
        cnames[role] = role
    node = Node("n", op, ["x"], ["y"], attrs or {}, cnames)
    return Graph([node], tensors, ["x"], ["y"], constants, ctypes), node


def run_add(a, b, bits):
    g, node = one_node_graph(Op.ADD, np.array([[a]]), (1, 1), bits=bits)
    return run_node(g, node, [np.array([[[a]]]), np.array([[[b]]])], "ref")[0, 0, 0]


def run_add_const(x, value, bits):
    x = np.asarray(x, dtype=np.int64)
    g, node = one_node_graph(Op.ADD_CONST, x, x.shape, consts={"value": value}, bits=bits)
    return run_node(g, node, [x[None]], "ref")[0]


def run_movement(op, x, attr):
    x = np.asarray(x, dtype=np.int64)
    if op == "patchify":
        c, h, w = x.shape
        g, node = one_node_graph(Op.PATCHIFY, x, ((h // attr) * (w // attr), c * attr * attr), {"patch": attr})
    elif op == "slice":
        g, node = one_node_graph(Op.SLICE, x, (*x.shape[:-1], attr[1] - attr[0]),
                                 {"start": attr[0], "stop": attr[1]})
    elif op == "split_heads" and isinstance(attr, list):  # [heads, windows]
        h, w = attr
        g, node = one_node_graph(Op.SPLIT_HEADS, x, (w * h, x.shape[0] // w, x.shape[1] // h),
                                 {"heads": h, "windows": w})
    elif op == "merge_heads" and isinstance(attr, list):  # [null, windows]
        w = attr[1]
        g, node = one_node_graph(Op.MERGE_HEADS, x, (w * x.shape[1], (x.shape[0] // w) * x.shape[2]),
                                 {"windows": w})
    elif op == "split_heads":
        g, node = one_node_graph(Op.SPLIT_HEADS, x, (attr, x.shape[0], x.shape[1] // attr), {"heads": attr})
    elif op == "merge_heads":
        g, node = one_node_graph(Op.MERGE_HEADS, x, (x.shape[1], x.shape[0] * x.shape[2]))
    elif op in ("window_partition", "window_reverse"):
        hh, ww, w, sh = attr[:4]
        hp, wp = -(-hh // w) * w, -(-ww // w) * w
        rows = hh * ww if op == "window_reverse" else hp * wp
        attrs = {"height": hh, "width": ww, "window": w, "shift": sh}
        if op == "window_partition":
            attrs["pad_value"] = attr[4]
        g, node = one_node_graph(Op(op), x, (rows, x.shape[1]), attrs)
    elif op == "patch_merge":
        hh, ww = attr
        g, node = one_node_graph(Op.PATCH_MERGE, x, (-(-hh // 2) * -(-ww // 2), 4 * x.shape[1]),
                                 {"height": hh, "width": ww})
    elif op == "select_token":
        g, node = one_node_graph(Op.SELECT_TOKEN, x, (1, x.shape[1]), {"index": attr})
    elif op == "concat_tokens":
        g, node = one_node_graph(Op.CONCAT_TOKENS, x, (x.shape[0] + len(attr), x.shape[1]), consts={"rows": attr})
    else:
        raise AssertionError(f"unknown op {op!r} in the spec table")
    return run_node(g, node, [x[None]], "ref")[0]


@pytest.mark.parametrize("page", EXECUTOR_PAGES)
def test_executor_spec_examples(page):
    tables = example_tables(DOCS / f"{page}.md")
    assert tables, f"{page}.md has no examples table"
    n = 0
    for header, rows in tables:
        cols = header[1:-1]
        for row in rows:
            args = {c: parse_cell(v) for c, v in zip(cols, row[1:-1])}
            expected = parse_cell(row[-1])
            if page == "add":
                got = run_add_const(**args) if "value" in args else run_add(**args)
            else:
                got = run_movement(**args)
            assert np.asarray(got).tolist() == expected, f"{page}.md [{row[0]}]: got {np.asarray(got).tolist()}"
            n += 1
    assert n > 0
