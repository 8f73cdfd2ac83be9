"""The prepared plan of the ``fast`` backend: per-node constants packed once, fast kernels per op.

:func:`prepare` builds (once per graph, cached on the graph object) one step per node:

* GEMM: weights packed for the CPU's fastest exact kernel (``kernels.gemm_vnni``: VNNI, AVX2 or the
  portable fallback), the zero-point corrections folded into per-column constants;
* BMM_QK: ``gemm_vnni.bmm_zp_fast`` (the second operand is data, packed per head in the kernel);
* REQUANT, LAYERNORM, SOFTMAX, LOG2_CODE, LUT, ADD, ATTN_V: the branch-free kernels of
  ``kernels.fast_ops``, with their constants checked once (overflow cannot happen, tables built from
  the reference by exhaustion);
* anything else, and any node whose precondition fails, runs ``execute.run_node`` (the plain Numba
  kernels), so every tensor is what the reference computes, errors included.

Switches (no environment variable changes results): ``fast.ENABLED = False`` makes the ``fast`` backend
use the plain per-op Numba kernels only; ``kernels.gemm_vnni.force_path("portable")`` forces the GEMMs
onto the portable kernel (the plan is rebuilt when the forced path changes).

The cache key covers everything a plan depends on: the forced GEMM path, a digest of the structure the
steps read (every node's op, tensors, attributes and constant roles; every tensor's type) and the content
of every constant (dtype, shape and a CRC-32 of its bytes, about 3 ms per 20 MB).  Graph constants are
read-only arrays (``ir.graph.ConstantStore``), so an in-place edit raises; one that slips past (a view
taken before the array was stored, ``setflags(write=True)``), a replaced array or an edited attribute
changes the key and the plan is rebuilt.  A stale plan cannot be returned.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Callable

import numpy as np

from repq_hw.ir.graph import Graph, Node
from repq_hw.ir.ops import Op
from repq_hw.kernels import fast_ops as F
from repq_hw.kernels import gemm_vnni as G

__all__ = ["ENABLED", "Plan", "prepare"]

ENABLED = True
"""When False, ``run_graph(..., "fast")`` runs the plain per-op Numba kernels (``KERNELS``) only."""

_ATTR = "_repq_fast_plan"
_UNBUILT = object()


class Plan:
    """One step per node (None = run ``execute.run_node``), plus what the packing cost."""

    def __init__(self, g: Graph, lazy: bool = True, key: tuple | None = None):
        self.key = _key(g) if key is None else key
        self._g = g
        self._steps: list = [_UNBUILT] * len(g.nodes)
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

    def gemm_paths(self) -> dict[str, str]:
        return {s.node: s.path for s in self.steps if isinstance(s, _Gemm)}


def _json_default(o):
    return f"{type(o).__name__}:{o!r}"


def _key(g: Graph) -> tuple:
    """What a plan depends on: the forced GEMM path, the structure (nodes and tensor types) and the content
    of every constant.  Computed on every ``prepare``: a plan can never be stale."""
    h = hashlib.sha256()
    nodes = [[n.name, getattr(n.op, "value", n.op), n.inputs, n.outputs, n.attrs, n.consts] for n in g.nodes]
    types = [[k, t.type.name, t.type.shape] for k, t in g.tensors.items()]
    h.update(json.dumps([nodes, types], sort_keys=True, default=_json_default).encode())
    consts = tuple((k, a.dtype.str, a.shape, zlib.crc32(np.ascontiguousarray(a)))
                   for k, a in sorted(g.constants.items()))
    return (G.FORCE_PATH, h.hexdigest(), consts)


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
            off = g.const(node, "offset") if "offset" in node.consts else 0
            rc = F.RequantConsts.make(in_t.shape[-1], g.const(node, "multiplier"), g.const(node, "shift"), off,
                                      int(a["zero_point"]), out_t.min, out_t.max, a["rounding"])
            if rc is None:
                return None
            return lambda args: F.requant_fast(args[0], rc, out_t.storage)
        if op == Op.LAYERNORM:
            c = in_t.shape[-1]
            rc = F.RequantConsts.make(c, g.const(node, "multiplier"), g.const(node, "shift"),
                                      g.const(node, "offset"), int(a["zero_point"]), out_t.min, out_t.max,
                                      a["rounding"])
            if rc is None:
                return None
            eps, fb = int(a["eps_q"]), int(a["frac_bits"])

            def ln(args):
                x = args[0]
                b, t, cc = x.shape
                y = F.layernorm_requant_fast(x.reshape(b * t, cc), eps, fb, rc, out_t.storage)
                return None if y is None else y.reshape(b, t, cc)

            return ln
        if op == Op.SOFTMAX:
            def sm(args):
                y = F.softmax_fast(args[0], int(a["multiplier"]), int(a["shift"]), int(a["frac_bits"]),
                                   int(a["lut_bits"]), int(a["out_bits"]), a["rounding"])
                return None if y is None else y.astype(out_t.storage, copy=False)

            return sm
        if op == Op.LOG2_CODE:
            if in_t.signed:
                return None
            table = F.log2_code_table(g.const(node, "thresholds"), int(a["bits"]), in_t.bits)
            if table is None:
                return None
            return lambda args: F.table_lookup(args[0], table, out_t.storage)
        if op == Op.LUT:
            table, lo = g.const(node, "table"), int(a["in_min"])
            return lambda args: F.lookup_fast(args[0], table, lo, out_t.storage)
        if op == Op.ADD:
            return lambda args: F.sat_add(args[0], args[1], out_t.min, out_t.max, out_t.storage)
        if op == Op.ATTN_V:
            def av(args):
                x, v = args
                b, h, n, n2 = x.shape
                if x.dtype != np.uint8 or v.dtype != np.uint8:
                    return None
                y = F.attn_v_fast(x.reshape(b * h, n, n2), v.reshape(b * h, n2, -1), int(a["v_zp"]),
                                  int(a["bits"]), int(a["shift_frac"]), int(a["sqrt2_frac_bits"]), a["rounding"])
                y = y.reshape(b, h, n, -1)
                if y.size and (y.min() < out_t.min or y.max() > out_t.max):
                    raise OverflowError(f"node {node.name!r}: result [{y.min()}, {y.max()}] outside declared "
                                        f"{out_t.name}")
                return y.astype(out_t.storage)

            return av
    except (KeyError, ValueError, TypeError):  # malformed node: let the plain path raise its own error
        return None
    return None
