"""RepQ-ViT quantizers (fake-quant, PyTorch side).

Two quantizers, as in the RepQ-ViT paper and its reference code (zkkli/RepQ-ViT, quant/quantizer.py):

* :class:`UniformQuantizer` -- asymmetric uniform quantizer. Codes are integers in [0, 2^b - 1],
  ``code = clamp(round(x / delta) + zero_point, 0, 2^b - 1)``, ``x_hat = (code - zero_point) * delta``.
  ``round`` is round-half-to-even (``torch.round``). Per tensor or per channel.
* :class:`LogSqrt2Quantizer` -- the post-Softmax log-sqrt(2) quantizer.
  ``raw = round(-2 * log2(x / delta))``; ``code = clamp(raw, 0, 2^b - 1)``;
  ``x_hat = delta * 2^(-code / 2)``, and ``x_hat = 0`` where ``raw >= 2^b`` (this includes x = 0).
  That is 2^b + 1 states, exactly as the reference code. ``zero_state="b_bit"`` is the inference form
  used by the integer pipeline: the smallest level (code 2^b - 1) also becomes the zero state, so that
  the code fits b bits (see docs/ops/log2_code.md).

Calibration ("percentile search"): for each candidate percentile p in {0.999, 0.9999, 0.99999}, take
``max = quantile(x, p)`` and ``min = quantile(x, 1 - p)`` (linear interpolation, as ``torch.quantile``),
``delta = (max - min) / (2^b - 1)``, ``zero_point = round(-min / delta)``, and keep the candidate with the
smallest mean squared error; ties keep the earlier candidate (the reference's strict ``<``). The
log-sqrt(2) quantizer searches ``delta = quantile(x, p)`` the same way.

Unlike the reference, the search is vectorised over channels: quantiles come from one ``topk`` per
tail (only the top 0.1 % of each channel is ever needed), and the three candidates are scored for all
channels at once. The quantile's fractional rank is computed in float64, so a value can differ from
``torch.quantile`` (which computes the rank in float32) by float32 rounding of the interpolation weight.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

PERCENTILES = (0.999, 0.9999, 0.99999)
MIN_BITS, MAX_BITS = 2, 8
# A channel whose calibration data is constant gets this smallest step instead of delta = 0
# (the reference code would divide by zero and produce NaN).
MIN_DELTA = 1e-8


def check_bits(n_bits: int, what: str = "n_bits") -> int:
    """Validate a bit width (2..8), raising ValueError that names the argument."""
    if not isinstance(n_bits, int) or isinstance(n_bits, bool) or not MIN_BITS <= n_bits <= MAX_BITS:
        raise ValueError(f"{what} must be an integer in {MIN_BITS}..{MAX_BITS}, got {n_bits!r}")
    return n_bits


def tail_quantiles(rows: torch.Tensor, probs: tuple[float, ...], upper: bool) -> torch.Tensor:
    """Quantiles near one tail of each row, with torch.quantile's linear interpolation.

    Args:
        rows: [C, n] float tensor; every row is one channel's calibration data.
        probs: quantile levels, all >= 0.99 (upper=True) or all <= 0.01 (upper=False).
        upper: which tail the levels lie in.

    Returns:
        [C, len(probs)] tensor of quantiles.
    """
    n = rows.shape[1]
    ranks = [p * (n - 1) for p in probs]  # float64 fractional ranks into the ascending sort
    # distance of the needed sorted positions from the tail, + 2 for the interpolation neighbour
    depth = [(n - 1 - math.floor(r)) if upper else math.ceil(r) for r in ranks]
    k = min(n, max(depth) + 2)
    tail = torch.topk(rows, k, dim=1, largest=upper, sorted=True).values  # tail[:, j] = j-th extreme
    out = []
    for r in ranks:
        lo, hi = math.floor(r), min(math.floor(r) + 1, n - 1)
        if upper:  # ascending position i is tail index n-1-i
            v_lo, v_hi = tail[:, n - 1 - lo], tail[:, n - 1 - hi]
        else:
            v_lo, v_hi = tail[:, lo], tail[:, hi]
        out.append(torch.lerp(v_lo, v_hi, torch.full_like(v_lo, r - lo)))
    return torch.stack(out, dim=1)


def uniform_search(rows: torch.Tensor, n_bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """RepQ-ViT's percentile search for asymmetric uniform quantization, for every row at once.

    Args:
        rows: [C, n] calibration data, one row per channel (C = 1 for per-tensor).
        n_bits: bit width b; codes lie in [0, 2^b - 1].

    Returns:
        (delta [C], zero_point [C]) float tensors; zero_point holds integers.
    """
    rows = rows.detach()
    levels = 2**n_bits - 1
    maxs = tail_quantiles(rows, PERCENTILES, upper=True)
    mins = tail_quantiles(rows, tuple(1.0 - p for p in PERCENTILES), upper=False)
    deltas = ((maxs - mins) / levels).clamp_min(MIN_DELTA)
    zps = torch.round(-mins / deltas)
    scores = []
    for j in range(len(PERCENTILES)):
        d, z = deltas[:, j : j + 1], zps[:, j : j + 1]
        # fake-quant then squared error, in place: one buffer instead of one per step (same arithmetic)
        err = rows.div(d).round_().add_(z).clamp_(0, levels).sub_(z).mul_(d)
        scores.append(err.sub_(rows).square_().mean(dim=1))
    best = torch.stack(scores, dim=1).argmin(dim=1)  # first minimum, as a strict "<" scan
    idx = torch.arange(rows.shape[0])
    return deltas[idx, best], zps[idx, best]


def minmax_search(rows: torch.Tensor, n_bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Naive baseline: delta and zero point from the plain min and max of each row."""
    rows = rows.detach()
    mx, mn = rows.max(dim=1).values, rows.min(dim=1).values
    delta = ((mx - mn) / (2**n_bits - 1)).clamp_min(MIN_DELTA)
    return delta, torch.round(-mn / delta)


