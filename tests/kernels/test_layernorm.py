"""Integer LayerNorm: Numba vs reference, exact literal check, error bound vs float64, headroom errors."""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from repq_hw.kernels import layernorm as LN
from repq_hw.kernels.layernorm import layernorm, layernorm_ref, layernorm_requant, layernorm_requant_ref
from repq_hw.kernels.rounding import ROUNDING_MODES, RequantConsts, requantize_ref
from tests.kernels.test_rounding import lit_div


def both_threads(fn, *args):
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        a = fn(*args)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        b = fn(*args)
    finally:
        numba.set_num_threads(old)
    return a, b


def literal_ln(x: np.ndarray, eps_q: int, f: int, mode: str) -> list[list[int]]:
    out = []
    for row in x.tolist():
        c = len(row)
        s = sum(row)
        q = sum(v * v for v in row)
        sig = math.isqrt(c * q - s * s + eps_q)
        out.append([0 if sig == 0 else lit_div((c * v - s) << f, sig, mode) for v in row])
    return out


@st.composite
def ln_case(draw):
    t, c = draw(st.integers(1, 5)), draw(st.integers(1, 48))
    amp = draw(st.sampled_from([0, 1, 3, 100, 5000, ((1 << 31) - 1) // c]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["random", "const", "extreme", "one_hot"]))
    if kind == "random":
        x = rng.integers(-amp, amp + 1, (t, c))
    elif kind == "const":
        x = np.full((t, c), draw(st.integers(-amp, amp)))
    elif kind == "extreme":
        x = rng.choice(np.array([-amp, amp]), (t, c))
    else:
        x = np.zeros((t, c), np.int64)
        x[:, 0] = amp
    eps_q = draw(st.sampled_from([0, 1, 7, 1 << 20, (1 << 40) + 3]))
    f = draw(st.integers(0, 20))
    mode = draw(st.sampled_from(ROUNDING_MODES))
    return x.astype(np.int32), eps_q, f, mode


@settings(max_examples=150, deadline=None)
@given(ln_case())
def test_layernorm_hypothesis(case):
    x, eps_q, f, mode = case
    try:
        ref = layernorm_ref(x, eps_q, f, mode)
    except OverflowError:  # headroom H2 / int32 result: the fast kernel must refuse too
        with pytest.raises(OverflowError):
            layernorm(x, eps_q, f, mode)
        return
    assert ref.dtype == np.int32
    assert np.array_equal(ref, layernorm(x, eps_q, f, mode))
    assert ref.tolist() == literal_ln(x.astype(np.int64), eps_q, f, mode)


def error_bound_check(x: np.ndarray, eps_q: int, f: int, mode: str) -> float:
    """|norm - y| <= rho + |y| / sigma_n with y = d * 2^F / sqrt(var_n + eps_q) (float64)."""
    norm = layernorm(x, eps_q, f, mode).astype(np.float64)
    xi = x.astype(np.int64)
    c = x.shape[1]
    s = xi.sum(1, keepdims=True)
    v = c * (xi * xi).sum(1, keepdims=True) - s * s + eps_q
    sig = np.array([[math.isqrt(int(t))] for t in v[:, 0]], dtype=np.float64)
    y = (c * xi - s).astype(np.float64) * 2.0**f / np.sqrt(v.astype(np.float64))
    # the same thing from the float64 LayerNorm formula with eps in code units eps_q / C^2
    xf = x.astype(np.float64)
    y2 = (xf - xf.mean(1, keepdims=True)) / np.sqrt(xf.var(1, keepdims=True) + eps_q / c**2) * 2.0**f
    assert np.allclose(y, y2, rtol=1e-9, atol=1e-9)
    rho = 1.0 if mode == "floor" else 0.5
    bound = rho + np.abs(y) / np.maximum(sig, 1) + 1e-9 * np.abs(y)
    err = np.abs(norm - y)
    assert (err <= bound).all(), float((err - bound).max())
    assert (np.abs(y) <= math.sqrt(max(c - 1, 0)) * 2.0**f * (1 + 1e-12)).all()
    return float(err.max())


@pytest.mark.parametrize("mode", ROUNDING_MODES)
def test_layernorm_error_bound(mode):
    rng = np.random.default_rng(21)
    for c, amp, f in [(384, 100, 12), (64, 10, 8), (16, 2, 10), (4, 1, 20)]:
        x = rng.integers(-amp, amp + 1, (16, c)).astype(np.int32)
        error_bound_check(x, 3, f, mode)  # small sigma_n: the isqrt floor dominates, still within bound
    x = np.array([[1, 2, 3, 6], [5, 5, 5, 6], [-7, 0, 0, 0]], np.int32)
    error_bound_check(x, 0, 8, mode)
    # a realistic residual stream (C = 768, std ~ 1700 codes -> sigma_n ~ 1.3e6): about 1 LSB at F = 16
    x = rng.integers(-3000, 3001, (16, 768)).astype(np.int32)
    assert error_bound_check(x, 3, 16, mode) <= 2.0


def test_layernorm_constant_row_is_zero():
    x = np.array([[5, 5, 5, 5], [-3, -3, -3, -3], [0, 0, 0, 0]], np.int32)
    for fn in (layernorm_ref, layernorm):
        assert fn(x, 0, 12, "half_even").tolist() == [[0] * 4] * 3
        assert fn(x, 1000, 12, "half_even").tolist() == [[0] * 4] * 3


@pytest.mark.parametrize("fn", [layernorm_ref, layernorm])
def test_layernorm_headroom_errors(fn):
    c = 4
    x = np.full((1, c), (1 << 31) // c, np.int64)
    with pytest.raises(OverflowError, match="H1"):
        fn(x, 0, 8, "floor")
    x = np.array([[0, 1]], np.int32)
    with pytest.raises(OverflowError, match="H2"):
        fn(x, (1 << 62) - 1, 8, "floor")  # var_n = 1, + eps_q = 2^62
    with pytest.raises(ValueError, match="eps_q"):
        fn(x, -1, 8, "floor")
    with pytest.raises(ValueError, match="frac_bits"):
        fn(x, 0, 31, "floor")
    with pytest.raises(ValueError, match="half_odd"):
        fn(x, 0, 8, "half_odd")
    # int32 output overflow: |norm| up to sqrt(C-1) * 2^F; C = 2, F = 30 -> (+-)2^30 * 2/sqrt(...) ok,
    # but a tiny sigma with eps_q = 0 and F = 30: d = +-1, sigma = isqrt(1) = 1 -> 2^30 fits; C=3 -> 2^31
    x = np.array([[1, 0, 0]], np.int32)  # S=1, Q=1, var_n = 2, sigma = 1, d_0 = 2 -> 2^31
    with pytest.raises(OverflowError, match="int32"):
        fn(x, 0, 30, "floor")


@settings(max_examples=60, deadline=None)
@given(ln_case(), st.integers(0, 2**32 - 1))
def test_layernorm_requant_hypothesis(case, seed):
    x, eps_q, f, mode = case
    c = x.shape[1]
    rng = np.random.default_rng(seed)
    m = rng.integers(0, 1 << 31, c)
    s = rng.integers(0, 63, c)
    off = rng.integers(-(1 << 61), 1 << 61, c)
    try:
        layernorm_ref(x, eps_q, f, mode)
    except OverflowError:
        return
    ref = layernorm_requant_ref(x, eps_q, f, m, s, off, 3, -128, 127, mode)
    assert np.array_equal(ref, layernorm_requant(x, eps_q, f, m, s, off, 3, -128, 127, mode))
    exp = requantize_ref(layernorm_ref(x, eps_q, f, mode), m, s, off, 3, -128, 127, mode)
    assert np.array_equal(ref, exp)


@pytest.mark.parametrize("fn", [layernorm_requant_ref, layernorm_requant])
def test_layernorm_requant_overflow(fn):
    x = np.array([[0, 4]], np.int32)  # norm = +-2^F
    with pytest.raises(OverflowError):
        fn(x, 0, 20, (1 << 31) - 1, 0, (1 << 63) - 1, 0, 0, 255, "floor")


def test_layernorm_threads():
    rng = np.random.default_rng(8)
    x = rng.integers(-2000, 2000, (197, 192)).astype(np.int32)
    a, b = both_threads(layernorm, x, 11, 14, "half_even")
    assert np.array_equal(a, b) and np.array_equal(a, layernorm_ref(x, 11, 14, "half_even"))
    m = rng.integers(1 << 30, 1 << 31, 192)
    off = rng.integers(-(1 << 40), 1 << 40, 192)
    a, b = both_threads(layernorm_requant, x, 11, 14, m, 40, off, 0, -128, 127, "half_up")
    assert np.array_equal(a, b) and np.array_equal(
        a, layernorm_requant_ref(x, 11, 14, m, 40, off, 0, -128, 127, "half_up")
    )


# ---------------------------------------------------------------------------------------------
# The fast kernel (layernorm_requant_fast, used by the executor's plan) vs the reference, bit for bit
# ---------------------------------------------------------------------------------------------

I32 = (1 << 31) - 1


def fast_accepts(x: np.ndarray, eps_q: int, f: int) -> bool:
    """The documented preconditions of layernorm_requant_fast (H2 aside: a row failing it gives None)."""
    c = x.shape[1]
    xm = int(np.abs(x.astype(np.int64)).max(initial=0))
    return (x.dtype.kind == "i" and x.dtype.itemsize <= 4 and 0 <= f <= 20 and c * xm < (1 << 31)
            and 4 * (c - 1) << (2 * f) < ((1 << 31) - 3) ** 2)


def check_fast(x, eps_q, f, mult, shift, off, zp, lo, hi, mode, dtype, *, loops=("auto",)):
    """Fast kernel (each element loop in ``loops``) == reference, or None exactly where the reference raises
    or a precondition fails."""
    c = x.shape[1]
    rc = RequantConsts.make(c, mult, shift, off, zp, lo, hi, mode)
    assert rc is not None
    try:
        ref = layernorm_requant_ref(x, eps_q, f, mult, shift, off, zp, lo, hi, mode, dtype)
    except OverflowError:
        ref = None
    for loop in loops:
        if loop == "auto":
            got = LN.layernorm_requant_fast(x, eps_q, f, rc, dtype)
        else:  # drive the kernel directly with the fast element loop off: the exact (remainder) loop
            got = LN.layernorm_requant_fast(x, eps_q, f, rc, dtype, _force_exact=True)
        if ref is None or not fast_accepts(x, eps_q, f):
            assert got is None or ref is not None and np.array_equal(got, ref), loop
            if ref is None:
                assert got is None, loop
            continue
        assert got is not None, (loop, "fast path refused a valid input")
        assert got.dtype == np.dtype(dtype)
        assert np.array_equal(got, ref), (loop, np.argwhere(got != ref)[:5])
    return ref


def requant_set(rng, c, kind):
    if kind == "real":  # like the lowered DeiT/Swin LN nodes: M ~ 2^31, shift 41/42, offset ~ 2^46
        m = rng.integers(1 << 30, 1 << 31, c) * rng.choice([-1, 1], c)
        s = rng.integers(41, 43, c)
        off = rng.integers(-(1 << 46), 1 << 46, c)
    elif kind == "wide":
        m = rng.integers(-(1 << 31) + 1, 1 << 31, c)
        s = rng.integers(0, 63, c)
        off = rng.integers(-(1 << 61) + 1, 1 << 61, c)
    else:  # extremes: every corner of (M, shift, offset)
        m = rng.choice(np.array([-I32, I32, 0, 1, -1, 1 << 30, 3]), c)
        s = rng.choice(np.array([0, 1, 2, 16, 31, 32, 47, 61, 62]), c)
        off = rng.choice(np.array([-(1 << 61) + 1, (1 << 61) - 1, 0, 1, -1, 1 << 40, -(1 << 45) - 1]), c)
    return m.astype(np.int64), s.astype(np.int64), off.astype(np.int64)


OUT_RANGES = [  # (dtype, zero_point, out_min, out_max): the graphs' storages and some saturating corners
    (np.uint8, 128, 0, 255), (np.uint8, 7, 0, 15), (np.int8, 0, -128, 127), (np.int16, 0, -32768, 32767),
    (np.int32, 0, -(1 << 31), I32), (np.int32, -(1 << 31), -(1 << 31), I32), (np.int32, I32, -5, I32),
    (np.uint16, 3, 0, 65535), (np.int8, -100, -128, -90),
]


def rows(rng, kind, t, c, amp, dtype):
    if kind == "random":
        x = rng.integers(-amp, amp + 1, (t, c))
    elif kind == "const":
        x = np.repeat(rng.integers(-amp, amp + 1, (t, 1)), c, axis=1)
    elif kind == "extreme":
        x = rng.choice(np.array([-amp, amp]), (t, c))
    elif kind == "one_hot":
        x = np.zeros((t, c), np.int64)
        x[np.arange(t), rng.integers(0, c, t)] = rng.choice(np.array([-amp, amp]), t)
    else:  # "mixed": a large mean and a small spread, plus a few outliers
        x = rng.integers(-3, 4, (t, c)) + rng.integers(-amp // 2, amp // 2 + 1, (t, 1))
        x[:, :: max(1, c // 7)] = amp
    info = np.iinfo(dtype)
    return np.clip(x, info.min, info.max).astype(dtype)


@pytest.mark.parametrize("mode", ROUNDING_MODES)
@pytest.mark.parametrize("c", [1, 2, 3, 5, 96, 97, 384, 768, 1536])
def test_layernorm_fast_vs_ref(mode, c):
    rng = np.random.default_rng(1000 + c + 7 * ROUNDING_MODES.index(mode))
    h1 = ((1 << 31) - 1) // c
    for dtype, amps in ((np.int16, [1, 3, 2000, 32767]), (np.int8, [1, 127]), (np.int32, [5000, h1])):
        for amp in amps:
            for kind in ("random", "const", "extreme", "one_hot", "mixed"):
                x = rows(rng, kind, 6, c, amp, dtype)
                f = int(rng.choice([0, 1, 8, 16, 20]))
                eps = int(rng.choice([0, 1, 7, 2851429, (1 << 40) + 3]))
                m, s, off = requant_set(rng, c, str(rng.choice(["real", "wide", "extreme"])))
                odt, zp, lo, hi = OUT_RANGES[int(rng.integers(len(OUT_RANGES)))]
                check_fast(x, eps, f, m, s, off, zp, lo, hi, mode, odt, loops=("auto", "exact"))


@pytest.mark.parametrize("mode", ROUNDING_MODES)
def test_layernorm_fast_ties(mode):
    """Rows whose X = d*2^F/sigma hits exact halves (sigma = 0 mod 2^(F+1)): the tie-aware loop."""
    rng = np.random.default_rng(77)
    for f in (0, 1, 5, 16, 20):
        for _ in range(20):
            c = int(rng.choice([2, 3, 4, 8, 96]))
            x = rng.integers(-50, 51, (5, c)).astype(np.int16)
            x[0] = 0
            x[0, 0] = 1  # C = 2 -> d = -+1
            # pick eps so that row 0's tot = var_n + eps is the square of a multiple of 2^(f+1)
            xi = x.astype(np.int64)
            s, q = xi.sum(1), (xi * xi).sum(1)
            var0 = c * int(q[0]) - int(s[0]) ** 2
            k = 1 << (f + 1)
            r = math.isqrt(var0 - 1) + 1 if var0 else 0  # ceil(sqrt(var0))
            sig = k * max(1, -(-r // k) + int(rng.integers(0, 3)))
            eps = sig * sig - var0
            m, s_, off = requant_set(rng, c, "extreme" if rng.random() < 0.5 else "wide")
            for odt, zp, lo, hi in OUT_RANGES[:4]:
                check_fast(x, eps, f, m, s_, off, zp, lo, hi, mode, odt, loops=("auto", "exact"))
    # the spec's tie examples (ties at +-0.5, F = 0)
    x = np.array([[0, 1]], np.int16)
    check_fast(x, 3, 0, 1 << 30, 30, 0, 0, -128, 127, mode, np.int8)


@pytest.mark.parametrize("mode", ROUNDING_MODES)
def test_layernorm_fast_requant_ties(mode):
    """Requantize ties: shift 1..3 with M = 1 puts many v on exact halves (both signs, even and odd q)."""
    rng = np.random.default_rng(5)
    c = 64
    x = rng.integers(-300, 301, (40, c)).astype(np.int16)
    m = np.ones(c, np.int64) * rng.choice([-1, 1], c)
    s = rng.integers(1, 4, c)
    off = rng.integers(-9, 10, c)
    for f in (0, 2, 16):
        check_fast(x, 5, f, m, s, off, 0, -(1 << 31), I32, mode, np.int32, loops=("auto", "exact"))
        check_fast(x, 5, f, m, s, off, 9, -20, 20, mode, np.int8)


@pytest.mark.parametrize("mode", ROUNDING_MODES)
def test_layernorm_fast_saturation(mode):
    rng = np.random.default_rng(6)
    c = 384
    x = rng.integers(-12000, 12000, (30, c)).astype(np.int16)
    for big in (I32, -I32):
        m = np.full(c, big)
        for s, odt, zp, lo, hi in ((0, np.uint8, 128, 0, 255), (20, np.int8, 0, -128, 127),
                                   (0, np.int32, 0, -(1 << 31), I32)):
            y = check_fast(x, 9, 16, m, s, np.zeros(c, np.int64), zp, lo, hi, mode, odt)
            assert (y == lo).any() and (y == hi).any()  # saturates at both ends


@pytest.mark.parametrize("mode", ROUNDING_MODES)
def test_layernorm_fast_real_like(mode):
    """DeiT-S-like: [8*197, 384] int16 residual codes, F = 16, uint8 out with zero point 128."""
    rng = np.random.default_rng(9)
    c = 384
    x = (rng.standard_normal((8 * 197, c)) * 2500).astype(np.int16)
    x[:, 5] = 12000  # an outlier channel, as in real residual streams
    m, s, off = requant_set(rng, c, "real")
    check_fast(x, 2851429, 16, m, s, off, 128, 0, 255, mode, np.uint8, loops=("auto", "exact"))


def test_layernorm_fast_refuses():
    c = 4
    rc = RequantConsts.make(c, 1 << 30, 32, 0, 0, -128, 127, "half_even")
    x = np.array([[1, 2, 3, 6]], np.int16)
    assert LN.layernorm_requant_fast(x, 0, 21, rc, np.int8) is None  # F > 20
    assert LN.layernorm_requant_fast(x.astype(np.int64), 0, 8, rc, np.int8) is None  # int64 input
    assert LN.layernorm_requant_fast(x[:, :3], 0, 8, rc, np.int8) is None  # C != rc.c
    assert LN.layernorm_requant_fast(x, -1, 8, rc, np.int8) is None
    h = np.array([[(1 << 31) // c, 0, 0, 0]], np.int32)  # H1
    assert LN.layernorm_requant_fast(h, 0, 8, rc, np.int8) is None
    z = np.array([[0, 1, 0, 0]], np.int16)  # H2 in one row
    assert LN.layernorm_requant_fast(np.repeat(z, 3, 0), (1 << 62) - 2, 8, rc, np.int8) is None
    assert LN.layernorm_requant_fast(np.zeros((0, c), np.int16), 0, 8, rc, np.int8).shape == (0, c)
    y = LN.layernorm_requant_fast(x, 0, 4, rc, np.int8)  # the spec's worked example (x1/4, zp 0)
    assert y.tolist() == [[-4, -2, 0, 7]]


def test_layernorm_fast_threads():
    rng = np.random.default_rng(10)
    c = 192
    x = rng.integers(-9000, 9000, (785, c)).astype(np.int16)
    m, s, off = requant_set(rng, c, "real")
    rc = RequantConsts.make(c, m, s, off, 128, 0, 255, "half_even")
    a, b = both_threads(LN.layernorm_requant_fast, x, 1234, 16, rc, np.uint8)
    assert np.array_equal(a, b)
    assert np.array_equal(a, layernorm_requant_ref(x, 1234, 16, m, s, off, 128, 0, 255, "half_even", np.uint8))
