"""Hardware cost analysis of the integer IR: op and memory counts per op / layer / op type / model, an
energy model (technology tables in ``sim/tech/``, a small explicit memory model), fp32 / fp16 / bit-width
comparisons, JSON / CSV / figures, and the ``repq-hw cost`` command. Rules: ``docs/cost_model.md``.

Every energy number is an analytical estimate. This package reads IR graphs and never imports torch
(only ``command.model_graphs``, which calibrates a model, does, lazily).

    from repq_hw.cost import analyze, cost_summary, count_graph
    study = cost_summary({"W4A4": graph}, "runs/cost", accuracy={"W4A4": 95.0, "fp32": 97.5})
"""

from repq_hw.cost.counts import ESTIMATE_NOTE, GraphCounts, NodeCost, count_graph
from repq_hw.cost.energy import CostEstimate, MemoryConfig, estimate, op_energy
from repq_hw.cost.report import CostStudy, analyze, cost_summary
from repq_hw.cost.skeleton import ARCHS, ViTArch, closed_form_macs, vit_skeleton
from repq_hw.cost.tech import Tech, TechTableError, load_tech

__all__ = [
    "ARCHS",
    "ESTIMATE_NOTE",
    "CostEstimate",
    "CostStudy",
    "GraphCounts",
    "MemoryConfig",
    "NodeCost",
    "Tech",
    "TechTableError",
    "ViTArch",
    "analyze",
    "closed_form_macs",
    "cost_summary",
    "count_graph",
    "estimate",
    "load_tech",
    "op_energy",
    "vit_skeleton",
]
