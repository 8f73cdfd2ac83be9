"""``repq-hw golden verify``: re-execute the IR stored in a golden set from its recorded inputs and check
every file hash and every element of every file. numpy only."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from repq_hw.golden import formats as fmt
from repq_hw.golden.reader import FORMAT_PREFERENCE, validate_manifest, validate_provenance
from repq_hw.golden.writer import IR_DIR, MANIFEST, PROVENANCE


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

    @property
    def ok(self) -> bool:
        return not self.problems and not self.mismatches

    @property
    def first_mismatch(self) -> Mismatch | None:
        return self.mismatches[0] if self.mismatches else None

    def text(self) -> str:
        lines = []
        if self.ok:
            lines.append(f"OK {self.path}: {self.files_checked} files, {self.elements_checked} elements match the "
                         "re-executed IR, every sha256 matches")
            return "\n".join(lines)
        lines.append(f"FAILED {self.path}")
        if self.mismatches:
            lines.append(f"  first mismatching {self.first_mismatch}")
        for p in self.problems:
            lines.append(f"  {p}")
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
    exp = np.asarray(expected).astype(np.int64)
    for fmt_name, fe in entry["files"].items():
        p = root / fe["path"]
        if not p.is_file():
            continue  # reported by the hash pass
        lanes = fe.get("lanes_per_word", 1)
        try:
            if fmt_name in ("hex", "coe", "mif"):
                # compare the raw words: an element whose pattern is out of range is a mismatch, not a crash
                words = fmt.text_words(fmt_name, p.read_bytes(), bits=entry["bits"], count=exp.size, lanes=lanes,
                                       what=fe["path"])
                want_w = fmt.to_words(exp, entry["bits"], entry["signed"])
                diff = (words != want_w).reshape(exp.shape)
                legal = words if entry["bits"] == 64 else words & np.uint64((1 << entry["bits"]) - 1)
                got = fmt.from_words(legal, entry["bits"], entry["signed"]).reshape(exp.shape)
                illegal = (legal != words).reshape(exp.shape)
            else:
                got = fmt.decode(fmt_name, p.read_bytes(), bits=entry["bits"], signed=entry["signed"],
                                 dtype=entry["dtype"], shape=exp.shape, lanes=lanes, what=fe["path"])
                diff = got != exp
                illegal = None
        except ValueError as e:
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


def verify_golden_set(path: str | Path, backend: str = "fast") -> VerifyReport:
    """Check a golden set. Never raises for a bad set: every problem is in the report.

    1. ``manifest.json`` exists (a set without it is incomplete) and follows the schema;
    2. every file listed exists and has the recorded size and sha256 (no unlisted files either);
    3. the IR copy loads, validates, and hashes to the recorded IR hash;
    4. the IR is re-executed on the recorded input codes, and every element of every stored file
       (every format) of every tensor and constant is compared; the first mismatch names the tensor,
       the format, the file and the index ``[image, ...]``.
    """
    root = Path(path)
    rep = VerifyReport(root)
    mpath = root / MANIFEST
    if not mpath.is_file():
        rep.problems.append(f"no {MANIFEST}: not a golden set, or an incomplete (interrupted) write")
        return rep
    try:
        m = json.loads(mpath.read_text())
        validate_manifest(m)
    except Exception as e:  # noqa: BLE001 -- any parse/schema failure is a finding
        rep.problems.append(f"{MANIFEST} is invalid: {str(e).splitlines()[0]}")
        return rep
    prov = root / PROVENANCE
    if prov.is_file():
        try:
            validate_provenance(json.loads(prov.read_text()))
        except Exception as e:  # noqa: BLE001
            rep.problems.append(f"{PROVENANCE} is invalid: {str(e).splitlines()[0]}")
    else:
        rep.problems.append(f"{PROVENANCE} is missing")

    # 2. hashes
    listed, bad_hash = set(), set()
    for fe in m["files"]:
        listed.add(fe["path"])
        p = root / fe["path"]
        if not p.is_file():
            rep.problems.append(f"missing file {fe['path']}")
            continue
        data = p.read_bytes()
        if len(data) != fe["bytes"] or fmt.sha256_bytes(data) != fe["sha256"]:
            bad_hash.add(fe["path"])
            rep.problems.append(f"sha256 mismatch: {fe['path']} (recorded {fe['sha256'][:12]}..., "
                                f"file {fmt.sha256_bytes(data)[:12]}..., {len(data)} bytes)")
    on_disk = {str(p.relative_to(root).as_posix()) for p in root.rglob("*") if p.is_file()}
    extra = sorted(on_disk - listed - {MANIFEST, PROVENANCE})
    if extra:
        rep.problems.append(f"files not listed in the manifest: {extra[:5]}")

    # 3. IR
    try:
        from repq_hw.ir.graph import load_graph

        g = load_graph(root / IR_DIR, validate=True)
    except Exception as e:  # noqa: BLE001
        rep.problems.append(f"the IR copy in {IR_DIR}/ does not load: {e}")
        return rep
    if g.hash() != m["ir"]["hash"]:
        rep.problems.append(f"IR hash {g.hash()[:12]}... differs from the manifest's {m['ir']['hash'][:12]}...")
        return rep

    # 4. re-execute
    tensors = {t["name"]: t for t in m["tensors"]}
    in_name = m["inputs"]["tensor"]
    if in_name not in tensors or g.inputs != [in_name]:
        rep.problems.append(f"input tensor {in_name!r} is not the graph input {g.inputs}")
        return rep
    te = tensors[in_name]
    codes = None
    order = [f for f in FORMAT_PREFERENCE if f in te["files"]]
    intact = [f for f in order if te["files"][f]["path"] not in bad_hash]
    if not intact:
        rep.problems.append(f"every file of the graph input {in_name!r} was modified: the re-execution starts from "
                            "modified codes, so the downstream mismatches below follow from the input change")
    for f in intact + [f for f in order if f not in intact]:
        if f in te["files"]:
            try:
                codes = fmt.decode(f, (root / te["files"][f]["path"]).read_bytes(), bits=te["bits"],
                                   signed=te["signed"], dtype=te["dtype"], shape=(te["batch"], *te["shape"]),
                                   lanes=te["files"][f].get("lanes_per_word", 1))
                break
            except (OSError, ValueError) as e:
                rep.problems.append(f"input {in_name!r}: cannot read its {f} file: {e}")
    if codes is None:
        rep.problems.append("no readable input codes: cannot re-execute")
        return rep
    from repq_hw.emu.execute import run_graph

    try:
        env = run_graph(g, codes.astype(g.tensors[in_name].type.storage), backend=backend, keep_all=True)
    except Exception as e:  # noqa: BLE001
        rep.problems.append(f"re-execution failed: {type(e).__name__}: {e}")
        return rep
    for t in m["tensors"]:
        if t["name"] not in env:
            rep.problems.append(f"tensor {t['name']!r} is not produced by the IR")
            continue
        _compare(rep, root, "tensor", t, env[t["name"]])
    for c in m["constants"]:
        if c["name"] not in g.constants:
            rep.problems.append(f"constant {c['name']!r} is not in the IR")
            continue
        _compare(rep, root, "constant", c, g.constants[c["name"]])
    return rep
