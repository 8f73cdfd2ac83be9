"""Shared by the cocotb testbenches of sim/cocotb: configuration, port mapping, lane packing, scoreboard.

The testbench runs inside the simulator (cocotb 2.x). Its configuration comes from one environment
variable, ``REPQ_COCOTB`` (a JSON object written by ``sim/cocotb/run.py``):

    set           golden set directory (read with repq_hw.golden.GoldenSet: the expected values, the
                  stimuli and every parameter come from the set; nothing is re-derived)
    op            the op to replay (a node name of the set)
    ports         {logical port: HDL signal name}: point the bench at your own unit with the same
                  interface but other names (missing entries: the logical name itself)
    lanes         lanes of a tile unit (TN of rq_gemm_tile, TD of rq_attn_v_tile)
    max_elements  check only the first N output elements (whole rows/tiles), 0 = all
    max_latency   clock cycles to wait for out_valid after the last input (default 64)
"""

from __future__ import annotations

import json
import os

import numpy as np

from repq_hw.golden import GoldenSet

ENV = "REPQ_COCOTB"


class Config:
    def __init__(self, doc: dict | None = None):
        doc = json.loads(os.environ[ENV]) if doc is None else doc
        self.doc = doc
        self.gs = GoldenSet(doc["set"])
        self.op = self.gs.op(doc["op"])
        self.ports: dict[str, str] = dict(doc.get("ports") or {})
        self.lanes = int(doc.get("lanes") or 8)
        self.max_elements = int(doc.get("max_elements") or 0)
        self.max_latency = int(doc.get("max_latency") or 64)

    # -- the op's data, as the set stores it ---------------------------------------------------------
    def tensor(self, role: str) -> tuple[dict, np.ndarray]:
        """(manifest entry, int64 values [B, *shape]) of the op's input ``role`` or of ``out``."""
        refs = self.op["outputs"] if role == "out" else self.op["inputs"]
        name = next(r["tensor"] for r in refs if r["role"] == role)
        return self.gs.tensor_entry(name), self.gs.tensor(name).astype(np.int64)

    def constant(self, role: str, channels: int | None = None) -> np.ndarray | None:
        """int64 values of the op's constant ``role`` (None if the op has none); a shape-[1] constant is
        broadcast to ``channels``."""
        name = self.op["constants"].get(role)
        if name is None:
            return None
        a = self.gs.constant(name).astype(np.int64)
        if channels is not None and a.size == 1:
            a = np.full(channels, int(a.reshape(-1)[0]), dtype=np.int64)
        return a


class Ports:
    """``ports.acc`` is the DUT signal mapped to the logical port ``acc``."""

    def __init__(self, dut, mapping: dict[str, str]):
        self._dut = dut
        self._map = mapping

    def __getattr__(self, logical: str):
        name = self._map.get(logical, logical)
        try:
            return getattr(self._dut, name)
        except AttributeError:
            raise AttributeError(f"DUT {self._dut._name} has no signal {name!r} (logical port {logical!r}); "
                                 "map it with ports={...}") from None


def start_in_reset(p, idle=()) -> None:
    """Start a 10 ns clock on ``p.clk``, hold ``p.rst`` high and drive the ``idle`` inputs low; set the unit's
    constant inputs after this, then ``await release_reset(p)``."""
    from cocotb.clock import Clock

    Clock(p.clk, 10, unit="ns").start()
    p.rst.value = 1
    for s in idle:
        s.value = 0


async def release_reset(p, cycles: int = 2) -> None:
    """Keep reset for ``cycles`` falling edges, then release it."""
    from cocotb.triggers import FallingEdge

    for _ in range(cycles):
        await FallingEdge(p.clk)
    p.rst.value = 0


async def finish_and_wait(p, max_latency: int, unit: str) -> None:
    """Pulse ``finish`` for one cycle after the last ``in_valid`` beat, then wait (falling edges) until the
    accumulating unit raises ``out_valid``; fail if it takes more than ``max_latency`` cycles."""
    from cocotb.triggers import FallingEdge

    p.in_valid.value = 0
    p.finish.value = 1
    await FallingEdge(p.clk)
    p.finish.value = 0
    wait = 0
    while not int(p.out_valid.value):
        wait += 1
        assert wait <= max_latency, f"{unit} gave no out_valid within {max_latency} cycles"
        await FallingEdge(p.clk)


def pack(values, width: int) -> int:
    """Lane 0 in the least significant bits, each lane ``width`` bits of two's complement."""
    mask = (1 << width) - 1
    out = 0
    for j, v in enumerate(values):
        out |= (int(v) & mask) << (j * width)
    return out


def unpack_signed(word: int, width: int, lanes: int) -> list[int]:
    mask = (1 << width) - 1
    out = []
    for j in range(lanes):
        v = (word >> (j * width)) & mask
        out.append(v - (1 << width) if v >> (width - 1) else v)
    return out


def to_signed(v: int, width: int) -> int:
    v &= (1 << width) - 1
    return v - (1 << width) if v >> (width - 1) else v


class Scoreboard:
    """Compares what the DUT produced with the golden output, element by element (flat index into the
    golden output ``[B, *shape]``)."""

    def __init__(self, log, unit: str, golden: np.ndarray, name: str):
        self.log = log
        self.unit = unit
        self.golden = golden
        self.flat = golden.reshape(-1)
        self.name = name
        self.checked = 0
        self.bad: list[tuple[int, int, int, str]] = []

    def check(self, index: int, got: int, note: str = "") -> None:
        want = int(self.flat[index])
        self.checked += 1
        if got != want or note:
            self.bad.append((index, want, got, note))
            if len(self.bad) <= 10:
                coord = tuple(int(i) for i in np.unravel_index(index, self.golden.shape))
                self.log.error(f"MISMATCH {self.name} element {index} {list(coord)}: rtl {got} golden {want}"
                               + (f" ({note})" if note else ""))

    def finish(self, expected: int) -> None:
        self.log.info(f"RESULT unit={self.unit} op={self.name} checked={self.checked} mismatches={len(self.bad)}")
        assert self.checked == expected, f"checked {self.checked} elements, expected {expected}"
        assert not self.bad, f"{len(self.bad)} of {self.checked} elements differ; first: {self.bad[0]}"
