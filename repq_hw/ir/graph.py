"""IR data structures and their serialization: ``graph.json`` (structure, attributes, ``ir_version``) plus
``constants.npz`` (integer arrays). Never pickle: the npz is read with ``allow_pickle=False``.

A tensor type is (signed, bits, shape): the value range is [-2^(bits-1), 2^(bits-1)-1] or [0, 2^bits-1].
Storage uses the smallest numpy integer dtype that holds the range. Shapes are per image.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from repq_hw.ir.ops import Op

IR_VERSION = 1


@dataclass(frozen=True)
class IntType:
    """An integer tensor type: signedness, bit width (1..64), per-image shape."""

    signed: bool
    bits: int
    shape: tuple[int, ...]

    def __post_init__(self):
        if not 1 <= self.bits <= 64:
            raise ValueError(f"bit width must be in 1..64, got {self.bits}")
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))

    @property
    def name(self) -> str:
        return f"{'int' if self.signed else 'uint'}{self.bits}"

    @property
    def min(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def max(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def storage(self) -> np.dtype:
        """Smallest numpy dtype holding the range (uint64 is never used: uint codes are <= 32 bits)."""
        for b in (8, 16, 32, 64):
            if self.signed and self.bits <= b:
                return np.dtype(f"int{b}")
            if not self.signed and self.bits <= b and b < 64:
                return np.dtype(f"uint{b}")
        return np.dtype("int64")

    def to_json(self) -> dict:
        return {"dtype": self.name, "shape": list(self.shape)}

    @staticmethod
    def from_json(d: dict) -> "IntType":
        name = d["dtype"]
        signed = name.startswith("int")
        bits = int(name[3:] if signed else name[4:])
        return IntType(signed, bits, tuple(d["shape"]))


def int_type(name: str, shape) -> IntType:
    """``int_type("uint4", (65, 96))``."""
    return IntType.from_json({"dtype": name, "shape": list(shape)})


@dataclass
class TensorInfo:
    """A graph tensor. ``scale`` (and ``zero_point``) are float metadata for reporting/dequantization only:
    real ~= scale * (value - zero_point); scale may be a per-channel list (last axis)."""

    name: str
    type: IntType
    scale: float | list[float] | None = None
    zero_point: int = 0
    layout: str = ""  # e.g. "NC", "HND"

    def to_json(self) -> dict:
        d = {"name": self.name, **self.type.to_json(), "zero_point": int(self.zero_point), "layout": self.layout}
        if self.scale is not None:
            d["scale"] = self.scale
        return d

    @staticmethod
    def from_json(d: dict) -> "TensorInfo":
        return TensorInfo(d["name"], IntType.from_json(d), d.get("scale"), int(d.get("zero_point", 0)),
                          d.get("layout", ""))


@dataclass
class Node:
    """One op. ``attrs`` are JSON scalars/lists; ``consts`` maps a role (e.g. "weight") to a constant name."""

    name: str
    op: Op
    inputs: list[str]
    outputs: list[str]
    attrs: dict = field(default_factory=dict)
    consts: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"name": self.name, "op": self.op.value, "inputs": self.inputs, "outputs": self.outputs,
                "attrs": self.attrs, "consts": self.consts}

    @staticmethod
    def from_json(d: dict) -> "Node":
        try:
            op = Op(d["op"])
        except ValueError:
            raise ValueError(f"node {d.get('name')!r}: unknown op {d['op']!r}; known: "
                             f"{', '.join(o.value for o in Op)}") from None
        return Node(d["name"], op, list(d["inputs"]), list(d["outputs"]), dict(d.get("attrs", {})),
                    dict(d.get("consts", {})))


@dataclass
class Graph:
    """An integer graph: nodes in execution order, tensors, integer constants, metadata."""

    nodes: list[Node]
    tensors: dict[str, TensorInfo]
    inputs: list[str]
    outputs: list[str]
    constants: dict[str, np.ndarray]
    const_types: dict[str, IntType]
    meta: dict = field(default_factory=dict)

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"no node named {name!r}")

    def const(self, node: Node, role: str) -> np.ndarray:
        return self.constants[node.consts[role]]

    def structure_json(self) -> dict:
        return {
            "ir_version": IR_VERSION,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "tensors": [t.to_json() for t in self.tensors.values()],
            "constants": {k: t.to_json() for k, t in self.const_types.items()},
            "nodes": [n.to_json() for n in self.nodes],
            "meta": self.meta,
        }

    def hash(self) -> str:
        """sha256 over the structure JSON and every constant's bytes (dtype, shape, values)."""
        h = hashlib.sha256(json.dumps(self.structure_json(), sort_keys=True).encode())
        for k in sorted(self.constants):
            a = np.ascontiguousarray(self.constants[k])
            h.update(f"{k}:{a.dtype.str}:{a.shape}".encode())
            h.update(a.tobytes())
        return h.hexdigest()


def _atomic_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_graph(graph: Graph, out_dir: str | Path) -> Path:
    """Write ``graph.json`` and ``constants.npz`` into out_dir, each atomically (npz first, so a graph.json
    that exists always has its constants)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, **{k: np.ascontiguousarray(v) for k, v in graph.constants.items()})
    _atomic_bytes(out_dir / "constants.npz", buf.getvalue())
    doc = graph.structure_json()
    doc["ir_hash"] = graph.hash()
    _atomic_bytes(out_dir / "graph.json", json.dumps(doc, indent=1).encode())
    return out_dir


def load_graph(in_dir: str | Path, validate: bool = True) -> Graph:
    """Read an IR directory; checks ir_version, constant presence, dtype and shape (and the validator)."""
    in_dir = Path(in_dir)
    gpath, cpath = in_dir / "graph.json", in_dir / "constants.npz"
    for p in (gpath, cpath):
        if not p.is_file():
            raise FileNotFoundError(f"IR directory {in_dir}: missing {p.name}")
    doc = json.loads(gpath.read_text())
    if doc.get("ir_version") != IR_VERSION:
        raise ValueError(f"{gpath}: ir_version {doc.get('ir_version')!r} is not supported "
                         f"(this repq-hw reads ir_version {IR_VERSION})")
    tensors = {t["name"]: TensorInfo.from_json(t) for t in doc["tensors"]}
    const_types = {k: IntType.from_json(v) for k, v in doc["constants"].items()}
    with np.load(cpath, allow_pickle=False) as z:
        constants = {k: z[k] for k in z.files}
    for k, t in const_types.items():
        if k not in constants:
            raise ValueError(f"{cpath}: constant {k!r} is missing")
        a = constants[k]
        if a.dtype.kind not in "iu":
            raise ValueError(f"{cpath}: constant {k!r} has dtype {a.dtype}, expected an integer dtype")
        if tuple(a.shape) != t.shape:
            raise ValueError(f"{cpath}: constant {k!r} has shape {tuple(a.shape)}, expected {t.shape}")
    extra = sorted(set(constants) - set(const_types))
    if extra:
        raise ValueError(f"{cpath}: constants not declared in graph.json: {extra[:10]}")
    g = Graph([Node.from_json(n) for n in doc["nodes"]], tensors, list(doc["inputs"]), list(doc["outputs"]),
              constants, const_types, doc.get("meta", {}))
    if "ir_hash" in doc and doc["ir_hash"] != g.hash():
        raise ValueError(f"{in_dir}: IR hash mismatch (graph.json says {doc['ir_hash'][:12]}..., contents "
                         f"hash to {g.hash()[:12]}...): the files were modified or mixed")
    if validate:
        from repq_hw.ir.validate import validate_graph

        validate_graph(g)
    return g
