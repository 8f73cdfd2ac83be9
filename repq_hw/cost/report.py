"""Cost studies: several variants of one model (integer graphs at different bit widths and their float
twins) counted, priced and compared; terminal tables, JSON / CSV files and figures.

Every number is an analytical estimate (see ESTIMATE_NOTE). Nothing here imports torch.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from repq_hw.cost.counts import ESTIMATE_NOTE, attn_v_as_mac, count_graph
from repq_hw.cost.energy import FUNCTIONS, CostEstimate, MemoryConfig, estimate
from repq_hw.cost.tech import Tech, load_tech
from repq_hw.ir.graph import Graph

FLOAT_VARIANTS = ("fp32", "fp16")


@dataclass
class Variant:
    label: str
    est: CostEstimate
    accuracy: float | None = None  # top-1 %, where measured
    accuracy_source: str = ""


@dataclass
class CostStudy:
    """One model under several numerics; ``variants`` in display order (floats first)."""

    model: str
    tech: Tech
    mem: MemoryConfig
    variants: list[Variant]
    attn_v: dict[str, dict] = field(default_factory=dict)  # label -> shift vs multiplier comparison

    def variant(self, label: str) -> Variant:
        for v in self.variants:
            if v.label == label:
                return v
        raise KeyError(f"no variant {label!r}; have {[v.label for v in self.variants]}")

    @property
    def integer_variants(self) -> list[Variant]:
        return [v for v in self.variants if v.est.counts.numerics == "int"]

    # -- tables --------------------------------------------------------------------------------------
    def summary_rows(self) -> list[dict]:
        rows = []
        for v in self.variants:
            t = v.est.totals()
            rows.append({
                "variant": v.label, "top1": v.accuracy, "gmac_equiv": t["mac_equiv"] / 1e9,
                "macs_g": t["macs"] / 1e9, "shift_adds_m": t["shift_adds"] / 1e6,
                "weights_kb": sum(x for k, x in t.items() if k.startswith("mem_w_")) / 1024,
                "params_kb": sum(x for k, x in t.items() if k.startswith("mem_param_")) / 1024,
                "peak_act_kb": t["mem_act_peak"] / 1024, "peak_stored_kb": t["mem_act_peak_stored"] / 1024,
                "compute_uj": t["e_compute_pj"] / 1e6,
                "sram_uj": (t["e_sram_w_pj"] + t["e_sram_act_pj"]) / 1e6,
                "dram_uj": (t["e_dram_w_pj"] + t["e_dram_act_pj"]) / 1e6,
                "total_uj": t["e_total_pj"] / 1e6, "pj_per_mac": t["pj_per_mac"],
                "pj_per_mac_compute": t["pj_per_mac_compute"]})
        return rows

    def function_shares(self, label: str) -> dict[str, dict]:
        """Share (%) of each functional group in compute energy, total energy and op count."""
        v = self.variant(label)
        per = v.est.per_function()
        tot = v.est.totals()
        n_ops = {k: sum(x for kk, x in d.items() if kk.startswith("op_")) for k, d in per.items()}
        all_ops = sum(n_ops.values()) or 1
        out = {}
        for fn in FUNCTIONS:
            d = per.get(fn)
            if d is None:
                continue
            out[fn] = {"compute_pct": 100 * d["e_compute_pj"] / (tot["e_compute_pj"] or 1),
                       "total_pct": 100 * d["e_total_pj"] / (tot["e_total_pj"] or 1),
                       "ops_pct": 100 * n_ops[fn] / all_ops,
                       "compute_uj": d["e_compute_pj"] / 1e6, "total_uj": d["e_total_pj"] / 1e6}
        return out

    def table(self) -> str:
        """The terminal summary."""
        m = self.mem
        lines = [f"{self.model}: hardware cost per image — ANALYTICAL ESTIMATE",
                 f"  tech: {self.tech.name} — {_short_source(self.tech.source)}",
                 (f"  memory: activation SRAM {m.act_sram_kb:g} KB, weights from DRAM once per batch of {m.batch}, "
                  f"DRAM price '{m.dram_point}', streaming {'on' if m.fuse_elementwise else 'off'}"), ""]
        hdr = ("variant", "top-1 %", "GMAC-eq", "shift-add M", "weights KB", "peak act KB", "compute µJ",
               "SRAM µJ", "DRAM µJ", "total µJ", "pJ/MAC", "compute pJ/MAC")
        body = []
        for r in self.summary_rows():
            body.append((r["variant"], "-" if r["top1"] is None else f"{r['top1']:.2f}", fmt_num(r["gmac_equiv"]),
                         fmt_num(r["shift_adds_m"]), f"{r['weights_kb']:,.1f}", f"{r['peak_stored_kb']:,.1f}",
                         fmt_num(r["compute_uj"]), fmt_num(r["sram_uj"]), fmt_num(r["dram_uj"]), fmt_num(r["total_uj"]),
                         f"{r['pj_per_mac']:.3f}", f"{r['pj_per_mac_compute']:.3f}"))
        lines += _fmt_table(hdr, body)
        if self.attn_v:
            lines += ["", ("attention·V: log2 shift-and-add (as lowered) vs a multiplier-based MAC array "
                           "(compute energy of the attention·V ops)")]
            lines += _fmt_table(("variant", "shift-add µJ", "multiplier µJ", "multiplier / shift",
                                 "model compute saved %"),
                                [(k, fmt_num(d["shift_uj"]), fmt_num(d["mult_uj"]), f"{d['ratio']:.2f}",
                                  f"{d['saved_pct_of_compute']:.2f}") for k, d in self.attn_v.items()])
        ints = self.integer_variants
        if ints:
            lines += ["", ("share of LayerNorm / Softmax (+ log2 code) / GELU in the integer model "
                           "(% of compute energy / % of total energy / % of op count)")]
            rows = []
            for v in ints:
                sh = self.function_shares(v.label)
                rows.append((v.label, *(f"{sh[f]['compute_pct']:.1f} / {sh[f]['total_pct']:.1f} / "
                                         f"{sh[f]['ops_pct']:.1f}" if f in sh else "-"
                                         for f in ("layernorm", "softmax + log2 code", "gelu"))))
            lines += _fmt_table(("variant", "LayerNorm", "Softmax", "GELU"), rows)
        lines += ["", f"({ESTIMATE_NOTE})"]
        return "\n".join(lines)

    # -- files ---------------------------------------------------------------------------------------
    def to_json(self) -> dict:
        doc = {"estimate": ESTIMATE_NOTE, "model": self.model, "tech": self.tech.describe(),
               "memory_model": self.mem.describe(), "variants": {}, "comparisons": {}}
        for v in self.variants:
            e = v.est
            doc["variants"][v.label] = {
                "numerics": e.counts.numerics, "accuracy_top1": v.accuracy, "accuracy_source": v.accuracy_source,
                "weight_sram_kb": e.weight_sram_kb, "totals": e.totals(), "per_layer": e.per_layer(),
                "per_op_type": e.per_op_type(), "per_function": e.per_function(),
                "per_node": {n.name: d | {"op": n.op, "layer": n.layer} for n, d in zip(e.counts.nodes, e.per_node)}}
        doc["comparisons"]["attn_v_shift_vs_multiplier"] = self.attn_v
        doc["comparisons"]["function_shares"] = {v.label: self.function_shares(v.label) for v in self.integer_variants}
        doc["comparisons"]["summary"] = self.summary_rows()
        return doc

    def write(self, out_dir: str | Path) -> list[Path]:
        """cost.json plus cost_totals.csv, cost_per_layer.csv, cost_per_op_type.csv, cost_per_node.csv."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / "cost.json"]
        paths[0].write_text(json.dumps(_clean(self.to_json()), indent=1, ensure_ascii=False))
        rows = {"totals": [], "per_layer": [], "per_op_type": [], "per_node": []}
        for v in self.variants:
            e = v.est
            base = {"estimate": "analytical", "model": self.model, "variant": v.label}
            rows["totals"].append(base | {"top1": v.accuracy} | e.totals())
            rows["per_layer"] += [base | {"layer": k} | d for k, d in e.per_layer().items()]
            rows["per_op_type"] += [base | {"op": k} | d for k, d in e.per_op_type().items()]
            rows["per_node"] += [base | {"node": n.name, "op": n.op, "layer": n.layer} | d
                                 for n, d in zip(e.counts.nodes, e.per_node)]
        for name, rs in rows.items():
            p = out / f"cost_{name}.csv"
            _write_csv(p, rs)
            paths.append(p)
        return paths


