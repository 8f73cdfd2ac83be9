"""The reproducible float mode (repq_hw/float_env.py): what it pins, when it can't, and that it never
claims reproducibility that was not in force.  Each case runs in a fresh interpreter, because the
settings only count before torch initialises."""

import json
import os
import subprocess
import sys
import warnings

import pytest

from repq_hw import float_env

pytestmark = pytest.mark.float_dependent

PINS = float_env.PINNED_ENV


def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in PINS and k != float_env.FAST_FLOAT_ENV}
    env.update(extra)
    return env


def _record_in_subprocess(code: str, env: dict) -> dict:
    """Run ``code`` (which must end with a float_env record in ``rec``) and return the record."""
    script = code + "\nimport json, sys\nprint('REC=' + json.dumps(rec))\n"
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                         timeout=300, check=True)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("REC=")][-1]
    return json.loads(line[4:])


def test_this_test_process_is_in_the_mode_the_environment_asks_for():
    rec = float_env.record()
    if float_env.fast_float_requested():
        assert rec["mode"] == "fast-float" and rec["reproducible"] is False
        assert "fast float requested" in rec["reason"]
    else:
        assert rec == {**rec, "reproducible": True, "mode": "reproducible-avx2", "reason": "",
                       "cpu_capability": "AVX2", "settings": PINS}


def test_importing_repq_hw_first_pins_torch():
    rec = _record_in_subprocess("import repq_hw, torch\nfrom repq_hw import float_env\nrec = float_env.record()",
                                _clean_env())
    assert rec["reproducible"] is True, rec["reason"]
    assert rec["settings"] == PINS and rec["cpu_capability"] == "AVX2" and rec["overridden"] == {}


def test_torch_imported_first_is_detected_and_not_claimed():
    code = "import torch, repq_hw\nfrom repq_hw import float_env\nrec = float_env.record()"
    rec = _record_in_subprocess(code, _clean_env())
    assert rec["reproducible"] is False
    assert "not pinned" in rec["reason"]


def test_pins_set_after_torch_initialised_do_not_count():
    # the variables are right by the time of the record, but torch read them before they were set
    code = ("import os, torch\n"
            f"os.environ.update({PINS!r})\n"
            "import repq_hw\nfrom repq_hw import float_env\nrec = float_env.record()")
    rec = _record_in_subprocess(code, _clean_env())
    assert rec["reproducible"] is False
    assert "initial environment" in rec["reason"] or "capability" in rec["reason"]


def test_pins_in_the_initial_environment_count_even_if_torch_came_first():
    code = "import torch, repq_hw\nfrom repq_hw import float_env\nrec = float_env.record()"
    rec = _record_in_subprocess(code, _clean_env(**PINS))
    assert rec["reproducible"] is True, rec["reason"]


def test_user_settings_are_overridden_and_listed():
    env = _clean_env(ATEN_CPU_CAPABILITY="default", MKL_CBWR="COMPATIBLE")
    rec = _record_in_subprocess("import repq_hw, torch\nfrom repq_hw import float_env\nrec = float_env.record()",
                                env)
    assert rec["reproducible"] is True and rec["cpu_capability"] == "AVX2"
    assert rec["overridden"] == {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"}


def test_fast_float_opt_out_by_environment_and_by_call():
    by_env = _record_in_subprocess("import repq_hw, torch\nfrom repq_hw import float_env\n"
                                   "rec = float_env.record()",
                                   _clean_env(**{float_env.FAST_FLOAT_ENV: "1"}))
    by_call = _record_in_subprocess("import repq_hw\nfrom repq_hw import float_env\n"
                                    "assert float_env.use_fast_float()\nimport torch\nrec = float_env.record()",
                                    _clean_env(ATEN_CPU_CAPABILITY="avx2"))
    for rec in (by_env, by_call):
        assert rec["mode"] == "fast-float" and rec["reproducible"] is False
        assert "fast float requested" in rec["reason"]
    assert by_env["settings"] == {k: None for k in PINS}
    # the user's own value that the mode had replaced is given back on opting out
    assert by_call["settings"] == {**{k: None for k in PINS}, "ATEN_CPU_CAPABILITY": "avx2"}


def test_fast_float_after_torch_cannot_unpin_and_says_so():
    code = ("import repq_hw, torch, warnings\nfrom repq_hw import float_env\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    ok = float_env.use_fast_float()\n"
            "assert not ok and any('stay in force' in str(x.message) for x in w)\n"
            "rec = float_env.record()")
    rec = _record_in_subprocess(code, _clean_env())
    # torch runs pinned, but the user asked for fast float: the record does not claim reproducibility
    assert rec["cpu_capability"] == "AVX2" and rec["reproducible"] is False


def test_check_warns_only_when_not_reproducible_and_not_asked_for(monkeypatch):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        rec = float_env.check("calibrate")
    warned = [x for x in w if "reproducible float mode NOT in force" in str(x.message)]
    # fast float asked for: no warning; pinned: no warning
    assert not warned
    monkeypatch.delenv(float_env.FAST_FLOAT_ENV, raising=False)
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    with pytest.warns(UserWarning, match="calibrate: reproducible float mode NOT in force"):
        rec = float_env.check("calibrate")
    assert rec["reproducible"] is False and "ATEN_CPU_CAPABILITY" in rec["reason"]


def test_lowered_graph_records_the_mode():
    from repq_hw.pipeline import calibrated_and_lowered
    from repq_hw.quant.model import QuantConfig

    g = calibrated_and_lowered("vit_digits", QuantConfig(w_bits=8, a_bits=8), calib_size=4)[2]
    assert g.meta["float_env"] == {"reproducible": not float_env.fast_float_requested(),
                                   "mode": float_env.record()["mode"]}
