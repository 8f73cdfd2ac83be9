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
    ADD_CONST = "add_const"  # saturating add of a constant tiled along axis 0 (position embedding, Swin bias+mask)
    # --- pooling (docs/ops/avg_pool.md)
    AVG_POOL = "avg_pool"  # [T, C] -> [1, C]: per-channel sum over the tokens, rounding division by T
    # --- data movement (exact by construction)
    PATCHIFY = "patchify"  # [C,H,W] -> [H/p*W/p, C*p*p], the im2col of a stride-p, kernel-p convolution
    CONCAT_TOKENS = "concat_tokens"  # prepend constant rows (class token) -> [T+k, C]
    SLICE = "slice"  # last-axis slice [start:stop]
    SPLIT_HEADS = "split_heads"  # [G*N, H*d] -> [G*H, N, d] (G = `windows`, 1 for ViT)
    MERGE_HEADS = "merge_heads"  # [G*H, N, d] -> [G*N, H*d]
    SELECT_TOKEN = "select_token"  # [T, C] -> [1, C] (row index)
    WINDOW_PARTITION = "window_partition"  # [H*W, C] -> [nW*w*w, C]: cyclic shift, pad, Swin windows
    WINDOW_REVERSE = "window_reverse"  # [nW*w*w, C] -> [H*W, C]: windows back, crop, reverse shift
    PATCH_MERGE = "patch_merge"  # [H*W, C] -> [ceil(H/2)*ceil(W/2), 4C]: Swin's 2x2 gather (zero pad)


MAC_OPS = frozenset({Op.GEMM, Op.BMM_QK})
SHIFT_ADD_OPS = frozenset({Op.ATTN_V})
REQUANT_OPS = frozenset({Op.REQUANT, Op.LAYERNORM})
NORM_OPS = frozenset({Op.LAYERNORM})
TABLE_OPS = frozenset({Op.SOFTMAX, Op.LOG2_CODE, Op.LUT})
ELEMENTWISE_OPS = frozenset({Op.ADD, Op.ADD_CONST})
POOL_OPS = frozenset({Op.AVG_POOL})
DATA_MOVEMENT_OPS = frozenset({Op.PATCHIFY, Op.CONCAT_TOKENS, Op.SLICE, Op.SPLIT_HEADS, Op.MERGE_HEADS,
                               Op.SELECT_TOKEN, Op.WINDOW_PARTITION, Op.WINDOW_REVERSE, Op.PATCH_MERGE})
# ops with a rounding step: each carries an explicit `rounding` attribute
ROUNDING_OPS = frozenset({Op.REQUANT, Op.LAYERNORM, Op.SOFTMAX, Op.ATTN_V, Op.AVG_POOL})

ALL_GROUPS = (MAC_OPS, SHIFT_ADD_OPS, REQUANT_OPS, TABLE_OPS, ELEMENTWISE_OPS, POOL_OPS, DATA_MOVEMENT_OPS)
assert set().union(*ALL_GROUPS) == set(Op), "every op belongs to a group"
