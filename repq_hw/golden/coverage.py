"""Functional coverage of golden sets: named bins per op type, hit counts computed from a set's stored
tensors and constants. numpy only (no torch, no Numba).

Every op with bins is re-traced here from its stored inputs, step by step as its spec page writes it
(``docs/ops/*.md``): the values *before* each rounding step (``acc*M + offset`` of requantize, the
LayerNorm quotient and its requantize, the three softmax steps, the ``acc_odd*R`` of attn_v_shift), the
saturation bounds, the thresholds... The trace also recomputes the op's output and :func:`set_coverage`
refuses a set whose stored output the trace does not reproduce (the bins would then describe some other
arithmetic). The traces take their primitives from a :class:`Prims` object, so the mutant tests
(``tests/golden/test_mutants.py``) can swap one step (half_up for half_even, a floor division, a dropped
``eps_q``, a missing clamp, an unsigned multiplier) and check that the directed sets catch it.

Bins (``BINS``; ``log2_code`` adds ``code.<k>`` for every code its thresholds can emit, and
``t_eq.<k>``/``t_minus1.<k>``/``t_plus1.<k>`` for every threshold whose neighbour fits the input type):

* ``tie.<mode>``: an exact tie (remainder = half the divisor) of a rounding step whose op uses ``<mode>``;
* ``sat_low`` / ``sat_high``: the value before the clamp is below / above the output range;
* ``neg_multiplier``: an element scaled by a negative multiplier;
* ``*_type_min`` / ``*_type_max``: an input element at its IR type's minimum / maximum;
* ``acc_bound_high`` / ``acc_bound_low``: an accumulator equal to + / - the worst case the validator
  proves for it (the largest accumulator it allows);
* layernorm ``sigma_zero`` (rows with ``var_n + eps_q = 0``), ``constant_row`` (``var_n = 0``);
* softmax ``shift_cap`` (integer exponent above 62, capped), ``all_equal_row``, ``lut_first`` /
  ``lut_last`` (exp2 table index 0 / ``2^F - 1``), ``prob_zero`` / ``prob_one`` (output 0 / ``2^P``);
* log2_code ``zero_state`` (count = L), ``p_zero``;
* attn_v_shift ``zero_state``, ``zero_row`` (a row of only zero-state codes), ``code_max`` (a code equal to
  ``max_code``), ``code_even``/``code_odd``;
* lut ``entry_first`` / ``entry_last`` (the table's ends);
* add ``sat_low`` / ``sat_high``, ``at_min`` / ``at_max`` (the sum exactly at a type limit).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from repq_hw.golden.writer import GoldenError

MODES = ("half_up", "half_even", "half_away", "floor")
COVERAGE_VERSION = 1


def _ties(prefix: str = "tie") -> list[str]:
    return [f"{prefix}.{m}" for m in MODES]


BINS: dict[str, list[str]] = {
    "requantize": _ties() + ["sat_low", "sat_high", "neg_multiplier", "acc_type_min", "acc_type_max"],
    "layernorm": _ties("div_tie") + _ties("rq_tie") + ["sigma_zero", "constant_row", "sat_low", "sat_high",
                                                       "neg_multiplier", "x_type_min", "x_type_max"],
    "softmax": _ties("exp_tie") + _ties("shift_tie") + _ties("div_tie") + [
        "shift_cap", "all_equal_row", "lut_first", "lut_last", "prob_zero", "prob_one", "x_type_min", "x_type_max"],
    "log2_code": ["zero_state", "p_zero"],  # + code.<k>, t_eq.<k>, t_minus1.<k>, t_plus1.<k> per op
    "attn_v_shift": _ties() + ["zero_state", "zero_row", "code_max", "code_even", "code_odd", "v_type_min",
                               "v_type_max", "acc_bound_high", "acc_bound_low"],
    "gemm": ["acc_bound_high", "acc_bound_low", "a_type_min", "a_type_max", "acc_negative", "acc_zero"],
    "bmm_qk": ["acc_bound_high", "acc_bound_low", "q_type_min", "q_type_max", "k_type_min", "k_type_max"],
    "lut": ["entry_first", "entry_last"],
    "add": ["sat_low", "sat_high", "at_min", "at_max"],
    "avg_pool": _ties("div_tie") + ["exact", "sum_negative", "x_type_min", "x_type_max"],
}
"""The fixed bins of each op type with coverage (log2_code's per-code bins depend on its thresholds)."""


# ---------------------------------------------------------------------------------------------------
# primitives (the spec's datapath; int64 arrays, or object arrays of Python ints for a widened mutant)


def _arr(x):
    return np.asarray(x)


def rshift(x, s, mode: str):
    """``rounding_rshift`` (docs/ops/requantize.md): q = x >> s, r = low s bits, h = 2^(s-1)."""
    x, s = np.broadcast_arrays(_arr(x), _arr(s))
    s64 = s.astype(np.int64)
    q = x >> s64
    r = x & ((np.ones_like(s64) << s64) - 1)
    h = np.where(s64 > 0, np.ones_like(s64) << np.maximum(s64 - 1, 0), 0)
    if mode == "half_up":
        up = r >= h
    elif mode == "half_even":
        up = (r > h) | ((r == h) & ((q & 1) == 1))
    elif mode == "half_away":
        up = (r > h) | ((r == h) & (x >= 0))
    elif mode == "floor":
        up = np.zeros(q.shape, bool)
    else:
        raise ValueError(f"unknown rounding mode {mode!r}")
    return np.where(s64 == 0, x, q + up.astype(np.int64))


def rshift_tie(x, s):
    """Elements whose rounding shift is an exact tie (s >= 1 and the low s bits are 2^(s-1))."""
    x, s = np.broadcast_arrays(_arr(x), _arr(s))
    s64 = s.astype(np.int64)
    r = x & ((np.ones_like(s64) << s64) - 1)
    return (s64 > 0) & (r == np.where(s64 > 0, np.ones_like(s64) << np.maximum(s64 - 1, 0), -1))


def rdiv(num, den, mode: str):
    """``round_div``: q = floor(num/den), r = num - q*den in [0, den); compare 2r with den."""
    num, den = np.broadcast_arrays(_arr(num), _arr(den))
    q = num // den
    r = num - q * den
    two_r = 2 * r
    if mode == "half_up":
        up = two_r >= den
    elif mode == "half_even":
        up = (two_r > den) | ((two_r == den) & ((q & 1) == 1))
    elif mode == "half_away":
        up = (two_r > den) | ((two_r == den) & (num >= 0))
    elif mode == "floor":
        up = np.zeros(q.shape, bool)
    else:
        raise ValueError(f"unknown rounding mode {mode!r}")
    return q + up.astype(np.int64)


def rdiv_tie(num, den):
    num, den = np.broadcast_arrays(_arr(num), _arr(den))
    return 2 * (num - (num // den) * den) == den


@dataclass
class Prims:
    """The primitives a trace uses; ``step`` names the rounding step (``requant``, ``ln_div``,
    ``ln_requant``, ``sm_exp``, ``sm_shift``, ``sm_div``, ``av_sqrt2``). A mutant overrides one of them."""

    rshift: Callable = field(default=lambda x, s, mode, step: rshift(x, s, mode))
    rdiv: Callable = field(default=lambda num, den, mode, step: rdiv(num, den, mode))
    clamp: Callable = field(default=lambda x, lo, hi, step: np.clip(x, lo, hi))
    eps: Callable = field(default=lambda eps_q: int(eps_q))
    multiplier: Callable = field(default=lambda m: np.asarray(m, dtype=np.int64))


REFERENCE = Prims()


# ---------------------------------------------------------------------------------------------------
# per-op traces: (inputs by role, constants by role, op entry, input type ranges) -> (output, bins)


@dataclass
class OpData:
    op: dict  # manifest op entry
    inputs: list[np.ndarray]  # [B, *shape], int64
    in_ranges: list[tuple[int, int]]  # declared (min, max) of each input's IR type
    consts: dict[str, np.ndarray]  # role -> int64 array


def _type_range(entry: dict) -> tuple[int, int]:
    b = entry["bits"]
    return (-(1 << (b - 1)), (1 << (b - 1)) - 1) if entry["signed"] else (0, (1 << b) - 1)


def _count(mask) -> int:
    return int(np.count_nonzero(mask))


def _requant_steps(P: Prims, x, m, s, off, zp, lo, hi, mode, step):
    """acc*M + offset, rounding shift, clamp to [lo - zp, hi - zp], + zp; returns (y, V, R)."""
    mm = P.multiplier(m)
    v = x * mm + off
    r = P.rshift(v, s, mode, step)
    y = P.clamp(r, lo - zp, hi - zp, step) + zp
    return y, v, r


def trace_requantize(d: OpData, P: Prims = REFERENCE):
    (acc,), a, dv = d.inputs, d.op["attrs"], d.op["derived"]
    m, s = d.consts["multiplier"], d.consts["shift"]
    off = d.consts.get("offset", np.zeros(1, np.int64))
    zp, lo, hi, mode = int(a["zero_point"]), int(dv["out_min"]), int(dv["out_max"]), a["rounding"]
    y, v, r = _requant_steps(P, acc, m, s, off, zp, lo, hi, mode, "requant")
    tmin, tmax = d.in_ranges[0]
    bins = {f"tie.{mode}": _count(rshift_tie(v, s)),
            "sat_low": _count(r < lo - zp), "sat_high": _count(r > hi - zp),
            "neg_multiplier": _count(np.broadcast_to(np.asarray(m) < 0, acc.shape)),
            "acc_type_min": _count(acc == tmin), "acc_type_max": _count(acc == tmax)}
    return y, bins


def _isqrt(v: np.ndarray) -> np.ndarray:
    flat = [math.isqrt(int(t)) for t in np.asarray(v).reshape(-1)]
    return np.array(flat, dtype=np.int64).reshape(np.shape(v))


def trace_layernorm(d: OpData, P: Prims = REFERENCE):
    (x,), a, dv = d.inputs, d.op["attrs"], d.op["derived"]
    c = x.shape[-1]
    f, mode = int(a["frac_bits"]), a["rounding"]
    ssum = x.sum(-1, keepdims=True)
    qsum = (x * x).sum(-1, keepdims=True)
    var_n = c * qsum - ssum * ssum
    vv = var_n + P.eps(a["eps_q"])
    sigma = _isqrt(vv)
    num = (c * x - ssum) << f
    den = np.maximum(sigma, 1)
    norm = np.where(sigma == 0, 0, P.rdiv(num, den, mode, "ln_div"))
    m, s, off = d.consts["multiplier"], d.consts["shift"], d.consts["offset"]
    zp, lo, hi = int(a["zero_point"]), int(dv["out_min"]), int(dv["out_max"])
    y, v, r = _requant_steps(P, norm, m, s, off, zp, lo, hi, mode, "ln_requant")
    tmin, tmax = d.in_ranges[0]
    rows = sigma[..., 0]
    bins = {f"div_tie.{mode}": _count((sigma > 0) & rdiv_tie(num, den)),
            f"rq_tie.{mode}": _count(rshift_tie(v, s)),
            "sigma_zero": _count(rows == 0), "constant_row": _count(var_n[..., 0] == 0),
            "sat_low": _count(r < lo - zp), "sat_high": _count(r > hi - zp),
            "neg_multiplier": _count(np.broadcast_to(np.asarray(m) < 0, x.shape)),
            "x_type_min": _count(x == tmin), "x_type_max": _count(x == tmax)}
    return y, bins


def exp2_table(frac_bits: int, lut_bits: int) -> np.ndarray:
    from repq_hw.kernels.softmax import exp2_lut

    return exp2_lut(frac_bits, lut_bits).astype(np.int64)


def trace_softmax(d: OpData, P: Prims = REFERENCE):
    (x,), a = d.inputs, d.op["attrs"]
    mult, s, f, pbits, mode = int(a["multiplier"]), int(a["shift"]), int(a["frac_bits"]), int(a["out_bits"]), a["rounding"]
    lut = d.consts["lut"]
    mx = x.max(-1, keepdims=True)
    prod = (x - mx) * mult
    t = P.rshift(prod, s, mode, "sm_exp")
    u = -t
    n = u >> f
    fi = u & ((1 << f) - 1)
    ncap = np.minimum(n, 62)
    lv = lut[fi]
    e = P.rshift(lv, ncap, mode, "sm_shift")
    ssum = e.sum(-1, keepdims=True)
    num = e << pbits
    y = P.rdiv(num, ssum, mode, "sm_div")
    tmin, tmax = d.in_ranges[0]
    bins = {f"exp_tie.{mode}": _count(rshift_tie(prod, s)),
            f"shift_tie.{mode}": _count(rshift_tie(lv, ncap)),
            f"div_tie.{mode}": _count(rdiv_tie(num, ssum)),
            "shift_cap": _count(n > 62),
            "all_equal_row": _count((x == mx).all(-1)),
            "lut_first": _count(fi == 0), "lut_last": _count(fi == (1 << f) - 1),
            "prob_zero": _count(y == 0), "prob_one": _count(y == (1 << pbits)),
            "x_type_min": _count(x == tmin), "x_type_max": _count(x == tmax)}
    return y, bins


def log2_bins(thresholds: np.ndarray, in_range: tuple[int, int]) -> list[str]:
    """The bins of one log2_code op: ``zero_state``, ``p_zero`` and, per threshold k, ``code.<k>`` when some
    input of the type gives count k (``T[k] < T[k-1]``, ``T[0] < type max``), ``t_eq.<k>``,
    ``t_minus1.<k>`` / ``t_plus1.<k>`` when ``T[k] -/+ 1`` is an input of the type."""
    t = [int(v) for v in np.asarray(thresholds).reshape(-1)]
    lo, hi = in_range
    out = ["zero_state"] + (["p_zero"] if lo <= 0 <= hi else [])
    for k, tk in enumerate(t):
        upper = hi if k == 0 else t[k - 1]
        if max(tk + 1, lo) <= min(upper, hi):
            out.append(f"code.{k}")
        if lo <= tk <= hi:
            out.append(f"t_eq.{k}")
        if lo <= tk - 1 <= hi:
            out.append(f"t_minus1.{k}")
        if lo <= tk + 1 <= hi:
            out.append(f"t_plus1.{k}")
    return out


def trace_log2_code(d: OpData, P: Prims = REFERENCE):
    (p,), a = d.inputs, d.op["attrs"]
    th = d.consts["thresholds"]
    z = (1 << int(a["bits"])) - 1
    count = (p[..., None] <= th).sum(-1)
    y = np.where(count < th.size, count, z)
    bins = {"zero_state": _count(count == th.size), "p_zero": _count(p == 0)}
    for k in range(th.size):
        tk = int(th[k])
        bins[f"code.{k}"] = _count(y == k)
        bins[f"t_eq.{k}"] = _count(p == tk)
        bins[f"t_minus1.{k}"] = _count(p == tk - 1)
        bins[f"t_plus1.{k}"] = _count(p == tk + 1)
    return y, bins


def _absmax_centered(rng: tuple[int, int], zp: int) -> int:
    return max(abs(rng[0] - zp), abs(rng[1] - zp))


def trace_attn_v_shift(d: OpData, P: Prims = REFERENCE):
    (c, v), a, dv = d.inputs, d.op["attrs"], d.op["derived"]
    z, f, q, mode = int(dv["zero_state"]), int(a["shift_frac"]), int(a["sqrt2_frac_bits"]), a["rounding"]
    r = int(dv["sqrt2_multiplier"])
    vzp = int(a["v_zp"])
    j = c >> 1
    live = c != z
    even = live & ((c & 1) == 0)
    odd = live & ((c & 1) == 1)
    w_even = np.where(even, np.int64(1) << np.where(even, f - j, 0), 0)
    w_odd = np.where(odd, np.int64(1) << np.where(odd, np.maximum(f - j - 1, 0), 0), 0)
    dval = v - vzp
    acc_even = w_even @ dval
    acc_odd = w_odd @ dval
    prod = acc_odd * r
    y = acc_even + P.rshift(prod, q, mode, "av_sqrt2")
    n = c.shape[-1]
    bound = n * _absmax_centered(d.in_ranges[1], vzp) << f
    vmin, vmax = d.in_ranges[1]
    bins = {f"tie.{mode}": _count(rshift_tie(prod, q)), "zero_state": _count(~live),
            "zero_row": _count((~live).all(-1)), "code_max": _count(c == int(a["max_code"])),
            "code_even": _count(even), "code_odd": _count(odd),
            "v_type_min": _count(v == vmin), "v_type_max": _count(v == vmax),
            "acc_bound_high": _count(y == bound), "acc_bound_low": _count(y == -bound)}
    return y, bins


def trace_gemm(d: OpData, P: Prims = REFERENCE):
    (x,), a = d.inputs, d.op["attrs"]
    w, wzp, bias = d.consts["weight"], d.consts["w_zp"], d.consts["bias"]
    azp = int(a["a_zp"])
    wc = w - wzp[:, None]
    y = (x - azp) @ wc.T + bias
    amax = _absmax_centered(d.in_ranges[0], azp)
    bound = np.abs(wc).sum(1) * amax + np.abs(bias)
    tmin, tmax = d.in_ranges[0]
    bins = {"acc_bound_high": _count(y == bound), "acc_bound_low": _count(y == -bound),
            "a_type_min": _count(x == tmin), "a_type_max": _count(x == tmax),
            "acc_negative": _count(y < 0), "acc_zero": _count(y == 0)}
    return y, bins


def trace_bmm_qk(d: OpData, P: Prims = REFERENCE):
    (q, k), a = d.inputs, d.op["attrs"]
    qzp, kzp = int(a["q_zp"]), int(a["k_zp"])
    y = (q - qzp) @ np.swapaxes(k - kzp, -1, -2)
    bound = q.shape[-1] * _absmax_centered(d.in_ranges[0], qzp) * _absmax_centered(d.in_ranges[1], kzp)
    bins = {"acc_bound_high": _count(y == bound), "acc_bound_low": _count(y == -bound),
            "q_type_min": _count(q == d.in_ranges[0][0]), "q_type_max": _count(q == d.in_ranges[0][1]),
            "k_type_min": _count(k == d.in_ranges[1][0]), "k_type_max": _count(k == d.in_ranges[1][1])}
    return y, bins


def trace_lut(d: OpData, P: Prims = REFERENCE):
    (x,), a = d.inputs, d.op["attrs"]
    table = d.consts["table"]
    lo = int(a["in_min"])
    if x.size and (x.min() < lo or x.max() > lo + table.size - 1):
        raise GoldenError(f"op {d.op['name']!r}: input outside the table")
    y = table[x - lo]
    return y, {"entry_first": _count(x == lo), "entry_last": _count(x == lo + table.size - 1)}


def trace_add(d: OpData, P: Prims = REFERENCE):
    (x, b), dv = d.inputs, d.op["derived"]
    lo, hi = int(dv["out_min"]), int(dv["out_max"])
    s = x + b
    y = P.clamp(s, lo, hi, "add")
    return y, {"sat_low": _count(s < lo), "sat_high": _count(s > hi), "at_min": _count(s == lo),
               "at_max": _count(s == hi)}


def trace_avg_pool(d: OpData, P: Prims = REFERENCE):
    (x,), mode = d.inputs, d.op["attrs"]["rounding"]
    t = x.shape[-2]
    total = x.sum(axis=-2, keepdims=True)
    y = P.rdiv(total, t, mode, "pool_div")
    tie = _count(rdiv_tie(total, t))
    bins = {f"div_tie.{m}": tie if m == mode else 0 for m in MODES}
    bins.update({"exact": _count(total % t == 0), "sum_negative": _count(total < 0),
                 "x_type_min": _count(x == d.in_ranges[0][0]), "x_type_max": _count(x == d.in_ranges[0][1])})
    return y, bins


TRACES: dict[str, Callable] = {
    "requantize": trace_requantize, "layernorm": trace_layernorm, "softmax": trace_softmax,
    "log2_code": trace_log2_code, "attn_v_shift": trace_attn_v_shift, "gemm": trace_gemm,
    "bmm_qk": trace_bmm_qk, "lut": trace_lut, "add": trace_add, "avg_pool": trace_avg_pool,
}


def op_bins(op: dict, data: OpData) -> list[str]:
    """The bin names of one op (its type's fixed bins, log2_code's per-threshold bins)."""
    if op["op"] == "log2_code":
        return log2_bins(data.consts["thresholds"], data.in_ranges[0])
    return list(BINS[op["op"]])


# ---------------------------------------------------------------------------------------------------
# sets


def op_data(op: dict, tensor: Callable[[str], np.ndarray], tensor_entry: Callable[[str], dict],
            constant: Callable[[str], np.ndarray]) -> OpData:
    ins = [np.asarray(tensor(t["tensor"])).astype(np.int64) for t in op["inputs"]]
    rng = [_type_range(tensor_entry(t["tensor"])) for t in op["inputs"]]
    consts = {role: np.asarray(constant(name)).astype(np.int64) for role, name in op["constants"].items()}
    return OpData(op, ins, rng, consts)


@dataclass
class OpMismatch:
    op: str
    op_type: str
    tensor: str
    index: tuple[int, ...]
    expected: int
    found: int
    count: int

    def __str__(self) -> str:
        return (f"op {self.op!r} ({self.op_type}) tensor {self.tensor!r} index {list(self.index)}: stored "
                f"{self.expected}, computed {self.found} ({self.count} element(s) differ)")


def check_output(op: dict, data: OpData, stored: np.ndarray, P: Prims = REFERENCE) -> OpMismatch | None:
    """Re-trace ``op`` with ``P`` and compare with its stored output; the first differing element or None."""
    y, _ = TRACES[op["op"]](data, P)
    y = np.asarray(y)
    stored = np.asarray(stored).astype(np.int64)
    diff = (y.astype(object) != stored.astype(object)) if y.dtype == object else (y != stored)
    if not np.any(diff):
        return None
    idx = tuple(int(i) for i in np.argwhere(diff)[0])
    return OpMismatch(op["name"], op["op"], op["outputs"][0]["tensor"], idx, int(stored[idx]), int(y[idx]),
                      int(np.count_nonzero(diff)))


def coverage_of(ops: list[dict], tensor, tensor_entry, constant, check: bool = True) -> dict:
    """``{"version", "ops": {name: {"op": type, "bins": {bin: count}}}}`` of the ops that have bins.
    With ``check``, a stored output the trace does not reproduce raises :class:`GoldenError`."""
    out = {}
    for op in ops:
        if op["op"] not in TRACES:
            continue
        data = op_data(op, tensor, tensor_entry, constant)
        y, hits = TRACES[op["op"]](data)
        if check:
            stored = np.asarray(tensor(op["outputs"][0]["tensor"])).astype(np.int64)
            if not np.array_equal(np.asarray(y, dtype=np.int64), stored):
                mm = check_output(op, data, stored)
                raise GoldenError(f"coverage: the spec trace does not reproduce the stored output: {mm}")
        out[op["name"]] = {"op": op["op"], "bins": {b: int(hits.get(b, 0)) for b in op_bins(op, data)}}
    return {"version": COVERAGE_VERSION, "ops": out}


def set_coverage(set_dir: str | Path, check: bool = True) -> dict:
    """The coverage of a golden set, from its stored tensors and constants."""
    from repq_hw.golden.reader import GoldenSet

    gs = GoldenSet(set_dir)
    return coverage_of(gs.ops, gs.tensor, gs.tensor_entry, gs.constant, check=check)


def env_coverage(manifest: dict, env: dict, g) -> dict:
    """The coverage of a manifest's ops from executed tensors ``env`` and the graph's constants (verify)."""
    tensors = {t["name"]: t for t in manifest["tensors"]}
    return coverage_of(manifest["ops"], lambda n: env[n], lambda n: tensors[n], lambda n: g.constants[n],
                       check=False)


def write_coverage(set_dir: str | Path, cov: dict | None = None) -> dict:
    """Compute (unless given) and store the ``coverage`` field in the set's manifest.json (not hashed: the
    manifest lists every other file's sha256, none of them changes)."""
    import json
    import os

    from repq_hw.golden.reader import validate_manifest
    from repq_hw.golden.writer import MANIFEST, canonical_json

    set_dir = Path(set_dir)
    cov = set_coverage(set_dir) if cov is None else cov
    m = json.loads((set_dir / MANIFEST).read_text())
    m["coverage"] = cov
    validate_manifest(m)
    tmp = set_dir / f".{MANIFEST}.tmp"
    tmp.write_bytes(canonical_json(m))
    os.replace(tmp, set_dir / MANIFEST)
    return cov


# ---------------------------------------------------------------------------------------------------
# totals and the table


def totals(covs: list[dict]) -> dict[str, dict[str, int]]:
    """op type -> bin -> total hits over the sets (every bin any op of that type defines, 0 when missed)."""
    out: dict[str, dict[str, int]] = {}
    for cov in covs:
        for entry in cov["ops"].values():
            t = out.setdefault(entry["op"], {})
            for b, n in entry["bins"].items():
                t[b] = t.get(b, 0) + int(n)
    return out


def missed(covs: list[dict]) -> dict[str, list[str]]:
    return {op: [b for b, n in bins.items() if n == 0] for op, bins in totals(covs).items()
            if any(n == 0 for n in bins.values())}


def _family(b: str) -> str | None:
    head = b.split(".")[0]
    return head if head in ("code", "t_eq", "t_minus1", "t_plus1") else None


def table(covs: list[dict], compact: bool = True) -> str:
    """A plain-text table: op type, bin, hits (``compact`` folds log2_code's per-threshold bins into
    ``code.*: 23/24 hit``)."""
    lines = [f"{'op':<14} {'bin':<22} {'hits':>10}"]
    for op in sorted(totals(covs)):
        bins = totals(covs)[op]
        fams: dict[str, list[int]] = {}
        for b, n in bins.items():
            fam = _family(b) if compact else None
            if fam:
                fams.setdefault(fam, []).append(n)
                continue
            lines.append(f"{op:<14} {b:<22} {n:>10}" + ("   MISSED" if n == 0 else ""))
        for fam, ns in fams.items():
            hit = sum(1 for n in ns if n)
            lines.append(f"{op:<14} {fam + '.*':<22} {sum(ns):>10}   {hit}/{len(ns)} bins hit"
                         + ("" if hit == len(ns) else "   MISSED"))
    return "\n".join(lines)


def set_missed(cov: dict) -> dict[str, list[str]]:
    """op type -> the bins no op of that type in ``cov`` hits."""
    return missed([cov])
