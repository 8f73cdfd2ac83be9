"""A two-worker LocalCluster (processes) shared by the distributed tests of one module, and the graphs
they run (the bundled vit_digits, calibrated and lowered once)."""

import functools
import os

import pytest

from repq_hw.execution import ClusterConfig, Runner


@functools.lru_cache(maxsize=None)
def digits_graph(bits: int = 4):
    """(calibrated model, graph, input codes of the first 48 digits test images, their labels)."""
    from repq_hw.data.digits import load_digits_split
    from repq_hw.pipeline import calibrated_and_lowered, host_input_codes
    from repq_hw.quant.model import QuantConfig

    _, q, g, _ = calibrated_and_lowered("vit_digits", QuantConfig(w_bits=bits, a_bits=bits), calib_size=8)
    xs, ys = load_digits_split("test")
    return q, g, host_input_codes(g, xs[:48].numpy()), ys[:48].numpy()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - another user's process reusing the pid
        return True
    try:  # a zombie (exited, not yet reaped) counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def cluster():
    """A started Runner on a fresh 2-process LocalCluster; its worker processes are checked gone after."""
    r = Runner(ClusterConfig(workers=2, threads=1, shard_size=8, progress=False), log=lambda s: None)
    r.start()
    pids = set(r.worker_pids().values())
    yield r
    pids |= set(r.worker_pids().values())  # restarted workers too
    r.close()
    import time

    deadline = time.time() + 20
    while any(alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.2)
    assert not [p for p in pids if alive(p)], "worker processes left behind after close()"
