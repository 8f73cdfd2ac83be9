"""Float -> integer constants: the only place where float scales become integers.

Everything the integer kernels consume (multipliers/shifts, exp2 table, log2 thresholds, the sqrt(2)
constant, GELU tables) is produced here, once, at lowering time.  See ``docs/arith.md``.
"""

from __future__ import annotations

import math

import numpy as np

from repq_hw.kernels.attn_v_shift import sqrt2_multiplier
from repq_hw.kernels.log2_code import log2_thresholds
from repq_hw.kernels.softmax import exp2_lut

__all__ = [
    "MAX_SHIFT",
    "MULT_BITS",
    "exp2_lut",
    "gelu_erf",
    "log2_thresholds",
    "make_gelu_lut",
    "quantize_multiplier",
    "sqrt2_multiplier",
]

MULT_BITS = 31
"""Multipliers are normalised to ``[2^30, 2^31)`` (31 significant bits, non-negative int32)."""
MAX_SHIFT = 62
MAX_GELU_TABLE = 1 << 24


def quantize_multiplier(real: float) -> tuple[int, int]:
    """Represent a non-negative real factor as ``M * 2^-shift``.

    ``real = mant * 2^e`` with ``mant in [0.5, 1)`` (``math.frexp``); ``M = round_half_even(mant * 2^31)``
    (exact in float64), ``shift = 31 - e``; if rounding gives ``M = 2^31`` it becomes ``2^30`` with
    ``shift - 1``.  Then ``M in [2^30, 2^31)`` and ``|M * 2^-shift - real| <= 2^-shift / 2``, i.e. a
    relative error ``<= 2^-31``.

    Args:
        real: the factor (e.g. ``s_in * s_w / s_out``), ``>= 0`` and finite.

    Returns:
        ``(multiplier, shift)``; ``(0, 0)`` for ``real == 0``.

    Raises:
        ValueError: negative / non-finite; too large (``M * 2^-shift`` would need ``shift < 0``,
            i.e. ``real >= 2^31 - 1/2``); too small (``shift > 62``, i.e. ``real < 2^-32`` roughly).
    """
    r = float(real)
    if not math.isfinite(r) or r < 0.0:
        raise ValueError(f"quantize_multiplier: real={real!r} must be finite and >= 0")
    if r == 0.0:
        return 0, 0
    mant, e = math.frexp(r)
    m = round(math.ldexp(mant, MULT_BITS))  # exact float, Python round = half to even
    shift = MULT_BITS - e
    if m == 1 << MULT_BITS:
        m >>= 1
        shift -= 1
    if shift < 0:
        raise ValueError(f"quantize_multiplier: real={real!r} too large (>= 2^31 after rounding)")
    if shift > MAX_SHIFT:
        raise ValueError(f"quantize_multiplier: real={real!r} too small (shift {shift} > {MAX_SHIFT})")
    return int(m), int(shift)


def gelu_erf(x: float) -> float:
    """Exact GELU ``0.5 * x * (1 + erf(x / sqrt(2)))`` in float64.

    Args:
        x: input value.
    """
    return 0.5 * x * (1.0 + math.erf(x / math.sqrt(2.0)))


def make_gelu_lut(
    in_scale: float, in_min: int, in_max: int, out_scale: float, out_zp: int, out_bits: int
) -> np.ndarray:
    """GELU table over the input codes ``in_min .. in_max``.

    ``table[x - in_min] = clamp(round_half_even(gelu_erf(x * in_scale) / out_scale) + out_zp, 0, 2^b - 1)``.
    Use with :func:`repq_hw.kernels.lut.lut_lookup` (``in_min`` as given here).

    Args:
        in_scale: real value of one input step (> 0); input zero point 0 (fold it into ``in_min``).
        in_min: smallest input code.
        in_max: largest input code (``>= in_min``).
        out_scale: output scale (> 0).
        out_zp: output zero point.
        out_bits: b, output code width (1..30).

    Returns:
        uint8 table (``b <= 8``) or int32 table (``b > 8``) of length ``in_max - in_min + 1``.

    Raises:
        ValueError: bad scales, empty or oversized range, bits out of range.
    """
    si, so = float(in_scale), float(out_scale)
    for name, s in (("in_scale", si), ("out_scale", so)):
        if not (math.isfinite(s) and s > 0.0):
            raise ValueError(f"make_gelu_lut: {name}={s!r} must be finite and > 0")
    lo, hi, zp, b = int(in_min), int(in_max), int(out_zp), int(out_bits)
    if hi < lo or hi - lo + 1 > MAX_GELU_TABLE:
        raise ValueError(f"make_gelu_lut: input range [{lo}, {hi}] empty or larger than {MAX_GELU_TABLE}")
    if not 1 <= b <= 30:
        raise ValueError(f"make_gelu_lut: out_bits={b} outside [1, 30]")
    qmax = (1 << b) - 1
    vals = []
    for x in range(lo, hi + 1):
        y = gelu_erf(x * si) / so
        q = round(y) + zp  # Python round: half to even
        vals.append(min(max(q, 0), qmax))
    return np.array(vals, dtype=np.uint8 if b <= 8 else np.int32)
