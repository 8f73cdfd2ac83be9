"""attn_v_shift: Numba vs reference, error bound vs the float64 ideal, truncation/headroom errors."""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from repq_hw.kernels.attn_v_shift import attn_v_shift, attn_v_shift_ref, sqrt2_multiplier
from repq_hw.kernels.rounding import ROUNDING_MODES


@st.composite
def case(draw):
    bits = draw(st.integers(2, 8))
    z = (1 << bits) - 1
    f = draw(st.integers(0, 30))
    cmax = min(z - 1, 2 * f)  # F >= ceil(c/2)
    b, m, n, d = (
        draw(st.integers(1, 2)),
        draw(st.integers(1, 4)),
        draw(st.integers(1, 30)),
        draw(st.integers(1, 9)),
    )
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    pool = {0, 1, 2, cmax, max(cmax - 1, 0), z} | set(rng.integers(0, cmax + 1, 6).tolist())
    pool = np.array(sorted(c for c in pool if c <= cmax or c == z), np.uint8)
    c = rng.choice(pool, (b, m, n))
    v = (
        rng.choice(np.array([0, 1, 127, 128, 254, 255], np.uint8), (b, n, d))
        if draw(st.booleans())
        else (rng.integers(0, 256, (b, n, d), dtype=np.uint8))
    )
    v_zp = draw(st.integers(-300, 300) | st.sampled_from([0, 128, 255]))
    q = draw(st.integers(1, 30))
    mode = draw(st.sampled_from(ROUNDING_MODES))
    return c, v, v_zp, bits, f, q, mode