def fmt_num(x: float) -> str:
    """4 significant digits, no exponent."""
    if x == 0:
        return "0"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{max(0, 3 - math.floor(math.log10(abs(x))))}f}"


def _short_source(s: str) -> str:
    s = s.split(";")[0]
    return s if len(s) <= 110 else s[:107] + "..."


def _fmt_table(hdr, body) -> list[str]:
    w = [max(len(str(x)) for x in col) for col in zip(hdr, *body)]
    line = lambda r: "  ".join(str(x).rjust(wi) if i else str(x).ljust(wi) for i, (x, wi) in enumerate(zip(r, w)))
    return [line(hdr), "  ".join("-" * wi for wi in w)] + [line(r) for r in body]


def _clean(o):
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, float):
        if math.isnan(o) or math.isinf(o):
            return None
        return int(o) if o.is_integer() and abs(o) < 2**53 else round(o, 6)
    return o


def _write_csv(path: Path, rows: list[dict]) -> None:
    lead = [k for k in ("estimate", "model", "variant", "layer", "op", "node", "top1") if any(k in r for r in rows)]
    keys = lead + sorted({k for r in rows for k in r} - set(lead))
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, restval=0)
        w.writeheader()
        for r in rows:
            w.writerow({k: _clean(r.get(k, 0)) for k in keys})


