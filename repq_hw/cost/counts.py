"""Operation and memory counts of an integer IR graph, one rule per op (docs/cost_model.md, "Counting
rules"; every rule follows the algorithm of the op's spec page in docs/ops/).

Counts are per image. Keys:

* ``op_mac_A_B``: multiplies of MACs with operand types A x B (e.g. ``op_mac_UINT4_UINT4``); the
  accumulate half of each MAC is ``op_acc_T`` (T = accumulator width);
* ``op_mul_A_B``: stand-alone multiplies (requantization, zero-point corrections, squares);
* ``op_add_T``, ``op_cmp_T``: adds/subtracts/increments and comparisons of width T;
* ``op_shift_T``: variable (barrel) shifts of a T-bit value; constant shifts are wiring and not counted;
* ``op_divstep_T``, ``op_sqrtstep_T``: restoring division / square-root iterations on a T-bit remainder;
* ``op_lut_T_E``: reads of a table of E entries of type T;
* memory: ``mem_w_T`` (weight bytes, packed at their width), ``mem_param_T`` (other constants),
  ``mem_act_read_T`` / ``mem_act_write_T`` (activation bytes read / written by the op),
  ``mem_act_peak`` (largest live activation set, bytes);
* ``mac_equiv``: GEMM and q·kᵀ MACs plus attention·V shift-adds (each replaces one MAC);
  ``shift_adds``: attention·V shift-add elements.

The same graph can be counted as a float model (``numerics="fp32"`` or ``"fp16"``): float MACs and adds in
place of the integer datapath, requantization and log2 coding vanish (identity), and every activation and
parameter is stored at the float width. Nothing here imports torch.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field

from repq_hw.ir.graph import Graph, IntType, Node
from repq_hw.ir.ops import DATA_MOVEMENT_OPS, Op

NUMERICS = ("int", "fp32", "fp16")
ESTIMATE_NOTE = ("analytical estimate from IR op counts and a technology table (repq_hw.cost, "
                 "docs/cost_model.md); not a measurement or a synthesis result")

# Register widths of per-channel parameter words, from the spec pages (docs/ops/*.md): gemm_zp bias and
# w_zp are int32, requantize multiplier int32, shift in [0, 62] (one byte), offset int64.
PARAM_WORD_BITS = {"bias": 32, "w_zp": 32, "multiplier": 32, "shift": 8, "offset": 64}

# Fixed-function tables that depend only on attributes (softmax's exp2 table is a pure function of F and
# E): a ROM inside the unit, read per use (op_lut_*) but never fetched from memory.
ROM_CONSTS = frozenset({(Op.SOFTMAX, "lut")})

# Float special functions, as (multiplies, adds) per evaluation (docs/cost_model.md, "Float models").
FLOAT_FUNCTIONS = {
    "exp": (6, 6),  # x*log2(e), degree-5 polynomial for 2^frac (Horner), exponent add
    "recip": (4, 2),  # seed from a small table, 2 Newton-Raphson steps x (2 mul + 1 add)
    "rsqrt": (6, 2),  # seed, 2 Newton-Raphson steps x (3 mul + 1 add)
    "gelu": (11, 9),  # x/2*(1 + erf(x/sqrt 2)), erf by a degree-7 odd polynomial plus clamping
}

_BLOCK = re.compile(r"^((?:layers\.\d+\.)?blocks\.\d+)\.")


def clog2(n: int) -> int:
    """ceil(log2(n)) for n >= 1."""
    return (int(n) - 1).bit_length()


def U(bits: int) -> str:
    return f"UINT{bits}"


def S(bits: int) -> str:
    return f"INT{bits}"


def tname(t: IntType) -> str:
    return t.name.upper()


def _numel(shape) -> int:
    return int(math.prod(shape)) if shape else 1


@dataclass
class NodeCost:
    """Counts of one node, per image."""

    name: str
    op: str
    layer: str
    counts: Counter = field(default_factory=Counter)  # op_* keys
    act_read: Counter = field(default_factory=Counter)  # element type -> bytes
    act_write: Counter = field(default_factory=Counter)
    weights: Counter = field(default_factory=Counter)  # type -> bytes
    params: Counter = field(default_factory=Counter)
    mac_equiv: int = 0
    shift_adds: int = 0
    reads: list = field(default_factory=list)  # (buffer, bytes) for the memory model
    writes: list = field(default_factory=list)

    @property
    def weight_bytes(self) -> float:
        return float(sum(self.weights.values()) + sum(self.params.values()))

    def flat(self) -> dict:
        d = {k: v for k, v in sorted(self.counts.items()) if v}
        for prefix, c in (("mem_w_", self.weights), ("mem_param_", self.params),
                          ("mem_act_read_", self.act_read), ("mem_act_write_", self.act_write)):
            d.update({prefix + k: v for k, v in sorted(c.items()) if v})
        d["mac_equiv"] = self.mac_equiv
        d["shift_adds"] = self.shift_adds
        d["macs"] = sum(v for k, v in self.counts.items() if k.startswith("op_mac_"))
        return d


@dataclass
class GraphCounts:
    """Counts of every node plus the activation buffers (views resolved to their storage)."""

    label: str
    numerics: str
    nodes: list[NodeCost]
    buffer_bytes: dict[str, float]  # storage buffer -> bytes
    buffer_start: dict[str, int]  # index of the producing node (graph inputs: 0)
    buffer_end: dict[str, int]  # index of the last reading node (graph outputs: last node)
    input_buffers: list[str]
    output_buffers: list[str]
    meta: dict = field(default_factory=dict)

    def live_bytes(self) -> list[float]:
        """Bytes of live activation buffers while each node runs (its inputs and its output included)."""
        live = [0.0] * len(self.nodes)
        for b, size in self.buffer_bytes.items():
            for i in range(self.buffer_start[b], self.buffer_end[b] + 1):
                live[i] += size
        return live

    @property
    def peak_bytes(self) -> float:
        return max(self.live_bytes(), default=0.0)

    def layers(self) -> list[str]:
        return list(dict.fromkeys(n.layer for n in self.nodes))

    def totals(self) -> dict:
        return _sum_flat([n.flat() for n in self.nodes]) | {"mem_act_peak": self.peak_bytes}

    def per_layer(self) -> dict[str, dict]:
        live = self.live_bytes()
        out: dict[str, list] = {}
        for n in self.nodes:
            out.setdefault(n.layer, []).append(n.flat())
        res = {k: _sum_flat(v) for k, v in out.items()}
        for k, d in res.items():
            d["mem_act_peak"] = max(live[i] for i, n in enumerate(self.nodes) if n.layer == k)
        return res

    def per_op_type(self) -> dict[str, dict]:
        out: dict[str, list] = {}
        for n in self.nodes:
            out.setdefault(n.op, []).append(n.flat())
        return {k: _sum_flat(v) for k, v in out.items()}


def _sum_flat(rows: list[dict]) -> dict:
    tot: Counter = Counter()
    for r in rows:
        tot.update(r)
    return dict(sorted(tot.items()))


def layer_of(names: list[str]) -> list[str]:
    """Layer (block) of each node in execution order: ``blocks.i`` for block nodes, ``embed`` before the
    first block, ``head`` after the last one (``model`` if the graph has no blocks)."""
    blocks = [m.group(1) if (m := _BLOCK.match(n)) else None for n in names]
    idx = [i for i, b in enumerate(blocks) if b]
    if not idx:
        return ["model"] * len(names)
    first, last = idx[0], idx[-1]

    def other(i: int, name: str) -> str:
        if i < first:
            return "embed"
        return "head" if i > last else name.rsplit(".", 1)[0]  # between blocks, e.g. a patch merging

    return [b if b else other(i, n) for i, (b, n) in enumerate(zip(blocks, names))]


# ---------------------------------------------------------------------------------------------------
# Integer rules (docs/cost_model.md "Counting rules"; the op's spec page in brackets)


class _Ctx:
    def __init__(self, g: Graph, node: Node, cost: NodeCost):
        self.g, self.node, self.c = g, node, cost

    def inp(self, i: int) -> IntType:
        return self.g.tensors[self.node.inputs[i]].type

    def out(self) -> IntType:
        return self.g.tensors[self.node.outputs[0]].type

    def ctype(self, role: str) -> IntType:
        return self.g.const_types[self.node.consts[role]]

    def add(self, key: str, n: int) -> None:
        if n:
            self.c.counts[key] += int(n)


def bmm_counts(ctx: _Ctx, batch: int, m: int, n: int, k: int, a: IntType | int, b: IntType | int,
               per_channel_zp: bool) -> None:
    """gemm_zp / bmm_zp (docs/ops/gemm_zp.md): raw unsigned code products, rowsum / colsum zero-point
    corrections, two int32 adds per output (modular int32 arithmetic is exact because the result fits)."""
    ab = a if isinstance(a, int) else a.bits
    bb = b if isinstance(b, int) else b.bits
    lk = clog2(k)
    ctx.add(f"op_mac_{U(ab)}_{U(bb)}", batch * m * n * k)
    ctx.add(f"op_acc_{U(min(32, ab + bb + lk))}", batch * m * n * k)
    ctx.add(f"op_add_{U(ab + lk)}", batch * m * (k - 1))  # rowsum[m] = sum_k a[m, k]
    if per_channel_zp:  # gemm: w_zp[n] * rowsum[m] per output; colsum/const are offline (constant weights)
        ctx.add(f"op_mul_{U(bb)}_{U(ab + lk)}", batch * m * n)
    else:  # bmm: b_zp * rowsum[m] per row; colsum[n] and a_zp * colsum[n] per column (data, not constant)
        ctx.add(f"op_mul_{U(bb)}_{U(ab + lk)}", batch * m)
        ctx.add(f"op_add_{U(bb + lk)}", batch * n * (k - 1))
        ctx.add(f"op_mul_{U(ab)}_{U(bb + lk)}", batch * n)
        ctx.add(f"op_add_{S(32)}", batch * n)
    ctx.add(f"op_add_{S(32)}", 2 * batch * m * n)  # dot - zp*rowsum + const
    ctx.c.mac_equiv += batch * m * n * k


def requant_counts(ctx: _Ctx, elements: int, in_bits: int, out: IntType, has_offset: bool) -> None:
    """requantize (docs/ops/requantize.md) per element: acc*M, + offset, rounding right shift by a
    per-channel amount (barrel shift + rounding increment), saturation (two compares), + zero point."""
    p = min(64, in_bits + 32)
    ctx.add(f"op_mul_{S(in_bits)}_{S(32)}", elements)
    if has_offset:
        ctx.add(f"op_add_{S(64)}", elements)
    ctx.add(f"op_shift_{S(p)}", elements)
    ctx.add(f"op_add_{S(p)}", elements)
    ctx.add(f"op_cmp_{S(p)}", 2 * elements)
    ctx.add(f"op_add_{tname(out)}", elements)


def _gemm(ctx: _Ctx) -> None:
    a, w = ctx.inp(0), ctx.ctype("weight")
    m, k = a.shape
    bmm_counts(ctx, 1, m, w.shape[0], k, a, w, per_channel_zp=True)


def _bmm_qk(ctx: _Ctx) -> None:
    q, k = ctx.inp(0), ctx.inp(1)
    h, m, d = q.shape
    bmm_counts(ctx, h, m, k.shape[1], d, q, k, per_channel_zp=False)


def attn_v_widths(n: int, a_bits: int, f: int) -> tuple[int, int]:
    """(even accumulator bits, odd accumulator bits) of attn_v_shift for N keys, a-bit values (worst-case
    |v - v_zp| <= 2^a - 1) and shift precision F (docs/ops/attn_v_shift.md, "Accumulator widths")."""
    nv = clog2(n * ((1 << a_bits) - 1))
    return 1 + nv + f, nv + f


def _attn_v(ctx: _Ctx) -> None:
    c, v = ctx.inp(0), ctx.inp(1)
    h, m, n = c.shape
    d = v.shape[2]
    f, q = int(ctx.node.attrs["shift_frac"]), int(ctx.node.attrs["sqrt2_frac_bits"])
    w_even, w_odd = attn_v_widths(n, v.bits, f)
    ctx.add(f"op_add_{S(v.bits + 1)}", h * n * d)  # dv = v - v_zp, once per value element
    ctx.add(f"op_cmp_{U(c.bits)}", h * m * n)  # c == Z (zero state), once per code
    ctx.add(f"op_shift_{S(v.bits + 1)}", h * m * n * d)  # dv << (F - j) or (F - j - 1)
    ctx.add(f"op_acc_{S(w_even)}", h * m * n * d)  # into the even or the odd accumulator
    ctx.add(f"op_mul_{S(w_odd)}_{U(q + 1)}", h * m * d)  # acc_odd * round(sqrt2 * 2^Q)
    ctx.add(f"op_add_{S(w_even)}", 2 * h * m * d)  # rounding increment of >> Q, acc_even + odd part
    ctx.c.mac_equiv += h * m * n * d
    ctx.c.shift_adds += h * m * n * d


def attn_v_as_mac(ctx: _Ctx) -> None:
    """The multiplier-based alternative of attention·V: b-bit uniform attention codes times v codes on a
    MAC array (the bmm_zp rule), for the shift-vs-multiplier comparison."""
    c, v = ctx.inp(0), ctx.inp(1)
    h, m, n = c.shape
    bmm_counts(ctx, h, m, v.shape[2], n, c, v, per_channel_zp=False)


def _requant(ctx: _Ctx) -> None:
    t = ctx.out()
    requant_counts(ctx, _numel(t.shape), ctx.inp(0).bits, t, "offset" in ctx.node.consts)


def layernorm_quotient_bits(c: int, frac_bits: int) -> int:
    """Magnitude bits of the normalised value: |norm| < 2*sqrt(C-1)*2^F + 1 (docs/ops/layernorm.md)."""
    return max(1, math.ceil(math.log2(2.0 * math.sqrt(max(c - 1, 1)) * 2.0**frac_bits + 1.0)))


def _layernorm(ctx: _Ctx) -> None:
    x = ctx.inp(0)
    t, c = x.shape
    r, f, cb = x.bits, int(ctx.node.attrs["frac_bits"]), c.bit_length()
    # statistics, per row (register widths of the spec: S 32, Q / C*Q / var 62, remainder 35 bits)
    ctx.add(f"op_add_{S(32)}", t * (c - 1))  # S = sum x
    ctx.add(f"op_mul_{S(r)}_{S(r)}", t * c)  # x^2
    ctx.add(f"op_add_{U(62)}", t * (c - 1))  # Q = sum x^2
    ctx.add(f"op_mul_{U(62)}_{U(cb)}", t)  # C*Q
    ctx.add(f"op_mul_{S(32)}_{S(32)}", t)  # S^2
    ctx.add(f"op_add_{U(62)}", 2 * t)  # var_n = C*Q - S^2 ; V = var_n + eps_q
    ctx.add(f"op_sqrtstep_{U(35)}", 32 * t)  # isqrt: 32 compare/subtract iterations
    # per element: d = C*x - S, norm = round_div(d*2^F, sigma) (restoring division, sign restored)
    qb = layernorm_quotient_bits(c, f)
    ctx.add(f"op_mul_{S(r)}_{U(cb)}", t * c)
    ctx.add(f"op_add_{S(33)}", t * c)
    ctx.add(f"op_divstep_{U(31)}", t * c * (qb + 1))  # qb quotient bits + 1 rounding comparison
    ctx.add(f"op_add_{S(32)}", t * c)  # conditional negate (sign of d)
    requant_counts(ctx, t * c, 32, ctx.out(), "offset" in ctx.node.consts)  # fused affine + quantizer


def _softmax(ctx: _Ctx) -> None:
    x = ctx.inp(0)
    n = x.shape[-1]
    rows = _numel(x.shape) // n
    at = ctx.node.attrs
    f, e, p = int(at["frac_bits"]), int(at["lut_bits"]), int(at["out_bits"])
    sb = e + 1 + clog2(n)
    ctx.add(f"op_cmp_{S(32)}", rows * (n - 1))  # row max
    ctx.add(f"op_add_{S(33)}", rows * n)  # x - m
    ctx.add(f"op_mul_{S(33)}_{S(32)}", rows * n)  # (x - m) * M
    ctx.add(f"op_add_{S(64)}", 2 * rows * n)  # rounding increment of >> s (constant shift), negate
    ctx.add(f"op_lut_{U(e + 1)}_{1 << f}", rows * n)  # exp2 table, indexed by the F fraction bits
    ctx.add(f"op_shift_{U(e + 1)}", rows * n)  # LUT >> n_j
    ctx.add(f"op_add_{U(e + 1)}", rows * n)  # its rounding increment
    ctx.add(f"op_add_{U(sb)}", rows * (n - 1))  # S = sum e
    ctx.add(f"op_divstep_{U(sb)}", rows * n * (p + 2))  # round_div(e*2^P, S): P+1 quotient bits + rounding


def _log2_code(ctx: _Ctx) -> None:
    p = ctx.inp(0)
    el = _numel(p.shape)
    big_l = ctx.ctype("thresholds").shape[0]
    cw = clog2(big_l + 1)
    ctx.add(f"op_cmp_{U(p.bits)}", el * big_l)  # threshold-counting unit: L comparators
    ctx.add(f"op_add_{U(cw)}", el * (big_l - 1))  # popcount of the L comparator outputs
    ctx.add(f"op_cmp_{U(cw)}", el)  # count == L -> zero state


def _lut(ctx: _Ctx) -> None:
    x, t = ctx.inp(0), ctx.ctype("table")
    el = _numel(x.shape)
    ctx.add(f"op_add_{S(x.bits)}", el)  # address x - in_min
    ctx.add(f"op_lut_{tname(ctx.out())}_{t.shape[0]}", el)


def _add(ctx: _Ctx) -> None:
    t = ctx.out()
    el = _numel(t.shape)
    ctx.add(f"op_add_{tname(t)}", el)
    ctx.add(f"op_cmp_{S(t.bits + 1)}", 2 * el)  # saturation


def _avg_pool(ctx: _Ctx) -> None:
    x = ctx.inp(0)
    t, c = x.shape
    sb = x.bits + clog2(t)
    ctx.add(f"op_add_{S(sb)}", (t - 1) * c)  # column sums
    ctx.add(f"op_divstep_{U(sb)}", c * (x.bits + 1))  # round_div(S, T): quotient bits of the input + rounding


INT_RULES = {Op.GEMM: _gemm, Op.BMM_QK: _bmm_qk, Op.ATTN_V: _attn_v, Op.REQUANT: _requant,
             Op.LAYERNORM: _layernorm, Op.SOFTMAX: _softmax, Op.LOG2_CODE: _log2_code, Op.LUT: _lut,
             Op.ADD: _add, Op.ADD_CONST: _add, Op.AVG_POOL: _avg_pool}


def _int_param_bits(ctx: _Ctx, role: str) -> tuple[str, int]:
    """(reported type, bits per element) of a constant: weights and embedded tensors at their declared
    type; per-channel parameter words at the spec's register width; tables at their entry width."""
    t = ctx.ctype(role)
    op = ctx.node.op
    if role in PARAM_WORD_BITS and op in (Op.GEMM, Op.REQUANT, Op.LAYERNORM):
        b = PARAM_WORD_BITS[role]
        return (U(b) if role == "shift" else S(b)), b
    if op == Op.SOFTMAX and role == "lut":
        b = int(ctx.node.attrs["lut_bits"]) + 1
        return U(b), b
    if op == Op.LOG2_CODE and role == "thresholds":
        return tname(ctx.inp(0)), ctx.inp(0).bits
    if op == Op.LUT and role == "table":
        return tname(ctx.out()), ctx.out().bits
    return tname(t), t.bits


