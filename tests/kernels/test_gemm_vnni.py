"""The fast GEMM kernels (kernels/gemm_vnni.py, gemm_pack.py, simd.py) equal the numpy references bit for bit.

Every path is run here whatever the CPU: a path whose instructions the CPU lacks (e.g. VNNI on an AVX2
machine) runs the same kernel with the portable LLVM twins of its instructions (simd.GENERIC).
"""

from __future__ import annotations

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from repq_hw.kernels import gemm_vnni as G
from repq_hw.kernels import simd
from repq_hw.kernels.gemm import bmm_zp_ref, gemm_zp_ref
from repq_hw.kernels.gemm_pack import f32_chunk, pack_gemm, u8s8_period

PATHS = list(G.PATHS)


def rand_case(rng, m, k, n, bits=8, zp_lo=None, zp_hi=None):
    hi = (1 << bits) - 1
    a = rng.integers(0, hi + 1, (m, k), dtype=np.uint8)
    w = rng.integers(0, hi + 1, (n, k), dtype=np.uint8)
    wz = rng.integers(zp_lo if zp_lo is not None else 0, (zp_hi if zp_hi is not None else hi) + 1, n)
    az = int(rng.integers(0, hi + 1))
    bias = rng.integers(-5000, 5000, n)
    return a, az, w, wz, bias


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("m,k,n,bits", [
    (1, 1, 1, 8), (7, 5, 3, 8), (13, 37, 33, 4), (6, 8, 16, 8), (31, 130, 47, 8), (9, 12, 40, 3),
    (17, 3, 65, 8), (8, 4, 32, 8), (5, 1, 17, 2), (50, 64, 70, 4), (3, 1030, 5, 8),
])
def test_gemm_paths_equal_reference(path, m, k, n, bits):
    """K not a multiple of 2/4, M/N not multiples of the tiles, tiny and long K."""
    rng = np.random.default_rng(m * 1000 + k * 10 + n)
    a, az, w, wz, bias = rand_case(rng, m, k, n, bits)
    assert np.array_equal(G.gemm_zp_fast(a, az, w, wz, bias, path=path), gemm_zp_ref(a, az, w, wz, bias))


@pytest.mark.parametrize("path", PATHS)
def test_extreme_codes_and_zero_points(path):
    """Codes 0 and 255 everywhere, zero points at and beyond the code range, no bias."""
    for fill_a, fill_w in ((0, 0), (255, 255), (0, 255), (255, 0)):
        for az, wz in ((0, 0), (255, 255), (128, 0), (-3, 260), (300, -40)):
            a = np.full((9, 21), fill_a, np.uint8)
            w = np.full((19, 21), fill_w, np.uint8)
            wzv = np.full(19, wz)
            r = gemm_zp_ref(a, az, w, wzv, None)
            assert np.array_equal(G.gemm_zp_fast(a, az, w, wzv, None, path=path), r), (fill_a, fill_w, az, wz)


@pytest.mark.parametrize("path", PATHS)
def test_huge_zero_points_fall_back_exactly(path):
    """Zero points that break the int32 proof go to the int64 kernel: same result, same OverflowError."""
    a = np.array([[255, 0, 7]], np.uint8)
    w = np.array([[1, 2, 3], [255, 255, 0]], np.uint8)
    for az, wz in ((100000, [0, 5]), (0, [-(1 << 20), 1 << 20])):
        assert np.array_equal(G.gemm_zp_fast(a, az, w, wz, [1, -1], path=path), gemm_zp_ref(a, az, w, wz, [1, -1]))
    with pytest.raises(OverflowError, match="does not fit int32"):
        G.gemm_zp_fast(np.array([[255]], np.uint8), -(1 << 31), np.array([[255]], np.uint8), [0], [0], path=path)
    with pytest.raises(ValueError, match="K mismatch"):
        G.gemm_zp_fast(np.zeros((1, 2), np.uint8), 0, np.zeros((1, 3), np.uint8), [0], None, path=path)


@settings(max_examples=40, deadline=None)
@given(m=st.integers(1, 20), k=st.integers(1, 70), n=st.integers(1, 40), bits=st.sampled_from([2, 4, 6, 8]),
       seed=st.integers(0, 2**32 - 1), path=st.sampled_from(PATHS))
