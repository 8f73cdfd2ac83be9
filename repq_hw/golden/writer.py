"""Write a golden set: every selected op's input, output and constant tensors, the IR itself, and a
manifest (numpy only; torch is never imported here).

Determinism: file bytes depend only on the IR, the input codes, the selection and the formats --
no timestamps, no absolute paths, JSON with sorted keys, NPY headers and the zip of ``constants.npz``
built here. Fields that legitimately change between commits (tool version, git commit, backend) live in
``provenance.json``, which is neither listed in the manifest's file hashes nor compared byte for byte.

Atomicity: everything is written into a hidden temporary sibling directory
(``.<name>.tmp-<random>``) that is renamed to the final name as the very last step, so a set whose
directory carries the final name is always complete. An existing set is replaced only with
``force=True`` (and only if it is a golden set or an empty directory).
"""

from __future__ import annotations

import fnmatch
import io
import json
import os
import re
import shutil
import subprocess
import uuid
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from repq_hw.errors import InputError
from repq_hw.golden import formats as fmt
from repq_hw.golden.spec import derived_params, input_roles, spec_pages
from repq_hw.ir.graph import IR_VERSION, Graph, IntType
from repq_hw.ir.ops import Op

FORMAT_NAME = "repq-hw-golden"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SHARD_DIR = ".shards"  # in a staging directory: shards written by a runner's tasks (removed before the manifest)
PROVENANCE = "provenance.json"
IR_DIR = "ir"
INLINE_MAX = 16
"""Constants with at most this many elements are also written inline (``values``) in the manifest."""

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
NAME_MAX = 200
"""Longest IR name used as a file name (the file adds a format suffix; most file systems allow 255 bytes)."""
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9_.\-]")


class GoldenError(InputError):
    """A golden set cannot be written or read; the message says why."""


@dataclass(frozen=True)
class Selection:
    """Which ops go into a set. A node is selected when it matches one of ``ops`` (name globs, all if
    empty) and one of ``op_types`` (all if empty) and none of ``exclude`` (name globs).

    Every selected op brings its input and output tensors and its constants; the graph input is
    always stored (``verify`` re-executes from it).
    """

    ops: tuple[str, ...] = ()
    op_types: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def __post_init__(self):
        known = {o.value for o in Op}
        bad = [t for t in self.op_types if t not in known]
        if bad:
            raise GoldenError(f"unknown op type(s) {bad}; known: {', '.join(sorted(known))}")

    def matches(self, name: str, op: str) -> bool:
        if self.ops and not any(fnmatch.fnmatchcase(name, p) for p in self.ops):
            return False
        if self.op_types and op not in self.op_types:
            return False
        return not any(fnmatch.fnmatchcase(name, p) for p in self.exclude)

    def to_json(self) -> dict:
        return {"ops": list(self.ops), "op_types": list(self.op_types), "exclude": list(self.exclude)}


@dataclass(frozen=True)
class Formats:
    """Formats written. ``lanes``: elements per ``.hex`` line (tensors and constants; lane 0 rightmost).
    ``rom_max_words``: ``.coe``/``.mif`` are written only for constants with at most this many elements
    (None: all)."""

    tensors: tuple[str, ...] = ("npy", "hex", "bin")
    constants: tuple[str, ...] = ("npy", "hex", "coe", "mif")
    lanes: int = 1
    rom_max_words: int | None = None

    def __post_init__(self):
        for f in self.tensors:
            if f not in fmt.TENSOR_FORMATS:
                raise GoldenError(f"tensor format {f!r} not in {fmt.TENSOR_FORMATS}")
        for f in self.constants:
            if f not in fmt.CONST_FORMATS:
                raise GoldenError(f"constant format {f!r} not in {fmt.CONST_FORMATS}")
        if not self.tensors:
            raise GoldenError("at least one tensor format is needed")
        if int(self.lanes) < 1:
            raise GoldenError(f"lanes must be >= 1, got {self.lanes}")

    def to_json(self) -> dict:
        return {"tensors": list(self.tensors), "constants": list(self.constants),
                "lanes_per_word": int(self.lanes), "rom_max_words": self.rom_max_words}