# ---------------------------------------------------------------------------------------------------
# Float rules: the same network with float arithmetic (fp32 / fp16), counted per node of the IR.


def _fkeys(fmt: str) -> tuple[str, str, str]:
    f = fmt.upper()
    return f"op_mac_{f}_{f}", f"op_acc_{f}", f


def _float_fn(ctx: _Ctx, fmt: str, fn: str, n: int) -> None:
    f = fmt.upper()
    mul, add = FLOAT_FUNCTIONS[fn]
    ctx.add(f"op_mul_{f}_{f}", mul * n)
    ctx.add(f"op_add_{f}", add * n)


def _float_rules(ctx: _Ctx, fmt: str) -> None:
    node = ctx.node
    mac, acc, f = _fkeys(fmt)
    op = node.op
    if op == Op.GEMM:
        a, w = ctx.inp(0), ctx.ctype("weight")
        m, k = a.shape
        n = w.shape[0]
        ctx.add(mac, m * n * k)
        ctx.add(acc, m * n * k)
        if "bias" in node.consts:
            ctx.add(f"op_add_{f}", m * n)
        ctx.c.mac_equiv += m * n * k
    elif op in (Op.BMM_QK, Op.ATTN_V):
        a, b = ctx.inp(0), ctx.inp(1)
        h, m, k = a.shape
        n = b.shape[1] if op == Op.BMM_QK else b.shape[2]
        ctx.add(mac, h * m * n * k)
        ctx.add(acc, h * m * n * k)
        ctx.c.mac_equiv += h * m * n * k
    elif op == Op.SOFTMAX:  # scale, max, x - max, exp, sum, one reciprocal per row, normalise
        x = ctx.inp(0)
        n = x.shape[-1]
        rows = _numel(x.shape) // n
        ctx.add(f"op_mul_{f}_{f}", 2 * rows * n)  # 1/sqrt(d) scale, * (1/sum)
        ctx.add(f"op_cmp_{f}", rows * (n - 1))
        ctx.add(f"op_add_{f}", rows * n + rows * (n - 1))
        _float_fn(ctx, fmt, "exp", rows * n)
        _float_fn(ctx, fmt, "recip", rows)
    elif op == Op.LAYERNORM:
        t, c = ctx.inp(0).shape
        ctx.add(f"op_add_{f}", t * ((c - 1) + c + (c - 1) + 1 + c))  # sum, x - mean, sum sq, + eps, + beta
        ctx.add(f"op_mul_{f}_{f}", t * (2 + c + 2 * c))  # two 1/C scalings, squares, * rstd, * gamma
        _float_fn(ctx, fmt, "rsqrt", t)
    elif op == Op.LUT:  # the GELU table is the GELU function in float
        _float_fn(ctx, fmt, "gelu", _numel(ctx.inp(0).shape))
    elif op in (Op.ADD, Op.ADD_CONST):
        ctx.add(f"op_add_{f}", _numel(ctx.out().shape))
    elif op == Op.AVG_POOL:  # column sums, one multiply by 1/T per channel
        t, c = ctx.inp(0).shape
        ctx.add(f"op_add_{f}", (t - 1) * c)
        ctx.add(f"op_mul_{f}_{f}", c)


