"""The fidelity ladder: float -> fake-quant (paper form) -> fake-quant (inference form) -> integer emulator.

* fake-quant, paper form: the calibrated model as RepQ-ViT evaluates it (log-sqrt(2), 2^b + 1 states);
* fake-quant, inference form: the same model with the b-bit zero state (the smallest post-Softmax level
  also becomes zero), i.e. what the integer codes can represent;
* integer: the lowered graph run by the emulator.

Reported per model and bit setting: top-1, top-1 agreement and logit cosine vs the paper-form fake-quant,
and the per-layer SQNR between dequantized integer tensors and the matching fake-quant tensors.

The fidelity targets are statistics over the evaluated images (``FidelityReport.targets``): the top-1
agreement of the integer emulator with fake-quant as a proportion with its 95 % Wilson score interval, and
the accuracy gap (integer minus fake-quant top-1) as a paired difference with its 95 % interval
(Bonett-Price adjusted Wald on the discordant counts).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np
import torch
import torch.nn as nn

from repq_hw.emu.execute import run_graph
from repq_hw.execution import FolderBatch
from repq_hw.ir.graph import Graph
from repq_hw.quant.quantizers import LogSqrt2Quantizer


def inference_form(model: nn.Module) -> nn.Module:
    """A copy whose post-Softmax quantizers use the b-bit zero state."""
    m = copy.deepcopy(model)
    for mod in m.modules():
        if isinstance(mod, LogSqrt2Quantizer):
            mod.zero_state = "b_bit"
    return m


def input_codes(model: nn.Module, images: torch.Tensor) -> np.ndarray:
    """Host-side preprocessing: float images -> the 8-bit codes of the patch-embedding input quantizer."""
    q = model.patch_embed.proj.input_quantizer
    return q.codes(images).to(torch.int64).numpy().astype(np.uint8)


def dequantize(g: Graph, name: str, values: np.ndarray) -> np.ndarray:
    """Real value of an integer tensor from its metadata scale/zero point (log2 codes: delta*2^(-c/2))."""
    info = g.tensors[name]
    if name.endswith("log2_code.out"):
        bits = info.type.bits
        c = values.astype(np.float64)
        real = info.scale * np.exp2(-c / 2)
        return np.where(values == (1 << bits) - 1, 0.0, real)
    scale = np.asarray(info.scale, dtype=np.float64)
    return (values.astype(np.float64) - info.zero_point) * scale


# integer tap -> (fake-quant module path, which quantizer/forward output, layout fix)
def tap_pairs(model: nn.Module) -> list[tuple[str, str, str]]:
    """(integer tensor, fake-quant module, kind) pairs compared by the SQNR report. kind: 'out' = module
    output, 'in' = module input, 'kT' = quantizer of k^T (transpose back).

    Swin: window tensors [nW*N, C] and [nW*h, N, .] are the fake-quant [B*nW, ...] tensors of one image, and
    the qkv input is the window partition of norm1's codes."""
    if not hasattr(model, "layers"):  # ViT / DeiT
        pairs = [p for i in range(len(model.blocks)) for p in _block_taps(f"blocks.{i}", "norm1")]
        return pairs + [("norm.out", "head.input_quantizer", "out")]
    pairs = []
    for s, layer in enumerate(model.layers):
        if s > 0:
            d = f"layers.{s}.downsample"
            pairs.append((f"{d}.norm.out", f"{d}.reduction.input_quantizer", "out"))
        for j in range(len(layer.blocks)):
            pairs += _block_taps(f"layers.{s}.blocks.{j}", "window_partition")
    return pairs + [("head.fc_in.out", "head.fc.input_quantizer", "out")]


