"""The fast backend's prepared plan (emu/fast.py; each op's fast kernel in kernels/<op>.py, kernels/fused.py, kernels/gemm_vnni.py) equals the
numpy reference on every tensor, with the fast paths on, forced onto each GEMM path, and switched off."""

from __future__ import annotations

import os

import numba
import numpy as np
import pytest
import torch

from repq_hw.emu import fast
from repq_hw.emu.execute import run_graph
from repq_hw.fidelity import input_codes
from repq_hw.ir.ops import Op
from repq_hw.kernels import fast_ops as F
from repq_hw.kernels import gemm_vnni as G
from repq_hw.kernels.attn_v_shift import attn_v_shift_ref
from repq_hw.kernels.layernorm import layernorm_requant_ref
from repq_hw.kernels.log2_code import log2_code_ref, log2_thresholds
from repq_hw.kernels.lut import lut_lookup_ref
from repq_hw.kernels.rounding import ROUNDING_MODES, requantize_ref
from repq_hw.kernels.softmax import softmax_ref
from tests.conftest import lowered


def assert_all_equal(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert np.array_equal(a[k], b[k]), f"tensor {k} differs"


def codes_for(name, bits, n=5, seed=0):
    q, g, _ = lowered(name, bits)
    x = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    return g, input_codes(q, x)


@pytest.mark.parametrize("name", ["test_vit", "test_deit"])
@pytest.mark.parametrize("bits", [8, 6, 4])
def test_fast_plan_equals_reference_on_every_tensor(name, bits):
    g, codes = codes_for(name, bits, seed=bits)
    ref = run_graph(g, codes, "ref", keep_all=True)
    assert_all_equal(ref, run_graph(g, codes, "fast", keep_all=True))
    out = run_graph(g, codes, "fast")
    assert out.keys() == set(g.outputs)
    for k in g.outputs:
        assert np.array_equal(out[k], ref[k])


@pytest.mark.parametrize("path", G.PATHS)
def test_every_forced_gemm_path_equals_reference(path):
    g, codes = codes_for("test_deit", 8, seed=11)
    ref = run_graph(g, codes, "ref", keep_all=True)
    with G.force_path(path):
        plan = fast.prepare(g)
        assert set(plan.gemm_paths().values()) <= {path}
        assert_all_equal(ref, run_graph(g, codes, "fast", keep_all=True))
    assert fast.prepare(g).key[0] is None  # the forced path is part of the plan's key: rebuilt after


def test_fast_paths_switched_off_equal_reference():
    g, codes = codes_for("test_vit", 4, seed=3)
    ref = run_graph(g, codes, "ref", keep_all=True)
    old = fast.ENABLED
    try:
        fast.ENABLED = False
        assert_all_equal(ref, run_graph(g, codes, "fast", keep_all=True))
    finally:
        fast.ENABLED = old


def test_extreme_input_codes():
    g, _ = codes_for("test_deit", 8)
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
    codes[0] = 0
    codes[1] = 255
    assert_all_equal(run_graph(g, codes, "ref", keep_all=True), run_graph(g, codes, "fast", keep_all=True))


def test_thread_count_does_not_change_results(numba_threads):
    g, codes = codes_for("test_deit", 6, n=7, seed=2)
    numba_threads(1)
    one = run_graph(g, codes, "fast", keep_all=True)
    numba_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    two = run_graph(g, codes, "fast", keep_all=True)
    assert_all_equal(one, two)


def test_plan_is_cached_and_follows_constant_replacement():
    g, codes = codes_for("test_vit", 8, seed=4)
    p1 = fast.prepare(g)
    assert fast.prepare(g) is p1
    assert p1.packed_bytes > 0 and p1.gemm_paths()
    node = next(n for n in g.nodes if n.op.value == "gemm")
    name = node.consts["bias"]
    old = g.constants[name]
    try:
        g.constants[name] = (old.astype(np.int64) + 7).astype(old.dtype)
        assert fast.prepare(g) is not p1  # replaced array: repacked
        assert_all_equal(run_graph(g, codes, "ref", keep_all=True), run_graph(g, codes, "fast", keep_all=True))
    finally:
        g.constants[name] = old


def test_progress_and_outputs_unchanged():
    g, codes = codes_for("test_vit", 6)
    seen = []
    run_graph(g, codes, "fast", progress=lambda n: seen.append(n.name))
    assert seen == [n.name for n in g.nodes]


# --- fast_ops kernels against their references on random and edge inputs -------------------------


@pytest.mark.parametrize("mode", ROUNDING_MODES)
def test_requant_fast(mode):
    rng = np.random.default_rng(ROUNDING_MODES.index(mode))
    c = 37
    # 1800 rows: above PARALLEL_MIN_ELEMENTS, so the threaded kernel runs too (checked below)
    acc = rng.integers(-(1 << 31), 1 << 31, (1800, c)).astype(np.int32)
    assert acc.size >= F.PARALLEL_MIN_ELEMENTS and acc[:23].size < F.PARALLEL_MIN_ELEMENTS
    acc[0] = -(1 << 31)
    acc[1] = (1 << 31) - 1
    acc[2] = 0
    mult = rng.integers(-(1 << 31) + 1, 1 << 31, c)
    shift = rng.integers(0, 63, c)
    shift[:4] = [0, 1, 62, 31]
    off = rng.integers(-(1 << 60), 1 << 60, c)
    for lo, hi, zp, dt in ((0, 255, 7, np.uint8), (-32768, 32767, -5, np.int16), (-(1 << 31), (1 << 31) - 1, 0, np.int32)):
        rc = F.RequantConsts.make(c, mult, shift, off, zp, lo, hi, mode)
        want = requantize_ref(acc, mult, shift, off, zp, lo, hi, mode, dt)
        assert np.array_equal(F.requant_fast(acc, rc, dt), want)  # threaded
        assert np.array_equal(F.requant_fast(acc[:23], rc, dt), want[:23])  # serial
    # ties: small shifts over every residue
    x = np.arange(-64, 65, dtype=np.int32)[:, None].repeat(3, 1)
    rc = F.RequantConsts.make(3, [1, 1, 1], [1, 2, 3], [0, 0, 0], 0, -100, 100, mode)
    assert np.array_equal(F.requant_fast(x, rc, np.int32), requantize_ref(x, 1, [1, 2, 3], 0, 0, -100, 100, mode))
    assert F.RequantConsts.make(2, [1, 1], [0, 0], [1 << 62, 0], 0, 0, 1, mode) is None  # unproven: fallback


@pytest.mark.parametrize("mode", ROUNDING_MODES)
def test_softmax_fast(mode):
    rng = np.random.default_rng(1)
    x = rng.integers(-(1 << 20), 1 << 20, (3, 5, 41)).astype(np.int32)
    x[0, 0] = 0
    x[0, 1, :] = 12345  # a constant row: exact ties in the division
    x[1, 0, 0] = (1 << 31) - 1
    x[1, 0, 1] = -(1 << 31)
    for m, s, fb, e, p in ((1 << 30, 35, 10, 22, 16), (123456789, 20, 8, 30, 22), (5, 0, 0, 1, 1)):
        r = softmax_ref(x, m, s, fb, e, p, mode)
        assert np.array_equal(F.softmax_fast(x, m, s, fb, e, p, mode), r), (m, s, fb, e, p)
    assert F.softmax_fast(x, 1, 1, 4, 30, 31, mode) is None  # E + P > 52: fallback


def test_log2_code_table_is_the_reference():
    t = log2_thresholds(0.37, 4, 16, 15)
    table = F.log2_code_table(t, 4, 17)
    p = np.random.default_rng(2).integers(0, 1 << 17, 5000).astype(np.uint32)
    assert np.array_equal(F.table_lookup(p, table, np.uint8), log2_code_ref(p, t, 4))
    assert F.table_lookup(np.array([1 << 17], np.uint32), table, np.uint8) is None


def test_lookup_fast_and_sat_add():
    table = np.arange(-8, 120)
    x = np.random.default_rng(3).integers(-10, 118, (4, 9)).astype(np.int16)
    assert np.array_equal(F.lookup_fast(x, table, -10, np.int8), lut_lookup_ref(x, table, -10).astype(np.int8))
    assert F.lookup_fast(np.array([200], np.int16), table, -10, np.int8) is None
    # large inputs take the threaded kernel: same values, and one bad index anywhere still refuses
    big = np.random.default_rng(4).integers(-10, 118, 3 * F.PARALLEL_MIN_ELEMENTS + 5).astype(np.int16)
    assert np.array_equal(F.lookup_fast(big, table, -10, np.int8), lut_lookup_ref(big, table, -10).astype(np.int8))
    big[-1] = 500
    assert F.lookup_fast(big, table, -10, np.int8) is None
    a = np.array([32767, -32768, 5, -7], np.int16)
    b = np.array([1, -1, 6, 3], np.int16)
    assert np.array_equal(F.sat_add(a, b, -32768, 32767, np.int16), np.array([32767, -32768, 11, -4], np.int16))


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32])
@pytest.mark.parametrize("shape, p", [((2, 3, 8, 8), 4), ((3, 1, 6, 10), 2), ((1, 2, 5, 5), 5), ((2, 3, 4, 4), 1)])
def test_patchify_fast_equals_the_reference(dtype, shape, p):
    from repq_hw.kernels.patchify import patchify_fast, patchify_ref

    info = np.iinfo(dtype)
    x = np.random.default_rng(sum(shape) + p).integers(info.min, info.max, shape, endpoint=True).astype(dtype)
    want = patchify_ref(x, p)
    got = patchify_fast(x, p)
    assert got.dtype == want.dtype and np.array_equal(got, want)
    # the definition itself: column c*p*p + ky*p + kx of row gy*(W/p) + gx is x[c, gy*p + ky, gx*p + kx]
    b, c, hh, ww = shape
    i, gy, gx, ch, ky, kx = b - 1, hh // p - 1, 0, c - 1, p - 1, p // 2
    assert want[i, gy * (ww // p) + gx, ch * p * p + ky * p + kx] == x[i, ch, gy * p + ky, gx * p + kx]


@pytest.mark.parametrize("tiles", [1, 3, 8])
def test_sat_add_tiled_equals_the_executor(tiles):
    """add_const's fast kernel against the executor's numpy definition (run_node), saturating at int32 and
    int16, with the constant tiled over axis 0 as Swin's bias/mask is over the windows."""
    from repq_hw.emu.execute import run_node
    from repq_hw.ir.graph import Graph, IntType, Node, TensorInfo
    from repq_hw.kernels.add import sat_add_tiled

    rng = np.random.default_rng(tiles)
    for bits in (16, 32):
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        v = rng.integers(lo, hi, (2, 5, 5), endpoint=True)
        x = rng.integers(lo, hi, (3, 2 * tiles, 5, 5), endpoint=True)
        x[0, 0, 0, 0], v[0, 0, 0] = hi, hi  # saturates high
        x[1, 0, 0, 1], v[0, 0, 1] = lo, lo  # saturates low
        t = IntType(True, bits, x.shape[1:])
        g = Graph([Node("n", Op.ADD_CONST, ["x"], ["y"], {}, {"value": "v"})],
                  {"x": TensorInfo("x", t), "y": TensorInfo("y", t)}, ["x"], ["y"],
                  {"v": v.astype(t.storage)}, {"v": IntType(True, bits, v.shape)})
        want = run_node(g, g.nodes[0], [x.astype(t.storage)], "ref")
        got = sat_add_tiled(x.astype(t.storage), v.astype(t.storage), lo, hi, t.storage)
        assert got.dtype == want.dtype and np.array_equal(got, want)
    assert sat_add_tiled(np.zeros((1, 5, 2), np.int32), np.zeros((2, 2), np.int32), 0, 1, np.int32) is None


@pytest.mark.parametrize("mode", ROUNDING_MODES)
def test_layernorm_requant_fast(mode):
    rng = np.random.default_rng(4)
    c = 48
    x = rng.integers(-30000, 30000, (17, c)).astype(np.int16)
    x[0] = 5  # constant row (sigma from eps only)
    x[1, :] = 0
    mult = rng.integers(-(1 << 30), 1 << 30, c)
    shift = rng.integers(10, 40, c)
    off = rng.integers(-(1 << 40), 1 << 40, c)
    for eps in (0, 12345):
        rc = F.RequantConsts.make(c, mult, shift, off, 3, 0, 255, mode)
        got = F.layernorm_requant_fast(x, eps, 16, rc, np.uint8)
        exp = layernorm_requant_ref(x, eps, 16, mult, shift, off, 3, 0, 255, mode)  # eps 0: a sigma-0 row
        assert got is not None and np.array_equal(got, exp.astype(np.uint8)), eps


@pytest.mark.parametrize("mode", ROUNDING_MODES)
def test_attn_v_fast(mode):
    rng = np.random.default_rng(5)
    for bits, f, vz in ((4, 8, 7), (8, 12, 128), (8, 12, 0)):
        z = (1 << bits) - 1
        ncodes = min(z, 24)
        c = rng.integers(0, ncodes, (3, 13, 21)).astype(np.uint8)
        c[:, :, :3] = z  # zero state
        v = rng.integers(0, 256 if bits == 8 else 16, (3, 21, 20)).astype(np.uint8)
        r = attn_v_shift_ref(c, v, vz, bits, f, 15, mode)
        assert np.array_equal(F.attn_v_fast(c, v, vz, bits, f, 15, mode), r), (bits, f, vz)
    with pytest.raises(ValueError, match="would be truncated"):
        F.attn_v_fast(np.full((1, 1, 1), 20, np.uint8), np.zeros((1, 1, 1), np.uint8), 0, 8, 2, 15, mode)


def _proc_cpuinfo_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            return next((set(ln.split(":", 1)[1].split()) for ln in f if ln.startswith("flags")), set())
    except OSError:
        return set()


def test_default_run_uses_the_cpus_own_gemm_path():
    """The kernel feature detection (LLVM's host features) agrees with the kernel's own flags in
    /proc/cpuinfo, and an unforced plan takes the best path the CPU has: VNNI where present."""
    flags = _proc_cpuinfo_flags()
    if not flags:
        pytest.skip("no /proc/cpuinfo on this system")
    from numba.core import config

    from repq_hw.kernels import simd

    if config.CPU_FEATURES is not None:
        pytest.skip("NUMBA_CPU_FEATURES / NUMBA_CPU_NAME=generic set: Numba compiles for another CPU "
                    "(test_paths_follow_numbas_target_features covers that)")

    vnni = {"avx512f", "avx512bw", "avx512_vnni"} <= flags
    assert simd.has_vnni512() == vnni
    assert simd.has_avx2() == ("avx2" in flags)
    g, _ = codes_for("test_deit", 8, seed=11)
    paths = set(fast.prepare(g).gemm_paths().values())
    if vnni:
        assert paths == {"vnni"}
    elif "avx2" in flags:
        assert paths <= {"u8s8", "i16", "f32"} and "portable" not in paths


# --- fused chains (kernels/fused.py): only where no tap is requested, same bits as unfused ---------------


@pytest.mark.parametrize("name", ["test_vit", "test_deit"])
@pytest.mark.parametrize("bits", [8, 4])
def test_fused_chains_equal_unfused_on_every_tensor_both_produce(name, bits, monkeypatch):
    g, x = codes_for(name, bits, seed=3)
    plan = fast.prepare(g)
    chains = {i: plan.fusion(i) for i in range(len(g.nodes)) if plan.fusion(i) is not None}
    assert chains, "the graph has softmax -> log2_code chains"
    ref = run_graph(g, x, backend="ref", keep_all=True)
    unfused = run_graph(g, x, backend="fast", keep_all=True)  # keep_all: never fused
    assert_all_equal(unfused, ref)
    for i, (ends, step, between) in chains.items():
        node = g.nodes[i]
        ys = step([unfused[t] for t in node.inputs + list(getattr(step, "extra_inputs", ()))])
        assert ys is not None and len(ys) == len(ends)
        for j, y in zip(ends, ys):
            last = g.nodes[j]
            assert y.dtype == ref[last.outputs[0]].dtype
            assert np.array_equal(y, ref[last.outputs[0]]), (node.name, last.name)
        assert not set(between) & set(ends)
    kinds = {(g.nodes[i].op, g.nodes[ends[-1]].op, len(ends)) for i, (ends, _, _) in chains.items()}
    if G.choose_path(255, 255) == "vnni":
        assert {(Op.GEMM, Op.ADD, 1), (Op.GEMM, Op.SPLIT_HEADS, 3), (Op.GEMM, Op.LUT, 1)} <= kinds
    assert {(Op.SOFTMAX, Op.LOG2_CODE, 1), (Op.ATTN_V, Op.REQUANT, 1)} <= kinds
    calls = []
    for fn in ("softmax_log2_code", "gemm_requant", "gemm_requant_slices", "gemm_requant_lut", "merge_heads_requant",
               "gemm_requant_add"):
        orig = getattr(fast.FU, fn)
        monkeypatch.setattr(fast.FU, fn, lambda *a, _o=orig: calls.append(1) or _o(*a))
    fused_out = run_graph(g, x, backend="fast")
    assert len(calls) == len(chains)
    assert_all_equal(fused_out, {k: ref[k] for k in g.outputs})
    calls.clear()
    run_graph(g, x, backend="fast", keep_all=True)
    assert not calls, "keep_all must disable fusion"
    for path in ("portable", "i16", "u8s8", "vnni"):  # GEMM chains on every packing but portable
        with G.force_path(path):
            plan_p = fast.prepare(g)
            chains_p = {i: c for i in range(len(g.nodes)) if (c := plan_p.fusion(i)) is not None}
            packed = set(plan_p.build_all().gemm_paths().values())  # u8s8 only where provably exact
            assert any(g.nodes[i].op == Op.GEMM for i in chains_p) == (path != "portable" and path in packed)
            calls.clear()
            assert_all_equal(run_graph(g, x, backend="fast"), fused_out)
            assert len(calls) == len(chains_p)
    calls.clear()
    monkeypatch.setattr(fast, "FUSE", False)
    assert_all_equal(run_graph(g, x, backend="fast"), fused_out)
    assert not calls


def test_softmax_log2_code_chain_edges():
    from repq_hw.kernels.fast_ops import log2_code_table
    from repq_hw.kernels.fused import softmax_log2_code

    rng = np.random.default_rng(4)
    x = rng.integers(-(1 << 20), 1 << 20, (7, 33)).astype(np.int32)
    x[0] = 5  # uniform row
    x[1, 3] = (1 << 30)  # one-hot row
    for mode in ROUNDING_MODES:
        p = softmax_ref(x, 1 << 20, 22, 8, 22, 16, mode)
        th = log2_thresholds(1.0, 4, 16, 15)
        table = log2_code_table(th, 4, 17)
        got = softmax_log2_code(x, 1 << 20, 22, 8, 22, 16, mode, table, np.uint8)
        assert np.array_equal(got, log2_code_ref(p, th, 4))
    assert softmax_log2_code(x, 1 << 20, 22, 8, 22, 16, "half_even", table[:5], np.uint8) is None  # table miss
    assert softmax_log2_code(x.astype(np.int64), 1 << 20, 22, 8, 22, 16, "half_even", table, np.uint8) is None


CHAIN_CASES = ([("generic", p) for p in ("vnni", "u8s8", "i16")]
               + ([("native", "vnni")] if G.simd.has_vnni512() else [])
               + ([("native", "u8s8"), ("native", "i16")] if G.simd.has_avx2() else []))
"""(tile implementation, GEMM packing) of the GEMM chain tests: every packing with chain tiles, on its portable
twin everywhere and natively where the CPU has it."""


def _chain_packing(rng, n, k, a_zp, path, bias=None):
    """(weights, weight zero points, packing) for a chain test on ``path``; u8s8 gets weights within +-40 of
    their zero point (its int16 sums are then provably exact, so the packing exists)."""
    if path == "u8s8":
        wz = rng.integers(40, 216, n)
        w = np.clip(wz[:, None] + rng.integers(-40, 41, (n, k)), 0, 255).astype(np.uint8)
    else:
        w, wz = rng.integers(0, 256, (n, k), dtype=np.uint8), rng.integers(0, 256, n)
    pk = G.prepare_gemm(w, wz, bias, a_zp, 255, path=path)
    assert pk is not None and pk.path == path
    return w, wz, pk


def _chain_tiles(impl, monkeypatch):
    """impl "generic": the GEMM chains' tiles run through the portable twin of every SIMD intrinsic."""
    if impl == "generic":
        import repq_hw.kernels.fused as FUm

        monkeypatch.setattr(G, "_tag", lambda path: G.simd.GENERIC)
        monkeypatch.setattr(FUm, "_tag", lambda path: G.simd.GENERIC)


@pytest.mark.parametrize("impl, path", CHAIN_CASES)
def test_gemm_requant_chain_equals_reference(impl, path, monkeypatch):
    """The fused GEMM -> requantize on each packing (its generic twin everywhere) equals the two references,
    with row tails, every rounding mode, a row-sum term and per-channel constants."""
    from repq_hw.kernels.fused import gemm_requant
    from repq_hw.kernels.gemm import gemm_zp_ref

    _chain_tiles(impl, monkeypatch)
    rng = np.random.default_rng(12)
    for m, k, n in ((13, 20, 37), (64, 384, 96), (1, 4, 1)):
        x = rng.integers(0, 256, (m, k), dtype=np.uint8)
        bias = rng.integers(-(1 << 16), 1 << 16, n).astype(np.int32)
        w, wz, pk = _chain_packing(rng, n, k, 9, path, bias)
        acc = gemm_zp_ref(x, 9, w, wz, bias)
        for mode in ROUNDING_MODES:
            mult = rng.integers(1, 1 << 30, n)
            shift = rng.integers(20, 40, n)
            shift[0] = 0  # s = 0: the identity shift
            for off in (rng.integers(-(1 << 40), 1 << 40, n), 0):  # with and without an offset
                rc = F.RequantConsts.make(n, mult, shift, off, 5, 0, 255, mode)
                assert rc.has_off == bool(np.any(off))
                got = gemm_requant(x, pk, rc, np.uint8)
                exp = requantize_ref(acc, mult, shift, off, 5, 0, 255, mode, np.uint8)
                assert got is not None and np.array_equal(got, exp), (m, k, n, mode)


def test_gemm_requant_lut_chain_edges():
    from repq_hw.kernels.fused import gemm_requant_lut
    from repq_hw.kernels.gemm import gemm_zp_ref

    rng = np.random.default_rng(13)
    x = rng.integers(0, 256, (11, 40), dtype=np.uint8)
    w = rng.integers(0, 256, (70, 40), dtype=np.uint8)
    mult, shift = rng.integers(1, 1 << 30, 70), rng.integers(24, 30, 70)
    rc = F.RequantConsts.make(70, mult, shift, 0, -3, -100, 100, "half_even")
    table = rng.integers(-30000, 30000, 201).astype(np.int16)
    wz = rng.integers(0, 256, 70)
    pk = G.prepare_gemm(w, wz, None, 4, 255, path="vnni")
    codes = requantize_ref(gemm_zp_ref(x, 4, w, wz, None), mult, shift, 0, -3, -100, 100, "half_even", np.int32)
    exp = lut_lookup_ref(codes, table, -100)
    got = gemm_requant_lut(x, pk, rc, table, -100, np.int16)
    assert got is not None and np.array_equal(got, exp.astype(np.int16))
    assert gemm_requant_lut(x, pk, rc, table[:150], -100, np.int16) is None  # an index past the table
    assert gemm_requant_lut(x, pk, rc, table, -100, np.int8) is None  # table does not fit the output


@pytest.mark.parametrize("impl, path", [c for c in CHAIN_CASES if c[0] == "generic" or G.simd.has_vbmi()])
@pytest.mark.parametrize("out_dtype", [np.uint8, np.int8])
def test_gemm_requant_lut_chain_byte_table(impl, path, out_dtype, monkeypatch):
    """The chain's byte-table lookup (lut.lookup_bytes_row; a lowered GELU: int10 codes, 2^10 entries) equals
    the references, with row tails and 64-code tails; impl "generic" runs the tiles and the lookups on their
    portable twins."""
    import repq_hw.kernels.fused as FUm
    from repq_hw.kernels.gemm import gemm_zp_ref

    _chain_tiles(impl, monkeypatch)
    monkeypatch.setattr(FUm, "LUT_BYTES_GENERIC", impl == "generic")
    calls = []
    orig = FUm._chain_requant_lut8
    monkeypatch.setattr(FUm, "_chain_requant_lut8", lambda *a: calls.append(1) or orig(*a))
    rng = np.random.default_rng(14)
    info = np.iinfo(out_dtype)
    for m, k, n in ((9, 40, 70), (40, 64, 192)):
        x = rng.integers(0, 256, (m, k), dtype=np.uint8)
        w, wz, pk = _chain_packing(rng, n, k, 4, path)
        mult, shift = rng.integers(1, 1 << 30, n), rng.integers(16 if path != "u8s8" else 14, 22, n)
        rc = F.RequantConsts.make(n, mult, shift, 0, 3, -512, 511, "half_even")
        table = rng.integers(info.min, info.max, 1024, endpoint=True).astype(out_dtype)
        codes = requantize_ref(gemm_zp_ref(x, 4, w, wz, None), mult, shift, 0, 3, -512, 511, "half_even",
                               np.int32)
        assert codes.min() < -400 and codes.max() > 400  # the lookups use many segments
        got = FUm.gemm_requant_lut(x, pk, rc, table, -512, out_dtype)
        assert got is not None and np.array_equal(got, lut_lookup_ref(codes, table, -512))
    assert len(calls) == 2


def _split_heads_by_index(x, heads, groups):
    """[B, G*N, H*d] -> [B, G*H, N, d] written out element by element from docs/ops/data_movement.md:
    token row g*N + t, column hd*d + j goes to [g*H + hd, t, j]."""
    b, gn, c = x.shape
    n, d = gn // groups, c // heads
    y = np.empty((b, groups * heads, n, d), x.dtype)
    for g in range(groups):
        for t in range(n):
            for hd in range(heads):
                y[:, g * heads + hd, t, :] = x[:, g * n + t, hd * d:(hd + 1) * d]
    return y


@pytest.mark.parametrize("impl, path", CHAIN_CASES)
def test_gemm_requant_slices_in_heads_order(impl, path, monkeypatch):
    """The qkv chain writing split-heads order (ViT: G = 1; Swin: G windows) equals requantize then split
    heads, per slice, with row tails and every rounding mode."""
    from repq_hw.kernels.fused import gemm_requant_slices
    from repq_hw.kernels.gemm import gemm_zp_ref

    _chain_tiles(impl, monkeypatch)
    rng = np.random.default_rng(21)
    for b, groups, n, heads, d in ((3, 1, 13, 3, 8), (2, 4, 9, 2, 16), (1, 1, 1, 1, 4), (2, 3, 5, 4, 3)):
        w_ = heads * d
        m, k = b * groups * n, 24
        x = rng.integers(0, 256, (m, k), dtype=np.uint8)
        wt, wz, pk = _chain_packing(rng, 3 * w_, k, 7, path)
        acc = gemm_zp_ref(x, 7, wt, wz, None)
        for mode in ROUNDING_MODES:
            rcs, exps = [], []
            for s in range(3):
                mult, shift = rng.integers(1, 1 << 30, w_), rng.integers(18, 30, w_)
                rcs.append(F.RequantConsts.make(w_, mult, shift, 0, 3, 0, 255, mode))
                q = requantize_ref(acc[:, s * w_:(s + 1) * w_], mult, shift, 0, 3, 0, 255, mode, np.uint8)
                exps.append(_split_heads_by_index(q.reshape(b, groups * n, w_), heads, groups))
            got = gemm_requant_slices(x, pk, [0, w_, 2 * w_], w_, rcs, np.uint8, (heads, groups, n))
            assert got is not None
            for s in range(3):
                assert got[s].shape == exps[s].shape and np.array_equal(got[s], exps[s]), (b, groups, n, heads, mode, s)
    assert gemm_requant_slices(x, pk, [0], w_, rcs[:1], np.uint8, (heads, groups + 1, n)) is None  # rows do not split


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_merge_heads_requant_equals_merge_then_requantize(dtype):
    from repq_hw.kernels.fused import merge_heads_requant

    rng = np.random.default_rng(22)
    for b, groups, n, heads, d in ((2, 1, 11, 3, 8), (3, 4, 7, 2, 5), (1, 1, 1, 1, 1)):
        c = heads * d
        y = rng.integers(-(1 << 31), 1 << 31, (b, groups * heads, n, d)).astype(dtype)
        y.reshape(-1)[0], y.reshape(-1)[-1] = -(1 << 31), (1 << 31) - 1
        merged = np.empty((b, groups * n, c), np.int64)  # docs/ops/data_movement.md, element by element
        for g in range(groups):
            for t in range(n):
                for hd in range(heads):
                    merged[:, g * n + t, hd * d:(hd + 1) * d] = y[:, g * heads + hd, t, :]
        for mode in ROUNDING_MODES:
            mult, shift = rng.integers(1, 1 << 31, c), rng.integers(0, 62, c)
            off = rng.integers(-(1 << 40), 1 << 40, c)
            rc = F.RequantConsts.make(c, mult, shift, off, -5, -128, 127, mode)
            exp = requantize_ref(merged, mult, shift, off, -5, -128, 127, mode, np.int8)
            got = merge_heads_requant(y, groups, rc, np.int8)
            assert got is not None and got.dtype == np.int8 and np.array_equal(got, exp), (b, groups, mode)
    big = np.full((1, 2, 3, 4), 1 << 31, np.int64)
    big[0, 0, 0, 0] = (1 << 31) + 1  # outside the requantizer's proven input range: refused, not wrapped
    rc = F.RequantConsts.make(8, 1, 0, 0, 0, -128, 127, "half_even")
    assert merge_heads_requant(big, 1, rc, np.int8) is None
    assert merge_heads_requant(big[:, :, :, :3], 1, rc, np.int8) is None  # channel count differs from rc


@pytest.mark.parametrize("impl, path", CHAIN_CASES)
def test_gemm_requant_add_equals_requantize_then_saturating_add(impl, path, monkeypatch):
    """GEMM -> requantize -> residual add in one pass equals the references, saturating at both ends of
    the add's type (residuals at the int16 extremes), with row tails and every rounding mode."""
    from repq_hw.kernels.fused import gemm_requant_add
    from repq_hw.kernels.gemm import gemm_zp_ref

    _chain_tiles(impl, monkeypatch)
    rng = np.random.default_rng(23)
    for m, k, n in ((13, 20, 37), (64, 96, 64), (1, 4, 1)):
        x = rng.integers(0, 256, (m, k), dtype=np.uint8)
        w, wz, pk = _chain_packing(rng, n, k, 3, path)
        acc = gemm_zp_ref(x, 3, w, wz, None)
        res = rng.integers(-(1 << 15), 1 << 15, (m, n)).astype(np.int16)
        res.reshape(-1)[0], res.reshape(-1)[-1] = -(1 << 15), (1 << 15) - 1
        for mode in ROUNDING_MODES:
            mult, shift = rng.integers(1, 1 << 30, n), rng.integers(8, 20, n)
            rc = F.RequantConsts.make(n, mult, shift, 0, 0, -(1 << 15), (1 << 15) - 1, mode)
            q = requantize_ref(acc, mult, shift, 0, 0, -(1 << 15), (1 << 15) - 1, mode, np.int16)
            exp = np.clip(res.astype(np.int64) + q, -(1 << 15), (1 << 15) - 1).astype(np.int16)
            got = gemm_requant_add(x, pk, rc, res, -(1 << 15), (1 << 15) - 1, np.int16)
            assert got is not None and got.dtype == np.int16 and np.array_equal(got, exp), (m, n, mode)
            assert (exp == -(1 << 15)).any() or (exp == (1 << 15) - 1).any() or m == 1
    assert gemm_requant_add(x, pk, rc, res[:, :0], -10, 10, np.int16) is None  # residual shape differs
    assert gemm_requant_add(x, pk, rc, res.astype(np.uint32), -10, 10, np.int16) is None  # not an int32 value type


@pytest.mark.parametrize("features, vnni, avx2", [
    ("+avx,+avx2,+fma,-avx512f,-avx512bw,-avx512vnni", False, True),  # an AVX2-only target (Zen 1 class)
    ("", False, False),  # NUMBA_CPU_NAME=generic: no SIMD features at all
    ("+avx2,+avx512f,+avx512bw,+avx512vnni", True, True),
])
def test_paths_follow_numbas_target_features(features, vnni, avx2):
    """Where Numba is told to compile for another CPU (NUMBA_CPU_FEATURES, or NUMBA_CPU_NAME=generic), the
    kernels' paths follow that target, never the host: no instruction the target lacks is emitted."""
    import subprocess
    import sys

    code = ("from repq_hw.kernels import simd, gemm_vnni as G, attn_v_shift as AV; "
            "print(simd.has_vnni512(), simd.has_avx2(), G.choose_path(255, 255), AV.attn_v_path())")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_CPU")}
    if features == "":
        env["NUMBA_CPU_NAME"] = "generic"
    else:
        env["NUMBA_CPU_FEATURES"] = features
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    got_vnni, got_avx2, gemm_path, av_path = out.split()
    assert (got_vnni, got_avx2) == (str(vnni), str(avx2))
    want = "vnni" if vnni else ("i16" if avx2 else "portable")
    assert (gemm_path, av_path) == (want, want)
