"""Counting rules on small hand-built graphs (docs/cost_model.md, "Counting rules")."""

import math

import numpy as np
import pytest

from repq_hw.cost.counts import (
    INT_RULES,
    PARAM_WORD_BITS,
    attn_v_as_mac,
    clog2,
    count_graph,
    is_view,
    layer_of,
)
from repq_hw.ir.graph import IntType
from repq_hw.ir.ops import Op
from repq_hw.lower.builder import GraphBuilder


def gemm_graph(m=5, k=12, n=7, a="uint4", w_bits=4):
    b = GraphBuilder({"w_bits": w_bits, "a_bits": 4})
    x = b.input("x", a, (m, k))
    y = b.node("fc", Op.GEMM, [x], "int32", (m, n), attrs={"a_zp": 3},
               consts={"weight": (np.zeros((n, k), np.int64), IntType(False, w_bits, (n, k))),
                       "w_zp": np.zeros(n, np.int32), "bias": np.zeros(n, np.int32)})
    b.g.outputs.append(y)
    return b.g


def test_single_gemm_exact_keys():
    m, k, n = 5, 12, 7
    gc = count_graph(gemm_graph(m, k, n))
    assert gc.label == "W4A4"
    (node,) = gc.nodes
    acc_bits = 4 + 4 + math.ceil(math.log2(k))  # raw unsigned products summed over K
    expected = {
        "op_mac_UINT4_UINT4": m * n * k,
        f"op_acc_UINT{acc_bits}": m * n * k,
        "op_add_UINT8": m * (k - 1),  # rowsum of the activation codes, 4 + ceil(log2 K) bits
        "op_mul_UINT4_UINT8": m * n,  # w_zp[n] * rowsum[m]
        "op_add_INT32": 2 * m * n,  # dot - correction + const
        "mem_w_UINT4": n * k * 4 / 8,  # packed at 4 bits
        "mem_param_INT32": n * (32 + 32) / 8,  # bias and w_zp: int32 words (spec width)
        "mem_act_read_UINT4": m * k * 4 / 8,
        "mem_act_write_INT32": m * n * 4,
        "mac_equiv": m * n * k, "macs": m * n * k, "shift_adds": 0,
    }
    assert node.flat() == expected
    tot = gc.totals()
    assert tot["mem_act_peak"] == m * k / 2 + m * n * 4  # input and output live together
    assert node.layer == "model"


def test_gemm_operand_types_name_the_keys():
    gc = count_graph(gemm_graph(a="uint8", w_bits=6))
    keys = gc.totals()
    assert keys["op_mac_UINT8_UINT6"] == 5 * 7 * 12
    assert "mem_w_UINT6" in keys and not any(k.startswith("op_mac_UINT4") for k in keys)


def attention_graph(h=2, n=10, d=8, a=4, f_attn=3, lut_f=10, lut_e=22, p_bits=16, n_codes=15):
    b = GraphBuilder({"w_bits": a, "a_bits": a})
    q = b.input("q", f"uint{a}", (h, n, d))
    k = b.input("k", f"uint{a}", (h, n, d))
    v = b.input("v", f"uint{a}", (h, n, d))
    s = b.node("qk", Op.BMM_QK, [q, k], "int32", (h, n, n), attrs={"q_zp": 1, "k_zp": 2})
    p = b.node("softmax", Op.SOFTMAX, [s], f"uint{p_bits + 1}", (h, n, n),
               attrs={"multiplier": 1 << 30, "shift": 30, "frac_bits": lut_f, "lut_bits": lut_e, "out_bits": p_bits,
                      "rounding": "half_even"},
               consts={"lut": (np.zeros(1 << lut_f, np.int64), IntType(False, lut_e + 1, (1 << lut_f,)))})
    c = b.node("log2", Op.LOG2_CODE, [p], f"uint{a}", (h, n, n), attrs={"bits": a},
               consts={"thresholds": (np.zeros(n_codes, np.int64), IntType(False, p_bits + 1, (n_codes,)))})
    o = b.node("av", Op.ATTN_V, [c, v], "int32", (h, n, d),
               attrs={"v_zp": 7, "bits": a, "shift_frac": f_attn, "max_code": n_codes - 1, "sqrt2_frac_bits": 15,
                      "rounding": "half_even"})
    b.g.outputs.append(o)
    return b.g


