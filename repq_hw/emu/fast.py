"""The prepared plan of the ``fast`` backend: per-node constants packed once, fast kernels per op.

:func:`prepare` builds (once per graph, cached on the graph object) one step per node:

* GEMM: weights packed for the CPU's fastest exact kernel (``kernels.gemm_vnni``: VNNI, AVX2 or the
  portable fallback), the zero-point corrections folded into per-column constants;
* BMM_QK: ``gemm_vnni.bmm_zp_fast`` (the second operand is data, packed per head in the kernel);
* REQUANT, LAYERNORM, SOFTMAX, LOG2_CODE, LUT, ADD, ADD_CONST, ATTN_V: each op's fast kernel, in the op's own module
  (``kernels.rounding.requant_fast``, ``kernels.layernorm.layernorm_requant_fast``, ``kernels.softmax.
  softmax_fast``, ``kernels.log2_code.log2_code_table``, ``kernels.lut.lookup_fast``, ``kernels.add.sat_add``,
  ``kernels.attn_v_shift.attn_v_shift_fast``), with their constants checked once (overflow cannot happen,
  tables built from the reference by exhaustion);
* fused chains (``kernels.fused``: softmax -> log2_code, GEMM -> requantize on the vnni, u8s8 and i16 paths, q/k/v slices
  -> requantize -> split heads, attention x V -> merge heads -> requantize) where the
  caller asks for no intermediate tensor (not ``keep_all``; ``FUSE = False`` switches them off):
  :meth:`Plan.fusion`;
* anything else, and any node whose precondition fails, runs ``execute.run_node`` (the plain Numba
  kernels), so every tensor is what the reference computes, errors included.

Switches (no environment variable changes results): ``fast.ENABLED = False`` makes the ``fast`` backend
use the plain per-op Numba kernels only; ``kernels.gemm_vnni.force_path("portable")`` forces the GEMMs
onto the portable kernel (the plan is rebuilt when the forced path changes).

The cache key covers everything a plan depends on: the forced GEMM path, the structure the steps read
(every node's op, tensors, attributes and constant roles; every tensor's type; :func:`_structure_key`) and
every constant.  Graph constants are immutable copies (``ir.graph.ConstantStore``: an in-place edit and
``setflags(write=True)`` raise, and no view taken before storing aliases them), so the key holds each one's
identity; an array that reached the store some other way is keyed by its content (dtype, shape and a 64-bit
digest of its bytes, :func:`content_digest`).  A replaced array or an edited attribute changes the key and
the plan is rebuilt.  A stale plan cannot be returned.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import zlib
from collections.abc import Callable

import numpy as np
from numba import njit

from repq_hw.ir.graph import Graph, IntType, Node, TensorInfo, is_sealed
from repq_hw.ir.ops import Op
from repq_hw.kernels import add as ADD
from repq_hw.kernels import attn_v_shift as AV
from repq_hw.kernels import fused as FU
from repq_hw.kernels import gemm_vnni as G
from repq_hw.kernels import layernorm as LN
from repq_hw.kernels import log2_code as L2
from repq_hw.kernels import lut as LUT
from repq_hw.kernels import patchify as PATCH
from repq_hw.kernels import rounding as RQ
from repq_hw.kernels import softmax as SM

__all__ = ["ENABLED", "FUSE", "Plan", "prepare"]

ENABLED = True
"""When False, ``run_graph(..., "fast")`` runs the plain per-op Numba kernels (``KERNELS``) only."""

FUSE = True
"""When False, the plan runs no fused chain (``kernels.fused``) even where no intermediate tensor is asked
for.  ``run_graph(..., keep_all=True)`` never fuses."""

_ATTR = "_repq_fast_plan"
_UNBUILT = object()


class Plan:
    """One step per node (None = run ``execute.run_node``), plus what the packing cost."""

    def __init__(self, g: Graph, lazy: bool = True, key: tuple | None = None):
        self.key = _key(g) if key is None else key
        self._held = list(g.constants.values())  # the key's sealed constants stay alive: their ids stay theirs
        self.validated = False  # set by run_graph once validate_graph(deep=False) passed under this key
        self._g = g
        self._steps: list = [_UNBUILT] * len(g.nodes)
        self._fusions: dict | None = None
        if not lazy:
            self.build_all()

    def step(self, i: int) -> Callable | None:
        """Node i's step, built (weights packed) on first use: a process starts emulating at once."""
        s = self._steps[i]
        if s is _UNBUILT:
            s = self._steps[i] = _make_step(self._g, self._g.nodes[i])
        return s

    def build_all(self) -> Plan:
        for i in range(len(self._steps)):
            self.step(i)
        return self

    @property
    def steps(self) -> list[Callable | None]:
        return self.build_all()._steps

    @property
    def packed_bytes(self) -> int:
        return sum(getattr(s, "nbytes", 0) for s in self.steps if s is not None)

    def fusion(self, i: int) -> tuple[tuple[int, ...], Callable, tuple[int, ...]] | None:
        """``(ends, step, between)`` when node i starts a fused chain (``kernels.fused``) whose results are
        the outputs of the nodes ``ends``: ``step(args of node i + the tensors step.extra_inputs names)``
        returns them (a tuple, or None: run the nodes unfused), and the nodes ``between`` are not run.  Only for a caller that asked for no
        intermediate tensor (``run_graph`` checks ``FUSE`` and ``keep_all``)."""
        if self._fusions is None:
            self._fusions = _find_fusions(self._g, self)
        return self._fusions.get(i)

    def gemm_paths(self) -> dict[str, str]:
        return {s.node: s.path for s in self.steps if isinstance(s, _Gemm)}


