"""Reproducible float mode: the same float bits, hence the same integers, on every x86-64 CPU with AVX2.

Everything that turns floats into integers (calibration, lowering, golden sets made from a model) runs
torch's float kernels, and torch picks those by instruction set: ATen's vectorised kernels
(``ATEN_CPU_CAPABILITY``), oneDNN (``ONEDNN_MAX_CPU_ISA``) and MKL's sgemm (``MKL_ENABLE_INSTRUCTIONS``,
and ``MKL_CBWR`` for MKL's conditional bitwise reproducibility).  An AVX-512 CPU and an AVX2 CPU therefore
produce activations that differ in the last ulp, and every scale and dyadic multiplier derived from them
moves.  The reproducible mode pins all four to AVX2, a level every supported CPU has.  They are read once,
when torch initialises, so they must be set before ``import torch``: importing :mod:`repq_hw` does that
(:func:`pin_before_torch`, called from ``repq_hw/__init__.py``) unless torch is already imported or the user
opted out.

Opting out: ``REPQ_HW_FAST_FLOAT=1`` in the environment, or ``--fast-float`` on the CLI, or
:func:`use_fast_float` before torch is imported.  Everything produced then records ``reproducible: false``.

The record (:func:`record`) states what was actually in force when torch initialised; it never claims
reproducibility that was not: it is ``true`` only when this module set (or found) the pinned values before
torch was imported, they are unchanged, and torch reports the AVX2 capability.

This module imports torch only inside :func:`record` / :func:`check`, and only if torch is already loaded
or the caller asks for a record (the integer side never does).
"""

from __future__ import annotations

import os
import sys
import warnings

# The pinned settings: a level every x86-64 CPU with AVX2 has.  Values as documented by each library.
PINNED_ENV: dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "avx2",       # ATen vectorised kernels (softmax, layernorm, gelu, log2, reductions)
    "ONEDNN_MAX_CPU_ISA": "AVX2",        # oneDNN (convolutions, some matmuls)
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",   # MKL's code path (sgemm behind nn.Linear)
    "MKL_CBWR": "AVX2",                  # MKL conditional bitwise reproducibility at the AVX2 branch
}
FAST_FLOAT_ENV = "REPQ_HW_FAST_FLOAT"
#: torch's name for the capability the pinned mode must find in force
PINNED_CAPABILITY = "AVX2"

_TRUE = ("1", "true", "yes", "on")

# what this module did, for the record
_state: dict = {"pinned_by_repq_hw": False, "originals": {}, "overridden": {}, "torch_loaded_first": None}


def fast_float_requested() -> bool:
    """The user opted out of the reproducible mode (``REPQ_HW_FAST_FLOAT`` set to 1/true/yes/on)."""
    return os.environ.get(FAST_FLOAT_ENV, "").strip().lower() in _TRUE


def pin_before_torch() -> None:
    """Set the pinned variables if torch has not initialised yet and the user did not opt out.

    Values the user had set to something else are overridden (and listed in :func:`record` under
    ``overridden``), because the reproducible mode is on by default and means exactly these settings."""
    if _state["torch_loaded_first"] is None:
        _state["torch_loaded_first"] = "torch" in sys.modules
    if fast_float_requested() or "torch" in sys.modules:
        return
    for k, v in PINNED_ENV.items():
        old = os.environ.get(k)
        _state["originals"][k] = old
        if old is not None and old != v:
            _state["overridden"][k] = old
        os.environ[k] = v
    _state["pinned_by_repq_hw"] = True


