"""SIMD building blocks for the integer GEMM kernels: LLVM vectors held in registers inside ``@njit`` code.

Plain Numba loops never produce the x86 multiply-add instructions this emulator lives on (LLVM widens
u8*s8 products to i32 lanes), so the GEMM kernels call them explicitly through
``numba.extending.intrinsic``.  A vector is a Numba type whose data model is an LLVM ``<8 x i32>``
(one 256-bit register, :data:`v8`) or ``<16 x i32>`` (one 512-bit register, :data:`v16`); the helpers
below load, broadcast, add and store them, and three multiply-add primitives combine them:

==================  =========================================================  ===================
primitive           per 32-bit lane i (exact integer semantics)                x86 instruction
==================  =========================================================  ===================
``madd_i16``        ``a16[2i]*b16[2i] + a16[2i+1]*b16[2i+1]`` (s16 x s16)      ``vpmaddwd`` (AVX2)
``madd_u8s8``       per 16-bit lane j: ``sat16(u8 a[2j]*s8 b[2j] + ...)``       ``vpmaddubsw`` (AVX2)
``dpbusd``          ``acc[i] + sum_{t<4} u8 a[4i+t] * s8 b[4i+t]`` (wraps)      ``vpdpbusd`` (AVX-512 VNNI)
==================  =========================================================  ===================

Every primitive has two code generators, chosen at compile time by the type of an *implementation tag*
argument that the kernels thread through: :data:`NATIVE` emits the x86 intrinsic, :data:`GENERIC` emits
target-independent LLVM IR with the same lane semantics (sign/zero extension, multiplication, pairwise
adds).  The generic form runs on any CPU; the tests use it to check the VNNI kernel's logic (tiling,
packing, tails, zero-point corrections) on machines without VNNI, so that only the one instruction is
trusted to do what the Intel SDM says.  The kernels only ever feed ``madd_u8s8`` operands whose pair sums
are proven to lie in int16 (see ``gemm_pack.py``), so its saturation never happens and the generic form
need not model it... but it does, to be a faithful twin.

:func:`cpu_features` reads what the host CPU has from LLVM (the same source Numba compiles for).
"""

from __future__ import annotations

import functools

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import NativeValue, intrinsic, models, register_model, typeof_impl, unbox

__all__ = [
    "GENERIC",
    "NATIVE",
    "Impl",
    "cpu_features",
    "has_avx2",
    "has_vbmi",
    "has_vnni512",
    "v8",
    "v16",
]

# ---------------------------------------------------------------------------------------------
# Types
# ---------------------------------------------------------------------------------------------


class VecType(types.Type):
    """An LLVM integer vector ``<lanes x i32>`` living in a register."""

    def __init__(self, lanes: int):
        self.lanes = lanes
        super().__init__(name=f"vec{lanes}xi32")


@register_model(VecType)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, ir.VectorType(ir.IntType(32), fe_type.lanes))


v8 = VecType(8)
"""256-bit vector (ymm)."""
v16 = VecType(16)
"""512-bit vector (zmm)."""


