"""Read a golden set: manifest (schema-validated), tensors and constants in any stored format,
dequantization, the IR copy. numpy only."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from repq_hw.golden import formats as fmt
from repq_hw.golden.writer import IR_DIR, MANIFEST, PROVENANCE, GoldenError, check_relpath
from repq_hw.strict_json import read_strict_json

MAX_JSON_BYTES = 256 << 20  # a manifest of a full ViT-B set with every op is a few MB

SCHEMA_PATH = Path(__file__).with_name("manifest.schema.json")
FORMAT_PREFERENCE = ("npy", "bin", "hex", "coe", "mif")


@lru_cache(maxsize=1)
def manifest_schema() -> dict:
    """The JSON Schema of ``manifest.json`` shipped with the package."""
    return json.loads(SCHEMA_PATH.read_text())


@lru_cache(maxsize=2)
def _validator(what: str):
    import jsonschema

    schema = manifest_schema()
    if what == "provenance":
        schema = {"$ref": "#/$defs/provenance", "$defs": schema["$defs"]}
    return jsonschema.Draft202012Validator(schema)


def validate_manifest(doc: dict) -> None:
    """Raise ``jsonschema.ValidationError`` if ``doc`` does not follow the manifest schema."""
    _validator("manifest").validate(doc)


def validate_provenance(doc: dict) -> None:
    """Raise ``jsonschema.ValidationError`` if ``doc`` does not follow the provenance.json schema."""
    _validator("provenance").validate(doc)


def json_path(parts) -> str:
    """``tensors[3].files.hex.path`` for the path parts ``["tensors", 3, "files", "hex", "path"]``."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def schema_problem(e, file: str) -> str:
    """One line naming the file, the field and what is wrong, for a ``jsonschema.ValidationError``."""
    where = json_path(list(e.absolute_path))
    return f"{file}: field {where}: {str(e.message).splitlines()[0][:200]}"


def load_json(path: Path, what: str) -> dict:
    """Parse a JSON object file strictly (repq_hw/strict_json.py); :class:`GoldenError` naming the file
    (missing, unreadable, malformed, truncated, not an object, NaN/Infinity, duplicate keys)."""
    return read_strict_json(path, max_bytes=MAX_JSON_BYTES, error=GoldenError, what=what)


def member(root: str | Path, rel: str, what: str = "file") -> Path:
    """The file ``rel`` (a manifest path) of the set at ``root``, refused unless it stays inside the set:
    relative, no ``..`` / ``.`` / empty segments, no symbolic link on the way, resolving under ``root``.
    Raises :class:`GoldenError` naming the path."""
    root = Path(root)
    check_relpath(rel, f"{what} path")
    p = root
    for seg in rel.split("/"):
        p = p / seg
        if p.is_symlink():
            raise GoldenError(f"{what} path {rel!r}: {p.relative_to(root).as_posix()} is a symbolic link; a golden "
                              "set holds none (refusing to follow it out of the set)")
    try:
        inside = p.resolve().is_relative_to(root.resolve())
    except OSError:
        inside = False
    if not inside:
        raise GoldenError(f"{what} path {rel!r} resolves outside the set {root}")
    return p


