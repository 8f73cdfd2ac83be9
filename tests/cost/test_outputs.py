"""JSON / CSV / figure outputs, the ``repq-hw cost`` command, and the no-torch rule of repq_hw.cost."""

import csv
import json
import subprocess
import sys

import pytest
import yaml

from repq_hw.cli import main
from repq_hw.cost import ESTIMATE_NOTE, analyze, cost_summary, vit_skeleton
from repq_hw.cost.energy import MemoryConfig
from repq_hw.cost.tech import TECH_DIR


@pytest.fixture(scope="module")
def study():
    graphs = {f"W{b}A{b}": vit_skeleton("test_deit", b, b) for b in (8, 4)}
    return analyze(graphs, accuracy={"fp32": 90.0, "fp16": 90.0, "W8A8": 89.5, "W4A4": 80.0},
                   accuracy_source="test numbers", model="test_deit")


def test_variants_and_comparisons(study):
    assert [v.label for v in study.variants] == ["fp32", "fp16", "W8A8", "W4A4"]
    tot = {v.label: v.est.totals() for v in study.variants}
    assert len({t["mac_equiv"] for t in tot.values()}) == 1  # same network, same work
    assert tot["W4A4"]["e_total_pj"] < tot["W8A8"]["e_total_pj"] < tot["fp16"]["e_total_pj"] < tot["fp32"]["e_total_pj"]
    assert tot["W4A4"]["mem_w_UINT4"] * 2 == tot["W8A8"]["mem_w_UINT8"]
    assert tot["fp32"]["mem_w_FP32"] == 2 * tot["fp16"]["mem_w_FP16"] == 4 * tot["W8A8"]["mem_w_UINT8"]
    assert set(study.attn_v) == {"W8A8", "W4A4"}
    assert study.attn_v["W8A8"]["mult_uj"] > study.attn_v["W8A8"]["shift_uj"] > 0
    sh = study.function_shares("W4A4")
    assert {"layernorm", "softmax + log2 code", "gelu"} <= set(sh)
    assert sum(d["compute_pct"] for d in sh.values()) == pytest.approx(100)
    text = study.table()
    assert "ANALYTICAL ESTIMATE" in text and "pJ/MAC" in text and "LayerNorm" in text


def test_json_and_csv_files(study, tmp_path):
    paths = study.write(tmp_path)
    names = {p.name for p in paths}
    assert names == {"cost.json", "cost_totals.csv", "cost_per_layer.csv", "cost_per_op_type.csv",
                     "cost_per_node.csv"}
    doc = json.loads((tmp_path / "cost.json").read_text())
    assert doc["estimate"] == ESTIMATE_NOTE and doc["tech"]["name"] == "horowitz_45nm"
    w4 = doc["variants"]["W4A4"]
    assert w4["accuracy_top1"] == 80.0
    for level in ("totals", "per_layer", "per_op_type", "per_function", "per_node"):
        assert w4[level]
    assert w4["totals"]["op_mac_UINT4_UINT4"] > 0 and w4["totals"]["mem_w_UINT4"] > 0
    assert set(w4["per_layer"]) == {"embed", "blocks.0", "blocks.1", "blocks.2", "head"}
    assert all(isinstance(v, (int, float)) for v in w4["totals"].values())  # flat
    with (tmp_path / "cost_totals.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["variant"] for r in rows] == ["fp32", "fp16", "W8A8", "W4A4"]
    assert all(r["estimate"] == "analytical" for r in rows)
    w4row = rows[3]
    assert float(w4row["op_mac_UINT4_UINT4"]) == w4["totals"]["op_mac_UINT4_UINT4"]
    assert float(w4row["e_total_pj"]) == pytest.approx(w4["totals"]["e_total_pj"], rel=1e-6)
    assert float(rows[0]["op_mac_UINT4_UINT4"]) == 0  # absent keys are 0
    with (tmp_path / "cost_per_node.csv").open() as f:
        nodes = [r for r in csv.DictReader(f) if r["variant"] == "W4A4"]
    assert sum(float(r["e_total_pj"]) for r in nodes) == pytest.approx(w4["totals"]["e_total_pj"], rel=1e-6)


def test_figures(study, tmp_path):
    from repq_hw.cost.plots import write_plots

    paths = write_plots(study, tmp_path)
    stems = {"energy_per_layer", "energy_by_op_type", "op_counts_per_layer", "energy_shares", "accuracy_vs_energy"}
    assert {p.name for p in paths} == {f"{s}.{e}" for s in stems for e in ("png", "svg")}
    assert all(p.stat().st_size > 5000 for p in paths)
    assert "Analytical estimate" in (tmp_path / "energy_per_layer.svg").read_text()


def test_cost_summary_without_accuracy(tmp_path):
    lines = []
    study = cost_summary({"W6A6": vit_skeleton("test_deit", 6, 6)}, tmp_path, floats=("fp32",), plots=False,
                         echo=lines.append, mem=MemoryConfig(act_sram_kb=16, batch=8))
    assert [v.label for v in study.variants] == ["fp32", "W6A6"]
    assert "W6A6" in lines[0] and "cost.json" in lines[-1]
    assert json.loads((tmp_path / "cost.json").read_text())["memory_model"]["batch"] == 8


def test_cli_ir_skeleton_and_errors(tmp_path, capsys):
    from repq_hw.ir.graph import save_graph
    from tests.conftest import lowered

    _, g, _ = lowered("test_deit", 4)
    save_graph(g, tmp_path / "ir")
    assert main(["cost", "--ir", str(tmp_path / "ir"), "--no-plots", "--out", str(tmp_path / "out"),
                 "--sram-kb", "64", "--batch", "4"]) == 0
    out = capsys.readouterr().out
    assert "W4A4" in out and "fp16" in out and "ANALYTICAL ESTIMATE" in out
    doc = json.loads((tmp_path / "out" / "cost.json").read_text())
    assert doc["memory_model"]["act_sram_kb"] == 64 and doc["variants"]["W4A4"]["totals"]["mac_equiv"] > 0

    assert main(["cost", "--model", "deit_small_patch16_224", "--skeleton", "--bits", "8", "--no-float",
                 "--no-plots", "--out", str(tmp_path / "sk")]) == 0
    assert "deit_small_patch16_224" in capsys.readouterr().out

    bad = yaml.safe_load((TECH_DIR / "horowitz_45nm.yaml").read_text())
    bad["sram_read_64b"] = {8: "ten"}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    assert main(["cost", "--ir", str(tmp_path / "ir"), "--tech", str(tmp_path / "bad.yaml"), "--no-plots",
                 "--out", str(tmp_path / "o2")]) == 2
    assert "field 'sram_read_64b.8': expected a number" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["cost", "--bits", "8,9"])
    assert "--bits entries must be integers in 2..8" in capsys.readouterr().err


def test_cost_package_does_not_import_torch():
    code = ("import sys, repq_hw.cost, repq_hw.cost.command, repq_hw.cost.plots, repq_hw.cli\n"
            "from repq_hw.cost import analyze, vit_skeleton\n"
            "analyze({'W4A4': vit_skeleton('test_deit', 4, 4)})\n"
            "bad = [m for m in ('torch', 'timm') if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)
