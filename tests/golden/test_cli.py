"""`repq-hw golden` command line, and the numpy-only path (no torch import)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from repq_hw.cli import main
from repq_hw.golden import GoldenSet
from tests.golden.helpers import tiny_ir

REPO = Path(__file__).resolve().parents[2]


def test_help_lists_the_actions(capsys):
    try:
        main(["golden", "--help"])
    except SystemExit as e:
        assert e.code == 0
    out = capsys.readouterr().out
    for word in ("verify", "replay", "committed", "--ops", "--op-type", "--lanes", "--force"):
        assert word in out


def test_write_from_ir_with_selection_and_refuse_overwrite(tmp_path, capsys):
    ir, codes = tiny_ir()
    np.save(tmp_path / "codes.npy", codes)
    out = tmp_path / "set"
    args = ["golden", "--ir", str(ir), "--inputs", str(tmp_path / "codes.npy"), "--ops", "blocks.0.*,head*",
            "--op-type", "softmax", "--op-type", "gemm", "--formats", "hex", "--const-formats", "hex,mif",
            "--out", str(out), "--no-progress"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert f"golden set written to {out}" in text and f"repq-hw golden verify {out}" in text
    assert "repq-hw golden replay" in text
    m = GoldenSet(out).manifest
    assert [o["name"] for o in m["ops"]] == ["blocks.0.attn.qkv", "blocks.0.attn.softmax", "blocks.0.attn.proj",
                                             "blocks.0.mlp.fc1", "blocks.0.mlp.fc2", "head"]
    assert m["inputs"]["ids"][0].startswith("npy:") and m["seed"] is None
    assert main(args) == 2
    assert "exists" in capsys.readouterr().err
    assert main(args + ["--force"]) == 0


def test_bad_arguments_are_errors(tmp_path, capsys):
    ir, _ = tiny_ir()
    assert main(["golden", "--out", str(tmp_path / "x")]) == 2
    assert main(["golden", "--ir", str(ir), "--op-type", "conv", "--out", str(tmp_path / "x")]) == 2
    assert "unknown op type" in capsys.readouterr().err


def test_numpy_only_write_and_verify(tmp_path):
    """Writing from an IR directory and verifying never import torch (blocked in a subprocess)."""
    ir, codes = tiny_ir()
    np.save(tmp_path / "codes.npy", codes)
    script = (
        "import sys; sys.modules['torch'] = None; sys.modules['timm'] = None\n"
        "from repq_hw.cli import main\n"
        f"rc = main(['golden', '--ir', {str(ir)!r}, '--inputs', {str(tmp_path / 'codes.npy')!r}, "
        f"'--ops', 'blocks.2.*', '--out', {str(tmp_path / 's')!r}, '--no-progress'])\n"
        f"rc = rc or main(['golden', 'verify', {str(tmp_path / 's')!r}])\n"
        "assert 'torch' not in sys.modules or sys.modules['torch'] is None\n"
        "sys.exit(rc)\n")
    r = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, cwd=REPO,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK " in r.stdout
    assert json.loads((tmp_path / "s" / "manifest.json").read_text())["ops"][0]["name"] == "blocks.2.norm1"


def test_golden_inputs_refuses_pickles_and_bad_shapes(tmp_path, capsys):
    """--inputs goes through the same reader as run --npy: one error line naming the option and file."""
    import pickle

    import numpy as np

    from repq_hw.cli import main
    from tests.golden.helpers import committed_paths

    ir = committed_paths()[0] / "ir"
    bad = tmp_path / "evil.npy"
    bad.write_bytes(pickle.dumps({"x": 1}))
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((2, 3), np.uint8))
    for f in (bad, wrong):
        rc = main(["golden", "--ir", str(ir), "--inputs", str(f), "--out", str(tmp_path / "gs")])
        err = capsys.readouterr().err
        assert rc == 2 and "--inputs" in err and str(f) in err and "Traceback" not in err
    assert not (tmp_path / "gs").exists()


def test_golden_from_the_bundled_swin(tmp_path, capsys):
    """`repq-hw golden --model swin_digits`: calibrate, lower (Swin), write the head and a patch merging, verify."""
    out = tmp_path / "swin"
    assert main(["golden", "--model", "swin_digits", "--bits", "8", "--images", "1", "--ops", "head*",
                 "--ops", "layers.1.downsample.*", "--formats", "hex", "--out", str(out), "--no-progress"]) == 0
    gs = GoldenSet(out)
    types = {o["op"] for o in gs.ops}
    assert {"avg_pool", "patch_merge", "gemm", "requantize"} <= types
    assert main(["golden", "verify", str(out)]) == 0
    assert "OK" in capsys.readouterr().out
