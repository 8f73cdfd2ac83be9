"""Execute an integer graph on a batch of images, with either kernel family.

``backend="ref"`` calls the numpy references of ``repq_hw.kernels`` (int64, the definition);
``backend="fast"`` calls their Numba twins. Data-movement ops are plain numpy index operations shared by
both (they move integers, they compute nothing). Every tensor is kept when ``keep_all`` is set: these are
the taps that golden vectors and the fidelity report read.

Shapes in the graph are per image; here every array has a leading batch axis B. No op mixes images, so an
image's results do not depend on the batch it is in.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from repq_hw.ir.graph import Graph, Node
from repq_hw.ir.ops import Op
from repq_hw.kernels import KERNELS

BACKENDS = ("ref", "fast")


def _kernel(name: str, backend: str) -> Callable:
    return KERNELS[name][BACKENDS.index(backend)]


def _check_input(g: Graph, name: str, x: np.ndarray) -> np.ndarray:
    t = g.tensors[name].type
    if not isinstance(x, np.ndarray) or x.dtype.kind not in "iu":
        raise TypeError(f"input {name!r}: expected an integer numpy array, got "
                        f"{getattr(x, 'dtype', type(x).__name__)}")
    if x.ndim != len(t.shape) + 1 or tuple(x.shape[1:]) != t.shape:
        raise ValueError(f"input {name!r}: expected shape [B, {', '.join(map(str, t.shape))}], got {list(x.shape)}")
    if x.size and (x.min() < t.min or x.max() > t.max):
        raise ValueError(f"input {name!r}: values [{x.min()}, {x.max()}] outside {t.name}")
    return x.astype(t.storage)


def run_node(g: Graph, node: Node, args: list[np.ndarray], backend: str) -> np.ndarray:
    """Compute one node's output (batched) from its batched inputs."""
    a = node.attrs
    out_t = g.tensors[node.outputs[0]].type
    op = node.op
    x = args[0]
    B = x.shape[0]
    if op == Op.GEMM:
        m, k = x.shape[1:]
        y = _kernel("gemm_zp", backend)(x.reshape(B * m, k).astype(np.uint8), int(a["a_zp"]),
                                        g.const(node, "weight"), g.const(node, "w_zp"), g.const(node, "bias"))
        return y.reshape(B, m, -1)
    if op == Op.BMM_QK:
        h, n, d = x.shape[1:]
        k = args[1]
        y = _kernel("bmm_zp", backend)(x.reshape(B * h, n, d).astype(np.uint8), int(a["q_zp"]),
                                       k.reshape(B * h, k.shape[2], d).astype(np.uint8), int(a["k_zp"]))
        return y.reshape(B, h, n, -1)
    if op == Op.ATTN_V:
        h, n, n2 = x.shape[1:]
        v = args[1]
        y = _kernel("attn_v_shift", backend)(x.reshape(B * h, n, n2).astype(np.uint8),
                                             v.reshape(B * h, n2, -1).astype(np.uint8), int(a["v_zp"]),
                                             int(a["bits"]), int(a["shift_frac"]), int(a["sqrt2_frac_bits"]),
                                             a["rounding"])
        return _narrow(node, y.reshape(B, h, n, -1), out_t)
    if op == Op.REQUANT:
        off = g.const(node, "offset") if "offset" in node.consts else 0
        return _kernel("requantize", backend)(x, _vec(g.const(node, "multiplier")), _vec(g.const(node, "shift")),
                                              _vec(off), int(a["zero_point"]), out_t.min, out_t.max,
                                              a["rounding"], out_t.storage)
    if op == Op.LAYERNORM:
        t, c = x.shape[1:]
        y = _kernel("layernorm_requant", backend)(
            x.reshape(B * t, c).astype(np.int32), int(a["eps_q"]), int(a["frac_bits"]),
            g.const(node, "multiplier").astype(np.int64), g.const(node, "shift").astype(np.int64),
            g.const(node, "offset").astype(np.int64), int(a["zero_point"]), out_t.min, out_t.max, a["rounding"])
        return y.reshape(B, t, c).astype(out_t.storage)
    if op == Op.SOFTMAX:
        y = _kernel("softmax", backend)(x.astype(np.int32), int(a["multiplier"]), int(a["shift"]),
                                        int(a["frac_bits"]), int(a["lut_bits"]), int(a["out_bits"]), a["rounding"])
        return y.astype(out_t.storage)
    if op == Op.LOG2_CODE:
        return _kernel("log2_code", backend)(x, g.const(node, "thresholds"), int(a["bits"])).astype(out_t.storage)
    if op == Op.LUT:
        return _kernel("lut_lookup", backend)(x, g.const(node, "table"), int(a["in_min"])).astype(out_t.storage)
    if op == Op.ADD:
        s = x.astype(np.int64) + args[1].astype(np.int64)
        return np.clip(s, out_t.min, out_t.max).astype(out_t.storage)
    if op == Op.ADD_CONST:
        s = x.astype(np.int64) + g.const(node, "value").astype(np.int64)[None]
        return np.clip(s, out_t.min, out_t.max).astype(out_t.storage)
    if op == Op.PATCHIFY:
        p = int(a["patch"])
        c, hh, ww = x.shape[1:]
        y = x.reshape(B, c, hh // p, p, ww // p, p).transpose(0, 2, 4, 1, 3, 5)  # B, gh, gw, c, ky, kx
        return np.ascontiguousarray(y.reshape(B, (hh // p) * (ww // p), c * p * p))
    if op == Op.CONCAT_TOKENS:
        rows = np.broadcast_to(g.const(node, "rows").astype(x.dtype)[None], (B, *g.const(node, "rows").shape))
        return np.concatenate([rows, x], axis=1)
    if op == Op.SLICE:
        return np.ascontiguousarray(x[..., int(a["start"]):int(a["stop"])])
    if op == Op.SPLIT_HEADS:
        h = int(a["heads"])
        n, c = x.shape[1:]
        return np.ascontiguousarray(x.reshape(B, n, h, c // h).transpose(0, 2, 1, 3))
    if op == Op.MERGE_HEADS:
        h, n, d = x.shape[1:]
        return np.ascontiguousarray(x.transpose(0, 2, 1, 3).reshape(B, n, h * d))
    if op == Op.SELECT_TOKEN:
        i = int(a["index"])
        return np.ascontiguousarray(x[:, i:i + 1])
    raise NotImplementedError(f"node {node.name!r}: no executor for op {op.value}")  # pragma: no cover


def _vec(v) -> np.ndarray | int:
    if isinstance(v, np.ndarray):
        v = v.astype(np.int64)
        return int(v[0]) if v.shape == (1,) else v
    return v


def _narrow(node: Node, y: np.ndarray, t) -> np.ndarray:
    """Narrow a wide kernel result to the declared type; the validator proved it fits, so this raises if not."""
    if y.size and (y.min() < t.min or y.max() > t.max):
        raise OverflowError(f"node {node.name!r}: result [{y.min()}, {y.max()}] outside declared {t.name}")
    return y.astype(t.storage)


def run_graph(g: Graph, inputs: dict[str, np.ndarray] | np.ndarray, backend: str = "fast",
              keep_all: bool = False, progress: Callable[[Node], None] | None = None) -> dict[str, np.ndarray]:
    """Run the graph on a batch.

    Args:
        g: a validated graph.
        inputs: {input name: [B, ...] integer array}, or the array of the single input.
        backend: "ref" (numpy references) or "fast" (Numba kernels).
        keep_all: return every tensor (taps), not only the graph outputs.
        progress: called after each node.

    Returns:
        {tensor name: batched array}.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if isinstance(inputs, np.ndarray):
        if len(g.inputs) != 1:
            raise ValueError(f"graph has inputs {g.inputs}; pass a dict")
        inputs = {g.inputs[0]: inputs}
    missing = [n for n in g.inputs if n not in inputs]
    if missing:
        raise ValueError(f"missing graph inputs: {missing}")
    env = {n: _check_input(g, n, inputs[n]) for n in g.inputs}
    batch = {v.shape[0] for v in env.values()}
    if len(batch) != 1:
        raise ValueError(f"inputs disagree on the batch size: {sorted(batch)}")
    last_use = {}
    for i, node in enumerate(g.nodes):
        for t in node.inputs:
            last_use[t] = i
    plan = None
    if backend == "fast":
        from repq_hw.emu import fast

        if fast.ENABLED:
            plan = fast.prepare(g)
    for i, node in enumerate(g.nodes):
        args = [env[t] for t in node.inputs]
        y = None
        step = plan.step(i) if plan is not None else None
        if step is not None:
            y = step(args)  # None: a precondition of the fast kernel failed, run the plain one
        if y is None:
            y = run_node(g, node, args, backend)
        out_t = g.tensors[node.outputs[0]].type
        if y.shape[1:] != out_t.shape:
            raise RuntimeError(f"node {node.name!r}: produced {y.shape[1:]}, declared {out_t.shape}")
        env[node.outputs[0]] = y
        if not keep_all:
            for t in node.inputs:
                if last_use.get(t) == i and t not in g.outputs and t not in g.inputs:
                    del env[t]
        if progress is not None:
            progress(node)
    return env if keep_all else {n: env[n] for n in g.outputs}
