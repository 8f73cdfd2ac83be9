"""RepQ-ViT quantizers (fake-quant, PyTorch side).

Two quantizers, as in the RepQ-ViT paper and its reference code (zkkli/RepQ-ViT, quant/quantizer.py):

* :class:`UniformQuantizer` -- asymmetric uniform quantizer. Codes are integers in [0, 2^b - 1],
  ``code = clamp(round(x / delta) + zero_point, 0, 2^b - 1)``, ``x_hat = (code - zero_point) * delta``.
  ``round`` is round-half-to-even (``torch.round``). Per tensor or per channel.
* :class:`LogSqrt2Quantizer` -- the post-Softmax log-sqrt(2) quantizer.
  ``raw = round(-2 * log2(x / delta))``; ``code = clamp(raw, 0, 2^b - 1)``;
  ``x_hat = delta * 2^(-code / 2)``, and ``x_hat = 0`` where ``raw >= 2^b`` (this includes x = 0).
  x_hat is read from a float32 table of the 2^b levels (:func:`log_sqrt2_table`).
  That is 2^b + 1 states, exactly as the reference code. ``zero_state="b_bit"`` is the inference form
  used by the integer pipeline: the smallest level (code 2^b - 1) also becomes the zero state, so that
  the code fits b bits (see docs/ops/log2_code.md).

Calibration ("percentile search"): for each candidate percentile p in {0.999, 0.9999, 0.99999}, take
``max = quantile(x, p)`` and ``min = quantile(x, 1 - p)`` (linear interpolation, as ``torch.quantile``),
``delta = (max - min) / (2^b - 1)``, ``zero_point = round(-min / delta)``, and keep the candidate with the
smallest mean squared error; ties keep the earlier candidate (the reference's strict ``<``). The
log-sqrt(2) quantizer searches ``delta = quantile(x, p)`` the same way.

Unlike the reference, the search is vectorised over channels and never sorts a whole channel: the
quantiles need only the top and bottom 0.1 % of each row (:func:`row_extremes`), and the candidates
are scored for all channels at once. The quantile's fractional rank is computed in float64, so a value
can differ from ``torch.quantile`` (which computes the rank in float32) by float32 rounding of the
interpolation weight.

float32 CPU data goes through the Numba kernels of ``fused.py`` (one pass per chunk instead of ~9 torch
passes per candidate): they return the same extremes and uniform dequantized values bit for bit, round
-2 log2 exactly where torch's float32 log2 may err by an ulp, and sum the squared errors in float64
(torch: float32), so two candidates whose scores differ by float32 rounding may rank differently from
the torch expressions. The torch expressions here remain the definition and run for every other dtype or
device; the fake-quant forward of either quantizer computes the definition (the uniform one through a
bit-identical Numba kernel).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn

from repq_hw.quant import fused

PERCENTILES = (0.999, 0.9999, 0.99999)
MIN_BITS, MAX_BITS = 2, 8
# A channel whose calibration data is constant gets this smallest step instead of delta = 0
# (the reference code would divide by zero and produce NaN).
MIN_DELTA = 1e-8


def _fusable(x: torch.Tensor) -> bool:
    """float32 CPU tensors take the Numba kernels of fused.py; anything else the torch expressions."""
    return x.dtype == torch.float32 and x.device.type == "cpu"


def _fast_forward_ok(x: torch.Tensor) -> bool:
    """The fake-quant forward may run a Numba kernel: float32 on the CPU, not empty, and no autograd graph
    to keep (the kernels return plain tensors)."""
    return _fusable(x) and x.numel() > 0 and not (x.requires_grad and torch.is_grad_enabled())


def check_calibration_data(x: torch.Tensor, who: str, shape: tuple | None = None) -> None:
    """Refuse calibration data holding NaN or inf, naming the quantizer (the searches assume finite data)."""
    if _fusable(x) and x.is_contiguous():
        bad = fused.count_nonfinite(x.detach().numpy())
    else:
        bad = int((~torch.isfinite(x)).sum().item())
    if bad:
        raise ValueError(f"quantizer {who or '(unnamed)'}: calibration data of shape {shape or tuple(x.shape)} holds "
                         f"{bad} NaN/inf values; expected finite activations")


def check_bits(n_bits: int, what: str = "n_bits") -> int:
    """Validate a bit width (2..8), raising ValueError that names the argument."""
    if not isinstance(n_bits, int) or isinstance(n_bits, bool) or not MIN_BITS <= n_bits <= MAX_BITS:
        raise ValueError(f"{what} must be an integer in {MIN_BITS}..{MAX_BITS}, got {n_bits!r}")
    return n_bits


# A single row longer than this is not handed to one big ``topk``: a threshold taken from a strided
# sample first discards the bulk of the row (see :func:`row_extremes`).
FILTER_MIN_ELEMENTS = 1 << 17
FILTER_SAMPLE = 1 << 16


def _sample_stride(n: int) -> int:
    """A stride giving ~FILTER_SAMPLE samples, odd and not a multiple of 3, so that it does not alias
    with the channel counts (multiples of 2 and 3) of a flattened [tokens, channels] activation."""
    s = max(1, n // FILTER_SAMPLE)
    while s % 2 == 0 or s % 3 == 0:
        s += 1
    return s


def _long_row_extremes(flat: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Threshold filter for one long finite float32 row: thresholds read off a strided sample leave
    ~2k elements beyond each; if at least k lie beyond both, the k extremes of the row are exactly the
    k extremes of those (the k-th extreme then lies beyond the threshold too). None if not."""
    n = flat.shape[0]
    sample = flat[:: _sample_stride(n)]
    m = sample.shape[0]
    j = min(m, 2 * math.ceil(k * m / n) + 16)
    t_hi = np.partition(sample, m - j)[m - j]  # the j-th largest sample
    t_lo = np.partition(sample, j - 1)[j - 1]  # the j-th smallest sample
    hi, lo = fused.beyond_thresholds(flat, t_hi, t_lo)
    if hi.shape[0] < k or lo.shape[0] < k:
        return None
    return np.sort(hi)[::-1][:k], np.sort(lo)[:k]


