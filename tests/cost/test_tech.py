"""Technology tables: the Horowitz points, the width / capacity rules, malformed tables."""

import math

import pytest
import yaml

from repq_hw.cost.energy import op_energy
from repq_hw.cost.tech import TECH_DIR, TechTableError, load_tech, tech_from_dict

T = load_tech()  # sim/tech/horowitz_45nm.yaml


def good() -> dict:
    return yaml.safe_load((TECH_DIR / "horowitz_45nm.yaml").read_text())


def test_default_table_states_its_source_and_numbers():
    assert "Horowitz" in T.source and "ISSCC 2014" in T.source and "45" in T.source
    assert (T.add(8), T.add(32)) == (0.03, 0.1)
    assert (T.mult(8, 8), T.mult(32, 32)) == (0.2, 3.1)
    assert (T.fadd("fp16"), T.fadd("fp32"), T.fmult("fp16"), T.fmult("fp32")) == (0.4, 0.9, 1.1, 3.7)
    assert [T.sram_64b(c) for c in (8, 32, 1024)] == pytest.approx([10, 20, 100])
    assert T.dram_pj_per_byte("low") * 8 == 1300 and T.dram_pj_per_byte("high") * 8 == 2600
    assert T.dram_pj_per_byte("mid") * 8 == 1950


def test_adder_rule_linear_in_width():
    # between the points: linear; outside: proportional through the nearest point
    assert T.add(16) == pytest.approx(0.03 + (0.1 - 0.03) * (16 - 8) / (32 - 8))
    assert T.add(20) == pytest.approx(0.065)
    assert T.add(4) == pytest.approx(0.015)
    assert T.add(1) == pytest.approx(0.03 / 8)
    assert T.add(64) == pytest.approx(0.2)
    assert T.shift(16) == T.add(16)  # shift_vs_add = 1 (stated assumption)


def test_multiplier_rule_proportional_to_width_product():
    # the table point of width w stands for w*w partial-product bits
    assert T.mult(4, 4) == pytest.approx(0.2 * 16 / 64)
    assert T.mult(8, 4) == T.mult(4, 8) == pytest.approx(0.1)
    assert T.mult(16, 16) == pytest.approx(0.2 + (3.1 - 0.2) * (256 - 64) / (1024 - 64))
    assert T.mult(16, 64) == pytest.approx(T.mult(32, 32))
    assert T.mult(32, 64) == pytest.approx(6.2)
    assert T.mult(2, 2) < T.mult(4, 4) < T.mult(8, 8) < T.mult(16, 16) < T.mult(32, 32)


def test_sram_rule_loglog_interpolation():
    assert T.sram_64b(16) == pytest.approx(10 * math.sqrt(2))  # between 8 KB and 32 KB: x4 capacity, x2 energy
    assert T.sram_64b(2) == pytest.approx(5)  # first segment's slope extended below
    slope = math.log(5) / math.log(32)  # last segment (32 KB -> 1 MB)
    assert T.sram_64b(4096) == pytest.approx(100 * 4**slope)
    assert T.sram_read_pj_per_byte(32) == pytest.approx(20 / 8)


def test_op_keys_are_priced_by_the_rules():
    assert op_energy("op_mac_UINT4_UINT4", T) == pytest.approx(T.mult(4, 4))
    assert op_energy("op_mul_INT33_INT32", T) == pytest.approx(T.mult(33, 32))
    assert op_energy("op_acc_UINT17", T) == op_energy("op_add_UINT17", T) == pytest.approx(T.add(17))
    assert op_energy("op_cmp_INT64", T) == pytest.approx(0.2)
    assert op_energy("op_divstep_UINT31", T) == op_energy("op_sqrtstep_UINT31", T) == T.add(31)
    assert op_energy("op_mac_FP16_FP16", T) == 1.1 and op_energy("op_acc_FP32", T) == 0.9
    # a 1024 x 23-bit table (2.875 KB): one 23-bit read at that capacity
    assert op_energy("op_lut_UINT23_1024", T) == pytest.approx(T.sram_64b(1024 * 23 / 8 / 1024) * 23 / 64)
    for bad in ("op_mac_UINT4", "op_mac_FP16_UINT4", "op_shift_FP16", "mem_w_UINT4", "op_mac_FP16_FP32"):
        with pytest.raises(ValueError):
            op_energy(bad, T)
    with pytest.raises(ValueError, match="no float_add entry for 'fp8'"):
        op_energy("op_add_FP8", T)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.pop("int_mult"), "missing required field 'int_mult'"),
    (lambda d: d.update(source=""), "field 'source' must be a non-empty string"),
    (lambda d: d["int_add"].update({8: "cheap"}), "field 'int_add.8': expected a number"),
    (lambda d: d["int_add"].update({8: -1}), "field 'int_add.8': must be > 0"),
    (lambda d: d["int_mult"].update({"eight": 1.0}), "field 'int_mult': key 'eight' is not an operand width"),
    (lambda d: d.update(int_add={}), "field 'int_add': expected a non-empty mapping"),
    (lambda d: d["float_add"].update({"half": 0.4}), "field 'float_add': key 'half' must name a float format"),
    (lambda d: d["sram_read_64b"].update({"big": 5}), "field 'sram_read_64b': key 'big' is not a capacity"),
    (lambda d: d.update(dram_64b={"low": 3000, "high": 2000}), "field 'dram_64b': low (3000.0) > high"),
    (lambda d: d.update(dram_64b={"typ": 2000}), "field 'dram_64b' must have exactly the keys"),
    (lambda d: d.update(int_addd={8: 1}), "unknown field(s) ['int_addd']"),
    (lambda d: d.update(units="nJ"), "field 'units' must be 'pJ'"),
    (lambda d: d.update(assumptions={"shift_vs_add": "x"}), "field 'assumptions.shift_vs_add': expected a number"),
    (lambda d: d.update(assumptions={"mux": 1}), "field 'assumptions': unknown key(s) ['mux']"),
])
def test_malformed_tables_name_the_field(edit, message):
    d = good()
    edit(d)
    with pytest.raises(TechTableError) as e:
        tech_from_dict(d, "my.yaml")
    assert message in str(e.value) and "my.yaml" in str(e.value)


def test_user_table_file_and_errors(tmp_path):
    d = good()
    d["name"] = "scaled"
    d["int_add"] = {8: 0.06, 32: 0.2}
    p = tmp_path / "scaled.yaml"
    p.write_text(yaml.safe_dump(d))
    t = load_tech(p)
    assert t.name == "scaled" and t.add(16) == pytest.approx(2 * T.add(16)) and t.path == str(p)
    (tmp_path / "broken.yaml").write_text("int_add: [1, 2\n")
    with pytest.raises(TechTableError, match="not valid YAML"):
        load_tech(tmp_path / "broken.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(TechTableError, match="must be a YAML mapping"):
        load_tech(tmp_path / "list.yaml")
    with pytest.raises(FileNotFoundError, match="horowitz_45nm"):
        load_tech(tmp_path / "missing.yaml")
    assert load_tech("horowitz_45nm").name == "horowitz_45nm"
