"""The memory model (placement, spills, streaming, weight fetches) and the energy totals."""

import numpy as np
import pytest

from repq_hw.cost.counts import count_graph
from repq_hw.cost.energy import MemoryConfig, estimate, simulate_memory
from repq_hw.cost.tech import load_tech
from repq_hw.ir.graph import IntType
from repq_hw.ir.ops import Op
from repq_hw.lower.builder import GraphBuilder

T = load_tech()


def two_layer_mlp():
    """x uint8 [100,100] -> GEMM -> int32 -> REQUANT -> uint8 [100,50] -> GEMM -> int32 -> REQUANT -> uint8."""
    b = GraphBuilder({"w_bits": 8, "a_bits": 8})
    x = b.input("x", "uint8", (100, 100))

    def layer(name, x, k):
        acc = b.node(name, Op.GEMM, [x], "int32", (100, 50), attrs={"a_zp": 0},
                     consts={"weight": (np.zeros((50, k), np.int64), IntType(False, 8, (50, k))),
                             "w_zp": np.zeros(50, np.int32), "bias": np.zeros(50, np.int32)})
        return b.node(f"{name}.rq", Op.REQUANT, [acc], "uint8", (100, 50), attrs={"zero_point": 0, "rounding": "floor"},
                      consts={"multiplier": np.full(50, 1 << 30, np.int32), "shift": np.full(50, 31, np.int8)})

    b.g.outputs.append(layer("fc2", layer("fc1", x, 100), 50))
    return b.g


def total(traffic, key):
    return sum(t[key] for t in traffic)


def test_streaming_skips_int32_accumulators():
    gc = count_graph(two_layer_mlp())
    tr = simulate_memory(gc, MemoryConfig(act_sram_kb=1024))
    # stored: input 10000 B, two uint8 outputs of 5000 B; the int32 accumulators stream into the requantizers
    assert total(tr, "bytes_sram_act_write") == 10000 + 5000 + 5000
    assert total(tr, "bytes_sram_act_read") == 10000 + 5000 + 5000  # x by fc1, h by fc2, logits to DRAM
    assert total(tr, "bytes_dram_act_read") == 10000 and total(tr, "bytes_dram_act_write") == 5000
    assert total(tr, "bytes_fused") == 4 * 100 * 50 * 4
    raw = simulate_memory(gc, MemoryConfig(act_sram_kb=1024, fuse_elementwise=False))
    assert total(raw, "bytes_sram_act_write") == 20000 + 2 * 20000
    assert total(raw, "bytes_fused") == 0


def test_buffer_larger_than_sram_lives_in_dram():
    gc = count_graph(two_layer_mlp())
    tr = simulate_memory(gc, MemoryConfig(act_sram_kb=8))  # the 10000-byte input does not fit
    assert total(tr, "bytes_dram_act_read") == 10000 + 10000  # host -> DRAM read, then fc1 reads it there
    assert tr[0]["bytes_sram_act_write"] == 0


def spill_graph():
    b = GraphBuilder({})
    x = b.input("x", "uint8", (1, 4096))

    def addc(name, src):
        return b.node(name, Op.ADD_CONST, [src], "int16", (1, 4096), consts={"value": np.zeros((1, 4096), np.int16)})

    a = addc("a", x)
    bb = addc("b", a)
    c = addc("c", bb)
    b.g.outputs.append(b.node("d", Op.ADD, [a, c], "int16", (1, 4096)))
    return b.g


def test_belady_spill():
    gc = count_graph(spill_graph())
    tr = simulate_memory(gc, MemoryConfig(act_sram_kb=20, fuse_elementwise=False))
    # placing c (8 KB) next to a and b (8 KB each) overflows 20 KB: a (next use farthest) is spilled
    assert tr[2]["bytes_dram_act_write"] == 8192 and tr[2]["bytes_sram_act_read"] == 8192 + 8192
    assert tr[3]["bytes_dram_act_read"] == 8192  # d reads a back from DRAM
    assert total(tr, "bytes_dram_act_write") == 8192 + 8192  # the spill and the output
    big = simulate_memory(gc, MemoryConfig(act_sram_kb=64, fuse_elementwise=False))
    assert total(big, "bytes_dram_act_write") == 8192  # only the output


def test_weights_fetched_once_per_batch():
    gc = count_graph(two_layer_mlp())
    wbytes = (50 * 100 + 50 * 50) + 2 * 50 * (4 + 4) + 2 * 50 * (4 + 1)  # weights, bias + w_zp, multiplier + shift
    assert sum(n.weight_bytes for n in gc.nodes) == wbytes
    for batch in (1, 4):
        tr = simulate_memory(gc, MemoryConfig(batch=batch))
        assert total(tr, "bytes_sram_w_read") == wbytes
        assert total(tr, "bytes_dram_w_read") == pytest.approx(wbytes / batch)
        assert total(tr, "bytes_sram_w_write") == pytest.approx(wbytes / batch)


def test_energy_totals_add_up():
    gc = count_graph(two_layer_mlp())
    est = estimate(gc, T, MemoryConfig(act_sram_kb=64, batch=2, dram_point="low"))
    tot = est.totals()
    assert tot["e_total_pj"] == pytest.approx(tot["e_compute_pj"] + tot["e_sram_w_pj"] + tot["e_sram_act_pj"]
                                              + tot["e_dram_w_pj"] + tot["e_dram_act_pj"])
    assert tot["e_compute_pj"] == pytest.approx(sum(v for k, v in tot.items()
                                                    if k.startswith("e_compute_") and k != "e_compute_pj"))
    macs = 100 * 50 * 100 + 100 * 50 * 50
    assert tot["mac_equiv"] == macs and tot["pj_per_mac"] == pytest.approx(tot["e_total_pj"] / macs)
    assert tot["e_compute_MAC_multiply_pj"] == pytest.approx(macs * T.mult(8, 8))
    assert tot["e_dram_act_pj"] == pytest.approx((10000 + 5000) * 1300 / 8)
    for group in (est.per_layer(), est.per_op_type(), est.per_function()):
        assert sum(d["e_total_pj"] for d in group.values()) == pytest.approx(tot["e_total_pj"])
    assert est.header()["estimate"].startswith("analytical estimate")


def test_memory_config_checks():
    with pytest.raises(ValueError, match="act_sram_kb"):
        MemoryConfig(act_sram_kb=0)
    with pytest.raises(ValueError, match="batch"):
        MemoryConfig(batch=0)
    with pytest.raises(ValueError, match="DRAM point"):
        T.dram_pj_per_byte("typical")
