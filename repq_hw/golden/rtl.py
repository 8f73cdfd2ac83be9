"""Replay golden ops on the reference RTL (``sim/rtl``, testbenches in ``sim/tb``) with Icarus Verilog.

Every parameter a testbench needs (sizes, widths, signedness, zero points, shifts, multipliers,
rounding mode) is read here from the golden set's manifest and passed with ``iverilog -P``; the data
files are the set's own ``.hex`` files, passed as ``vvp`` plusargs and read with ``$readmemh``. Nothing
is re-derived: the testbench compares the RTL's output with the golden output file element by element
and ends with ``$fatal`` (vvp exit status 1) on any mismatch.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from repq_hw.golden.reader import GoldenSet, member
from repq_hw.golden.writer import GoldenError

SIM_DIR = Path(__file__).resolve().parents[2] / "sim"
RTL_FILES = ("rq_rshift_round.v", "rq_requant.v", "rq_div_round.v", "rq_isqrt.v", "rq_gemm_tile.v",
             "rq_attn_v_tile.v", "rq_softmax_row.v", "rq_layernorm_row.v", "rq_log2_code.v", "rq_avg_pool.v")


@dataclass
class TbConfig:
    top: str
    params: dict[str, int]
    files: dict[str, Path]  # plusarg name -> file
    elements: int


@dataclass
class ReplayResult:
    op: str
    op_type: str
    top: str
    returncode: int
    checked: int | None
    mismatches: int | None
    elements: int
    output: str
    command: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.mismatches == 0 and self.checked == self.elements

    def line(self) -> str:
        status = "PASS" if self.ok else "FAIL"
        return (f"{status} {self.op} ({self.op_type}, {self.top}): {self.checked} of {self.elements} elements "
                f"checked, {self.mismatches} mismatches, vvp exit {self.returncode}")


class CorruptSetError(GoldenError):
    """The set fails its integrity check; the RTL is not run on it."""


def check_set(set_dir: str | Path) -> None:
    """Refuse a corrupt set before any simulation: every path inside the set, every file's sha256, the IR
    copy's hash, and every manifest field re-derived from the IR copy (``verify_golden_set(...,
    execute=False)``). Raises :class:`CorruptSetError` naming the first bad file or field."""
    from repq_hw.golden.verify import verify_golden_set

    rep = verify_golden_set(set_dir, execute=False)
    if not rep.ok:
        more = len(rep.problems) + len(rep.mismatches) - 1
        raise CorruptSetError(f"golden set {set_dir} is corrupt, refusing to replay it: {rep.first_problem}"
                              + (f" (and {more} more finding(s); see `repq-hw golden verify {set_dir}`)" if more else ""))


def have_icarus() -> bool:
    return shutil.which("iverilog") is not None and shutil.which("vvp") is not None


# ---------------------------------------------------------------------------------------------------
# manifest -> testbench parameters


def _hex(gs: GoldenSet, entry: dict) -> Path:
    fe = entry["files"].get("hex")
    if fe is None:
        raise GoldenError(f"{entry['name']}: the RTL replay needs the .hex file (this set stores "
                          f"{', '.join(entry['files'])})")
    if fe.get("lanes_per_word", 1) != 1:
        raise GoldenError(f"{entry['name']}: the testbenches read one element per line; this set packs "
                          f"{fe['lanes_per_word']} lanes per word")
    return member(gs.path, fe["path"], f"{entry['name']} (hex)")


def _w(entry: dict, prefix: str) -> dict[str, int]:
    return {f"{prefix}_W": int(entry["bits"]), f"{prefix}_S": int(bool(entry["signed"]))}


def _io(gs: GoldenSet, op: dict) -> tuple[list[dict], dict]:
    ins = [gs.tensor_entry(i["tensor"]) for i in op["inputs"]]
    return ins, gs.tensor_entry(op["outputs"][0]["tensor"])


def _const(gs: GoldenSet, op: dict, role: str) -> dict:
    return gs.constant_entry(op["constants"][role])


def _requant(gs: GoldenSet, op: dict) -> TbConfig:
    (x,), y = _io(gs, op)
    m, s = _const(gs, op, "multiplier"), _const(gs, op, "shift")
    d = op["derived"]
    p = {"N_ELEM": x["elements"], "C": x["shape"][-1], "NC": m["elements"], **_w(x, "IN"), **_w(y, "OUT"),
         **_w(m, "M"), **_w(s, "SH"), "ZP": op["attrs"]["zero_point"], "OUT_MIN": d["out_min"],
         "OUT_MAX": d["out_max"], "MODE": d["rounding_id"], "HAS_OFF": 0}
    files = {"in": _hex(gs, x), "out": _hex(gs, y), "mult": _hex(gs, m), "shift": _hex(gs, s)}
    if "offset" in op["constants"]:
        o = _const(gs, op, "offset")
        p.update({**_w(o, "OFF"), "HAS_OFF": 1})
        files["offset"] = _hex(gs, o)
    if x["bits"] > 32:
        raise GoldenError(f"{op['name']}: accumulator of {x['bits']} bits; rq_requant takes <= 32")
    return TbConfig("tb_requant", p, files, y["elements"])


def _gemm(gs: GoldenSet, op: dict) -> TbConfig:
    (a,), y = _io(gs, op)
    w, wzp, b = _const(gs, op, "weight"), _const(gs, op, "w_zp"), _const(gs, op, "bias")
    d = op["derived"]
    p = {"BMM": 0, "NB": a["batch"], "M": d["M"], "K": d["K"], "N": d["N"], "TN": 8, "A_W": a["bits"],
         "W_W": w["bits"], **_w(wzp, "WZP"), **_w(b, "BIAS"), **_w(y, "OUT"), "A_ZP": op["attrs"]["a_zp"]}
    files = {"a": _hex(gs, a), "w": _hex(gs, w), "wzp": _hex(gs, wzp), "bias": _hex(gs, b), "out": _hex(gs, y)}
    return TbConfig("tb_gemm", p, files, y["elements"])


def _bmm(gs: GoldenSet, op: dict) -> TbConfig:
    (q, k), y = _io(gs, op)
    d = op["derived"]
    p = {"BMM": 1, "NB": q["batch"] * d["batch_heads"], "M": d["M"], "K": d["K"], "N": d["N"], "TN": 8,
         "A_W": q["bits"], "W_W": k["bits"], **_w(y, "OUT"), "A_ZP": op["attrs"]["q_zp"], "B_ZP": op["attrs"]["k_zp"]}
    files = {"a": _hex(gs, q), "w": _hex(gs, k), "out": _hex(gs, y)}
    return TbConfig("tb_gemm", p, files, y["elements"])


def _attn_v(gs: GoldenSet, op: dict) -> TbConfig:
    (c, v), y = _io(gs, op)
    d, a = op["derived"], op["attrs"]
    p = {"NB": c["batch"] * d["batch_heads"], "M": d["M"], "N": d["N"], "D": d["D"], "TD": 8,
         "C_W": c["bits"], "V_W": v["bits"], **_w(y, "OUT"), "ZSTATE": d["zero_state"], "F": a["shift_frac"],
         "Q": a["sqrt2_frac_bits"], "R": d["sqrt2_multiplier"], "V_ZP": a["v_zp"], "MODE": d["rounding_id"]}
    return TbConfig("tb_attn_v", p, {"codes": _hex(gs, c), "v": _hex(gs, v), "out": _hex(gs, y)}, y["elements"])


def _softmax(gs: GoldenSet, op: dict) -> TbConfig:
    (x,), y = _io(gs, op)
    lut = _const(gs, op, "lut")
    d, a = op["derived"], op["attrs"]
    p = {"ROWS": x["batch"] * d["rows"], "N": d["N"], "F": a["frac_bits"], "P": a["out_bits"],
         "DIV_ITER": a["lut_bits"] + a["out_bits"] + 1, **_w(x, "IN"), **_w(y, "OUT"), "LUT_W": lut["bits"],
         "MULT": a["multiplier"], "SHIFT": a["shift"], "MODE": d["rounding_id"]}
    if lut["bits"] > 32:
        raise GoldenError(f"{op['name']}: LUT entries of {lut['bits']} bits; rq_softmax_row takes <= 32")
    return TbConfig("tb_softmax", p, {"x": _hex(gs, x), "lut": _hex(gs, lut), "out": _hex(gs, y)}, y["elements"])


def _layernorm(gs: GoldenSet, op: dict) -> TbConfig:
    (x,), y = _io(gs, op)
    m, s, o = _const(gs, op, "multiplier"), _const(gs, op, "shift"), _const(gs, op, "offset")
    d, a = op["derived"], op["attrs"]
    if m["elements"] != d["C"]:
        raise GoldenError(f"{op['name']}: rq_layernorm_row expects per-channel constants")
    p = {"T": x["batch"] * d["T"], "C": d["C"], "F": a["frac_bits"], "DIV_ITER": 32 + a["frac_bits"],
         **_w(x, "IN"), **_w(y, "OUT"), **_w(m, "M"), **_w(s, "SH"), **_w(o, "OFF"), "EPS_Q": a["eps_q"],
         "ZP": a["zero_point"], "OUT_MIN": d["out_min"], "OUT_MAX": d["out_max"], "MODE": d["rounding_id"]}
    files = {"x": _hex(gs, x), "mult": _hex(gs, m), "shift": _hex(gs, s), "offset": _hex(gs, o), "out": _hex(gs, y)}
    return TbConfig("tb_layernorm", p, files, y["elements"])


def _log2(gs: GoldenSet, op: dict) -> TbConfig:
    (x,), y = _io(gs, op)
    t = _const(gs, op, "thresholds")
    d = op["derived"]
    p = {"N_ELEM": x["elements"], "L": d["levels"], "ZSTATE": d["zero_state"], **_w(x, "IN"), **_w(y, "OUT"),
         **_w(t, "T")}
    return TbConfig("tb_log2_code", p, {"p": _hex(gs, x), "thr": _hex(gs, t), "out": _hex(gs, y)}, y["elements"])


def _avg_pool(gs: GoldenSet, op: dict) -> TbConfig:
    (x,), y = _io(gs, op)
    if x["bits"] > 32:
        raise GoldenError(f"{op['name']}: input of {x['bits']} bits; rq_avg_pool takes <= 32")
    t, c = x["shape"]
    p = {"NB": x["batch"], "T": t, "C": c, **_w(x, "IN"), **_w(y, "OUT"), "MODE": op["derived"]["rounding_id"]}
    return TbConfig("tb_avg_pool", p, {"x": _hex(gs, x), "out": _hex(gs, y)}, y["elements"])


RTL_UNITS: dict[str, Callable[[GoldenSet, dict], TbConfig]] = {
    "requantize": _requant,
    "gemm": _gemm,
    "bmm_qk": _bmm,
    "attn_v_shift": _attn_v,
    "softmax": _softmax,
    "layernorm": _layernorm,
    "log2_code": _log2,
    "avg_pool": _avg_pool,
}
"""Op type -> testbench configuration builder (the op types with a reference RTL unit)."""


def tb_config(gs: GoldenSet, op_name: str) -> TbConfig:
    op = gs.op(op_name)
    build = RTL_UNITS.get(op["op"])
    if build is None:
        raise GoldenError(f"op {op_name!r} ({op['op']}) has no reference RTL unit; units exist for "
                          f"{', '.join(RTL_UNITS)}")
    try:
        return build(gs, op)
    except (KeyError, IndexError, TypeError, ValueError) as e:
        if isinstance(e, GoldenError):
            raise
        raise GoldenError(f"op {op_name!r}: the manifest lacks or mangles a field its testbench reads "
                          f"({type(e).__name__}: {e}); run `repq-hw golden verify`") from None


# ---------------------------------------------------------------------------------------------------
# compile and run

_RESULT = re.compile(r"RESULT unit=(\S+) checked=(\d+) mismatches=(\d+)")


def compile_tb(cfg: TbConfig, build_dir: Path, sim_dir: Path = SIM_DIR) -> tuple[Path, list[str]]:
    if not have_icarus():
        raise GoldenError("Icarus Verilog (iverilog, vvp) is not installed")
    build_dir.mkdir(parents=True, exist_ok=True)
    out = build_dir / f"{cfg.top}.vvp"
    cmd = ["iverilog", "-g2012", "-Wall", "-I", str(sim_dir / "tb"), "-s", cfg.top, "-o", str(out)]
    for k, v in sorted(cfg.params.items()):
        cmd += ["-P", f"{cfg.top}.{k}={int(v)}"]
    cmd += [str(sim_dir / "tb" / f"{cfg.top}.v")] + [str(sim_dir / "rtl" / f) for f in RTL_FILES]
    r = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if r.returncode != 0:
        raise GoldenError(f"iverilog failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return out, cmd


def replay(set_dir: str | Path, op_name: str, *, override: dict[str, str | Path] | None = None,
           build_dir: str | Path | None = None, sim_dir: str | Path = SIM_DIR, timeout: float = 900,
           check: bool = True) -> ReplayResult:
    """Compile the testbench of ``op_name``'s unit with the manifest's parameters and run it on the set's
    files. ``override`` replaces plusarg files (e.g. ``{"out": tampered_copy}``).

    ``check`` (default): first :func:`check_set` -- a corrupt set (a file that does not match its sha256,
    an edited manifest field, a path leaving the set) raises :class:`CorruptSetError` naming the file or
    field, before anything is compiled or simulated."""
    if check:
        check_set(set_dir)
    gs = GoldenSet(set_dir)
    cfg = tb_config(gs, op_name)
    for k, v in (override or {}).items():
        if k not in cfg.files:
            raise GoldenError(f"{cfg.top} has no file {k!r}; it reads {', '.join(cfg.files)}")
        cfg.files[k] = Path(v)
    tmp = None
    if build_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="repq_rtl_")
        build_dir = tmp.name
    try:
        vvp, ccmd = compile_tb(cfg, Path(build_dir), Path(sim_dir))
        cmd = ["vvp", "-n", str(vvp)] + [f"+{k}={Path(v).resolve()}" for k, v in cfg.files.items()]
        try:
            r = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise GoldenError(f"replay of {op_name!r}: the simulation ran past {timeout:g} s and was stopped "
                              f"(a hung testbench, or a set too large for this timeout)") from None
    finally:
        if tmp is not None:
            tmp.cleanup()
    text = r.stdout + r.stderr
    m = _RESULT.search(text)
    checked, bad = (int(m.group(2)), int(m.group(3))) if m else (None, None)
    rc = r.returncode
    if rc == 0 and ("WARNING" in text or "ERROR" in text):
        rc = 3  # e.g. a $readmemh size warning: never a silent pass
    return ReplayResult(op_name, gs.op(op_name)["op"], cfg.top, rc, checked, bad, cfg.elements, text,
                        ccmd + ["&&"] + cmd)


def replayable_ops(set_dir: str | Path) -> list[str]:
    """Names of the ops of a set that have a reference RTL unit, in execution order."""
    return [o["name"] for o in GoldenSet(set_dir).ops if o["op"] in RTL_UNITS]
