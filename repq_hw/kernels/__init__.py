"""Integer kernels: the leaves of the bit-exact emulator.

Each op lives in its own module as a pair ``<op>_ref`` (plain NumPy on int64, THE DEFINITION) and
``<op>`` (Numba, bit-identical).  :data:`KERNELS` maps op name -> (reference, fast); both members of a
pair take the same arguments and raise the same exception types.  The written spec of every op is
``docs/ops/<op>.md``; the arithmetic derivations are in ``docs/arith.md``.

The op functions are not re-exported here where their name equals their module's (``isqrt``,
``layernorm``, ``softmax``, ``log2_code``, ``attn_v_shift``): import them from the module
(``from repq_hw.kernels.layernorm import layernorm``) or use :data:`KERNELS`, so that
``repq_hw.kernels.<module>`` always names the module.

Fast kernels of the prepared plan (``repq_hw.emu.fast``) live in the op's own module too; ``fused.py``
only composes them into chains that run when no intermediate tensor is requested.

Kernels import only NumPy, Numba and each other.
"""

from __future__ import annotations

from collections.abc import Callable

from . import attn_v_shift as _attn_v_shift_mod
from . import avg_pool as _avg_pool_mod
from . import gemm as _gemm_mod
from . import isqrt as _isqrt_mod
from . import layernorm as _layernorm_mod
from . import log2_code as _log2_code_mod
from . import lut as _lut_mod
from . import rounding as _rounding_mod
from . import softmax as _softmax_mod
from .attn_v_shift import sqrt2_multiplier
from .gemm import bmm_zp, bmm_zp_ref, gemm_zp, gemm_zp_ref
from .log2_code import log2_thresholds, zero_state
from .lut import lut_lookup, lut_lookup_ref
from .rounding import (
    MODE_IDS,
    ROUNDING_MODES,
    mode_id,
    requantize,
    requantize_ref,
    round_div,
    round_div_ref,
    round_div_vec,
    rounding_rshift,
    rounding_rshift_ref,
    rounding_rshift_vec,
    saturate,
    saturate_ref,
    saturate_vec,
)
from .softmax import exp2_lut

KERNELS: dict[str, tuple[Callable, Callable]] = {
    "rounding_rshift": (rounding_rshift_ref, rounding_rshift_vec),
    "round_div": (round_div_ref, round_div_vec),
    "saturate": (saturate_ref, saturate_vec),
    "requantize": (requantize_ref, requantize),
    "gemm_zp": (gemm_zp_ref, gemm_zp),
    "bmm_zp": (bmm_zp_ref, bmm_zp),
    "isqrt": (_isqrt_mod.isqrt_ref, _isqrt_mod.isqrt),
    "layernorm": (_layernorm_mod.layernorm_ref, _layernorm_mod.layernorm),
    "layernorm_requant": (_layernorm_mod.layernorm_requant_ref, _layernorm_mod.layernorm_requant),
    "softmax": (_softmax_mod.softmax_ref, _softmax_mod.softmax),
    "log2_code": (_log2_code_mod.log2_code_ref, _log2_code_mod.log2_code),
    "attn_v_shift": (_attn_v_shift_mod.attn_v_shift_ref, _attn_v_shift_mod.attn_v_shift),
    "lut_lookup": (lut_lookup_ref, lut_lookup),
    "avg_pool": (_avg_pool_mod.avg_pool_ref, _avg_pool_mod.avg_pool),
}
"""Op name -> (reference, Numba) pair with identical signatures."""

del (
    _attn_v_shift_mod,
    _avg_pool_mod,
    _gemm_mod,
    _isqrt_mod,
    _layernorm_mod,
    _log2_code_mod,
    _lut_mod,
    _rounding_mod,
    _softmax_mod,
)

__all__ = [
    "KERNELS",
    "MODE_IDS",
    "ROUNDING_MODES",
    "bmm_zp",
    "bmm_zp_ref",
    "exp2_lut",
    "gemm_zp",
    "gemm_zp_ref",
    "log2_thresholds",
    "lut_lookup",
    "lut_lookup_ref",
    "mode_id",
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
    "sqrt2_multiplier",
    "zero_state",
]
