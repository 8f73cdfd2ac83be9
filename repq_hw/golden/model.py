"""Golden sets for named models (calibrate + lower + write), the committed sample sets, and the helper
the demo command calls. Only the functions that calibrate a model or load the digits images import
the torch side, lazily; regenerating a committed set from its stored IR is numpy-only."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from repq_hw.golden.writer import (
    MANIFEST,
    PROVENANCE,
    Formats,
    GoldenError,
    Selection,
    check_out,
    write_golden_set,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
GOLDEN_ROOT = REPO_ROOT / "golden_vectors"
HASH_FILE = "SHA256SUMS"

# What the committed sample sets store (the whole golden_vectors/ folder must stay < 10 MB; ~8.2 MB):
# * images: the first 2 digits test images;
# * ops: the compute ops of block 0 and of the head (layernorm, gemm, bmm_qk, softmax, log2_code,
#   attn_v_shift, requantize, lut, add), except the four requantizers that read a data-movement result
#   (attn.q/k/v read the qkv slices, attn.proj_in reads merge_heads): their inputs would repeat the int32
#   accumulators already stored. The head's logits depend on every block, so any arithmetic change
#   anywhere shows up in the committed bytes;
# * formats: tensors as .hex only (what $readmemh reads; .npy/.bin add ~1.4 MB per set and are the same
#   integers); constants as .hex, plus .coe/.mif for the ROMs of at most 1024 words (exp2 LUT, GELU table,
#   log2 thresholds, per-channel multipliers/shifts/offsets, zero points, biases). The weights' .npy is in
#   ir/constants.npz.
COMPUTE_OPS = ("gemm", "bmm_qk", "softmax", "log2_code", "attn_v_shift", "layernorm", "lut", "requantize", "add")
COMMITTED_SELECTION = Selection(ops=("blocks.0.*", "head*", "norm"), op_types=COMPUTE_OPS,
                                exclude=("blocks.0.attn.[qkv]", "blocks.0.attn.proj_in"))
COMMITTED_FORMATS = Formats(tensors=("hex",), constants=("hex", "coe", "mif"), lanes=1, rom_max_words=1024)


@dataclass(frozen=True)
class CommittedSpec:
    model: str
    bits: int
    images: int = 2
    seed: int = 0
    calib_size: int = 32
    selection: Selection = field(default=COMMITTED_SELECTION)
    formats: Formats = field(default=COMMITTED_FORMATS)

    @property
    def name(self) -> str:
        return f"{self.model}.w{self.bits}a{self.bits}.seed{self.seed}"

    def command(self) -> str:
        """The CLI line that regenerates this set from the model."""
        sel = " ".join([f"--ops '{p}'" for p in self.selection.ops]
                       + [f"--op-type {t}" for t in self.selection.op_types]
                       + [f"--exclude '{p}'" for p in self.selection.exclude])
        return (f"repq-hw golden --model {self.model} --bits {self.bits} --images {self.images} --seed {self.seed} "
                f"{sel} --formats {','.join(self.formats.tensors)} "
                f"--const-formats {','.join(self.formats.constants)} --rom-max-words {self.formats.rom_max_words} "
                f"--out golden_vectors/{self.name}")


# Swin: the attention half of one shifted block (stage 0, block 1: norm1, cyclic shift + window partition,
# q.k^T, relative position bias + window mask, softmax, log2 codes, attn.V, proj, window reverse, residual
# add; its MLP half is ViT's, which the vit_digits sets cover), the stage-1 patch merging and the head (final
# norm, integer average pool, classifier). One image keeps golden_vectors/ small.
SWIN_SELECTION = Selection(ops=("layers.0.blocks.1.*", "layers.1.downsample.*", "norm", "head*"),
                           op_types=COMPUTE_OPS + ("add_const", "avg_pool", "window_partition", "window_reverse",
                                                   "patch_merge"),
                           exclude=("layers.0.blocks.1.attn.[qkv]", "layers.0.blocks.1.attn.qkv",
                                    "layers.0.blocks.1.attn.proj_in", "layers.0.blocks.1.mlp.*",
                                    "layers.0.blocks.1.norm2", "layers.0.blocks.1.add2"))

COMMITTED_SETS: tuple[CommittedSpec, ...] = (CommittedSpec("vit_digits", 4), CommittedSpec("vit_digits", 8),
                                             CommittedSpec("swin_digits", 8, images=1, selection=SWIN_SELECTION))


def digits_inputs(g, n: int | None = 2, ids: list[int] | None = None):
    """(input codes, input ids) for digits test images: the first ``n``, or the indices ``ids``.
    Imports the torch-side data pipeline (host preprocessing)."""
    from repq_hw.data.digits import load_digits_split
    from repq_hw.pipeline import host_input_codes

    xs, _ = load_digits_split("test")
    idx = list(ids) if ids is not None else list(range(int(n)))
    if not idx or min(idx) < 0 or max(idx) >= len(xs):
        raise GoldenError(f"digits test image ids must be in [0, {len(xs)}), got {idx}")
    imgs = xs[idx].numpy()
    return host_input_codes(g, imgs), [f"digits:test:{i}" for i in idx]


def _provenance_float_env(set_dir: Path) -> dict | None:
    """The float record in a set's provenance.json, or None (absent, unreadable: provenance is informative)."""
    from repq_hw.golden.reader import load_json
    from repq_hw.golden.writer import PROVENANCE

    try:
        fe = load_json(Path(set_dir) / PROVENANCE, "provenance").get("float_env")
    except GoldenError:
        return None
    return fe if isinstance(fe, dict) else None