def _json_default(o):
    return f"{type(o).__name__}:{o!r}"


def _key(g: Graph) -> tuple:
    """What a plan depends on: the forced GEMM path, the structure (nodes, tensor names and types, graph
    inputs and outputs, constant types) and every constant.  Computed on every ``prepare``: a plan can never
    be stale.  It covers everything ``validate_graph(deep=False)`` reads, so a plan also records that its graph
    passed that validation (:attr:`Plan.validated`).

    Constants: a sealed array (``ir.graph.is_sealed``: immutable, as ``ConstantStore`` stores every array) is
    keyed by its identity -- its content cannot change, and the plan holds it, so its id is not reused while
    the plan lives; any other array by dtype, shape and :func:`content_digest`."""
    consts = tuple((k, id(a)) if is_sealed(a) else (k, a.dtype.str, a.shape, content_digest(a))
                   for k, a in g.constants.items())
    return (G.FORCE_PATH, _structure_key(g), consts)


def _itype(t) -> tuple | str:
    return (t.signed, t.bits, t.shape) if type(t) is IntType else f"{type(t).__name__}:{t!r}"


def _structure_key(g: Graph) -> bytes:
    """The structure as pickle bytes of plain tuples, lists, dicts, strings and numbers (type-strict: 1, 1.0,
    True and numpy's 1 differ; about 0.5 ms for a DeiT, against 2-4 ms for the sorted JSON digest it
    replaces); a structure holding something pickle refuses is keyed by a sha256 of its JSON instead.  The
    bytes are the same on every call for the same objects; an equal structure made of other objects may give
    other bytes, which only rebuilds the plan."""
    nodes = [(n.name, type(n.op).__name__, getattr(n.op, "value", n.op), n.inputs, n.outputs, n.attrs, n.consts)
             for n in g.nodes]
    types = [(k, t.name, _itype(t.type)) if type(t) is TensorInfo else (k, f"{type(t).__name__}:{t!r}")
             for k, t in g.tensors.items()]
    graph = (g.inputs, g.outputs, [(k, _itype(t)) for k, t in g.const_types.items()])
    try:
        return b"p" + pickle.dumps((nodes, types, graph), 5)
    except Exception:  # noqa: BLE001 (anything pickle refuses: fall back to the JSON digest)
        nodes = [[n.name, type(n.op).__name__, getattr(n.op, "value", n.op), n.inputs, n.outputs, n.attrs, n.consts]
                 for n in g.nodes]
        types = [[k, getattr(t, "name", None), repr(getattr(t, "type", t))] for k, t in g.tensors.items()]
        graph = [g.inputs, g.outputs, sorted((k, repr(t)) for k, t in g.const_types.items())]
        h = hashlib.sha256(json.dumps([nodes, types, graph], sort_keys=True, default=_json_default).encode())
        return b"j" + h.digest()


