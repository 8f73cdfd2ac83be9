"""Quantized layers and the explicit-attention replacements for timm's attention modules.

timm's attention may run fused (``scaled_dot_product_attention``), which cannot be hooked, so every
attention module is replaced by one that spells out ``q @ k^T``, softmax and ``attn @ v`` as
:class:`QuantMatMul` modules, with the placement of the softmax scale used by the RepQ-ViT reference:
ViT/DeiT scale after the product, Swin scales q before it.

With quantization switched off every module computes what the timm module it replaces computes.

During calibration (``quantizers.scratch_buffers`` active) the temporaries these modules own -- a
quantizer output that only feeds the next product, the attention scores and probabilities -- are written
into reused scratch buffers instead of fresh tensors; the operations and their operands' layouts are the
same (a matmul operand is quantized straight into the contiguous layout ``torch.matmul`` would copy it
to), so every value is too.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from repq_hw.quant.quantizers import LogSqrt2Quantizer, UniformQuantizer, scratch, scratch_active


def _quantize(quantizer: nn.Module, x: torch.Tensor, slot: str) -> torch.Tensor:
    """quantizer(x), its output in the named scratch slot while scratch buffers are active."""
    out = scratch(slot, x.shape, x)
    return quantizer(x) if out is None else quantizer(x, out=out)


class QuantLinear(nn.Module):
    """nn.Linear with an input quantizer and a per-output-channel weight quantizer.

    The layer always owns a bias (zeros where the original had none), so that scale
    reparameterization can fold into it and a saved calibrated model has one fixed structure.
    """

    def __init__(self, linear: nn.Linear, input_q: UniformQuantizer, weight_bits: int,
                 weight_method: str = "percentile"):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = nn.Parameter(linear.weight.detach().clone(), requires_grad=False)
        bias = linear.bias.detach().clone() if linear.bias is not None else linear.weight.new_zeros(self.out_features)
        self.bias = nn.Parameter(bias, requires_grad=False)
        self.input_quantizer = input_q
        self.weight_quantizer = UniformQuantizer(weight_bits, channel_wise=True, channel_axis=0,
                                                 method=weight_method)

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """out: an optional contiguous [..., out_features] tensor the result may be written into (the
        same addmm F.linear runs on a contiguous 3-D input); the result is what is returned."""
        xq = _quantize(self.input_quantizer, x, "linear_in")
        wq = _quantize(self.weight_quantizer, self.weight, "linear_w")
        if (out is not None and xq.dim() == 3 and xq.is_contiguous() and out.is_contiguous()
                and out.shape == (*xq.shape[:2], self.out_features) and out.dtype == xq.dtype):
            torch.addmm(self.bias, xq.view(-1, self.in_features), wq.t(), out=out.view(-1, self.out_features))
            return out
        return F.linear(xq, wq, self.bias)


class QuantConv2d(nn.Module):
    """The patch-embedding convolution: input quantized per tensor at 8 bits, weights per channel."""

    def __init__(self, conv: nn.Conv2d, input_q: UniformQuantizer, weight_bits: int,
                 weight_method: str = "percentile"):
        super().__init__()
        for attr in ("stride", "padding", "dilation", "groups", "in_channels", "out_channels", "kernel_size"):
            setattr(self, attr, getattr(conv, attr))
        if conv.padding_mode != "zeros":
            raise ValueError(f"unsupported conv padding_mode {conv.padding_mode!r} (expected 'zeros')")
        self.weight = nn.Parameter(conv.weight.detach().clone(), requires_grad=False)
        bias = conv.bias.detach().clone() if conv.bias is not None else conv.weight.new_zeros(conv.out_channels)
        self.bias = nn.Parameter(bias, requires_grad=False)
        self.input_quantizer = input_q
        self.weight_quantizer = UniformQuantizer(weight_bits, channel_wise=True, channel_axis=0,
                                                 method=weight_method)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight_quantizer(self.weight)
        return F.conv2d(self.input_quantizer(x), w, self.bias, self.stride, self.padding, self.dilation,
                        self.groups)


class QuantMatMul(nn.Module):
    """``A @ B`` with one quantizer per operand (per tensor)."""

    def __init__(self, quantizer_a: nn.Module, quantizer_b: nn.Module):
        super().__init__()
        self.quantizer_A = quantizer_a
        self.quantizer_B = quantizer_b

    def forward(self, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """out: an optional contiguous tensor for the product (``torch.matmul(..., out=out)``)."""
        qa = _quantize(self.quantizer_A, a, "matmul_a")
        qb = _quantize(self.quantizer_B, b, "matmul_b")
        return qa @ qb if out is None else torch.matmul(qa, qb, out=out)


class ExplicitAttention(nn.Module):
    """timm ``Attention`` (ViT/DeiT) with explicit matmuls: ``softmax((q @ k^T) * scale) @ v``."""

    def __init__(self, attn: nn.Module, matmul1: QuantMatMul, matmul2: QuantMatMul):
        super().__init__()
        self.num_heads, self.head_dim, self.scale = attn.num_heads, attn.head_dim, attn.scale
        self.attn_dim = attn.num_heads * attn.head_dim
        self.qkv, self.proj = attn.qkv, attn.proj
        self.matmul1, self.matmul2 = matmul1, matmul2

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
                is_causal: bool = False) -> torch.Tensor:
        if attn_mask is not None or is_causal:
            raise ValueError("ExplicitAttention: attention masks are not supported (ViT/DeiT use none)")
        B, N, _ = x.shape
        H, D = self.num_heads, self.head_dim
        if not scratch_active() or torch.is_grad_enabled():  # the plain forward (out= has no autograd)
            qkv = self.qkv(x).reshape(B, N, 3, H, D).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)
            attn = self.matmul1(q, k.transpose(-2, -1)) * self.scale
            attn = attn.softmax(dim=-1)
            x = self.matmul2(attn, v).transpose(1, 2).reshape(B, N, self.attn_dim)
            return self.proj(x)
        # calibration: the same operations, every temporary in a scratch buffer
        if isinstance(self.qkv, QuantLinear):
            qkv = self.qkv(x, out=scratch("qkv", (B, N, self.qkv.out_features), x))
        else:
            qkv = self.qkv(x)
        q, k, v = qkv.reshape(B, N, 3, H, D).permute(2, 0, 3, 1, 4).unbind(0)
        attn = self.matmul1(q, k.transpose(-2, -1), out=scratch("scores", (B, H, N, N), x))
        attn.mul_(self.scale)
        attn = torch.softmax(attn, dim=-1, out=scratch("probs", (B, H, N, N), x))
        o = self.matmul2(attn, v, out=scratch("attn_out", (B, H, N, D), x))
        merged = scratch("merged", (B, N, self.attn_dim), x)
        merged.view(B, N, H, D).copy_(o.transpose(1, 2))
        return self.proj(merged)


class ExplicitWindowAttention(nn.Module):
    """timm Swin ``WindowAttention`` with explicit matmuls: ``softmax(q*scale @ k^T + bias + mask) @ v``."""

    def __init__(self, attn: nn.Module, matmul1: QuantMatMul, matmul2: QuantMatMul):
        super().__init__()
        self.num_heads, self.scale = attn.num_heads, attn.scale
        self.window_area = attn.window_area
        self.relative_position_bias_table = attn.relative_position_bias_table
        self.register_buffer("relative_position_index", attn.relative_position_index.clone(),
                             persistent=False)
        self.qkv, self.proj = attn.qkv, attn.proj
        self.matmul1, self.matmul2 = matmul1, matmul2

    def rel_pos_bias(self) -> torch.Tensor:
        """[1, heads, N, N] relative position bias, gathered as timm does."""
        n = self.window_area
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        return bias.permute(2, 0, 1).contiguous().unsqueeze(0)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        B_, N, _ = x.shape
        qkv = self.qkv(x).reshape(B_, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = self.matmul1(q * self.scale, k.transpose(-2, -1)) + self.rel_pos_bias()
        if mask is not None:
            num_win = mask.shape[0]
            attn = attn.view(-1, num_win, self.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, N, N)
        attn = attn.softmax(dim=-1)
        x = self.matmul2(attn, v).transpose(1, 2).reshape(B_, N, -1)
        return self.proj(x)


def make_post_softmax_quantizer(a_bits: int, method: str, zero_state: str) -> nn.Module:
    """log-sqrt(2) for RepQ-ViT; a plain uniform min-max quantizer for the naive baseline."""
    if method == "minmax":
        return UniformQuantizer(a_bits, method="minmax")
    return LogSqrt2Quantizer(a_bits, zero_state=zero_state)