def _float_record() -> dict:
    """This process's float-environment record (torch side: only called after a calibration)."""
    from repq_hw.float_env import record

    return record()


def lower_model(model: str, w_bits: int, a_bits: int, seed: int = 0, calib_size: int = 32,
                checkpoint: str | None = None):
    """Calibrate (RepQ-ViT, seeded) and lower a supported ViT/DeiT; returns the graph (imports torch)."""
    from repq_hw.pipeline import calibrated_and_lowered
    from repq_hw.quant.model import QuantConfig

    _, _, g, _ = calibrated_and_lowered(model, QuantConfig(w_bits=w_bits, a_bits=a_bits), checkpoint=checkpoint,
                                        calib_size=calib_size, seed=seed)
    return g


ALL_OPS = Selection()
DEFAULT_FORMATS = Formats()


def write_for_model(model: str, w_bits: int, a_bits: int, out: str | Path, *, images: int | None = 2,
                    image_ids: list[int] | None = None, seed: int = 0, calib_size: int = 32,
                    checkpoint: str | None = None, selection: Selection = ALL_OPS,
                    formats: Formats = DEFAULT_FORMATS, force: bool = False, backend: str = "fast",
                    progress: bool = True, float_env: dict | None = None) -> Path:
    """Calibrate + lower ``model`` at WxAy and write a golden set on digits test images.

    ``float_env``: the float-environment record of this process (``repq_hw.float_env.record()``), written
    to ``provenance.json``; the caller on the torch side passes it (this module never imports torch itself)."""
    out = check_out(out, force)  # before calibrating
    g = lower_model(model, w_bits, a_bits, seed, calib_size, checkpoint)
    float_env = float_env if float_env is not None else _float_record()
    codes, ids = digits_inputs(g, images, image_ids)
    return write_golden_set(g, codes, out, input_ids=ids, model=model, seed=seed, selection=selection,
                            formats=formats, force=force, backend=backend, progress=progress,
                            input_source="digits test split (repq_hw.data.digits), host-quantized",
                            float_env=float_env)


def regenerate_committed(out_root: str | Path = GOLDEN_ROOT, *, from_ir: str | Path | None = None,
                         specs: tuple[CommittedSpec, ...] = COMMITTED_SETS, force: bool = False,
                         backend: str = "fast", progress: bool = True,
                         float_env: dict | None = None) -> list[Path]:
    """Write the committed sample sets under ``out_root`` and its ``SHA256SUMS``.

    ``from_ir``: a folder holding existing sets (e.g. ``golden_vectors``): each set is rebuilt from its
    stored IR and input codes (numpy only, no calibration) -- this is what the byte-equality test runs.
    Without it, each model is calibrated and lowered from scratch (torch); ``float_env`` (the record of
    the calibrating process) then goes into each set's ``provenance.json``.
    """
    from repq_hw.golden.reader import GoldenSet

    out_root = Path(out_root)
    paths = []
    for spec in specs:
        out = out_root / spec.name
        if from_ir is not None:
            # not schema-validated: a set of an older manifest layout can be rebuilt into the current one
            src = GoldenSet(Path(from_ir) / spec.name, validate=False)
            m = src.manifest
            # the floats were made by the process that calibrated the source set: keep its record
            src_fe = _provenance_float_env(src.path)
            p = write_golden_set(src.graph(), src.input_codes(), out, input_ids=m["inputs"]["ids"],
                                 model=m["model"], seed=m["seed"], selection=spec.selection, formats=spec.formats,
                                 force=force, backend=backend, progress=progress, input_source=m["inputs"]["source"],
                                 float_env=float_env if float_env is not None else src_fe)
        else:
            p = write_for_model(spec.model, spec.bits, spec.bits, out, images=spec.images, seed=spec.seed,
                                calib_size=spec.calib_size, selection=spec.selection, formats=spec.formats,
                                force=force, backend=backend, progress=progress, float_env=float_env)
        paths.append(p)
    write_hash_file(out_root, [s.name for s in specs])
    return paths