_P1 = np.uint64(0x9E3779B97F4A7C15)  # odd: multiplying by it permutes the 64-bit words
_P2 = np.uint64(0xC2B2AE3D27D4EB4F)


@njit(cache=True)
def _digest_words(w, n_bytes):
    """Four interleaved lanes, each word folded in by h = rotl((h ^ w) * P1, 29): every step is a bijection of
    the lane state for a fixed word and of the word for a fixed state, so changing any single word always
    changes the digest; the lanes are then folded the same way with the length."""
    h0, h1, h2, h3 = np.uint64(1), np.uint64(2), np.uint64(3), np.uint64(4)
    n = w.shape[0]
    i = 0
    while i + 4 <= n:
        h0 = h0 ^ w[i]
        h1 = h1 ^ w[i + 1]
        h2 = h2 ^ w[i + 2]
        h3 = h3 ^ w[i + 3]
        h0 = h0 * _P1
        h1 = h1 * _P1
        h2 = h2 * _P1
        h3 = h3 * _P1
        h0 = (h0 << np.uint64(29)) | (h0 >> np.uint64(35))
        h1 = (h1 << np.uint64(29)) | (h1 >> np.uint64(35))
        h2 = (h2 << np.uint64(29)) | (h2 >> np.uint64(35))
        h3 = (h3 << np.uint64(29)) | (h3 >> np.uint64(35))
        i += 4
    while i < n:
        h0 = (h0 ^ w[i]) * _P1
        h0 = (h0 << np.uint64(29)) | (h0 >> np.uint64(35))
        i += 1
    h = np.uint64(n_bytes)
    for v in (h0, h1, h2, h3):
        h = (h ^ v) * _P2
        h = (h << np.uint64(31)) | (h >> np.uint64(33))
    return h


_DIGEST_MIN_BYTES = 1 << 16


def content_digest(a: np.ndarray) -> int:
    """A digest of an array's bytes (C order) for the plan key: CRC-32 below 64 KiB (no call overhead), the
    64-bit ``_digest_words`` above (any change of a single 8-byte word is always seen; about 2-3x faster than
    zlib.crc32 on the large weights)."""
    if a.nbytes < _DIGEST_MIN_BYTES:
        return zlib.crc32(np.ascontiguousarray(a))
    b = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
    tail = (-b.size) % 8
    if tail:
        b = np.concatenate([b, np.zeros(tail, np.uint8)])
    return int(_digest_words(b.view(np.uint64), a.nbytes))


def prepare(g: Graph, eager: bool = False) -> Plan:
    """The cached plan of ``g``, rebuilt when anything it depends on changed (its key: the forced path,
    the structure, every constant's content).  Each node's step (e.g. a GEMM's packing) is built on its
    first use, or all at once with ``eager``."""
    plan = g.__dict__.get(_ATTR)
    key = _key(g)
    if plan is None or plan.key != key:
        plan = Plan(g, key=key)
        g.__dict__[_ATTR] = plan
    return plan.build_all() if eager else plan


# ---------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------


class _Gemm:
    def __init__(self, node: Node, pk):
        self.node, self.pk, self.path, self.nbytes = node.name, pk, pk.path, pk.nbytes

    def __call__(self, args):
        x = args[0]
        b, m, k = x.shape
        if x.dtype != np.uint8:
            return None
        return G.gemm_packed(np.ascontiguousarray(x).reshape(b * m, k), self.pk).reshape(b, m, -1)


