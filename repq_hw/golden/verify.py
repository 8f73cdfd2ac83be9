"""``repq-hw golden verify``: check a golden set against the IR copy it holds. numpy only.

Nothing the manifest says is taken on trust: every field an RTL testbench or :mod:`repq_hw.golden.rtl` reads
(widths, signedness, shapes, zero points, multipliers, shifts, attributes, derived parameters, file names,
lane packing, formats) is re-derived from the set's own IR copy by the writer's code (``build_set``) and
compared; every path must stay inside the set; every file must hash to its recorded sha256; and (unless
``execute=False``) the IR is re-executed and every element of every file compared."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from repq_hw.golden import formats as fmt
from repq_hw.golden.reader import (
    FORMAT_PREFERENCE,
    load_json,
    member,
    schema_problem,
    validate_manifest,
    validate_provenance,
)
from repq_hw.golden.writer import IR_DIR, MANIFEST, PROVENANCE, Formats, GoldenError, Selection, build_set

FREE_FIELDS = ("model", "seed", "inputs.ids", "inputs.source")
"""Manifest fields that do not follow from the IR copy (ids and descriptions; no testbench reads them):
verify checks only their schema types. Every other field is re-derived and compared."""
INTERNAL = "internal error while verifying"


@dataclass
class Mismatch:
    """The first element of one file that differs from the re-executed IR."""

    kind: str  # "tensor" or "constant"
    name: str
    fmt: str
    path: str
    index: tuple[int, ...]  # (image, *index) for tensors
    expected: int
    found: int
    count: int  # number of differing elements in this file
    line: int | None = None  # 1-based line of the element in a text file

    def __str__(self) -> str:
        where = f", line {self.line}" if self.line is not None else ""
        return (f"{self.kind} {self.name!r} ({self.fmt}: {self.path}{where}) index {list(self.index)}: "
                f"expected {self.expected}, found {self.found} ({self.count} element(s) differ)")


@dataclass
class VerifyReport:
    path: Path
    problems: list[str] = field(default_factory=list)
    mismatches: list[Mismatch] = field(default_factory=list)
    files_checked: int = 0
    elements_checked: int = 0
    executed: bool = True

    @property
    def ok(self) -> bool:
        return not self.problems and not self.mismatches

    @property
    def first_mismatch(self) -> Mismatch | None:
        return self.mismatches[0] if self.mismatches else None

    @property
    def first_problem(self) -> str | None:
        """The first finding (a problem, else the first mismatch) as one line; None when OK."""
        if self.problems:
            return self.problems[0]
        return str(self.mismatches[0]) if self.mismatches else None

    def text(self) -> str:
        lines = []
        if self.ok:
            if not self.executed:
                return (f"OK {self.path}: {self.files_checked} files match their sha256, every manifest field matches "
                        "the IR copy (not re-executed: `repq-hw golden verify` re-executes it)")
            lines.append(f"OK {self.path}: {self.files_checked} files, {self.elements_checked} elements match the "
                         "re-executed IR, every sha256 matches, every manifest field matches the IR copy")
            return "\n".join(lines)
        lines.append(f"FAILED {self.path}")
        if self.mismatches:
            lines.append(f"  first mismatching {self.first_mismatch}")
        for p in self.problems[:40]:
            lines.append(f"  {p}")
        if len(self.problems) > 40:
            lines.append(f"  ... and {len(self.problems) - 40} more problem(s)")
        for m in self.mismatches[1:11]:
            lines.append(f"  also: {m}")
        if len(self.mismatches) > 11:
            lines.append(f"  ... and {len(self.mismatches) - 11} more mismatching file(s)")
        return "\n".join(lines)


def _line_of(fmt_name: str, fe: dict, flat: int, header_lines: int) -> int | None:
    if fmt_name == "hex":
        return flat // fe.get("lanes_per_word", 1) + 1
    if fmt_name in ("coe", "mif"):
        return flat + 1 + header_lines
    return None


def _compare(report: VerifyReport, root: Path, kind: str, entry: dict, expected: np.ndarray) -> None:
    """Compare every file of ``entry`` (an entry re-derived from the IR copy, so its widths are right) with
    the re-executed values ``expected``."""
    exp = np.asarray(expected).astype(np.int64)
    for fmt_name, fe in entry["files"].items():
        try:
            p = member(root, fe["path"])
        except GoldenError:
            continue  # reported by the path pass
        if not p.is_file():
            continue  # reported by the hash pass
        lanes = fe.get("lanes_per_word", 1)
        try:
            data = p.read_bytes()
            if fmt_name in ("hex", "coe", "mif"):
                # compare the raw words: an element whose pattern is out of range is a mismatch, not a crash
                words = fmt.text_words(fmt_name, data, bits=entry["bits"], count=exp.size, lanes=lanes,
                                       what=fe["path"])
                want_w = fmt.to_words(exp, entry["bits"], entry["signed"])
                diff = (words != want_w).reshape(exp.shape)
                legal = words if entry["bits"] == 64 else words & np.uint64((1 << entry["bits"]) - 1)
                got = fmt.from_words(legal, entry["bits"], entry["signed"]).reshape(exp.shape)
                illegal = (legal != words).reshape(exp.shape)
            else:
                got = fmt.decode(fmt_name, data, bits=entry["bits"], signed=entry["signed"],
                                 dtype=entry["dtype"], shape=exp.shape, lanes=lanes, what=fe["path"])
                diff = got != exp
                illegal = None
        except (OSError, ValueError) as e:
            report.problems.append(f"{kind} {entry['name']!r}: cannot decode {fe['path']}: {e}")
            continue
        report.files_checked += 1
        report.elements_checked += int(exp.size)
        if diff.any():
            idx = tuple(int(i) for i in np.argwhere(diff)[0])
            flat = int(np.ravel_multi_index(idx, exp.shape)) if exp.ndim else 0
            found = int(got[idx])
            if illegal is not None and illegal[idx]:
                found = int(words[flat])  # the raw pattern, which has bits above the element width
            header = {"coe": 3, "mif": 6}.get(fmt_name, 0)
            report.mismatches.append(Mismatch(kind, entry["name"], fmt_name, fe["path"], idx, int(exp[idx]),
                                              found, int(diff.sum()), _line_of(fmt_name, fe, flat, header)))


# ---------------------------------------------------------------------------------------------------
# the manifest's own fields, re-derived


def _short(v) -> str:
    r = repr(v)
    return r if len(r) <= 80 else r[:77] + "..."


def _same(a, b) -> bool:
    """Strict JSON equality: ``1``, ``1.0`` and ``True`` are three different values."""
    return type(a) is type(b) and a == b


class _Named(int):
    """A list index that prints with the entry's name: ``tensors[3](blocks.0.attn.qk.out)``."""

    def __new__(cls, i: int, name: str):
        o = int.__new__(cls, i)
        o.entry_name = name
        return o


