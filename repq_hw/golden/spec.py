"""Static facts the golden writer records per op: the spec page, the operand role names, derived
parameters an RTL engineer needs besides the IR attributes. numpy only."""

from __future__ import annotations

from repq_hw.ir.graph import Graph, Node
from repq_hw.ir.ops import Op

SPEC_PAGES: dict[Op, list[str]] = {
    Op.GEMM: ["docs/ops/gemm_zp.md", "docs/arith.md"],
    Op.BMM_QK: ["docs/ops/gemm_zp.md", "docs/arith.md"],
    Op.ATTN_V: ["docs/ops/attn_v_shift.md"],
    Op.REQUANT: ["docs/ops/requantize.md", "docs/arith.md"],
    Op.LAYERNORM: ["docs/ops/layernorm.md", "docs/ops/isqrt.md", "docs/ops/requantize.md"],
    Op.SOFTMAX: ["docs/ops/softmax.md"],
    Op.LOG2_CODE: ["docs/ops/log2_code.md"],
    Op.LUT: ["docs/ops/lut.md"],
    Op.ADD: ["docs/ops/add.md"],
    Op.ADD_CONST: ["docs/ops/add.md"],
    Op.AVG_POOL: ["docs/ops/avg_pool.md", "docs/ops/requantize.md"],
}
"""Op -> the pages that specify it bit-exactly (every other op is data movement: docs/ops/data_movement.md)."""

INPUT_ROLES: dict[Op, tuple[str, ...]] = {
    Op.GEMM: ("a",),
    Op.BMM_QK: ("q", "k"),
    Op.ATTN_V: ("codes", "v"),
    Op.ADD: ("a", "b"),
}
"""Names of the operand roles; every op not listed has one input named ``x``."""


def spec_pages(op: Op) -> list[str]:
    return list(SPEC_PAGES.get(op, ["docs/ops/data_movement.md"]))


def input_roles(node: Node) -> list[str]:
    roles = INPUT_ROLES.get(node.op)
    if roles is None:
        return ["x"] if len(node.inputs) == 1 else [f"x{i}" for i in range(len(node.inputs))]
    if len(roles) != len(node.inputs):
        raise ValueError(f"node {node.name!r}: {len(node.inputs)} inputs, expected roles {roles}")
    return list(roles)


def derived_params(g: Graph, node: Node) -> dict:
    """Parameters implied by the IR (not attributes) that the hardware needs: output range, sizes,
    the sqrt(2) constant, the zero state. Every value is an integer computed by the kernels' own
    functions, never re-derived elsewhere."""
    out_t = g.tensors[node.outputs[0]].type
    in_shapes = [g.tensors[t].type.shape for t in node.inputs]
    d: dict = {"out_min": out_t.min, "out_max": out_t.max}
    op = node.op
    if op == Op.GEMM:
        w = g.const(node, "weight")
        d.update({"M": int(in_shapes[0][0]), "K": int(in_shapes[0][1]), "N": int(w.shape[0])})
    elif op == Op.BMM_QK:
        h, m, k = in_shapes[0]
        d.update({"batch_heads": int(h), "M": int(m), "K": int(k), "N": int(in_shapes[1][1])})
    elif op == Op.ATTN_V:
        from repq_hw.kernels import sqrt2_multiplier, zero_state

        h, m, n = in_shapes[0]
        d.update({"batch_heads": int(h), "M": int(m), "N": int(n), "D": int(in_shapes[1][2]),
                  "sqrt2_multiplier": int(sqrt2_multiplier(int(node.attrs["sqrt2_frac_bits"]))),
                  "zero_state": int(zero_state(int(node.attrs["bits"])))})
    elif op == Op.SOFTMAX:
        d.update({"rows": int(_prod(in_shapes[0][:-1])), "N": int(in_shapes[0][-1]),
                  "lut_entries": 1 << int(node.attrs["frac_bits"])})
    elif op == Op.LAYERNORM:
        d.update({"T": int(in_shapes[0][0]), "C": int(in_shapes[0][1])})
    elif op == Op.REQUANT:
        d.update({"channels": int(in_shapes[0][-1])})
    elif op == Op.LOG2_CODE:
        from repq_hw.kernels import zero_state

        d.update({"levels": int(g.const(node, "thresholds").shape[0]),
                  "zero_state": int(zero_state(int(node.attrs["bits"])))})
    elif op == Op.LUT:
        d.update({"entries": int(g.const(node, "table").shape[0])})
    return d


def _prod(xs) -> int:
    p = 1
    for x in xs:
        p *= int(x)
    return p