@dataclass
class _Plan:
    """Where encoded files go: kept in memory (``root`` None), written at once under ``root``, or only
    hashed (``keep`` False: what ``verify`` uses to re-derive a manifest)."""

    root: Path | None = None
    bar: object = None
    files: dict[str, bytes] = field(default_factory=dict)
    entries: dict[str, dict] = field(default_factory=dict)
    keep: bool = True

    def put(self, path: str, data: bytes, **extra) -> dict:
        check_relpath(path, "file")  # never a path outside the set, whatever the names
        if path in self.entries:
            raise GoldenError(f"two files map to the same path {path!r}")
        if not self.keep:
            pass
        elif self.root is None:
            self.files[path] = data
        else:
            _write_one(self.root / path, data)
        if self.bar is not None:
            self.bar.update(1)
        e = _file_entry(path, data, **extra)
        self.entries[path] = {k: e[k] for k in ("path", "sha256", "bytes")}
        return e


# ---------------------------------------------------------------------------------------------------
# helpers


def canonical_json(doc) -> bytes:
    """The one JSON serialisation used for every file of a set: sorted keys, indent 1, trailing newline."""
    return (json.dumps(doc, sort_keys=True, indent=1, ensure_ascii=True, allow_nan=False) + "\n").encode()


def _zip_stored(members: dict[str, bytes]) -> bytes:
    """A deterministic zip (stored, fixed 1980-01-01 timestamps, sorted members)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
        for name in sorted(members):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            info.create_system = 3
            info.external_attr = 0o644 << 16
            z.writestr(info, members[name])
    return buf.getvalue()


def ir_files(g: Graph) -> dict[str, bytes]:
    """``graph.json`` (canonical JSON, with ``ir_hash``) and ``constants.npz`` (deterministic) of an IR;
    ``repq_hw.ir.graph.load_graph`` reads them."""
    doc = g.structure_json()
    doc["ir_hash"] = g.hash()
    npz = _zip_stored({f"{k}.npy": fmt.npy_bytes(v, np.asarray(v).dtype) for k, v in g.constants.items()})
    graph = (json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False) + "\n").encode()
    return {"graph.json": graph, "constants.npz": npz}


def _check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name) or len(name) > NAME_MAX:
        raise GoldenError(f"{what} name {name!r} cannot be used as a file name (letters, digits, '_', '.', '-', "
                          f"not starting with '.' or '-', at most {NAME_MAX} characters)")
    return name


def check_relpath(rel: str, what: str = "path") -> str:
    """``rel`` as a path inside a set: relative, '/'-separated, every segment a safe name (no '', '.', '..',
    no backslash). Raises :class:`GoldenError` otherwise. Does not touch the file system."""
    if not isinstance(rel, str) or not rel:
        raise GoldenError(f"{what} {rel!r} is not a relative path inside the set")
    if rel.startswith("/") or "\\" in rel or "\0" in rel:
        raise GoldenError(f"{what} {rel!r} is not a relative path inside the set (absolute or not '/'-separated)")
    for seg in rel.split("/"):
        if not _SAFE_NAME.fullmatch(seg) or len(seg) > NAME_MAX + 8:
            raise GoldenError(f"{what} {rel!r} is not a relative path inside the set (segment {seg!r})")
    return rel


def selected_nodes(g: Graph, selection: Selection) -> list:
    """``(index, node)`` of the selected nodes, in execution order."""
    return [(i, n) for i, n in enumerate(g.nodes) if selection.matches(n.name, n.op.value)]


def check_names(g: Graph, selection: Selection) -> None:
    """Every name that a set of ``g`` under ``selection`` turns into a file name, or records as a tap name
    (selected node names, their tensors and constants, the graph input), is a safe single path segment.
    Raises :class:`GoldenError` naming the first that is not -- before any file is written."""
    if len(g.inputs) == 1:
        _check_name(g.inputs[0], "graph input tensor")
    for _, n in selected_nodes(g, selection):
        _check_name(n.name, "node")
        for t in list(n.inputs) + list(n.outputs):
            _check_name(t, f"tensor (of node {n.name!r})")
        for c in n.consts.values():
            _check_name(c, f"constant (of node {n.name!r})")


def stored_tensors(g: Graph, selection: Selection) -> list[str]:
    """The tensors a set of ``selection`` stores: the graph input and every selected op's inputs/outputs."""
    names = {g.inputs[0]}
    for _, n in selected_nodes(g, selection):
        names.update(n.inputs)
        names.update(n.outputs)
    return sorted(names)


def reproducible_of(g: Graph) -> bool:
    """The IR's float-environment record says its float-derived constants are reproducible
    (``graph.meta["float_env"]["reproducible"] is True``); an IR without the record is not."""
    fe = g.meta.get("float_env") if isinstance(g.meta, dict) else None
    return isinstance(fe, dict) and fe.get("reproducible") is True


