"""A small builder that appends nodes, tensors and constants to an IR graph, and the requantization
constants made from float scales (the only place, with ``constants.py``, where floats become integers)."""

from __future__ import annotations

import numpy as np

from repq_hw.ir.graph import Graph, IntType, Node, TensorInfo, int_type
from repq_hw.ir.ops import Op
from repq_hw.lower.constants import quantize_multiplier


def signed_multipliers(reals) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (multiplier int32 in (-2^31, 2^31), shift in [0, 62]) with M * 2^-shift ~= real.

    The sign of a real factor (e.g. a negative LayerNorm gamma) goes into the multiplier.
    """
    reals = np.atleast_1d(np.asarray(reals, dtype=np.float64))
    ms, ss = [], []
    for r in reals:
        m, s = quantize_multiplier(abs(float(r)))
        ms.append(-m if r < 0 else m)
        ss.append(s)
    return np.array(ms, dtype=np.int32), np.array(ss, dtype=np.int8)


def smallest_int_type(values: np.ndarray, shape=None) -> IntType:
    """The narrowest signed/unsigned integer type that holds values (at least 8 bits)."""
    lo, hi = (int(values.min()), int(values.max())) if values.size else (0, 0)
    shape = values.shape if shape is None else shape
    if lo >= 0:
        bits = max(8, hi.bit_length())
        return IntType(False, bits, shape)
    bits = max(8, max(hi.bit_length(), (-lo - 1).bit_length()) + 1)
    return IntType(True, bits, shape)


class GraphBuilder:
    def __init__(self, meta: dict | None = None):
        self.g = Graph([], {}, [], [], {}, {}, meta or {})

    def tensor(self, name: str, type_name: str, shape, scale=None, zero_point: int = 0, layout: str = "") -> str:
        if name in self.g.tensors:
            raise ValueError(f"tensor {name!r} declared twice")
        self.g.tensors[name] = TensorInfo(name, int_type(type_name, shape), scale, int(zero_point), layout)
        return name

    def input(self, name: str, type_name: str, shape, scale=None, zero_point: int = 0, layout: str = "") -> str:
        self.tensor(name, type_name, shape, scale, zero_point, layout)
        self.g.inputs.append(name)
        return name

    def const(self, name: str, values: np.ndarray, type_: IntType | None = None) -> str:
        values = np.ascontiguousarray(values)
        if values.dtype.kind not in "iu":
            raise TypeError(f"constant {name!r} must be integer, got {values.dtype}")
        t = type_ or smallest_int_type(values)
        self.g.constants[name] = values.astype(t.storage)
        self.g.const_types[name] = IntType(t.signed, t.bits, values.shape)
        return name

    def node(self, name: str, op: Op, inputs: list[str], out_type: str, out_shape, attrs=None, consts=None,
             scale=None, zero_point: int = 0, layout: str = "") -> str:
        out = self.tensor(f"{name}.out", out_type, out_shape, scale, zero_point, layout)
        cnames = {}
        for role, values in (consts or {}).items():
            if isinstance(values, tuple):  # (values, explicit type)
                cnames[role] = self.const(f"{name}.{role}", *values)
            else:
                cnames[role] = self.const(f"{name}.{role}", values)
        self.g.nodes.append(Node(name, op, list(inputs), [out], dict(attrs or {}), cnames))
        return out

    def type_of(self, tensor: str) -> IntType:
        return self.g.tensors[tensor].type

    def shape(self, tensor: str) -> tuple[int, ...]:
        return self.g.tensors[tensor].type.shape
