"""Technology tables (energy per operation and per memory access) and the rules that extend them to
other widths and capacities. The tables are YAML files in ``sim/tech/``; the default is Horowitz,
ISSCC 2014, 45 nm. The rules (docs/cost_model.md, "Energy rules"):

* integer adder of w bits: piecewise linear in w between the table points; below the smallest point
  proportional to w through that point, above the largest point proportional to w through that point;
* integer multiplier of a x b bits: the same rule applied to the product a*b, the table point of width w
  standing for w*w (energy grows with the number of partial-product bits);
* SRAM access of a w-bit word in an array of C KB: ``e64(C) * w / 64`` with e64 interpolated
  piecewise linearly in (log C, log e64) between table points and extrapolated with the slope of the
  nearest segment;
* DRAM: pJ per 64 bits, a range (low, high) from the source; the memory model picks a point;
* comparisons, division and square-root steps are priced as adders of their width; a barrel shift as
  ``shift_vs_add`` adders of its width (an assumption, stated in the table).

Nothing here imports torch.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from repq_hw.errors import InputError

REPO_ROOT = Path(__file__).resolve().parents[2]
TECH_DIR = REPO_ROOT / "sim" / "tech"
DEFAULT_TECH = "horowitz_45nm"

_REQUIRED = ("name", "source", "int_add", "int_mult", "float_add", "float_mult", "sram_read_64b", "dram_64b")
_OPTIONAL = ("units", "node_nm", "notes", "assumptions")
_ASSUMPTIONS = {"shift_vs_add": 1.0, "sram_write_vs_read": 1.0}


class TechTableError(InputError):
    """A technology table is malformed; the message names the file and the field."""


@dataclass(frozen=True)
class Tech:
    """A validated technology table. Energies in pJ."""

    name: str
    source: str
    int_add: dict[int, float]  # width -> pJ
    int_mult: dict[int, float]  # width (both operands) -> pJ
    float_add: dict[str, float]  # "fp16" -> pJ
    float_mult: dict[str, float]
    sram_read_64b: dict[float, float]  # capacity KB -> pJ per 64-bit read
    dram_64b: tuple[float, float]  # (low, high) pJ per 64 bits
    shift_vs_add: float = 1.0
    sram_write_vs_read: float = 1.0
    path: str = ""
    extra: dict = field(default_factory=dict)

    # -- arithmetic ---------------------------------------------------------------------------------
    def add(self, bits: int) -> float:
        """pJ of one integer add (or subtract, compare) of ``bits`` bits."""
        _check_width(bits)
        return _interp_proportional(self.int_add, bits)

    def mult(self, a_bits: int, b_bits: int) -> float:
        """pJ of one integer multiply of an a-bit by a b-bit operand (rule: proportional to a*b,
        interpolated between the table points w*w)."""
        _check_width(a_bits)
        _check_width(b_bits)
        return _interp_proportional({w * w: e for w, e in self.int_mult.items()}, a_bits * b_bits)

    def shift(self, bits: int) -> float:
        """pJ of one barrel shift of a ``bits``-bit value: ``shift_vs_add`` adds of that width."""
        return self.shift_vs_add * self.add(bits)

    def fadd(self, fmt: str) -> float:
        return self._float(self.float_add, fmt, "float_add")

    def fmult(self, fmt: str) -> float:
        return self._float(self.float_mult, fmt, "float_mult")

    def _float(self, table: dict, fmt: str, what: str) -> float:
        fmt = fmt.lower()
        if fmt not in table:
            raise ValueError(f"technology table {self.name!r} has no {what} entry for {fmt!r} "
                           f"(has: {', '.join(sorted(table))})")
        return table[fmt]

    # -- memory -------------------------------------------------------------------------------------
    def sram_64b(self, capacity_kb: float) -> float:
        """pJ per 64-bit read of an SRAM array of ``capacity_kb`` KB (log-log interpolation)."""
        if not capacity_kb > 0:
            raise ValueError(f"SRAM capacity must be > 0 KB, got {capacity_kb}")
        return _interp_loglog(self.sram_read_64b, capacity_kb)

    def sram_read_pj_per_byte(self, capacity_kb: float) -> float:
        return self.sram_64b(capacity_kb) / 8.0

    def sram_write_pj_per_byte(self, capacity_kb: float) -> float:
        return self.sram_write_vs_read * self.sram_64b(capacity_kb) / 8.0

    def dram_pj_per_byte(self, point: str | float = "mid") -> float:
        """pJ per byte of DRAM traffic: ``point`` is "low", "mid", "high" or a fraction in [0, 1] of the
        way from low to high."""
        lo, hi = self.dram_64b
        frac = {"low": 0.0, "mid": 0.5, "high": 1.0}.get(point, point)
        if not isinstance(frac, (int, float)) or not 0.0 <= float(frac) <= 1.0:
            raise ValueError(f"DRAM point must be low, mid, high or a number in [0, 1], got {point!r}")
        return (lo + float(frac) * (hi - lo)) / 8.0

    def describe(self) -> dict:
        return {"name": self.name, "source": self.source, "path": self.path,
                "assumptions": {"shift_vs_add": self.shift_vs_add, "sram_write_vs_read": self.sram_write_vs_read}}


def _check_width(bits: int) -> None:
    if not (isinstance(bits, int) and bits >= 1):
        raise ValueError(f"operand width must be a positive integer, got {bits!r}")


def _interp_proportional(points: dict, x: float) -> float:
    """Piecewise linear through the points; proportional to x (through the origin) outside them."""
    xs = sorted(points)
    if x <= xs[0]:
        return points[xs[0]] * x / xs[0]
    if x >= xs[-1]:
        return points[xs[-1]] * x / xs[-1]
    for x0, x1 in itertools.pairwise(xs):
        if x0 <= x <= x1:
            y0, y1 = points[x0], points[x1]
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    raise AssertionError("unreachable")


def _interp_loglog(points: dict, x: float) -> float:
    """Piecewise linear in (log x, log y); extrapolated with the slope of the nearest segment (a single
    point: energy per bit independent of capacity)."""
    xs = sorted(points)
    if len(xs) == 1:
        return points[xs[0]]
    lx = math.log(x)
    if x <= xs[0]:
        seg = (xs[0], xs[1])
    elif x >= xs[-1]:
        seg = (xs[-2], xs[-1])
    else:
        seg = next((a, b) for a, b in itertools.pairwise(xs) if a <= x <= b)
    (x0, x1) = seg
    l0, l1 = math.log(x0), math.log(x1)
    y0, y1 = math.log(points[x0]), math.log(points[x1])
    return math.exp(y0 + (y1 - y0) * (lx - l0) / (l1 - l0))


# -- loading and validation ----------------------------------------------------------------------------

def _number(where: str, v, positive: bool = True) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise TechTableError(f"{where}: expected a number, got {v!r}")
    if positive and v <= 0:
        raise TechTableError(f"{where}: must be > 0, got {v!r}")
    return float(v)


def _mapping(where: str, v) -> dict:
    if not isinstance(v, dict) or not v:
        raise TechTableError(f"{where}: expected a non-empty mapping, got {v!r}")
    return v


def _width_table(src: str, key: str, v) -> dict[int, float]:
    out = {}
    for k, e in _mapping(f"{src}: field '{key}'", v).items():
        if isinstance(k, bool) or not (isinstance(k, int) or (isinstance(k, str) and k.strip().isdigit())):
            raise TechTableError(f"{src}: field '{key}': key {k!r} is not an operand width in bits")
        w = int(k)
        if w < 1:
            raise TechTableError(f"{src}: field '{key}': width {w} must be >= 1")
        out[w] = _number(f"{src}: field '{key}.{k}'", e)
    return out


def _capacity_table(src: str, key: str, v) -> dict[float, float]:
    out = {}
    for k, e in _mapping(f"{src}: field '{key}'", v).items():
        try:
            c = float(k)
        except (TypeError, ValueError):
            raise TechTableError(f"{src}: field '{key}': key {k!r} is not a capacity in KB") from None
        if isinstance(k, bool) or not c > 0 or not math.isfinite(c):
            raise TechTableError(f"{src}: field '{key}': capacity {k!r} must be a positive number of KB")
        out[c] = _number(f"{src}: field '{key}.{k}'", e)
    return out


def _float_table(src: str, key: str, v) -> dict[str, float]:
    out = {}
    for k, e in _mapping(f"{src}: field '{key}'", v).items():
        if not (isinstance(k, str) and k.lower().startswith("fp") and k[2:].isdigit()):
            raise TechTableError(f"{src}: field '{key}': key {k!r} must name a float format like fp16, fp32")
        out[k.lower()] = _number(f"{src}: field '{key}.{k}'", e)
    return out


def tech_from_dict(doc, src: str = "<tech table>") -> Tech:
    """Validate a parsed table; raises TechTableError naming the offending field."""
    if not isinstance(doc, dict):
        raise TechTableError(f"{src}: the table must be a YAML mapping, got {type(doc).__name__}")
    unknown = sorted(set(doc) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise TechTableError(f"{src}: unknown field(s) {unknown}; allowed: {', '.join(_REQUIRED + _OPTIONAL)}")
    for k in _REQUIRED:
        if k not in doc:
            raise TechTableError(f"{src}: missing required field '{k}'")
    for k in ("name", "source"):
        if not isinstance(doc[k], str) or not doc[k].strip():
            why = " stating where the numbers come from" if k == "source" else ""
            raise TechTableError(f"{src}: field '{k}' must be a non-empty string{why}")
    if "units" in doc and doc["units"] != "pJ":
        raise TechTableError(f"{src}: field 'units' must be 'pJ', got {doc['units']!r}")
    dram = _mapping(f"{src}: field 'dram_64b'", doc["dram_64b"])
    if set(dram) != {"low", "high"}:
        raise TechTableError(f"{src}: field 'dram_64b' must have exactly the keys 'low' and 'high', got {sorted(dram)}")
    lo, hi = _number(f"{src}: field 'dram_64b.low'", dram["low"]), _number(f"{src}: field 'dram_64b.high'", dram["high"])
    if lo > hi:
        raise TechTableError(f"{src}: field 'dram_64b': low ({lo}) > high ({hi})")
    assumptions = dict(_ASSUMPTIONS)
    if "assumptions" in doc:
        a = _mapping(f"{src}: field 'assumptions'", doc["assumptions"])
        bad = sorted(set(a) - set(_ASSUMPTIONS))
        if bad:
            raise TechTableError(f"{src}: field 'assumptions': unknown key(s) {bad}; allowed: {sorted(_ASSUMPTIONS)}")
        for k, v in a.items():
            assumptions[k] = _number(f"{src}: field 'assumptions.{k}'", v, positive=k != "shift_vs_add")
            if assumptions[k] < 0:
                raise TechTableError(f"{src}: field 'assumptions.{k}' must be >= 0")
    float_add = _float_table(src, "float_add", doc["float_add"])
    float_mult = _float_table(src, "float_mult", doc["float_mult"])
    return Tech(name=doc["name"].strip(), source=" ".join(doc["source"].split()),
                int_add=_width_table(src, "int_add", doc["int_add"]),
                int_mult=_width_table(src, "int_mult", doc["int_mult"]),
                float_add=float_add, float_mult=float_mult,
                sram_read_64b=_capacity_table(src, "sram_read_64b", doc["sram_read_64b"]),
                dram_64b=(lo, hi), shift_vs_add=assumptions["shift_vs_add"],
                sram_write_vs_read=assumptions["sram_write_vs_read"], path=src,
                extra={k: doc[k] for k in ("node_nm", "notes") if k in doc})


def resolve_tech_path(spec: str | Path | None) -> Path:
    """A file path, or the name of a table in sim/tech (``horowitz_45nm``); None = the default."""
    if spec is None:
        spec = DEFAULT_TECH
    p = Path(spec)
    if p.is_file():
        return p
    for cand in (TECH_DIR / f"{spec}.yaml", TECH_DIR / f"{spec}.yml", TECH_DIR / str(spec)):
        if cand.is_file():
            return cand
    known = sorted(q.stem for q in TECH_DIR.glob("*.y*ml")) if TECH_DIR.is_dir() else []
    raise FileNotFoundError(f"technology table {str(spec)!r} not found (a YAML file, or one of: "
                            f"{', '.join(known) or 'none in ' + str(TECH_DIR)})")


def load_tech(spec: str | Path | None = None) -> Tech:
    """Load and validate a technology table (path or name in sim/tech; default Horowitz 45 nm)."""
    import yaml

    path = resolve_tech_path(spec)
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise TechTableError(f"{path}: not valid YAML: {e}") from None
    return tech_from_dict(doc, str(path))
