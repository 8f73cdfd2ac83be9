"""``eval --integer``, ``eval``, ``golden`` and ``sweep`` on a cluster (``--scheduler`` of a two-worker
LocalCluster) print and write exactly what ``--no-cluster`` does; a failed, killed or interrupted golden
run leaves no set that ``verify`` accepts."""

import os
import signal
from pathlib import Path

import numpy as np
import pytest

from repq_hw.cli import main
from repq_hw.errors import InputError
from repq_hw.execution import Runner
from repq_hw.golden import verify_golden_set, write_golden_set

from .conftest import alive, digits_graph

pytestmark = pytest.mark.distributed


def _run(capsys, argv):
    assert main(argv) == 0
    return capsys.readouterr().out


def _tree(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_eval_integer_identical_to_no_cluster(cluster, capsys):
    args = ["eval", "--integer", "--model", "vit_digits", "--bits", "4", "--eval-limit", "40",
            "--calib-size", "8"]
    local = _run(capsys, args + ["--no-cluster"])
    dist = _run(capsys, args + ["--scheduler", cluster.client.scheduler.address, "--shard-size", "3"])
    assert "integer emulator" in local and dist == local


def test_eval_identical_to_no_cluster(cluster, capsys):
    args = ["eval", "--model", "vit_digits", "--eval-limit", "60", "--calib-size", "8"]
    def strip(out):  # the calibration line holds its timing
        return [ln for ln in out.splitlines() if "calibration" not in ln]

    local = _run(capsys, args + ["--no-cluster"])
    dist = _run(capsys, args + ["--scheduler", cluster.client.scheduler.address, "--shard-size", "20"])
    assert "fake-quant" in local and strip(dist) == strip(local)


def test_golden_identical_to_no_cluster(cluster, capsys, tmp_path):
    from repq_hw.ir.graph import save_graph

    save_graph(digits_graph()[1], tmp_path / "ir")  # the bundled vit_digits, W4A4
    args = ["golden", "--ir", str(tmp_path / "ir"), "--images", "5", "--no-progress"]
    _run(capsys, args + ["--out", str(tmp_path / "local"), "--no-cluster"])
    _run(capsys, args + ["--out", str(tmp_path / "dist"), "--scheduler", cluster.client.scheduler.address,
                         "--shard-size", "2"])
    a, b = _tree(tmp_path / "local"), _tree(tmp_path / "dist")
    for t in (a, b):  # git state at the time of writing: outside the hashes by design (docs/golden_format.md)
        t.pop("provenance.json")
    assert len(a) > 100 and a == b
    assert verify_golden_set(tmp_path / "dist").ok


class _Hooked(Runner):
    """The module's cluster, with a hook called as shards are merged (kill a worker, press Ctrl-C)."""

    def __init__(self, cluster, hook, shard_size=2):
        super().__init__(cluster.cfg.__class__(shard_size=shard_size, progress=False))
        self.client, self._payloads, self.hook = cluster.client, cluster._payloads, hook

    def emulate(self, *args, **kw):
        return super().emulate(*args, on_shard=self.hook, **kw)

    def emulate_into(self, *args, **kw):
        return super().emulate_into(*args, on_shard=self.hook, **kw)


def _no_trace(out: Path) -> None:
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]  # no staging left
    try:
        assert not verify_golden_set(out).ok
    except InputError:
        pass


def test_golden_with_a_killed_worker_is_identical(cluster, tmp_path):
    _, g, codes, _ = digits_graph()
    x = codes[:12]
    write_golden_set(g, x, tmp_path / "ref", progress=False)
    pids = sorted(cluster.worker_pids().values())
    killed = []

    shards_seen = []

    def kill(done):
        if done == 2 and not killed:
            # the workers write their shards into the set's staging directory themselves
            shards_seen.extend(tmp_path.glob(".dist.tmp-*/.shards/[0-9]*/00000.npy"))
            os.kill(pids[-1], signal.SIGKILL)
            killed.append(pids[-1])

    write_golden_set(g, x, tmp_path / "dist", progress=False, runner=_Hooked(cluster, kill))
    assert killed and not alive(killed[0])
    assert len(shards_seen) >= 2
    assert _tree(tmp_path / "ref") == _tree(tmp_path / "dist")
    assert verify_golden_set(tmp_path / "dist").ok
    cluster.client.wait_for_workers(2, timeout=60)


