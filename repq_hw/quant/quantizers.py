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
are scored for all channels at once. The quantiles are nevertheless exactly ``torch.quantile``'s: its
rank and interpolation arithmetic is restated on the extremes (see "torch.quantile's arithmetic" below:
q rounded to float32, the rank in double or, in older torch, in float32, torch's lerp with or without a
fused multiply-add, detected once from the running torch), and where an older torch refuses a row of
more than 2^24 elements the value is the reference's ``np.percentile`` fallback. Both calibration modes
(``zero_point="round"`` and the reference mode ``"mean"``) use these quantiles.

float32 CPU data goes through the Numba kernels of ``fused.py`` (one pass per chunk instead of ~9 torch
passes per candidate): they return the same extremes and uniform dequantized values bit for bit, round
-2 log2 exactly where torch's float32 log2 may err by an ulp, and sum the squared errors in float64
(torch: float32). Where that could matter -- a row whose best two float64 scores lie within
``SCORE_TIE_BAND`` (1e-4 relative) -- the choice is re-made with the reference's own float32 torch
expression on the reference's view of the data (:func:`reference_uniform_score`,
:func:`reference_log_sqrt2_score`); such rows are rare (a handful per model), so the search keeps the
reference's choice at the kernels' speed. The torch expressions here remain the definition and run for
every other dtype or device; the fake-quant forward of either quantizer computes the definition (the
uniform one through a bit-identical Numba kernel).
"""

from __future__ import annotations

import contextlib
import math
import threading
import warnings
from dataclasses import dataclass

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


def _cpu_f32(x: torch.Tensor) -> bool:
    """float32 on the CPU: the quantiles are restated from the tails (torch.quantile's CPU arithmetic,
    detected from the running torch); other dtypes and devices call torch.quantile itself."""
    return x.dtype == torch.float32 and x.device.type == "cpu"


def _fast_forward_ok(x: torch.Tensor) -> bool:
    """The fake-quant forward may run a Numba kernel: float32 on the CPU, not empty, and no autograd graph
    to keep (the kernels return plain tensors)."""
    return _fusable(x) and x.numel() > 0 and not (x.requires_grad and torch.is_grad_enabled())


# ---------------------------------------------------------------------------------------------------
# Scratch buffers for the calibration forward.
#
# On this project's machines a fresh tensor is mostly page faults: torch's CPU allocator hands large
# tensors to malloc, which maps new pages for every one above its mmap threshold (and often for smaller
# ones too), and every first touch of a 4 KiB page costs more than the arithmetic done on it. While
# scratch_buffers() is active (calibrate() runs its forward inside it), the temporaries whose lifetime
# the quantized modules know -- a quantizer's output that only feeds the next matmul or linear, the
# contiguous copy a search runs on, the attention scores -- live in one reused buffer per named slot.
# Only the memory is reused: every value is computed by the same operations as without the slots.


class _Scratch(threading.local):
    bufs: dict | None = None


_scratch = _Scratch()


@contextlib.contextmanager
def scratch_buffers():
    """While active (on this thread), :func:`scratch` hands out reused buffers; they are freed on exit.
    A tensor taken from a slot is valid until the next :func:`scratch` call for the same slot."""
    prev = _scratch.bufs
    _scratch.bufs = {}
    try:
        yield
    finally:
        _scratch.bufs = prev


def scratch_active() -> bool:
    return _scratch.bufs is not None


def scratch(slot: str, shape, like: torch.Tensor) -> torch.Tensor | None:
    """A contiguous tensor of the given shape (like's dtype and device, uninitialised) in the named slot's
    reused buffer while :func:`scratch_buffers` is active; None when it is not."""
    bufs = _scratch.bufs
    if bufs is None:
        return None
    n = math.prod(shape)
    buf = bufs.get(slot)
    if buf is None or buf.numel() < n or buf.dtype != like.dtype or buf.device != like.device:
        buf = bufs[slot] = torch.empty(n, dtype=like.dtype, device=like.device)
    return buf[:n].view(shape)


def _fits(out: torch.Tensor | None, x: torch.Tensor) -> bool:
    """out may receive the fake-quantized x: same shape and dtype, contiguous."""
    return out is not None and out.shape == x.shape and out.dtype == x.dtype and out.is_contiguous()


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
    part = np.partition(sample, (j - 1, m - j))  # one selection for both order statistics
    t_hi = part[m - j]  # the j-th largest sample
    t_lo = part[j - 1]  # the j-th smallest sample
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


# ---------------------------------------------------------------------------------------------------
# torch.quantile's arithmetic, restated on the tails of each row.
#
# torch.quantile(x, q) (linear interpolation; ATen, aten/src/ATen/native/Sorting.cpp, quantile_compute)
# takes q as a tensor of x's dtype (the Python float is rounded to float32 first: 0.999 becomes
# 0.99900001287...), forms the rank r = q * (n - 1), gathers the sorted values at trunc(r) and ceil(r) and
# interpolates with at::lerp, weight w = r - trunc(r) in x's dtype. Two generations of that arithmetic:
#   * "float64" ranks (PyTorch PR #187574, in the torch this project pins): r is computed in double from
#     the float32 q, w = float32(r - trunc(r)); no size limit on CPU;
#   * "float32" ranks (older torch): r = float32(q * float32(n - 1)), w = r - trunc(r) exactly, and rows
#     of more than 2^24 elements are refused ("quantile() input tensor is too large"); the RepQ-ViT code
#     then falls back to np.percentile(x, 100 * q) on the whole tensor, rounded to float32.
# at::lerp (aten/src/ATen/native/Lerp.h, lerp and is_lerp_weight_small), all in float32 (opmath of float)
# with d = b - a: a + w * d for |w| < 0.5, else b - d * (1 - w). The vectorised CPU kernel
# (native/cpu/LerpKernel.cpp, lerp_vec) writes the same as one vec::fmadd(w or w - 1, d, a or b); the
# one-element lerp of torch.quantile runs the scalar lerp, and measured on torch 2.14.1 it is rounded once
# (a fused multiply-add) under the AVX2 and AVX-512 capabilities and twice (product, then sum) under
# "default". Which of the four combinations the running torch computes is detected once, by probing
# torch itself (:func:`torch_quantile_arithmetic`); if none fits, the quantiles are taken from
# torch.quantile itself, one row at a time (exact, slower).

QUANTILE_F32_RANK_LIMIT = 1 << 24  # older torch refuses longer rows (float32 ranks)


def _round_f64_to_f32(s: np.ndarray, err: np.ndarray) -> np.ndarray:
    """float32 nearest (ties to even) to the exact value s + err, where s is a float64 and |err| is at most
    half an ulp of s: float32(s) unless s lies exactly half-way between two float32s and err breaks the tie."""
    with np.errstate(over="ignore", invalid="ignore"):
        r = s.astype(np.float32)
        r64 = r.astype(np.float64)
        other = np.where(r64 > s, np.nextafter(r, np.float32(-np.inf)), np.nextafter(r, np.float32(np.inf)))
        half_way = (r64 + other.astype(np.float64)) * 0.5 == s  # exact: two adjacent float32s fit a double
        fix = half_way & (err != 0) & np.isfinite(s)
        toward = np.where(err > 0, np.maximum(r, other), np.minimum(r, other))
    return np.where(fix, toward, r)


def fma_f32(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """x * y + z of float32 arrays, rounded once to float32 (a fused multiply-add).

    x * y is exact in float64 (24 + 24 significant bits); the sum is rounded to float64 with its exact
    error (TwoSum), and the float32 rounding uses that error to settle a double-rounding tie."""
    x, y, z = (np.asarray(v, dtype=np.float32).astype(np.float64) for v in (x, y, z))
    p = x * y
    s = p + z
    bp = s - p
    err = (p - (s - bp)) + (z - bp)
    return _round_f64_to_f32(s, err)


def torch_lerp_f32(a: np.ndarray, b: np.ndarray, w: np.float32, fused_madd: bool) -> np.ndarray:
    """at::lerp(a, b, w) in float32 (see the comment above): a + w (b - a) for |w| < 0.5, else
    b - (b - a)(1 - w); with fused_madd each multiply-add is rounded once."""
    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    w = np.float32(w)
    d = b - a
    one = np.float32(1.0)
    if abs(w) < 0.5:
        return fma_f32(w, d, a) if fused_madd else a + w * d
    return fma_f32(w - one, d, b) if fused_madd else b - d * (one - w)


def torch_quantile_rank(n: int, q: float, rank: str) -> tuple[int, int, np.float32]:
    """(trunc(r), ceil(r), weight) of torch.quantile's rank r = q * (n - 1), q rounded to float32 first;
    rank "float64" (current torch) or "float32" (older torch)."""
    qf = np.float32(q)
    if rank == "float64":
        r = float(qf) * float(n - 1)
        lo = int(r)
        return lo, math.ceil(r), np.float32(r - lo)
    r32 = qf * np.float32(n - 1)  # n - 1 < 2^24: exact in float32
    lo = int(r32)
    return lo, math.ceil(float(r32)), np.float32(r32 - np.float32(lo))


@dataclass(frozen=True)
class QuantileArithmetic:
    """How the running torch computes torch.quantile (see the comment above :func:`fma_f32`)."""

    rank: str  # "float64" or "float32"
    fused_madd: bool  # lerp rounded once (FMA) or twice

    @property
    def size_limit(self) -> int | None:
        return QUANTILE_F32_RANK_LIMIT if self.rank == "float32" else None


QUANTILE_ARITHMETICS = tuple(QuantileArithmetic(r, f) for r in ("float64", "float32") for f in (True, False))
_detected: list = []  # [QuantileArithmetic | None] once detected


def _lerp_probes() -> list[tuple[np.float32, np.float32, np.float32]]:
    """Fixed (a, b, w) triples, both weight branches, on which the fused and unfused lerp differ."""
    rng = np.random.default_rng(12)
    a = rng.standard_normal(4096).astype(np.float32)
    b = (a + rng.standard_normal(4096).astype(np.float32) * np.float32(3.0)).astype(np.float32)
    out = []
    for w in (np.float32(0.1234567), np.float32(0.7654321)):
        diff = np.flatnonzero(torch_lerp_f32(a, b, w, True) != torch_lerp_f32(a, b, w, False))[:4]
        out += [(a[i], b[i], w) for i in diff]
    return out


def torch_quantile_arithmetic() -> QuantileArithmetic | None:
    """Which :data:`QUANTILE_ARITHMETICS` entry the running torch computes (probed once: torch.lerp on
    one-element float32 tensors, the path torch.quantile takes, and torch.quantile on a few rows), or None
    if none reproduces it."""
    if _detected:
        return _detected[0]
    found = None
    probes = _lerp_probes()
    a = torch.tensor([p[0] for p in probes])
    b = torch.tensor([p[1] for p in probes])
    w = torch.tensor([p[2] for p in probes])
    got = np.array([torch.lerp(a[i : i + 1], b[i : i + 1], w[i : i + 1]).item() for i in range(len(probes))],
                   dtype=np.float32)
    rng = np.random.default_rng(5)
    rows = [rng.standard_normal(n).astype(np.float32) for n in (1001, 4099, 20011, 100003)]
    want = [[np.float32(torch.quantile(torch.from_numpy(x), q).item()) for q in (0.999, 0.9999, 0.99999, 0.001)]
            for x in rows]
    for arith in QUANTILE_ARITHMETICS:
        lerp_ok = all(torch_lerp_f32(p[0], p[1], p[2], arith.fused_madd) == g for p, g in zip(probes, got))
        if not lerp_ok:
            continue
        ok = True
        for x, wq in zip(rows, want):
            s = np.sort(x)
            for q, v in zip((0.999, 0.9999, 0.99999, 0.001), wq):
                lo, hi, wt = torch_quantile_rank(x.size, q, arith.rank)
                ok &= bool(torch_lerp_f32(s[lo], s[hi], wt, arith.fused_madd).view(np.int32)
                           == v.view(np.int32))
        if ok:
            found = arith
            break
    _detected.append(found)
    return found


def _quantile_numpy_fallback(row: torch.Tensor, p: float) -> torch.Tensor:
    """What the RepQ-ViT code computes where an older torch refuses the row (more than 2^24 elements):
    np.percentile(x, 100 p) of the float32 data, as a float32 tensor."""
    return torch.tensor(np.float32(np.percentile(row.detach().cpu().numpy(), p * 100)))


def _quantile_rows_torch(rows: torch.Tensor, probs: tuple[float, ...]) -> torch.Tensor:
    """[C, P] torch.quantile of each row, one call per row and level (the reference's own calls), with
    its np.percentile fallback where torch refuses the row."""
    def one(r, p):
        try:
            return torch.quantile(r, p)
        except RuntimeError:  # "quantile() input tensor is too large" (older torch, > 2^24 elements)
            return _quantile_numpy_fallback(r, p).to(r.dtype)
    return torch.stack([torch.stack([one(r, p) for p in probs]) for r in rows]).to(rows.device)


def _tail_depth(n: int, probs: tuple[float, ...], upper: bool, rank: str) -> int:
    """How many extremes the quantiles at probs read (both interpolation neighbours)."""
    ranks = [torch_quantile_rank(n, p, rank) for p in probs]
    depth = [(n - lo) if upper else (hi + 1) for lo, hi, _ in ranks]
    return min(n, max(depth))


def _interpolate(tail: torch.Tensor, n: int, probs: tuple[float, ...], upper: bool,
                 arith: QuantileArithmetic) -> torch.Tensor:
    """torch.quantile from the sorted extremes of each row (see the comment above :func:`fma_f32`)."""
    t = tail.numpy()
    ia, ib, ws = [], [], []
    for p in probs:
        lo, hi, w = torch_quantile_rank(n, p, arith.rank)
        if upper:  # ascending position i is tail index n-1-i
            ia.append(n - 1 - lo)
            ib.append(n - 1 - hi)
        else:
            ia.append(lo)
            ib.append(hi)
        ws.append(w)
    # all levels in one element-wise evaluation: [C, P] operands, one weight per column
    out = _lerp_columns(t[:, ia], t[:, ib], np.array(ws, dtype=np.float32), arith.fused_madd)
    return torch.from_numpy(out.astype(np.float32))


def _lerp_columns(a: np.ndarray, b: np.ndarray, w: np.ndarray, fused_madd: bool) -> np.ndarray:
    """torch_lerp_f32 of each column j of a, b [C, P] with its weight w[j]: both branches element-wise,
    each column keeping the one its weight selects (the same float32 operations)."""
    d = b - a
    one = np.float32(1.0)
    if fused_madd:
        small, large = fma_f32(w, d, a), fma_f32(w - one, d, b)
    else:
        small, large = a + w * d, b - d * (one - w)
    return np.where(np.abs(w) < 0.5, small, large)


_warned_unknown = []


def _quantiles(rows: torch.Tensor, probs: tuple[float, ...], upper: bool,
               extremes: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """[C, P] torch.quantile of each row at probs (all in one tail), or the reference's fallback."""
    n = rows.shape[1]
    arith = torch_quantile_arithmetic() if _cpu_f32(rows) else None
    if arith is None:  # other dtypes or devices, or a torch whose quantile none of the statements fits
        if _cpu_f32(rows) and not _warned_unknown:
            _warned_unknown.append(True)
            warnings.warn(f"torch {torch.__version__}: torch.quantile matches none of the known arithmetics; "
                          "calibration calls torch.quantile per channel (exact, slower)", stacklevel=3)
        return _quantile_rows_torch(rows, probs)
    if arith.size_limit is not None and n > arith.size_limit:
        return torch.tensor([[_quantile_numpy_fallback(r, p).item() for p in probs] for r in rows])
    if extremes is None:
        extremes = row_extremes(rows, _tail_depth(n, probs, upper, arith.rank))
    return _interpolate(extremes[0] if upper else extremes[1], n, probs, upper, arith)


def percentile_bounds(rows: torch.Tensor, probs: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """(quantile(rows, p), quantile(rows, 1 - p)) for each p in probs (all >= 0.99), per row: [C, P] each,
    bit for bit what ``torch.quantile(row, p)`` returns (or, for a row an older torch refuses, what the
    reference code computes instead). Rows must be finite."""
    n = rows.shape[1]
    lows = tuple(1.0 - p for p in probs)  # as the reference: 1.0 - pct in double, then torch's float32
    arith = torch_quantile_arithmetic() if _cpu_f32(rows) else None
    extremes = None
    if arith is not None and (arith.size_limit is None or n <= arith.size_limit):
        k = max(_tail_depth(n, probs, True, arith.rank), _tail_depth(n, lows, False, arith.rank))
        extremes = row_extremes(rows, k)
    return _quantiles(rows, probs, True, extremes), _quantiles(rows, lows, False, extremes)


def tail_quantiles(rows: torch.Tensor, probs: tuple[float, ...], upper: bool) -> torch.Tensor:
    """Quantiles near one tail of each row (see :func:`percentile_bounds`).

    Args:
        rows: [C, n] finite float tensor; every row is one channel's calibration data.
        probs: quantile levels, all >= 0.99 (upper=True) or all <= 0.01 (upper=False).
        upper: which tail the levels lie in.

    Returns:
        [C, len(probs)] tensor of quantiles.
    """
    return _quantiles(rows, probs, upper)


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


# Candidate scores: the kernels sum squared errors in float64, the reference takes torch's float32 mean of
# (x - x_hat)^2 over its own view of the data. The two orders agree except where two candidates' scores are
# so close that float32 rounding can swap them; where the float64 scores of a row's best candidate and
# another lie within this relative band, the row's choice is re-made with the reference's own float32
# expression, on the tensor view the reference scores (:func:`reference_uniform_score`).
SCORE_TIE_BAND = 1e-4


def reference_uniform_score(x: torch.Tensor, delta: torch.Tensor, zero_point: torch.Tensor,
                            n_bits: int) -> torch.Tensor:
    """The reference's score of one candidate: mean(|x - fake_quant(x)|^2), torch float32 operations in
    its order, on x as given (its layout fixes torch's summation order)."""
    x_q = torch.clamp(torch.round(x / delta) + zero_point, 0, 2**n_bits - 1)
    return (x - (x_q - zero_point) * delta).abs().pow(2).mean()


def _near_tie_rows(scores: torch.Tensor) -> list[int]:
    """Rows whose best float64 score has a rival within SCORE_TIE_BAND (relative)."""
    s = scores.detach().cpu().double().numpy()  # numpy: the same float64 operations, no torch dispatch
    best = s.min(axis=1, keepdims=True)
    near = (s - best) <= SCORE_TIE_BAND * np.abs(best)
    return np.flatnonzero(near.sum(axis=1) > 1).tolist()


def _reference_pick(scores) -> int:
    """Index of the first candidate whose score is below every earlier one (the reference's strict "<"
    scan from 1e10); 0 where none is."""
    pick, best = 0, 1e10
    for k, sc in enumerate(scores):
        if sc < best:
            pick, best = k, sc
    return pick


def uniform_search(rows: torch.Tensor, n_bits: int, view=None) -> tuple[torch.Tensor, torch.Tensor]:
    """RepQ-ViT's percentile search for asymmetric uniform quantization, for every row at once.

    Args:
        rows: [C, n] calibration data without NaN, one row per channel (C = 1 for per-tensor).
        n_bits: bit width b; codes lie in [0, 2^b - 1].
        view: optional callable c -> the reference's tensor for channel c (its layout decides torch's
            summation order in a near tie); default rows[c].

    Returns:
        (delta [C], zero_point [C]) float tensors; zero_point holds integers.
    """
    rows = rows.detach()
    levels = 2**n_bits - 1
    maxs, mins = percentile_bounds(rows, PERCENTILES)
    deltas = ((maxs - mins) / levels).clamp_min(MIN_DELTA)
    zps = -mins / deltas
    # round half to even either way; np.rint on the CPU because torch.round of these few elements may
    # start a parallel region (a thread wake-up that costs milliseconds on a loaded machine)
    zps = torch.from_numpy(np.rint(zps.numpy())) if _cpu_f32(zps) else torch.round(zps)
    scores = _uniform_scores(rows, deltas, zps, n_bits)
    best = scores.argmin(dim=1)  # first minimum, as a strict "<" scan
    if _fusable(rows):
        for c in _near_tie_rows(scores):  # rare: settled with the reference's float32 scores
            x = rows[c] if view is None else view(c)
            best[c] = _reference_pick([reference_uniform_score(x, deltas[c, k], zps[c, k], n_bits)
                                       for k in range(deltas.shape[1])])
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


def log_sqrt2_search(flat: torch.Tensor, n_bits: int, zero_state: str,
                     original: torch.Tensor | None = None) -> torch.Tensor:
    """Percentile search of delta for the log-sqrt(2) quantizer (per tensor); original: the calibration
    tensor in its own layout (the reference scores it as it is; used in a near tie)."""
    flat = flat.detach().reshape(1, -1)
    cands = tail_quantiles(flat, PERCENTILES, upper=True)[0]
    if _fusable(flat):
        tables = torch.stack([log_sqrt2_table(d, n_bits) for d in cands])
        sums = fused.log_sqrt2_sq_err(flat.contiguous().numpy(), cands.numpy(), tables.numpy(),
                                      _log_limit(n_bits, zero_state))
        scores = (sums / flat.shape[1]).tolist()
    else:
        scores = log_sqrt2_scores_torch(flat, cands, n_bits, zero_state)
    if _fusable(flat) and zero_state == "reference" and _near_tie_rows(torch.tensor([scores])):
        x = flat[0] if original is None else original.detach().clone()  # rare: the reference's scores
        scores = [reference_log_sqrt2_score(x, d, n_bits).item() for d in cands]
    best, best_score = None, math.inf
    for d, score in zip(cands, scores):
        if score < best_score:  # strict: the first of equal scores wins; NaN never wins
            best, best_score = d, score
    if best is None:  # every candidate gave NaN: degenerate (all-zero) input
        best = cands[-1]
    return best.clamp_min(MIN_DELTA)


def reference_log_sqrt2_score(x: torch.Tensor, delta: torch.Tensor, n_bits: int) -> torch.Tensor:
    """The reference's score of one log-sqrt(2) candidate (2^b + 1 states): torch float32 operations in
    its order (float32 log2 included), mean(|x - x_hat|^2) on x as given."""
    levels = 2**n_bits
    raw = torch.round(-1 * (x / delta).log2() * 2)
    code = torch.clamp(raw, 0, levels - 1)
    x_hat = 2 ** (-1 * torch.ceil(code / 2)) * ((code % 2) * (math.sqrt(2) - 1) + 1) * delta
    x_hat[raw >= levels] = 0
    return (x - x_hat).abs().pow(2).mean()


class _ReferenceView:
    """view(c): the tensor the reference scores for channel c: its ``x.clone()`` (strides kept where x
    is dense, else contiguous), whole for per-tensor, ``[..., c]`` / ``[c]`` channel-wise. Cloned on
    first use only (near ties are rare), and not at all where x is contiguous (its clone would have the
    same strides and values, and the scores only read it)."""

    def __init__(self, x: torch.Tensor, channel_wise: bool, axis: int):
        self.x, self.channel_wise, self.axis, self.clone = x.detach(), channel_wise, axis, None

    def __call__(self, c: int) -> torch.Tensor:
        if self.clone is None:  # a contiguous x is what its clone would be: same strides, same values
            self.clone = self.x if self.x.is_contiguous() else self.x.clone()
        return self.clone.select(self.axis, c) if self.channel_wise else self.clone


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

    def calibrate(self, x: torch.Tensor, rows: torch.Tensor | None = None) -> None:
        """Set delta and zero_point from calibration data x; rows: optionally, the caller's contiguous
        copy of ``self._rows(x)`` (the search runs on it; x stays the reference's view)."""
        if rows is None:
            rows = self._rows(x.detach())
        if not rows.is_contiguous():  # a copy unless x is contiguous and per tensor
            buf = scratch("rows", rows.shape, rows)
            rows = rows.contiguous() if buf is None else buf.copy_(rows)
        check_calibration_data(rows, self.name, tuple(x.shape))
        if self.method == "percentile":
            view = _ReferenceView(x, self.channel_wise, self.channel_axis)
            delta, zp = uniform_search(rows, self.n_bits, view)
        else:
            delta, zp = minmax_search(rows, self.n_bits)
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

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Fake-quantize x (calibrating on it first if not yet calibrated). out: an optional contiguous
        tensor of x's shape, not overlapping x, that the result may be written into (a scratch buffer);
        the result is what is returned, in out or not."""
        if not self.enabled:
            return x
        if not self.channel_wise and not x.is_contiguous() and _fits(out, x) and _fast_forward_ok(x):
            # a strided view (q, k^T, v of the attention): copied once into a contiguous scratch buffer,
            # which the search runs on (it needs that copy anyway) and the contiguous kernel reads
            src = scratch("rows", x.shape, x)
            if src is not None:
                src.copy_(x)
                if not self.inited:
                    self.calibrate(x, rows=src.view(1, -1))
                return self._fused_forward(src, out)
        if not self.inited:
            self.calibrate(x)
        if _fast_forward_ok(x):
            res = self._fused_forward(x, out if _fits(out, x) else None)
            if res is not None:
                return res
        d, z = self._broadcast(self.delta, x), self._broadcast(self.zero_point, x)
        return (self.codes(x) - z) * d

    def _fused_forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor | None:
        """The same float32 arithmetic in one Numba pass, bit-identical (see fused.py), into out or, by
        default, a tensor with the strides torch's element-wise ops would give it. None where no kernel
        fits the layout."""
        if out is None:
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
        self.delta = log_sqrt2_search(x, self.n_bits, self.zero_state, original=x).to(x.device)
        self.inited = True
        if self.on_init is not None:
            self.on_init(self)

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Fake-quantize x (calibrating on it first if not yet calibrated); out as for
        :meth:`UniformQuantizer.forward` (it may also be x itself)."""
        if not self.enabled:
            return x
        if not self.inited:
            self.calibrate(x)
        d = self.delta.to(x.dtype)
        if _fast_forward_ok(x) and x.is_contiguous():
            # torch's float32 log2 (the definition's), then one Numba pass for the rest: bit-identical
            log2q = torch.div(x.detach(), d, out=out) if _fits(out, x) else torch.div(x.detach(), d)
            log2q.log2_()
            fused.log_sqrt2_from_log2(log2q.numpy(), log_sqrt2_table(d, self.n_bits).numpy(),
                                      _log_limit(self.n_bits, self.zero_state), log2q.numpy())
            return log2q
        return log_sqrt2_dequant(x, d, self.n_bits, self.zero_state)
