"""First-divergence diff of a device dump against a golden set (``repq-hw golden diff SET DUMP``).

A *dump* is what an RTL simulation or a board wrote: one file per tensor, named like the set's own
``tensors/`` files (``<tensor>.hex`` / ``<tensor>.npy`` / ``<tensor>.bin``, directly in the dump
directory or in its ``tensors/`` subdirectory), or located by a mapping file (JSON object: tensor name ->
path relative to the mapping file, or ``{"path": ..., "format": "hex"|"npy"|"bin", "lanes": L}``).

* ``.hex`` is read in the set's own layout (``docs/golden_format.md``: W-bit two's complement words of
  ``ceil(W/4)`` digits, the set's ``lanes_per_word`` unless the mapping says otherwise);
* ``.npy`` is any integer NPY 1.0 array with the tensor's element count (shape ``[B, *shape]`` or flat);
* ``.bin`` is the raw little-endian storage dtype of the IR type (the manifest's ``dtype``).

The report walks the set's ops in execution order and names the first op whose output differs: the
tensor, the flat index and its coordinates, expected vs got (hex and decimal), and the op's inputs at
that element (:func:`_context` says what is printed per op type); then one table row per op with the
mismatch count and the largest |expected - got|. Library: :func:`diff_dump`; CLI: ``golden diff``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from repq_hw.golden import formats as fmt
from repq_hw.golden.reader import GoldenSet
from repq_hw.golden.writer import GoldenError

__all__ = ["DiffReport", "DumpError", "OpDiff", "diff_dump", "load_dump"]

DUMP_FORMATS = ("hex", "npy", "bin")
# axis names of the per-image layouts (the leading axis is always the image)
_AXES = {"NC": ("n", "c"), "HND": ("h", "n", "d"), "HNN": ("h", "i", "j"), "CHW": ("c", "y", "x")}
_SHOW = 16  # vectors of at most this many values are printed in full


class DumpError(GoldenError):
    """A device dump that cannot be compared: missing tensors, wrong sizes, unreadable or malformed files,
    a bad mapping file. The message names every offending tensor and file."""


@dataclass
class OpDiff:
    """One selected op's output compared with the dump."""

    index: int
    op: str
    op_type: str
    tensor: str
    elements: int
    mismatches: int | None  # None: the dump has no file for this tensor (only with partial=True)
    max_abs: int = 0


@dataclass
class DiffReport:
    set_path: Path
    dump_path: Path
    ops: list[OpDiff] = field(default_factory=list)
    first: str | None = None  # the text block describing the first divergence
    skipped: list[str] = field(default_factory=list)

    @property
    def diverged(self) -> bool:
        return self.first is not None

    @property
    def first_op(self) -> OpDiff | None:
        return next((o for o in self.ops if o.mismatches), None)

    def table(self) -> str:
        w = max([len(o.op) for o in self.ops] + [2])
        t = max([len(o.op_type) for o in self.ops] + [4])
        lines = [f"{'#':>4}  {'op':<{w}}  {'type':<{t}}  {'mismatches':>21}  {'max |diff|':>12}"]
        for o in self.ops:
            if o.mismatches is None:
                cnt, mx = "not in dump", "-"
            else:
                cnt, mx = f"{o.mismatches}/{o.elements}", str(o.max_abs)
            lines.append(f"{o.index:>4}  {o.op:<{w}}  {o.op_type:<{t}}  {cnt:>21}  {mx:>12}")
        return "\n".join(lines)

    def text(self) -> str:
        head = f"golden diff {self.set_path} vs dump {self.dump_path}"
        out = [head]
        if self.first is None:
            compared = sum(o.mismatches is not None for o in self.ops)
            out.append(f"no divergence: {compared} op output(s) compared, every element equal")
        else:
            out.append(self.first)
        if self.skipped:
            out.append(f"not in the dump (skipped, --partial): {', '.join(self.skipped)}")
        out.append("")
        out.append("per op, in execution order:")
        out.append(self.table())
        return "\n".join(out)


# ---------------------------------------------------------------------------------------------------
# reading the dump