def test_gemm_hypothesis(m, k, n, bits, seed, path):
    rng = np.random.default_rng(seed)
    a, az, w, wz, bias = rand_case(rng, m, k, n, bits, zp_lo=-20, zp_hi=(1 << bits) + 20)
    assert np.array_equal(G.gemm_zp_fast(a, az, w, wz, bias, path=path), gemm_zp_ref(a, az, w, wz, bias))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("nb,m,k,n", [(1, 1, 1, 1), (2, 7, 5, 9), (3, 20, 64, 33), (2, 197 // 4, 64, 49)])
def test_bmm_paths_equal_reference(path, nb, m, k, n):
    rng = np.random.default_rng(nb + m + k + n)
    a = rng.integers(0, 256, (nb, m, k), dtype=np.uint8)
    b = rng.integers(0, 256, (nb, n, k), dtype=np.uint8)
    for za, zb in ((int(rng.integers(0, 256)), int(rng.integers(0, 256))), (0, 0), (255, 128), (-7, 300)):
        assert np.array_equal(G.bmm_zp_fast(a, za, b, zb, path=path), bmm_zp_ref(a, za, b, zb)), (za, zb)


def test_bmm_overflow_errors_are_the_references():
    z = np.zeros((1, 1, 1), np.uint8)
    with pytest.raises(OverflowError, match="does not fit int32"):
        G.bmm_zp_fast(z, 65536, z, 65536)
    with pytest.raises(OverflowError, match="headroom"):
        G.bmm_zp_fast(np.zeros((1, 1, 2), np.uint8), 2147483647, np.zeros((1, 1, 2), np.uint8), -2147483648)


# q.k^T on the vnni path: the kernel itself, with both implementation tags (GENERIC runs anywhere)
BMM_TAGS = [simd.GENERIC] + ([simd.NATIVE] if simd.has_vnni512() else [])


def bmm_vnni(tag, a, za, b, zb):
    off = G.bmm_vnni_offset(a.shape[2], za, zb)
    assert off is not None
    out = np.full((a.shape[0], a.shape[1], b.shape[1]), -12345, dtype=np.int32)  # no element left unwritten
    G._bmm_vnni(tag, a, za, b, zb, off, out)
    return out


@pytest.mark.parametrize("tag", BMM_TAGS, ids=lambda t: t.name)
@pytest.mark.parametrize("nb,m,k,n", [
    (1, 1, 64, 1), (1, 1, 1, 1), (2, 3, 64, 7), (1, 8, 64, 16), (1, 9, 64, 17), (1, 7, 64, 31), (1, 16, 64, 32),
    (2, 17, 64, 33), (1, 8, 64, 48), (1, 24, 128, 49), (1, 13, 192, 63), (3, 197 // 3, 64, 197 // 3),
    (1, 20, 5, 40), (1, 11, 63, 70), (2, 10, 12, 15), (1, 40, 32, 64), (1, 5, 0, 9)])
def test_bmm_vnni_kernel_equals_reference(tag, nb, m, k, n):
    """Every remainder of rows (8-row blocks) and columns (32 / 16 panels, the overlapping last panel, the
    clipped small ones), K on the transposing packer (multiple of 64) or the plain one (any K, also not a
    multiple of 4), zero points on both sides of 128 (row term on) and 128 itself (row term off)."""
    rng = np.random.default_rng(nb * 1000 + m * 100 + k + n)
    a = rng.integers(0, 256, (nb, m, k), dtype=np.uint8)
    b = rng.integers(0, 256, (nb, n, k), dtype=np.uint8)
    for za, zb in ((int(rng.integers(0, 256)), int(rng.integers(0, 256))), (0, 0), (255, 255), (0, 255),
                   (255, 0), (128, 128), (-300, 7), (77, -2)):
        assert np.array_equal(bmm_vnni(tag, a, za, b, zb), bmm_zp_ref(a, za, b, zb)), (za, zb)


@pytest.mark.parametrize("tag", BMM_TAGS, ids=lambda t: t.name)
def test_bmm_vnni_extreme_codes(tag):
    """All-0 and all-255 operands (the largest products of either sign) at DeiT-S head shapes."""
    shape = (2, 197, 64)
    for av, bv in ((0, 0), (255, 255), (0, 255), (255, 0)):
        a = np.full(shape, av, np.uint8)
        b = np.full(shape, bv, np.uint8)
        b[1, ::3] = 255 - bv  # a second pattern in the second head
        for za, zb in ((0, 0), (255, 255), (0, 255), (255, 0), (128, 127)):
            assert np.array_equal(bmm_vnni(tag, a, za, b, zb), bmm_zp_ref(a, za, b, zb)), (av, bv, za, zb)


@settings(max_examples=40, deadline=None)
@given(nb=st.integers(1, 3), m=st.integers(1, 40), k=st.sampled_from([1, 3, 4, 8, 61, 64, 128]),
       n=st.integers(1, 80), za=st.integers(0, 255), zb=st.integers(0, 255), seed=st.integers(0, 2**31))
def test_bmm_vnni_hypothesis(nb, m, k, n, za, zb, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (nb, m, k), dtype=np.uint8)
    b = rng.integers(0, 256, (nb, n, k), dtype=np.uint8)
    ref = bmm_zp_ref(a, za, b, zb)
    for tag in BMM_TAGS:
        assert np.array_equal(bmm_vnni(tag, a, za, b, zb), ref)


def test_bmm_vnni_thread_count_does_not_change_results():
    rng = np.random.default_rng(11)
    a = rng.integers(0, 256, (5, 50, 64), dtype=np.uint8)
    b = rng.integers(0, 256, (5, 45, 64), dtype=np.uint8)
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = G.bmm_zp_fast(a, 100, b, 31, path="vnni")
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = G.bmm_zp_fast(a, 100, b, 31, path="vnni")
    finally:
        numba.set_num_threads(old)
    assert np.array_equal(one, two)
    assert np.array_equal(one, bmm_zp_ref(a, 100, b, 31))


def test_qk_panels_cover_every_column():
    for nn in range(1, 140):
        cs, w = G._qk_panels(nn)
        covered = np.zeros(nn, np.int64)
        for c0, wd in zip(cs, w, strict=True):
            assert wd in (16, 32) and 0 <= c0 < nn
            stored = min(wd, nn - c0)
            assert stored == wd or nn < 16  # clipped stores only where nn is smaller than any panel
            covered[c0:c0 + stored] += 1
        assert covered.min() == 1 and covered.max() <= 2  # every column, at most once recomputed
        assert sum(w) - nn < 32  # at most one panel's worth of extra work


def test_tr16_flip_is_a_transpose_with_xor():
    from numba import njit

    @njit
    def run(src, so, ss, dst, do, ds):
        G._tr16_flip(src, so, ss, dst, do, ds)

    rng = np.random.default_rng(12)
    src = rng.integers(0, 256, 16 * 100 + 8, dtype=np.uint8)
    dst = np.zeros(15 * 136 + 64 + 9, dtype=np.int8)
    run(src, 5, 100, dst, 9, 136)
    words = np.stack([src[5 + 100 * j:5 + 100 * j + 64].view(np.uint32) for j in range(16)])  # [row j, word q]
    exp = np.zeros_like(dst)
    for q in range(16):
        exp[9 + 136 * q:9 + 136 * q + 64] = (words[:, q] ^ np.uint32(0x80808080)).view(np.int8)
    assert np.array_equal(dst, exp)


@pytest.mark.parametrize("path", PATHS)
def test_thread_count_does_not_change_results(path):
    rng = np.random.default_rng(3)
    a, az, w, wz, bias = rand_case(rng, 61, 96, 75, 8)
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = G.gemm_zp_fast(a, az, w, wz, bias, path=path)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = G.gemm_zp_fast(a, az, w, wz, bias, path=path)
    finally:
        numba.set_num_threads(old)
    assert np.array_equal(one, two)
    assert np.array_equal(one, gemm_zp_ref(a, az, w, wz, bias))


def test_force_path_switch_and_selection():
    rng = np.random.default_rng(4)
    a, az, w, wz, bias = rand_case(rng, 10, 20, 30, 4)
    with G.force_path("portable"):
        assert G.choose_path(15, 15) == "portable"
        pk = G.prepare_gemm(w, wz, bias, az, 15)
        assert pk.path == "portable"
        assert np.array_equal(G.gemm_packed(a, pk), gemm_zp_ref(a, az, w, wz, bias))
    assert G.FORCE_PATH is None
    with pytest.raises(ValueError, match="unknown GEMM path"), G.force_path("avx9000"):
        pass
    auto = G.choose_path(15, 15)
    assert auto in G.available_paths()
    if simd.has_vnni512():
        assert auto == "vnni"
    elif simd.has_avx2():
        assert auto == "u8s8"  # 4-bit codes: int16 sums are exact for long runs
        assert G.choose_path(255, 255) in ("i16", "f32")
    else:
        assert auto == "portable"


def test_packed_gemm_checks_activation_bound():
    rng = np.random.default_rng(5)
    a, az, w, wz, bias = rand_case(rng, 4, 8, 8, 4)
    pk = G.prepare_gemm(w, wz, bias, az, a_max=15)
    a[0, 0] = 200
    with pytest.raises(ValueError, match="a_max"):
        G.gemm_packed(a, pk)


def test_exactness_bounds():
    # vpmaddubsw pairs: 2*15*15 = 450 -> 72 steps in int16; 8-bit codes cannot use it at all
    assert u8s8_period(15, 15) == 72
    assert u8s8_period(255, 15) == 4
    assert u8s8_period(255, 128) == 0
    # float32: chunk * 128 * 255 <= 2^24
    assert f32_chunk(128, 255) == (1 << 24) // (128 * 255)
    # vnni: weights whose (w - zw) leaves int8 are shifted by 128 and pay a row-sum term
    w = np.array([[0, 255], [100, 110]], np.uint8)
    pk = pack_gemm(w, [0, 105], None, 7, "vnni")
    assert pk.safe and pk.use_rowsum and list(pk.e[:2]) == [128, 0]
    # int32 proof fails for absurd zero points
    assert not pack_gemm(w, [0, 0], None, 1 << 24, "i16").safe


@pytest.mark.parametrize("impl", [simd.GENERIC] + ([simd.NATIVE] if simd.has_avx2() else []))
def test_simd_primitives_match_their_definition(impl):
    from numba import njit

    from repq_hw.kernels.simd import load8, madd_i16, madd_u8s8, store8, widen16

    @njit
    def run(tag, a, b, o1, o2, o3):
        store8(o1, 0, madd_i16(tag, load8(a, 0), load8(b, 0)))
        store8(o2, 0, madd_u8s8(tag, load8(a, 0), load8(b, 0)))
        store8(o3, 0, widen16(tag, load8(a, 0)))

    rng = np.random.default_rng(6)
    for _ in range(20):
        a = rng.integers(0, 256, 32, dtype=np.uint8)
        b = rng.integers(0, 256, 32, dtype=np.uint8)
        o1, o2, o3 = (np.zeros(8, np.int32) for _ in range(3))
        run(impl, a, b, o1, o2, o3)
        a16, b16 = a.view(np.int16).astype(np.int64), b.view(np.int16).astype(np.int64)
        assert np.array_equal(o1, (a16 * b16).reshape(8, 2).sum(1).astype(np.int32))
        pairs = (a.astype(np.int64) * b.view(np.int8)).reshape(16, 2).sum(1)
        assert np.array_equal(o2.view(np.int16), np.clip(pairs, -32768, 32767).astype(np.int16))
        assert np.array_equal(o3, a16.reshape(8, 2).sum(1).astype(np.int32))


def test_dpbusd_generic_matches_definition():
    from numba import njit

    from repq_hw.kernels.simd import dpbusd, load16, store16

    @njit
    def run(tag, acc, a, b, out):
        store16(out, 0, dpbusd(tag, load16(acc, 0), load16(a, 0), load16(b, 0)))

    rng = np.random.default_rng(7)
    acc = rng.integers(-(1 << 31), 1 << 31, 16).astype(np.int32)
    a = rng.integers(0, 256, 64, dtype=np.uint8)
    b = rng.integers(-128, 128, 64).astype(np.int8)
    out = np.zeros(16, np.int32)
    tags = [simd.GENERIC] + ([simd.NATIVE] if simd.has_vnni512() else [])
    for tag in tags:
        run(tag, acc, a, b, out)
        exp = (acc.astype(np.int64) + (a.astype(np.int64) * b).reshape(16, 4).sum(1) + (1 << 31)) % (1 << 32) - (1 << 31)
        assert np.array_equal(out, exp.astype(np.int32))


def test_vnni_intrinsic_compiles_to_vpdpbusd():
    """The native VNNI code path emits vpdpbusd for an AVX-512 VNNI CPU (checked by cross-compiling the
    intrinsic's LLVM IR for znver4, so it is verified even where it cannot run)."""
    import llvmlite.binding as ll
    from llvmlite import ir

    ll.initialize_native_target()
    ll.initialize_native_asmprinter()
    m = ir.Module()
    m.triple = ll.get_default_triple()
    v16 = ir.VectorType(ir.IntType(32), 16)
    f = ir.Function(m, ir.FunctionType(v16, [v16, v16, v16]), "f")
    b = ir.IRBuilder(f.append_basic_block())
    dp = ir.Function(m, ir.FunctionType(v16, [v16, v16, v16]), "llvm.x86.avx512.vpdpbusd.512")
    b.ret(b.call(dp, list(f.args)))
    mod = ll.parse_assembly(str(m))
    mod.verify()
    tm = ll.Target.from_default_triple().create_target_machine(cpu="znver4", features="", opt=2)
    assert "vpdpbusd" in tm.emit_assembly(mod)