def use_fast_float() -> bool:
    """Opt out of the reproducible mode: torch's default, CPU-specific float paths.

    Must run before torch is imported to take effect; returns False (and warns) if torch is already
    initialised with the pinned settings, in which case the run stays pinned and says so."""
    os.environ[FAST_FLOAT_ENV] = "1"  # subprocesses inherit the choice
    if "torch" in sys.modules:
        if _pins_in_env():
            warnings.warn("--fast-float: torch was already initialised with the reproducible (AVX2-pinned) "
                          "float settings; they stay in force for this process", stacklevel=2)
        return False
    if _state["pinned_by_repq_hw"]:
        for k in PINNED_ENV:  # give the user's own values back, exactly
            if _state["originals"].get(k) is not None:
                os.environ[k] = _state["originals"][k]
            else:
                os.environ.pop(k, None)
        _state["pinned_by_repq_hw"] = False
        _state["overridden"] = {}
    return True


def _pins_in_env() -> bool:
    return all(os.environ.get(k) == v for k, v in PINNED_ENV.items())


def _initial_env_pinned() -> bool:
    """The pinned values were in the environment this process started with (/proc/self/environ)."""
    try:
        with open("/proc/self/environ", "rb") as f:
            env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
    except OSError:
        return False
    return all(env.get(k.encode()) == v.encode() for k, v in PINNED_ENV.items())


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            info = dict(line.split(":", 1) for line in f if ":" in line and not line.startswith("flags"))
        name = info.get("model name\t", "").strip()
        fam = info.get("cpu family\t", "").strip()
        model = info.get("model\t\t", "").strip()
        return f"{name} (family {fam}, model {model})" if name else "unknown"
    except (OSError, ValueError):
        return "unknown"


def record() -> dict:
    """The float environment in force now, as stored in quant.json, graph meta and golden provenance.

    Keys: ``reproducible`` (bool), ``mode`` ("reproducible-avx2" or "fast-float"), ``reason`` (why it is
    not reproducible; empty when it is), ``settings`` (the four variables as they are now), ``overridden``
    (user values the mode replaced), ``cpu_capability`` (torch's), ``torch`` (version), ``cpu`` (model)."""
    import torch  # noqa: F401  (entry points that record have torch loaded anyway)

    cap = torch.backends.cpu.get_cpu_capability()
    reasons = []
    if fast_float_requested():
        reasons.append(f"fast float requested ({FAST_FLOAT_ENV}=1 or --fast-float)")
    if not _pins_in_env():
        diff = {k: os.environ.get(k) for k, v in PINNED_ENV.items() if os.environ.get(k) != v}
        reasons.append(f"torch's CPU float paths are not pinned: {diff}")
    elif _state["torch_loaded_first"] and not _initial_env_pinned():
        # torch was imported before repq_hw and the variables were set later: ATen's capability can be
        # checked, MKL's and oneDNN's cannot, so only values present when the process started count
        reasons.append("torch was imported before repq_hw and the pinned variables were not in the "
                       "process's initial environment")
    if cap != PINNED_CAPABILITY:
        flags = _cpu_flags()
        why = "the CPU lacks AVX2/FMA" if flags and not {"avx2", "fma"} <= flags else \
            "torch was initialised before the pinned settings were in force"
        reasons.append(f"torch's CPU capability is {cap}, not {PINNED_CAPABILITY} ({why})")
    return {
        "reproducible": not reasons,
        "mode": "fast-float" if fast_float_requested() else "reproducible-avx2",
        "reason": "; ".join(reasons),
        "settings": {k: os.environ.get(k) for k in PINNED_ENV},
        "overridden": dict(_state["overridden"]),
        "cpu_capability": cap,
        "torch": torch.__version__,
        "cpu": _cpu_name(),
    }


def check(what: str) -> dict:
    """:func:`record`, warning once per call site when the result will not be reproducible and the user
    did not ask for that.  ``what`` names the entry point (e.g. "calibrate")."""
    rec = record()
    if not rec["reproducible"] and not fast_float_requested():
        warnings.warn(f"{what}: reproducible float mode NOT in force ({rec['reason']}); the integers "
                      f"derived from floats may differ from other CPUs and are recorded as "
                      f"reproducible: false. Import repq_hw before torch to pin torch's float paths.",
                      stacklevel=2)
    return rec
