"""The IR validator: structure, operand types, attributes, shapes, declared widths, accumulator headroom.

Headroom is proved, not sampled: from the declared value ranges of a node's inputs (and the actual
integer constants) it bounds the worst-case |accumulator| and requires it to fit the declared output
width (and every int64 intermediate to fit int64). A graph that could overflow is rejected.

Operand types are checked against what each op's kernels take (docs/ir.md, "Operand types"): e.g. a
``gemm`` input must be ``uint1..uint8`` because the kernels take uint8 codes, so no executor ever has to
narrow a value that might not fit.  ``validate_graph(g, deep=False)`` runs every check except those that
scan every constant value (declared widths of constants, the GEMM weight sums): ``run_graph`` runs it on
every call, so a graph built in memory without the validator is refused the same way.
"""

from __future__ import annotations

import math

import numpy as np

from repq_hw.errors import InputError
from repq_hw.ir.graph import MAX_ELEMENTS, Graph, IntType, Node
from repq_hw.ir.ops import ROUNDING_OPS, Op
from repq_hw.kernels.attn_v_shift import sqrt2_multiplier

ROUNDING_MODES = ("half_up", "half_even", "half_away", "floor")
INT64_MAX = (1 << 63) - 1
I32 = (-(1 << 31), (1 << 31) - 1)
I62 = (-(1 << 62), (1 << 62) - 1)


class IRValidationError(InputError):
    """A graph violates the IR rules; the message names the node, tensor or constant."""


def _fail(node: Node, msg: str) -> None:
    raise IRValidationError(f"node {node.name!r} ({node.op.value}): {msg}")


# op -> (number of inputs, {attribute: (min, max)}, required constant roles, optional constant roles)
_INT_ATTRS = {
    Op.GEMM: (1, {"a_zp": I32}, ("weight", "w_zp", "bias"), ()),
    Op.BMM_QK: (2, {"q_zp": I32, "k_zp": I32}, (), ()),
    Op.ATTN_V: (2, {"bits": (2, 8), "max_code": (0, 255), "shift_frac": (0, 62), "sqrt2_frac_bits": (1, 30),
                    "v_zp": I32}, (), ()),
    Op.REQUANT: (1, {"zero_point": I32}, ("multiplier", "shift"), ("offset",)),
    Op.LAYERNORM: (1, {"eps_q": (0, (1 << 62) - 1), "frac_bits": (0, 30), "zero_point": I32},
                   ("multiplier", "shift", "offset"), ()),
    Op.SOFTMAX: (1, {"multiplier": (0, (1 << 31) - 1), "shift": (0, 62), "frac_bits": (0, 12),
                     "lut_bits": (1, 30), "out_bits": (1, 31)}, ("lut",), ()),
    Op.LOG2_CODE: (1, {"bits": (2, 8)}, ("thresholds",), ()),
    Op.LUT: (1, {"in_min": I62}, ("table",), ()),
    Op.ADD: (2, {}, (), ()),
    Op.ADD_CONST: (1, {}, ("value",), ()),
    Op.PATCHIFY: (1, {"patch": (1, 1 << 16)}, (), ()),
    Op.CONCAT_TOKENS: (1, {}, ("rows",), ()),
    Op.SLICE: (1, {"start": (0, MAX_ELEMENTS), "stop": (0, MAX_ELEMENTS)}, (), ()),
    Op.SPLIT_HEADS: (1, {"heads": (1, 1 << 16)}, (), ()),
    Op.MERGE_HEADS: (1, {}, (), ()),
    Op.SELECT_TOKEN: (1, {"index": (0, MAX_ELEMENTS)}, (), ()),
    Op.AVG_POOL: (1, {}, (), ()),
    Op.WINDOW_PARTITION: (1, {"height": (1, 1 << 16), "width": (1, 1 << 16), "window": (1, 1 << 16),
                              "shift": (0, 1 << 16), "pad_value": I32}, (), ()),
    Op.WINDOW_REVERSE: (1, {"height": (1, 1 << 16), "width": (1, 1 << 16), "window": (1, 1 << 16),
                            "shift": (0, 1 << 16)}, (), ()),
    Op.PATCH_MERGE: (1, {"height": (1, 1 << 16), "width": (1, 1 << 16)}, (), ()),
}
# integer attributes an op may carry, with their default when absent
_OPTIONAL_INT_ATTRS = {
    Op.SPLIT_HEADS: {"windows": (1, 1 << 16)},
    Op.MERGE_HEADS: {"windows": (1, 1 << 16)},
}
# op -> number of axes of each input (per image)
_NDIM = {Op.GEMM: (2,), Op.BMM_QK: (3, 3), Op.ATTN_V: (3, 3), Op.LAYERNORM: (2,), Op.PATCHIFY: (3,),
         Op.CONCAT_TOKENS: (2,), Op.SPLIT_HEADS: (2,), Op.MERGE_HEADS: (3,), Op.SELECT_TOKEN: (2,),
         Op.AVG_POOL: (2,), Op.WINDOW_PARTITION: (2,), Op.WINDOW_REVERSE: (2,), Op.PATCH_MERGE: (2,)}