@dataclass
class SetComparison:
    """Byte comparison of two golden sets, with the reasons they may legitimately differ."""

    a: Path
    b: Path
    differences: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    """Why the sets may differ (float modes, torch versions, IR hashes); filled only when they differ."""

    @property
    def identical(self) -> bool:
        return not self.differences

    def lines(self, limit: int = 20) -> list[str]:
        """Reasons first (``why: ...``), then at most ``limit`` byte differences."""
        out = [f"why: {r}" for r in self.reasons]
        out += self.differences[:limit]
        if len(self.differences) > limit:
            out.append(f"... and {len(self.differences) - limit} more difference(s)")
        return out

    def text(self) -> str:
        if self.identical:
            return f"{self.a} and {self.b} are byte-identical (provenance.json excluded)"
        return "\n".join([f"{self.a} and {self.b} differ ({len(self.differences)} difference(s)):"]
                         + [f"  {ln}" for ln in self.lines()])


def _set_facts(d: Path) -> dict:
    """What a set says about how its floats were made: manifest ``reproducible``, the IR's float mode,
    the provenance's torch version / float record, the IR hash. Unreadable parts are None."""
    import json

    facts = {"reproducible": None, "mode": None, "torch": None, "float_record": False, "ir_hash": None}
    try:
        m = json.loads((d / MANIFEST).read_text())
        if isinstance(m, dict):
            facts["reproducible"] = m.get("reproducible") is True
            facts["ir_hash"] = (m.get("ir") or {}).get("hash") if isinstance(m.get("ir"), dict) else None
    except (OSError, ValueError):
        pass
    try:
        meta = json.loads((d / "ir" / "graph.json").read_text()).get("meta", {})
        fe = meta.get("float_env") if isinstance(meta, dict) else None
        if isinstance(fe, dict) and isinstance(fe.get("mode"), str):
            facts["mode"] = fe["mode"]
    except (OSError, ValueError, AttributeError):
        pass
    try:
        p = json.loads((d / PROVENANCE).read_text())
        fe = p.get("float_env") if isinstance(p, dict) else None
        if isinstance(fe, dict):
            facts["float_record"] = True
            facts["torch"] = fe.get("torch")
            facts["mode"] = facts["mode"] or fe.get("mode")
    except (OSError, ValueError, AttributeError):
        pass
    return facts


def compare_sets(a: str | Path, b: str | Path, labels: tuple[str, str] = ("A", "B")) -> SetComparison:
    """Compare two golden sets byte for byte (``provenance.json`` excluded) and, when they differ, say why
    they may: a set made in fast-float mode or without a float record (``reproducible: false``: its
    float-derived constants depend on the CPU), different torch versions in the provenance, or different
    IR hashes (then the integer IRs themselves differ; with the same IR hash the difference is in the
    writer or the emulator, not in floats)."""
    a, b = Path(a), Path(b)
    rep = SetComparison(a, b)
    for d, lab in ((a, labels[0]), (b, labels[1])):
        if not (d / MANIFEST).is_file():
            rep.differences.append(f"set {lab} ({d}): no {MANIFEST}")
    if rep.differences:
        return rep

    def files(d: Path) -> set[str]:
        return {p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file() and not p.is_symlink()}

    fa, fb = files(a) - {PROVENANCE}, files(b) - {PROVENANCE}
    for rel in sorted(fa ^ fb):
        rep.differences.append(f"{rel}: only in set {labels[0] if rel in fa else labels[1]}")
    for rel in sorted(fa & fb):
        if (a / rel).read_bytes() != (b / rel).read_bytes():
            rep.differences.append(f"{rel}: bytes differ")
    if rep.identical:
        return rep
    fx = {labels[0]: _set_facts(a), labels[1]: _set_facts(b)}
    ha, hb = fx[labels[0]]["ir_hash"], fx[labels[1]]["ir_hash"]
    if ha and ha == hb:
        rep.reasons.append(f"both sets hold the same IR ({ha[:12]}...): the difference comes from the golden writer "
                           "or the emulator (integer code); float modes and torch versions cannot explain it")
        return rep
    if ha and hb:
        rep.reasons.append(f"the IR hashes differ ({ha[:12]}... vs {hb[:12]}...): the integer IRs differ (lowering, "
                           "calibration or float-derived constants), so the data files differ too")
    for lab, f in fx.items():
        if f["reproducible"] is not True:
            mode = f["mode"] or ("fast-float" if f["float_record"] else None)
            how = (f"was made in {mode} mode" if mode else "has no float-environment record (an IR lowered "
                   "without the reproducible float mode, or before it existed)")
            rep.reasons.append(f"set {lab} {how} (reproducible: false): its float-derived constants (scales, "
                               "multipliers, shifts) may differ from a reproducible set or from another CPU")
    ta, tb = fx[labels[0]]["torch"], fx[labels[1]]["torch"]
    if ta is not None and tb is not None and ta != tb:
        rep.reasons.append(f"the torch versions differ (set {labels[0]}: {ta}, set {labels[1]}: {tb}): float "
                           "kernels, hence calibrated scales, may differ between torch releases")
    elif (ta is None) != (tb is None):
        lab = labels[0] if ta is None else labels[1]
        rep.reasons.append(f"set {lab} records no torch version (provenance.json has no float_env): the torch "
                           "versions cannot be compared")
    return rep


