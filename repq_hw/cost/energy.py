"""Energy of a counted graph: compute priced per op key with a technology table, and memory traffic
through a small explicit memory model (docs/cost_model.md, "Memory model"):

* weights and other constants live in DRAM; each op's constants are fetched once per batch into a weight
  SRAM (DRAM read + SRAM write, divided by the batch size per image) and read from it once per image;
* activations live in one on-chip activation SRAM of ``act_sram_kb``; every op reads each input tensor
  once and writes its output once (reuse inside an op is in registers, not modelled); views (patchify,
  slices, head split/merge, token select) move nothing;
* when a new output does not fit next to the live set, the resident buffer whose next use is farthest
  away (Belady) is spilled: read from SRAM, written to DRAM once; later reads of a spilled buffer come
  from DRAM. A buffer larger than the SRAM lives in DRAM;
* the input image is read from DRAM into the SRAM, the logits are written back to DRAM;
* streaming (on by default): a tensor whose every reader consumes it row by row in the order it is
  produced is never stored: element-wise readers (requantize, GELU table, residual add, log2 code) take it
  from the producer's output pipeline, the row-wise softmax takes whole rows of q·kᵀ, and attention·V
  takes rows of log2 codes. This covers the int32 accumulators of qkv / proj / fc1 / fc2, the GELU input,
  and the whole attention row chain q·kᵀ → softmax → log2 code → attention·V (only q, k, v and the
  attention·V result are stored).

All results are analytical estimates. Nothing here imports torch.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field

from repq_hw.cost.counts import ESTIMATE_NOTE, GraphCounts
from repq_hw.cost.tech import Tech

_KEY = re.compile(r"^op_(mac|mul|acc|add|cmp|shift|divstep|sqrtstep|lut)_((?:U?INT|FP)\d+)(?:_((?:U?INT|FP)?\d+))?$")
_TYPE = re.compile(r"^(UINT|INT|FP)(\d+)$")

# compute categories of the energy breakdown, by op key kind
CATEGORY = {"mac": "MAC multiply", "acc": "MAC accumulate", "shift": "shift", "mul": "multiply",
            "add": "add", "cmp": "compare", "divstep": "divide/sqrt steps", "sqrtstep": "divide/sqrt steps",
            "lut": "table read"}
MEMORY_PARTS = ("e_sram_w_pj", "e_sram_act_pj", "e_dram_w_pj", "e_dram_act_pj")


def _parse_type(t: str) -> tuple[str, int]:
    m = _TYPE.match(t)
    if not m:
        raise ValueError(f"cannot parse operand type {t!r}")
    return m.group(1), int(m.group(2))


def op_energy(key: str, tech: Tech) -> float:
    """pJ of one operation named by an ``op_*`` key (rules in docs/cost_model.md, "Energy rules")."""
    m = _KEY.match(key)
    if not m:
        raise ValueError(f"not an op key: {key!r}")
    kind, t1, t2 = m.groups()
    k1, b1 = _parse_type(t1)
    if kind == "lut":
        entries = int(t2)
        cap_kb = entries * b1 / 8 / 1024
        return tech.sram_64b(cap_kb) * b1 / 64
    if kind in ("mac", "mul"):
        if t2 is None:
            raise ValueError(f"{key!r}: a multiply needs two operand types")
        k2, b2 = _parse_type(t2)
        if (k1 == "FP") != (k2 == "FP"):
            raise ValueError(f"{key!r}: mixed float/integer multiply is not priced")
        if k1 == "FP":
            if b1 != b2:
                raise ValueError(f"{key!r}: mixed float formats are not priced")
            return tech.fmult(f"fp{b1}")
        return tech.mult(b1, b2)
    if k1 == "FP":
        if kind == "shift":
            raise ValueError(f"{key!r}: float shifts are not priced")
        return tech.fadd(f"fp{b1}")
    if kind == "shift":
        return tech.shift(b1)
    return tech.add(b1)  # add, acc, cmp, divstep, sqrtstep: one adder of the width


def op_category(key: str) -> str:
    m = _KEY.match(key)
    if not m:
        raise ValueError(f"not an op key: {key!r}")
    return CATEGORY[m.group(1)]


@dataclass(frozen=True)
class MemoryConfig:
    """The memory model's knobs (docs/cost_model.md).

    Args:
        act_sram_kb: activation SRAM capacity (KB); sets its energy per access and when buffers spill.
        weight_sram_kb: the weight SRAM the constants are staged in (KB); None = just large enough for
            the largest op's constants.
        batch: images per weight fetch from DRAM.
        dram_point: where in the table's DRAM range to price: "low", "mid", "high" or a fraction.
        io_dram: read the input from DRAM and write the logits to DRAM.
        fuse_elementwise: stream tensors that are only read row by row in production order (element-wise
            ops, softmax, the codes of attention·V) instead of storing them (see the module doc).
    """

    act_sram_kb: float = 256.0
    weight_sram_kb: float | None = None
    batch: int = 1
    dram_point: str | float = "mid"
    io_dram: bool = True
    fuse_elementwise: bool = True

    def __post_init__(self):
        if not self.act_sram_kb > 0:
            raise ValueError(f"act_sram_kb must be > 0, got {self.act_sram_kb}")
        if self.weight_sram_kb is not None and not self.weight_sram_kb > 0:
            raise ValueError(f"weight_sram_kb must be > 0, got {self.weight_sram_kb}")
        if not (isinstance(self.batch, int) and self.batch >= 1):
            raise ValueError(f"batch must be an integer >= 1, got {self.batch!r}")

    def describe(self) -> dict:
        return {"act_sram_kb": self.act_sram_kb, "weight_sram_kb": self.weight_sram_kb, "batch": self.batch,
                "dram_point": self.dram_point, "io_dram": self.io_dram, "fuse_elementwise": self.fuse_elementwise}


TRAFFIC_KEYS = ("bytes_sram_act_read", "bytes_sram_act_write", "bytes_dram_act_read", "bytes_dram_act_write",
                "bytes_sram_w_read", "bytes_sram_w_write", "bytes_dram_w_read", "bytes_fused")
ELEMENTWISE = frozenset({"requantize", "lut", "add", "add_const", "log2_code"})
# (op, input index) pairs that consume their operand row by row in production order
ROW_STREAMING = frozenset({("softmax", 0), ("attn_v_shift", 0)})


def _streams(op: str, index: int) -> bool:
    return op in ELEMENTWISE or (op, index) in ROW_STREAMING


def fused_buffers(gc: GraphCounts) -> set[str]:
    """Buffers that every reader streams (and that are neither graph input nor output): never stored."""
    ok: dict[str, bool] = {}
    for n in gc.nodes:
        for j, (b, _) in enumerate(n.reads):
            ok[b] = ok.get(b, True) and _streams(n.op, j)
    keep = set(gc.input_buffers) | set(gc.output_buffers)
    return {b for b, v in ok.items() if v and b not in keep}


def stored_peak_bytes(gc: GraphCounts, fused: set[str]) -> float:
    """Largest live set of stored (not fused) activation buffers."""
    live = [0.0] * len(gc.nodes)
    for b, size in gc.buffer_bytes.items():
        if b not in fused:
            for i in range(gc.buffer_start[b], gc.buffer_end[b] + 1):
                live[i] += size
    return max(live, default=0.0)


def simulate_memory(gc: GraphCounts, mem: MemoryConfig) -> list[Counter]:
    """Per-node bytes moved at each memory level (keys TRAFFIC_KEYS), per image."""
    cap = mem.act_sram_kb * 1024.0
    fused = fused_buffers(gc) if mem.fuse_elementwise else set()
    uses: dict[str, list[int]] = {}
    for i, n in enumerate(gc.nodes):
        for b, _ in n.reads:
            uses.setdefault(b, []).append(i)
    outputs = set(gc.output_buffers)
    resident: dict[str, float] = {}
    in_dram: set[str] = set()
    placed: set[str] = set()
    traffic = [Counter() for _ in gc.nodes]

    def next_use(b: str, i: int) -> float:
        nxt = [u for u in uses.get(b, []) if u > i]
        return nxt[0] if nxt else (math.inf if b in outputs else -1)

    def place(b: str, i: int, protect: set[str], t: Counter) -> None:
        size = gc.buffer_bytes[b]
        placed.add(b)
        if size > cap:
            in_dram.add(b)
            return
        while sum(resident.values()) + size > cap:
            cands = [r for r in resident if r not in protect]
            if not cands:
                in_dram.add(b)
                return
            victim = max(cands, key=lambda r: (next_use(r, i), resident[r]))
            vb = resident.pop(victim)
            if next_use(victim, i) != -1:  # still needed: spill it
                t["bytes_sram_act_read"] += vb
                t["bytes_dram_act_write"] += vb
                in_dram.add(victim)
        resident[b] = size

    if not gc.nodes:
        return traffic
    for b in gc.input_buffers:
        t = traffic[0]
        place(b, 0, set(), t)
        if mem.io_dram:
            t["bytes_dram_act_read"] += gc.buffer_bytes[b]
        if b in resident:
            t["bytes_sram_act_write"] += gc.buffer_bytes[b]
    wb = [n.weight_bytes for n in gc.nodes]
    for i, n in enumerate(gc.nodes):
        t = traffic[i]
        for b, nb in n.reads:
            if b in fused:
                t["bytes_fused"] += nb
            else:
                t["bytes_sram_act_read" if b in resident else "bytes_dram_act_read"] += nb
        protect = {b for b, _ in n.reads}
        for b, nb in n.writes:
            if b in fused:
                t["bytes_fused"] += nb
                continue
            if b not in placed:
                place(b, i, protect, t)
            t["bytes_sram_act_write" if b in resident else "bytes_dram_act_write"] += nb
        if wb[i]:
            t["bytes_sram_w_read"] += wb[i]
            t["bytes_sram_w_write"] += wb[i] / mem.batch
            t["bytes_dram_w_read"] += wb[i] / mem.batch
        for b in list(resident) + list(in_dram):
            if b not in outputs and gc.buffer_end.get(b, -1) <= i and b in placed:
                resident.pop(b, None)
                in_dram.discard(b)
    if mem.io_dram:  # logits to DRAM, charged to the node that produced them
        for b in gc.output_buffers:
            if b in resident:
                prod = next((i for i, n in enumerate(gc.nodes) if any(w == b for w, _ in n.writes)), -1)
                traffic[prod]["bytes_sram_act_read"] += gc.buffer_bytes[b]
                traffic[prod]["bytes_dram_act_write"] += gc.buffer_bytes[b]
    return traffic


@dataclass
class CostEstimate:
    """Energy and traffic of one variant (per image), per node and in total."""

    counts: GraphCounts
    tech: Tech
    mem: MemoryConfig
    weight_sram_kb: float
    per_node: list[dict] = field(default_factory=list)  # flat: counts + traffic + energy
    stored_peak: float = 0.0  # peak live activation bytes actually stored (fusion applied)

    @property
    def label(self) -> str:
        return self.counts.label

    def _group(self, key_of) -> dict[str, dict]:
        out: dict[str, Counter] = {}
        for n, d in zip(self.counts.nodes, self.per_node):
            out.setdefault(key_of(n), Counter()).update(d)
        return {k: _derived(dict(sorted(v.items()))) for k, v in out.items()}

    def totals(self) -> dict:
        tot = Counter()
        for d in self.per_node:
            tot.update(d)
        res = _derived(dict(sorted(tot.items())))
        res["mem_act_peak"] = self.counts.peak_bytes
        res["mem_act_peak_stored"] = self.stored_peak
        return res

    def per_layer(self) -> dict[str, dict]:
        res = self._group(lambda n: n.layer)
        peaks = self.counts.per_layer()
        for k in res:
            res[k]["mem_act_peak"] = peaks[k]["mem_act_peak"]
        return res

    def per_op_type(self) -> dict[str, dict]:
        return self._group(lambda n: n.op)

    def per_function(self) -> dict[str, dict]:
        return self._group(function_of)

    def header(self) -> dict:
        return {"estimate": ESTIMATE_NOTE, "variant": self.label, "numerics": self.counts.numerics,
                "model": self.counts.meta.get("model"), "tech": self.tech.describe(),
                "memory_model": self.mem.describe() | {"weight_sram_kb_used": self.weight_sram_kb}}


def _derived(d: dict) -> dict:
    d["e_memory_pj"] = sum(d.get(k, 0.0) for k in MEMORY_PARTS)
    d["e_total_pj"] = d.get("e_compute_pj", 0.0) + d["e_memory_pj"]
    me = d.get("mac_equiv", 0)
    d["pj_per_mac"] = d["e_total_pj"] / me if me else 0.0
    d["pj_per_mac_compute"] = d.get("e_compute_pj", 0.0) / me if me else 0.0
    return d


FUNCTIONS = ("linear layers", "attention q·kᵀ", "attention·V", "softmax + log2 code", "layernorm", "gelu",
             "requantize", "residual add", "data movement")


def function_of(n) -> str:
    """Functional group of a node, for the share tables (LayerNorm / Softmax / GELU / ...)."""
    op, name = n.op, n.name
    if op == "gemm":
        return "linear layers"
    if op == "bmm_qk":
        return "attention q·kᵀ"
    if op == "attn_v_shift":
        return "attention·V"
    if op in ("softmax", "log2_code"):
        return "softmax + log2 code"
    if op == "layernorm":
        return "layernorm"
    if op == "lut" or name.endswith("mlp.gelu_in"):
        return "gelu"
    if op == "requantize":
        return "requantize"
    if op in ("add", "add_const"):
        return "residual add"
    return "data movement"


def estimate(gc: GraphCounts, tech: Tech, mem: MemoryConfig | None = None) -> CostEstimate:
    """Price every node of ``gc``: compute per op key, memory through the memory model."""
    mem = mem or MemoryConfig()
    wkb = mem.weight_sram_kb or max([n.weight_bytes for n in gc.nodes] + [1.0]) / 1024.0
    traffic = simulate_memory(gc, mem)
    prices: dict[str, float] = {}
    sram_rd, sram_wr = tech.sram_read_pj_per_byte(mem.act_sram_kb), tech.sram_write_pj_per_byte(mem.act_sram_kb)
    w_rd, w_wr = tech.sram_read_pj_per_byte(wkb), tech.sram_write_pj_per_byte(wkb)
    dram = tech.dram_pj_per_byte(mem.dram_point)
    per_node = []
    for n, t in zip(gc.nodes, traffic):
        d = n.flat()
        comp = 0.0
        for k, c in n.counts.items():
            if k not in prices:
                prices[k] = op_energy(k, tech)
            e = prices[k] * c
            cat = "e_compute_" + op_category(k).replace(" ", "_").replace("/", "_") + "_pj"
            d[cat] = d.get(cat, 0.0) + e
            comp += e
        d["e_compute_pj"] = comp
        d.update({k: float(t.get(k, 0.0)) for k in TRAFFIC_KEYS})
        d["e_sram_act_pj"] = t["bytes_sram_act_read"] * sram_rd + t["bytes_sram_act_write"] * sram_wr
        d["e_dram_act_pj"] = (t["bytes_dram_act_read"] + t["bytes_dram_act_write"]) * dram
        d["e_sram_w_pj"] = t["bytes_sram_w_read"] * w_rd + t["bytes_sram_w_write"] * w_wr
        d["e_dram_w_pj"] = t["bytes_dram_w_read"] * dram
        per_node.append(_derived(d))
    fused = fused_buffers(gc) if mem.fuse_elementwise else set()
    return CostEstimate(gc, tech, mem, wkb, per_node, stored_peak_bytes(gc, fused))