def _attn_v_comparison(g: Graph, label: str, est: CostEstimate, tech: Tech, mem: MemoryConfig) -> dict | None:
    shift = [d["e_compute_pj"] for n, d in zip(est.counts.nodes, est.per_node) if n.op == "attn_v_shift"]
    if not shift:
        return None
    alt = estimate(count_graph(g, "int", label, attn_v_rule=attn_v_as_mac), tech, mem)
    mult = [d["e_compute_pj"] for n, d in zip(alt.counts.nodes, alt.per_node) if n.op == "attn_v_shift"]
    s, m = sum(shift), sum(mult)
    comp = est.totals()["e_compute_pj"]
    return {"shift_uj": s / 1e6, "mult_uj": m / 1e6, "ratio": m / s if s else math.inf,
            "saved_pct_of_compute": 100 * (m - s) / (comp - s + m) if comp else 0.0}


def analyze(graphs: dict[str, Graph] | list[Graph], tech: Tech | str | Path | None = None,
            mem: MemoryConfig | None = None, floats=FLOAT_VARIANTS, accuracy: dict[str, float] | None = None,
            accuracy_source: str = "", model: str | None = None) -> CostStudy:
    """Count and price integer graphs (and float twins of the first one).

    Args:
        graphs: ``{label: Graph}`` (e.g. ``{"W8A8": g8, "W4A4": g4}``) or a list (labels from graph meta).
        tech: a Tech, a table path or name (default Horowitz 45 nm).
        mem: the memory model (default MemoryConfig()).
        floats: float twins to add, counted on the first graph's structure.
        accuracy: top-1 % per label (e.g. ``{"fp32": 97.5, "W4A4": 95.3}``) for the energy-accuracy plot.
        model: model name for titles (default: the graph meta's ``model``).
    """
    tech = tech if isinstance(tech, Tech) else load_tech(tech)
    mem = mem or MemoryConfig()
    if not isinstance(graphs, dict):
        graphs = {count_graph(g).label: g for g in graphs}
    if not graphs:
        raise ValueError("analyze needs at least one graph")
    first = next(iter(graphs.values()))
    model = model or first.meta.get("model", "model")
    accuracy = accuracy or {}
    variants = []
    for f in floats:
        variants.append(Variant(f, estimate(count_graph(first, f), tech, mem), accuracy.get(f), accuracy_source))
    attn = {}
    for label, g in graphs.items():
        est = estimate(count_graph(g, "int", label), tech, mem)
        variants.append(Variant(label, est, accuracy.get(label), accuracy_source))
        cmp = _attn_v_comparison(g, label, est, tech, mem)
        if cmp:
            attn[label] = cmp
    return CostStudy(model, tech, mem, variants, attn)


def cost_summary(graphs: dict[str, Graph] | list[Graph], out_dir: str | Path | None = None,
                 accuracy: dict[str, float] | None = None, tech=None, mem: MemoryConfig | None = None,
                 floats=FLOAT_VARIANTS, plots: bool = True, echo=print, model: str | None = None,
                 accuracy_source: str = "") -> CostStudy:
    """Print the cost table of ``graphs`` and (with ``out_dir``) write cost.json, the CSV files and the
    figures (PNG + SVG) there. Returns the CostStudy. This is the entry point for ``repq-hw demo``."""
    study = analyze(graphs, tech, mem, floats, accuracy, accuracy_source, model=model)
    if echo:
        echo(study.table())
    if out_dir is not None:
        files = study.write(out_dir)
        if plots:
            from repq_hw.cost.plots import write_plots

            files += write_plots(study, out_dir)
        if echo:
            echo(f"\ncost files ({len(files)}) written to {out_dir}/: "
                 + ", ".join(p.name for p in files if p.suffix in (".json", ".png")))
    return study