def _make_step(g: Graph, node: Node) -> Callable | None:
    a = node.attrs
    out_t = g.tensors[node.outputs[0]].type
    op = node.op
    in_t = g.tensors[node.inputs[0]].type
    try:
        if op == Op.GEMM:
            if in_t.signed or in_t.bits > 8:
                return None
            pk = G.prepare_gemm(g.const(node, "weight"), g.const(node, "w_zp"), g.const(node, "bias"),
                                int(a["a_zp"]), a_max=in_t.max)
            return None if pk is None else _Gemm(node, pk)
        if op == Op.BMM_QK:
            qz, kz = int(a["q_zp"]), int(a["k_zp"])

            def bmm(args):
                x, k = args
                if x.dtype != np.uint8 or k.dtype != np.uint8:
                    return None
                b, h, n, d = x.shape
                y = G.bmm_zp_fast(x.reshape(b * h, n, d), qz, k.reshape(b * h, k.shape[2], d), kz)
                return y.reshape(b, h, n, -1)

            return bmm
        if op == Op.REQUANT:
            rc = _requant_consts(g, node)
            if rc is None:
                return None
            return lambda args: RQ.requant_fast(args[0], rc, out_t.storage)
        if op == Op.LAYERNORM:
            c = in_t.shape[-1]
            rc = RQ.RequantConsts.make(c, g.const(node, "multiplier"), g.const(node, "shift"),
                                      g.const(node, "offset"), int(a["zero_point"]), out_t.min, out_t.max,
                                      a["rounding"])
            if rc is None:
                return None
            eps, fb = int(a["eps_q"]), int(a["frac_bits"])

            def ln(args):
                x = args[0]
                b, t, cc = x.shape
                y = LN.layernorm_requant_fast(x.reshape(b * t, cc), eps, fb, rc, out_t.storage)
                return None if y is None else y.reshape(b, t, cc)

            return ln
        if op == Op.SOFTMAX:
            def sm(args):
                y = SM.softmax_fast(args[0], int(a["multiplier"]), int(a["shift"]), int(a["frac_bits"]),
                                   int(a["lut_bits"]), int(a["out_bits"]), a["rounding"])
                return None if y is None else y.astype(out_t.storage, copy=False)

            return sm
        if op == Op.LOG2_CODE:
            if in_t.signed:
                return None
            table = L2.log2_code_table(g.const(node, "thresholds"), int(a["bits"]), in_t.bits)
            if table is None:
                return None
            return lambda args: L2.table_lookup(args[0], table, out_t.storage)
        if op == Op.LUT:
            table, lo = g.const(node, "table"), int(a["in_min"])
            return lambda args: LUT.lookup_fast(args[0], table, lo, out_t.storage)
        if op == Op.ADD:
            return lambda args: ADD.sat_add(args[0], args[1], out_t.min, out_t.max, out_t.storage)
        if op == Op.PATCHIFY:
            patch = int(a["patch"])
            return lambda args: PATCH.patchify_fast(args[0], patch)
        if op == Op.ADD_CONST:
            value = g.const(node, "value")
            return lambda args: ADD.sat_add_tiled(args[0], value, out_t.min, out_t.max, out_t.storage)
        if op == Op.ATTN_V:
            full32 = out_t.storage == np.int32 and out_t.min == -(1 << 31) and out_t.max == (1 << 31) - 1
            zp_v, f_v = int(a["v_zp"]), int(a["shift_frac"])
            vmax = max(abs(zp_v), abs(255 - zp_v))

            def av(args):
                x, v = args
                b, h, n, n2 = x.shape
                if x.dtype != np.uint8 or v.dtype != np.uint8:
                    return None
                # the kernel writes int32 itself where |out| <= N*V*2^F + 1 proves that every result fits
                exact32 = full32 and 0 <= f_v <= 62 and n2 * vmax * (1 << f_v) + 1 <= (1 << 31) - 1
                i32 = np.int32 if exact32 else np.int64
                y = AV.attn_v_shift_fast(x.reshape(b * h, n, n2), v.reshape(b * h, n2, -1), int(a["v_zp"]),
                                         int(a["bits"]), int(a["shift_frac"]), int(a["sqrt2_frac_bits"]),
                                         a["rounding"], out_dtype=i32)
                y = y.reshape(b, h, n, -1)
                if not exact32 and y.size and (y.min() < out_t.min or y.max() > out_t.max):
                    raise OverflowError(f"node {node.name!r}: result [{y.min()}, {y.max()}] outside declared "
                                        f"{out_t.name}")
                return y.astype(out_t.storage)

            return av
    except (KeyError, ValueError, TypeError):  # malformed node: let the plain path raise its own error
        return None
    return None