def absmax_centered(t: IntType, zp: int) -> int:
    """max |v - zp| over the declared range of t."""
    return max(abs(t.min - zp), abs(t.max - zp))


def absmax(t: IntType) -> int:
    return max(abs(t.min), abs(t.max))


def fits_int32(t: IntType) -> bool:
    return t.min >= I32[0] and t.max <= I32[1]


def is_codes(t: IntType) -> bool:
    """uint1..uint8: what the MAC and shift-add kernels take (uint8 codes)."""
    return not t.signed and t.bits <= 8


def _check_type(what: str, t: IntType) -> None:
    if not t.signed and t.bits == 64:
        raise IRValidationError(f"{what}: uint64 is not supported (no storage holds its range exactly; "
                                "use int64 or uint63)")
    if any(s < 1 for s in t.shape):
        raise IRValidationError(f"{what}: shape {list(t.shape)} has an empty axis")
    if math.prod(t.shape) > MAX_ELEMENTS:
        raise IRValidationError(f"{what}: shape {list(t.shape)} has more than {MAX_ELEMENTS} elements")


def _const_fits(g: Graph, name: str, deep: bool) -> None:
    t, a = g.const_types[name], g.constants[name]
    if not isinstance(a, np.ndarray) or a.dtype != t.storage:
        raise IRValidationError(f"constant {name!r}: dtype {getattr(a, 'dtype', type(a).__name__)}, expected "
                                f"{t.storage} (the storage of {t.name})")
    if tuple(a.shape) != t.shape:
        raise IRValidationError(f"constant {name!r}: shape {a.shape}, declared {t.shape}")
    if deep and a.size and (a.min() < t.min or a.max() > t.max):
        raise IRValidationError(f"constant {name!r}: values [{a.min()}, {a.max()}] outside declared {t.name}")


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
    if np.abs(off.astype(np.int64)).max() >= 1 << 62:
        _fail(node, "offset outside (-2^62, 2^62)")
    return int(np.abs(m.astype(np.int64)).max()), int(np.abs(off.astype(np.int64)).max())


def _check_signature(g: Graph, node: Node) -> None:
    """Arity, attribute presence/type/range, constant roles: everything later rules index into."""
    n_in, int_attrs, roles, optional = _INT_ATTRS[node.op]
    if len(node.inputs) != n_in:
        _fail(node, f"takes {n_in} input(s), got {len(node.inputs)}: {node.inputs}")
    if len(node.outputs) != 1:
        _fail(node, f"produces exactly 1 output, got {len(node.outputs)}: {node.outputs}")
    optional_attrs = _OPTIONAL_INT_ATTRS.get(node.op, {})
    for key, (lo, hi) in {**int_attrs, **optional_attrs}.items():
        if key not in node.attrs:
            if key in optional_attrs:
                continue
            _fail(node, f"missing attribute {key!r} (an integer in [{lo}, {hi}])")
        v = node.attrs[key]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            _fail(node, f"attribute {key!r} must be an integer in [{lo}, {hi}], got {type(v).__name__} {v!r}")
        if not lo <= int(v) <= hi:
            _fail(node, f"attribute {key!r} = {int(v)} outside [{lo}, {hi}]")
    if node.op in ROUNDING_OPS and (not isinstance(node.attrs.get("rounding"), str)
                                    or node.attrs.get("rounding") not in ROUNDING_MODES):
        _fail(node, f"rounding attribute must be one of {ROUNDING_MODES}, got {node.attrs.get('rounding')!r}")
    for role in roles:
        if role not in node.consts:
            _fail(node, f"missing constant role {role!r}")
    unknown = sorted(set(node.consts) - set(roles) - set(optional))
    if unknown:
        _fail(node, f"unknown constant role(s) {unknown} (this op takes {list(roles + optional)})")
    for role, c in node.consts.items():
        if c not in g.constants or c not in g.const_types:
            _fail(node, f"constant {c!r} ({role}) is missing")
    for t, want in zip(node.inputs, _NDIM.get(node.op, ())):
        got = len(g.tensors[t].type.shape)
        if got != want:
            _fail(node, f"input {t!r} must have {want} axes (per image), got {got}")
    if node.op == Op.SLICE and len(g.tensors[node.inputs[0]].type.shape) < 1:
        _fail(node, "input must have at least one axis")


