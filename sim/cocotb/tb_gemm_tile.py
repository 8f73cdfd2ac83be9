"""cocotb testbench: a golden `gemm` or `bmm_qk` op through a GEMM tile with the rq_gemm_tile interface.

Logical ports: inputs ``clk rst clear in_valid a w finish a_zp w_zp bias k_len``, outputs ``out_valid y
ovf``. ``w`` packs ``lanes`` unsigned 8-bit codes, ``w_zp``/``bias``/``y`` pack ``lanes`` signed 32-bit
values, lane 0 in the least significant bits. Per (image, row m, tile of ``lanes`` output channels): one
clock with ``clear``, K clocks with ``in_valid`` (a[m, k] and w[n0 .. n0+lanes-1, k]), one clock with
``finish``; then the bench waits up to ``max_latency`` clocks for ``out_valid``. ``bmm_qk``: a = q rows,
w = k rows of the same head, w_zp = k_zp in every lane, bias = 0, a_zp = q_zp.
"""

from __future__ import annotations

import cocotb
from cocotb.triggers import FallingEdge
from repq_cocotb import (
    Config,
    Ports,
    Scoreboard,
    finish_and_wait,
    pack,
    release_reset,
    start_in_reset,
    unpack_signed,
)


@cocotb.test()
async def gemm_tile_matches_golden(dut):
    cfg = Config()
    op = cfg.op
    assert op["op"] in ("gemm", "bmm_qk"), f"{op['name']} is a {op['op']} op, not gemm / bmm_qk"
    p = Ports(dut, cfg.ports)
    tn = cfg.lanes
    d = op["derived"]
    if op["op"] == "gemm":
        _, a = cfg.tensor("a")                     # [B, M, K]
        w = cfg.constant("weight")                 # [N, K]
        wzp, bias = cfg.constant("w_zp"), cfg.constant("bias")
        a_zp = int(op["attrs"]["a_zp"])
        rows = a.reshape(-1, d["K"])               # (b, m) rows
        w_of = lambda r: w
        wzp_of = lambda n: int(wzp[n])
        bias_of = lambda n: int(bias[n])
    else:
        _, q = cfg.tensor("q")                     # [B, H, M, K]
        _, k = cfg.tensor("k")                     # [B, H, N, K]
        a_zp = int(op["attrs"]["q_zp"])
        rows = q.reshape(-1, d["K"])
        kb = k.reshape(-1, d["N"], d["K"])         # one k matrix per (b, h)
        w_of = lambda r: kb[r // d["M"]]
        wzp_of = lambda n: int(op["attrs"]["k_zp"])
        bias_of = lambda n: 0
    _, y = cfg.tensor("out")
    n_out, kk = d["N"], d["K"]
    n_rows = rows.shape[0]
    if cfg.max_elements:
        n_rows = min(n_rows, max(1, -(-cfg.max_elements // n_out)))
    sb = Scoreboard(dut._log, "gemm_tile", y, op["name"])

    start_in_reset(p, (p.clear, p.in_valid, p.finish))
    p.a_zp.value = a_zp
    p.k_len.value = kk
    await release_reset(p)
    for r in range(n_rows):
        wm = w_of(r)
        arow = rows[r]
        for n0 in range(0, n_out, tn):
            lanes = [n for n in range(n0, n0 + tn)]
            p.w_zp.value = pack([wzp_of(n) if n < n_out else 0 for n in lanes], 32)
            p.bias.value = pack([bias_of(n) if n < n_out else 0 for n in lanes], 32)
            p.clear.value = 1
            await FallingEdge(p.clk)
            p.clear.value = 0
            for kx in range(kk):
                p.in_valid.value = 1
                p.a.value = int(arow[kx])
                p.w.value = pack([int(wm[n, kx]) if n < n_out else 0 for n in lanes], 8)
                await FallingEdge(p.clk)
            await finish_and_wait(p, cfg.max_latency, "tile")
            ys = unpack_signed(p.y.value.to_unsigned(), 32, tn)
            ovf = p.ovf.value.to_unsigned()
            for j, n in enumerate(lanes):
                if n < n_out:
                    sb.check(r * n_out + n, ys[j], "ovf" if (ovf >> j) & 1 else "")
    sb.finish(n_rows * n_out)