class SetKeyError(GoldenError, KeyError):
    """A name (op, tensor, constant) that the set does not hold."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class GoldenSet:
    """A golden set on disk.

    >>> gs = GoldenSet("golden_vectors/vit_digits.w4a4.seed0")
    >>> gs.tensor("blocks.0.attn.softmax.out").shape      # [images, *shape]
    """

    def __init__(self, path: str | Path, validate: bool = True):
        self.path = Path(path)
        mpath = self.path / MANIFEST
        if mpath.is_symlink():
            raise GoldenError(f"{self.path}: {MANIFEST} is a symbolic link; a golden set holds none")
        if not mpath.is_file():
            raise GoldenError(f"{self.path}: no {MANIFEST} -- not a golden set, or an incomplete (interrupted) one")
        self.manifest = load_json(mpath, MANIFEST)
        if validate:
            import jsonschema

            try:
                validate_manifest(self.manifest)
            except jsonschema.ValidationError as e:
                raise GoldenError(f"{self.path}: {schema_problem(e, MANIFEST)}") from None
        self._tensors = {t["name"]: t for t in self.manifest["tensors"]}
        self._consts = {c["name"]: c for c in self.manifest["constants"]}
        self._ops = {o["name"]: o for o in self.manifest["ops"]}

    # -- lookup ----------------------------------------------------------------------------------
    @property
    def ops(self) -> list[dict]:
        return self.manifest["ops"]

    @property
    def tensor_names(self) -> list[str]:
        return list(self._tensors)

    @property
    def constant_names(self) -> list[str]:
        return list(self._consts)

    @property
    def reproducible(self) -> bool:
        """The manifest's ``reproducible`` flag (False when absent)."""
        return self.manifest.get("reproducible") is True

    def op(self, name: str) -> dict:
        try:
            return self._ops[name]
        except KeyError:
            raise SetKeyError(f"op {name!r} is not in this set; ops: {', '.join(list(self._ops)[:8])}...") from None

    def tensor_entry(self, name: str) -> dict:
        try:
            return self._tensors[name]
        except KeyError:
            raise SetKeyError(f"tensor {name!r} is not in this set") from None

    def constant_entry(self, name: str) -> dict:
        try:
            return self._consts[name]
        except KeyError:
            raise SetKeyError(f"constant {name!r} is not in this set") from None

    def file(self, entry: dict, fmt_name: str) -> Path:
        """The file of one format of a tensor/constant entry (refused if its path leaves the set)."""
        return member(self.path, entry["files"][fmt_name]["path"], f"{entry['name']} ({fmt_name})")

    def provenance(self) -> dict:
        p = self.path / PROVENANCE
        return load_json(p, PROVENANCE) if p.is_file() else {}

    # -- data ------------------------------------------------------------------------------------
    def _read(self, entry: dict, fmt_name: str | None, shape: tuple) -> np.ndarray:
        files = entry["files"]
        if fmt_name is None:
            fmt_name = next(f for f in FORMAT_PREFERENCE if f in files)
        if fmt_name not in files:
            raise GoldenError(f"{entry['name']}: no {fmt_name} file (stored: {', '.join(files)})")
        fe = files[fmt_name]
        p = member(self.path, fe["path"], f"{entry['name']} ({fmt_name})")
        try:
            data = p.read_bytes()
        except OSError as e:
            raise GoldenError(f"{self.path}: cannot read {fe['path']}: {e.strerror or e}") from None
        try:
            return fmt.decode(fmt_name, data, bits=entry["bits"], signed=entry["signed"], dtype=entry["dtype"],
                              shape=shape, lanes=fe.get("lanes_per_word", 1), what=fe["path"])
        except fmt.FormatError as e:
            raise GoldenError(f"{self.path}: {e} (the file is corrupt or does not match the manifest; "
                              "run `repq-hw golden verify`)") from None

    def tensor(self, name: str, fmt_name: str | None = None) -> np.ndarray:
        """Integer values ``[images, *shape]`` (storage dtype) read from one format (default: the first of
        npy, bin, hex)."""
        e = self.tensor_entry(name)
        return self._read(e, fmt_name, (e["batch"], *e["shape"])).astype(e["dtype"])

    def constant(self, name: str, fmt_name: str | None = None) -> np.ndarray:
        e = self.constant_entry(name)
        return self._read(e, fmt_name, tuple(e["shape"])).astype(e["dtype"])

    def dequantize(self, name: str) -> np.ndarray:
        """Real values ``scale * (code - zero_point)`` (float64; a per-channel scale applies to the last axis)."""
        e = self.tensor_entry(name)
        if e["scale"] is None:
            raise GoldenError(f"tensor {name!r} has no scale")
        scale = np.asarray(e["scale"], dtype=np.float64)
        return (self.tensor(name).astype(np.float64) - e["zero_point"]) * scale

    def input_codes(self) -> np.ndarray:
        return self.tensor(self.manifest["inputs"]["tensor"])

    def graph(self, validate: bool = True):
        """The IR copy stored in the set (``ir/graph.json`` + ``ir/constants.npz``)."""
        from repq_hw.ir.graph import load_graph

        return load_graph(self.path / IR_DIR, validate=validate)

    def summary(self) -> str:
        m = self.manifest
        nbytes = sum(f["bytes"] for f in m["files"])
        return (f"golden set {self.path.name}: model {m['model']} {m['bits']['label']} seed {m['seed']}, "
                f"{m['inputs']['count']} image(s) {m['inputs']['ids']}, {len(m['ops'])} ops, "
                f"{len(m['tensors'])} tensors, {len(m['constants'])} constants, {len(m['files'])} files, "
                f"{nbytes / 1e6:.2f} MB, IR {m['ir']['hash'][:12]}")