def _block_taps(p: str, qkv_input: str) -> list[tuple[str, str, str]]:
    return [
        (f"{p}.{qkv_input}.out", f"{p}.attn.qkv.input_quantizer", "out"),
        (f"{p}.attn.q_heads.out", f"{p}.attn.matmul1.quantizer_A", "out"),
        (f"{p}.attn.k_heads.out", f"{p}.attn.matmul1.quantizer_B", "kT"),
        (f"{p}.attn.v_heads.out", f"{p}.attn.matmul2.quantizer_B", "out"),
        (f"{p}.attn.log2_code.out", f"{p}.attn.matmul2.quantizer_A", "out"),
        (f"{p}.attn.proj_in.out", f"{p}.attn.proj.input_quantizer", "out"),
        (f"{p}.add1.out", f"{p}.norm2", "in"),
        (f"{p}.norm2.out", f"{p}.mlp.fc1.input_quantizer", "out"),
        (f"{p}.mlp.gelu.out", f"{p}.mlp.fc2.input_quantizer", "out"),
        (f"{p}.add2.out", f"{p}", "out"),
    ]


@torch.no_grad()
def fake_quant_taps(model: nn.Module, images: torch.Tensor, pairs) -> tuple[dict[str, np.ndarray], torch.Tensor]:
    mods = dict(model.named_modules())
    store, hooks = {}, []
    for tname, mname, kind in pairs:
        mod = mods[mname]
        if kind == "in":
            hooks.append(mod.register_forward_pre_hook(
                lambda _, a, t=tname: store.__setitem__(t, a[0].double().numpy())))
        else:
            hooks.append(mod.register_forward_hook(
                lambda _, a, o, t=tname, k=kind: store.__setitem__(
                    t, (o.transpose(-2, -1) if k == "kT" else o).double().numpy())))
    try:
        logits = model(images)
    finally:
        for h in hooks:
            h.remove()
    return store, logits


def sqnr_db(ref: np.ndarray, test: np.ndarray) -> float:
    err = float(((ref - test) ** 2).sum())
    sig = float((ref**2).sum())
    if err == 0:
        return math.inf
    return 10 * math.log10(sig / err) if sig > 0 else -math.inf


# ---------------------------------------------------------------------------------------------------
# Statistics of the targets.

Z95: float = NormalDist().inv_cdf(0.975)  # two-sided 95 %: 1.95996...


@dataclass(frozen=True)
class Interval:
    """A point estimate with a confidence interval, all as proportions (not percent)."""

    estimate: float
    low: float
    high: float

    def pct(self) -> str:
        return f"{100 * self.estimate:.2f} % [{100 * self.low:.2f}, {100 * self.high:.2f}]"


def wilson_interval(k: int, n: int, z: float = Z95) -> Interval:
    """Wilson score interval of a binomial proportion k/n.

    centre = (p + z^2/(2n)) / (1 + z^2/n),  half-width = z / (1 + z^2/n) * sqrt(p(1-p)/n + z^2/(4n^2)),
    with p = k/n. Unlike the Wald interval it stays inside [0, 1] and has non-zero width at k = 0 or n.
    """
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n > 0, got k={k!r}, n={n!r}")
    p = k / n
    zz = z * z
    den = 1 + zz / n
    centre = (p + zz / (2 * n)) / den
    half = z / den * math.sqrt(p * (1 - p) / n + zz / (4 * n * n))
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half))


def paired_difference_interval(b: int, c: int, n: int, z: float = Z95, adjust: bool = True) -> Interval:
    """Interval of the difference of two paired proportions p_A - p_B from the discordant counts.

    Each of n items is scored by A and by B (1 = correct). b = #(A right, B wrong), c = #(A wrong, B right);
    the difference of the two accuracies is (b - c) / n.

    adjust=False: the normal approximation on the paired differences d_i in {-1, 0, 1}:
        d = (b - c)/n,  var(d_i) = (b + c)/n - d^2,  d +- z sqrt(var/n).
    It collapses to zero width when b = c = 0.
    adjust=True (default): Bonett-Price adjusted Wald, the same with one added to each discordant count and
    two to n: p12 = (b+1)/(n+2), p21 = (c+1)/(n+2), (p12 - p21) +- z sqrt((p12 + p21 - (p12 - p21)^2)/(n+2)).
    The estimate returned is always the observed (b - c)/n.
    """
    if n <= 0 or b < 0 or c < 0 or b + c > n:
        raise ValueError(f"need b, c >= 0, b + c <= n, n > 0; got b={b!r}, c={c!r}, n={n!r}")
    if adjust:
        p12, p21, m = (b + 1) / (n + 2), (c + 1) / (n + 2), n + 2
    else:
        p12, p21, m = b / n, c / n, n
    centre = p12 - p21
    half = z * math.sqrt(max(p12 + p21 - centre * centre, 0.0) / m)
    return Interval((b - c) / n, centre - half, centre + half)