# ---------------------------------------------------------------------------------------------
# Fused chains (where no tap is requested)
# ---------------------------------------------------------------------------------------------


def _find_fusions(g: Graph, plan: Plan) -> dict[int, tuple[tuple[int, ...], Callable, tuple[int, ...]]]:
    """Node index -> (the chain's result nodes, step, nodes in between) for every chain of
    ``kernels.fused`` in ``g``: each intermediate tensor has exactly one consumer, which takes no other input,
    and is no graph output."""
    consumers: dict[str, list[int]] = {}
    for j, n in enumerate(g.nodes):
        for t in n.inputs:
            consumers.setdefault(t, []).append(j)

    def sole_next(i: int) -> int | None:
        t = g.nodes[i].outputs[0]
        cs = consumers.get(t, [])
        if len(cs) != 1 or t in g.outputs or cs[0] <= i or g.nodes[cs[0]].inputs != [t]:
            return None
        return cs[0]

    out = {}
    taken: set[int] = set()
    for i, node in enumerate(g.nodes):
        if i in taken:
            continue
        if node.op == Op.GEMM:
            sl = _slices_requant(g, consumers, i)
            if sl is not None:
                slices, rqs, splits = sl
                step = _gemm_requant_slices(g, plan.step(i), [g.nodes[r] for r in rqs], [g.nodes[q] for q in slices],
                                            [g.nodes[q] for q in splits])
                if step is not None:
                    ends, between = (splits, slices + rqs) if splits else (rqs, slices)
                    out[i] = (tuple(ends), step, tuple(between))
                    taken.update(slices + rqs + splits)
                    continue
        j = sole_next(i)
        if j is None:
            continue
        nxt = g.nodes[j]
        try:
            if node.op == Op.SOFTMAX and nxt.op == Op.LOG2_CODE:
                step = _softmax_log2(g, node, nxt)
            elif node.op == Op.ATTN_V and nxt.op == Op.MERGE_HEADS:
                j2 = sole_next(j)
                if j2 is None or g.nodes[j2].op != Op.REQUANT:
                    continue
                step = _attn_v_merge_requant(g, plan.step(i), nxt, g.nodes[j2])
                if step is not None:
                    out[i] = ((j2,), _one(step), (j,))
                    taken.update((j, j2))
                continue
            elif node.op == Op.GEMM and nxt.op == Op.REQUANT:
                ad = _residual_add(g, consumers, i, j)
                if ad is not None:
                    step = _gemm_requant_add(g, plan.step(i), nxt, g.nodes[ad[0]], ad[1])
                    if step is not None:
                        out[i] = ((ad[0],), _one(step), (j,))
                        taken.update((j, ad[0]))
                        continue
                j2 = sole_next(j)
                if j2 is not None and g.nodes[j2].op == Op.LUT:
                    step = _gemm_requant_lut(g, plan.step(i), nxt, g.nodes[j2])
                    if step is not None:
                        out[i] = ((j2,), _one(step), (j,))
                        taken.update((j, j2))
                        continue
                step = _gemm_requant(g, plan.step(i), nxt)
            else:
                continue
        except (KeyError, ValueError, TypeError):
            continue
        if step is not None:
            out[i] = ((j,), _one(step), ())
            taken.add(j)
    return out


def _one(step: Callable) -> Callable:
    def run(args):
        y = step(args)
        return None if y is None else (y,)

    run.extra_inputs = getattr(step, "extra_inputs", ())
    return run


