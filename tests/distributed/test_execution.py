"""The Dask execution layer on a two-worker LocalCluster: identical bits to a single process whatever the
shard size, the number of workers or the completion order; the graph shipped once per configuration; a
killed worker; a failing shard; clean shutdown."""

import os
import random
import signal

import numpy as np
import pytest

from repq_hw.emu.execute import run_graph
from repq_hw.errors import InputError
from repq_hw.execution import (
    ClusterConfig,
    Runner,
    cached_graph_hashes,
    local_layout,
    merge_parts,
    runner_from_args,
    shard_bounds,
)

from .conftest import alive, digits_graph

pytestmark = pytest.mark.distributed


# ---------------------------------------------------------------------------------------------------
# no cluster needed


def test_local_layout_never_oversubscribes():
    for cores in (1, 2, 3, 8, 16):
        for workers in (None, 1, 2, 3, 5):
            for threads in (None, 1, 2, 4):
                n, t = local_layout(cores, workers, threads)
                assert n == (workers or cores) and t >= 1
                assert n * t <= max(cores, n), (cores, workers, threads, n, t)
    assert local_layout(2) == (2, 1)
    assert local_layout(16, 4) == (4, 4)


def test_shard_bounds_cover_in_order():
    for n in (1, 7, 64, 65):
        for size in (1, 3, 64, 100):
            b = shard_bounds(n, size)
            assert b[0][0] == 0 and b[-1][1] == n
            assert all(s1 == e0 for (_, e0), (s1, _) in zip(b, b[1:]))
            assert all(e - s == size for s, e in b[:-1]) and 0 < b[-1][1] - b[-1][0] <= size


def test_merge_ignores_completion_order():
    rng = np.random.default_rng(0)
    starts = list(range(0, 40, 4))
    parts = {s: {"y": rng.integers(0, 9, (4, 3))} for s in starts}
    expected = np.concatenate([parts[s]["y"] for s in starts])
    for seed in range(5):
        order = starts[:]
        random.Random(seed).shuffle(order)
        shuffled = {s: parts[s] for s in order}  # dict order = arrival order
        assert np.array_equal(merge_parts(shuffled, starts)["y"], expected)
    with pytest.raises(RuntimeError, match="returned no result"):
        merge_parts({0: parts[0]}, starts)


def test_cluster_options_are_checked():
    with pytest.raises(InputError, match="--no-cluster"):
        ClusterConfig(in_process=True, workers=2)
    with pytest.raises(InputError, match="--workers"):
        ClusterConfig(scheduler="tcp://h:8786", workers=2)
    with pytest.raises(InputError, match="tcp://HOST:8786"):
        ClusterConfig(scheduler="h:8786")


def test_default_is_a_local_cluster(monkeypatch):
    import argparse

    monkeypatch.delenv("REPQ_HW_NO_CLUSTER", raising=False)
    r = runner_from_args(argparse.Namespace())
    assert not r.cfg.in_process and r.cfg.scheduler is None and r.cfg.workers is None
    monkeypatch.setenv("REPQ_HW_NO_CLUSTER", "1")
    assert runner_from_args(argparse.Namespace()).cfg.in_process
    assert not runner_from_args(argparse.Namespace(workers=2)).cfg.in_process  # an explicit choice wins


def test_in_process_runner_equals_run_graph():
    _, g, codes, _ = digits_graph()
    ref = run_graph(g, codes)[g.outputs[0]]
    with Runner(ClusterConfig(in_process=True, shard_size=5, progress=False)) as r:
        assert not r.distributed
        assert np.array_equal(r.emulate(g, codes)[g.outputs[0]], ref)


# ---------------------------------------------------------------------------------------------------
# on the cluster


@pytest.mark.parametrize("shard", [1, 7, 48, 100])
def test_emulate_bit_identical_any_shard_size(cluster, shard):
    _, g, codes, _ = digits_graph()
    ref = run_graph(g, codes)
    r = Runner(ClusterConfig(shard_size=shard, progress=False))
    r.client, r._payloads = cluster.client, cluster._payloads  # the module's cluster, another shard size
    out = r.emulate(g, codes)
    assert list(out) == g.outputs
    for name in g.outputs:
        assert out[name].dtype == ref[name].dtype and np.array_equal(out[name], ref[name])


