"""The IR validator: structure, shapes, declared widths, attribute ranges, and accumulator headroom.

Headroom is proved, not sampled: from the declared value ranges of a node's inputs (and the actual
integer constants) it bounds the worst-case |accumulator| and requires it to fit the declared output
width (and every int64 intermediate to fit int64). A graph that could overflow is rejected.
"""

from __future__ import annotations

import math

import numpy as np

from repq_hw.ir.graph import Graph, IntType, Node
from repq_hw.ir.ops import ROUNDING_OPS, Op
from repq_hw.errors import InputError

ROUNDING_MODES = ("half_up", "half_even", "half_away", "floor")
INT64_MAX = (1 << 63) - 1


class IRValidationError(InputError):
    """A graph violates the IR rules; the message names the node, tensor or constant."""


def _fail(node: Node, msg: str) -> None:
    raise IRValidationError(f"node {node.name!r} ({node.op.value}): {msg}")


def absmax_centered(t: IntType, zp: int) -> int:
    """max |v - zp| over the declared range of t."""
    return max(abs(t.min - zp), abs(t.max - zp))


def absmax(t: IntType) -> int:
    return max(abs(t.min), abs(t.max))


def _const_fits(g: Graph, name: str) -> None:
    t, a = g.const_types[name], g.constants[name]
    if a.size and (a.min() < t.min or a.max() > t.max):
        raise IRValidationError(f"constant {name!r}: values [{a.min()}, {a.max()}] outside declared {t.name}")
    if tuple(a.shape) != t.shape:
        raise IRValidationError(f"constant {name!r}: shape {a.shape}, declared {t.shape}")


def _expect_shape(node: Node, what: str, got, want) -> None:
    if tuple(got) != tuple(want):
        _fail(node, f"{what} has shape {tuple(got)}, expected {tuple(want)}")


def _fits(node: Node, bound: int, out: IntType, what: str = "accumulator") -> None:
    if bound > out.max or -bound < out.min:
        _fail(node, f"worst-case |{what}| = {bound} (2^{math.log2(max(bound, 1)):.2f}) does not fit the "
                    f"declared output {out.name} (max {out.max})")


def _fits64(node: Node, bound: int, what: str) -> None:
    if bound > INT64_MAX:
        _fail(node, f"worst-case |{what}| = 2^{math.log2(bound):.2f} overflows int64")


def _requant_consts(g: Graph, node: Node, channels: int) -> tuple[int, int]:
    """Check multiplier/shift/offset ranges; return (max multiplier, max |offset|)."""
    m, s = g.const(node, "multiplier"), g.const(node, "shift")
    off = g.const(node, "offset") if "offset" in node.consts else np.zeros(1, np.int64)
    for what, a in (("multiplier", m), ("shift", s), ("offset", off)):
        if a.ndim != 1 or a.shape[0] not in (1, channels):
            _fail(node, f"{what} must have shape [1] or [{channels}], got {a.shape}")
    if m.min() <= -(1 << 31) or m.max() >= 1 << 31:
        _fail(node, f"multiplier outside (-2^31, 2^31): [{m.min()}, {m.max()}]")
    if s.min() < 0 or s.max() > 62:
        _fail(node, f"shift outside [0, 62]: [{s.min()}, {s.max()}]")
    return int(np.abs(m.astype(np.int64)).max()), int(np.abs(off.astype(np.int64)).max())


def validate_graph(g: Graph) -> None:
    """Raise IRValidationError on the first violated rule."""
    defined = set(g.inputs)
    for name in g.inputs:
        if name not in g.tensors:
            raise IRValidationError(f"graph input {name!r} is not a declared tensor")
    for name in g.const_types:
        _const_fits(g, name)
    seen_nodes = set()
    for node in g.nodes:
        if node.name in seen_nodes:
            _fail(node, "duplicate node name")
        seen_nodes.add(node.name)
        for t in node.inputs:
            if t not in defined:
                _fail(node, f"input {t!r} is not produced before this node")
        for role, c in node.consts.items():
            if c not in g.constants:
                _fail(node, f"constant {c!r} ({role}) is missing")
        for t in node.outputs:
            if t in defined:
                _fail(node, f"output {t!r} is produced twice")
            if t not in g.tensors:
                _fail(node, f"output {t!r} is not a declared tensor")
            defined.add(t)
        if node.op in ROUNDING_OPS and node.attrs.get("rounding") not in ROUNDING_MODES:
            _fail(node, f"rounding attribute must be one of {ROUNDING_MODES}, got {node.attrs.get('rounding')!r}")
        _check_node(g, node)
    for name in g.outputs:
        if name not in defined:
            raise IRValidationError(f"graph output {name!r} is never produced")