def test_bmm_qk_counts():
    h, n, d = 2, 10, 8
    node = count_graph(attention_graph(h, n, d)).nodes[0].flat()
    lk = clog2(d)
    assert node["op_mac_UINT4_UINT4"] == h * n * n * d
    assert node[f"op_acc_UINT{4 + 4 + lk}"] == h * n * n * d
    # rowsum over q and colsum over k rows (both data), per-row / per-column zero-point products
    assert node[f"op_add_UINT{4 + lk}"] == h * n * (d - 1) * 2
    assert node[f"op_mul_UINT4_UINT{4 + lk}"] == h * n * 2
    assert node["op_add_INT32"] == 2 * h * n * n + h * n
    assert node["mac_equiv"] == h * n * n * d


def test_softmax_counts():
    h, n = 2, 10
    node = count_graph(attention_graph(h, n)).nodes[1].flat()
    rows, e, p = h * n, 22, 16
    sum_bits = e + 1 + clog2(n)
    assert node["op_cmp_INT32"] == rows * (n - 1)  # row max
    assert node["op_mul_INT33_INT32"] == rows * n  # (x - max) * M
    assert node["op_lut_UINT23_1024"] == rows * n  # one exp2 table read per element
    assert node["op_shift_UINT23"] == rows * n  # LUT >> integer part
    assert node[f"op_add_UINT{sum_bits}"] == rows * (n - 1)  # the exact sum
    assert node[f"op_divstep_UINT{sum_bits}"] == rows * n * (p + 2)  # P+1 quotient bits + rounding
    assert not any(k.startswith("mem_param") for k in node)  # the exp2 table is a ROM
    assert node["mem_act_write_UINT17"] == rows * n * 17 / 8


def test_log2_code_counts_threshold_comparisons():
    h, n, big_l = 2, 10, 15
    node = count_graph(attention_graph(h, n, n_codes=big_l)).nodes[2].flat()
    el = h * n * n
    assert node["op_cmp_UINT17"] == el * big_l  # L comparators per probability
    assert node["op_add_UINT4"] == el * (big_l - 1)  # popcount
    assert node["op_cmp_UINT4"] == el  # count == L -> zero state
    assert node["mem_param_UINT17"] == big_l * 17 / 8


def test_attn_v_is_shift_add_not_mac():
    h, n, d, a, f = 2, 10, 8, 4, 3
    gc = count_graph(attention_graph(h, n, d, a, f))
    node = gc.nodes[3].flat()
    nv = math.ceil(math.log2(n * (2**a - 1)))  # worst-case |v - v_zp| <= 2^a - 1
    assert not any(k.startswith("op_mac") for k in node)
    assert node["shift_adds"] == node["mac_equiv"] == h * n * n * d
    assert node[f"op_shift_INT{a + 1}"] == h * n * n * d
    assert node[f"op_acc_INT{1 + nv + f}"] == h * n * n * d
    assert node[f"op_mul_INT{nv + f}_UINT16"] == h * n * d  # one sqrt(2) multiply per output
    assert node[f"op_cmp_UINT{a}"] == h * n * n  # zero-state test per code
    assert node[f"op_add_INT{a + 1}"] == h * n * d  # v - v_zp once per value
    # the multiplier-based alternative has MACs instead
    alt = count_graph(attention_graph(h, n, d, a, f), attn_v_rule=attn_v_as_mac).nodes[3].flat()
    assert alt["op_mac_UINT4_UINT4"] == h * n * n * d and alt["shift_adds"] == 0
    assert alt["mac_equiv"] == node["mac_equiv"]


def test_streams_and_totals_are_consistent():
    gc = count_graph(attention_graph())
    tot = gc.totals()
    for key in ("op_mac_UINT4_UINT4", "mac_equiv", "mem_act_read_UINT4"):
        assert tot[key] == sum(n.flat().get(key, 0) for n in gc.nodes)
        assert tot[key] == sum(d.get(key, 0) for d in gc.per_op_type().values())
        assert tot[key] == sum(d.get(key, 0) for d in gc.per_layer().values())