def _residual_add(g: Graph, consumers: dict[str, list[int]], i: int, j: int) -> tuple[int, str] | None:
    """(the ADD node, its other input) when node j's output (the requantized GEMM i) has one consumer, an ADD
    of it and a tensor that exists before node i runs (the residual stream); else None."""
    t = g.nodes[j].outputs[0]
    cs = consumers.get(t, [])
    if len(cs) != 1 or t in g.outputs or cs[0] <= j:
        return None
    ad = g.nodes[cs[0]]
    if ad.op != Op.ADD or len(ad.inputs) != 2 or ad.inputs.count(t) != 1:
        return None
    other = ad.inputs[1] if ad.inputs[0] == t else ad.inputs[0]
    made = next((k for k, n in enumerate(g.nodes) if other in n.outputs), None)
    if made is None and other not in g.inputs:
        return None
    return (cs[0], other) if made is None or made < i else None


def _slices_requant(g: Graph, consumers: dict[str, list[int]], i: int
                    ) -> tuple[list[int], list[int], list[int]] | None:
    """(slice nodes, requantize nodes, split-heads nodes) when every consumer of node i's output is a SLICE
    whose only consumer is a REQUANT (no graph outputs among them), else None.  The third list holds each
    requantize's sole consumer when every one is a SPLIT_HEADS with the same attributes (the chain then ends
    there and writes the heads layout), else it is empty."""
    t = g.nodes[i].outputs[0]
    cs = consumers.get(t, [])
    if len(cs) < 2 or t in g.outputs:
        return None
    rqs = []
    for q in cs:
        sn = g.nodes[q]
        if sn.op != Op.SLICE or sn.inputs != [t] or q <= i or sn.outputs[0] in g.outputs:
            return None
        nx = consumers.get(sn.outputs[0], [])
        if len(nx) != 1 or g.nodes[nx[0]].op != Op.REQUANT or g.nodes[nx[0]].inputs != [sn.outputs[0]]:
            return None
        rqs.append(nx[0])
    splits = []
    for r in rqs:
        o = g.nodes[r].outputs[0]
        nx = consumers.get(o, [])
        sp = g.nodes[nx[0]] if len(nx) == 1 else None
        if (sp is None or sp.op != Op.SPLIT_HEADS or sp.inputs != [o] or o in g.outputs
                or (splits and sp.attrs != g.nodes[splits[0]].attrs)):
            return cs, rqs, []
        splits.append(nx[0])
    return cs, rqs, splits