def _float_params(ctx: _Ctx, fmt_bits: int, f: str) -> None:
    node = ctx.node
    by = fmt_bits / 8
    if node.op == Op.GEMM:
        ctx.c.weights[f] += _numel(ctx.ctype("weight").shape) * by
        if "bias" in node.consts:
            ctx.c.params[f] += _numel(ctx.ctype("bias").shape) * by
    elif node.op == Op.LAYERNORM:
        ctx.c.params[f] += 2 * ctx.inp(0).shape[-1] * by  # gamma, beta
    elif node.op == Op.ADD_CONST:
        ctx.c.params[f] += _numel(ctx.ctype("value").shape) * by
    elif node.op == Op.CONCAT_TOKENS:
        ctx.c.params[f] += _numel(ctx.ctype("rows").shape) * by


# ---------------------------------------------------------------------------------------------------


def is_view(op: Op, numerics: str = "int") -> bool:
    """Ops that move no data: re-indexing of a stored buffer (address generation only). In a float model
    requantization and log2 coding are the identity."""
    return op in DATA_MOVEMENT_OPS or (numerics != "int" and op in (Op.REQUANT, Op.LOG2_CODE))


def count_graph(g: Graph, numerics: str = "int", label: str | None = None,
                attn_v_rule=None) -> GraphCounts:
    """Count every node of ``g`` (per image).

    Args:
        g: an IR graph (``load_graph(dir)`` or a lowered Graph).
        numerics: ``"int"`` (the graph as lowered), ``"fp32"`` or ``"fp16"`` (the same network in float).
        label: name of this variant in reports (default: ``W{w}A{a}`` from the graph's meta, or the float
            format).
        attn_v_rule: override of the attention·V rule (e.g. :func:`attn_v_as_mac`), integer numerics only.
    """
    if numerics not in NUMERICS:
        raise ValueError(f"numerics must be one of {NUMERICS}, got {numerics!r}")
    if label is None:
        label = numerics if numerics != "int" else (
            f"W{g.meta['w_bits']}A{g.meta['a_bits']}" if {"w_bits", "a_bits"} <= set(g.meta) else "int")
    fbits = {"fp32": 32, "fp16": 16}.get(numerics)

    def bits_of(t: IntType) -> int:
        return fbits or t.bits

    def type_key(t: IntType) -> str:
        return numerics.upper() if fbits else tname(t)

    def nbytes(tensor: str) -> float:
        t = g.tensors[tensor].type
        return _numel(t.shape) * bits_of(t) / 8

    layers = layer_of([n.name for n in g.nodes])
    root: dict[str, str] = {t: t for t in g.inputs}
    size: dict[str, float] = {t: nbytes(t) for t in g.inputs}
    start = {t: 0 for t in g.inputs}
    end = {t: 0 for t in g.inputs}
    nodes = []
    for i, (node, layer) in enumerate(zip(g.nodes, layers)):
        cost = NodeCost(node.name, node.op.value, layer)
        ctx = _Ctx(g, node, cost)
        for t in node.inputs:
            if t not in root:
                raise ValueError(f"node {node.name!r} reads {t!r} before it is produced")
            end[root[t]] = max(end[root[t]], i)
        out = node.outputs[0]
        if is_view(node.op, numerics):
            r = root[node.inputs[0]]
            root[out] = r
            size[r] = max(size[r], nbytes(out))
            if node.op == Op.CONCAT_TOKENS:  # the constant rows are written into the grown buffer
                rows = g.const_types[node.consts["rows"]]
                extra = _numel(rows.shape) * bits_of(g.tensors[out].type) / 8
                cost.act_write[type_key(g.tensors[out].type)] += extra
                cost.writes.append((r, extra))
        else:
            for t in node.inputs:
                b = nbytes(t)
                cost.act_read[type_key(g.tensors[t].type)] += b
                cost.reads.append((root[t], b))
            root[out] = out
            size[out] = nbytes(out)
            start[out] = end[out] = i
            cost.act_write[type_key(g.tensors[out].type)] += size[out]
            cost.writes.append((out, size[out]))
        if fbits:
            _float_rules(ctx, numerics)
            _float_params(ctx, fbits, numerics.upper())
        else:
            rule = attn_v_rule if (attn_v_rule is not None and node.op == Op.ATTN_V) else INT_RULES.get(node.op)
            if rule is not None:
                rule(ctx)
            elif not is_view(node.op):
                raise ValueError(f"node {node.name!r}: no counting rule for op {node.op.value!r} "
                                 "(add one to repq_hw/cost/counts.py and docs/cost_model.md)")
            for role in node.consts:
                if (node.op, role) in ROM_CONSTS:
                    continue
                tk, b = _int_param_bits(ctx, role)
                nb = _numel(g.const_types[node.consts[role]].shape) * b / 8
                (cost.weights if role == "weight" else cost.params)[tk] += nb
        nodes.append(cost)
    last = len(g.nodes) - 1
    outs = [root[t] for t in g.outputs]
    for r in outs:
        end[r] = last
    for r in size:
        start.setdefault(r, 0)
        end[r] = max(end.get(r, start[r]), start[r])
    return GraphCounts(label, numerics, nodes, dict(size), start, end, [root[t] for t in g.inputs], outs,
                       dict(g.meta))