def test_requant_layernorm_lut_add_rules():
    t, c, a = 4, 6, 4
    b = GraphBuilder({"w_bits": a, "a_bits": a})
    x = b.input("x", "int16", (t, c))
    y = b.node("ln", Op.LAYERNORM, [x], "uint4", (t, c),
               attrs={"eps_q": 1, "frac_bits": 8, "zero_point": 8, "rounding": "half_even"},
               consts={"multiplier": np.full(c, 1 << 30, np.int32), "shift": np.full(c, 30, np.int8),
                       "offset": np.zeros(c, np.int64)})
    r = b.node("rq", Op.REQUANT, [x], "int10", (t, c), attrs={"zero_point": 0, "rounding": "half_even"},
               consts={"multiplier": np.full(1, 1 << 30, np.int32), "shift": np.full(1, 30, np.int8)})
    g = b.node("gelu", Op.LUT, [r], "uint4", (t, c), attrs={"in_min": -512},
               consts={"table": np.zeros(1024, np.int64)})
    s = b.node("add", Op.ADD, [x, x], "int16", (t, c))
    b.g.outputs += [y, g, s]
    ln, rq, lut, add = (n.flat() for n in count_graph(b.g).nodes)
    el = t * c
    assert ln["op_sqrtstep_UINT35"] == 32 * t  # one 32-iteration isqrt per row
    qb = math.ceil(math.log2(2 * math.sqrt(c - 1) * 2**8 + 1))
    assert ln["op_divstep_UINT31"] == el * (qb + 1)
    assert ln["op_mul_INT16_INT16"] == el  # squares
    assert ln["op_mul_INT32_INT32"] == el + t  # fused requantize per element + S^2 per row
    assert ln["mem_param_INT32"] == c * PARAM_WORD_BITS["multiplier"] / 8
    assert ln["mem_param_INT64"] == c * 8 and ln["mem_param_UINT8"] == c
    # requantize: one int16 x int32 multiply per element, rounding shift, 2 saturation compares, + zp
    assert rq["op_mul_INT16_INT32"] == el and rq["op_shift_INT48"] == el and rq["op_cmp_INT48"] == 2 * el
    assert rq["op_add_INT10"] == el and "op_add_INT64" not in rq  # no offset constant
    assert rq["mem_param_INT32"] == 4 and rq["mem_param_UINT8"] == 1  # per-tensor multiplier and shift
    assert lut["op_lut_UINT4_1024"] == el and lut["op_add_INT10"] == el
    assert lut["mem_param_UINT4"] == 1024 * 4 / 8  # table entries at the output width
    assert add["op_add_INT16"] == el and add["op_cmp_INT17"] == 2 * el
    assert add["mem_act_read_INT16"] == 2 * el * 2


def test_views_move_nothing_and_alias_their_buffer():
    b = GraphBuilder({"w_bits": 4, "a_bits": 4})
    x = b.input("x", "int32", (4, 12))
    s = b.node("sl", Op.SLICE, [x], "int32", (4, 6), attrs={"start": 0, "stop": 6})
    h = b.node("sh", Op.SPLIT_HEADS, [s], "int32", (2, 4, 3), attrs={"heads": 2})
    m = b.node("mh", Op.MERGE_HEADS, [h], "int32", (4, 6))
    y = b.node("rq", Op.REQUANT, [m], "uint4", (4, 6), attrs={"zero_point": 0, "rounding": "floor"},
               consts={"multiplier": np.full(1, 1 << 30, np.int32), "shift": np.full(1, 30, np.int8)})
    b.g.outputs.append(y)
    gc = count_graph(b.g)
    for n in gc.nodes[:3]:
        assert n.flat() == {"mac_equiv": 0, "shift_adds": 0, "macs": 0}
    assert gc.nodes[3].flat()["mem_act_read_INT32"] == 4 * 6 * 4  # the slice it reads, not the buffer
    assert set(gc.buffer_bytes) == {"x", y}
    assert gc.peak_bytes == 4 * 12 * 4 + 4 * 6 * 0.5


def test_every_op_has_a_rule_or_is_a_view():
    for op in Op:
        assert op in INT_RULES or is_view(op), op


def test_unknown_graph_layout_and_layers():
    names = ["patch_embed.proj", "blocks.0.norm1", "blocks.0.add2", "blocks.1.attn.qkv", "norm", "head"]
    assert layer_of(names) == ["embed", "blocks.0", "blocks.0", "blocks.1", "head", "head"]
    assert layer_of(["a", "b"]) == ["model", "model"]
    swin = ["embed.proj", "layers.0.blocks.0.fc1", "layers.0.downsample.reduction", "layers.1.blocks.0.fc1", "head"]
    assert layer_of(swin) == ["embed", "layers.0.blocks.0", "layers.0.downsample", "layers.1.blocks.0", "head"]


def test_float_twin_counts():
    m, k, n = 5, 12, 7
    for fmt, by in (("fp32", 4), ("fp16", 2)):
        (node,) = count_graph(gemm_graph(m, k, n), fmt).nodes
        d = node.flat()
        f = fmt.upper()
        assert d[f"op_mac_{f}_{f}"] == d[f"op_acc_{f}"] == m * n * k
        assert d[f"op_add_{f}"] == m * n  # bias
        assert d[f"mem_w_{f}"] == n * k * by and d[f"mem_param_{f}"] == n * by
        assert d[f"mem_act_read_{f}"] == m * k * by and d[f"mem_act_write_{f}"] == m * n * by
    with pytest.raises(ValueError, match="numerics"):
        count_graph(gemm_graph(), "bf16")
