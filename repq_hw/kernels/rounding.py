"""Integer rounding primitives: rounding right shift, rounding division, saturation, requantization.

Every other kernel is built from these. Each primitive exists twice:

* ``<name>_ref`` -- plain NumPy on int64, vectorised, written to be read (THE DEFINITION);
* ``<name>``     -- a Numba kernel that must be bit-identical to the reference.

Rounding modes (for a right shift of a signed integer ``x`` by ``s >= 1``, i.e. ``x / 2^s``):

==============  ===========================================================
``half_up``     ``floor((x + 2^(s-1)) / 2^s)``   ties toward +infinity
``half_even``   nearest integer, ties to the even neighbour
``half_away``   nearest integer, ties away from zero
``floor``       ``floor(x / 2^s)``  (arithmetic shift, ``x >> s``)
==============  ===========================================================

``s = 0`` is the identity for every mode; ``s`` must lie in ``[0, 62]``.

All four modes are computed from the *floor quotient* ``q = x >> s`` and the *remainder*
``r = x - q * 2^s`` (``0 <= r < 2^s``, the low ``s`` bits of ``x``) by adding 0 or 1 to ``q``.
Because ``q <= (2^63 - 1) >> 1`` whenever ``s >= 1``, ``q + 1`` never overflows: the primitives are
total on the whole int64 range, with no wide intermediate.  This is also the RTL datapath
(see ``docs/ops/requantize.md``).

Numba kernels receive the mode as a small integer id (see :data:`MODE_IDS`).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = [
    "FLOOR",
    "HALF_AWAY",
    "HALF_EVEN",
    "HALF_UP",
    "INT64_MAX",
    "INT64_MIN",
    "MAX_SHIFT",
    "MODE_IDS",
    "ROUNDING_MODES",
    "check_shift",
    "mode_id",
    "requant_scalar",
    "requantize",
    "requantize_ref",
    "round_div",
    "round_div_ref",
    "round_div_vec",
    "rounding_rshift",
    "rounding_rshift_ref",
    "rounding_rshift_vec",
    "saturate",
    "saturate_ref",
    "saturate_vec",
]

ROUNDING_MODES: tuple[str, ...] = ("half_up", "half_even", "half_away", "floor")
"""The rounding modes, in id order."""

MODE_IDS: dict[str, int] = {name: i for i, name in enumerate(ROUNDING_MODES)}
"""Mode name -> small integer id used inside Numba kernels."""

HALF_UP = 0
HALF_EVEN = 1
HALF_AWAY = 2
FLOOR = 3

MAX_SHIFT = 62
INT64_MAX = (1 << 63) - 1
INT64_MIN = -(1 << 63)
_INT32_MIN = -(1 << 31)
_INT32_MAX = (1 << 31) - 1


def mode_id(mode: str | int) -> int:
    """Return the Numba id of a rounding mode.

    Args:
        mode: one of :data:`ROUNDING_MODES`, or an id already (0..3).

    Raises:
        ValueError: unknown mode (the message names it).
    """
    if isinstance(mode, (int, np.integer)) and not isinstance(mode, bool):
        if 0 <= int(mode) < len(ROUNDING_MODES):
            return int(mode)
        raise ValueError(f"unknown rounding mode id {mode!r}; valid ids are 0..{len(ROUNDING_MODES) - 1}")
    if isinstance(mode, str) and mode in MODE_IDS:
        return MODE_IDS[mode]
    raise ValueError(f"unknown rounding mode {mode!r}; expected one of {ROUNDING_MODES}")


def _mode_name(mode: str | int) -> str:
    return ROUNDING_MODES[mode_id(mode)]


def check_shift(shift: object, what: str = "shift") -> np.ndarray:
    """Validate right-shift amounts and return them as an int64 array.

    Args:
        shift: integer scalar or integer array; every element must lie in ``[0, 62]``.
        what: name used in the error message.

    Raises:
        ValueError: a shift outside ``[0, 62]`` or a non-integer dtype.
    """
    s = np.asarray(shift)
    if s.dtype.kind not in "iu":
        raise ValueError(f"{what} must be integer, got dtype {s.dtype}")
    if s.size and (int(s.min()) < 0 or int(s.max()) > MAX_SHIFT):
        bad = int(s.min()) if int(s.min()) < 0 else int(s.max())
        raise ValueError(f"{what}={bad} out of range [0, {MAX_SHIFT}]")
    return s.astype(np.int64)


def _as_int64(x: object, what: str) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.kind not in "iu":
        raise ValueError(f"{what} must be an integer array, got dtype {a.dtype}")
    if a.dtype == np.uint64 and a.size and int(a.max()) > INT64_MAX:
        raise OverflowError(f"{what}: value {int(a.max())} does not fit int64")
    return a.astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Reference implementations (NumPy, int64)
# ---------------------------------------------------------------------------------------------


def rounding_rshift_ref(x: object, shift: object, mode: str | int) -> np.ndarray:
    """Rounding arithmetic right shift: ``x / 2^shift`` rounded with ``mode``.

    Contract: x int64 (any value), shift in [0, 62] (scalar or broadcastable array);
    result int64, ``|result| <= |x| / 2^shift + 1``; never overflows.

    Args:
        x: signed integer scalar or array (converted to int64).
        shift: shift amount(s), each in ``[0, 62]``; broadcast against ``x``.
        mode: rounding mode name (see :data:`ROUNDING_MODES`) or id.

    Returns:
        int64 array of the broadcast shape.

    Raises:
        ValueError: unknown mode, shift out of range, non-integer input.
    """
    m = _mode_name(mode)
    xv = _as_int64(x, "rounding_rshift x")
    s = check_shift(shift)
    xv, s = np.broadcast_arrays(xv, s)
    q = xv >> s  # floor(x / 2^s): arithmetic shift
    r = xv - (q << s)  # low s bits, 0 <= r < 2^s  (q << s never overflows: |q << s| <= |x|)
    one = np.int64(1)
    half = np.where(s > 0, one << np.maximum(s - 1, 0), 0)  # 2^(s-1); unused when s == 0
    if m == "floor":
        up = np.zeros(q.shape, dtype=bool)
    elif m == "half_up":
        up = (s > 0) & (r >= half)
    elif m == "half_even":
        up = (s > 0) & ((r > half) | ((r == half) & ((q & 1) == 1)))
    else:  # half_away: a tie is q + 1/2; away from zero means up iff q + 1/2 > 0 iff x >= 0
        up = (s > 0) & ((r > half) | ((r == half) & (xv >= 0)))
    return q + up.astype(np.int64)


def round_div_ref(num: object, den: object, mode: str | int) -> np.ndarray:
    """Rounding integer division ``num / den`` for ``den > 0`` with the same rounding modes.

    Contract: num int64 (any value), den int64 > 0; result int64, never overflows
    (the tie test compares ``r`` with ``den - r`` instead of forming ``2*r``).

    Args:
        num: signed integer numerator(s).
        den: positive integer denominator(s), broadcast against ``num``.
        mode: rounding mode name or id.

    Returns:
        int64 array of the broadcast shape.

    Raises:
        ValueError: unknown mode, non-positive denominator.
    """
    m = _mode_name(mode)
    n = _as_int64(num, "round_div num")
    d = _as_int64(den, "round_div den")
    if d.size and int(d.min()) <= 0:
        raise ValueError(f"round_div: denominator must be > 0, got {int(d.min())}")
    n, d = np.broadcast_arrays(n, d)
    q = n // d  # floor quotient (NumPy floor division)
    r = n - q * d  # 0 <= r < d
    rest = d - r  # 2r > d  <=>  r > d - r ;  2r == d  <=>  r == d - r
    if m == "floor":
        up = np.zeros(q.shape, dtype=bool)
    elif m == "half_up":
        up = r >= rest
    elif m == "half_even":
        up = (r > rest) | ((r == rest) & ((q & 1) == 1))
    else:  # half_away
        up = (r > rest) | ((r == rest) & (n >= 0))
    up &= r != 0  # an exact quotient is never rounded (already implied: r = 0 < d = rest)
    return q + up.astype(np.int64)


def saturate_ref(x: object, lo: int, hi: int) -> np.ndarray:
    """Clamp ``x`` to ``[lo, hi]`` (int64).

    Args:
        x: integer scalar or array.
        lo: lower bound (inclusive).
        hi: upper bound (inclusive), ``lo <= hi``.

    Returns:
        int64 array.

    Raises:
        ValueError: ``lo > hi``.
    """
    lo, hi = int(lo), int(hi)
    if lo > hi:
        raise ValueError(f"saturate: lo={lo} > hi={hi}")
    if lo < INT64_MIN or hi > INT64_MAX:
        raise ValueError(f"saturate: bounds [{lo}, {hi}] exceed int64")
    xv = _as_int64(x, "saturate x")
    return np.minimum(np.maximum(xv, np.int64(lo)), np.int64(hi))


def _per_channel(v: object, c: int, what: str, op: str) -> np.ndarray:
    a = np.asarray(v)
    if a.dtype.kind not in "iu":
        raise ValueError(f"{op}: {what} must be integer, got dtype {a.dtype}")
    if a.ndim == 0:
        return np.full(c, int(a), dtype=np.int64)
    if a.ndim != 1 or a.shape[0] != c:
        raise ValueError(f"{op}: {what} must be a scalar or a vector of length {c}, got shape {a.shape}")
    return a.astype(np.int64)


def _check_requant_attrs(multiplier, shift, offset, zero_point, out_min, out_max, c, op):
    mult = _per_channel(multiplier, c, "multiplier", op)
    # signed: a negative real factor (e.g. a negative LayerNorm gamma) carries its sign in M
    if mult.size and (int(mult.min()) <= -(1 << 31) or int(mult.max()) >= (1 << 31)):
        bad = int(mult.min()) if int(mult.min()) <= -(1 << 31) else int(mult.max())
        raise ValueError(f"{op}: multiplier={bad} out of range (-2^31, 2^31)")
    sh = check_shift(_per_channel(shift, c, "shift", op), f"{op}: shift")
    off = _per_channel(offset, c, "offset", op)
    zp, lo, hi = int(zero_point), int(out_min), int(out_max)
    for name, val in (("zero_point", zp), ("out_min", lo), ("out_max", hi)):
        if not _INT32_MIN <= val <= _INT32_MAX:
            raise ValueError(f"{op}: {name}={val} outside int32")
    if lo > hi:
        raise ValueError(f"{op}: out_min={lo} > out_max={hi}")
    return mult, sh, off, zp, lo, hi


def _cast_out(y: np.ndarray, out_dtype, lo: int, hi: int, op: str) -> np.ndarray:
    if out_dtype is None:
        return y.astype(np.int32)
    info = np.iinfo(out_dtype)
    if lo < info.min or hi > info.max:
        raise ValueError(f"{op}: [out_min, out_max] = [{lo}, {hi}] does not fit {np.dtype(out_dtype)}")
    return y.astype(out_dtype)


def requantize_ref(
    acc: object,
    multiplier: object,
    shift: object,
    offset: object,
    zero_point: int,
    out_min: int,
    out_max: int,
    rounding: str | int,
    out_dtype: type | None = None,
) -> np.ndarray:
    """Requantize accumulators: ``clamp(rshift_round(acc*M + offset, shift) + zp, out_min, out_max)``.

    Contract (per element, channel ``c`` = index along the last axis):
      * ``acc`` int32 or int64; ``M[c]`` in ``(-2^31, 2^31)``; ``shift[c]`` in ``[0, 62]``; ``offset[c]`` int64;
      * ``P = acc*M[c]`` and ``V = P + offset[c]`` must both satisfy ``|.| < 2^63`` (else OverflowError);
        for int32 ``acc`` and ``|offset| < 2^62`` this always holds;
      * ``zero_point``, ``out_min <= out_max`` within int32; the add of the zero point is exact
        (performed as ``clamp(R, out_min - zp, out_max - zp) + zp``, identical to ``clamp(R + zp, ...)``).

    Args:
        acc: accumulator array ``[..., C]`` (int32 or int64).
        multiplier: scalar or ``[C]`` vector, each in ``(-2^31, 2^31)``.
        shift: scalar or ``[C]`` vector, each in ``[0, 62]``.
        offset: scalar or ``[C]`` int64 vector added after the multiply (folded bias / affine term).
        zero_point: output zero point (int32).
        out_min: lower saturation bound (int32).
        out_max: upper saturation bound (int32).
        rounding: rounding mode of the right shift.
        out_dtype: result dtype (default int32); ``[out_min, out_max]`` must fit it.

    Returns:
        array of ``acc``'s shape, dtype ``out_dtype`` (int32 by default).

    Raises:
        OverflowError: ``|acc*M|`` or ``|acc*M + offset|`` reaches 2^63.
        ValueError: bad attribute (range, shape, unknown rounding mode).
    """
    op = "requantize"
    mode = _mode_name(rounding)
    a = _as_int64(acc, f"{op} acc")
    if a.ndim == 0:
        a = a.reshape(1)
        scalar = True
    else:
        scalar = False
    c = a.shape[-1]
    mult, sh, off, zp, lo, hi = _check_requant_attrs(
        multiplier, shift, offset, zero_point, out_min, out_max, c, op
    )
    # |acc * M| < 2^63  <=>  |acc| <= (2^63 - 1) // |M|   (for M != 0)
    lim = np.where(mult != 0, np.int64(INT64_MAX) // np.maximum(np.abs(mult), 1), np.int64(INT64_MAX))
    bad_p = (a > lim) | (a < -lim)
    if bad_p.any():
        i = tuple(int(t) for t in np.argwhere(bad_p)[0])
        val = int(a[i]) * int(mult[i[-1]])
        raise OverflowError(f"{op}: acc*multiplier = {val} at index {i} does not fit int64")
    p = a * mult
    # |p + off| < 2^63 without forming it: off >= 0 -> p <= INT64_MAX - off ; off < 0 -> p >= -INT64_MAX - off
    bad_v = np.where(off >= 0, p > np.int64(INT64_MAX) - off, p < -np.int64(INT64_MAX) - off)
    if bad_v.any():
        i = tuple(int(t) for t in np.argwhere(bad_v)[0])
        val = int(p[i]) + int(off[i[-1]])
        raise OverflowError(f"{op}: acc*multiplier + offset = {val} at index {i} does not fit int64")
    v = p + off
    r = rounding_rshift_ref(v, sh, mode)
    y = saturate_ref(r, lo - zp, hi - zp) + zp
    out = _cast_out(y, out_dtype, lo, hi, op)
    return out.reshape(()) if scalar else out


# ---------------------------------------------------------------------------------------------
# Numba kernels
# ---------------------------------------------------------------------------------------------


@njit(cache=True)
def rounding_rshift(x: int, shift: int, mode_id: int) -> int:
    """Numba scalar rounding right shift (bit-identical to :func:`rounding_rshift_ref`).

    Contract: x int64 (any), shift in [0, 62] (NOT checked here), mode_id in 0..3 (see MODE_IDS).

    Args:
        x: signed 64-bit value.
        shift: shift amount in [0, 62].
        mode_id: 0 half_up, 1 half_even, 2 half_away, 3 floor.
    """
    x = np.int64(x)
    s = np.int64(shift)
    if s == 0:
        return x
    q = x >> s  # floor quotient
    r = x - (q << s)  # 0 <= r < 2^s
    half = np.int64(1) << (s - 1)
    if mode_id == 3:  # floor
        return q
    if mode_id == 0:  # half_up
        if r >= half:
            return q + 1
        return q
    if mode_id == 1:  # half_even
        if r > half or (r == half and (q & 1) == 1):
            return q + 1
        return q
    # half_away
    if r > half or (r == half and x >= 0):
        return q + 1
    return q


@njit(cache=True, inline="always")
def rshift_half(s):
    """2^(s-1) for s >= 1; 1 for s == 0 (then the remainder is 0 < half, so nothing rounds up).  The
    ``half`` argument of :func:`rounding_rshift_bf`."""
    return (np.int64(1) << max(s - 1, 0)) if s > 0 else np.int64(1)


@njit(cache=True, inline="always")
def rounding_rshift_bf(x, s, half, mode):
    """Branch-free :func:`rounding_rshift` (bit-identical) for int64 x, s in [0, 62], ``half = rshift_half(s)``.

    q = floor(x / 2^s), r = x - q*2^s in [0, 2^s); rounds up iff r > half, or r == half and the tie goes
    up: half_up always, half_even iff q is odd, half_away iff x >= 0; floor never."""
    q = x >> s
    r = x - (q << s)
    tie = (mode == 0) | ((mode == 1) & ((q & 1) == 1)) | ((mode == 2) & (x >= 0))
    up = ((r > half) | ((r == half) & tie)) & (mode != 3)
    return q + np.int64(up)


@njit(cache=True, inline="always")
def floor_div_recip(num, den, inv):
    """(floor(num / den), num mod den) for int64 num with |num| < 2^53 and den >= 1, inv = 1.0 / den.

    float64(num) is exact; inv and the product are each correctly rounded, so the estimate differs from
    num/den by at most |num/den| * 2^-51.9 < 1 whenever |num/den| < 2^51 (always: |num| < 2^53, den >= 1
    gives |num/den| < 2^53 -- callers keep |num/den| < 2^40), hence floor(estimate) is q-1, q or q+1 and
    one correction step of the remainder into [0, den) makes it exact."""
    q = np.int64(np.floor(np.float64(num) * inv))
    r = num - q * den
    lo = r < 0
    q -= np.int64(lo)
    r += den * np.int64(lo)
    hi = r >= den
    q += np.int64(hi)
    r -= den * np.int64(hi)
    return q, r


@njit(cache=True, inline="always")
def round_div_fix(num, den, q, r, mode):
    """Apply the rounding of ``round_div(num, den, mode)`` to the floor quotient q and remainder r."""
    rest = den - r
    tie = (mode == 0) | ((mode == 1) & ((q & 1) == 1)) | ((mode == 2) & (num >= 0))
    up = ((r > rest) | ((r == rest) & tie)) & (mode != 3) & (r != 0)
    return q + np.int64(up)


@njit(cache=True)
def round_div(num: int, den: int, mode_id: int) -> int:
    """Numba scalar rounding division for ``den > 0`` (bit-identical to :func:`round_div_ref`).

    Contract: num int64 (any), den int64 > 0 (NOT checked here), mode_id in 0..3.

    Args:
        num: signed numerator.
        den: positive denominator.
        mode_id: rounding mode id.
    """
    n = np.int64(num)
    d = np.int64(den)
    q = n // d  # Numba follows Python: floor division
    r = n - q * d  # 0 <= r < d
    if r == 0 or mode_id == 3:
        return q
    rest = d - r
    if mode_id == 0:
        if r >= rest:
            return q + 1
        return q
    if mode_id == 1:
        if r > rest or (r == rest and (q & 1) == 1):
            return q + 1
        return q
    if r > rest or (r == rest and n >= 0):
        return q + 1
    return q


@njit(cache=True)
def saturate(x: int, lo: int, hi: int) -> int:
    """Numba scalar clamp of int64 ``x`` to ``[lo, hi]`` (``lo <= hi`` assumed).

    Args:
        x: value.
        lo: lower bound.
        hi: upper bound.
    """
    if x < lo:
        return np.int64(lo)
    if x > hi:
        return np.int64(hi)
    return np.int64(x)


@njit(cache=True)  # element-wise helper: serial (cheap to compile, thread-count independent)
def _rshift_rows(x: np.ndarray, s: np.ndarray, mid: int) -> np.ndarray:
    n = x.shape[0]
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        out[i] = rounding_rshift(x[i], s[i], mid)
    return out


@njit(cache=True)  # element-wise helper: serial (cheap to compile, thread-count independent)
def _rdiv_rows(x: np.ndarray, d: np.ndarray, mid: int) -> np.ndarray:
    n = x.shape[0]
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        out[i] = round_div(x[i], d[i], mid)
    return out


def rounding_rshift_vec(x: object, shift: object, mode: str | int) -> np.ndarray:
    """Array form of the Numba :func:`rounding_rshift` (same signature as the reference).

    Args:
        x: signed integer scalar or array.
        shift: shift amount(s) in ``[0, 62]``, broadcast against ``x``.
        mode: rounding mode name or id.
    """
    mid = mode_id(mode)
    xv = _as_int64(x, "rounding_rshift x")
    s = check_shift(shift)
    xv, s = np.broadcast_arrays(xv, s)
    shape = xv.shape
    out = _rshift_rows(np.ascontiguousarray(xv).reshape(-1), np.ascontiguousarray(s).reshape(-1), mid)
    return out.reshape(shape)


def round_div_vec(num: object, den: object, mode: str | int) -> np.ndarray:
    """Array form of the Numba :func:`round_div` (same signature as the reference).

    Args:
        num: signed integer numerator(s).
        den: positive denominator(s), broadcast against ``num``.
        mode: rounding mode name or id.
    """
    mid = mode_id(mode)
    n = _as_int64(num, "round_div num")
    d = _as_int64(den, "round_div den")
    if d.size and int(d.min()) <= 0:
        raise ValueError(f"round_div: denominator must be > 0, got {int(d.min())}")
    n, d = np.broadcast_arrays(n, d)
    shape = n.shape
    out = _rdiv_rows(np.ascontiguousarray(n).reshape(-1), np.ascontiguousarray(d).reshape(-1), mid)
    return out.reshape(shape)


@njit(cache=True)  # element-wise helper: serial (cheap to compile, thread-count independent)
def _saturate_flat(x: np.ndarray, lo: int, hi: int) -> np.ndarray:
    out = np.empty(x.shape[0], dtype=np.int64)
    for i in range(x.shape[0]):
        out[i] = saturate(x[i], lo, hi)
    return out


def saturate_vec(x: object, lo: int, hi: int) -> np.ndarray:
    """Array form of the Numba :func:`saturate` (same signature and errors as :func:`saturate_ref`).

    Args:
        x: integer scalar or array.
        lo: lower bound (inclusive).
        hi: upper bound (inclusive), ``lo <= hi``.
    """
    lo, hi = int(lo), int(hi)
    if lo > hi:
        raise ValueError(f"saturate: lo={lo} > hi={hi}")
    if lo < INT64_MIN or hi > INT64_MAX:
        raise ValueError(f"saturate: bounds [{lo}, {hi}] exceed int64")
    xv = _as_int64(x, "saturate x")
    return _saturate_flat(np.ascontiguousarray(xv).reshape(-1), lo, hi).reshape(xv.shape)


@njit(cache=True)
def requant_scalar(v: int, shift: int, zp: int, lo: int, hi: int, mid: int) -> int:
    """Numba scalar tail of requantization: ``clamp(rshift_round(v, shift), lo - zp, hi - zp) + zp``.

    Contract: v int64 (already ``acc*M + offset``), shift in [0, 62], zp/lo/hi int32, lo <= hi.

    Args:
        v: the 64-bit product-plus-offset.
        shift: right shift.
        zp: output zero point.
        lo: output minimum.
        hi: output maximum.
        mid: rounding mode id.
    """
    r = rounding_rshift(v, shift, mid)
    return saturate(r, lo - zp, hi - zp) + zp


@njit(cache=True, parallel=True)
def _requantize_rows(
    acc: np.ndarray,
    mult: np.ndarray,
    lim: np.ndarray,
    sh: np.ndarray,
    off: np.ndarray,
    zp: int,
    lo: int,
    hi: int,
    mid: int,
    out: np.ndarray,
    bad: np.ndarray,
) -> None:
    rows, c = acc.shape
    imax = np.int64(INT64_MAX)
    for i in prange(rows):
        for j in range(c):
            a = acc[i, j]
            if a > lim[j] or a < -lim[j]:
                if bad[i, 0] == 0:
                    bad[i, 0] = 1
                    bad[i, 1] = j
                continue
            p = a * mult[j]  # |p| <= 2^63 - 1 by the lim test
            o = off[j]
            if (o >= 0 and p > imax - o) or (o < 0 and p < -imax - o):
                if bad[i, 0] == 0:
                    bad[i, 0] = 2
                    bad[i, 1] = j
                continue
            out[i, j] = np.int32(requant_scalar(p + o, sh[j], zp, lo, hi, mid))


def requantize(
    acc: object,
    multiplier: object,
    shift: object,
    offset: object,
    zero_point: int,
    out_min: int,
    out_max: int,
    rounding: str | int,
    out_dtype: type | None = None,
) -> np.ndarray:
    """Numba requantization, bit-identical to :func:`requantize_ref` (same arguments and errors).

    Args:
        acc: accumulator array ``[..., C]`` (int32 or int64).
        multiplier: scalar or ``[C]`` vector in ``(-2^31, 2^31)``.
        shift: scalar or ``[C]`` vector in ``[0, 62]``.
        offset: scalar or ``[C]`` int64 vector.
        zero_point: output zero point (int32).
        out_min: lower saturation bound (int32).
        out_max: upper saturation bound (int32).
        rounding: rounding mode name or id.
        out_dtype: result dtype (default int32).
    """
    op = "requantize"
    mid = mode_id(rounding)
    a = _as_int64(acc, f"{op} acc")
    scalar = a.ndim == 0
    if scalar:
        a = a.reshape(1)
    shape = a.shape
    c = shape[-1]
    mult, sh, off, zp, lo, hi = _check_requant_attrs(
        multiplier, shift, offset, zero_point, out_min, out_max, c, op
    )
    lim = np.where(mult != 0, np.int64(INT64_MAX) // np.maximum(np.abs(mult), 1), np.int64(INT64_MAX))
    a2 = np.ascontiguousarray(a.reshape(-1, c))
    out = np.empty(a2.shape, dtype=np.int32)
    bad = np.zeros((a2.shape[0], 2), dtype=np.int64)
    _requantize_rows(a2, mult, lim, sh, off, zp, lo, hi, mid, out, bad)
    if bad[:, 0].any():
        i = int(np.flatnonzero(bad[:, 0])[0])
        j = int(bad[i, 1])
        p = int(a2[i, j]) * int(mult[j])
        if bad[i, 0] == 1:
            raise OverflowError(f"{op}: acc*multiplier = {p} at row {i}, channel {j} does not fit int64")
        raise OverflowError(
            f"{op}: acc*multiplier + offset = {p + int(off[j])} at row {i}, channel {j} does not fit int64"
        )
    out = _cast_out(out.reshape(shape), out_dtype, lo, hi, op)
    return out.reshape(()) if scalar else out

# ---------------------------------------------------------------------------------------------
# Fast requantize kernel (the executor's prepared plan, ``repq_hw.emu.fast``)
# ---------------------------------------------------------------------------------------------

_I32_MIN = -(1 << 31)
_I32_MAX = (1 << 31) - 1
_LIM62 = 1 << 62
_LIM61 = 1 << 61

@njit(cache=True, inline="always")
def _rshift_add(v, s, h, sm, e1, e2):
    """``rounding_rshift(v, s, mode)`` as one add and one shift, for |v| < 2^62 + 2^61 (so v + h, with
    h = 2^(s-1) <= 2^61, cannot overflow): h = 2^(s-1) (0 if s == 0 or mode is floor), sm = (s > 0),
    e1 = (mode == half_even), e2 = (mode == half_away).

    half_up:   floor((v + h) / 2^s)                      ties up
    half_even: floor((v + h - 1 + (q & 1)) / 2^s)        q = floor(v / 2^s); a tie goes up iff q is odd
    half_away: floor((v + h - (v < 0)) / 2^s)            a negative tie stays at q (away from zero)
    floor:     floor(v / 2^s)                            (h = 0)
    Non-ties are unaffected by the -1 adjustments because the remainder is an integer."""
    q = v >> s
    d = (((-e1) & ~q) | ((-e2) & (v >> 63))) & sm  # masks, not products: no 64-bit multiply in the loop
    return (v + h - d) >> s


@njit(cache=True, inline="always")
def requant_run(acc, cols, mult, sh, h, off, has_off, e1, e2, lo, hi, zp, dst):
    """dst[j] = requantize(acc[j]) under constants [j], j < cols (the fast kernels' requantize of one contiguous
    run; the fused GEMM epilogues call it too), with :class:`RequantConsts`' compact constants: mult (mult32,
    int32, |M| < 2^31), sh (sh32, int32 in [0, 62]), h (int64), off (int64, read only when has_off), and its
    e1, e2, lo, hi, zp.  Callers pass views starting at the run: 0-based indexing lets LLVM vectorize the loop
    (a runtime column offset measured 2.8x slower on Zen 5), and the int32 constants keep a 1536-column row's
    constants in L1 and give LLVM a 32 x 32 -> 64-bit multiply (the int64 set measured 1.7x slower per element
    on AVX-512, more on AVX2, which has no 64-bit multiply)."""
    if has_off:
        for j in range(cols):
            s = np.int64(sh[j])
            v = np.int64(acc[j]) * np.int64(mult[j]) + off[j]  # |.| < 2^62 + 2^61: proved by RequantConsts
            dst[j] = min(max(_rshift_add(v, s, h[j], np.int64(s > 0), e1, e2), lo), hi) + zp
    else:
        for j in range(cols):
            s = np.int64(sh[j])
            v = np.int64(acc[j]) * np.int64(mult[j])  # |.| < 2^62
            dst[j] = min(max(_rshift_add(v, s, h[j], np.int64(s > 0), e1, e2), lo), hi) + zp


@njit(cache=True)
def _requant_row(acc, i, mult, sh, h, off, has_off, zp, lo, hi, e1, e2, out):
    """Row i of a 2-D acc into row i of out (:func:`requant_run` on the row views)."""
    requant_run(acc[i], acc.shape[1], mult, sh, h, off, has_off, e1, e2, lo, hi, zp, out[i])


@njit(cache=True)
def _requant_rows(acc, mult, sh, h, off, has_off, zp, lo, hi, e1, e2, out):
    for i in range(acc.shape[0]):
        _requant_row(acc, i, mult, sh, h, off, has_off, zp, lo, hi, e1, e2, out)


@njit(cache=True, parallel=True)
def _requant_rows_parallel(acc, mult, sh, h, off, has_off, zp, lo, hi, e1, e2, out):
    for i in prange(acc.shape[0]):
        _requant_row(acc, i, mult, sh, h, off, has_off, zp, lo, hi, e1, e2, out)


PARALLEL_MIN_ELEMENTS = 1 << 16
"""Element-wise kernels split rows over threads from this size on (below it the fork/join costs more)."""


class RequantConsts:
    """Per-node constants of a requantization, checked once: None from :meth:`make` when the fast kernel
    cannot prove the absence of int64 overflow (the caller then uses the ordinary kernel)."""

    __slots__ = ("c", "e1", "e2", "h", "half", "has_off", "hi", "lo", "mode", "mult", "mult32", "off", "sh", "sh32",
                 "sm", "zp")

    @staticmethod
    def make(c: int, multiplier, shift, offset, zero_point: int, out_min: int, out_max: int, rounding):
        def vec(v):
            a = np.asarray(v)
            if a.dtype.kind not in "iu":
                return None
            a = a.astype(np.int64)
            if a.ndim == 0 or a.shape == (1,):
                a = np.full(c, int(a.reshape(-1)[0]), dtype=np.int64)
            return a if a.shape == (c,) else None

        mult, sh, off = vec(multiplier), vec(shift), vec(offset)
        if mult is None or sh is None or off is None:
            return None
        if c and (np.abs(mult).max() >= (1 << 31) or sh.min() < 0 or sh.max() > 62
                  or np.abs(off).max() >= _LIM61):
            return None
        zp, lo, hi = int(zero_point), int(out_min), int(out_max)
        if not (_I32_MIN <= zp <= _I32_MAX and _I32_MIN <= lo <= hi <= _I32_MAX):
            return None
        self = RequantConsts()
        self.c, self.mult, self.sh, self.off = c, mult, sh, off
        self.half = np.where(sh > 0, np.left_shift(1, np.maximum(sh - 1, 0)), 1).astype(np.int64)
        self.zp, self.lo, self.hi = zp, lo - zp, hi - zp
        self.mode = mode_id(rounding)
        self.sm = (sh > 0).astype(np.int64)
        self.h = np.where(self.mode == 3, 0, np.where(sh > 0, self.half, 0)).astype(np.int64)
        self.e1, self.e2 = int(self.mode == 1), int(self.mode == 2)
        # the compact constants of requant_run (every fast requantize): |M| < 2^31 and s <= 62 fit int32
        self.mult32, self.sh32 = mult.astype(np.int32), sh.astype(np.int32)
        self.has_off = bool(c and np.any(off != 0))
        return self


def requant_fast(acc: np.ndarray, rc: RequantConsts, out_dtype) -> np.ndarray | None:
    """``requantize_ref(acc, ...)`` for ``|acc| <= 2^31`` (int8/16/32 or uint8/16 storage); None otherwise."""
    if acc.dtype.kind not in "iu" or acc.dtype.itemsize > 4 or acc.dtype == np.uint32 or acc.shape[-1] != rc.c:
        return None
    a2 = np.ascontiguousarray(acc).reshape(-1, rc.c)
    out = np.empty(a2.shape, dtype=out_dtype)
    kernel = _requant_rows_parallel if a2.size >= PARALLEL_MIN_ELEMENTS else _requant_rows
    kernel(a2, rc.mult32, rc.sh32, rc.h, rc.off, rc.has_off, rc.zp, rc.lo, rc.hi, rc.e1, rc.e2, out)
    return out.reshape(acc.shape)
