"""Figures of a CostStudy (matplotlib, Agg), each written as PNG and SVG:

* ``energy_per_layer``: stacked energy per layer, compute vs SRAM vs DRAM split by operand (weights /
  activations), one panel per variant;
* ``energy_by_op_type``: energy per op type, all variants;
* ``op_counts_per_layer``: operation counts per layer by kind (one integer variant);
* ``energy_shares``: share of compute energy by function (LayerNorm, Softmax, GELU, ...) per variant;
* ``accuracy_vs_energy``: top-1 against energy per image across bit settings (where accuracy is known).
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

from repq_hw.cost.energy import FUNCTIONS
from repq_hw.cost.report import fmt_num

STACK = (("e_compute_pj", "compute", "#4C72B0"), ("e_sram_w_pj", "SRAM · weights", "#8FBC8F"),
         ("e_sram_act_pj", "SRAM · activations", "#2E8B57"), ("e_dram_w_pj", "DRAM · weights", "#F4A460"),
         ("e_dram_act_pj", "DRAM · activations", "#C0504D"))
COUNT_KINDS = (("mac", "MAC (multiply + accumulate)"), ("shiftadd", "shift-add (attention·V)"),
               ("shift", "other variable shift"), ("mul", "multiply"),
               ("add", "add / subtract"), ("cmp", "compare"), ("step", "divide / sqrt step"),
               ("lut", "table read"))
VARIANT_COLORS = {"fp32": "#7F7F7F", "fp16": "#BCBD22"}
_INT_COLORS = ["#1F77B4", "#FF7F0E", "#2CA02C", "#D62728", "#9467BD", "#8C564B"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colors(labels: list[str]) -> dict[str, str]:
    out, i = {}, 0
    for lab in labels:
        if lab in VARIANT_COLORS:
            out[lab] = VARIANT_COLORS[lab]
        else:
            out[lab] = _INT_COLORS[i % len(_INT_COLORS)]
            i += 1
    return out


def short_layer(name: str) -> str:
    m = re.match(r"^(?:layers\.(\d+)\.)?blocks\.(\d+)$", name)
    if m:
        return f"{m.group(1)}.{m.group(2)}" if m.group(1) else m.group(2)
    return name


def _footnote(fig, study) -> None:
    m = study.mem
    fig.text(0.005, 0.005, f"Analytical estimate — {study.tech.name}; activation SRAM {m.act_sram_kb:g} KB, "
             f"weights fetched from DRAM once per batch of {m.batch}, DRAM '{m.dram_point}'. "
             "Rules: docs/cost_model.md", fontsize=7, color="#555555", ha="left", va="bottom")


FORMATS = ("png", "svg")


def _save(fig, out: Path, stem: str, formats=FORMATS) -> list[Path]:
    paths = [out / f"{stem}.{ext}" for ext in formats]
    for p in paths:
        fig.savefig(p, dpi=130)
    _plt().close(fig)
    return paths


def plot_energy_per_layer(study, out: Path, formats=FORMATS) -> list[Path]:
    plt = _plt()
    vs = study.variants
    height = 1.4 + 2.1 * len(vs)
    fig, axes = plt.subplots(len(vs), 1, figsize=(max(8.0, 0.55 * len(vs[0].est.counts.layers()) + 3), height),
                             sharex=True, squeeze=False)
    for ax, v in zip(axes[:, 0], vs):
        per = v.est.per_layer()
        layers = list(per)
        xs = range(len(layers))
        bottom = [0.0] * len(layers)
        for key, lab, col in STACK:
            vals = [per[k].get(key, 0.0) / 1e6 for k in layers]
            ax.bar(xs, vals, bottom=bottom, color=col, label=lab, width=0.75)
            bottom = [b + x for b, x in zip(bottom, vals)]
        tot = v.est.totals()["e_total_pj"] / 1e6
        ax.set_title(f"{v.label}: {fmt_num(tot)} µJ per image", fontsize=10, loc="left")
        ax.set_ylabel("µJ / image")
        ax.set_ylim(0, 1.1 * max(bottom + [1e-9]))  # stacked bars' sticky edges would cancel the margin
        ax.grid(axis="y", alpha=0.3)
        ax.set_xticks(list(xs))
        ax.set_xticklabels([short_layer(k) for k in layers], fontsize=8)
    axes[-1, 0].set_xlabel("layer (numbers = transformer blocks)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.suptitle(f"{study.model}: energy per image and layer (compute vs SRAM vs DRAM, by operand)",
                 x=0.01, ha="left", y=1 - 0.08 / height, va="top", fontsize=11)
    fig.legend(handles, labels, loc="upper left", ncol=len(STACK), fontsize=8, frameon=False,
               bbox_to_anchor=(0.005, 1 - 0.42 / height))
    _footnote(fig, study)
    fig.tight_layout(rect=(0, 0.25 / height, 1, 1 - 0.62 / height))
    return _save(fig, out, "energy_per_layer", formats)


def plot_energy_by_op_type(study, out: Path, formats=FORMATS) -> list[Path]:
    plt = _plt()
    vs = study.variants
    ops: list[str] = []
    for v in vs:
        for op, d in v.est.per_op_type().items():
            if d["e_total_pj"] > 0 and op not in ops:
                ops.append(op)
    ops.sort(key=lambda o: -max(v.est.per_op_type().get(o, {}).get("e_total_pj", 0.0) for v in vs))
    colors = _colors([v.label for v in vs])
    h = 0.8 / len(vs)
    fig, ax = plt.subplots(figsize=(10, 1.4 + 0.11 * len(ops) * max(4, len(vs))))
    for j, v in enumerate(vs):
        per = v.est.per_op_type()
        ys = [i + (j - (len(vs) - 1) / 2) * h for i in range(len(ops))]
        vals = [per.get(o, {}).get("e_total_pj", 0.0) / 1e6 for o in ops]
        ax.barh(ys, [x if x > 0 else float("nan") for x in vals], height=h * 0.95, color=colors[v.label],
                label=v.label)
    ax.set_yticks(range(len(ops)))
    ax.set_yticklabels(ops)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("energy per image, compute + memory (µJ, log scale)")
    ax.grid(axis="x", alpha=0.3, which="both")
    ax.legend(title="variant", fontsize=8, loc="lower right")
    ax.set_title(f"{study.model}: energy by op type (float twins have no requantize / log2 code)", fontsize=11)
    _footnote(fig, study)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return _save(fig, out, "energy_by_op_type", formats)


def _count_kind(key: str) -> str | None:
    kind = key.split("_")[1]
    if kind in ("divstep", "sqrtstep"):
        return "step"
    return None if kind == "acc" else kind


def plot_op_counts_per_layer(study, out: Path, label: str | None = None, formats=FORMATS) -> list[Path]:
    plt = _plt()
    ints = study.integer_variants
    v = study.variant(label) if label else (ints[-1] if ints else study.variants[0])
    per = v.est.per_layer()
    layers = list(per)
    kinds = []
    vals = {}
    for k, lab in COUNT_KINDS:
        if k == "shiftadd":
            row = [per[ly].get("shift_adds", 0) for ly in layers]
        else:
            row = [sum(x for kk, x in per[ly].items() if kk.startswith("op_") and _count_kind(kk) == k)
                   for ly in layers]
            if k == "shift":  # the attention·V shifts are shown as shift-adds
                row = [x - per[ly].get("shift_adds", 0) for x, ly in zip(row, layers)]
        if any(row):
            kinds.append((k, lab))
            vals[k] = row
    w = 0.85 / max(1, len(kinds))
    fig, ax = plt.subplots(figsize=(max(9.0, 0.75 * len(layers) + 3), 4.8))
    cmap = plt.get_cmap("tab10")
    for j, (k, lab) in enumerate(kinds):
        xs = [i + (j - (len(kinds) - 1) / 2) * w for i in range(len(layers))]
        ax.bar(xs, [x if x > 0 else float("nan") for x in vals[k]], width=w * 0.95, color=cmap(j), label=lab)
    ax.set_yscale("log")
    ax.set_xticks(range(len(layers)))
    ax.set_xticklabels([short_layer(x) for x in layers])
    ax.set_xlabel("layer (numbers = transformer blocks)")
    ax.set_ylabel("operations per image (log scale)")
    ax.grid(axis="y", alpha=0.3, which="major")
    ax.legend(fontsize=8, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False)
    ax.set_title(f"{study.model} {v.label}: operation counts per layer (accumulates are inside MACs / shift-adds)",
                 fontsize=11)
    _footnote(fig, study)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return _save(fig, out, "op_counts_per_layer", formats)


def plot_energy_shares(study, out: Path, formats=FORMATS) -> list[Path]:
    plt = _plt()
    vs = study.variants
    cmap = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(10, 1.6 + 0.55 * len(vs)))
    fns = [f for f in FUNCTIONS if any(v.est.per_function().get(f, {}).get("e_compute_pj", 0) > 0 for v in vs)]
    for i, v in enumerate(vs):
        per = v.est.per_function()
        tot = v.est.totals()["e_compute_pj"] or 1.0
        left = 0.0
        for j, f in enumerate(fns):
            share = 100 * per.get(f, {}).get("e_compute_pj", 0.0) / tot
            ax.barh(i, share, left=left, color=cmap(j), label=f if i == 0 else None, height=0.7)
            if share >= 6:
                ax.text(left + share / 2, i, f"{share:.0f}%", ha="center", va="center", fontsize=7, color="white")
            left += share
    ax.set_yticks(range(len(vs)))
    ax.set_yticklabels([v.label for v in vs])
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("share of compute energy per image (%)")
    ax.legend(fontsize=8, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.22), frameon=False)
    ax.set_title(f"{study.model}: where the compute energy goes", fontsize=11)
    _footnote(fig, study)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return _save(fig, out, "energy_shares", formats)


def plot_accuracy_vs_energy(study, out: Path, formats=FORMATS) -> list[Path]:
    plt = _plt()
    pts = [v for v in study.variants if v.accuracy is not None]
    if not pts:
        return []
    colors = _colors([v.label for v in study.variants])
    fig, axes = plt.subplots(1, 2, figsize=(11, 5), sharey=True)
    lo = min(v.accuracy for v in pts)
    hi = max(v.accuracy for v in pts)
    pad = max(1.0, 0.15 * (hi - lo))
    for ax, key, what in ((axes[0], "e_total_pj", "total: compute + SRAM + DRAM"),
                          (axes[1], "e_compute_pj", "compute only")):
        xs = [v.est.totals()[key] / 1e6 for v in pts]
        for v, x in zip(pts, xs):
            ax.scatter([x], [v.accuracy], s=60, color=colors[v.label], zorder=3)
        ax.set_xscale("log")
        ax.set_xlim(min(xs) / 1.6, max(xs) * 3.5)
        ax.set_ylim(lo - pad, min(100.5, hi + pad))
        ax.set_xlabel("energy per image (µJ, log scale)")
        ax.set_title(what, fontsize=10)
        ax.grid(alpha=0.3, which="both")
        _place_labels(fig, ax, [(x, v.accuracy, f"{v.label}  {v.accuracy:.2f}%") for v, x in zip(pts, xs)])
    axes[0].set_ylabel("top-1 accuracy (%)")
    src = pts[0].accuracy_source
    sub = "\n".join(textwrap.wrap(f"({src})", 120)) if src else ""
    fig.suptitle(f"{study.model}: accuracy vs energy per image across bit settings" + (f"\n{sub}" if sub else ""),
                 fontsize=11)
    _footnote(fig, study)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return _save(fig, out, "accuracy_vs_energy", formats)


def _place_labels(fig, ax, items, fontsize: float = 8.0) -> None:
    """Label each point to its right; a label that would overlap an earlier one (or a marker) moves up or
    down in steps of one text line, with a thin leader line."""
    fig.canvas.draw()
    to_px = ax.transData.transform
    px_per_pt = fig.dpi / 72.0
    line = 1.35 * fontsize * px_per_pt
    marks = [to_px((x, y)) for x, y, _ in items]
    boxes: list[tuple[float, float, float, float]] = []

    def free(b) -> bool:
        x0, y0, x1, y1 = b
        if any(x0 < c1 and c0 < x1 and y0 < d1 and d0 < y1 for c0, d0, c1, d1 in boxes):
            return False
        return not any(x0 - 4 < mx < x1 + 4 and y0 - 4 < my < y1 + 4 for mx, my in marks)

    order = sorted(range(len(items)), key=lambda i: (-items[i][1], items[i][0]))
    for i in order:
        x, y, text = items[i]
        px, py = marks[i]
        w = 0.62 * fontsize * px_per_pt * len(text)
        for k in (0, 1, -1, 2, -2, 3, -3, 4, -4):
            dy = k * line
            b = (px + 9 * px_per_pt, py + dy - line / 2, px + 9 * px_per_pt + w, py + dy + line / 2)
            if free(b):
                break
        boxes.append(b)
        ax.annotate(text, (x, y), textcoords="offset points", xytext=(9, dy / px_per_pt), va="center",
                    fontsize=fontsize, arrowprops={"arrowstyle": "-", "color": "#999999", "lw": 0.6} if k else None)


def write_plots(study, out_dir: str | Path, formats: tuple[str, ...] = FORMATS) -> list[Path]:
    """All figures of the study into out_dir, one file per format (PNG and SVG by default)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for fn in (plot_energy_per_layer, plot_energy_by_op_type, plot_op_counts_per_layer, plot_energy_shares,
               plot_accuracy_vs_energy):
        paths += fn(study, out, formats=formats)
    return paths