def row_extremes(rows: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest (descending) and k smallest (ascending) values of each row of rows [C, n]:
    exactly ``topk(rows, k, dim=1, largest=True/False).values``. Rows must be finite.

    float32 CPU rows take Numba paths (a threshold filter for one long row, insertion buffers for small
    k); the values are copied, never computed, so every path returns the same numbers as topk.
    """
    C, n = rows.shape
    if _fusable(rows):
        a = rows.contiguous().numpy()
        if C == 1 and n >= FILTER_MIN_ELEMENTS and 16 * k <= n:
            got = _long_row_extremes(a[0], k)
            if got is not None:
                return torch.from_numpy(got[0].copy())[None], torch.from_numpy(got[1].copy())[None]
        if k <= fused.SMALL_K:
            up, lo = fused.row_tails(a, k)
            return torch.from_numpy(up), torch.from_numpy(lo)
    return (torch.topk(rows, k, dim=1, largest=True, sorted=True).values,
            torch.topk(rows, k, dim=1, largest=False, sorted=True).values)


def _tail_depth(n: int, probs: tuple[float, ...], upper: bool) -> int:
    """How many extremes the quantiles at probs need (+2 for the interpolation neighbour)."""
    ranks = [p * (n - 1) for p in probs]
    depth = [(n - 1 - math.floor(r)) if upper else math.ceil(r) for r in ranks]
    return min(n, max(depth) + 2)


def _interpolate(tail: torch.Tensor, n: int, probs: tuple[float, ...], upper: bool) -> torch.Tensor:
    """torch.quantile's linear interpolation from the sorted extremes of each row."""
    out = []
    for p in probs:
        r = p * (n - 1)  # float64 fractional rank into the ascending sort
        lo, hi = math.floor(r), min(math.floor(r) + 1, n - 1)
        if upper:  # ascending position i is tail index n-1-i
            v_lo, v_hi = tail[:, n - 1 - lo], tail[:, n - 1 - hi]
        else:
            v_lo, v_hi = tail[:, lo], tail[:, hi]
        out.append(torch.lerp(v_lo, v_hi, torch.full_like(v_lo, r - lo)))
    return torch.stack(out, dim=1)


def percentile_bounds(rows: torch.Tensor, probs: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """(quantile(rows, p), quantile(rows, 1 - p)) for each p in probs (all >= 0.99), per row: [C, P] each.

    Quantiles use torch.quantile's linear interpolation, but the fractional rank is computed in float64
    (torch uses float32), so the interpolation weight can differ by float32 rounding. Rows must be finite.
    """
    n = rows.shape[1]
    lows = tuple(1.0 - p for p in probs)
    k = max(_tail_depth(n, probs, True), _tail_depth(n, lows, False))
    up, lo = row_extremes(rows, k)
    return _interpolate(up, n, probs, True), _interpolate(lo, n, lows, False)


def tail_quantiles(rows: torch.Tensor, probs: tuple[float, ...], upper: bool) -> torch.Tensor:
    """Quantiles near one tail of each row (see :func:`percentile_bounds`).

    Args:
        rows: [C, n] finite float tensor; every row is one channel's calibration data.
        probs: quantile levels, all >= 0.99 (upper=True) or all <= 0.01 (upper=False).
        upper: which tail the levels lie in.

    Returns:
        [C, len(probs)] tensor of quantiles.
    """
    n = rows.shape[1]
    up, lo = row_extremes(rows, _tail_depth(n, probs, upper))
    return _interpolate(up if upper else lo, n, probs, upper)


def uniform_scores_torch(rows: torch.Tensor, deltas: torch.Tensor, zps: torch.Tensor, n_bits: int) -> torch.Tensor:
    """Mean squared fake-quantization error [C, K] of rows [C, n] for candidates deltas, zps [C, K].

    The definition (torch expressions, float32 mean); :func:`_uniform_scores` runs the fused kernel of
    ``fused.py`` instead where it applies.
    """
    levels = 2**n_bits - 1
    scores = []
    for j in range(deltas.shape[1]):
        d, z = deltas[:, j : j + 1], zps[:, j : j + 1]
        # fake-quant then squared error, in place: one buffer instead of one per step (same arithmetic)
        err = rows.div(d).round_().add_(z).clamp_(0, levels).sub_(z).mul_(d)
        scores.append(err.sub_(rows).square_().mean(dim=1))
    return torch.stack(scores, dim=1)


def _uniform_scores(rows: torch.Tensor, deltas: torch.Tensor, zps: torch.Tensor, n_bits: int) -> torch.Tensor:
    if not _fusable(rows):
        return uniform_scores_torch(rows, deltas, zps, n_bits)
    sums = fused.uniform_sq_err(rows.contiguous().numpy(), deltas.numpy(), zps.numpy(), 2**n_bits - 1)
    return torch.from_numpy(sums / rows.shape[1])


def uniform_search(rows: torch.Tensor, n_bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """RepQ-ViT's percentile search for asymmetric uniform quantization, for every row at once.

    Args:
        rows: [C, n] calibration data without NaN, one row per channel (C = 1 for per-tensor).
        n_bits: bit width b; codes lie in [0, 2^b - 1].

    Returns:
        (delta [C], zero_point [C]) float tensors; zero_point holds integers.
    """
    rows = rows.detach()
    levels = 2**n_bits - 1
    maxs, mins = percentile_bounds(rows, PERCENTILES)
    deltas = ((maxs - mins) / levels).clamp_min(MIN_DELTA)
    zps = torch.round(-mins / deltas)
    scores = _uniform_scores(rows, deltas, zps, n_bits)
    best = scores.argmin(dim=1)  # first minimum, as a strict "<" scan
    idx = torch.arange(rows.shape[0])
    return deltas[idx, best], zps[idx, best]


def minmax_search(rows: torch.Tensor, n_bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Naive baseline: delta and zero point from the plain min and max of each row."""
    rows = rows.detach()
    mx, mn = rows.max(dim=1).values, rows.min(dim=1).values
    delta = ((mx - mn) / (2**n_bits - 1)).clamp_min(MIN_DELTA)
    return delta, torch.round(-mn / delta)


def log_sqrt2_raw(x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """raw = round(-2 * log2(x / delta)) in float32, as the reference code computes it.

    q <= 0 gives +inf or NaN (the zero state); float32 log2 may put an element whose -2 log2 q lies
    within its rounding error of a half-integer on the other side (``fused.py`` rounds exactly).
    """
    return torch.log2(x / delta).mul_(-2.0).round_()


def log_sqrt2_table(delta: torch.Tensor | float, n_bits: int) -> torch.Tensor:
    """The 2^b + 1 dequantized values, float32: entry c < 2^b is delta * 2^-ceil(c/2) * (sqrt2 if c odd)
    (a shift plus the sqrt(2) correction of the inference form), evaluated as the float32 expression
    ``delta * exp2(-shift) * (1 + odd * (sqrt2 - 1))``; the last entry, 0.0, is the zero state. Shared
    by the torch path and the Numba kernels, so both read the same bits."""
    c = torch.arange(2**n_bits, dtype=torch.float32)
    shift = torch.ceil(c / 2)
    odd = shift * 2 - c  # 1.0 for odd codes, 0.0 for even
    d = torch.as_tensor(delta, dtype=torch.float32)
    vals = d * torch.exp2(-shift) * (1.0 + odd * (math.sqrt(2.0) - 1.0))
    return torch.cat([vals, torch.zeros(1)])


def _log_index(raw: torch.Tensor, n_bits: int, zero_state: str) -> torch.Tensor:
    """Index into log_sqrt2_table: the code, or 2^b for the zero state."""
    levels = 2**n_bits
    limit = _log_limit(n_bits, zero_state)
    return torch.where(raw < limit, raw.clamp(0, levels - 1), torch.full_like(raw, levels)).to(torch.int64)


def log_sqrt2_dequant(x: torch.Tensor, delta: torch.Tensor, n_bits: int, zero_state: str) -> torch.Tensor:
    """Fake-quantize with the log-sqrt(2) quantizer (see module docstring): the definition."""
    table = log_sqrt2_table(delta, n_bits).to(x.dtype)
    return table[_log_index(log_sqrt2_raw(x, delta), n_bits, zero_state)]


def log_sqrt2_codes(x: torch.Tensor, delta: torch.Tensor, n_bits: int) -> torch.Tensor:
    """b-bit integer codes of the inference form: 0..2^b-2 are levels, 2^b-1 is the zero state."""
    return _log_index(log_sqrt2_raw(x, delta), n_bits, "b_bit").clamp_max(2**n_bits - 1)


def log_sqrt2_scores_torch(flat: torch.Tensor, deltas: torch.Tensor, n_bits: int, zero_state: str) -> list[float]:
    """Mean squared error of the log-sqrt(2) fake-quantization of flat for each candidate delta (the
    definition; ``fused.py`` holds the one-pass kernel)."""
    return [(flat - log_sqrt2_dequant(flat, d, n_bits, zero_state)).pow(2).mean().item() for d in deltas]


def _log_limit(n_bits: int, zero_state: str) -> int:
    return 2**n_bits if zero_state == "reference" else 2**n_bits - 1


def log_sqrt2_search(flat: torch.Tensor, n_bits: int, zero_state: str) -> torch.Tensor:
    """Percentile search of delta for the log-sqrt(2) quantizer (per tensor)."""
    flat = flat.detach().reshape(1, -1)
    cands = percentile_bounds(flat, PERCENTILES)[0][0]
    if _fusable(flat):
        tables = torch.stack([log_sqrt2_table(d, n_bits) for d in cands])
        sums = fused.log_sqrt2_sq_err(flat.contiguous().numpy(), cands.numpy(), tables.numpy(),
                                      _log_limit(n_bits, zero_state))
        scores = (sums / flat.shape[1]).tolist()
    else:
        scores = log_sqrt2_scores_torch(flat, cands, n_bits, zero_state)
    best, best_score = None, math.inf
    for d, score in zip(cands, scores):
        if score < best_score:  # strict: the first of equal scores wins; NaN never wins
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
        self.name = ""  # the module path, set by calibrate(), for error messages

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
        rows = self._rows(x.detach()).contiguous()  # a copy unless x is contiguous and per tensor
        check_calibration_data(rows, self.name, tuple(x.shape))
        search = uniform_search if self.method == "percentile" else minmax_search
        delta, zp = search(rows, self.n_bits)
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
        if _fast_forward_ok(x):
            out = self._fused_forward(x)
            if out is not None:
                return out
        d, z = self._broadcast(self.delta, x), self._broadcast(self.zero_point, x)
        return (self.codes(x) - z) * d

    def _fused_forward(self, x: torch.Tensor) -> torch.Tensor | None:
        """The same float32 arithmetic in one Numba pass, bit-identical (see fused.py); the output has
        the strides torch's element-wise ops would give it. None where no kernel fits the layout."""
        out = torch.empty_like(x)  # torch's allocator: far fewer page faults than a fresh numpy array
        d, z = self.delta.to(x.dtype), self.zero_point.to(x.dtype)
        levels = 2**self.n_bits - 1
        if x.is_contiguous():
            inner = x.numel() if d.dim() == 0 else math.prod(x.shape[self.channel_axis % x.dim() + 1 :])
            fused.fake_quant_uniform(x.detach().numpy(), d.numpy(), z.numpy(), levels, inner, out.numpy())
            return out
        if d.dim() == 0 and x.dim() <= 4:  # per tensor, a strided view (q, k^T, v of the attention)
            order = sorted(range(x.dim()), key=lambda i: -out.stride(i))  # out's memory order
            fused.fake_quant_strided(x.detach().permute(order).numpy(), d.item(), z.item(), levels,
                                     out.permute(order).numpy())
            return out
        return None


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
        self.name = ""

    def extra_repr(self) -> str:
        return f"n_bits={self.n_bits}, zero_state={self.zero_state}, inited={self.inited}"

    def calibrate(self, x: torch.Tensor) -> None:
        check_calibration_data(x, self.name)
        self.delta = log_sqrt2_search(x, self.n_bits, self.zero_state).to(x.device)
        self.inited = True
        if self.on_init is not None:
            self.on_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        if not self.inited:
            self.calibrate(x)
        d = self.delta.to(x.dtype)
        if _fast_forward_ok(x) and x.is_contiguous():
            # torch's float32 log2 (the definition's), then one Numba pass for the rest: bit-identical
            log2q = torch.div(x.detach(), d).log2_()
            fused.log_sqrt2_from_log2(log2q.numpy(), log_sqrt2_table(d, self.n_bits).numpy(),
                                      _log_limit(self.n_bits, self.zero_state), log2q.numpy())
            return log2q
        return log_sqrt2_dequant(x, d, self.n_bits, self.zero_state)