def validate_graph(g: Graph, deep: bool = True) -> None:
    """Raise IRValidationError on the first violated rule.

    ``deep=False`` skips only the checks that scan every constant value (constants inside their declared
    widths, the GEMM weight-sum headroom bound); everything else is the same."""
    if not g.nodes:
        raise IRValidationError("the graph has no nodes")
    if not g.inputs or not g.outputs:
        raise IRValidationError(f"the graph needs at least one input and one output (inputs {g.inputs}, "
                                f"outputs {g.outputs})")
    for what, names in (("input", g.inputs), ("output", g.outputs)):
        if len(set(names)) != len(names):
            raise IRValidationError(f"graph {what}s name a tensor twice: {names}")
    for name, info in g.tensors.items():
        if info.name != name:
            raise IRValidationError(f"tensor {name!r} is declared under the name {info.name!r}")
        _check_type(f"tensor {name!r}", info.type)
    defined = set(g.inputs)
    for name in g.inputs:
        if name not in g.tensors:
            raise IRValidationError(f"graph input {name!r} is not a declared tensor")
    for name in g.constants:
        if name not in g.const_types:
            raise IRValidationError(f"constant {name!r} has no declared type")
    for name, t in g.const_types.items():
        if name not in g.constants:
            raise IRValidationError(f"constant {name!r} is declared but missing")
        _check_type(f"constant {name!r}", t)
        _const_fits(g, name, deep)
    seen_nodes = set()
    for node in g.nodes:
        if node.name in seen_nodes:
            _fail(node, "duplicate node name")
        seen_nodes.add(node.name)
        if not isinstance(node.op, Op):
            raise IRValidationError(f"node {node.name!r}: unknown op {node.op!r}")
        for t in node.inputs:
            if t not in defined:
                why = "is produced only later (nodes must be in execution order; a cycle cannot be)" \
                    if any(t in n.outputs for n in g.nodes) else "is never produced"
                _fail(node, f"input {t!r} {why}")
        for t in node.outputs:
            if t in defined:
                _fail(node, f"output {t!r} is produced twice")
            if t not in g.tensors:
                _fail(node, f"output {t!r} is not a declared tensor")
            defined.add(t)
        _check_signature(g, node)
        try:
            _check_node(g, node, deep)
        except IRValidationError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, OverflowError, ZeroDivisionError) as e:
            _fail(node, f"malformed node ({type(e).__name__}: {e})")
    for name in g.outputs:
        if name not in defined:
            raise IRValidationError(f"graph output {name!r} is never produced")


def _need(node: Node, ok: bool, what: str, t: IntType, want: str) -> None:
    if not ok:
        _fail(node, f"{what} is {t.name}, but its kernels take {want} (a wider type would be silently "
                    "narrowed)")