def log_sqrt2_dequant(x: torch.Tensor, delta: torch.Tensor, n_bits: int, zero_state: str) -> torch.Tensor:
    """Fake-quantize with the log-sqrt(2) quantizer (see module docstring)."""
    levels = 2**n_bits
    raw = torch.round(-2.0 * torch.log2(x / delta))
    # NaN (x < 0 cannot occur after softmax) is treated like the zero state
    limit = levels if zero_state == "reference" else levels - 1
    zero = ~(raw < limit)
    code = torch.clamp(raw, 0, levels - 1)
    # delta * 2^(-code/2) written as the inference form: a shift by ceil(code/2), times sqrt(2) if odd
    odd = torch.remainder(code, 2)
    xq = delta * torch.exp2(-torch.ceil(code / 2)) * (1.0 + odd * (math.sqrt(2.0) - 1.0))
    return torch.where(zero, torch.zeros_like(xq), xq)


def log_sqrt2_codes(x: torch.Tensor, delta: torch.Tensor, n_bits: int) -> torch.Tensor:
    """b-bit integer codes of the inference form: 0..2^b-2 are levels, 2^b-1 is the zero state."""
    zero_code = 2**n_bits - 1
    raw = torch.round(-2.0 * torch.log2(x / delta))
    code = torch.clamp(raw, 0, zero_code)
    return torch.where(raw < zero_code, code, torch.full_like(code, zero_code)).to(torch.int64)


def log_sqrt2_search(flat: torch.Tensor, n_bits: int, zero_state: str) -> torch.Tensor:
    """Percentile search of delta for the log-sqrt(2) quantizer (per tensor)."""
    flat = flat.detach().reshape(1, -1)
    cands = tail_quantiles(flat, PERCENTILES, upper=True)[0]
    best, best_score = None, math.inf
    for d in cands:
        score = (flat - log_sqrt2_dequant(flat, d, n_bits, zero_state)).pow(2).mean().item()
        if score < best_score:
            best, best_score = d, score
    if best is None:  # every candidate gave NaN: degenerate (all-zero) input
        best = cands[-1]
    return best.clamp_min(MIN_DELTA)