def _where(parts) -> str:
    out = ""
    for p in parts:
        if isinstance(p, _Named):
            out += f"[{int(p)}]({p.entry_name})"
        elif isinstance(p, int):
            out += f"[{p}]"
        else:
            out += f".{p}" if out else str(p)
    return out or "(top level)"


def _diff(exp, got, parts: list, out: list, limit: int = 60) -> None:
    """(path parts, message) of every field where the manifest ``got`` differs from the re-derived ``exp``
    (at most ``limit``)."""
    if len(out) >= limit:
        return
    if isinstance(exp, dict) and isinstance(got, dict):
        for k, v in exp.items():
            if k not in got:
                msg = f"manifest field {_where(parts + [k])}: missing (the IR copy gives {_short(v)})"
                out.append((parts + [k], msg))
            else:
                _diff(v, got[k], parts + [k], out, limit)
        for k in got:
            if k not in exp:
                msg = (f"manifest field {_where(parts + [k])}: not expected ({_short(got[k])}; the IR copy gives no "
                       "such field)")
                out.append((parts + [k], msg))
        return
    if isinstance(exp, list) and isinstance(got, list):
        if len(exp) != len(got):
            out.append((parts, f"manifest field {_where(parts)}: {len(got)} entries, the IR copy gives {len(exp)}"))
        for i, (a, b) in enumerate(zip(exp, got)):
            name = a.get("name") if isinstance(a, dict) else None
            _diff(a, b, parts + [_Named(i, name) if isinstance(name, str) else i], out, limit)
        return
    if not _same(exp, got):
        msg = f"manifest field {_where(parts)}: {_short(got)} in the manifest, {_short(exp)} from the IR copy"
        out.append((parts, msg))