def _gemm_requant_slices(g: Graph, gemm_step, rqs: list[Node], slices: list[Node], splits: list[Node]
                         ) -> Callable | None:
    if not isinstance(gemm_step, _Gemm) or gemm_step.pk.path not in FU.CHAIN_PATHS:
        return None
    heads = None
    if splits:  # [G*N, H*d] -> [G*H, N, d] as SPLIT_HEADS defines it
        hh, groups = int(splits[0].attrs["heads"]), int(splits[0].attrs.get("windows", 1))
        gn = g.tensors[splits[0].inputs[0]].type.shape[0]
        if hh < 1 or groups < 1 or gn % groups:
            return None
        heads = (hh, groups, gn // groups)
    starts = [int(s.attrs["start"]) for s in slices]
    widths = {int(s.attrs["stop"]) - int(s.attrs["start"]) for s in slices}
    dts = {g.tensors[r.outputs[0]].type.storage for r in rqs}
    if len(widths) != 1 or len(dts) != 1:
        return None
    w = widths.pop()
    rcs = []
    for rq in rqs:
        rc = _requant_consts(g, rq, w)
        if rc is None:
            return None
        rcs.append(rc)
    pk, dt = gemm_step.pk, dts.pop()
    consts = FU.slice_consts(starts, w, rcs, pk.n)
    if consts is None:
        return None

    def step(args):
        x = args[0]
        b, m, k = x.shape
        ys = FU.gemm_requant_slices(np.ascontiguousarray(x).reshape(b * m, k), pk, starts, w, rcs, dt, heads,
                                    consts)
        if ys is None:
            return None
        return tuple(ys) if heads is not None else tuple(y.reshape(b, m, w) for y in ys)

    return step


def _softmax_log2(g: Graph, sm: Node, lg: Node) -> Callable | None:
    mid_t = g.tensors[sm.outputs[0]].type
    out_t = g.tensors[lg.outputs[0]].type
    if mid_t.signed:
        return None
    table = L2.log2_code_table(g.const(lg, "thresholds"), int(lg.attrs["bits"]), mid_t.bits)
    if table is None:
        return None
    a = sm.attrs
    attrs = (int(a["multiplier"]), int(a["shift"]), int(a["frac_bits"]), int(a["lut_bits"]), int(a["out_bits"]),
             a["rounding"])

    def step(args):
        return FU.softmax_log2_code(args[0], *attrs, table, out_t.storage)

    return step


def _requant_consts(g: Graph, rq: Node, channels: int | None = None):
    """``RequantConsts`` of a REQUANT node (over its input's last axis, or ``channels``), saturating to its
    output type; None where the fast kernel's preconditions fail."""
    in_t, out_t = g.tensors[rq.inputs[0]].type, g.tensors[rq.outputs[0]].type
    off = g.const(rq, "offset") if "offset" in rq.consts else 0
    return RQ.RequantConsts.make(in_t.shape[-1] if channels is None else channels, g.const(rq, "multiplier"),
                                 g.const(rq, "shift"), off, int(rq.attrs["zero_point"]), out_t.min, out_t.max,
                                 rq.attrs["rounding"])


def _gemm_requant_lut(g: Graph, gemm_step, rq: Node, lut: Node) -> Callable | None:
    if not isinstance(gemm_step, _Gemm) or gemm_step.pk.path not in FU.CHAIN_PATHS:
        return None
    out_t = g.tensors[lut.outputs[0]].type
    rc = _requant_consts(g, rq)
    if rc is None:
        return None
    table, lo, pk = g.const(lut, "table"), int(lut.attrs["in_min"]), gemm_step.pk

    def step(args):
        x = args[0]
        b, m, k = x.shape
        y = FU.gemm_requant_lut(np.ascontiguousarray(x).reshape(b * m, k), pk, rc, table, lo, out_t.storage)
        return None if y is None else y.reshape(b, m, -1)

    return step


def _attn_v_merge_requant(g: Graph, av_step, merge: Node, rq: Node) -> Callable | None:
    if av_step is None:
        return None
    out_t = g.tensors[rq.outputs[0]].type
    rc = _requant_consts(g, rq)
    groups = int(merge.attrs.get("windows", 1))
    if rc is None or groups < 1:
        return None

    def step(args):
        y = av_step(args)
        return None if y is None else FU.merge_heads_requant(y, groups, rc, out_t.storage)

    return step


def _gemm_requant_add(g: Graph, gemm_step, rq: Node, add: Node, residual: str) -> Callable | None:
    """GEMM -> requantize -> ADD with ``residual``: the step takes the GEMM's input and then the residual
    (``extra_inputs``, appended by ``run_graph``)."""
    if not isinstance(gemm_step, _Gemm) or gemm_step.pk.path not in FU.CHAIN_PATHS:
        return None
    rc = _requant_consts(g, rq)
    out_t = g.tensors[add.outputs[0]].type
    if rc is None or out_t.min < -(1 << 31) or out_t.max > (1 << 31) - 1:
        return None
    pk = gemm_step.pk

    def step(args):
        x, res = args
        b, m, k = x.shape
        y = FU.gemm_requant_add(np.ascontiguousarray(x).reshape(b * m, k), pk, rc, res.reshape(b * m, -1),
                                out_t.min, out_t.max, out_t.storage)
        return None if y is None else y.reshape(b, m, -1)

    step.extra_inputs = (residual,)
    return step


def _gemm_requant(g: Graph, gemm_step, rq: Node) -> Callable | None:
    if not isinstance(gemm_step, _Gemm) or gemm_step.pk.path not in FU.CHAIN_PATHS:
        return None
    out_t = g.tensors[rq.outputs[0]].type
    rc = _requant_consts(g, rq)
    if rc is None:
        return None
    pk = gemm_step.pk
    consts = FU.slice_consts([0], pk.n, [rc], pk.n)
    if consts is None:
        return None

    def step(args):
        x = args[0]
        b, m, k = x.shape
        y = FU.gemm_requant(np.ascontiguousarray(x).reshape(b * m, k), pk, rc, out_t.storage, consts)
        return None if y is None else y.reshape(b, m, -1)

    return step