def test_golden_failing_shard_leaves_no_set(cluster, tmp_path):
    _, g, codes, _ = digits_graph()
    bad = codes[:24].astype(np.int64)
    bad[17, 0, 5, 5] = 300  # the shard of image 17 refuses it on its worker
    out = tmp_path / "set"
    with pytest.raises(InputError, match=r"outside uint8"):
        write_golden_set(g, bad, out, progress=False, runner=_Hooked(cluster, None, shard_size=4))
    _no_trace(out)


def test_golden_interrupted_leaves_no_set(cluster, tmp_path):
    _, g, codes, _ = digits_graph()

    def interrupt(done):
        if done == 3:
            raise KeyboardInterrupt

    out = tmp_path / "set"
    with pytest.raises(KeyboardInterrupt):
        write_golden_set(g, codes[:24], out, progress=False, runner=_Hooked(cluster, interrupt))
    _no_trace(out)


def test_sweep_identical_to_no_cluster(cluster, capsys, tmp_path):
    spec = tmp_path / "sweep.toml"
    spec.write_text('models = ["vit_digits"]\nbits = [4]\nmethods = ["repq", "naive"]\n'
                    'calib_size = 8\neval_limit = 30\n')
    _run(capsys, ["sweep", str(spec), "--out", str(tmp_path / "local"), "--no-cluster", "--no-progress"])
    _run(capsys, ["sweep", str(spec), "--out", str(tmp_path / "dist"), "--no-progress",
                  "--scheduler", cluster.client.scheduler.address])
    def strip(d):  # every column but the calibration time
        import csv

        rows = list(csv.DictReader((d / "results.csv").open()))
        return [{k: v for k, v in r.items() if k != "calib_seconds"} for r in rows]

    rows = strip(tmp_path / "local")
    assert len(rows) == 2 and rows == strip(tmp_path / "dist")  # 1 bit width x 2 methods
    assert all(r["integer_top1"] for r in rows if r["method"] == "repq")
    assert "integer: only method repq" in (tmp_path / "local" / "results.md").read_text()
    assert (tmp_path / "dist" / "accuracy_vs_bits.png").stat().st_size > 1000


def test_fidelity_on_an_image_folder_decoded_by_workers(cluster, tmp_path):
    """``eval --integer`` on an ImageFolder: the workers decode it and run every stage of the ladder;
    the report is the same as the single-process one (top-1, agreement, cosine, per-image predictions,
    per-layer SQNR)."""
    from PIL import Image

    from repq_hw.pipeline import run_fidelity
    from repq_hw.quant.model import QuantConfig

    rng = np.random.default_rng(1)
    for c in range(3):
        (tmp_path / f"c{c}").mkdir()
        for i in range(24):  # 72 images: two batches of fidelity's 64
            img = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(img).save(tmp_path / f"c{c}" / f"{i}.png")
    import torch

    args = ("test_vit", [QuantConfig(w_bits=4, a_bits=4)], str(tmp_path), None, 8, 0)
    torch.manual_seed(0)  # test_vit's random weights
    (local,) = run_fidelity(*args, progress=False)
    torch.manual_seed(0)
    (dist,) = run_fidelity(*args, progress=False, runner=cluster)
    assert len(dist.labels) == 72 and np.array_equal(dist.labels, local.labels)
    assert [r.__dict__ for r in dist.rows] == [r.__dict__ for r in local.rows]
    assert all(np.array_equal(dist.predictions[k], local.predictions[k]) for k in local.predictions)
    assert dist.sqnr == local.sqnr