class _ShapeOnly(dict):
    """``env`` for a manifest re-derivation without re-execution: the real input codes, zeros of the IR
    shape for every other tensor (their file sizes and layouts are right, their sha256 is not derived)."""

    def __init__(self, g, codes):
        super().__init__()
        self.g, self.codes = g, codes

    def __getitem__(self, name):
        if name == self.g.inputs[0]:
            return self.codes
        t = self.g.tensors[name].type
        return np.zeros((int(self.codes.shape[0]), *t.shape), dtype=t.storage)


def _all_paths(m: dict):
    """(field path, file path) of every file path the manifest names."""
    for i, fe in enumerate(m.get("files", [])):
        yield f"files[{i}].path", fe.get("path")
    for k in ("graph", "constants"):
        fe = m.get("ir", {}).get(k)
        if isinstance(fe, dict):
            yield f"ir.{k}.path", fe.get("path")
    for sec in ("tensors", "constants"):
        for i, e in enumerate(m.get(sec, [])):
            for f, fe in e.get("files", {}).items():
                yield f"{sec}[{i}]({e.get('name')}).files.{f}.path", fe.get("path")


# ---------------------------------------------------------------------------------------------------


def verify_golden_set(path: str | Path, backend: str = "fast", execute: bool = True) -> VerifyReport:
    """Check a golden set. Never raises for a bad set: every problem is in the report, naming the file or
    the manifest field.

    1. ``manifest.json`` exists (a set without it is incomplete), is valid JSON and follows the schema
       (``provenance.json`` too);
    2. every path the manifest names stays inside the set (relative, no ``..``, no symbolic links);
    3. every file listed exists and has the recorded size and sha256, and no unlisted file is present;
    4. the IR copy loads, validates, and hashes to the manifest's ``ir.hash``;
    5. every manifest field (except :data:`FREE_FIELDS`) is re-derived from the IR copy, the stored input
       codes, the manifest's selection and formats by the writer's own code, and compared;
    6. with ``execute`` (default) the IR is re-executed on the recorded input codes and every element of
       every stored file (every format) of every tensor and constant is compared; the first mismatch
       names the tensor, the format, the file and the index ``[image, ...]``.
    """
    root = Path(path)
    rep = VerifyReport(root, executed=execute)
    try:
        _verify(rep, root, backend, execute)
    except Exception as e:  # noqa: BLE001 -- a bad set is a finding, never a traceback
        rep.problems.append(f"{INTERNAL}: {type(e).__name__}: {e}")
    return rep


