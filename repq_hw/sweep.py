"""``repq-hw sweep``: a grid of models x bit widths x methods from a small TOML or YAML file, one table.

    # sweep.toml
    models = ["vit_digits", "swin_digits"]
    bits = [8, 6, 4]                      # W = A bits
    methods = ["repq", "naive"]           # repq, repq-noreparam, repq-mean, naive
    integer = true                        # also run the integer emulator (lowerable configurations)
    calib_size = 32                       # optional: seed, data, eval_limit, [checkpoints] model = path

Each configuration is calibrated once, here; its evaluations (fake-quant, and the integer emulator) run on
the :class:`repq_hw.execution.Runner`'s workers. Output: ``results.csv``, ``results.md`` and
``accuracy_vs_bits.png`` (top-1 against bits, one panel per model), each written atomically.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from repq_hw.errors import InputError

METHODS = {  # sweep name -> QuantConfig fields (the ablation's rows)
    "repq": dict(method="repq", reparam=True, zero_point="round"),
    "repq-noreparam": dict(method="repq", reparam=False, zero_point="round"),
    "repq-mean": dict(method="repq", reparam=True, zero_point="mean"),
    "naive": dict(method="naive"),
}
KEYS = ("models", "bits", "methods", "integer", "calib_size", "seed", "data", "eval_limit", "checkpoints")
COLUMNS = ("model", "method", "bits", "float_top1", "fakequant_top1", "integer_top1", "n", "calib_seconds",
           "note")


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep file. Args: as the file's keys (see the module docstring)."""

    models: tuple[str, ...]
    bits: tuple[int, ...]
    methods: tuple[str, ...] = ("repq",)
    integer: bool = True
    calib_size: int = 32
    seed: int = 0
    data: str | None = None
    eval_limit: int | None = None
    checkpoints: dict = field(default_factory=dict)


def _list(doc: dict, key: str, kind: type, path: str) -> tuple:
    v = doc.get(key)
    if isinstance(v, kind) and not isinstance(v, bool):
        v = [v]
    ok = isinstance(v, list) and v and all(isinstance(x, kind) and not isinstance(x, bool) for x in v)
    if not ok:
        raise InputError(f"{path}: {key!r} must be a non-empty list of {kind.__name__}, got {v!r}")
    if len(set(v)) != len(v):
        raise InputError(f"{path}: {key!r} lists a value twice: {v!r}")
    return tuple(v)


def load_spec(path: str | Path) -> SweepSpec:
    """Read and check a sweep file (``.toml``, or ``.yaml`` / ``.yml``); errors name the file and key."""
    from repq_hw.argtypes import MAX_BITS, MIN_BITS
    from repq_hw.models.registry import supported_models

    p = Path(path)
    if not p.is_file():
        raise InputError(f"sweep file {str(p)!r}: no such file")
    text = p.read_bytes()
    try:
        if p.suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10: the same parser as the tomli package
                import tomli as tomllib

            doc = tomllib.loads(text.decode())
        elif p.suffix in (".yaml", ".yml"):
            import yaml

            doc = yaml.safe_load(text)
        else:
            raise InputError(f"sweep file {str(p)!r}: expected a .toml, .yaml or .yml file")
    except (ValueError, UnicodeDecodeError) as e:  # tomllib.TOMLDecodeError is a ValueError
        raise InputError(f"sweep file {str(p)!r}: cannot parse it ({e})") from None
    except Exception as e:  # yaml.YAMLError
        if type(e).__module__.startswith("yaml"):
            raise InputError(f"sweep file {str(p)!r}: cannot parse it ({e})") from None
        raise
    if not isinstance(doc, dict):
        raise InputError(f"sweep file {str(p)!r}: expected a table of keys, got {type(doc).__name__}")
    unknown = sorted(set(doc) - set(KEYS))
    if unknown:
        raise InputError(f"sweep file {str(p)!r}: unknown key(s) {unknown}; known: {list(KEYS)}")
    where = repr(str(p))
    models = _list(doc, "models", str, f"sweep file {where}")
    bad = [m for m in models if m not in supported_models()]
    if bad:
        raise InputError(f"sweep file {where}: unknown model(s) {bad}; see `repq-hw models`")
    bits = _list(doc, "bits", int, f"sweep file {where}")
    if any(not MIN_BITS <= b <= MAX_BITS for b in bits):
        raise InputError(f"sweep file {where}: 'bits' must be in {MIN_BITS}..{MAX_BITS}, got {list(bits)}")
    methods = _list(doc, "methods", str, f"sweep file {where}") if "methods" in doc else ("repq",)
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise InputError(f"sweep file {where}: unknown method(s) {bad}; known: {list(METHODS)}")
    integer = doc.get("integer", True)
    if not isinstance(integer, bool):
        raise InputError(f"sweep file {where}: 'integer' must be true or false, got {integer!r}")
    ints = {}
    for k, lo, default in (("calib_size", 1, 32), ("seed", 0, 0), ("eval_limit", 1, None)):
        v = doc.get(k, default)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < lo):
            raise InputError(f"sweep file {where}: {k!r} must be an integer >= {lo}, got {v!r}")
        ints[k] = v
    data = doc.get("data")
    if data is not None and not isinstance(data, str):
        raise InputError(f"sweep file {where}: 'data' must be a string, got {data!r}")
    ck = doc.get("checkpoints", {})
    if not isinstance(ck, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in ck.items()):
        raise InputError(f"sweep file {where}: 'checkpoints' must map model names to weight files")
    stray = sorted(set(ck) - set(models))
    if stray:
        raise InputError(f"sweep file {where}: checkpoints for model(s) not in 'models': {stray}")
    for m, f in ck.items():
        if not Path(f).is_file():
            raise InputError(f"sweep file {where}: checkpoint of {m!r}, {f!r}: no such file")
    return SweepSpec(models, bits, methods, integer, ints["calib_size"], ints["seed"], data,
                     ints["eval_limit"], dict(ck))