def _check_node(g: Graph, node: Node, deep: bool = True) -> None:
    ins = [g.tensors[t].type for t in node.inputs]
    out_info = g.tensors[node.outputs[0]]
    out = out_info.type
    ct = {role: g.const_types[c] for role, c in node.consts.items()}
    a = node.attrs
    op = node.op
    if op == Op.GEMM:
        (x,) = ins
        _need(node, is_codes(x), "input", x, "uint1..uint8 codes")
        _need(node, is_codes(ct["weight"]), "weight", ct["weight"], "uint1..uint8 codes")
        for role in ("w_zp", "bias"):
            _need(node, fits_int32(ct[role]), role, ct[role], "int32 values")
        _need(node, out.signed and out.bits <= 32, "output", out, "an int32 accumulator (int<=32)")
        w, wzp, bias = g.const(node, "weight"), g.const(node, "w_zp"), g.const(node, "bias")
        m, k = x.shape
        if w.ndim != 2:
            _fail(node, f"weight must be [N, K], got shape {w.shape}")
        n = w.shape[0]
        _expect_shape(node, "weight", w.shape, (n, k))
        _expect_shape(node, "w_zp", wzp.shape, (n,))
        _expect_shape(node, "bias", bias.shape, (n,))
        _expect_shape(node, "output", out.shape, (m, n))
        amax = absmax_centered(x, int(a["a_zp"]))
        # the kernels' own int64 guard (they assume any uint8 code): mirrored so that it cannot fire
        _fits64(node, k * (255 + abs(int(a["a_zp"]))) * (255 + absmax(ct["w_zp"])) + absmax(ct["bias"]),
                "K*(255+|a_zp|)*(255+max|w_zp|)+max|bias| (kernel int64 guard)")
        if deep:  # the proof scans the weights; without it the kernels' own run-time checks still raise
            per_row = np.abs(w.astype(np.int64) - wzp.astype(np.int64)[:, None]).sum(axis=1)
            _fits(node, int((per_row * amax + np.abs(bias.astype(np.int64))).max()), out)
    elif op == Op.BMM_QK:
        q, k = ins
        _need(node, is_codes(q), "first input (q)", q, "uint1..uint8 codes")
        _need(node, is_codes(k), "second input (k)", k, "uint1..uint8 codes")
        _need(node, out.signed and out.bits <= 32, "output", out, "an int32 accumulator (int<=32)")
        h, nq, d = q.shape
        _expect_shape(node, "k", k.shape[::2], (h, d))
        _expect_shape(node, "output", out.shape, (h, nq, k.shape[1]))
        bound = d * absmax_centered(q, int(a["q_zp"])) * absmax_centered(k, int(a["k_zp"]))
        _fits(node, bound, out)
        _fits64(node, d * (255 + abs(int(a["q_zp"]))) * (255 + abs(int(a["k_zp"]))),
                "d*(255+|q_zp|)*(255+|k_zp|) (kernel int64 guard)")
    elif op == Op.ATTN_V:
        c, v = ins
        h, n, n2 = c.shape
        _expect_shape(node, "v", v.shape[:2], (h, n2))
        _expect_shape(node, "output", out.shape, (h, n, v.shape[2]))
        if c.signed or c.bits != int(a["bits"]):
            _fail(node, f"codes must be uint{a['bits']}, got {c.name}")
        _need(node, is_codes(v), "second input (v)", v, "uint1..uint8 codes")
        f, qb = int(a["shift_frac"]), int(a["sqrt2_frac_bits"])
        max_code = int(a["max_code"])  # the largest non-zero-state code the producer can emit
        z = (1 << int(a["bits"])) - 1
        if max_code >= z:
            _fail(node, f"max_code {max_code} must be below the zero state {z}")
        producer = next((p for p in g.nodes if node.inputs[0] in p.outputs), None)
        if producer is not None and producer.op == Op.LOG2_CODE and "thresholds" in producer.consts:
            emits = g.const(producer, "thresholds").shape[0] - 1  # codes are counts < L, or the zero state
        else:
            emits = z - 1  # any code of the declared type
        if max_code < emits:
            _fail(node, f"max_code {max_code} is below the largest code {emits} its input can carry")
        if f < max_code // 2 + 1:
            _fail(node, f"shift_frac {f} truncates codes up to {max_code} (needs >= {max_code // 2 + 1})")
        vmax = absmax_centered(v, int(a["v_zp"]))
        v255 = max(abs(int(a["v_zp"])), abs(255 - int(a["v_zp"])))
        _fits64(node, n2 * v255 * (1 << f) * sqrt2_multiplier(qb), "N*V*2^F*R (kernel int64 guard)")
        # even terms <= vmax*2^F each; odd part accumulates <= n*vmax*2^(F-1), times R < 2^(Q+1)
        _fits64(node, n2 * vmax * (1 << max(f - 1, 0)) * (1 << (qb + 1)), "odd-code accumulator x sqrt2")
        _fits(node, n2 * vmax * (1 << f), out)
    elif op == Op.REQUANT:
        (x,) = ins
        _need(node, fits_int32(out), "output", out, "int32 values (saturation bounds are int32)")
        _expect_shape(node, "output", out.shape, x.shape)
        mmax, offmax = _requant_consts(g, node, x.shape[-1] if x.shape else 1)
        _fits64(node, absmax(x) * mmax + offmax, "acc * multiplier + offset")
    elif op == Op.LAYERNORM:
        (x,) = ins
        _need(node, fits_int32(x), "input", x, "int32 values")
        _need(node, fits_int32(out), "output", out, "int32 values (saturation bounds are int32)")
        c = x.shape[1]
        _expect_shape(node, "output", out.shape, x.shape)
        mmax, offmax = _requant_consts(g, node, c)
        f = int(a["frac_bits"])
        xm = absmax(x)
        if c * xm >= 1 << 31:
            _fail(node, f"C * max|x| = {c * xm} does not fit int32 (LayerNorm headroom H1)")
        if c * c * xm * xm + int(a["eps_q"]) >= 1 << 62:
            _fail(node, "worst-case C*sum(x^2) + eps_q reaches 2^62 (LayerNorm headroom H2)")
        _fits64(node, 2 * c * xm * (1 << f), "(C*x - sum x) * 2^F")
        norm_bound = (math.isqrt(c) + 1) << f  # |x - mean| / sigma <= sqrt(C - 1)
        if norm_bound > I32[1]:
            _fail(node, f"normalised values up to (isqrt(C)+1)*2^F = {norm_bound} do not fit int32")
        _fits64(node, norm_bound * mmax + offmax, "norm * multiplier + offset")
    elif op == Op.SOFTMAX:
        (x,) = ins
        _need(node, fits_int32(x), "input", x, "int32 values")
        _expect_shape(node, "output", out.shape, x.shape)
        lut = g.const(node, "lut")
        if lut.shape != (1 << int(a["frac_bits"]),):
            _fail(node, f"lut must have 2^frac_bits = {1 << int(a['frac_bits'])} entries, got {lut.shape}")
        if int(a["lut_bits"]) + int(a["out_bits"]) > 62:
            _fail(node, "lut_bits + out_bits must be <= 62")
        # the executors rebuild the table from (frac_bits, lut_bits); the stored copy is what an RTL ROM
        # loads, so it must be exactly that table (a tampered ROM image must not pass unnoticed)
        from repq_hw.kernels.softmax import exp2_lut

        if not np.array_equal(np.asarray(lut, dtype=np.int64),
                              exp2_lut(int(a["frac_bits"]), int(a["lut_bits"])).astype(np.int64)):
            _fail(node, "constant 'lut' differs from exp2_lut(frac_bits, lut_bits) (docs/ops/softmax.md)")
        _fits64(node, 2 * absmax(x) * int(a["multiplier"]), "(x - max) * multiplier")
        if out.max < 1 << int(a["out_bits"]):
            _fail(node, f"output {out.name} cannot hold 2^out_bits = {1 << int(a['out_bits'])}")
    elif op == Op.LOG2_CODE:
        (p,) = ins
        th = g.const(node, "thresholds")
        if th.ndim != 1:
            _fail(node, f"thresholds must be a vector, got shape {th.shape}")
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
        if table.ndim != 1 or table.size == 0:
            _fail(node, f"table must be a non-empty vector, got shape {table.shape}")
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
        _fits64(node, absmax(x) + absmax(y), "x + y")
    elif op == Op.ADD_CONST:
        (x,) = ins
        vs = g.const(node, "value").shape
        if len(vs) != len(x.shape) or vs[1:] != x.shape[1:] or vs[0] < 1 or x.shape[0] % vs[0]:
            _fail(node, f"value of shape {vs} does not tile input {x.shape} along axis 0 (needs [V0, "
                        f"{', '.join(map(str, x.shape[1:]))}] with V0 dividing {x.shape[0]})")
        _expect_shape(node, "output", out.shape, x.shape)
        _fits64(node, absmax(x) + absmax(ct["value"]), "x + value")
    elif op == Op.AVG_POOL:
        (x,) = ins
        _need(node, fits_int32(x), "input", x, "int32 values")
        _expect_shape(node, "output", out.shape, (1, x.shape[1]))
        _fits64(node, x.shape[0] * absmax(x), "sum over the tokens")
        if out.min > x.min or out.max < x.max:  # the mean lies in [min x, max x]
            _fail(node, f"output {out.name} cannot hold every mean of {x.name}")
    elif op in (Op.WINDOW_PARTITION, Op.WINDOW_REVERSE):
        (x,) = ins
        hh, ww, w, sh = (int(a[k]) for k in ("height", "width", "window", "shift"))
        if sh >= w or sh >= min(hh, ww) and sh:
            _fail(node, f"shift {sh} must be below the window {w} and the grid {hh}x{ww}")
        hp, wp = -(-hh // w) * w, -(-ww // w) * w
        grid, wins = (hh * ww, x.shape[1]), (hp * wp, x.shape[1])
        if op == Op.WINDOW_PARTITION:
            _expect_shape(node, "input", x.shape, grid)
            _expect_shape(node, "output", out.shape, wins)
            if not x.min <= int(a["pad_value"]) <= x.max:
                _fail(node, f"pad_value {a['pad_value']} outside {x.name}")
        else:
            _expect_shape(node, "input", x.shape, wins)
            _expect_shape(node, "output", out.shape, grid)
    elif op == Op.PATCH_MERGE:
        (x,) = ins
        hh, ww = int(a["height"]), int(a["width"])
        _expect_shape(node, "input", x.shape, (hh * ww, x.shape[1]))
        _expect_shape(node, "output", out.shape, (-(-hh // 2) * -(-ww // 2), 4 * x.shape[1]))
        if (hh % 2 or ww % 2) and not x.min <= 0 <= x.max:
            _fail(node, f"an odd grid is padded with 0, which {x.name} cannot hold")
    elif op == Op.PATCHIFY:
        (x,) = ins
        ch, hh, ww = x.shape
        p = int(a["patch"])
        if hh % p or ww % p:
            _fail(node, f"image {hh}x{ww} is not divisible by the patch {p}")
        _expect_shape(node, "output", out.shape, ((hh // p) * (ww // p), ch * p * p))
    elif op == Op.CONCAT_TOKENS:
        (x,) = ins
        rows, rt = g.const(node, "rows"), ct["rows"]
        if rows.ndim != 2 or rows.shape[1] != x.shape[1]:
            _fail(node, f"rows must be [k, {x.shape[1]}], got shape {rows.shape}")
        if rt.min < x.min or rt.max > x.max:
            _fail(node, f"rows are {rt.name}, which the input type {x.name} cannot hold")
        _expect_shape(node, "output", out.shape, (x.shape[0] + rows.shape[0], x.shape[1]))
    elif op == Op.SLICE:
        (x,) = ins
        start, stop = int(a["start"]), int(a["stop"])
        if not 0 <= start < stop <= x.shape[-1]:
            _fail(node, f"slice [{start}:{stop}] outside last axis of size {x.shape[-1]}")
        _expect_shape(node, "output", out.shape, (*x.shape[:-1], stop - start))
    elif op == Op.SPLIT_HEADS:
        (x,) = ins
        h, w = int(a["heads"]), int(a.get("windows", 1))
        n, c = x.shape
        if c % h:
            _fail(node, f"{c} channels do not split into {h} heads")
        if n % w:
            _fail(node, f"{n} tokens do not split into {w} windows")
        _expect_shape(node, "output", out.shape, (w * h, n // w, c // h))
    elif op == Op.MERGE_HEADS:
        (x,) = ins
        w = int(a.get("windows", 1))
        gh, n, d = x.shape
        if gh % w:
            _fail(node, f"{gh} window-heads do not split into {w} windows")
        _expect_shape(node, "output", out.shape, (w * n, (gh // w) * d))
    elif op == Op.SELECT_TOKEN:
        (x,) = ins
        if not 0 <= int(a["index"]) < x.shape[0]:
            _fail(node, f"token index {a['index']} outside {x.shape[0]} tokens")
        _expect_shape(node, "output", out.shape, (1, x.shape[1]))
    else:  # pragma: no cover - the op enum is closed
        _fail(node, "no validation rule")
    data_movement = (Op.SLICE, Op.SPLIT_HEADS, Op.MERGE_HEADS, Op.SELECT_TOKEN, Op.PATCHIFY, Op.CONCAT_TOKENS,
                     Op.WINDOW_PARTITION, Op.WINDOW_REVERSE, Op.PATCH_MERGE)
    if op in data_movement and ins[0].name != out.name:
        _fail(node, f"data movement must keep the type: {ins[0].name} -> {out.name}")
