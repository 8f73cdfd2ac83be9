"""The fidelity ladder: float -> fake-quant (paper form) -> fake-quant (inference form) -> integer emulator.

* fake-quant, paper form: the calibrated model as RepQ-ViT evaluates it (log-sqrt(2), 2^b + 1 states);
* fake-quant, inference form: the same model with the b-bit zero state (the smallest post-Softmax level
  also becomes zero), i.e. what the integer codes can represent;
* integer: the lowered graph run by the emulator.

Reported per model and bit setting: top-1, top-1 agreement and logit cosine vs the paper-form fake-quant,
and the per-layer SQNR between dequantized integer tensors and the matching fake-quant tensors.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn

from repq_hw.emu.execute import run_graph
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
    output, 'in' = module input, 'kT' = quantizer of k^T (transpose back)."""
    pairs = []
    for i in range(len(model.blocks)):
        p = f"blocks.{i}"
        pairs += [
            (f"{p}.norm1.out", f"{p}.attn.qkv.input_quantizer", "out"),
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
    pairs.append(("norm.out", "head.input_quantizer", "out"))
    return pairs


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
             progress=None) -> FidelityReport:
    """Run the ladder on (images, labels); SQNR on the first ``sqnr_images`` images."""
    inf_model = inference_form(qmodel)
    outs = {"float": [], "fq": [], "fq_inf": [], "int": []}
    out_name = g.outputs[0]
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size]
        outs["float"].append(float_model(x).double().numpy())
        outs["fq"].append(qmodel(x).double().numpy())
        outs["fq_inf"].append(inf_model(x).double().numpy())
        res = run_graph(g, input_codes(qmodel, x), backend)
        outs["int"].append(dequantize(g, out_name, res[out_name])[:, 0, :])
        if progress is not None:
            progress(min(i + batch_size, len(images)), len(images))
    y = labels.numpy()
    ref = np.concatenate(outs["fq"])
    rows = []
    for key, stage in (("float", "float"), ("fq", "fake-quant (paper: log-sqrt2, 2^b+1 states)"),
                       ("fq_inf", "fake-quant (inference form: b-bit zero state)"), ("int", "integer emulator")):
        lg = np.concatenate(outs[key])
        rows.append(LadderRow(stage, 100 * float((lg.argmax(1) == y).mean()),
                              100 * float((lg.argmax(1) == ref.argmax(1)).mean()), _cos(lg, ref)))
    pairs = [p for p in tap_pairs(qmodel) if p[0] in g.tensors]
    xs = images[:sqnr_images]
    fq_taps, _ = fake_quant_taps(inf_model, xs, pairs)
    int_taps = run_graph(g, input_codes(qmodel, xs), backend, keep_all=True)
    sq = {t: sqnr_db(fq_taps[t], dequantize(g, t, int_taps[t]).reshape(fq_taps[t].shape)) for t, _, _ in pairs}
    return FidelityReport(label, rows, sq)


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