class UniformQuantizer(nn.Module):
    """Asymmetric uniform fake-quantizer, calibrated on its first forward.

    Args:
        n_bits: bit width b (2..8).
        channel_wise: one (delta, zero_point) per channel instead of per tensor.
        channel_axis: the channel axis (0 for weights [out, in, ...], -1 for activations [..., C]).
        method: "percentile" (RepQ-ViT) or "minmax" (the naive baseline).
    """

    def __init__(self, n_bits: int, channel_wise: bool = False, channel_axis: int = -1,
                 method: str = "percentile"):
        super().__init__()
        self.n_bits = check_bits(n_bits)
        self.channel_wise = channel_wise
        self.channel_axis = channel_axis
        if method not in ("percentile", "minmax"):
            raise ValueError(f"method must be 'percentile' or 'minmax', got {method!r}")
        self.method = method
        self.register_buffer("delta", torch.ones(()))
        self.register_buffer("zero_point", torch.zeros(()))
        self.inited = False
        self.enabled = True
        self.on_init = None  # optional callback, used for calibration progress

    def extra_repr(self) -> str:
        return f"n_bits={self.n_bits}, channel_wise={self.channel_wise}, inited={self.inited}"

    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        if not self.channel_wise:
            return x.reshape(1, -1)
        return x.movedim(self.channel_axis, 0).reshape(x.shape[self.channel_axis], -1)

    def _broadcast(self, v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        v = v.to(x.dtype)
        if v.dim() == 0:
            return v
        shape = [1] * x.dim()
        shape[self.channel_axis] = -1
        return v.reshape(shape)

    def calibrate(self, x: torch.Tensor) -> None:
        """Set delta and zero_point from calibration data x."""
        search = uniform_search if self.method == "percentile" else minmax_search
        delta, zp = search(self._rows(x), self.n_bits)
        if not self.channel_wise:
            delta, zp = delta[0], zp[0]
        self.delta, self.zero_point = delta.to(x.device), zp.to(x.device)
        self.inited = True
        if self.on_init is not None:
            self.on_init(self)

    def set_params(self, delta: torch.Tensor, zero_point: torch.Tensor, channel_wise: bool) -> None:
        """Install explicit parameters (used by reparameterization and when loading)."""
        self.channel_wise = channel_wise
        self.delta, self.zero_point = delta.detach().clone(), zero_point.detach().clone()
        self.inited = True

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """Integer codes in [0, 2^b - 1] (as a float tensor holding integers)."""
        d, z = self._broadcast(self.delta, x), self._broadcast(self.zero_point, x)
        return torch.clamp(torch.round(x / d) + z, 0, 2**self.n_bits - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        if not self.inited:
            self.calibrate(x)
        d, z = self._broadcast(self.delta, x), self._broadcast(self.zero_point, x)
        return (self.codes(x) - z) * d


class LogSqrt2Quantizer(nn.Module):
    """Log-sqrt(2) fake-quantizer for post-Softmax activations (per tensor), calibrated on first use.

    Args:
        n_bits: bit width b (2..8).
        zero_state: "reference" (2^b + 1 states, as the RepQ-ViT code) or "b_bit" (inference form: the
            code 2^b - 1 is the zero state; see module docstring).
        method: "percentile" (RepQ-ViT); the naive baseline uses a UniformQuantizer instead.
    """

    def __init__(self, n_bits: int, zero_state: str = "reference"):
        super().__init__()
        self.n_bits = check_bits(n_bits)
        if zero_state not in ("reference", "b_bit"):
            raise ValueError(f"zero_state must be 'reference' or 'b_bit', got {zero_state!r}")
        self.zero_state = zero_state
        self.register_buffer("delta", torch.ones(()))
        self.inited = False
        self.enabled = True
        self.on_init = None

    def extra_repr(self) -> str:
        return f"n_bits={self.n_bits}, zero_state={self.zero_state}, inited={self.inited}"

    def calibrate(self, x: torch.Tensor) -> None:
        self.delta = log_sqrt2_search(x, self.n_bits, self.zero_state).to(x.device)
        self.inited = True
        if self.on_init is not None:
            self.on_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        if not self.inited:
            self.calibrate(x)
        return log_sqrt2_dequant(x, self.delta.to(x.dtype), self.n_bits, self.zero_state)
