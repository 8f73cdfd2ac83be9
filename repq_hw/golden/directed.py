"""Directed corner-case golden sets: one tiny IR graph per op type and bit setting whose input codes come
from the op specs' own edge tables and sweeps (``±2^i ± {0, 1, 2}``, type minimum and maximum, the worked
examples' configurations), not from images. numpy only.

    repq-hw golden --directed [--op-type T] [--bits 4,8] --out DIR     # DIR/directed.<op>.w<b>a<b>/

Each set has the format and manifest of a model set (``docs/golden_format.md``), so ``golden verify``,
``golden replay`` and the testbenches read it the same way; it also carries a ``coverage`` field
(:mod:`repq_hw.golden.coverage`). Every graph has one input (the golden format's rule): ops with two
operands read two ``slice`` s of it, and ``attn_v_shift`` reads its codes from a ``log2_code`` of one.

A graph holds one node per rounding mode (so every mode meets its exact ties), plus variants for the
other corners (negative multipliers, saturation at both ends, the largest accumulator the validator
allows, sigma = 0, the softmax shift cap, zero point outside the code range, ...). Where a corner needs a
row that no closed form gives directly (a LayerNorm quotient that is an exact half, a softmax sum that
halves, an odd ``attn_v`` accumulator whose ``·R`` is a tie), rows are drawn from a seeded generator and
kept greedily when they hit a coverage bin that the kept rows miss (:func:`_greedy_rows`): deterministic,
and chosen by the coverage bins themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from repq_hw.golden.coverage import MODES, TRACES, OpData
from repq_hw.ir.graph import Graph
from repq_hw.ir.ops import Op
from repq_hw.lower.builder import GraphBuilder

DIRECTED_OPS = ("requantize", "layernorm", "softmax", "log2_code", "attn_v_shift", "gemm", "bmm_qk", "lut", "add",
                "avg_pool")
DIRECTED_BITS = (4, 8)
SET_PREFIX = "directed"
I32 = (-(1 << 31), (1 << 31) - 1)


def set_name(op_type: str, bits: int) -> str:
    return f"{SET_PREFIX}.{op_type}.w{bits}a{bits}"


def edge_values(lo: int, hi: int, max_pow: int | None = None) -> list[int]:
    """The spec sweeps inside ``[lo, hi]``: ``±2^i + {-2..2}``, the type limits and their neighbours,
    ``-8..8``."""
    vals = set(range(-8, 9)) | {lo, lo + 1, lo + 2, hi, hi - 1, hi - 2}
    top = max_pow if max_pow is not None else max(abs(lo), abs(hi)).bit_length()
    for i in range(top + 1):
        for d in (-2, -1, 0, 1, 2):
            vals.update({(1 << i) + d, -(1 << i) + d})
    return sorted(v for v in vals if lo <= v <= hi)


def _meta(op_type: str, bits: int) -> dict:
    return {"model": f"directed_{op_type}", "w_bits": bits, "a_bits": bits}


def _op_entry(g: Graph, node) -> dict:
    from repq_hw.golden.spec import derived_params

    return {"name": node.name, "op": node.op.value, "attrs": node.attrs, "derived": derived_params(g, node),
            "constants": dict(node.consts), "inputs": [{"tensor": t} for t in node.inputs],
            "outputs": [{"tensor": t} for t in node.outputs]}


def _range(t) -> tuple[int, int]:
    return int(t.min), int(t.max)


def _greedy_rows(make: Callable[[np.ndarray], Graph], fixed: np.ndarray, cands: np.ndarray,
                 op_types: tuple[str, ...]) -> np.ndarray:
    """``fixed`` rows (axis 0), then the candidate rows that hit a (node, bin) the rows kept so far miss.
    ``make(rows)`` builds the graph for a row block (rows on axis 0 of the per-image input)."""
    from repq_hw.emu.execute import run_graph

    rows = np.concatenate([fixed, cands]) if len(cands) else fixed
    g = make(rows)
    env = run_graph(g, rows[None], backend="ref", keep_all=True)
    nodes = [n for n in g.nodes if n.op.value in op_types]
    hit: set = set()
    keep = []
    for r in range(rows.shape[0]):
        new = set()
        for n in nodes:
            op = _op_entry(g, n)
            ins = [np.asarray(env[t]).astype(np.int64)[:, r:r + 1] for t in n.inputs]
            rng = [_range(g.tensors[t].type) for t in n.inputs]
            consts = {role: g.constants[c].astype(np.int64) for role, c in n.consts.items()}
            _, bins = TRACES[n.op.value](OpData(op, ins, rng, consts))
            new |= {(n.name, b) for b, k in bins.items() if k}
        if r < len(fixed) or new - hit:
            keep.append(r)
            hit |= new
    return rows[keep]


# ---------------------------------------------------------------------------------------------------
# requantize


def requantize_graph(bits: int) -> tuple[Graph, np.ndarray]:
    """int32 accumulators (every edge value of int32, one per row, the same in every channel) through
    one requantize per rounding mode into ``uint{b}`` (zero point mid-range, with offsets) and ``int{b}``
    (no offset), plus an ``int16`` one. The 8 channels: x0.5 (ties on odd values), -0.5 (negative
    multiplier), (2^31-1)·2^-62 (int32 max squared), √2 with +0.5 offset, x1 (saturation), ≈ -1,
    x0.25 + 0.5 (ties), zero multiplier."""
    vals = np.array(edge_values(*I32), dtype=np.int64)
    c = 8
    acc = np.repeat(vals[:, None], c, axis=1).astype(np.int32)
    mult = np.array([1 << 30, -(1 << 30), (1 << 31) - 1, 1518500250, 1 << 30, -((1 << 31) - 1), 1 << 30, 0], np.int32)
    shift = np.array([31, 31, 62, 30, 30, 31, 32, 0], np.int8)
    offset = np.array([0, 0, 0, 1 << 29, 0, 0, 1 << 31, 0], np.int64)
    b = GraphBuilder(_meta("requantize", bits))
    x = b.input("acc", "int32", acc.shape, layout="NC")
    outs = []
    for mode in MODES:
        outs.append(b.node(f"rq_u.{mode}", Op.REQUANT, [x], f"uint{bits}", acc.shape,
                           attrs={"zero_point": 1 << (bits - 1), "rounding": mode},
                           consts={"multiplier": mult, "shift": shift, "offset": offset},
                           zero_point=1 << (bits - 1), layout="NC"))
        outs.append(b.node(f"rq_s.{mode}", Op.REQUANT, [x], f"int{bits}", acc.shape,
                           attrs={"zero_point": 0, "rounding": mode}, consts={"multiplier": mult, "shift": shift},
                           layout="NC"))
    outs.append(b.node("rq_i16.half_even", Op.REQUANT, [x], "int16", acc.shape,
                       attrs={"zero_point": -3, "rounding": "half_even"},
                       consts={"multiplier": mult, "shift": shift, "offset": offset}, zero_point=-3, layout="NC"))
    b.g.outputs.extend(outs)
    return b.g, acc[None]


# ---------------------------------------------------------------------------------------------------
# layernorm

_LN_C = 8


def _ln_make(bits: int, frac: int):
    mult = np.array([1 << 30, -(1 << 30), 1 << 30, -((1 << 31) - 1), 1 << 30, 1518500250, 1 << 30, -(1 << 30)], np.int32)
    # channel 4 is x1 at b = 4 and x4 at b = 8: both saturate at both ends (|norm| <= sqrt(C-1)·2^F)
    shift = np.array([31, 31, 33, 36, 30 if bits <= 4 else 28, 32, 32, 34], np.int8)
    offset = np.array([0, 0, 1 << 32, 0, 0, 0, -(1 << 31), 1 << 33], np.int64)
    zp = 1 << (bits - 1)

    def make(rows: np.ndarray) -> Graph:
        b = GraphBuilder(_meta("layernorm", bits))
        x = b.input("x", "int16", rows.shape, layout="NC")
        outs = []
        for name, eps, mode in [(f"ln.{m}", 0, m) for m in MODES] + [("ln_eps.half_even", 9, "half_even"),
                                                                     ("ln_eps.floor", 1514, "floor")]:
            outs.append(b.node(name, Op.LAYERNORM, [x], f"uint{bits}", rows.shape,
                               attrs={"eps_q": eps, "frac_bits": frac, "rounding": mode, "zero_point": zp},
                               consts={"multiplier": mult, "shift": shift, "offset": offset}, zero_point=zp,
                               layout="NC"))
        b.g.outputs.extend(outs)
        return b.g

    return make


def _ln_tie_rows(frac: int, eps_q: int, count: int = 2, seed: int = 17) -> list[list[int]]:
    """Rows whose LayerNorm quotient ``(C·x - S)·2^F / isqrt(var_n + eps_q)`` is an exact half for some
    element (``2r = sigma``; needs ``v2(sigma) = F + 1 + v2(d)``): a vectorised search over seeded rows
    of growing spread."""
    import math

    rng = np.random.default_rng(seed)
    c = _LN_C
    found: list[list[int]] = []
    for spread in (12, 40, 120, 400):
        x = rng.integers(-spread, spread + 1, (100000, c))
        ssum = x.sum(1, keepdims=True)
        v = c * (x * x).sum(1, keepdims=True) - ssum * ssum + eps_q
        sigma = np.array([math.isqrt(int(t)) for t in v[:, 0]], np.int64)[:, None]
        num = (c * x - ssum) << frac
        den = np.maximum(sigma, 1)
        tie = ((2 * (num - (num // den) * den) == den) & (sigma > 0)).any(1)
        found += x[tie][:count - len(found)].tolist()
        if len(found) >= count:
            break
    return found


def layernorm_graph(bits: int) -> tuple[Graph, np.ndarray]:
    """int16 residual rows (C = 8) through one LayerNorm per rounding mode with eps_q = 0 (constant rows
    give sigma = 0) and two with eps_q > 0; per-channel multipliers with negative ones, offsets of ±0.5
    output LSB, x1 channels that saturate at both ends. Rows: constant rows (0, 5, type min, type max),
    the type extremes, the spec's worked example, small-variance rows, then seeded rows kept when they hit
    a missing tie (the quotient or the requantize exactly half-way)."""
    lo, hi = -(1 << 15), (1 << 15) - 1
    c = _LN_C
    fixed = [[v] * c for v in (0, 5, 1, -1, lo, hi)]
    fixed += [[lo, hi] * (c // 2), [hi] + [lo] * (c - 1), [lo] + [hi] * (c - 1), [1, 2, 3, 6, 1, 2, 3, 6],
              [0] * (c - 1) + [1], [0, 1] * (c // 2), [0, 0, 0, 0, 4, 4, 4, 4], [-3, 3] * (c // 2)]
    ev = edge_values(lo, hi)
    fixed += [ev[i:i + c] for i in range(0, len(ev) - c + 1, c)]
    frac = 4 if bits <= 4 else 5
    for eps in (0, 9, 1514):
        fixed += _ln_tie_rows(frac, eps)
    rng = np.random.default_rng(13)
    cands = np.concatenate([rng.integers(-4, 5, (1500, c)), rng.integers(-40, 41, (500, c)),
                            rng.integers(lo, hi + 1, (100, c))])
    make = _ln_make(bits, frac)
    rows = _greedy_rows(make, np.array(fixed, np.int64), cands, ("layernorm",)).astype(np.int16)
    return make(rows), rows[None]


# ---------------------------------------------------------------------------------------------------
# softmax

_SM_N = 8
_SM_CONFIGS = [  # (name, multiplier, shift, F, E, P, mode): the worked example's attributes per mode, and the model's
    ("sm_worked.half_even", 3, 1, 2, 4, 8, "half_even"),
    *[(f"sm.{m}", 3, 1, 2, 6, 4, m) for m in MODES],  # E = 6, P = 4: sums S up to 2^9 can halve e·2^P
    ("sm_model.half_even", 1296610485, 25, 10, 22, 16, "half_even"),
    ("sm_model.floor", 1474426307, 33, 10, 22, 16, "floor"),
]


def _sm_make(bits: int):
    from repq_hw.kernels.softmax import exp2_lut

    def make(rows: np.ndarray) -> Graph:
        b = GraphBuilder(_meta("softmax", bits))
        x = b.input("x", "int32", rows.shape, layout="NC")
        outs = []
        for name, m, s, f, e, p, mode in _SM_CONFIGS:
            lut = exp2_lut(f, e).astype(np.int64)
            outs.append(b.node(name, Op.SOFTMAX, [x], f"uint{p + 1}", rows.shape,
                               attrs={"multiplier": m, "shift": s, "frac_bits": f, "lut_bits": e, "out_bits": p,
                                      "rounding": mode}, consts={"lut": lut}, layout="NC"))
        b.g.outputs.extend(outs)
        return b.g

    return make


def softmax_graph(bits: int) -> tuple[Graph, np.ndarray]:
    """int32 logit rows (N = 8) through the worked example's softmax (M = 3, s = 1, F = 2, E = 4, P = 8),
    the same with E = 6, P = 4 in every mode (``P + 1 <= E + log2 N``: only then can the final division
    tie) and two model-sized ones. Rows: all-equal rows (0, 5, type min, type max), the int32
    extremes in one row (the shift cap: exponents far above 62), the worked example and quarter steps,
    ``-2^i ± d`` sweeps, then seeded rows kept when they hit a missing tie of one of the three steps."""
    lo, hi = I32
    n = _SM_N
    fixed = [[v] * n for v in (0, 5, lo, hi)]
    fixed += [[hi, lo] + [0] * (n - 2), [lo, hi] + [lo] * (n - 2), [10, 7, 3, 10, 7, 3, 0, -1],
              [0, -1, -2, -3, -4, -5, -6, -7], [0, 0, -8, -8, 0, -8, 0, -8], [hi, hi - 1, hi - 2, hi - 3, 0, -1, lo, lo + 1]]
    for i in range(0, 32, 2):
        fixed.append([0] + [-(1 << i) + d for d in (-2, -1, 0, 1, 2)] + [-(1 << (i + 1)), -(1 << min(i + 2, 31))])
    for _, m, s, f, _, _, _ in _SM_CONFIGS:  # differences that hit the table's last entry / an exponent tie
        d = -np.arange(0, 1 << 16, dtype=np.int64)
        prod = d * m
        u = -(prod >> s)  # floor shift: the last index is reached in every mode for some difference
        last = d[(u & ((1 << f) - 1)) == (1 << f) - 1][:3]
        tie = d[(s > 0) & ((prod & ((1 << s) - 1)) == (1 << max(s - 1, 0)))][:3]
        fixed.append(([0] + last.tolist() + tie.tolist() + [0] * n)[:n])
    rng = np.random.default_rng(7)
    cands = np.concatenate([rng.integers(-12, 1, (2500, n)), rng.integers(-3000, 1, (500, n))])
    make = _sm_make(bits)
    rows = _greedy_rows(make, np.array(fixed, np.int64), cands, ("softmax",)).astype(np.int32)
    return make(rows), rows[None]


# ---------------------------------------------------------------------------------------------------
# log2_code


def _log2_nodes(bits: int) -> list[tuple[str, np.ndarray]]:
    from repq_hw.kernels.log2_code import log2_thresholds

    full = log2_thresholds(1.0, bits, 16)
    model = log2_thresholds(0.5, bits, 16, max_codes=15 if bits <= 4 else 24)
    return [("log2_full", full.astype(np.int64)), ("log2_model", model.astype(np.int64))]


def log2_code_graph(bits: int) -> tuple[Graph, np.ndarray]:
    """Q0.16 probabilities (uint17) through ``log2_code`` with all ``2^b - 1`` thresholds of δ = 1 and with
    a model-like ``max_codes`` (δ = 0.5): every threshold, ±1; 0 (the zero state), 1, ``2^16 - 1``,
    ``2^16``, the type maximum; one value inside every code's interval."""
    nodes = _log2_nodes(bits)
    hi = (1 << 17) - 1
    vals = {0, 1, 2, (1 << 16) - 1, 1 << 16, (1 << 16) + 1, hi}
    for _, t in nodes:
        tl = [int(v) for v in t]
        for k, tk in enumerate(tl):
            vals.update({tk - 1, tk, tk + 1})
            upper = hi if k == 0 else tl[k - 1]
            if tk + 1 <= upper:
                vals.add((tk + 1 + upper) // 2)
    p = np.array(sorted(v for v in vals if 0 <= v <= hi), np.uint32)[None, :]
    b = GraphBuilder(_meta("log2_code", bits))
    x = b.input("p", "uint17", p.shape, layout="NC")
    outs = [b.node(name, Op.LOG2_CODE, [x], f"uint{bits}", p.shape, attrs={"bits": bits}, consts={"thresholds": t},
                   layout="NC") for name, t in nodes]
    b.g.outputs.extend(outs)
    return b.g, p[None]


# ---------------------------------------------------------------------------------------------------
# attn_v_shift

_AV_N, _AV_D = 8, 8


def _av_params(bits: int) -> tuple[int, int, int]:
    """(levels L, F, Q of the per-mode nodes): b = 4: all 15 codes, F = 9, Q = 3 (R = 11, odd: ties reachable);
    b = 8: 39 codes (max code 38, F = 20: the largest F whose int32 bound N·255·2^F still fits), Q = 3."""
    return (15, 9, 3) if bits <= 4 else (39, 20, 3)


def _av_make(bits: int):
    levels, f, q = _av_params(bits)
    n, d = _AV_N, _AV_D
    vmid = (1 << (bits - 1)) - 1 if bits <= 4 else 1 << (bits - 1)
    vmax = (1 << bits) - 1

    def make(heads: np.ndarray) -> Graph:
        h = heads.shape[0]
        b = GraphBuilder(_meta("attn_v_shift", bits))
        x = b.input("x", f"uint{bits}", heads.shape, layout="HND")
        p = b.node("p", Op.SLICE, [x], f"uint{bits}", (h, n, n), attrs={"start": 0, "stop": n}, layout="HNN")
        v = b.node("v", Op.SLICE, [x], f"uint{bits}", (h, n, d), attrs={"start": n, "stop": n + d}, layout="HND")
        thr = np.arange(levels - 1, -1, -1, dtype=np.int64)  # count(p) = L - p for 1 <= p < L; p = 0 -> Z
        codes = b.node("codes", Op.LOG2_CODE, [p], f"uint{bits}", (h, n, n), attrs={"bits": bits},
                       consts={"thresholds": thr}, layout="HNN")
        outs = []
        cfgs = [(f"av.{m}", vmid, f, q, m) for m in MODES]
        cfgs += [("av_vzp0.half_even", 0, f, 15, "half_even"), ("av_vzpmax.half_up", vmax, f, 15, "half_up")]
        for name, vzp, ff, qq, mode in cfgs:
            outs.append(b.node(name, Op.ATTN_V, [codes, v], "int32", (h, n, d),
                               attrs={"bits": bits, "max_code": levels - 1, "shift_frac": ff,
                                      "sqrt2_frac_bits": qq, "v_zp": vzp, "rounding": mode}, layout="HND"))
        b.g.outputs.extend(outs)
        return b.g

    return make


def attn_v_shift_graph(bits: int) -> tuple[Graph, np.ndarray]:
    """Heads of ``[N, N + D]`` uint{b} codes: the first N columns go through ``log2_code`` with thresholds
    ``L-1 .. 0`` (p = 0 is the zero state, p = 1 the largest code, p >= L code 0), the last D are V.
    One attn_v node per mode (small Q so that ``acc_odd·R`` can tie) and two with V zero point 0 and
    type max (the validator's accumulator bound, reached by all-code-0 rows over V at the type
    max / min). Heads: code 0 over V max and V 0, all zero state, all max code, a ramp of every code,
    then seeded heads kept when they hit a missing bin."""
    levels, _, _ = _av_params(bits)
    n, d = _AV_N, _AV_D
    vmax = (1 << bits) - 1
    pmax = vmax  # p >= L gives code 0

    def head(pv, vv):
        return np.concatenate([np.broadcast_to(pv, (n, n)), np.broadcast_to(vv, (n, d))], axis=1)

    ramp = (np.arange(n * n).reshape(n, n) % (levels + 1)).astype(np.int64)
    fixed = [head(pmax, vmax), head(pmax, 0), head(0, vmax), head(1, vmax), head(1, 0),
             head(ramp, (np.arange(n * d).reshape(n, d) * 7) % (vmax + 1))]
    rng = np.random.default_rng(5)
    cands = [head(rng.integers(0, levels + 1, (n, n)), rng.integers(0, vmax + 1, (n, d))) for _ in range(300)]
    make = _av_make(bits)
    heads = _greedy_rows(make, np.array(fixed, np.int64), np.array(cands, np.int64), ("attn_v_shift",))
    heads = heads.astype(np.uint8)
    return make(heads), heads[None]


# ---------------------------------------------------------------------------------------------------
# gemm, bmm_qk


def gemm_graph(bits: int) -> tuple[Graph, np.ndarray]:
    """uint{b} activations (K = 16) times 8 weight channels. Node ``mm_bound`` (a_zp = 0): channel 0 has
    every weight at the type max and the bias that puts the validator's worst case exactly at
    ``2^31 - 1``; channel 1 mirrors it to ``-(2^31 - 1)``; the rest sweep weights and zero points
    (one outside the code range). ``mm_zp`` (mid zero point) and ``mm_zp_out`` (a_zp = -3) reuse them.
    Rows: all max, all 0, alternating, the edge sweep, seeded codes."""
    k, nch = 16, 8
    amax = (1 << bits) - 1
    w = np.zeros((nch, k), np.int64)
    w[0] = amax
    w[1] = 0
    ev = np.array(edge_values(0, amax), np.int64)
    rng = np.random.default_rng(11)
    for c in range(2, nch):
        w[c] = np.resize(np.roll(ev, c), k) if c % 2 else rng.integers(0, amax + 1, k)
    wzp = np.array([0, amax, 1 << (bits - 1), -3, amax + 5, 0, 1, amax], np.int64)
    top = I32[1] - k * amax * amax
    bias = np.array([top, -top, 0, -7, 123456, -(1 << 20), 1, -1], np.int64)
    rows = [[amax] * k, [0] * k, [0, amax] * (k // 2), [amax, 0] * (k // 2), list(np.resize(ev, k)),
            list(np.resize(ev[::-1], k))]
    rows += rng.integers(0, amax + 1, (10, k)).tolist()
    a = np.array(rows, np.uint8)
    b = GraphBuilder(_meta("gemm", bits))
    x = b.input("a", f"uint{bits}", a.shape, layout="NC")
    outs = []
    for name, azp in (("mm_bound", 0), ("mm_zp", (1 << (bits - 1)) - 1), ("mm_zp_out", -3)):
        bb = bias if name == "mm_bound" else np.clip(bias, -(1 << 20), 1 << 20)
        outs.append(b.node(name, Op.GEMM, [x], "int32", (a.shape[0], nch), attrs={"a_zp": azp},
                           consts={"weight": (w.astype(np.uint8), _uint_type(bits, w.shape)),
                                   "w_zp": wzp.astype(np.int32), "bias": (bb.astype(np.int32), _i32(bb.shape))},
                           layout="NC"))
    b.g.outputs.extend(outs)
    return b.g, a[None]


def _uint_type(bits: int, shape):
    from repq_hw.ir.graph import IntType

    return IntType(False, bits, tuple(shape))


def _i32(shape):
    from repq_hw.ir.graph import IntType

    return IntType(True, 32, tuple(shape))


def bmm_qk_graph(bits: int) -> tuple[Graph, np.ndarray]:
    """``[H, N, 2d]`` uint{b} codes, q the first d columns, k the last d (H = 2, N = 8, d = 16). Nodes:
    zero points 0/0 (the bound ``d·max²`` reached by an all-max row), 0/max (``-d·max²`` by q max over
    k 0), mid/mid and one outside the code range."""
    h, n, d = 2, 8, 16
    amax = (1 << bits) - 1
    ev = np.array(edge_values(0, amax), np.int64)
    rng = np.random.default_rng(3)
    head0 = [[amax] * (2 * d), [amax] * d + [0] * d, [0] * (2 * d), list(np.resize(ev, 2 * d)),
             list(np.resize(ev[::-1], 2 * d)), [0, amax] * d]
    head0 += rng.integers(0, amax + 1, (n - len(head0), 2 * d)).tolist()
    x_codes = np.array([head0, rng.integers(0, amax + 1, (n, 2 * d)).tolist()], np.uint8)
    b = GraphBuilder(_meta("bmm_qk", bits))
    x = b.input("x", f"uint{bits}", x_codes.shape, layout="HND")
    q = b.node("q", Op.SLICE, [x], f"uint{bits}", (h, n, d), attrs={"start": 0, "stop": d}, layout="HND")
    k = b.node("k", Op.SLICE, [x], f"uint{bits}", (h, n, d), attrs={"start": d, "stop": 2 * d}, layout="HND")
    mid = (1 << (bits - 1)) - 1
    outs = [b.node(name, Op.BMM_QK, [q, k], "int32", (h, n, n), attrs={"q_zp": qz, "k_zp": kz}, layout="HNN")
            for name, qz, kz in (("qk_zp00", 0, 0), ("qk_zp0max", 0, amax), ("qk_mid", mid, mid + 1),
                                 ("qk_out", -2, amax + 3))]
    b.g.outputs.extend(outs)
    return b.g, x_codes[None]


# ---------------------------------------------------------------------------------------------------
# lut, add


def lut_graph(bits: int) -> tuple[Graph, np.ndarray]:
    """Every int10 code (in_min = -512 .. 511, the model's GELU input) through a GELU table whose output
    saturates at the top code, so both table ends and both output limits are read."""
    from repq_hw.lower.constants import make_gelu_lut

    lo, hi = -512, 511
    out_zp = 1 if bits <= 4 else 8
    table = make_gelu_lut(8.0 / 512, lo, hi, 7.5 / ((1 << bits) - 1 - out_zp), out_zp, bits)
    xs = np.array(edge_values(lo, hi) + list(range(lo, hi + 1)), np.int16)[None, :]
    b = GraphBuilder(_meta("lut", bits))
    x = b.input("x", "int10", xs.shape, layout="NC")
    out = b.node("gelu", Op.LUT, [x], f"uint{bits}", xs.shape, attrs={"in_min": lo},
                 consts={"table": (table.astype(np.uint8), _uint_type(bits, table.shape))}, zero_point=out_zp,
                 layout="NC")
    b.g.outputs.append(out)
    return b.g, xs[None]


def add_graph(bits: int) -> tuple[Graph, np.ndarray]:
    """Residual ``int{R}`` (R = 8 at b = 4, 16 at b = 8) pairs ``a | b`` side by side: both saturations,
    the exact limits, the spec's table scaled to R, and the sweep against its mirror."""
    r = 8 if bits <= 4 else 16
    lo, hi = -(1 << (r - 1)), (1 << (r - 1)) - 1
    pairs = [(hi, 0), (hi, 1), (hi - 1, 1), (hi, hi), (lo, 0), (lo, -1), (lo + 1, -1), (lo, lo), (hi, lo),
             (100 % hi, -7), (hi - 5, 6), (lo + 5, -6)]
    ev = edge_values(lo, hi)
    pairs += list(zip(ev, ev[::-1])) + list(zip(ev, ev))
    c = 4
    while len(pairs) % c:
        pairs.append((0, 0))
    a = np.array([p[0] for p in pairs]).reshape(-1, c)
    bb = np.array([p[1] for p in pairs]).reshape(-1, c)
    x_codes = np.concatenate([a, bb], axis=1).astype(np.int8 if r == 8 else np.int16)
    g = GraphBuilder(_meta("add", bits))
    x = g.input("x", f"int{r}", x_codes.shape, layout="NC")
    xa = g.node("a", Op.SLICE, [x], f"int{r}", a.shape, attrs={"start": 0, "stop": c}, layout="NC")
    xb = g.node("b", Op.SLICE, [x], f"int{r}", a.shape, attrs={"start": c, "stop": 2 * c}, layout="NC")
    out = g.node("residual_add", Op.ADD, [xa, xb], f"int{r}", a.shape, layout="NC")
    g.g.outputs.append(out)
    return g.g, x_codes[None]


def avg_pool_graph(bits: int) -> tuple[Graph, np.ndarray]:
    """``[T = 4, C]`` columns of ``int{R}`` (R = 8 at b = 4, 16 at b = 8) through one average pool per rounding
    mode: sums that are exact halves (positive, negative, at the type limits), exact multiples, the type
    extremes in every token, and each edge value alone in its column (every residue of the sum mod 4)."""
    r = 8 if bits <= 4 else 16
    lo, hi = -(1 << (r - 1)), (1 << (r - 1)) - 1
    cols = [[1, 2, 3, 4], [-1, -2, -3, -4], [3, 4, 4, 4], [lo] * 4, [hi] * 4, [lo, hi, lo, hi], [hi, hi, hi, hi - 2],
            [lo, lo, lo, lo + 2], [0, 0, 0, 2], [0, 0, 0, -2], [5, 5, 5, 7], [-5, -5, -5, -7]]
    cols += [[v, 0, 0, 0] for v in edge_values(lo, hi)]
    x_codes = np.array(cols, dtype=np.int64).T.astype(np.int8 if r == 8 else np.int16)
    g = GraphBuilder(_meta("avg_pool", bits))
    x = g.input("x", f"int{r}", x_codes.shape, layout="NC")
    for mode in MODES:
        g.g.outputs.append(g.node(f"pool_{mode}", Op.AVG_POOL, [x], f"int{r}", (1, x_codes.shape[1]),
                                  attrs={"rounding": mode}, layout="NC"))
    return g.g, x_codes[None]


BUILDERS: dict[str, Callable[[int], tuple[Graph, np.ndarray]]] = {
    "requantize": requantize_graph, "layernorm": layernorm_graph, "softmax": softmax_graph,
    "log2_code": log2_code_graph, "attn_v_shift": attn_v_shift_graph, "gemm": gemm_graph,
    "bmm_qk": bmm_qk_graph, "lut": lut_graph, "add": add_graph, "avg_pool": avg_pool_graph,
}


def directed_graph(op_type: str, bits: int) -> tuple[Graph, np.ndarray]:
    """(validated graph, input codes ``[1, *shape]``) of one directed set."""
    from repq_hw.golden.writer import GoldenError
    from repq_hw.ir.validate import validate_graph

    if op_type not in BUILDERS:
        raise GoldenError(f"no directed set for op type {op_type!r}; known: {', '.join(DIRECTED_OPS)}")
    if bits not in DIRECTED_BITS:
        raise GoldenError(f"directed sets exist for bits {DIRECTED_BITS}, got {bits}")
    g, codes = BUILDERS[op_type](bits)
    validate_graph(g)
    return g, codes


def write_directed(out_dir: str | Path, op_types=None, bits=DIRECTED_BITS, *, force: bool = False,
                   backend: str = "fast") -> list[Path]:
    """Write ``out_dir/directed.<op>.w<b>a<b>/`` for every op type and bit setting (every format the
    testbenches and ``verify`` read: .hex), each with its ``coverage`` field."""
    from repq_hw.golden.coverage import write_coverage
    from repq_hw.golden.writer import Formats, check_out, write_golden_set

    out_dir = Path(out_dir)
    op_types = tuple(dict.fromkeys(op_types)) if op_types else DIRECTED_OPS
    jobs = [(t, b) for t in op_types for b in dict.fromkeys(bits)]
    for t, b in jobs:  # every name and every output directory is checked before any work
        if t not in BUILDERS:
            from repq_hw.golden.writer import GoldenError

            raise GoldenError(f"no directed set for op type {t!r}; known: {', '.join(DIRECTED_OPS)}")
        if b not in DIRECTED_BITS:
            from repq_hw.golden.writer import GoldenError

            raise GoldenError(f"directed sets exist for bits {DIRECTED_BITS}, got {b}")
        check_out(out_dir / set_name(t, b), force)
    paths = []
    for t, b in jobs:
        g, codes = directed_graph(t, b)
        p = write_golden_set(g, codes, out_dir / set_name(t, b), input_ids=[f"directed:{t}:w{b}a{b}:0"],
                             model=f"directed_{t}", seed=None, force=force, backend=backend, progress=False,
                             formats=Formats(tensors=("hex",), constants=("hex",)),
                             input_source=f"directed corner cases for {t} (repq_hw.golden.directed)")
        write_coverage(p)
        paths.append(p)
    return paths
