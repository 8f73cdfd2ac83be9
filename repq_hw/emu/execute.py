"""Execute an integer graph on a batch of images, with either kernel family.

``backend="ref"`` calls the numpy references of ``repq_hw.kernels`` (int64, the definition);
``backend="fast"`` calls their Numba twins. Data-movement ops are plain numpy index operations shared by
both (they move integers, they compute nothing). Every tensor is kept when ``keep_all`` is set: these are
the taps that golden vectors and the fidelity report read.

Shapes in the graph are per image; here every array has a leading batch axis B. No op mixes images, so an
image's results do not depend on the batch it is in.

Every call checks its arguments (inputs: numpy integer arrays of the declared per-image shape, values inside
the declared type) and runs the validator's structural checks (``validate_graph(g, deep=False)``), so a
graph built in memory without the validator is refused the same way a file is.  Wherever a kernel takes a
narrower dtype than the array it is given, the executor narrows through :func:`_cast`, which refuses a value
that does not fit: no executor path wraps a value silently.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from repq_hw.errors import InputError
from repq_hw.ir.graph import Graph, Node
from repq_hw.ir.ops import Op
from repq_hw.ir.validate import IRValidationError, validate_graph
from repq_hw.kernels import KERNELS
from repq_hw.kernels.patchify import patchify_ref
from repq_hw.kernels.windows import patch_merge, window_partition, window_reverse

BACKENDS = ("ref", "fast")


class InputTypeError(InputError, TypeError):
    """An emulator input of the wrong kind (not a numpy integer array, not a dict of them)."""


def _kernel(name: str, backend: str) -> Callable:
    return KERNELS[name][BACKENDS.index(backend)]


def _check_input(g: Graph, name: str, x: np.ndarray) -> np.ndarray:
    """A graph input as its storage dtype, or InputError: only numpy integer arrays are accepted (no lists,
    no torch tensors, no bool or float arrays), of shape [B >= 1, *declared shape], every value inside the
    declared type (no clipping, no wrap)."""
    t = g.tensors[name].type
    want = f"[B, {', '.join(map(str, t.shape))}] integer numpy array with values in {t.name} [{t.min}, {t.max}]"
    if not isinstance(x, np.ndarray):
        kind = f"{type(x).__module__}.{type(x).__name__}"
        hint = " (convert with .numpy())" if type(x).__module__.startswith("torch") else ""
        raise InputTypeError(f"input {name!r}: expected an integer numpy array ({want}), got {kind}{hint}")
    if x.dtype.kind not in "iu":
        raise InputTypeError(f"input {name!r}: expected an integer numpy array ({want}), got dtype {x.dtype}")
    if x.ndim != len(t.shape) + 1 or tuple(x.shape[1:]) != t.shape:
        raise InputError(f"input {name!r}: expected shape [B, {', '.join(map(str, t.shape))}], got {list(x.shape)}")
    if x.shape[0] < 1:
        raise InputError(f"input {name!r}: empty batch (shape {list(x.shape)}); B must be >= 1")
    lo, hi = int(x.min()), int(x.max())
    if lo < t.min or hi > t.max:
        bad = int(np.flatnonzero((x < t.min) | (x > t.max))[0])
        raise InputError(f"input {name!r}: values [{lo}, {hi}] outside {t.name} [{t.min}, {t.max}] (first at "
                         f"index {tuple(int(i) for i in np.unravel_index(bad, x.shape))}: {int(x.reshape(-1)[bad])}); codes are never "
                         "clipped or wrapped")
    return x.astype(t.storage)


def _cast(node: Node, what: str, x: np.ndarray, dtype) -> np.ndarray:
    """x as dtype, refusing (never wrapping) a value that does not fit."""
    dtype = np.dtype(dtype)
    if x.dtype == dtype:
        return x
    if not np.can_cast(x.dtype, dtype, "safe"):
        info = np.iinfo(dtype)
        lo, hi = (int(x.min()), int(x.max())) if x.size else (0, 0)
        if lo < info.min or hi > info.max:
            raise IRValidationError(f"node {node.name!r} ({node.op.value}): {what} values [{lo}, {hi}] do not fit "
                                    f"the {dtype} its kernel takes; refusing to wrap them")
    return x.astype(dtype)


def run_node(g: Graph, node: Node, args: list[np.ndarray], backend: str) -> np.ndarray:
    """Compute one node's output (batched) from its batched inputs."""
    a = node.attrs
    out_t = g.tensors[node.outputs[0]].type
    op = node.op
    x = args[0]
    B = x.shape[0]
    if op == Op.GEMM:
        m, k = x.shape[1:]
        y = _kernel("gemm_zp", backend)(_cast(node, "input", x, np.uint8).reshape(B * m, k), int(a["a_zp"]),
                                        g.const(node, "weight"), g.const(node, "w_zp"), g.const(node, "bias"))
        return y.reshape(B, m, -1)
    if op == Op.BMM_QK:
        h, n, d = x.shape[1:]
        k = args[1]
        y = _kernel("bmm_zp", backend)(_cast(node, "q", x, np.uint8).reshape(B * h, n, d), int(a["q_zp"]),
                                       _cast(node, "k", k, np.uint8).reshape(B * h, k.shape[2], d), int(a["k_zp"]))
        return y.reshape(B, h, n, -1)
    if op == Op.ATTN_V:
        h, n, n2 = x.shape[1:]
        v = args[1]
        y = _kernel("attn_v_shift", backend)(_cast(node, "codes", x, np.uint8).reshape(B * h, n, n2),
                                             _cast(node, "v", v, np.uint8).reshape(B * h, n2, -1), int(a["v_zp"]),
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
            _cast(node, "input", x, np.int32).reshape(B * t, c), int(a["eps_q"]), int(a["frac_bits"]),
            g.const(node, "multiplier").astype(np.int64), g.const(node, "shift").astype(np.int64),
            g.const(node, "offset").astype(np.int64), int(a["zero_point"]), out_t.min, out_t.max, a["rounding"])
        return _narrow(node, y.reshape(B, t, c), out_t)
    if op == Op.SOFTMAX:
        y = _kernel("softmax", backend)(_cast(node, "input", x, np.int32), int(a["multiplier"]), int(a["shift"]),
                                        int(a["frac_bits"]), int(a["lut_bits"]), int(a["out_bits"]), a["rounding"])
        return _narrow(node, y, out_t)
    if op == Op.LOG2_CODE:
        return _narrow(node, _kernel("log2_code", backend)(x, g.const(node, "thresholds"), int(a["bits"])), out_t)
    if op == Op.LUT:
        return _narrow(node, _kernel("lut_lookup", backend)(x, g.const(node, "table"), int(a["in_min"])), out_t)
    if op == Op.ADD:
        s = x.astype(np.int64) + args[1].astype(np.int64)
        return np.clip(s, out_t.min, out_t.max).astype(out_t.storage)
    if op == Op.ADD_CONST:  # value [V0, ...] tiled along axis 0: out[t] = sat(x[t] + value[t mod V0])
        v = g.const(node, "value").astype(np.int64)
        reps = x.shape[1] // v.shape[0]
        xs = x.astype(np.int64).reshape(B, reps, *v.shape)
        s = (xs + v[None, None]).reshape(x.shape)
        return np.clip(s, out_t.min, out_t.max).astype(out_t.storage)
    if op == Op.AVG_POOL:
        return _narrow(node, _kernel("avg_pool", backend)(x, a["rounding"]), out_t)
    if op == Op.PATCHIFY:
        return patchify_ref(x, int(a["patch"]))
    if op == Op.CONCAT_TOKENS:
        r = _cast(node, "rows", g.const(node, "rows"), x.dtype)
        rows = np.broadcast_to(r[None], (B, *r.shape))
        return np.concatenate([rows, x], axis=1)
    if op == Op.SLICE:
        return np.ascontiguousarray(x[..., int(a["start"]):int(a["stop"])])
    if op == Op.SPLIT_HEADS:  # [G*N, H*d] -> [G*H, N, d], G = windows (1 for ViT)
        h, w = int(a["heads"]), int(a.get("windows", 1))
        gn, c = x.shape[1:]
        y = x.reshape(B, w, gn // w, h, c // h).transpose(0, 1, 3, 2, 4)
        return np.ascontiguousarray(y.reshape(B, w * h, gn // w, c // h))
    if op == Op.MERGE_HEADS:  # [G*H, N, d] -> [G*N, H*d]
        w = int(a.get("windows", 1))
        gh, n, d = x.shape[1:]
        y = x.reshape(B, w, gh // w, n, d).transpose(0, 1, 3, 2, 4)
        return np.ascontiguousarray(y.reshape(B, w * n, (gh // w) * d))
    if op == Op.WINDOW_PARTITION:
        return window_partition(x, int(a["height"]), int(a["width"]), int(a["window"]), int(a["shift"]),
                                int(a["pad_value"]))
    if op == Op.WINDOW_REVERSE:
        return window_reverse(x, int(a["height"]), int(a["width"]), int(a["window"]), int(a["shift"]))
    if op == Op.PATCH_MERGE:
        return patch_merge(x, int(a["height"]), int(a["width"]))
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
    return y.astype(t.storage, copy=False)


def run_graph(g: Graph, inputs: dict[str, np.ndarray] | np.ndarray, backend: str = "fast",
              keep_all: bool = False, progress: Callable[[Node], None] | None = None) -> dict[str, np.ndarray]:
    """Run the graph on a batch.

    Args:
        g: a validated graph.
        inputs: {input name: [B, ...] numpy integer array}, or the array of the single input.  Only numpy
            integer arrays are accepted (a list, a torch tensor, a float or bool array raises
            InputError), with B >= 1 and every value inside the input's declared type.
        backend: "ref" (numpy references) or "fast" (Numba kernels).
        keep_all: return every tensor (taps), not only the graph outputs.
        progress: called after each node.

    Returns:
        {tensor name: batched array}.

    Raises:
        InputError: a bad argument or input array (InputTypeError for the wrong kind of object);
            IRValidationError for a graph that breaks an IR rule (structure, operand types, attributes).
    """
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise InputError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if not isinstance(g, Graph):
        raise InputTypeError(f"expected a repq_hw Graph, got {type(g).__name__}")
    plan = None
    if backend == "fast":
        from repq_hw.emu import fast

        if fast.ENABLED:
            try:
                plan = fast.prepare(g)
            except Exception:
                validate_graph(g, deep=False)  # a malformed graph: report it as the validator words it
                raise
    if plan is None or not plan.validated:
        validate_graph(g, deep=False)  # the fast plan's key covers all it reads: once per plan
        if plan is not None:
            plan.validated = True
    if not isinstance(inputs, (dict, np.ndarray)):
        if len(g.inputs) == 1:
            _check_input(g, g.inputs[0], inputs)  # raises, naming the input and what it expects
        raise InputTypeError(f"inputs must be a dict {{input name: numpy integer array}}, got "
                             f"{type(inputs).__name__}")
    if isinstance(inputs, np.ndarray):
        if len(g.inputs) != 1:
            raise InputError(f"graph has inputs {g.inputs}; pass a dict")
        inputs = {g.inputs[0]: inputs}
    missing = [n for n in g.inputs if n not in inputs]
    if missing:
        raise InputError(f"missing graph inputs: {missing}")
    extra = sorted(str(n) for n in inputs if n not in g.inputs)
    if extra:
        raise InputError(f"unknown graph inputs: {extra} (the graph's inputs are {g.inputs})")
    env = {n: _check_input(g, n, inputs[n]) for n in g.inputs}
    batch = {v.shape[0] for v in env.values()}
    if len(batch) != 1:
        raise InputError(f"inputs disagree on the batch size: {sorted(batch)}")
    last_use = {}
    for i, node in enumerate(g.nodes):
        for t in node.inputs:
            last_use[t] = i
    fuse = plan is not None and fast.FUSE and not keep_all  # a fused chain's intermediate is never stored
    chained: dict[int, np.ndarray] = {}  # node index -> its output, computed by a chain that started earlier
    inside: set[int] = set()  # nodes inside a chain that ran: nothing to compute
    for i, node in enumerate(g.nodes):
        y = chained.pop(i, None)
        if y is None and i not in inside:
            args = [env[t] for t in node.inputs]
            chain = plan.fusion(i) if fuse else None
            if chain is not None:  # None from the step: run the chain's nodes unfused
                yc = chain[1](args + [env[t] for t in getattr(chain[1], "extra_inputs", ())])
            else:
                yc = None
            if yc is not None:
                chained.update(zip(chain[0], yc))  # the chain's outputs, stored when their nodes come
                inside.update(chain[2])
            else:
                step = plan.step(i) if plan is not None else None
                if step is not None:
                    y = step(args)  # None: a precondition of the fast kernel failed, run the plain one
                if y is None:
                    y = run_node(g, node, args, backend)
        if y is not None:
            out_t = g.tensors[node.outputs[0]].type
            if y.shape[1:] != out_t.shape:
                raise RuntimeError(f"node {node.name!r}: produced {y.shape[1:]}, declared {out_t.shape}")
            env[node.outputs[0]] = y
        if not keep_all:
            for t in node.inputs:
                if last_use.get(t) == i and t not in g.outputs and t not in g.inputs:
                    env.pop(t, None)  # (a chain's intermediate was never stored)
        if progress is not None:
            progress(node)
    return env if keep_all else {n: env[n] for n in g.outputs}
