"""Read a golden set: manifest (schema-validated), tensors and constants in any stored format,
dequantization, the IR copy. numpy only."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from repq_hw.golden import formats as fmt
from repq_hw.golden.writer import IR_DIR, MANIFEST, PROVENANCE, GoldenError

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


class GoldenSet:
    """A golden set on disk.

    >>> gs = GoldenSet("golden_vectors/vit_digits.w4a4.seed0")
    >>> gs.tensor("blocks.0.attn.softmax.out").shape      # [images, *shape]
    """

    def __init__(self, path: str | Path, validate: bool = True):
        self.path = Path(path)
        mpath = self.path / MANIFEST
        if not mpath.is_file():
            raise GoldenError(f"{self.path}: no {MANIFEST} -- not a golden set, or an incomplete (interrupted) one")
        self.manifest = json.loads(mpath.read_text())
        if validate:
            validate_manifest(self.manifest)
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

    def op(self, name: str) -> dict:
        try:
            return self._ops[name]
        except KeyError:
            raise KeyError(f"op {name!r} is not in this set; ops: {', '.join(list(self._ops)[:8])}...") from None

    def tensor_entry(self, name: str) -> dict:
        try:
            return self._tensors[name]
        except KeyError:
            raise KeyError(f"tensor {name!r} is not in this set") from None

    def constant_entry(self, name: str) -> dict:
        try:
            return self._consts[name]
        except KeyError:
            raise KeyError(f"constant {name!r} is not in this set") from None

    def file(self, entry: dict, fmt_name: str) -> Path:
        return self.path / entry["files"][fmt_name]["path"]

    def provenance(self) -> dict:
        p = self.path / PROVENANCE
        return json.loads(p.read_text()) if p.is_file() else {}

    # -- data ------------------------------------------------------------------------------------
    def _read(self, entry: dict, fmt_name: str | None, shape: tuple) -> np.ndarray:
        files = entry["files"]
        if fmt_name is None:
            fmt_name = next(f for f in FORMAT_PREFERENCE if f in files)
        if fmt_name not in files:
            raise GoldenError(f"{entry['name']}: no {fmt_name} file (stored: {', '.join(files)})")
        fe = files[fmt_name]
        data = (self.path / fe["path"]).read_bytes()
        return fmt.decode(fmt_name, data, bits=entry["bits"], signed=entry["signed"], dtype=entry["dtype"],
                          shape=shape, lanes=fe.get("lanes_per_word", 1), what=fe["path"])

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