def test_taps_bit_identical_and_graph_shipped_once(cluster):
    _, g, codes, _ = digits_graph()
    ref = run_graph(g, codes[:10], keep_all=True)
    keep = sorted(ref)
    out = cluster.emulate(g, codes[:10], keep=keep)
    assert sorted(out) == keep
    assert all(np.array_equal(out[k], ref[k]) for k in keep)
    cluster.emulate(g, codes[:10])
    assert list(cluster._payloads) == [g.hash()]  # one broadcast for this configuration, reused
    cached = cluster.client.run(cached_graph_hashes)
    assert len(cached) == 2 and all(g.hash() in hs for hs in cached.values())


def test_a_second_configuration_gets_its_own_graph(cluster):
    _, g4, codes, _ = digits_graph(4)
    _, g8, _, _ = digits_graph(8)
    a, b = cluster.emulate(g4, codes[:16]), cluster.emulate(g8, codes[:16])
    assert np.array_equal(a[g4.outputs[0]], run_graph(g4, codes[:16])[g4.outputs[0]])
    assert np.array_equal(b[g8.outputs[0]], run_graph(g8, codes[:16])[g8.outputs[0]])
    assert not np.array_equal(a[g4.outputs[0]], b[g8.outputs[0]])  # really two graphs


def test_torch_eval_bit_identical(cluster):
    import torch

    from repq_hw.evaluate import evaluate
    from repq_hw.models.registry import create_model
    from repq_hw.pipeline import eval_batches

    q, _, _, _ = digits_graph()
    for model in (create_model("vit_digits"), q):
        batches, n = eval_batches(model, "vit_digits", None, batch_size=20, limit=100)
        acc1, lg1 = evaluate(model, batches, progress=False, total=n)
        acc2, lg2 = evaluate(model, batches, progress=False, total=n, runner=cluster)
        assert torch.equal(lg1, lg2) and acc1 == acc2


def test_failing_shard_raises_the_original_error(cluster):
    _, g, codes, _ = digits_graph()
    bad = codes.astype(np.int64)
    bad[41, 0, 3, 3] = 999  # outside the uint8 input: the shard holding image 41 refuses it
    with pytest.raises(InputError, match=r"values \[0, 999\] outside"):
        cluster.emulate(g, bad)


def _image_folder(root, bad: bool):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    if bad:
        (root / "b" / "broken.png").write_bytes(b"not a png at all")
    return root


def test_undecodable_image_names_the_file(cluster, tmp_path):
    from repq_hw.evaluate import evaluate
    from repq_hw.execution import FolderBatch
    from repq_hw.models.registry import create_model
    from repq_hw.pipeline import eval_batches

    model = create_model("test_vit")
    good = _image_folder(tmp_path / "good", bad=False)
    batches, _ = eval_batches(model, "test_vit", str(good), batch_size=2, runner=cluster)
    assert all(isinstance(b, FolderBatch) for b in batches)  # decoded on the workers
    local, _ = eval_batches(model, "test_vit", str(good), batch_size=2)
    import torch

    assert torch.equal(evaluate(model, batches, progress=False, runner=cluster)[1],
                       evaluate(model, local, progress=False)[1])
    broken = _image_folder(tmp_path / "broken", bad=True)
    batches, _ = eval_batches(model, "test_vit", str(broken), batch_size=2, runner=cluster)
    with pytest.raises(ValueError, match=r"cannot decode image .*broken\.png"):
        evaluate(model, batches, progress=False, runner=cluster)


def test_folder_not_readable_on_workers(cluster, tmp_path):
    from repq_hw.models.registry import create_model
    from repq_hw.pipeline import eval_batches

    with pytest.raises(InputError, match=r"--data .*missing: does not exist on worker tcp://.*shared"):
        eval_batches(create_model("vit_digits"), "vit_digits", str(tmp_path / "missing"), runner=cluster)