def git_provenance() -> dict:
    """The git commit of the checkout this package runs from (None outside a git checkout)."""
    root = Path(__file__).resolve().parents[2]
    out = {"git_commit": None, "git_dirty": None}
    try:
        r = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], check=False, capture_output=True, text=True,
                           timeout=10)
        if r.returncode == 0:
            out["git_commit"] = r.stdout.strip()
            s = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               check=False, capture_output=True, text=True, timeout=10)
            out["git_dirty"] = bool(s.stdout.strip()) if s.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def bits_label(g: Graph) -> str | None:
    w, a = g.meta.get("w_bits"), g.meta.get("a_bits")
    return f"w{w}a{a}" if w is not None and a is not None else None


def safe_dir_name(name: str) -> str:
    """``name`` as one safe directory name: every character outside letters, digits, ``_ . -`` becomes
    ``_``, and a leading ``.`` or ``-`` too (so never ``..``, a hidden name, an absolute path or a path with
    ``/``). Used for names that come from a file (``meta.model`` of an IR) and decide where a set is written."""
    s = _UNSAFE_CHARS.sub("_", str(name))[:NAME_MAX]
    s = re.sub(r"^[.\-]", "_", s)
    return s or "_"


def set_name(model: str, g: Graph | None = None, seed: int | None = 0, w_bits: int | None = None,
             a_bits: int | None = None) -> str:
    """Canonical directory name ``<model>.<wXaY>.seed<seed>``, always one safe path segment (see
    :func:`safe_dir_name`: a model id or bit widths read from a hand-edited IR cannot point elsewhere)."""
    if g is not None:
        w_bits, a_bits = g.meta.get("w_bits"), g.meta.get("a_bits")
    return safe_dir_name(f"{model}.w{w_bits}a{a_bits}.seed{seed}")


def is_golden_set(path: Path) -> bool:
    m = Path(path) / MANIFEST
    if not m.is_file():
        return False
    try:
        return json.loads(m.read_text()).get("format") == FORMAT_NAME
    except (OSError, ValueError):
        return False


# ---------------------------------------------------------------------------------------------------
# the writer


def _file_entry(path: str, data: bytes, **extra) -> dict:
    return {"path": path, "sha256": fmt.sha256_bytes(data), "bytes": len(data), **extra}


