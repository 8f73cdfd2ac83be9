"""Golden sets for named models (calibrate + lower + write), the committed sample sets, and the helper
the demo command calls. Only the functions that calibrate a model or load the digits images import
the torch side, lazily; regenerating a committed set from its stored IR is numpy-only."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from repq_hw.golden.writer import Formats, GoldenError, Selection, write_golden_set

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


COMMITTED_SETS: tuple[CommittedSpec, ...] = (CommittedSpec("vit_digits", 4), CommittedSpec("vit_digits", 8))


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
                    progress: bool = True) -> Path:
    """Calibrate + lower ``model`` at WxAy and write a golden set on digits test images."""
    out = Path(out)
    if out.exists() and not force:
        raise GoldenError(f"{out} exists; pass --force to replace it (golden sets are never overwritten silently)")
    g = lower_model(model, w_bits, a_bits, seed, calib_size, checkpoint)
    codes, ids = digits_inputs(g, images, image_ids)
    return write_golden_set(g, codes, out, input_ids=ids, model=model, seed=seed, selection=selection,
                            formats=formats, force=force, backend=backend, progress=progress,
                            input_source="digits test split (repq_hw.data.digits), host-quantized")


def regenerate_committed(out_root: str | Path = GOLDEN_ROOT, *, from_ir: str | Path | None = None,
                         specs: tuple[CommittedSpec, ...] = COMMITTED_SETS, force: bool = False,
                         backend: str = "fast", progress: bool = True) -> list[Path]:
    """Write the committed sample sets under ``out_root`` and its ``SHA256SUMS``.

    ``from_ir``: a folder holding existing sets (e.g. ``golden_vectors``): each set is rebuilt from its
    stored IR and input codes (numpy only, no calibration) -- this is what the byte-equality test runs.
    Without it, each model is calibrated and lowered from scratch (torch).
    """
    from repq_hw.golden.reader import GoldenSet

    out_root = Path(out_root)
    paths = []
    for spec in specs:
        out = out_root / spec.name
        if from_ir is not None:
            src = GoldenSet(Path(from_ir) / spec.name)
            m = src.manifest
            p = write_golden_set(src.graph(), src.input_codes(), out, input_ids=m["inputs"]["ids"],
                                 model=m["model"], seed=m["seed"], selection=spec.selection, formats=spec.formats,
                                 force=force, backend=backend, progress=progress, input_source=m["inputs"]["source"])
        else:
            p = write_for_model(spec.model, spec.bits, spec.bits, out, images=spec.images, seed=spec.seed,
                                calib_size=spec.calib_size, selection=spec.selection, formats=spec.formats,
                                force=force, backend=backend, progress=progress)
        paths.append(p)
    write_hash_file(out_root, [s.name for s in specs])
    return paths


def compare_trees(a: str | Path, b: str | Path, names: list[str]) -> list[str]:
    """Byte differences between the named sets under two roots (provenance.json excluded)."""
    a, b = Path(a), Path(b)
    diffs = []
    for name in names:
        fa = {p.relative_to(a / name).as_posix() for p in (a / name).rglob("*") if p.is_file()}
        fb = {p.relative_to(b / name).as_posix() for p in (b / name).rglob("*") if p.is_file()}
        fa.discard("provenance.json")
        fb.discard("provenance.json")
        for rel in sorted(fa ^ fb):
            diffs.append(f"{name}/{rel}: only in {'the committed sets' if rel in fa else 'the regeneration'}")
        for rel in sorted(fa & fb):
            if (a / name / rel).read_bytes() != (b / name / rel).read_bytes():
                diffs.append(f"{name}/{rel}: bytes differ")
    return diffs


def check_committed(root: str | Path = GOLDEN_ROOT, specs: tuple[CommittedSpec, ...] = COMMITTED_SETS,
                    progress: bool = False, backend: str = "fast") -> list[str]:
    """Rebuild the committed sets from their own stored IR and inputs (numpy only) in a temporary folder
    and list every byte difference (also of SHA256SUMS). Empty list: identical."""
    import tempfile

    root = Path(root)
    names = [s.name for s in specs]
    missing = [n for n in names if not (root / n / "manifest.json").is_file()]
    if missing:
        return [f"{n}: no committed set (manifest.json missing)" for n in missing]
    with tempfile.TemporaryDirectory(prefix="repq_golden_check_") as tmp:
        regenerate_committed(tmp, from_ir=root, specs=specs, progress=progress, backend=backend)
        diffs = compare_trees(root, tmp, names)
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
