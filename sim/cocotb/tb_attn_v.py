"""cocotb testbench: a golden `attn_v_shift` op through a unit with the rq_attn_v_tile interface.

Logical ports: inputs ``clk rst clear in_valid code v finish zstate f q r_mult v_zp mode``, outputs
``out_valid y err``. ``v`` packs ``lanes`` unsigned 8-bit value codes, ``y`` packs ``lanes`` signed 64-bit
results, lane 0 in the least significant bits. Per (image·head, query row m, tile of ``lanes`` columns):
one clock with ``clear``, N clocks with ``in_valid`` (code[m, n] and v[n, d0 .. d0+lanes-1]), one clock
with ``finish``; then up to ``max_latency`` clocks for ``out_valid``. Z, F, Q, R, v_zp and the rounding id
come from the manifest (``attrs``, ``derived``); ``err`` must stay 0.
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
async def attn_v_matches_golden(dut):
    cfg = Config()
    op = cfg.op
    assert op["op"] == "attn_v_shift", f"{op['name']} is a {op['op']} op, not attn_v_shift"
    p = Ports(dut, cfg.ports)
    td = cfg.lanes
    a, d = op["attrs"], op["derived"]
    m_, n_, d_ = d["M"], d["N"], d["D"]
    _, codes = cfg.tensor("codes")
    _, v = cfg.tensor("v")
    _, y = cfg.tensor("out")
    crow = codes.reshape(-1, n_)                 # (b, h, m) rows
    vb = v.reshape(-1, n_, d_)                   # one v matrix per (b, h)
    n_rows = crow.shape[0]
    if cfg.max_elements:
        n_rows = min(n_rows, max(1, -(-cfg.max_elements // d_)))
    sb = Scoreboard(dut._log, "attn_v_tile", y, op["name"])

    start_in_reset(p, (p.clear, p.in_valid, p.finish))
    p.zstate.value = int(d["zero_state"])
    p.f.value = int(a["shift_frac"])
    p.q.value = int(a["sqrt2_frac_bits"])
    p.r_mult.value = int(d["sqrt2_multiplier"])
    p.v_zp.value = int(a["v_zp"])
    p.mode.value = int(d["rounding_id"])
    await release_reset(p)
    for r in range(n_rows):
        vm = vb[r // m_]
        for d0 in range(0, d_, td):
            cols = list(range(d0, d0 + td))
            p.clear.value = 1
            await FallingEdge(p.clk)
            p.clear.value = 0
            for nx in range(n_):
                p.in_valid.value = 1
                p.code.value = int(crow[r, nx])
                p.v.value = pack([int(vm[nx, c]) if c < d_ else 0 for c in cols], 8)
                await FallingEdge(p.clk)
            await finish_and_wait(p, cfg.max_latency, "unit")
            ys = unpack_signed(p.y.value.to_unsigned(), 64, td)
            err = int(p.err.value)
            for j, c in enumerate(cols):
                if c < d_:
                    sb.check(r * d_ + c, ys[j], "err" if err else "")
    sb.finish(n_rows * d_)