def ideal_and_odd(c, v, v_zp, bits, f):
    z = (1 << bits) - 1
    ci = c.astype(np.int64)
    live = ci != z
    wgt = np.where(live, np.exp2(f - ci / 2.0), 0.0)
    dv = v.astype(np.float64) - v_zp
    ideal = wgt @ dv
    odd = live & (ci % 2 == 1)
    w_odd = np.where(odd, np.exp2(np.where(odd, f - ci // 2 - 1, 0).astype(np.float64)), 0.0)
    acc_odd = w_odd @ dv  # exact in float64 for these sizes
    return ideal, acc_odd


@settings(max_examples=150, deadline=None)
@given(case())
def test_attn_v_hypothesis_and_bound(cs):
    c, v, v_zp, bits, f, q, mode = cs
    r = sqrt2_multiplier(q)
    if c.shape[2] * max(abs(v_zp), abs(255 - v_zp)) * (1 << f) * r >= 1 << 63:
        for fn in (attn_v_shift_ref, attn_v_shift):
            with pytest.raises(OverflowError, match="headroom"):
                fn(c, v, v_zp, bits, f, q, mode)
        return
    ref = attn_v_shift_ref(c, v, v_zp, bits, f, q, mode)
    fast = attn_v_shift(c, v, v_zp, bits, f, q, mode)
    assert ref.dtype == fast.dtype == np.int64
    assert np.array_equal(ref, fast)
    ideal, acc_odd = ideal_and_odd(c, v, v_zp, bits, f)
    rho = 1.0 if mode == "floor" else 0.5
    bound = rho + np.abs(acc_odd) * abs(r - math.sqrt(2) * 2.0**q) / 2.0**q
    err = np.abs(ref.astype(np.float64) - ideal)
    # float64 slack: the ideal sums terms of magnitude up to |wgt| @ |dv|, each with ~1 ulp error
    slack = 1e-12 * (
        1.0
        + (
            np.abs(np.where(c.astype(np.int64) != (1 << bits) - 1, np.exp2(f - c / 2.0), 0.0))
            @ np.abs(v.astype(np.float64) - v_zp)
        )
    )
    assert (err <= bound + slack).all()


def test_sqrt2_multiplier():
    assert sqrt2_multiplier(15) == 46341  # sqrt(2)*32768 = 46340.95
    assert sqrt2_multiplier(1) == 3  # 2.83
    assert sqrt2_multiplier(2) == 6  # 5.66
    for q in range(1, 31):
        assert abs(sqrt2_multiplier(q) - math.sqrt(2) * 2**q) <= 0.5
    with pytest.raises(ValueError, match="sqrt2_frac_bits"):
        sqrt2_multiplier(0)


def test_attn_v_typical_error():
    rng = np.random.default_rng(9)
    bits, f, q = 4, 7, 15
    c = rng.integers(0, 16, (2, 197, 197)).astype(np.uint8)
    v = rng.integers(0, 256, (2, 197, 64), dtype=np.uint8)
    got = attn_v_shift(c, v, 128, bits, f, q, "half_even")
    assert np.array_equal(got, attn_v_shift_ref(c, v, 128, bits, f, q, "half_even"))
    ideal, acc_odd = ideal_and_odd(c, v, 128, bits, f)
    err = np.abs(got - ideal)
    assert err.max() <= 0.5 + np.abs(acc_odd).max() * 0.0499 / 2**15 + 1e-9


@pytest.mark.parametrize("fn", [attn_v_shift_ref, attn_v_shift])
def test_attn_v_errors(fn):
    v = np.zeros((1, 3, 2), np.uint8)
    c = np.array([[[0, 5, 15]]], np.uint8)  # code 5 = 2*2+1 needs F >= 3; Z = 15 ignored
    assert fn(c, v, 0, 4, 3, 15, "floor").shape == (1, 1, 2)
    with pytest.raises(ValueError, match="truncated"):
        fn(c, v, 0, 4, 2, 15, "floor")
    c2 = np.array([[[0, 6, 15]]], np.uint8)  # even 6 = 2*3 needs F >= 3
    with pytest.raises(ValueError, match="truncated"):
        fn(c2, v, 0, 4, 2, 15, "floor")
    with pytest.raises(ValueError, match="zero state"):
        fn(np.array([[[16, 0, 0]]], np.uint8), v, 0, 4, 8, 15, "floor")
    with pytest.raises(OverflowError, match="headroom"):
        fn(c, v, 0, 4, 50, 15, "floor")
    with pytest.raises(ValueError, match="round_to_odd"):
        fn(c, v, 0, 4, 3, 15, "round_to_odd")
    with pytest.raises(ValueError, match="uint8"):
        fn(c.astype(np.int32), v, 0, 4, 3, 15, "floor")


def test_attn_v_threads():
    rng = np.random.default_rng(10)
    c = rng.integers(0, 16, (3, 97, 97)).astype(np.uint8)
    v = rng.integers(0, 256, (3, 97, 32), dtype=np.uint8)
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        a = attn_v_shift(c, v, 120, 4, 8, 15, "half_up")
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        b = attn_v_shift(c, v, 120, 4, 8, 15, "half_up")
    finally:
        numba.set_num_threads(old)
    assert np.array_equal(a, b) and np.array_equal(a, attn_v_shift_ref(c, v, 120, 4, 8, 15, "half_up"))


# --- the fast kernel (byte / int16 planes on vpdpbusd / vpmaddwd): every path, native and generic ------

from repq_hw.kernels import simd
from repq_hw.kernels.attn_v_shift import AV_PATHS, attn_v_path, attn_v_shift_fast

FAST_VARIANTS = [("vnni", "generic"), ("i16", "generic"), ("portable", None)]
if simd.has_vnni512():
    FAST_VARIANTS.append(("vnni", None))
if simd.has_avx2():
    FAST_VARIANTS.append(("i16", None))


@pytest.mark.parametrize(("path", "impl"), FAST_VARIANTS)
@settings(max_examples=60, deadline=None)
@given(cs=case())
def test_attn_v_fast_every_path_hypothesis(path, impl, cs):
    c, v, v_zp, bits, f, q, mode = cs
    try:
        r = attn_v_shift_ref(c, v, v_zp, bits, f, q, mode)
    except (ValueError, OverflowError) as e:
        with pytest.raises(type(e)):
            attn_v_shift_fast(c, v, v_zp, bits, f, q, mode, path=path, impl=impl)
        return
    assert np.array_equal(attn_v_shift_fast(c, v, v_zp, bits, f, q, mode, path=path, impl=impl), r)


@pytest.mark.parametrize(("path", "impl"), FAST_VARIANTS)
@pytest.mark.parametrize(("bits", "f", "ncodes"), [(8, 12, 24), (4, 8, 15), (6, 20, 40), (8, 40, 80),
                                                   (3, 0, 1), (8, 7, 15), (2, 1, 2)])
def test_attn_v_fast_lowering_shapes(path, impl, bits, f, ncodes):
    """Codes as the lowering makes them (0 .. L-1 and Z), DeiT-like shapes with row/column tails, every rounding
    mode and zero points at the edges; (8, 40, 80) has live codes above the 64-entry tables (fallback)."""
    rng = np.random.default_rng(bits * 100 + f)
    z = (1 << bits) - 1
    for mode in ROUNDING_MODES:
        c = rng.integers(0, ncodes + 1, (3, 21, 70)).astype(np.uint8)
        c[c == ncodes] = z
        c[0, :9] = z  # a row group with only the zero state
        c[1, :, :5] = 0  # the largest weight
        v = rng.integers(0, 256, (3, 70, 33)).astype(np.uint8)
        for vz in (0, 128, 255, -300, 70000):
            try:
                r = attn_v_shift_ref(c, v, vz, bits, f, 15, mode)
            except OverflowError:
                with pytest.raises(OverflowError):
                    attn_v_shift_fast(c, v, vz, bits, f, 15, mode, path=path, impl=impl)
                continue
            got = attn_v_shift_fast(c, v, vz, bits, f, 15, mode, path=path, impl=impl)
            assert got.dtype == np.int64 and np.array_equal(got, r), (mode, vz)
            if np.abs(r).max(initial=0) < (1 << 31) - 1:
                g32 = attn_v_shift_fast(c, v, vz, bits, f, 15, mode, path=path, impl=impl, out_dtype=np.int32)
                assert g32.dtype == np.int32 and np.array_equal(g32, r)


@pytest.mark.parametrize(("path", "impl"), FAST_VARIANTS)
@pytest.mark.parametrize("d", [32, 64])
def test_attn_v_fast_head_dims_and_skipped_planes(path, impl, d):
    """The head widths of DeiT/ViT (64) and Swin (32), which the vnni path packs by byte permutes, with N
    tails of every residue mod 4; W8A8-like codes (F = 12: two planes per parity) whose 8-row groups use
    only the high planes, only the low planes, both, or only the zero state (planes of a group are built
    only where its code range reaches them)."""
    rng = np.random.default_rng(d)
    z = 255
    for n in (197, 50, 49, 8, 7):
        c = rng.integers(0, 24, (2, 40, n)).astype(np.uint8)
        c[0, 0:8] = rng.integers(0, 5, (8, n))  # high planes only (weights 2^12 .. 2^10)
        c[0, 8:16] = rng.integers(16, 24, (8, n))  # low planes only
        c[0, 16:24] = z  # zero state only
        c[0, 24:32, ::3] = z
        c[1, 32:40] = np.where(rng.random((8, n)) < 0.9, z, 23)  # mostly the zero state, the smallest weight
        v = rng.integers(0, 256, (2, n, d)).astype(np.uint8)
        for mode in ROUNDING_MODES:
            for vz in (128, 7):
                r = attn_v_shift_ref(c, v, vz, 8, 12, 15, mode)
                got = attn_v_shift_fast(c, v, vz, 8, 12, 15, mode, path=path, impl=impl, out_dtype=np.int32)
                assert np.array_equal(got, r), (n, mode, vz)
        c4 = np.minimum(c, 15)  # W4A4-like: one plane per parity
        r = attn_v_shift_ref(c4, v, 7, 4, 8, 15, "half_even")
        assert np.array_equal(attn_v_shift_fast(c4, v, 7, 4, 8, 15, "half_even", path=path, impl=impl), r)


@pytest.mark.parametrize("impl", [simd.GENERIC] + ([simd.NATIVE] if simd.has_vbmi() else []))
def test_v_pack_by_permutes_equals_the_plain_pack(impl):
    from repq_hw.kernels.attn_v_shift import _PACK_V_IX, _pack_v_s8, _pack_v_s8_perm

    rng = np.random.default_rng(3)
    for d in (32, 64):
        for n in (197, 49, 12, 5, 1):
            v = rng.integers(0, 256, (3, n, d)).astype(np.uint8)
            kqn, npan = (n + 3) // 4, d // 32
            want = np.empty(npan * kqn * 128, np.int8)
            _pack_v_s8(v, 2, kqn, npan, want)
            got = np.full(npan * kqn * 128, 99, np.int8)  # every byte must be written
            _pack_v_s8_perm(impl, v, 2, kqn, got, _PACK_V_IX)
            assert np.array_equal(got, want), (d, n)


@pytest.mark.parametrize(("path", "impl"), FAST_VARIANTS)
def test_attn_v_fast_errors_are_the_references(path, impl):
    ok_v = np.zeros((1, 3, 2), np.uint8)
    cases = [
        (np.full((1, 1, 3), 20, np.uint8), ok_v, 0, 8, 2),  # would be truncated
        (np.array([[[0, 9, 1]]], np.uint8), ok_v, 0, 3, 8),  # code above Z
        (np.zeros((1, 1, 3), np.uint8), ok_v, 0, 3, 62),  # headroom
        (np.zeros((1, 1, 3), np.int16), ok_v, 0, 3, 2),  # dtype
    ]
    for c, v, vz, bits, f in cases:
        with pytest.raises((ValueError, OverflowError)) as e_ref:
            attn_v_shift_ref(c, v, vz, bits, f, 15, "half_even")
        with pytest.raises(type(e_ref.value), match=str(e_ref.value).split(":")[0]):
            attn_v_shift_fast(c, v, vz, bits, f, 15, "half_even", path=path, impl=impl)


def test_attn_v_fast_real_model_inputs():
    """The codes and values a lowered test model's attention produces (every block, W8A8 and W4A4)."""
    import torch

    from repq_hw.emu.execute import run_graph
    from repq_hw.fidelity import input_codes
    from repq_hw.ir.ops import Op
    from tests.conftest import lowered

    for bits in (8, 4):
        qm, g, _ = lowered("test_deit", bits)
        x = input_codes(qm, torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(bits)))
        env = run_graph(g, x, backend="ref", keep_all=True)
        nodes = [n for n in g.nodes if n.op == Op.ATTN_V]
        assert nodes
        for node in nodes:
            a = node.attrs
            cc, vv = env[node.inputs[0]], env[node.inputs[1]]
            b, h, n, n2 = cc.shape
            c3, v3 = cc.reshape(b * h, n, n2).astype(np.uint8), vv.reshape(b * h, n2, -1).astype(np.uint8)
            args = (int(a["v_zp"]), int(a["bits"]), int(a["shift_frac"]), int(a["sqrt2_frac_bits"]), a["rounding"])
            r = attn_v_shift_ref(c3, v3, *args)
            assert np.array_equal(r.reshape(env[node.outputs[0]].shape), env[node.outputs[0]])
            for path, impl in FAST_VARIANTS:
                assert np.array_equal(attn_v_shift_fast(c3, v3, *args, path=path, impl=impl), r), (path, impl)


def test_attn_v_path_follows_the_gemm_switch():
    from repq_hw.kernels import gemm_vnni as G

    for gp, ap in (("vnni", "vnni"), ("u8s8", "i16"), ("i16", "i16"), ("f32", "i16"), ("portable", "portable")):
        with G.force_path(gp):
            assert attn_v_path() == ap
    assert attn_v_path() in AV_PATHS
    with pytest.raises(ValueError):
        attn_v_path("nope")


@pytest.mark.parametrize("impl", [simd.GENERIC] + ([simd.NATIVE] if simd.has_vbmi() else []))
def test_byte_primitives_match_their_definition(impl):
    from numba import njit

    from repq_hw.kernels.simd import (
        hsum32,
        keep_first_u8,
        load16,
        max_u8,
        min_u8,
        permb,
        sad_u8,
        store16,
        xor32,
        zero_where_u8,
    )

    @njit
    def run(tag, t, x, y, cnt, fill, zb, o1, o2, o3, o4, o5, o6, o7):
        store16(o1, 0, permb(tag, load16(t, 0), load16(x, 0)))
        s = sad_u8(tag, load16(x, 0))
        store16(o2, 0, s)
        store16(o3, 0, max_u8(load16(x, 0), load16(y, 0)))
        store16(o4, 0, keep_first_u8(load16(x, 0), cnt, fill))
        store16(o5, 0, zero_where_u8(load16(x, 0), zb))
        store16(o6, 0, min_u8(load16(x, 0), load16(y, 0)))
        store16(o7, 0, xor32(load16(x, 0), load16(y, 0)))
        return hsum32(s)

    rng = np.random.default_rng(9)
    for cnt in (0, 1, 5, 63, 64):
        t, x, y = (rng.integers(0, 256, 64, dtype=np.uint8) for _ in range(3))
        x[:3] = 200
        o1, o3, o4, o5, o6, o7 = (np.zeros(64, np.uint8) for _ in range(6))
        o2 = np.zeros(16, np.int32)
        tot = run(impl, t, x, y, cnt, 77, 200, o1, o2, o3, o4, o5, o6, o7)
        assert np.array_equal(o6, np.minimum(x, y)) and np.array_equal(o7, x ^ y)
        assert np.array_equal(o1, t[x & 63])
        assert np.array_equal(o2.view(np.int64), x.astype(np.int64).reshape(8, 8).sum(1))
        assert tot == int(x.astype(np.int64).sum())
        assert np.array_equal(o3, np.maximum(x, y))
        assert np.array_equal(o4, np.where(np.arange(64) < cnt, x, 77))
        assert np.array_equal(o5, np.where(x == 200, 0, x))
