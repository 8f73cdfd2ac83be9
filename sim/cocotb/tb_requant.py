"""cocotb testbench: a golden `requantize` op through a requantizer with the rq_requant interface.

Logical ports (map them to your names with ``ports``): inputs ``clk rst in_valid acc mult shift offset zp
out_min out_max mode``, outputs ``out_valid y``. One element may enter per clock; results are matched to
inputs in order by ``out_valid``, so any pipeline depth (up to ``max_latency`` cycles) is accepted.
Per channel c (the last axis) ``mult``/``shift``/``offset`` carry the constants' values (offset 0 when the
op has none); ``out_min``/``out_max`` are the output type's range (manifest ``derived``).
"""

from __future__ import annotations

import cocotb
from cocotb.triggers import FallingEdge
from repq_cocotb import Config, Ports, Scoreboard, release_reset, start_in_reset


@cocotb.test()
async def requant_matches_golden(dut):
    cfg = Config()
    op = cfg.op
    assert op["op"] == "requantize", f"{op['name']} is a {op['op']} op, not requantize"
    p = Ports(dut, cfg.ports)
    _, x = cfg.tensor("x")
    _, y = cfg.tensor("out")
    c = x.shape[-1]
    mult, shift = cfg.constant("multiplier", c), cfg.constant("shift", c)
    offset = cfg.constant("offset", c)
    d = op["derived"]
    xs = x.reshape(-1)
    n = xs.size if not cfg.max_elements else min(xs.size, cfg.max_elements)
    sb = Scoreboard(dut._log, "requant", y, op["name"])

    start_in_reset(p, (p.in_valid,))
    p.zp.value = int(op["attrs"]["zero_point"])
    p.out_min.value = int(d["out_min"])
    p.out_max.value = int(d["out_max"])
    p.mode.value = int(d["rounding_id"])
    await release_reset(p)
    got = 0
    i = 0
    idle = 0
    while got < n:
        await FallingEdge(p.clk)
        if int(p.out_valid.value):  # registered at the last rising edge: stable now
            sb.check(got, p.y.value.to_signed())
            got += 1
        if i < n:
            ch = i % c
            p.in_valid.value = 1
            p.acc.value = int(xs[i])
            p.mult.value = int(mult[ch])
            p.shift.value = int(shift[ch])
            p.offset.value = int(offset[ch]) if offset is not None else 0
            i += 1
        else:
            p.in_valid.value = 0
            idle += 1
            assert idle <= cfg.max_latency, f"no out_valid for {idle} cycles after the last input ({got}/{n} out)"
    sb.finish(n)