def _load_mapping(path: Path) -> dict[str, dict]:
    try:
        doc = json.loads(path.read_text())
    except OSError as e:
        raise DumpError(f"mapping file {path}: cannot read it: {e.strerror or e}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DumpError(f"mapping file {path}: not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise DumpError(f"mapping file {path}: must be a JSON object tensor name -> path, got {type(doc).__name__}")
    out = {}
    for name, v in doc.items():
        if isinstance(v, str):
            v = {"path": v}
        if not isinstance(v, dict) or not isinstance(v.get("path"), str):
            raise DumpError(f"mapping file {path}: entry {name!r} must be a path or {{\"path\": ..., \"format\": ...}}")
        bad = set(v) - {"path", "format", "lanes"}
        if bad:
            raise DumpError(f"mapping file {path}: entry {name!r} has unknown key(s) {', '.join(sorted(bad))}")
        f = v.get("format") or Path(v["path"]).suffix.lstrip(".")
        if f not in DUMP_FORMATS:
            raise DumpError(f"mapping file {path}: entry {name!r}: format {f!r} is not one of {', '.join(DUMP_FORMATS)} "
                            "(give \"format\" or use a .hex/.npy/.bin name)")
        lanes = v.get("lanes")
        if lanes is not None and (not isinstance(lanes, int) or isinstance(lanes, bool) or lanes < 1):
            raise DumpError(f"mapping file {path}: entry {name!r}: lanes must be an integer >= 1, got {lanes!r}")
        p = Path(v["path"])
        out[name] = {"path": p if p.is_absolute() else path.parent / p, "format": f, "lanes": lanes}
    return out


def _find(dump: Path, name: str) -> list[tuple[Path, str]]:
    hits = []
    for d in (dump, dump / "tensors"):
        for f in DUMP_FORMATS:
            p = d / f"{name}.{f}"
            if p.is_file():
                hits.append((p, f))
    return hits


def _decode(gs: GoldenSet, e: dict, path: Path, f: str, lanes: int | None) -> np.ndarray:
    """The dumped values of tensor entry ``e`` as int64 ``[B, *shape]``; DumpError names the file."""
    shape = (e["batch"], *e["shape"])
    count = math.prod(shape)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DumpError(f"tensor {e['name']!r}: cannot read {path}: {err.strerror or err}") from None
    want = f"{count} elements ([{', '.join(map(str, shape))}], {e['ir_type']})"
    try:
        if f == "npy":
            a = fmt.parse_npy(data, str(path))
            if a.size != count:
                raise DumpError(f"tensor {e['name']!r}: {path} has {a.size} elements (shape {list(a.shape)}), "
                                f"expected {want}")
            return a.astype(np.int64).reshape(shape)
        if f == "bin":
            item = np.dtype(e["dtype"]).itemsize
            if len(data) != count * item:
                raise DumpError(f"tensor {e['name']!r}: {path} has {len(data)} bytes, expected {count * item} = {want} "
                                f"x {item} byte(s) of little-endian {e['dtype']}")
            return fmt.decode_bin(data, e["dtype"], count, str(path)).reshape(shape)
        if lanes is None:
            hexf = e["files"].get("hex")
            lanes = hexf["lanes_per_word"] if hexf else gs.manifest["formats"]["lanes_per_word"]
        nwords = -(-count // lanes)
        d = fmt.hex_digits(e["bits"])
        nl = data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
        if nl != nwords:
            raise DumpError(f"tensor {e['name']!r}: {path} has {nl} lines, expected {nwords} "
                            f"({want}, {lanes} per line, {lanes * d} hex digits each)")
        return fmt.decode_hex(data, e["bits"], e["signed"], count, lanes, str(path)).reshape(shape)
    except fmt.FormatError as err:
        raise DumpError(f"tensor {e['name']!r}: {err} (expected {want} in the set's {f} layout)") from None


def load_dump(gs: GoldenSet, dump: str | Path, mapping: str | Path | None = None, names=None,
              partial: bool = False) -> dict[str, np.ndarray]:
    """Read the dumped tensors ``names`` (default: the outputs of every op of the set). Raises
    :class:`DumpError` naming every missing tensor (unless ``partial``), every wrong-size or malformed
    file, and tensors found in two formats."""
    dump = Path(dump)
    if not dump.is_dir():
        raise DumpError(f"dump directory {dump}: no such directory")
    if names is None:
        names = [o["tensor"] for op in gs.ops for o in op["outputs"]]
    mp = _load_mapping(Path(mapping)) if mapping else {}
    unknown = [n for n in mp if n not in gs.tensor_names]
    if unknown:
        raise DumpError(f"mapping file {mapping}: tensor(s) not in the set: {', '.join(unknown)}")
    located, missing, ambiguous = {}, [], []
    for n in names:
        if n in mp:
            m = mp[n]
            if not m["path"].is_file():
                missing.append(f"{n} (mapped to {m['path']}, no such file)")
                continue
            located[n] = (m["path"], m["format"], m["lanes"])
            continue
        hits = _find(dump, n)
        if not hits:
            missing.append(n)
        elif len(hits) > 1:
            ambiguous.append(f"{n} ({', '.join(str(p) for p, _ in hits)})")
        else:
            located[n] = (*hits[0], None)
    if ambiguous:
        raise DumpError(f"dump {dump}: tensor(s) stored more than once, keep one file each: {'; '.join(ambiguous)}")
    if missing and not partial:
        raise DumpError(f"dump {dump} misses {len(missing)} of {len(names)} op output tensor(s) (looked for "
                        f"<tensor>.hex/.npy/.bin in {dump} and {dump / 'tensors'}): {', '.join(missing)}"
                        " -- dump them, map them with --map, or compare only what is there with --partial")
    if not located:
        raise DumpError(f"dump {dump}: none of the set's {len(names)} op output tensors is there")
    out, bad = {}, []
    for n, (p, f, lanes) in located.items():
        try:
            out[n] = _decode(gs, gs.tensor_entry(n), p, f, lanes)
        except DumpError as err:
            bad.append(str(err))
    if bad:
        raise DumpError(f"dump {dump}: {len(bad)} tensor file(s) do not match the set: " + "; ".join(bad))
    return out


# ---------------------------------------------------------------------------------------------------
# the report


def _hexval(v: int, bits: int) -> str:
    return f"0x{int(v) & ((1 << bits) - 1):0{fmt.hex_digits(bits)}x}"


def _val(v: int, bits: int) -> str:
    return f"{int(v)} ({_hexval(v, bits)})"


def _vec(v: np.ndarray, mark: int | None = None) -> str:
    v = np.asarray(v).reshape(-1).astype(np.int64)
    n = v.size
    if n == 0:
        return "[] (0 values)"
    if n <= _SHOW:
        body = ", ".join(f"*{x}*" if i == mark else str(x) for i, x in enumerate(v.tolist()))
    else:
        body = ", ".join(str(x) for x in v[:8].tolist()) + ", ..., " + ", ".join(str(x) for x in v[-4:].tolist())
    s = f"[{body}] ({n} values, min {int(v.min())}, max {int(v.max())}, sum {int(v.sum())})"
    if mark is not None and n > _SHOW:
        s += f", [{mark}] = {int(v[mark])}"
    return s


def _coords(idx: tuple, layout: str | None) -> str:
    names = ("image", *_AXES.get(layout or "", tuple(f"d{i}" for i in range(len(idx) - 1))))
    if len(names) != len(idx):
        names = ("image", *(f"d{i}" for i in range(len(idx) - 1)))
    return ", ".join(f"{a}={i}" for a, i in zip(names, idx))


def _const(gs: GoldenSet, op: dict, role: str):
    name = op["constants"].get(role)
    if name is None or name not in gs.constant_names:
        return None
    return gs.constant(name).astype(np.int64)


def _at(arr, ch: int):
    """Per-channel constant at channel ``ch`` (a scalar constant broadcasts)."""
    a = np.asarray(arr).reshape(-1)
    return int(a[ch] if a.size > 1 else a[0])


def _context(gs: GoldenSet, op: dict, idx: tuple) -> list[str]:
    """The op's inputs at output element ``idx`` (``[image, ...]``), golden values (the earlier ops of the
    dump match, so these are also what the device consumed when they are outputs of earlier ops):

    * element-wise ops (``requantize``, ``add``, ``lut``, ``log2_code``, and any op whose input has the
      output's shape): every input at the same index, plus the per-channel constants of the last axis
      (``multiplier``, ``shift``, ``offset``; the ``lut`` table entry; the ``log2_code`` thresholds);
    * ``gemm``: the activation row ``a[image, m, :]`` (K values), the weight row ``w[n, :]``, ``w_zp[n]``,
      ``bias[n]`` and ``a_zp``;
    * ``bmm_qk``: ``q[image, h, i, :]`` and ``k[image, h, j, :]`` (D values) and the zero points;
    * ``attn_v_shift``: the code row ``codes[image, h, i, :]`` and the value column ``v[image, h, :, d]``;
    * ``softmax``: the input row ``x[image, h, i, :]`` (the reduction axis) and its maximum;
    * ``layernorm``: the input row ``x[image, t, :]`` (C values) and the channel's multiplier/shift/offset.
    """
    t = op["op"]
    ins = {r["role"]: r["tensor"] for r in op["inputs"]}
    out_e = gs.tensor_entry(op["outputs"][0]["tensor"])
    lines = []

    def tens(role):
        n = ins.get(role)
        return (n, gs.tensor(n).astype(np.int64)) if n in gs.tensor_names else (n, None)

    def entry(n):
        return gs.tensor_entry(n)

    b = idx[0]
    try:
        if t == "gemm":
            n, a = tens("a")
            m, ch = idx[-2], idx[-1]
            w = _const(gs, op, "weight")
            lines.append(f"input a = {n}[{b}, {m}, :] (row m={m}, K values): " + (_vec(a[b, m]) if a is not None else "not stored"))
            if w is not None:
                lines.append(f"weight w[{ch}, :] (row n={ch} = output channel): {_vec(w[ch])}")
            for role in ("w_zp", "bias"):
                c = _const(gs, op, role)
                if c is not None:
                    lines.append(f"{role}[{ch}] = {_at(c, ch)}")
            lines.append(f"a_zp = {op['attrs'].get('a_zp')}")
        elif t == "bmm_qk":
            (qn, q), (kn, k) = tens("q"), tens("k")
            h, i, j = idx[1], idx[2], idx[3]
            lines.append(f"input q = {qn}[{b}, {h}, {i}, :] (row i={i}): " + (_vec(q[b, h, i]) if q is not None else "not stored"))
            lines.append(f"input k = {kn}[{b}, {h}, {j}, :] (row j={j}): " + (_vec(k[b, h, j]) if k is not None else "not stored"))
            lines.append(f"q_zp = {op['attrs'].get('q_zp')}, k_zp = {op['attrs'].get('k_zp')}")
        elif t == "attn_v_shift":
            (cn, c), (vn, v) = tens("codes"), tens("v")
            h, i, d = idx[1], idx[2], idx[3]
            lines.append(f"input codes = {cn}[{b}, {h}, {i}, :] (row i={i}, N values): "
                         + (_vec(c[b, h, i]) if c is not None else "not stored"))
            lines.append(f"input v = {vn}[{b}, {h}, :, {d}] (column d={d}, N values): "
                         + (_vec(v[b, h, :, d]) if v is not None else "not stored"))
            lines.append(f"v_zp = {op['attrs'].get('v_zp')}, zero state Z = {op['derived'].get('zero_state')}")
        elif t == "softmax":
            n, x = tens("x")
            row = x[idx[:-1]] if x is not None else None
            lines.append(f"input x = {n}[{', '.join(map(str, idx[:-1]))}, :] (the reduction row): "
                         + (_vec(row, idx[-1]) if row is not None else "not stored"))
        elif t == "layernorm":
            n, x = tens("x")
            ch = idx[-1]
            row = x[idx[:-1]] if x is not None else None
            lines.append(f"input x = {n}[{', '.join(map(str, idx[:-1]))}, :] (the normalised row, C values): "
                         + (_vec(row, ch) if row is not None else "not stored"))
            for role in ("multiplier", "shift", "offset"):
                c = _const(gs, op, role)
                if c is not None:
                    lines.append(f"{role}[{ch}] = {_at(c, ch)}")
        else:
            ch = idx[-1]
            for role, n in ins.items():
                if n not in gs.tensor_names:
                    lines.append(f"input {role} = {n}: not stored in the set")
                    continue
                e = entry(n)
                x = gs.tensor(n).astype(np.int64)
                if x.shape == (out_e["batch"], *out_e["shape"]):
                    xv = int(x[idx])
                    lines.append(f"input {role} = {n}[{', '.join(map(str, idx))}] = {_val(xv, e['bits'])}")
                    if t == "lut":
                        tab = _const(gs, op, "table")
                        if tab is not None:
                            k = xv - int(op["attrs"].get("in_min", 0))
                            if 0 <= k < tab.size:
                                lines.append(f"table[{k}] (x - in_min) = {int(tab.reshape(-1)[k])}")
                    if t == "log2_code":
                        th = _const(gs, op, "thresholds")
                        if th is not None:
                            lines.append(f"thresholds: {_vec(th)}; x >= threshold count = {int((xv >= th).sum())}")
                else:
                    lines.append(f"input {role} = {n}: shape {list(x.shape)}, no element-wise mapping "
                                 f"for op type {t!r}")
            for role in ("multiplier", "shift", "offset"):
                c = _const(gs, op, role)
                if c is not None:
                    lines.append(f"{role}[{ch}] = {_at(c, ch)}")
    except (IndexError, ValueError) as err:  # an op whose tensors do not have the documented shapes
        lines.append(f"(inputs not shown: {err})")
    return lines


def diff_dump(set_path: str | Path, dump: str | Path, mapping: str | Path | None = None,
              partial: bool = False) -> DiffReport:
    """Compare a device dump with a golden set: see the module docstring. Raises :class:`DumpError` (or
    ``GoldenError`` for a bad set) instead of reporting on a dump that cannot be compared."""
    gs = set_path if isinstance(set_path, GoldenSet) else GoldenSet(set_path)
    got = load_dump(gs, dump, mapping, partial=partial)
    rep = DiffReport(gs.path, Path(dump))
    for op in gs.ops:
        for o in op["outputs"]:
            n = o["tensor"]
            e = gs.tensor_entry(n)
            if n not in got:
                rep.ops.append(OpDiff(op["index"], op["name"], op["op"], n, e["elements"], None))
                rep.skipped.append(n)
                continue
            exp = gs.tensor(n).astype(np.int64)
            g = got[n]
            bad = exp != g
            cnt = int(bad.sum())
            mx = int(np.abs(exp[bad] - g[bad]).max()) if cnt else 0
            od = OpDiff(op["index"], op["name"], op["op"], n, exp.size, cnt, mx)
            rep.ops.append(od)
            if cnt and rep.first is None:
                flat = int(np.flatnonzero(bad.reshape(-1))[0])
                idx = tuple(int(i) for i in np.unravel_index(flat, exp.shape))
                ev, gv = int(exp[idx]), int(g[idx])
                lines = [
                    f"FIRST DIVERGENCE at op #{op['index']} {op['name']} ({op['op']}, spec: {', '.join(op['spec'])})",
                    (f"  tensor {n} ({e['ir_type']}, shape [B={e['batch']}, {', '.join(map(str, e['shape']))}], "
                     f"layout {e['layout']})"),
                    f"  flat index {flat} = [{', '.join(map(str, idx))}] ({_coords(idx, e['layout'])})",
                    f"  expected {_val(ev, e['bits'])}, got {_val(gv, e['bits'])}, difference {gv - ev}",
                    f"  {cnt} of {exp.size} elements differ, max |diff| {mx}",
                    "  op inputs at this element (golden values):",
                ]
                lines += ["    " + ln for ln in _context(gs, op, idx)]
                rep.first = "\n".join(lines)
    return rep