def _encode_array(plan: _Plan, base: str, arr: np.ndarray, t: IntType, formats: Iterable[str], lanes: int,
                  title: str) -> dict:
    files = {}
    for f in formats:
        path = f"{base}.{f}"
        lane_n = lanes if f == "hex" else 1
        data = fmt.encode(f, arr, bits=t.bits, signed=t.signed, dtype=t.storage, lanes=lane_n, title=title)
        extra = {}
        if f in ("hex", "coe", "mif"):
            d = fmt.hex_digits(t.bits)
            extra = {"lane_width": t.bits, "digits_per_lane": d, "lanes_per_word": lane_n,
                     "word_width": t.bits if lane_n == 1 else lane_n * 4 * d,
                     "lane_order": "lane0_lsb", "words": -(-int(arr.size) // lane_n)}
        elif f in ("bin", "npy"):
            extra = {"dtype": np.dtype(t.storage).name, "byteorder": "little"}
        files[f] = plan.put(path, data, **extra)
        del data
    return files


def _scale_json(s):
    if s is None:
        return None
    if isinstance(s, (list, tuple)):
        return [float(v) for v in s]
    return float(s)


def build_set(g: Graph, env: dict[str, np.ndarray], *, input_ids: list[str], model: str | None,
              seed: int | None, selection: Selection, formats: Formats,
              input_source: str | None = None, root: Path | None = None,
              progress: bool = False, keep_files: bool = True) -> tuple[dict, dict[str, bytes]]:
    """(manifest, {relative path: bytes}) of a golden set from the executed tensors ``env``.

    With ``root``, each file is written under it as soon as it is encoded (the returned dict is then
    empty): memory stays at one file at a time, whatever the size of the set. With ``keep_files=False``
    (and no ``root``) the files are only hashed: the manifest alone (``verify`` re-derives it so)."""
    plan = _Plan(root=root, keep=keep_files or root is not None)
    if len(g.inputs) != 1:
        raise GoldenError(f"golden sets support graphs with one input, got {g.inputs}")
    check_names(g, selection)
    batch = int(env[g.inputs[0]].shape[0])
    if len(input_ids) != batch:
        raise GoldenError(f"{len(input_ids)} input ids for a batch of {batch}")
    nodes = selected_nodes(g, selection)
    if not nodes:
        raise GoldenError(f"the selection {selection.to_json()} matches no op of the graph")

    if progress:
        from tqdm import tqdm

        n_files = 2 + len(formats.tensors) * len({g.inputs[0]}.union(*(set(n.inputs + n.outputs) for _, n in nodes)))
        n_files += len(formats.constants) * len({c for _, n in nodes for c in n.consts.values()})
        plan.bar = tqdm(total=n_files, unit="file", desc="golden files", leave=False)
    # IR copy
    irf = ir_files(g)
    ir_entry = {"hash": g.hash(), "ir_version": IR_VERSION, "nodes": len(g.nodes)}
    for fname, data in irf.items():
        path = f"{IR_DIR}/{fname}"
        ir_entry["graph" if fname == "graph.json" else "constants"] = plan.put(path, data)
    del irf

    producer = {t: (i, n) for i, n in enumerate(g.nodes) for t in n.outputs}
    selected_names = {n.name for _, n in nodes}
    tensor_names = {g.inputs[0]}
    for _, n in nodes:
        tensor_names.update(n.inputs)
        tensor_names.update(n.outputs)
    order = sorted(tensor_names, key=lambda t: (producer[t][0] if t in producer else -1, t))

    consumers: dict[str, list[dict]] = {t: [] for t in order}
    for _, n in nodes:
        for role, t in zip(input_roles(n), n.inputs):
            consumers[t].append({"op": n.name, "role": role})

    tensors = []
    for t in order:
        info = g.tensors[t]
        arr = np.ascontiguousarray(env[t])
        _check_name(t, "tensor")
        p = producer.get(t)
        entry = {
            "name": t,
            "producer": p[1].name if p else None,
            "op": p[1].op.value if p else None,
            "role": "output" if p else "graph_input",
            "selected_producer": bool(p and p[1].name in selected_names),
            "consumers": consumers[t],
            "shape": list(info.type.shape),
            "batch": batch,
            "elements": int(arr.size),
            "layout": info.layout,
            "ir_type": info.type.name,
            "dtype": np.dtype(info.type.storage).name,
            "bits": info.type.bits,
            "signed": info.type.signed,
            "scale": _scale_json(info.scale),
            "zero_point": int(info.zero_point),
        }
        entry["files"] = _encode_array(plan, f"tensors/{t}", arr, info.type, formats.tensors, formats.lanes, t)
        tensors.append(entry)

    constants, seen = [], set()
    ops = []
    for i, n in nodes:
        cmap = {}
        for role, cname in sorted(n.consts.items()):
            cmap[role] = cname
            if cname in seen:
                continue
            seen.add(cname)
            _check_name(cname, "constant")
            t = g.const_types[cname]
            val = np.ascontiguousarray(g.constants[cname])
            cf = [f for f in formats.constants
                  if f not in ("coe", "mif") or formats.rom_max_words is None or val.size <= formats.rom_max_words]
            entry = {"name": cname, "op": n.name, "op_type": n.op.value, "role": role, "shape": list(t.shape),
                     "elements": int(val.size), "ir_type": t.name, "dtype": np.dtype(t.storage).name,
                     "bits": t.bits, "signed": t.signed,
                     "files": _encode_array(plan, f"constants/{cname}", val, t, cf, formats.lanes, cname)}
            if val.size <= INLINE_MAX:
                entry["values"] = [int(v) for v in val.reshape(-1)]
            constants.append(entry)
        derived = derived_params(g, n)
        if "rounding" in n.attrs:
            from repq_hw.kernels import mode_id

            derived["rounding_id"] = mode_id(n.attrs["rounding"])
        out = g.tensors[n.outputs[0]]
        ops.append({
            "index": i,
            "name": n.name,
            "op": n.op.value,
            "spec": spec_pages(n.op),
            "inputs": [{"role": r, "tensor": t} for r, t in zip(input_roles(n), n.inputs)],
            "outputs": [{"role": "out", "tensor": t} for t in n.outputs],
            "attrs": n.attrs,
            "derived": derived,
            "constants": cmap,
            "scale": {"inputs": [_scale_json(g.tensors[t].scale) for t in n.inputs], "output": _scale_json(out.scale)},
            "zero_point": {"inputs": [int(g.tensors[t].zero_point) for t in n.inputs], "output": int(out.zero_point)},
        })

    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "model": model if model is not None else g.meta.get("model"),
        "bits": {"w": g.meta.get("w_bits"), "a": g.meta.get("a_bits"), "label": bits_label(g)},
        "seed": seed,
        "reproducible": reproducible_of(g),
        "ir": ir_entry,
        "inputs": {"tensor": g.inputs[0], "count": batch, "ids": list(input_ids), "source": input_source},
        "selection": selection.to_json(),
        "formats": formats.to_json(),
        "encoding": {
            "element_order": "row-major (C) over [image, *shape]",
            "hex": "one word per line; ceil(bits/4) lower-case hex digits per lane of the bits-wide two's "
                   "complement pattern (unused high bits 0); lane 0 in the least significant digits; "
                   "last word padded with zero lanes",
            "bin": "raw little-endian bytes of dtype",
            "npy": "NPY 1.0, little-endian dtype",
            "coe": "Xilinx COE, radix 16, one element per word",
            "mif": "Intel MIF, WIDTH=bits, ADDRESS_RADIX=HEX (zero-padded), DATA_RADIX=HEX, one element per word",
        },
        "ops": ops,
        "tensors": tensors,
        "constants": constants,
        "files": [plan.entries[p] for p in sorted(plan.entries)],
        "provenance_file": PROVENANCE,
    }
    if plan.bar is not None:
        plan.bar.close()
    return manifest, plan.files


def _replace_dir(tmp: Path, out: Path, force: bool) -> None:
    if out.exists() or out.is_symlink():
        if not force:
            raise GoldenError(f"{out} exists; pass force=True (--force) to replace it")
        if not out.is_dir() or not (is_golden_set(out) or not any(out.iterdir())):
            raise GoldenError(f"{out} exists and is not a golden set (no {MANIFEST}); refusing to replace it")
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(out, old)
        try:
            os.rename(tmp, out)
        except BaseException:
            os.rename(old, out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out)


def check_out(out: str | Path, force: bool, what: str = "output directory") -> Path:
    """Fail before any work if ``out`` cannot receive a set: a bad name, a symbolic link, an existing path
    without ``force``, with ``force`` anything but a golden set or an empty directory, or a directory that
    cannot be created or written (``repq_hw.argtypes.check_writable_dir``). Errors name ``what``."""
    from repq_hw.argtypes import check_writable_dir

    out = Path(out)
    if out.name in ("", ".", ".."):
        raise GoldenError(f"{what} {str(out)!r}: not a directory name")
    if out.is_symlink():
        raise GoldenError(f"{what} {str(out)!r} is a symbolic link; refusing to write a golden set through it")
    check_writable_dir(out, what)
    if out.exists():
        if not force:
            raise GoldenError(f"{what} {str(out)!r} exists; pass --force to replace it (golden sets are never "
                              "overwritten silently)")
        if not (is_golden_set(out) or not any(out.iterdir())):
            raise GoldenError(f"{what} {str(out)!r} exists and is not a golden set (no {MANIFEST}); refusing to "
                              "replace it")
        check_writable_dir(out.parent, f"the parent of {what}")
    return out


def _atomic_set(out: Path, force: bool, fill: Callable[[Path], None]) -> Path:
    """Create a hidden temporary sibling, let ``fill`` write into it (manifest last), rename it to ``out``."""
    check_out(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        fill(tmp)
        _replace_dir(tmp, out, force)
    except BaseException:
        _remove_staging(tmp)
        raise
    return out


def _remove_staging(tmp: Path) -> None:
    """Remove a failed set's staging directory; retried briefly, since a cancelled shard task still running on
    a worker may add its (hidden, incomplete) shard while the tree is being removed (it cannot create one
    once the shard directory is gone)."""
    import time

    for _ in range(10):
        shutil.rmtree(tmp, ignore_errors=True)
        if not tmp.exists():
            return
        time.sleep(0.2)


def write_files(out: str | Path, files: dict[str, bytes], manifest: dict, provenance: dict, *,
                force: bool = False) -> Path:
    """Atomically materialise a set held in memory (``build_set`` without ``root``)."""

    def fill(tmp: Path) -> None:
        for rel, data in files.items():
            _write_one(tmp / rel, data)
        _write_one(tmp / PROVENANCE, canonical_json(provenance))
        _write_one(tmp / MANIFEST, canonical_json(manifest))  # last: a manifest means a complete set

    return _atomic_set(Path(out), force, fill)


def _write_one(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def _normalise_inputs(g: Graph, inputs) -> np.ndarray:
    if isinstance(inputs, dict):
        if list(inputs) != list(g.inputs):
            raise GoldenError(f"inputs {list(inputs)} do not match the graph inputs {g.inputs}")
        inputs = inputs[g.inputs[0]]
    a = np.asarray(inputs)
    if a.dtype.kind not in "iu":
        raise GoldenError(f"graph input codes must be integers, got {a.dtype} (convert images with "
                          "repq_hw.pipeline.host_input_codes first)")
    return a


def write_golden_set(g: Graph, inputs, out: str | Path, *, input_ids: list[str] | None = None,
                     model: str | None = None, seed: int | None = None, selection: Selection = Selection(),
                     formats: Formats = Formats(), force: bool = False, backend: str = "fast",
                     progress: bool = True, input_source: str | None = None,
                     float_env: dict | None = None, runner=None) -> Path:
    """Run the IR on ``inputs`` and write the golden set to ``out`` (atomically).

    Args:
        g: a validated graph (one input).
        inputs: integer codes of the graph input, ``[B, *shape]`` (or ``{name: codes}``).
        out: the set's directory (must not exist unless ``force``).
        input_ids: one id per image (default ``"input:<i>"``), recorded in the manifest.
        model: model id (default ``g.meta["model"]``).
        seed: calibration seed, recorded (None if unknown).
        selection: which ops to store.
        formats: which formats to write.
        force: replace an existing golden set.
        backend: emulator backend ("fast" or "ref"; both are bit-identical).
        progress: tqdm bars on stderr.
        input_source: free text describing where the inputs came from (no absolute paths).
        float_env: the full float-environment record of the process that made ``g`` from a model
            (``repq_hw.float_env.record()``, passed by the torch side; this package never imports torch).
            Goes into ``provenance.json`` only (it names the CPU, so it would break byte equality across
            machines); the manifest carries the IR's ``reproducible`` flag.
        runner: a started ``repq_hw.execution.Runner``: the images are emulated in shards on its workers,
            each of which writes the tensors the set stores for its images into ``<staging>/.shards/``
            (the set's hidden staging directory, next to ``out``); the client then encodes the set's files
            from them in image order (the same bits), one tensor at a time, removes the shards and writes the
            manifest last before the one rename. A shard that fails (or is killed and not retried) fails the
            call before the rename: no set appears, and the staging directory is removed.

    Returns:
        the set's path.
    """
    from repq_hw import __version__
    from repq_hw.emu.execute import run_graph

    out = check_out(out, force)
    if len(g.inputs) != 1:
        raise GoldenError(f"golden sets support graphs with one input, got {g.inputs}")
    check_names(g, selection)  # before any work: no name of a hand-edited IR may leave the set
    if float_env is not None and not isinstance(float_env, dict):
        raise GoldenError(f"float_env must be a dict (repq_hw.float_env.record()), got {type(float_env).__name__}")
    codes = _normalise_inputs(g, inputs)
    ids = list(input_ids) if input_ids is not None else [f"input:{i}" for i in range(codes.shape[0])]
    env = None
    if runner is None:
        env = run_graph(g, codes, backend=backend, keep_all=True, progress=_node_bar(g, progress))
    prov = {"tool": "repq-hw", "tool_version": __version__, **git_provenance(), "backend": backend,
            "note": "provenance fields change between commits; they are excluded from the manifest's "
                    "hashes and from the byte-equality check of committed sets"}
    if float_env is not None:
        prov["float_env"] = float_env

    def fill(tmp: Path) -> None:
        tensors = env
        shards = tmp / SHARD_DIR
        if tensors is None:  # the runner's tasks write their shards into the staging directory
            tensors = runner.emulate_into(g, codes, shards, stored_tensors(g, selection), backend)
        manifest, _ = build_set(g, tensors, input_ids=ids, model=model, seed=seed, selection=selection,
                                formats=formats, input_source=input_source, root=tmp, progress=progress)
        shutil.rmtree(shards, ignore_errors=True)
        _write_one(tmp / PROVENANCE, canonical_json(prov))
        _write_one(tmp / MANIFEST, canonical_json(manifest))  # last: a manifest means a complete set

    return _atomic_set(out, force, fill)


def _node_bar(g: Graph, progress: bool) -> Callable | None:
    if not progress:
        return None
    from tqdm import tqdm

    bar = tqdm(total=len(g.nodes), desc="emulate", unit="op", leave=False)

    def step(_node):
        bar.update(1)
        if bar.n >= bar.total:
            bar.close()

    return step