def test_killed_worker_mid_run_gives_identical_results(cluster):
    _, g, codes, _ = digits_graph()
    many = np.concatenate([codes] * 4)  # 192 images, 96 shards of 2
    ref = run_graph(g, many)[g.outputs[0]]
    before = cluster.worker_pids()
    killed = []

    def kill_one(done: int):
        if done == 3 and not killed:  # most shards are still queued or running
            pid = min(before.values())
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    r = Runner(ClusterConfig(shard_size=2, progress=False))
    r.client, r._payloads = cluster.client, cluster._payloads
    out = r.emulate(g, many, on_shard=kill_one)[g.outputs[0]]
    assert killed and not alive(killed[0])
    assert out.shape == ref.shape and np.array_equal(out, ref)  # nothing lost, nothing twice
    cluster.client.wait_for_workers(2, timeout=60)  # the nanny restarted it
    assert killed[0] not in cluster.worker_pids().values()


def test_close_on_ctrl_c_leaves_no_process():
    import psutil

    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    with pytest.raises(KeyboardInterrupt):
        with Runner(ClusterConfig(workers=2, progress=False), log=lambda s: None) as r:
            assert len(r.worker_pids()) == 2
            raise KeyboardInterrupt
    # multiprocessing's resource tracker is this process's own helper (started once, on the first spawn of the
    # session, and gone when this process exits), not one of the cluster's processes
    spawned = [p for p in me.children(recursive=True)
               if p.pid not in before and "multiprocessing.resource_tracker" not in " ".join(p.cmdline())]
    _, left = psutil.wait_procs(spawned, timeout=20)
    assert not left, f"left behind: {[p.pid for p in left]}"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_cli_ctrl_c_shuts_the_local_cluster_down(sig):
    """``repq-hw eval --integer`` with a local cluster, interrupted (Ctrl-C's SIGINT, or SIGTERM) once the
    cluster is up: exit 130, and every process it started (nannies' workers included) is gone."""
    import subprocess
    import sys
    import time

    import psutil

    env = dict(os.environ, REPQ_HW_NO_CLUSTER="")
    proc = subprocess.Popen([sys.executable, "-m", "repq_hw.cli", "eval", "--integer", "--model",
                             "vit_digits", "--workers", "2", "--calib-size", "8"], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, env=env, text=True)
    try:
        lines = []
        for line in proc.stderr:  # wait for the cluster's start message (with its dashboard link)
            lines.append(line)
            if "[dask] local cluster" in line:
                break
        assert any("dashboard http" in ln for ln in lines), lines
        kids = psutil.Process(proc.pid).children(recursive=True)
        assert len(kids) >= 2
        time.sleep(1)
        proc.send_signal(sig)
        rest = proc.stderr.read()
        assert proc.wait(timeout=60) == 130, rest
        assert "interrupted" in rest
        _, left = psutil.wait_procs(kids, timeout=20)
        assert not left, f"orphaned: {[p.pid for p in left]}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("shard_size", [1, 5, 64])
def test_golden_shards_written_by_the_tasks_read_back_in_image_order(cluster, tmp_path, shard_size):
    """emulate_into: each task writes its shard's tensors into the staging directory itself; reading them
    back assembles every tensor in image order, the same bits as one run_graph call."""
    _, g, codes, _ = digits_graph()
    x = codes[:11]
    keep = sorted(g.tensors)[:6] + list(g.outputs)
    want = run_graph(g, x, "fast", keep_all=True)
    r = Runner(ClusterConfig(shard_size=shard_size, progress=False))
    r.client, r._payloads = cluster.client, cluster._payloads
    got = r.emulate_into(g, x, tmp_path / "staging" / ".shards", keep)
    shard_dirs = sorted(p.name for p in (tmp_path / "staging" / ".shards").iterdir())
    assert len(shard_dirs) == len(shard_bounds(11, shard_size)) and not [d for d in shard_dirs if d.startswith(".")]
    for name in keep:
        assert np.array_equal(got[name], want[name]), name
    with Runner(ClusterConfig(in_process=True, shard_size=shard_size, progress=False)) as local:
        again = local.emulate_into(g, x, tmp_path / "local", keep)
        assert all(np.array_equal(again[n], want[n]) for n in keep)
