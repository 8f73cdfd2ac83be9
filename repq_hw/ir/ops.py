"""The closed op set of the integer IR, grouped by what hardware they need.

Every op's semantics (widths, rounding, saturation) is specified in ``docs/ops/`` and defined by its
numpy reference in ``repq_hw/kernels``. All shapes in the IR are per image: executors add a leading
batch axis, and no op mixes images.
"""

from __future__ import annotations

from enum import Enum


class Op(str, Enum):
    # --- MAC ops: integer multiply-accumulate with zero points (docs/ops/gemm_zp.md)
    GEMM = "gemm"  # a[M,K] uint codes x W[N,K] uint codes (per-row zero points) + bias -> int32 [M,N]
    BMM_QK = "bmm_qk"  # q[H,N,d] x k[H,N,d] (row-wise second operand), per-tensor zero points -> int32
    # --- shift-and-add (no multiplier on the attention operand) (docs/ops/attn_v_shift.md)
    ATTN_V = "attn_v_shift"  # log2 codes [H,N,N] and v codes [H,N,d] -> int32 [H,N,d]
    # --- requantization (docs/ops/requantize.md)
    REQUANT = "requantize"  # int acc -> clamp(rshift(acc*M + offset, shift) + zp)
    # --- normalisation (docs/ops/layernorm.md)
    LAYERNORM = "layernorm"  # int32 residual [T,C] -> uint codes (integer stats, exact isqrt, folded affine)
    # --- table / threshold ops
    SOFTMAX = "softmax"  # int32 logits -> Q0.P probabilities (exp2 LUT, integer division) (softmax.md)
    LOG2_CODE = "log2_code"  # Q0.P probabilities -> b-bit log2 codes by threshold comparison (log2_code.md)
    LUT = "lut"  # table lookup, e.g. GELU (lut.md)
    # --- elementwise
    ADD = "add"  # saturating add of two tensors on the same grid (residual stream)
    ADD_CONST = "add_const"  # saturating add of an integer constant tensor (position embedding)
    # --- data movement (exact by construction)
    PATCHIFY = "patchify"  # [C,H,W] -> [H/p*W/p, C*p*p], the im2col of a stride-p, kernel-p convolution
    CONCAT_TOKENS = "concat_tokens"  # prepend constant rows (class token) -> [T+k, C]
    SLICE = "slice"  # last-axis slice [start:stop]
    SPLIT_HEADS = "split_heads"  # [N, H*d] -> [H, N, d]
    MERGE_HEADS = "merge_heads"  # [H, N, d] -> [N, H*d]
    SELECT_TOKEN = "select_token"  # [T, C] -> [1, C] (row index)


MAC_OPS = frozenset({Op.GEMM, Op.BMM_QK})
SHIFT_ADD_OPS = frozenset({Op.ATTN_V})
REQUANT_OPS = frozenset({Op.REQUANT, Op.LAYERNORM})
NORM_OPS = frozenset({Op.LAYERNORM})
TABLE_OPS = frozenset({Op.SOFTMAX, Op.LOG2_CODE, Op.LUT})
ELEMENTWISE_OPS = frozenset({Op.ADD, Op.ADD_CONST})
DATA_MOVEMENT_OPS = frozenset({Op.PATCHIFY, Op.CONCAT_TOKENS, Op.SLICE, Op.SPLIT_HEADS, Op.MERGE_HEADS,
                               Op.SELECT_TOKEN})
# ops with a rounding step: each carries an explicit `rounding` attribute
ROUNDING_OPS = frozenset({Op.REQUANT, Op.LAYERNORM, Op.SOFTMAX, Op.ATTN_V})

ALL_GROUPS = (MAC_OPS, SHIFT_ADD_OPS, REQUANT_OPS, TABLE_OPS, ELEMENTWISE_OPS, DATA_MOVEMENT_OPS)
assert set().union(*ALL_GROUPS) == set(Op), "every op belongs to a group"
