"""IR data structures and their serialization: ``graph.json`` (structure, attributes, ``ir_version``) plus
``constants.npz`` (integer arrays). Never pickle: the npz is read with ``allow_pickle=False``.

A tensor type is (signed, bits, shape): the value range is [-2^(bits-1), 2^(bits-1)-1] or [0, 2^bits-1].
Storage uses the smallest numpy integer dtype that holds the range. Shapes are per image.

Reading is the one validation layer for IR files (docs/ir.md, "Reading an IR"): ``graph.json`` is parsed
field by field, ``constants.npz`` is checked member by member against the declared dtype and shape from
the zip directory and the ``.npy`` header *before* any data is decompressed, and every problem raises
:class:`IRFormatError` (an :class:`~repq_hw.errors.InputError`) naming the file.  Graph constants are
read-only arrays (:class:`ConstantStore`): replace a constant by assigning a new array, never edit one in
place.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from repq_hw.errors import InputError
from repq_hw.ir.ops import Op
from repq_hw.strict_json import read_strict_json

IR_VERSION = 1

MAX_GRAPH_JSON_BYTES = 256 << 20
"""A ``graph.json`` larger than this is refused before it is read."""
MAX_CONSTANT_BYTES = 4 << 30
"""The declared constants of one graph may total at most this many bytes (checked before decompressing)."""
MAX_ELEMENTS = 1 << 26
"""At most this many elements per tensor (per image) or per constant."""


class IRFormatError(InputError):
    """A malformed IR file: the message names the file and the field, constant or member."""


class IRFileNotFoundError(InputError, FileNotFoundError):
    """An IR directory without its ``graph.json`` or ``constants.npz``."""


_TYPE_RE = re.compile(r"(u?)int([0-9]{1,2})")


@dataclass(frozen=True)
class IntType:
    """An integer tensor type: signedness, bit width (1..64), per-image shape."""

    signed: bool
    bits: int
    shape: tuple[int, ...]

    def __post_init__(self):
        if isinstance(self.bits, bool) or not isinstance(self.bits, (int, np.integer)) or not 1 <= self.bits <= 64:
            raise InputError(f"bit width must be an integer in 1..64, got {self.bits!r}")
        object.__setattr__(self, "bits", int(self.bits))
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
    def from_json(d: dict) -> IntType:
        """From ``{"dtype": "uint4", "shape": [...]}``; raises InputError (naming nothing: the caller adds
        where) on a malformed type name or shape."""
        if not isinstance(d, dict):
            raise InputError(f"expected an object with dtype and shape, got {type(d).__name__}")
        name = d.get("dtype")
        m = _TYPE_RE.fullmatch(name) if isinstance(name, str) else None
        if m is None or not 1 <= int(m.group(2)) <= 64:
            raise InputError(f"dtype must be 'int<b>' or 'uint<b>' with b in 1..64, got {name!r}")
        shape = d.get("shape")
        if not isinstance(shape, list) or any(isinstance(s, bool) or not isinstance(s, int) or s < 0
                                              for s in shape):
            raise InputError(f"shape must be a list of non-negative integers, got {shape!r}")
        if math.prod(shape) > MAX_ELEMENTS:
            raise InputError(f"shape {shape} has more than {MAX_ELEMENTS} elements")
        return IntType(m.group(1) == "", int(m.group(2)), tuple(shape))


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
    def from_json(d: dict) -> TensorInfo:
        name = _named_object(d, "tensor")
        try:
            t = IntType.from_json(d)
        except InputError as e:
            raise InputError(f"tensor {name!r}: {e}") from None
        zp = d.get("zero_point", 0)
        if isinstance(zp, bool) or not isinstance(zp, int) or not -(1 << 63) <= zp < 1 << 63:
            raise InputError(f"tensor {name!r}: zero_point must be an int64 integer, got {zp!r}")
        layout = d.get("layout", "")
        if not isinstance(layout, str):
            raise InputError(f"tensor {name!r}: layout must be a string, got {layout!r}")
        scale = d.get("scale")
        ok = scale is None or _is_number(scale) or (isinstance(scale, list) and all(map(_is_number, scale)))
        if not ok:
            raise InputError(f"tensor {name!r}: scale must be a number or a list of numbers, got "
                             f"{type(scale).__name__}")
        return TensorInfo(name, t, scale, zp, layout)


def _named_object(d, kind: str) -> str:
    """The ``name`` of a graph.json tensor/node entry, which must be an object with a non-empty name."""
    if not isinstance(d, dict):
        raise InputError(f"a {kind} must be an object, got {type(d).__name__}")
    name = d.get("name")
    if not isinstance(name, str) or not name:
        raise InputError(f"{kind} name must be a non-empty string, got {name!r}")
    return name


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


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
    def from_json(d: dict) -> Node:
        name = _named_object(d, "node")
        op = d.get("op")
        try:
            op = Op(op)
        except (ValueError, TypeError):
            raise InputError(f"node {name!r}: unknown op {op!r}; known: "
                             f"{', '.join(o.value for o in Op)}") from None
        lists = {}
        for key in ("inputs", "outputs"):
            v = d.get(key)
            if not isinstance(v, list) or not all(isinstance(t, str) for t in v):
                raise InputError(f"node {name!r}: {key} must be a list of tensor names, got {v!r}")
            lists[key] = list(v)
        attrs, consts = d.get("attrs", {}), d.get("consts", {})
        if not isinstance(attrs, dict):
            raise InputError(f"node {name!r}: attrs must be an object, got {type(attrs).__name__}")
        if not isinstance(consts, dict) or not all(isinstance(v, str) for v in consts.values()):
            raise InputError(f"node {name!r}: consts must map roles to constant names, got {consts!r}")
        return Node(name, op, lists["inputs"], lists["outputs"], dict(attrs), dict(consts))


def is_sealed(a) -> bool:
    """True for an array :func:`seal` made: read-only over a ``bytes`` object it alone owns, so no handle can
    write it (``setflags(write=True)`` raises on it and on every view of it)."""
    return type(a) is np.ndarray and type(a.base) is bytes and not a.flags.writeable


def seal(name: str, v) -> np.ndarray:
    """An immutable C-ordered copy of integer array ``v`` (``v`` itself is left as it is); an array that is
    already sealed is returned as is (it cannot change)."""
    a = v if isinstance(v, np.ndarray) else np.asarray(v)
    if a.dtype.kind not in "iu":
        raise InputError(f"constant {name!r}: expected an integer array, got dtype {a.dtype}")
    if is_sealed(a):
        return a
    return np.ndarray(a.shape, a.dtype, buffer=np.ascontiguousarray(a).tobytes())


class ConstantStore(dict):
    """The constants of a graph: name -> integer array, every array stored as an immutable copy (:func:`seal`).

    Storing copies the array into a ``bytes`` buffer that only the store's array refers to: an in-place edit
    raises, ``setflags(write=True)`` raises, and a view or handle of the original array taken before storing
    does not alias the stored copy.  Replace a constant by assigning a new array.  The fast backend's plan
    keys sealed constants by identity (``emu/fast.py``); an array that reached the dict some other way (e.g.
    ``dict.__setitem__``) is keyed by a digest of its content instead.
    """

    def __init__(self, items=()):
        super().__init__()
        self.update(items)

    def __setitem__(self, key, value):
        super().__setitem__(key, seal(key, value))

    def update(self, *args, **kw):
        for k, v in dict(*args, **kw).items():
            self[k] = v

    def setdefault(self, key, default=None):
        if key not in self:
            self[key] = default
        return self[key]

    def __reduce__(self):
        return (ConstantStore, (dict(self),))


@dataclass
class Graph:
    """An integer graph: nodes in execution order, tensors, integer constants, metadata.

    ``constants`` is always a :class:`ConstantStore` (immutable copies), whatever mapping is assigned."""

    nodes: list[Node]
    tensors: dict[str, TensorInfo]
    inputs: list[str]
    outputs: list[str]
    constants: dict[str, np.ndarray]
    const_types: dict[str, IntType]
    meta: dict = field(default_factory=dict)

    def __setattr__(self, name, value):
        if name == "constants" and not isinstance(value, ConstantStore):
            value = ConstantStore(value)
        object.__setattr__(self, name, value)

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


# ---------------------------------------------------------------------------------------------
# Reading: one validation layer for both files
# ---------------------------------------------------------------------------------------------


def _read_json(gpath: Path) -> dict:
    return read_strict_json(gpath, max_bytes=MAX_GRAPH_JSON_BYTES, error=IRFormatError)


def _field(doc: dict, gpath: Path, key: str, kind: type, default=None, required: bool = True):
    if key not in doc:
        if required:
            raise IRFormatError(f"{gpath}: missing field {key!r}")
        return default
    v = doc[key]
    if not isinstance(v, kind):
        raise IRFormatError(f"{gpath}: field {key!r} must be a {kind.__name__}, got {type(v).__name__}")
    return v


def _names(doc: dict, gpath: Path, key: str) -> list[str]:
    v = _field(doc, gpath, key, list)
    if not v:
        raise IRFormatError(f"{gpath}: field {key!r} is empty (a graph needs at least one)")
    if not all(isinstance(t, str) for t in v):
        raise IRFormatError(f"{gpath}: field {key!r} must list tensor names (strings)")
    if len(set(v)) != len(v):
        raise IRFormatError(f"{gpath}: field {key!r} names a tensor twice: {v}")
    return list(v)


def _parse_structure(doc: dict, gpath: Path):
    v = doc.get("ir_version")
    if isinstance(v, bool) or v != IR_VERSION:
        raise IRFormatError(f"{gpath}: ir_version {v!r} is not supported "
                            f"(this repq-hw reads ir_version {IR_VERSION})")
    inputs, outputs = _names(doc, gpath, "inputs"), _names(doc, gpath, "outputs")
    tensors = {}
    for i, t in enumerate(_field(doc, gpath, "tensors", list)):
        try:
            info = TensorInfo.from_json(t)
        except InputError as e:
            raise IRFormatError(f"{gpath}: tensors[{i}]: {e}") from None
        if info.name in tensors:
            raise IRFormatError(f"{gpath}: tensor {info.name!r} is declared twice")
        tensors[info.name] = info
    const_types = {}
    for k, t in _field(doc, gpath, "constants", dict).items():
        try:
            const_types[k] = IntType.from_json(t)
        except InputError as e:
            raise IRFormatError(f"{gpath}: constant {k!r}: {e}") from None
    for what, types in (("tensor", {k: t.type for k, t in tensors.items()}), ("constant", const_types)):
        for k, t in types.items():
            if not t.signed and t.bits == 64:
                raise IRFormatError(f"{gpath}: {what} {k!r}: uint64 is not supported (no storage holds its "
                                    "range exactly; use int64 or uint63)")
    raw_nodes = _field(doc, gpath, "nodes", list)
    if not raw_nodes:
        raise IRFormatError(f"{gpath}: field 'nodes' is empty (a graph needs at least one node)")
    nodes = []
    for i, n in enumerate(raw_nodes):
        try:
            nodes.append(Node.from_json(n))
        except InputError as e:
            raise IRFormatError(f"{gpath}: nodes[{i}]: {e}") from None
    meta = _field(doc, gpath, "meta", dict, {}, required=False)
    ir_hash = _field(doc, gpath, "ir_hash", str, None, required=False)
    return inputs, outputs, tensors, const_types, nodes, meta, ir_hash


_BAD_ZIP = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError, RuntimeError,
            OverflowError)
_CHUNK = 16 << 20


def _npy_header(f, where: str):
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise IRFormatError(f"{where}: .npy format version {version} is not supported (1.0 or 2.0)")
    return shape, fortran, dtype, f.tell()


def _read_constants(cpath: Path, const_types: dict[str, IntType]) -> dict[str, np.ndarray]:
    """Read every declared constant; sizes, dtypes and shapes are checked against the declaration from
    the zip directory and each ``.npy`` header before any member's data is decompressed."""
    need = {k: math.prod(t.shape) * t.storage.itemsize for k, t in const_types.items()}
    total = sum(need.values())
    if total > MAX_CONSTANT_BYTES:
        raise IRFormatError(f"{cpath}: graph.json declares {total} bytes of constants, more than "
                            f"{MAX_CONSTANT_BYTES}")
    try:
        zf = zipfile.ZipFile(cpath)
    except _BAD_ZIP as e:
        raise IRFormatError(f"{cpath}: not a valid npz (zip) archive: {e}") from None
    with zf:
        members: dict[str, zipfile.ZipInfo] = {}
        for info in zf.infolist():
            name = info.filename
            key = name[:-4] if name.endswith(".npy") else None
            if key is None or key not in const_types:
                raise IRFormatError(f"{cpath}: member {name!r} is not a constant declared in graph.json")
            if key in members:
                raise IRFormatError(f"{cpath}: member {name!r} appears twice")
            if info.flag_bits & 0x1:
                raise IRFormatError(f"{cpath}: member {name!r} is encrypted")
            members[key] = info
        missing = [k for k in const_types if k not in members]
        if missing:
            raise IRFormatError(f"{cpath}: constant {missing[0]!r} is missing"
                                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        headers = {}
        for key, info in members.items():  # pass 1: headers only (a few hundred bytes each)
            t, where = const_types[key], f"{cpath}: constant {key!r}"
            try:
                with zf.open(info) as f:
                    shape, fortran, dtype, hlen = _npy_header(f, where)
            except IRFormatError:
                raise
            except _BAD_ZIP as e:
                raise IRFormatError(f"{where}: unreadable .npy header: {type(e).__name__}: {e}") from None
            if dtype.kind not in "iu":
                raise IRFormatError(f"{where} has dtype {dtype}, expected an integer dtype "
                                    f"({t.storage}, the storage of {t.name})")
            if dtype != t.storage:
                raise IRFormatError(f"{where} has dtype {dtype.str}, expected {t.storage} (the storage of "
                                    f"{t.name})")
            if tuple(shape) != t.shape:
                raise IRFormatError(f"{where} has shape {tuple(shape)}, expected {t.shape}")
            if info.file_size != hlen + need[key]:
                raise IRFormatError(f"{where}: the archive says {info.file_size} bytes, the declared "
                                    f"{t.name}{list(t.shape)} takes {hlen + need[key]}")
            headers[key] = (fortran, hlen)
        constants = {}
        for key, info in members.items():  # pass 2: data, exactly the declared number of bytes each
            t, (fortran, hlen) = const_types[key], headers[key]
            shape = t.shape[::-1] if fortran else t.shape
            a = np.empty(shape, dtype=t.storage)
            buf = memoryview(a.reshape(-1).view(np.uint8))
            try:
                with zf.open(info) as f:
                    f.read(hlen)
                    pos = 0
                    while pos < len(buf):
                        chunk = f.read(min(_CHUNK, len(buf) - pos))
                        if not chunk:
                            break
                        buf[pos:pos + len(chunk)] = chunk
                        pos += len(chunk)
                    rest = f.read(1)  # at the end: makes zipfile check the CRC
            except _BAD_ZIP as e:
                raise IRFormatError(f"{cpath}: constant {key!r}: corrupt data: {type(e).__name__}: {e}") from None
            if pos != len(buf) or rest:
                raise IRFormatError(f"{cpath}: constant {key!r}: {pos} data bytes, expected {len(buf)}")
            constants[key] = np.ascontiguousarray(a.T) if fortran else a
    return constants


def load_graph(in_dir: str | Path, validate: bool = True) -> Graph:
    """Read an IR directory: parse and check ``graph.json``, read ``constants.npz`` against its
    declarations, compare the ``ir_hash``, and run the validator: always its structural checks, and with
    ``validate`` (the default) also those that scan every constant value (``validate_graph(deep=True)``).

    Raises:
        IRFileNotFoundError: a file is missing.
        IRFormatError: a malformed file (the message names it).
        IRValidationError: a well-formed graph that breaks an IR rule (the message names the file and node).
    """
    in_dir = Path(in_dir)
    gpath, cpath = in_dir / "graph.json", in_dir / "constants.npz"
    for p in (gpath, cpath):
        if not p.is_file():
            raise IRFileNotFoundError(f"IR directory {in_dir}: missing {p.name}")
    doc = _read_json(gpath)
    inputs, outputs, tensors, const_types, nodes, meta, ir_hash = _parse_structure(doc, gpath)
    constants = _read_constants(cpath, const_types)
    g = Graph(nodes, tensors, inputs, outputs, constants, const_types, meta)
    if ir_hash is not None and ir_hash != g.hash():
        raise IRFormatError(f"{gpath}: IR hash mismatch (graph.json says {ir_hash[:12]}..., graph.json and "
                            f"{cpath.name} hash to {g.hash()[:12]}...): the files were modified or mixed")
    from repq_hw.ir.validate import IRValidationError, validate_graph

    try:
        validate_graph(g, deep=validate)
    except IRValidationError as e:
        raise IRValidationError(f"{gpath}: {e}") from None
    return g