def _verify(rep: VerifyReport, root: Path, backend: str, execute: bool) -> None:
    import jsonschema

    if not root.is_dir():
        rep.problems.append(f"{root} is not a directory")
        return
    mpath = root / MANIFEST
    if mpath.is_symlink():
        rep.problems.append(f"{MANIFEST} is a symbolic link; a golden set holds none")
        return
    if not mpath.is_file():
        rep.problems.append(f"no {MANIFEST}: not a golden set, or an incomplete (interrupted) write")
        return
    try:
        m = load_json(mpath, MANIFEST)
        validate_manifest(m)
    except GoldenError as e:
        rep.problems.append(str(e))
        return
    except jsonschema.ValidationError as e:
        rep.problems.append(schema_problem(e, MANIFEST))
        return
    prov = root / PROVENANCE
    if prov.is_symlink():
        rep.problems.append(f"{PROVENANCE} is a symbolic link; a golden set holds none")
    elif prov.is_file():
        try:
            validate_provenance(load_json(prov, PROVENANCE))
        except GoldenError as e:
            rep.problems.append(str(e))
        except jsonschema.ValidationError as e:
            rep.problems.append(schema_problem(e, PROVENANCE))
    else:
        rep.problems.append(f"{PROVENANCE} is missing")

    # 2. every path stays inside the set
    unsafe = set()
    for where, rel in _all_paths(m):
        try:
            member(root, rel)
        except GoldenError as e:
            unsafe.add(rel)
            rep.problems.append(f"manifest field {where}: {e}")
    if unsafe:
        return  # never read a file through a path that leaves the set

    # 3. hashes
    listed, bad_hash = set(), set()
    for i, fe in enumerate(m["files"]):
        listed.add(fe["path"])
        p = root / fe["path"]
        if not p.is_file():
            rep.problems.append(f"missing file {fe['path']}")
            bad_hash.add(fe["path"])
            continue
        data = p.read_bytes()
        if not execute:
            rep.files_checked += 1
        if fmt.sha256_bytes(data) == fe["sha256"] and len(data) != fe["bytes"]:
            bad_hash.add(fe["path"])
            rep.problems.append(f"manifest field files[{i}].bytes: {fe['bytes']} in the manifest, {fe['path']} has "
                                f"{len(data)} bytes (and its recorded sha256)")
        elif len(data) != fe["bytes"] or fmt.sha256_bytes(data) != fe["sha256"]:
            bad_hash.add(fe["path"])
            rep.problems.append(f"sha256 mismatch: {fe['path']} (recorded {fe['sha256'][:12]}..., "
                                f"file {fmt.sha256_bytes(data)[:12]}..., {len(data)} bytes, recorded {fe['bytes']}): "
                                "the file is corrupt or was edited")
    on_disk, links = set(), []
    for d, dirs, files in os.walk(root, followlinks=False):
        for n in dirs + files:
            q = Path(d) / n
            if q.is_symlink():
                links.append(q.relative_to(root).as_posix())
            elif n in files:
                on_disk.add(q.relative_to(root).as_posix())
    if links:
        rep.problems.append(f"symbolic links in the set (a golden set holds none): {sorted(links)[:5]}")
    extra = sorted(on_disk - listed - {MANIFEST, PROVENANCE})
    if extra:
        rep.problems.append(f"files not listed in the manifest: {extra[:5]}")

    # 4. IR
    try:
        from repq_hw.ir.graph import load_graph

        for f in ("graph.json", "constants.npz"):
            member(root, f"{IR_DIR}/{f}", "IR file")
        g = load_graph(root / IR_DIR, validate=True)
    except Exception as e:  # noqa: BLE001
        rep.problems.append(f"the IR copy in {IR_DIR}/ does not load: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
        return
    if g.hash() != m["ir"]["hash"]:
        rep.problems.append(f"manifest field ir.hash: {m['ir']['hash'][:12]}... in the manifest, the IR copy "
                            f"{IR_DIR}/ hashes to {g.hash()[:12]}...")
        return

    # the input codes the set was made from
    tensors = {t["name"]: t for t in m["tensors"]}
    in_name = m["inputs"]["tensor"]
    if g.inputs != [in_name]:
        rep.problems.append(f"manifest field inputs.tensor: {in_name!r} is not the graph input {g.inputs} of the IR copy")
        return
    if in_name not in tensors:
        rep.problems.append(f"manifest field tensors: no entry for the graph input {in_name!r}")
        return
    te, it = tensors[in_name], g.tensors[in_name].type
    batch = m["inputs"]["count"]
    codes = None
    order = [f for f in FORMAT_PREFERENCE if f in te["files"]]
    intact = [f for f in order if te["files"][f]["path"] not in bad_hash]
    if not intact:
        rep.problems.append(f"every file of the graph input {in_name!r} was modified: the re-execution starts from "
                            "modified codes, so the downstream mismatches below follow from the input change")
    for f in intact + [f for f in order if f not in intact]:
        fe = te["files"][f]
        try:
            codes = fmt.decode(f, (root / fe["path"]).read_bytes(), bits=it.bits, signed=it.signed,
                               dtype=np.dtype(it.storage).name, shape=(batch, *it.shape),
                               lanes=fe.get("lanes_per_word", 1) if f == "hex" else 1, what=fe["path"])
            break
        except (OSError, ValueError) as e:
            rep.problems.append(f"input {in_name!r}: cannot read {fe['path']} as {batch} image(s) "
                                f"(manifest field inputs.count) of the IR's {it.name}{list(it.shape)}: {e}")
    if codes is None:
        rep.problems.append("no readable input codes: cannot re-derive the set")
        return

    # 5. re-derive the manifest from the IR copy and compare every field
    sm, fm = m["selection"], m["formats"]
    try:
        selection = Selection(ops=tuple(sm["ops"]), op_types=tuple(sm["op_types"]), exclude=tuple(sm["exclude"]))
        formats = Formats(tensors=tuple(fm["tensors"]), constants=tuple(fm["constants"]), lanes=fm["lanes_per_word"],
                          rom_max_words=fm["rom_max_words"])
    except GoldenError as e:
        rep.problems.append(f"manifest field selection/formats: {e}")
        return
    codes = codes.astype(it.storage)
    env = None
    if execute:
        from repq_hw.emu.execute import run_graph

        try:
            env = run_graph(g, codes, backend=backend, keep_all=True)
        except Exception as e:  # noqa: BLE001
            rep.problems.append(f"re-execution failed: {type(e).__name__}: {e}")
            return
    try:
        expected, _ = build_set(g, env if execute else _ShapeOnly(g, codes), input_ids=list(m["inputs"]["ids"]),
                                model=m["model"], seed=m["seed"], selection=selection, formats=formats,
                                input_source=m["inputs"]["source"], keep_files=False)
    except GoldenError as e:
        rep.problems.append(f"cannot re-derive the manifest from the IR copy with the manifest's selection and "
                            f"formats: {e}")
        return
    if not execute:  # tensor contents are not re-derived: take their recorded hashes (checked against the files)
        rec = {fe["path"]: fe["sha256"] for fe in m["files"]}
        underived = set()
        for t in expected["tensors"]:
            if t["name"] != in_name:
                for fe in t["files"].values():
                    underived.add(fe["path"])
                    fe["sha256"] = rec.get(fe["path"], fe["sha256"])
        for fe in expected["files"]:
            if fe["path"] in underived:
                fe["sha256"] = rec.get(fe["path"], fe["sha256"])
    free = {tuple(f.split(".")) for f in FREE_FIELDS}
    diffs: list = []
    cov = m.get("coverage")
    if cov is not None:  # optional (`repq-hw golden coverage`): recomputed from the re-executed tensors
        m = {k: v for k, v in m.items() if k != "coverage"}
        if execute:
            from repq_hw.golden.coverage import env_coverage

            try:
                _diff(env_coverage(expected, env, g), cov, ["coverage"], diffs)
            except Exception as e:  # noqa: BLE001
                rep.problems.append(f"manifest field coverage: cannot recompute it: {type(e).__name__}: {e}")
    _diff(expected, m, [], diffs)
    found = [msg for parts, msg in diffs if not any(tuple(str(p) for p in parts[:len(f)]) == f for f in free)]
    rep.problems.extend(found)
    if found:
        lanes = {fe.get("lanes_per_word") for e in m["tensors"] + m["constants"] for f, fe in e["files"].items()
                 if f == "hex"}
        if lanes and lanes != {fm["lanes_per_word"]}:
            rep.problems.append(f"manifest field formats.lanes_per_word: {fm['lanes_per_word']}, but the .hex file "
                                f"entries record {sorted(lanes, key=str)}")
        rep.problems.append(f"(ops, tensors, constants and files are re-derived with the manifest's own selection "
                            f"{_short(sm)} and formats {_short(fm)}; an edit of those shows up as differences there)")

    # 6. every element of every file
    if not execute:
        return
    for t in expected["tensors"]:
        _compare(rep, root, "tensor", t, env[t["name"]])
    for c in expected["constants"]:
        _compare(rep, root, "constant", c, g.constants[c["name"]])