def discordant_counts(correct_a: np.ndarray, correct_b: np.ndarray) -> tuple[int, int]:
    """(b, c) = (#A right and B wrong, #A wrong and B right) of two per-item correctness vectors."""
    a, bb = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != bb.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {bb.shape}")
    return int((a & ~bb).sum()), int((~a & bb).sum())


@dataclass(frozen=True)
class FidelityStats:
    """The integer emulator vs fake-quant (paper form) on n images, with 95 % intervals."""

    n: int
    agreement: Interval  # top-1 agreement proportion, Wilson
    gap: Interval  # integer top-1 minus fake-quant top-1 (proportions), paired
    discordant: tuple[int, int]  # (integer right & fake-quant wrong, integer wrong & fake-quant right)

    def line(self) -> str:
        b, c = self.discordant
        return (f"n={self.n}: integer vs fake-quant top-1 agreement {self.agreement.pct()} (95 % Wilson); "
                f"top-1 gap integer - fake-quant {100 * self.gap.estimate:+.2f} pt "
                f"[{100 * self.gap.low:+.2f}, {100 * self.gap.high:+.2f}] (95 % paired, discordant {b}/{c})")


# ---------------------------------------------------------------------------------------------------
# The ladder.


@dataclass
class LadderRow:
    stage: str
    top1: float
    agreement: float  # top-1 agreement with fake-quant (paper form), %
    cosine: float  # mean logit cosine vs fake-quant (paper form)


@dataclass
class FidelityReport:
    label: str
    rows: list[LadderRow]
    sqnr: dict[str, float] = field(default_factory=dict)  # integer tap -> dB vs inference-form fake-quant
    # per-image top-1 class of each stage ("float", "fq", "fq_inf", "int") and the labels
    predictions: dict[str, np.ndarray] = field(default_factory=dict)
    labels: np.ndarray | None = None

    def targets(self, images: slice = slice(None)) -> FidelityStats:
        """Agreement and accuracy gap of the integer emulator vs fake-quant (paper form) on ``images``."""
        fq, it, y = self.predictions["fq"][images], self.predictions["int"][images], self.labels[images]
        b, c = discordant_counts(it == y, fq == y)
        return FidelityStats(len(y), wilson_interval(int((it == fq).sum()), len(y)),
                             paired_difference_interval(b, c, len(y)), (b, c))

    def table(self) -> str:
        lines = [f"| stage ({self.label}) | top-1 % | top-1 agreement vs fake-quant % | logit cosine |",
                 "|---|---:|---:|---:|"]
        for r in self.rows:
            lines.append(f"| {r.stage} | {r.top1:.2f} | {r.agreement:.2f} | {r.cosine:.5f} |")
        return "\n".join(lines)


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.mean(num / np.maximum(den, 1e-30)))