def check_committed(root: str | Path = GOLDEN_ROOT, specs: tuple[CommittedSpec, ...] = COMMITTED_SETS,
                    progress: bool = False, backend: str = "fast") -> list[str]:
    """Rebuild the committed sets from their own stored IR and inputs (numpy only) in a temporary folder
    and list every byte difference (also of SHA256SUMS), each set's reasons first (``why: ...``, see
    :func:`compare_sets`). Empty list: identical."""
    import tempfile

    root = Path(root)
    names = [s.name for s in specs]
    missing = [n for n in names if not (root / n / "manifest.json").is_file()]
    if missing:
        return [f"{n}: no committed set (manifest.json missing)" for n in missing]
    diffs: list[str] = []
    with tempfile.TemporaryDirectory(prefix="repq_golden_check_") as tmp:
        regenerate_committed(tmp, from_ir=root, specs=specs, progress=progress, backend=backend)
        for n in names:
            c = compare_sets(root / n, Path(tmp) / n, labels=("committed", "regenerated"))
            diffs += [f"{n}: {ln}" for ln in c.lines(limit=10**6)]
        ha, hb = root / HASH_FILE, Path(tmp) / HASH_FILE
        if not ha.is_file() or ha.read_bytes() != hb.read_bytes():
            diffs.append(f"{HASH_FILE}: differs from the regeneration's")
    return diffs


def hash_lines(root: str | Path, names: list[str]) -> str:
    """``sha256sum -c`` compatible lines for every file of the named sets (provenance.json excluded)."""
    root = Path(root)
    lines = []
    for name in sorted(names):
        base = root / name
        for p in sorted(q for q in base.rglob("*") if q.is_file()):
            rel = p.relative_to(root).as_posix()
            if p.name == "provenance.json":
                continue
            lines.append(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {rel}")
    return "\n".join(lines) + "\n"


def write_hash_file(root: str | Path, names: list[str]) -> Path:
    p = Path(root) / HASH_FILE
    p.write_text(hash_lines(root, names))
    return p


def replay_hint(set_dir: str | Path) -> str:
    """How to verify a set and replay its ops on the reference RTL (text for a terminal)."""
    from repq_hw.golden.reader import GoldenSet

    gs = GoldenSet(set_dir, validate=False)
    d = Path(set_dir)
    ops_by_type: dict[str, str] = {}
    for o in gs.ops:
        ops_by_type.setdefault(o["op"], o["name"])
    from repq_hw.golden.rtl import RTL_UNITS

    lines = [gs.summary(),
             f"  verify (re-execute the stored IR, check every hash and element):  repq-hw golden verify {d}",
             "  replay on the reference RTL (Icarus Verilog; sim/rtl, sim/tb):"]
    for op_type in RTL_UNITS:
        if op_type in ops_by_type:
            lines.append(f"    repq-hw golden replay {d} --op {ops_by_type[op_type]}")
    lines.append("  file layouts and the manifest: docs/golden_format.md")
    return "\n".join(lines)


def write_demo_golden(g, out: str | Path, *, images: int = 2, model: str | None = None, seed: int | None = 0,
                      selection: Selection = COMMITTED_SELECTION, formats: Formats = COMMITTED_FORMATS,
                      force: bool = True, progress: bool = True, print_fn=print) -> Path:
    """For the demo command: write a golden set of an already lowered graph ``g`` on the first ``images``
    digits test images into ``out`` (replacing a previous demo set), then print how to verify and replay it.

    Usage in ``cmd_demo``: ``write_demo_golden(g, out / "golden" / set_name(DEFAULT_MODEL, g))``.
    """
    codes, ids = digits_inputs(g, images)
    p = write_golden_set(g, codes, out, input_ids=ids, model=model or g.meta.get("model"), seed=seed,
                         selection=selection, formats=formats, force=force, progress=progress,
                         input_source="digits test split (repq_hw.data.digits), host-quantized")
    print_fn(replay_hint(p))
    return p
