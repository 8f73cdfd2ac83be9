"""Integer LayerNorm + requantize: the previous fast kernel vs the current one (``layernorm_requant_fast``).

Times both in the same run, alternately (prev, new, prev, ...), medians over --repeats, on
  * the real LayerNorm nodes of DeiT-S (W8A8, batch --batch): inputs from one emulated forward
    (``run_graph(..., keep_all=True)``), the nodes' own constants;
  * random Swin-T shapes (C = 96, 192, 384, 768 and the patch-merging norms 4C = 384, 768, 1536; int16 codes,
    F = 16, half_even, uint8 out).
Every output is checked bit for bit against the previous kernel, and one real node against the numpy
reference.  Prints the ratio per node kind and in total, the machine and the thread count.

    .venv/bin/python benchmarks/bench_layernorm.py [--batch 8] [--threads 2] [--repeats 21] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from numba import njit, prange

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import cached_graph, machine, save_json

from repq_hw.kernels.layernorm import _isqrt  # unchanged by issue #15: shared with the current kernel
from repq_hw.kernels.rounding import RequantConsts, floor_div_recip, round_div_fix, rounding_rshift_bf

_LIM62 = 1 << 62

# ---- the previous fast kernel (repq_hw/kernels/layernorm.py before issue #15), kept here for the comparison


@njit(cache=False, parallel=True)
def _ln_rows_prev(x, eps, f, mult, sh, half, off, zp, lo, hi, mode, out, bad):
    t, c = x.shape
    cc = np.int64(c)
    for i in prange(t):
        s = np.int64(0)
        q = np.int64(0)
        for j in range(c):
            v = np.int64(x[i, j])
            s += v
            q += v * v
        tot = cc * q - s * s + eps
        if tot >= (np.int64(1) << 62):
            bad[i] = 1
            continue
        sigma = _isqrt(tot)
        if sigma == 0:
            for j in range(c):  # norm = 0
                y = rounding_rshift_bf(off[j], sh[j], half[j], mode)
                out[i, j] = min(max(y, lo), hi) + zp
            continue
        inv = 1.0 / np.float64(sigma)
        for j in range(c):
            num = (cc * np.int64(x[i, j]) - s) << f  # |.| < 2^32 * 2^F <= 2^52 (wrapper: F <= 20)
            qq, r = floor_div_recip(num, sigma, inv)
            nrm = round_div_fix(num, sigma, qq, r, mode)
            if nrm < -(np.int64(1) << 31) or nrm > (np.int64(1) << 31) - 1:
                bad[i] = 1
            v = nrm * mult[j] + off[j]  # |norm| < 2^31 (else flagged), |M| < 2^31, |off| < 2^62
            y = rounding_rshift_bf(v, sh[j], half[j], mode)
            out[i, j] = min(max(y, lo), hi) + zp


def layernorm_requant_prev(x: np.ndarray, eps_q: int, frac_bits: int, rc: RequantConsts, out_dtype
                           ) -> np.ndarray | None:
    """``layernorm_requant_ref`` for int8/16/32 ``x [T, C]`` with ``C*max|x| < 2^31``, ``frac_bits <= 20``;
    None otherwise, or when a row fails a headroom test (the caller's fallback raises the reference's error).
    """
    if x.ndim != 2 or x.dtype.kind != "i" or x.dtype.itemsize > 4 or not 0 <= frac_bits <= 20:
        return None
    t, c = x.shape
    if c == 0 or c != rc.c or not 0 <= int(eps_q) < _LIM62:
        return None
    xmax = max(abs(int(x.min(initial=0))), abs(int(x.max(initial=0))))
    if c * xmax >= (1 << 31):
        return None
    out = np.empty((t, c), dtype=out_dtype)
    bad = np.zeros(t, dtype=np.uint8)
    _ln_rows_prev(np.ascontiguousarray(x), int(eps_q), int(frac_bits), rc.mult, rc.sh, rc.half, rc.off, rc.zp, rc.lo,
             rc.hi, rc.mode, out, bad)
    return None if bad.any() else out


# ---- benchmark


def timed_pair(fa, fb, repeats):
    ta, tb = [], []
    fa(), fb()
    for _ in range(repeats):
        t0 = time.perf_counter()
        fa()
        ta.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        fb()
        tb.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb)


def deit_cases(batch):
    from repq_hw.emu.execute import run_graph

    g, codes0 = cached_graph("deit_small_patch16_224", 8, 8)
    codes = np.concatenate([codes0] * (-(-batch // len(codes0))))[:batch]
    taps = run_graph(g, codes, "fast", keep_all=True)
    cases = []
    for n in g.nodes:
        if n.op.value != "layernorm":
            continue
        x = taps[n.inputs[0]]
        x = x.reshape(-1, x.shape[-1])
        ot = g.tensors[n.outputs[0]].type
        a = n.attrs
        args = {"mult": g.const(n, "multiplier"), "shift": g.const(n, "shift"), "off": g.const(n, "offset"),
                "zp": int(a["zero_point"]), "lo": ot.min, "hi": ot.max, "rounding": a["rounding"]}
        cases.append((f"deit {n.name}", x, int(a["eps_q"]), int(a["frac_bits"]), args, ot.storage,
                      taps[n.outputs[0]].reshape(x.shape)))
    return cases


def swin_cases(batch, rng):
    # (tokens per image, C): stage norms and the patch-merging norms (4C of the previous stage)
    shapes = [(3136, 96), (784, 192), (196, 384), (49, 768), (784, 384), (196, 768), (49, 1536)]
    cases = []
    for tok, c in shapes:
        x = (rng.standard_normal((batch * tok, c)) * 3000).astype(np.int16)
        x[:, 3] = 15000  # an outlier channel
        args = {"mult": rng.integers(1 << 30, 1 << 31, c), "shift": rng.integers(41, 43, c),
                "off": rng.integers(-(1 << 46), 1 << 46, c), "zp": 128, "lo": 0, "hi": 255, "rounding": "half_even"}
        cases.append((f"swin [{batch}*{tok}, {c}]", x, 2569787, 16, args, np.dtype(np.uint8), None))
    return cases


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--json")
    a = ap.parse_args()

    import numba

    from repq_hw.kernels.layernorm import layernorm_requant_fast, layernorm_requant_ref

    numba.set_num_threads(min(a.threads, numba.config.NUMBA_NUM_THREADS))
    print(f"machine: {machine()}")
    print(f"threads: numba {numba.get_num_threads()}; medians of {a.repeats}, previous and new timed alternately\n")
    cases = deit_cases(a.batch) + swin_cases(a.batch, np.random.default_rng(0))
    res, tot = [], {"deit": [0.0, 0.0], "swin": [0.0, 0.0]}
    exact_all = True
    for k, (name, x, eps, fb, ar, storage, want) in enumerate(cases):
        rc = RequantConsts.make(x.shape[1], ar["mult"], ar["shift"], ar["off"], ar["zp"], ar["lo"], ar["hi"],
                                ar["rounding"])
        def prev(x=x, eps=eps, fb=fb, rc=rc, storage=storage):
            return layernorm_requant_prev(x, eps, fb, rc, storage)

        def new(x=x, eps=eps, fb=fb, rc=rc, storage=storage):
            return layernorm_requant_fast(x, eps, fb, rc, storage)

        yp, yn = prev(), new()
        exact = yp is not None and yn is not None and np.array_equal(yp, yn)
        if want is not None:
            exact = exact and np.array_equal(yn, want)
        if k == 0:  # one real node against the numpy reference too
            ref = layernorm_requant_ref(x, eps, fb, ar["mult"], ar["shift"], ar["off"], ar["zp"], ar["lo"], ar["hi"],
                                        ar["rounding"], storage)
            exact = exact and np.array_equal(yn, ref)
        exact_all &= exact
        tp, tn = timed_pair(prev, new, a.repeats)
        tot[name.split()[0]][0] += tp
        tot[name.split()[0]][1] += tn
        res.append({"node": name, "shape": list(x.shape), "prev_ms": tp * 1e3, "new_ms": tn * 1e3, "exact": exact})
        print(f"{name:34s} {x.shape!s:14s} prev {tp * 1e3:7.3f} ms  new {tn * 1e3:7.3f} ms  "
              f"ratio {tp / tn:5.2f}  bit-exact {exact}", flush=True)
    print()
    for key, (tp, tn) in tot.items():
        print(f"total {key}: prev {tp * 1e3:.2f} ms, new {tn * 1e3:.2f} ms, ratio {tp / tn:.2f}")
    print(f"all bit-exact: {exact_all}")
    save_json(a.json, {"machine": machine(), "threads": numba.get_num_threads(), "batch": a.batch,
                       "results": res, "totals_ms": {k: [v[0] * 1e3, v[1] * 1e3] for k, v in tot.items()},
                       "exact": exact_all})
    if not exact_all:
        sys.exit(1)


if __name__ == "__main__":
    main()