@dataclass
class SweepRow:
    model: str
    method: str
    bits: int
    float_top1: float
    fakequant_top1: float
    integer_top1: float | None
    n: int
    calib_seconds: float
    note: str = ""

    def cells(self) -> list:
        def pct(v):
            return "" if v is None else f"{v:.2f}"

        return [self.model, self.method, self.bits, pct(self.float_top1), pct(self.fakequant_top1),
                pct(self.integer_top1), self.n, f"{self.calib_seconds:.2f}", self.note]


def run_sweep(spec: SweepSpec, runner, progress: bool = True, log=print) -> list[SweepRow]:
    """Every (model, bits, method) of ``spec``: float (once per model), fake-quant and, where the
    configuration lowers, the integer emulator's top-1 on the same images."""
    import torch

    from repq_hw.evaluate import evaluate
    from repq_hw.fidelity import dequantize, input_codes
    from repq_hw.lower.vit import LoweringError
    from repq_hw.models.registry import create_model
    from repq_hw.pipeline import calibrate_model, calibration_images, eval_batches, lower_calibrated
    from repq_hw.quant.model import QuantConfig

    rows = []
    for name in spec.models:
        ckpt = spec.checkpoints.get(name)
        model = create_model(name, checkpoint=ckpt)
        calib = calibration_images(model, name, spec.data, spec.calib_size, spec.seed)
        batches, n = eval_batches(model, name, spec.data, limit=spec.eval_limit, runner=runner)
        facc = evaluate(model, batches, f"{name} float", progress, n, runner=runner)[0]
        xs = ys = None
        for b in spec.bits:
            for meth in spec.methods:
                cfg = QuantConfig(w_bits=b, a_bits=b, **METHODS[meth])
                res = calibrate_model(model, calib, cfg, progress)
                desc = f"{name} {meth} {cfg.label}"
                qacc = evaluate(res.model, batches, desc, progress, n, runner=runner)[0]
                itop, note = None, ""
                if spec.integer and meth == "repq":
                    try:
                        g = lower_calibrated(res.model, cfg, name, calib)
                    except LoweringError as e:
                        note = f"integer: not lowerable ({e})"
                    else:
                        if xs is None:  # the images themselves, for the host-side input quantization
                            loaded = [bt if isinstance(bt, (tuple, list)) else bt.load() for bt in batches]
                            xs = torch.cat([bt[0] for bt in loaded])
                            ys = torch.cat([bt[1] for bt in loaded]).numpy()
                        out = runner.emulate(g, input_codes(res.model, xs),
                                             desc=f"{name} integer {cfg.label}")
                        logits = dequantize(g, g.outputs[0], out[g.outputs[0]])[:, 0, :]
                        itop = 100 * float((logits.argmax(1) == ys).mean())
                        runner.release(g)
                elif spec.integer:
                    note = "integer: only method repq lowers to the integer IR"
                row = SweepRow(name, meth, b, facc.top1, qacc.top1, itop, qacc.n, res.seconds, note)
                log(f"{name:>24} {meth:>15} W{b}A{b}: float {facc.top1:6.2f}  fake-quant {qacc.top1:6.2f}  "
                    f"integer {'-' if itop is None else f'{itop:6.2f}'}")
                rows.append(row)
        del model
    return rows


def csv_text(rows: list[SweepRow]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for r in rows:
        w.writerow(r.cells())
    return buf.getvalue()


def markdown_text(rows: list[SweepRow]) -> str:
    head = ["model", "method", "bits", "float top-1 %", "fake-quant top-1 %", "integer top-1 %", "n",
            "calibration s", "note"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        c = [str(x) or "-" for x in r.cells()]
        c[2] = f"W{r.bits}A{r.bits}"
        lines.append("| " + " | ".join(c) + " |")
    return "\n".join(lines) + "\n"


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def plot_rows(rows: list[SweepRow], path: Path) -> None:
    """Top-1 against bits, one panel per model: a line per method (fake-quant; integer dashed), float
    as a horizontal line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r.model for r in rows))
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.6), squeeze=False)
    for ax, m in zip(axes[0], models):
        mine = [r for r in rows if r.model == m]
        ax.axhline(mine[0].float_top1, color="k", lw=0.8, ls=":", label="float")
        for meth in dict.fromkeys(r.method for r in mine):
            rs = sorted((r for r in mine if r.method == meth), key=lambda r: r.bits)
            ax.plot([r.bits for r in rs], [r.fakequant_top1 for r in rs], marker="o",
                    label=f"{meth} fake-quant")
            ints = [(r.bits, r.integer_top1) for r in rs if r.integer_top1 is not None]
            if ints:
                ax.plot(*zip(*ints), marker="x", ls="--", label=f"{meth} integer")
        ax.set_title(m)
        ax.set_xlabel("bits (W = A)")
        ax.set_ylabel("top-1 %")
        ax.set_xticks(sorted({r.bits for r in mine}))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    _atomic_write(path, buf.getvalue())


def write_results(rows: list[SweepRow], out: str | Path) -> dict[str, Path]:
    """results.csv, results.md and accuracy_vs_bits.png under ``out``, each atomically."""
    if not rows:
        raise ValueError("a sweep with no results")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "results.csv", "markdown": out / "results.md", "plot": out / "accuracy_vs_bits.png"}
    _atomic_write(paths["csv"], csv_text(rows).encode())
    _atomic_write(paths["markdown"], markdown_text(rows).encode())
    plot_rows(rows, paths["plot"])
    return paths