@torch.no_grad()
def fidelity(float_model: nn.Module, qmodel: nn.Module, g: Graph, images: torch.Tensor, labels: torch.Tensor,
             label: str, batch_size: int = 64, backend: str = "fast", sqnr_images: int = 32,
             progress=None, int_batch_size: int = 1024, runner=None) -> FidelityReport:
    """Run the ladder on (images, labels); SQNR on the first ``sqnr_images`` images. ``images`` may also
    be a list of ``repq_hw.execution.FolderBatch`` of ``batch_size`` images (labels None) with a
    distributed ``runner``: its workers decode them and run every stage.

    The float models run in batches of ``batch_size``; the integer emulator, whose results are bit-exact
    per image whatever the batch, in chunks of ``int_batch_size`` (its per-call overhead dominates small
    batches). With a ``runner`` (``repq_hw.execution.Runner``) both run on its workers, the float models
    in the very batches (and torch thread count) used here, the emulator in shards: the same bits."""
    inf_model = inference_form(qmodel)
    outs = {"float": [], "fq": [], "fq_inf": [], "int": []}
    out_name = g.outputs[0]
    if isinstance(images, list) and images and isinstance(images[0], FolderBatch):
        # ImageFolder batches of batch_size images, decoded and run on the runner's workers
        if runner is None or any(len(b.labels) != batch_size for b in images[:-1]):
            raise ValueError(f"FolderBatch images need a runner and batches of batch_size={batch_size}")
        outs = runner.ladder((float_model, qmodel, inf_model), g, images, backend, desc=f"ladder {label}")
        outs["int"] = [outs["int"]]
        labels = torch.tensor([y for b in images for y in b.labels], dtype=torch.int64)
        first, n = [], 0
        for b in images:  # the SQNR images, decoded here
            if n >= sqnr_images:
                break
            first.append(b.load()[0])
            n += len(b.labels)
        images = torch.cat(first)
    elif runner is not None:
        res = runner.emulate(g, input_codes(qmodel, images), backend, desc=f"integer {label}")
        outs["int"].append(dequantize(g, out_name, res[out_name])[:, 0, :])
        cuts = [(j + i, j + min(i + batch_size, int_batch_size, len(images) - j))  # the loop's batches below
                for j in range(0, len(images), int_batch_size)
                for i in range(0, min(int_batch_size, len(images) - j), batch_size)]
        fbatches = [(images[a:b], labels[a:b]) for a, b in cuts]
        for key, m in (("float", float_model), ("fq", qmodel), ("fq_inf", inf_model)):
            outs[key] = [lg.double().numpy() for lg in runner.torch_logits(m, fbatches, desc=f"{key} {label}")]
    local = runner is None  # else every stage's logits came from the runner above
    for j in range(0, len(images) if local else 0, int_batch_size):
        chunk = images[j:j + int_batch_size]
        for i in range(0, len(chunk), batch_size):
            x = chunk[i:i + batch_size]
            outs["float"].append(float_model(x).double().numpy())
            outs["fq"].append(qmodel(x).double().numpy())
            outs["fq_inf"].append(inf_model(x).double().numpy())
        if local:
            res = run_graph(g, input_codes(qmodel, chunk), backend)
            outs["int"].append(dequantize(g, out_name, res[out_name])[:, 0, :])
        if progress is not None:
            progress(min(j + int_batch_size, len(images)), len(images))
    y = labels.numpy()
    ref = np.concatenate(outs["fq"])
    rows, preds = [], {}
    for key, stage in (("float", "float"), ("fq", "fake-quant (paper: log-sqrt2, 2^b+1 states)"),
                       ("fq_inf", "fake-quant (inference form: b-bit zero state)"), ("int", "integer emulator")):
        lg = np.concatenate(outs[key])
        preds[key] = lg.argmax(1)
        rows.append(LadderRow(stage, 100 * float((lg.argmax(1) == y).mean()),
                              100 * float((lg.argmax(1) == ref.argmax(1)).mean()), _cos(lg, ref)))
    pairs = [p for p in tap_pairs(qmodel) if p[0] in g.tensors]
    xs = images[:sqnr_images]
    fq_taps, _ = fake_quant_taps(inf_model, xs, pairs)
    int_taps = run_graph(g, input_codes(qmodel, xs), backend, keep_all=True)
    sq = {t: sqnr_db(fq_taps[t], dequantize(g, t, int_taps[t]).reshape(fq_taps[t].shape)) for t, _, _ in pairs}
    return FidelityReport(label, rows, sq, preds, y)


def plot_sqnr(reports: list[FidelityReport], path, title: str) -> None:
    """Per-layer SQNR (dB) of integer vs fake-quant tensors, one line per bit setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(12, 4.8))
    for rep in reports:
        names = list(rep.sqnr)
        vals = [min(v, 120.0) for v in rep.sqnr.values()]
        ax.plot(range(len(names)), vals, marker="o", ms=3, label=rep.label)
    names = list(reports[0].sqnr)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([n.removesuffix(".out") for n in names], rotation=90, fontsize=6)
    ax.set_ylabel("SQNR of integer vs fake-quant (dB)")
    ax.set_xlabel("tensor (execution order)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(title="bits")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
