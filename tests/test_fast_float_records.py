"""An explicit --fast-float run writes ``reproducible: false`` into everything it produces (calibrated
folder, IR, golden manifest and provenance), a reproducible run writes ``true``, and a regeneration check
against the committed (reproducible) set says why the sets may differ."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from repq_hw import float_env
from repq_hw.golden.model import GOLDEN_ROOT, compare_sets

pytestmark = pytest.mark.float_dependent

CLI = [sys.executable, "-m", "repq_hw.cli"]


def _run(args, env=None):
    out = subprocess.run(CLI + args, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    return out


def _env(fast: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k != float_env.FAST_FLOAT_ENV}
    if fast:
        env[float_env.FAST_FLOAT_ENV] = "1"
    return env


@pytest.mark.parametrize("fast", [True, False], ids=["fast-float", "reproducible"])
def test_calibrate_and_lower_record_the_mode(tmp_path, fast):
    # --fast-float on the command line; the reproducible run also clears the variable, so it is
    # reproducible whatever torch paths the surrounding test pass pins (the mode overrides them)
    flag = ["--fast-float"] if fast else []
    cal, ir = tmp_path / "cal", tmp_path / "ir"
    _run(flag + ["calibrate", "--model", "vit_digits", "--calib-size", "4", "--no-eval", "--out", str(cal)],
         env=_env(False))
    rec = json.loads((cal / "quant.json").read_text())["float_env"]
    assert rec["reproducible"] is (not fast) and rec["mode"] == ("fast-float" if fast else "reproducible-avx2")
    if fast:
        assert "fast float requested" in rec["reason"]
    # lowering in the reproducible mode cannot make a fast-float calibration reproducible
    _run(["lower", "--calibrated", str(cal), "--out", str(ir)], env=_env(False))
    meta = json.loads((ir / "graph.json").read_text())["meta"]
    assert meta["float_env"]["reproducible"] is (not fast)


def test_fast_float_golden_set_says_so_and_the_check_explains(tmp_path):
    out = tmp_path / "gs"
    committed = GOLDEN_ROOT / "vit_digits.w4a4.seed0"
    _run(["--fast-float", "golden", "--model", "vit_digits", "--bits", "4", "--images", "2", "--seed", "0",
          "--ops", "blocks.0.*", "--ops", "head*", "--out", str(out), "--no-progress"], env=_env(False))
    manifest = json.loads((out / "manifest.json").read_text())
    prov = json.loads((out / "provenance.json").read_text())
    assert manifest["reproducible"] is False
    assert prov["float_env"]["mode"] == "fast-float" and prov["float_env"]["reproducible"] is False
    rep = compare_sets(out, committed)
    if not rep.identical:  # on an AVX2-only CPU the native paths may well give the same bytes
        assert any("fast-float" in r and "reproducible: false" in r for r in rep.reasons), rep.text()
    assert "why:" in rep.text() or rep.identical