class Impl:
    """Implementation tag passed to the kernels: selects the code generator of every primitive."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"Impl({self.name!r})"

    def __reduce__(self):
        return (Impl, (self.name,))


class ImplType(types.Type):
    def __init__(self, name: str):
        self.impl = name
        super().__init__(name=f"SimdImpl({name})")


@typeof_impl.register(Impl)
def _typeof_impl(val, c):
    return ImplType(val.name)


register_model(ImplType)(models.OpaqueModel)


@unbox(ImplType)
def _unbox_impl(typ, obj, c):
    return NativeValue(c.context.get_constant_null(typ))


NATIVE = Impl("native")
"""Emit the x86 instructions (the caller checked :func:`cpu_features`)."""
GENERIC = Impl("generic")
"""Emit portable LLVM IR with the same lane semantics (any CPU; used by the tests)."""

# ---------------------------------------------------------------------------------------------
# CPU features
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def cpu_features() -> frozenset[str]:
    """The features Numba compiles for, as LLVM names them (``avx2``, ``avx512vnni``, ...): the host CPU's,
    or ``NUMBA_CPU_FEATURES`` where it is set (``NUMBA_CPU_NAME=generic`` implies none).  The kernels' paths
    follow it, so a cache built for another CPU (or an AVX2-only build on an AVX-512 host) never emits an
    instruction its target lacks."""
    try:
        from numba.core import config

        if config.CPU_FEATURES is not None:
            flat = config.CPU_FEATURES
        else:
            import llvmlite.binding as ll

            flat = ll.get_host_cpu_features().flatten()
        return frozenset(f.strip()[1:] for f in flat.split(",") if f.strip().startswith("+"))
    except Exception:  # pragma: no cover - no LLVM host info: assume nothing
        return frozenset()


def has_avx2() -> bool:
    return "avx2" in cpu_features()


def has_fma() -> bool:
    return "fma" in cpu_features()


def has_vnni512() -> bool:
    f = cpu_features()
    return {"avx512f", "avx512bw", "avx512vnni"} <= f


# ---------------------------------------------------------------------------------------------
# Codegen helpers
# ---------------------------------------------------------------------------------------------

_I8, _I16, _I32 = ir.IntType(8), ir.IntType(16), ir.IntType(32)


def _vt(lanes: int, bits: int = 32) -> ir.VectorType:
    return ir.VectorType(ir.IntType(bits), lanes)


def _item_ptr(context, builder, aryty, ary_val, idx):
    ary = context.make_array(aryty)(context, builder, ary_val)
    return cgutils.get_item_pointer(context, builder, aryty, ary, [idx], wraparound=False)


def _call_intrinsic(builder, name, ret, args):
    fnty = ir.FunctionType(ret, [a.type for a in args])
    fn = cgutils.get_or_insert_function(builder.module, fnty, name)
    return builder.call(fn, args)


def _splat(builder, scalar, lanes):
    vt = ir.VectorType(scalar.type, lanes)
    v = builder.insert_element(ir.Constant(vt, None), scalar, ir.Constant(_I32, 0))
    return builder.shuffle_vector(v, ir.Constant(vt, None), ir.Constant(_vt(lanes), [0] * lanes))


def _lanes(builder, v, start, step, n):
    idx = ir.Constant(_vt(n), [start + step * i for i in range(n)])
    return builder.shuffle_vector(v, v, idx)


def _check_1d(arr, what):
    if not (isinstance(arr, types.Array) and arr.ndim == 1 and arr.layout == "C"):
        raise TypeError(f"{what}: expected a 1-D contiguous array, got {arr}")


def _vec_of(v):
    if not isinstance(v, VecType):
        raise TypeError(f"expected a SIMD vector, got {v}")
    return v


# ---------------------------------------------------------------------------------------------
# Memory: load / store / broadcast / zero (unaligned; the element index is in the array's own dtype)
# ---------------------------------------------------------------------------------------------


def _make_load(vec):
    @intrinsic
    def load(typingctx, arr, idx):
        """The 4*lanes bytes starting at element ``idx`` of a 1-D contiguous array, as a vector."""
        _check_1d(arr, "load")

        def codegen(context, builder, sig, args):
            ptr = _item_ptr(context, builder, sig.args[0], args[0], args[1])
            vt = _vt(vec.lanes)
            return builder.load(builder.bitcast(ptr, vt.as_pointer()), align=1)

        return vec(arr, idx), codegen

    return load


def _make_store(vec):
    @intrinsic
    def store(typingctx, arr, idx, v):
        """Store a vector at element ``idx`` of a 1-D contiguous array (4*lanes bytes)."""
        _check_1d(arr, "store")
        _vec_of(v)

        def codegen(context, builder, sig, args):
            ptr = _item_ptr(context, builder, sig.args[0], args[0], args[1])
            builder.store(args[2], builder.bitcast(ptr, _vt(vec.lanes).as_pointer()), align=1)
            return context.get_dummy_value()

        return types.none(arr, idx, v), codegen

    return store


def _make_bcast(vec):
    @intrinsic
    def bcast32(typingctx, arr, idx):
        """The 4 bytes at element ``idx`` of a 1-D contiguous array, repeated in every 32-bit lane."""
        _check_1d(arr, "bcast32")

        def codegen(context, builder, sig, args):
            ptr = _item_ptr(context, builder, sig.args[0], args[0], args[1])
            x = builder.load(builder.bitcast(ptr, _I32.as_pointer()), align=1)
            return _splat(builder, x, vec.lanes)

        return vec(arr, idx), codegen

    return bcast32


def _make_zero(vec):
    @intrinsic
    def zero(typingctx):
        def codegen(context, builder, sig, args):
            return ir.Constant(_vt(vec.lanes), [0] * vec.lanes)

        return vec(), codegen

    return zero


def _make_splat_i32(vec):
    @intrinsic
    def splat(typingctx, x):
        """``x`` (an integer, truncated to 32 bits) in every lane."""

        def codegen(context, builder, sig, args):
            v = args[0]
            if v.type.width > 32:
                v = builder.trunc(v, _I32)
            elif v.type.width < 32:
                v = builder.sext(v, _I32)
            return _splat(builder, v, vec.lanes)

        return vec(x), codegen

    return splat


load8, store8, bcast8, zero8, splat8 = (f(v8) for f in (_make_load, _make_store, _make_bcast, _make_zero,
                                                         _make_splat_i32))
load16, store16, bcast16, zero16, splat16 = (f(v16) for f in (_make_load, _make_store, _make_bcast, _make_zero,
                                                               _make_splat_i32))


@intrinsic
def add32(typingctx, a, b):
    """Lane-wise 32-bit wrapping add."""
    _vec_of(a)

    def codegen(context, builder, sig, args):
        return builder.add(args[0], args[1])

    return a(a, b), codegen


@intrinsic
def xor32(typingctx, a, b):
    """Lane-wise bitwise exclusive or."""
    _vec_of(a)

    def codegen(context, builder, sig, args):
        return builder.xor(args[0], args[1])

    return a(a, b), codegen


@intrinsic
def add16(typingctx, a, b):
    """Lane-wise 16-bit wrapping add (the vector seen as twice as many int16 lanes)."""
    _vec_of(a)

    def codegen(context, builder, sig, args):
        n = sig.args[0].lanes
        t = _vt(2 * n, 16)
        s = builder.add(builder.bitcast(args[0], t), builder.bitcast(args[1], t))
        return builder.bitcast(s, _vt(n))

    return a(a, b), codegen


@intrinsic
def lane(typingctx, v, i):
    """Lane ``i`` (a compile-time or run-time index) as int32."""
    _vec_of(v)

    def codegen(context, builder, sig, args):
        idx = builder.trunc(args[1], _I32) if args[1].type.width > 32 else args[1]
        return builder.extract_element(args[0], idx)

    return types.int32(v, i), codegen


# ---------------------------------------------------------------------------------------------
# Multiply-add primitives
# ---------------------------------------------------------------------------------------------


def _impl_name(tag) -> str:
    if not isinstance(tag, ImplType):
        raise TypeError(f"expected a simd.Impl tag, got {tag}")
    return tag.impl


@intrinsic
def madd_i16(typingctx, tag, a, b):
    """``vpmaddwd``: lane i = a16[2i]*b16[2i] + a16[2i+1]*b16[2i+1] (signed 16-bit, exact in int32 except
    the single case (-2^15)^2 * 2, which the kernels never produce: their int16 operands are > -2^15)."""
    impl = _impl_name(tag)
    vec = _vec_of(a)

    def codegen(context, builder, sig, args):
        n = vec.lanes
        x = builder.bitcast(args[1], _vt(2 * n, 16))
        y = builder.bitcast(args[2], _vt(2 * n, 16))
        if impl == "native":
            name = {8: "llvm.x86.avx2.pmadd.wd", 16: "llvm.x86.avx512.pmaddw.d.512"}[n]
            return _call_intrinsic(builder, name, _vt(n), [x, y])
        p = builder.mul(builder.sext(x, _vt(2 * n)), builder.sext(y, _vt(2 * n)))
        return builder.add(_lanes(builder, p, 0, 2, n), _lanes(builder, p, 1, 2, n))

    return vec(tag, a, b), codegen


@intrinsic
def madd_u8s8(typingctx, tag, a, b):
    """``vpmaddubsw``: 16-bit lane j = sat16(u8 a[2j]*s8 b[2j] + u8 a[2j+1]*s8 b[2j+1])."""
    impl = _impl_name(tag)
    vec = _vec_of(a)

    def codegen(context, builder, sig, args):
        n = vec.lanes
        x = builder.bitcast(args[1], _vt(4 * n, 8))
        y = builder.bitcast(args[2], _vt(4 * n, 8))
        if impl == "native":
            name = {8: "llvm.x86.avx2.pmadd.ub.sw", 16: "llvm.x86.avx512.pmaddubs.w.512"}[n]
            r = _call_intrinsic(builder, name, _vt(2 * n, 16), [x, y])
            return builder.bitcast(r, _vt(n))
        p = builder.mul(builder.zext(x, _vt(4 * n)), builder.sext(y, _vt(4 * n)))
        s = builder.add(_lanes(builder, p, 0, 2, 2 * n), _lanes(builder, p, 1, 2, 2 * n))
        hi = ir.Constant(_vt(2 * n), [32767] * (2 * n))
        lo = ir.Constant(_vt(2 * n), [-32768] * (2 * n))
        s = builder.select(builder.icmp_signed(">", s, hi), hi, s)
        s = builder.select(builder.icmp_signed("<", s, lo), lo, s)
        return builder.bitcast(builder.trunc(s, _vt(2 * n, 16)), _vt(n))

    return vec(tag, a, b), codegen


@intrinsic
def dpbusd(typingctx, tag, acc, a, b):
    """``vpdpbusd``: lane i = acc[i] + sum_{t<4} u8 a[4i+t] * s8 b[4i+t] (wrapping int32, no saturation)."""
    impl = _impl_name(tag)
    vec = _vec_of(acc)

    def codegen(context, builder, sig, args):
        n = vec.lanes
        if impl == "native":
            name = {8: "llvm.x86.avx512.vpdpbusd.256", 16: "llvm.x86.avx512.vpdpbusd.512"}[n]
            return _call_intrinsic(builder, name, _vt(n), [args[1], args[2], args[3]])
        x = builder.zext(builder.bitcast(args[2], _vt(4 * n, 8)), _vt(4 * n))
        y = builder.sext(builder.bitcast(args[3], _vt(4 * n, 8)), _vt(4 * n))
        p = builder.mul(x, y)
        s = builder.add(builder.add(_lanes(builder, p, 0, 4, n), _lanes(builder, p, 1, 4, n)),
                        builder.add(_lanes(builder, p, 2, 4, n), _lanes(builder, p, 3, 4, n)))
        return builder.add(args[1], s)

    return vec(tag, acc, a, b), codegen


@intrinsic
def mul32(typingctx, a, b):
    """Lane-wise 32-bit wrapping multiply (``vpmulld``)."""
    _vec_of(a)

    def codegen(context, builder, sig, args):
        return builder.mul(args[0], args[1])

    return a(a, b), codegen


@intrinsic
def widen16(typingctx, tag, s):
    """Sum adjacent int16 lanes into int32 lanes: ``vpmaddwd(s, 1)`` (exact)."""
    impl = _impl_name(tag)
    vec = _vec_of(s)

    def codegen(context, builder, sig, args):
        n = vec.lanes
        x = builder.bitcast(args[1], _vt(2 * n, 16))
        if impl == "native":
            ones = ir.Constant(_vt(2 * n, 16), [1] * (2 * n))
            name = {8: "llvm.x86.avx2.pmadd.wd", 16: "llvm.x86.avx512.pmaddw.d.512"}[n]
            return _call_intrinsic(builder, name, _vt(n), [x, ones])
        p = builder.sext(x, _vt(2 * n))
        return builder.add(_lanes(builder, p, 0, 2, n), _lanes(builder, p, 1, 2, n))

    return vec(tag, s), codegen


# ---------------------------------------------------------------------------------------------
# Byte lanes of a 512-bit vector (the attn x V weight planes: kernels/attn_v_shift.py)
# ---------------------------------------------------------------------------------------------


def has_vbmi() -> bool:
    """AVX-512 VBMI (``vpermb``) on top of AVX-512 BW."""
    return {"avx512f", "avx512bw", "avx512vbmi"} <= cpu_features()


@intrinsic
def permb(typingctx, tag, tbl, idx):
    """``vpermb``: byte i = tbl8[idx8[i] & 63] (a 64-entry byte table lookup; AVX-512 VBMI)."""
    impl = _impl_name(tag)
    vec = _vec_of(tbl)
    if vec.lanes != 16:
        raise TypeError("permb: 512-bit vectors only")

    def codegen(context, builder, sig, args):
        t = builder.bitcast(args[1], _vt(64, 8))
        x = builder.bitcast(args[2], _vt(64, 8))
        if impl == "native":
            r = _call_intrinsic(builder, "llvm.x86.avx512.permvar.qi.512", _vt(64, 8), [t, x])
            return builder.bitcast(r, _vt(16))
        r = ir.Constant(_vt(64, 8), None)
        m63 = ir.Constant(_I8, 63)
        for i in range(64):
            k = builder.and_(builder.extract_element(x, ir.Constant(_I32, i)), m63)
            r = builder.insert_element(r, builder.extract_element(t, builder.zext(k, _I32)), ir.Constant(_I32, i))
        return builder.bitcast(r, _vt(16))

    return vec(tag, tbl, idx), codegen


@intrinsic
def permb2(typingctx, tag, lo, hi, idx):
    """``vpermi2b``: byte i = (lo8 if idx8[i] & 64 == 0 else hi8)[idx8[i] & 63] (a 128-entry byte table lookup;
    AVX-512 VBMI; bit 7 of the index is ignored)."""
    impl = _impl_name(tag)
    vec = _vec_of(lo)
    if vec.lanes != 16:
        raise TypeError("permb2: 512-bit vectors only")

    def codegen(context, builder, sig, args):
        a = builder.bitcast(args[1], _vt(64, 8))
        b = builder.bitcast(args[2], _vt(64, 8))
        x = builder.bitcast(args[3], _vt(64, 8))
        if impl == "native":
            r = _call_intrinsic(builder, "llvm.x86.avx512.vpermi2var.qi.512", _vt(64, 8), [a, x, b])
            return builder.bitcast(r, _vt(16))
        r = ir.Constant(_vt(64, 8), None)
        m63, m64, zero = ir.Constant(_I8, 63), ir.Constant(_I8, 64), ir.Constant(_I8, 0)
        for i in range(64):
            xi = builder.extract_element(x, ir.Constant(_I32, i))
            k = builder.zext(builder.and_(xi, m63), _I32)
            use_hi = builder.icmp_unsigned("!=", builder.and_(xi, m64), zero)
            r = builder.insert_element(
                r, builder.select(use_hi, builder.extract_element(b, k), builder.extract_element(a, k)),
                ir.Constant(_I32, i))
        return builder.bitcast(r, _vt(16))

    return vec(tag, lo, hi, idx), codegen


@intrinsic
def select_eq_u8(typingctx, key, k, a, b):
    """Byte i = a8[i] if key8[i] == k (k truncated to a byte) else b8[i] (plain LLVM IR, any CPU)."""
    _vec_of(a)

    def codegen(context, builder, sig, args):
        n = sig.args[0].lanes * 4
        kv = builder.bitcast(args[0], _vt(n, 8))
        kb = builder.trunc(args[1], _I8) if args[1].type.width > 8 else args[1]
        x = builder.bitcast(args[2], _vt(n, 8))
        y = builder.bitcast(args[3], _vt(n, 8))
        r = builder.select(builder.icmp_unsigned("==", kv, _splat(builder, kb, n)), x, y)
        return builder.bitcast(r, _vt(n // 4))

    return a(key, k, a, b), codegen


@intrinsic
def sad_u8(typingctx, tag, v):
    """``vpsadbw`` against zero: 64-bit lane i = the sum of bytes 8i .. 8i+7 (unsigned), returned as a
    512-bit vector (each sum < 2^11 sits in the low 32-bit half of its lane, the high half is 0, so such
    vectors can be summed with :func:`add32` and totalled with :func:`hsum32`)."""
    impl = _impl_name(tag)
    vec = _vec_of(v)
    if vec.lanes != 16:
        raise TypeError("sad_u8: 512-bit vectors only")

    def codegen(context, builder, sig, args):
        x = builder.bitcast(args[1], _vt(64, 8))
        i64 = ir.IntType(64)
        if impl == "native":
            z = ir.Constant(_vt(64, 8), [0] * 64)
            p = _call_intrinsic(builder, "llvm.x86.avx512.psad.bw.512", ir.VectorType(i64, 8), [x, z])
            return builder.bitcast(p, _vt(16))
        w = builder.zext(x, ir.VectorType(i64, 64))
        r = ir.Constant(ir.VectorType(i64, 8), None)
        for i in range(8):
            t = builder.extract_element(w, ir.Constant(_I32, 8 * i))
            for k in range(1, 8):
                t = builder.add(t, builder.extract_element(w, ir.Constant(_I32, 8 * i + k)))
            r = builder.insert_element(r, t, ir.Constant(_I32, i))
        return builder.bitcast(r, _vt(16))

    return vec(tag, v), codegen


@intrinsic
def hsum32(typingctx, v):
    """The wrapping int32 sum of all lanes, as int32 (plain LLVM IR)."""
    _vec_of(v)

    def codegen(context, builder, sig, args):
        n = sig.args[0].lanes
        return _call_intrinsic(builder, f"llvm.vector.reduce.add.v{n}i32", _I32, [args[0]])

    return types.int32(v), codegen


@intrinsic
def keep_first_u8(typingctx, v, count, fill):
    """Bytes ``i < count`` of ``v`` kept, the others replaced by the byte ``fill`` (plain LLVM IR)."""
    _vec_of(v)

    def codegen(context, builder, sig, args):
        n = sig.args[0].lanes * 4
        x = builder.bitcast(args[0], _vt(n, 8))
        cnt = builder.trunc(args[1], _I32) if args[1].type.width > 32 else builder.sext(args[1], _I32) \
            if args[1].type.width < 32 else args[1]
        fb = builder.trunc(args[2], _I8) if args[2].type.width > 8 else args[2]
        lanes = ir.Constant(_vt(n), list(range(n)))
        keep = builder.icmp_signed("<", lanes, _splat(builder, cnt, n))
        r = builder.select(keep, x, _splat(builder, fb, n))
        return builder.bitcast(r, _vt(n // 4))

    return v(v, count, fill), codegen


def _make_pick_u8(cmp: str, doc: str):
    """A byte-wise select intrinsic ``f(a, b)``: byte i = a8[i] if a8[i] ``cmp`` b8[i] (unsigned) else b8[i]."""

    @intrinsic
    def pick(typingctx, a, b):
        _vec_of(a)

        def codegen(context, builder, sig, args):
            n = sig.args[0].lanes * 4
            x = builder.bitcast(args[0], _vt(n, 8))
            y = builder.bitcast(args[1], _vt(n, 8))
            return builder.bitcast(builder.select(builder.icmp_unsigned(cmp, x, y), x, y), _vt(n // 4))

        return a(a, b), codegen

    pick.__doc__ = doc
    return pick


max_u8 = _make_pick_u8(">", "Byte-wise unsigned maximum (``vpmaxub``; plain LLVM IR, any CPU).")
min_u8 = _make_pick_u8("<", "Byte-wise unsigned minimum (``vpminub``; plain LLVM IR, any CPU).")


@intrinsic
def zero_where_u8(typingctx, a, z):
    """Bytes of ``a`` equal to the byte ``z`` set to 0, the others kept (plain LLVM IR, any CPU)."""
    _vec_of(a)

    def codegen(context, builder, sig, args):
        n = sig.args[0].lanes * 4
        x = builder.bitcast(args[0], _vt(n, 8))
        zb = _splat(builder, builder.trunc(args[1], _I8) if args[1].type.width > 8 else args[1], n)
        r = builder.select(builder.icmp_unsigned("==", x, zb), ir.Constant(_vt(n, 8), [0] * n), x)
        return builder.bitcast(r, _vt(n // 4))

    return a(a, z), codegen


# ---------------------------------------------------------------------------------------------
# float32 lanes (exact integer arithmetic while every value is an integer of magnitude <= 2^24)
# ---------------------------------------------------------------------------------------------


class VecF32Type(types.Type):
    """An LLVM ``<8 x float>`` vector (one 256-bit register)."""

    def __init__(self):
        super().__init__(name="vec8xf32")


@register_model(VecF32Type)
class _VecF32Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, ir.VectorType(ir.FloatType(), 8))


f8 = VecF32Type()
_F8 = ir.VectorType(ir.FloatType(), 8)


@intrinsic
def loadf8(typingctx, arr, idx):
    """8 float32 starting at element ``idx`` of a 1-D contiguous float32 array."""
    _check_1d(arr, "loadf8")

    def codegen(context, builder, sig, args):
        ptr = _item_ptr(context, builder, sig.args[0], args[0], args[1])
        return builder.load(builder.bitcast(ptr, _F8.as_pointer()), align=1)

    return f8(arr, idx), codegen


@intrinsic
def bcastf8(typingctx, arr, idx):
    """Element ``idx`` of a 1-D contiguous float32 array in all 8 lanes."""
    _check_1d(arr, "bcastf8")

    def codegen(context, builder, sig, args):
        ptr = _item_ptr(context, builder, sig.args[0], args[0], args[1])
        x = builder.load(builder.bitcast(ptr, ir.FloatType().as_pointer()), align=1)
        return _splat(builder, x, 8)

    return f8(arr, idx), codegen


@intrinsic
def zerof8(typingctx):
    def codegen(context, builder, sig, args):
        return ir.Constant(_F8, [0.0] * 8)

    return f8(), codegen


@intrinsic
def fmaf8(typingctx, x, y, acc):
    """``acc + x*y`` lane-wise (``llvm.fmuladd``: fused or not; exact either way for the integer-valued
    operands the kernels use, whose products and sums stay within 2^24)."""

    def codegen(context, builder, sig, args):
        return _call_intrinsic(builder, "llvm.fmuladd.v8f32", _F8, [args[0], args[1], args[2]])

    return f8(x, y, acc), codegen


@intrinsic
def f8_to_i32(typingctx, v):
    """Convert integer-valued float lanes (|v| <= 2^24) to int32 lanes (exact)."""

    def codegen(context, builder, sig, args):
        return builder.fptosi(args[0], _vt(8))

    return v8(v), codegen