def _check_node(g: Graph, node: Node) -> None:  # noqa: C901 - one branch per op, on purpose
    ins = [g.tensors[t].type for t in node.inputs]
    out_info = g.tensors[node.outputs[0]]
    out = out_info.type
    a = node.attrs
    op = node.op
    if op == Op.GEMM:
        (x,) = ins
        w, wzp, bias = g.const(node, "weight"), g.const(node, "w_zp"), g.const(node, "bias")
        m, k = x.shape
        n = w.shape[0]
        _expect_shape(node, "weight", w.shape, (n, k))
        _expect_shape(node, "w_zp", wzp.shape, (n,))
        _expect_shape(node, "bias", bias.shape, (n,))
        _expect_shape(node, "output", out.shape, (m, n))
        amax = absmax_centered(x, int(a["a_zp"]))
        per_row = np.abs(w.astype(np.int64) - wzp.astype(np.int64)[:, None]).sum(axis=1)
        bound = int((per_row * amax + np.abs(bias.astype(np.int64))).max())
        _fits(node, bound, out)
    elif op == Op.BMM_QK:
        q, k = ins
        h, nq, d = q.shape
        _expect_shape(node, "k", k.shape[::2], (h, d))
        _expect_shape(node, "output", out.shape, (h, nq, k.shape[1]))
        bound = d * absmax_centered(q, int(a["q_zp"])) * absmax_centered(k, int(a["k_zp"]))
        _fits(node, bound, out)
    elif op == Op.ATTN_V:
        c, v = ins
        h, n, n2 = c.shape
        _expect_shape(node, "v", v.shape[:2], (h, n2))
        _expect_shape(node, "output", out.shape, (h, n, v.shape[2]))
        if c.signed or c.bits != int(a["bits"]):
            _fail(node, f"codes must be uint{a['bits']}, got {c.name}")
        f, qb = int(a["shift_frac"]), int(a["sqrt2_frac_bits"])
        max_code = int(a["max_code"])  # the largest non-zero-state code the producer can emit
        if f < max_code // 2 + 1:
            _fail(node, f"shift_frac {f} truncates codes up to {max_code} (needs >= {max_code // 2 + 1})")
        vmax = absmax_centered(v, int(a["v_zp"]))
        # even terms <= vmax*2^F each; odd part accumulates <= n*vmax*2^(F-1), times R < 2^(Q+1)
        _fits64(node, n2 * vmax * (1 << (f - 1)) * (1 << (qb + 1)), "odd-code accumulator x sqrt2")
        _fits(node, n2 * vmax * (1 << f), out)
    elif op == Op.REQUANT:
        (x,) = ins
        _expect_shape(node, "output", out.shape, x.shape)
        mmax, offmax = _requant_consts(g, node, x.shape[-1])
        _fits64(node, absmax(x) * mmax + offmax, "acc * multiplier + offset")
    elif op == Op.LAYERNORM:
        (x,) = ins
        t, c = x.shape
        _expect_shape(node, "output", out.shape, x.shape)
        mmax, offmax = _requant_consts(g, node, c)
        f = int(a["frac_bits"])
        xm = absmax(x)
        _fits64(node, c * c * xm * xm + int(a["eps_q"]), "C*sum(x^2) + eps_q")
        _fits64(node, 2 * c * xm * (1 << f), "(C*x - sum x) * 2^F")
        norm_bound = (math.isqrt(c) + 1) << f  # |x - mean| / sigma <= sqrt(C - 1)
        _fits64(node, norm_bound * mmax + offmax, "norm * multiplier + offset")
    elif op == Op.SOFTMAX:
        (x,) = ins
        _expect_shape(node, "output", out.shape, x.shape)
        lut = g.const(node, "lut")
        if lut.shape != (1 << int(a["frac_bits"]),):
            _fail(node, f"lut must have 2^frac_bits = {1 << int(a['frac_bits'])} entries, got {lut.shape}")
        _fits64(node, 2 * absmax(x) * int(a["multiplier"]), "(x - max) * multiplier")
        if out.max < 1 << int(a["out_bits"]):
            _fail(node, f"output {out.name} cannot hold 2^out_bits = {1 << int(a['out_bits'])}")
    elif op == Op.LOG2_CODE:
        (p,) = ins
        th = g.const(node, "thresholds")
        if th.size > 1 and np.any(np.diff(th.astype(np.int64)) > 0):
            _fail(node, "thresholds must be non-increasing")
        if th.size > (1 << int(a["bits"])) - 1:
            _fail(node, f"at most 2^bits - 1 thresholds, got {th.size}")
        if out.signed or out.bits != int(a["bits"]):
            _fail(node, f"output must be uint{a['bits']}, got {out.name}")
        _expect_shape(node, "output", out.shape, p.shape)
    elif op == Op.LUT:
        (x,) = ins
        table = g.const(node, "table")
        lo = int(a["in_min"])
        if lo > x.min or lo + table.shape[0] - 1 < x.max:
            _fail(node, f"table covers [{lo}, {lo + table.shape[0] - 1}], input {x.name} spans "
                        f"[{x.min}, {x.max}]")
        if table.min() < out.min or table.max() > out.max:
            _fail(node, f"table values outside output {out.name}")
        _expect_shape(node, "output", out.shape, x.shape)
    elif op == Op.ADD:
        x, y = ins
        _expect_shape(node, "second input", y.shape, x.shape)
        _expect_shape(node, "output", out.shape, x.shape)
    elif op == Op.ADD_CONST:
        (x,) = ins
        _expect_shape(node, "value", g.const(node, "value").shape, x.shape)
        _expect_shape(node, "output", out.shape, x.shape)
    elif op == Op.PATCHIFY:
        (x,) = ins
        ch, hh, ww = x.shape
        p = int(a["patch"])
        if hh % p or ww % p:
            _fail(node, f"image {hh}x{ww} is not divisible by the patch {p}")
        _expect_shape(node, "output", out.shape, ((hh // p) * (ww // p), ch * p * p))
    elif op == Op.CONCAT_TOKENS:
        (x,) = ins
        rows = g.const(node, "rows")
        _expect_shape(node, "output", out.shape, (x.shape[0] + rows.shape[0], x.shape[1]))
    elif op == Op.SLICE:
        (x,) = ins
        start, stop = int(a["start"]), int(a["stop"])
        if not 0 <= start < stop <= x.shape[-1]:
            _fail(node, f"slice [{start}:{stop}] outside last axis of size {x.shape[-1]}")
        _expect_shape(node, "output", out.shape, (*x.shape[:-1], stop - start))
    elif op == Op.SPLIT_HEADS:
        (x,) = ins
        h = int(a["heads"])
        n, c = x.shape
        if c % h:
            _fail(node, f"{c} channels do not split into {h} heads")
        _expect_shape(node, "output", out.shape, (h, n, c // h))
    elif op == Op.MERGE_HEADS:
        (x,) = ins
        h, n, d = x.shape
        _expect_shape(node, "output", out.shape, (n, h * d))
    elif op == Op.SELECT_TOKEN:
        (x,) = ins
        if not 0 <= int(a["index"]) < x.shape[0]:
            _fail(node, f"token index {a['index']} outside {x.shape[0]} tokens")
        _expect_shape(node, "output", out.shape, (1, x.shape[1]))
    else:  # pragma: no cover - the op enum is closed
        _fail(node, "no validation rule")
    if op in (Op.SLICE, Op.SPLIT_HEADS, Op.MERGE_HEADS, Op.SELECT_TOKEN, Op.PATCHIFY, Op.CONCAT_TOKENS):
        if ins[0].name != out.name:
            _fail(node, f"data movement must keep the type: {ins[0].name} -> {out.name}")
