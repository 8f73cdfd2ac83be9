"""Compatibility names: the fast kernels of the non-GEMM ops, each living in its op's module.

Every op's module holds its reference, its plain Numba twin and its fast kernel (the one the prepared plan
``repq_hw.emu.fast`` calls); fused chains live in ``kernels.fused``.  This module only re-exports the fast
kernels under the names earlier callers used:

===========================  ==============================================
name                         home
===========================  ==============================================
``requant_fast``,            ``kernels/rounding.py`` (requantize)
``RequantConsts``
``softmax_fast``             ``kernels/softmax.py``
``log2_code_table``,         ``kernels/log2_code.py``
``table_lookup``
``lookup_fast``              ``kernels/lut.py``
``layernorm_requant_fast``   ``kernels/layernorm.py``
``attn_v_fast``              ``kernels/attn_v_shift.py`` (``attn_v_shift_fast``)
``sat_add``                  ``kernels/add.py``
===========================  ==============================================
"""

from __future__ import annotations

from .add import sat_add
from .attn_v_shift import attn_v_shift_fast as attn_v_fast
from .layernorm import layernorm_requant_fast
from .log2_code import log2_code_table, table_lookup
from .lut import lookup_fast
from .rounding import PARALLEL_MIN_ELEMENTS, RequantConsts, requant_fast
from .softmax import softmax_fast

__all__ = [
    "PARALLEL_MIN_ELEMENTS",
    "RequantConsts",
    "attn_v_fast",
    "layernorm_requant_fast",
    "log2_code_table",
    "lookup_fast",
    "requant_fast",
    "sat_add",
    "softmax_fast",
    "table_lookup",
]
