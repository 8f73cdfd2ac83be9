"""Fuzz the calibrated-model loader with mutations of a real calibrated folder (issue #10).

Each mutation of quant.json (a value replaced by one of another type or range, a key removed or added)
or of model.safetensors (bytes flipped, inserted, truncated) must either be refused with an InputError
whose message names the file, or load to a model whose fake-quant output equals the unmutated one
exactly. Any other exception, or a different output, is a bug.
"""

import contextlib
import json
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from repq_hw.errors import InputError
from repq_hw.models.registry import model_config
from repq_hw.quant.model import load_calibrated, save_calibrated
from tests.conftest import calibrated

pytestmark = pytest.mark.fuzz

NAME = "test_vit"
FUZZ = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A real calibrated folder (test_vit W4A4, with a calibration and accuracy record), its reference
    fake-quant output on a fixed batch, and the batch."""
    _, q, cfg, x = calibrated(NAME, 4)
    d = tmp_path_factory.mktemp("fuzz") / "base"
    extra = {"calibration": {"data": "/some/folder", "n": 16, "seed": 0, "seconds": 0.5}, "checkpoint": None,
             "pretrained": False,
             "accuracy": {"float": {"top1": 10.0, "top5": 50.0, "loss": 2.3, "n": 8},
                          "quant": {"top1": 12.5, "top5": 50.0, "loss": 2.4, "n": 8}}}
    save_calibrated(q, cfg, model_config(NAME), d, extra)
    x = x[:2]
    q0, _, _ = load_calibrated(d)
    with torch.no_grad():
        ref = q0(x)
    return d, ref, x


def check(d: Path, ref: torch.Tensor, x: torch.Tensor) -> str:
    """Load d: refused with an InputError naming the folder's file, or the same output. Returns the outcome."""
    try:
        q, _, meta = load_calibrated(d)
    except InputError as e:
        msg = str(e)
        assert str(d) in msg and ("quant.json" in msg or "model.safetensors" in msg), msg
        return "refused"
    assert isinstance(meta["float_env"]["reproducible"], bool)
    with torch.no_grad():
        out = q(x)
    assert torch.equal(out, ref), "a mutated folder loaded to a different model"
    return "loaded"


# --- quant.json mutations ------------------------------------------------------------------------

def paths(tree, prefix=()):
    """Every (path) of a JSON tree: dict keys and list indices, depth first."""
    out = [prefix] if prefix else []
    if isinstance(tree, dict):
        for k, v in tree.items():
            out += paths(v, prefix + (k,))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out += paths(v, prefix + (i,))
    return out


json_scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, -1, 2, 4, 8, 9, 48, 2**31, 2**64, 10**400]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 4.0, 1e-30, 1e308]),
    st.text(max_size=12),
    st.sampled_from(["os.system", "subprocess.Popen", "builtins.eval", "timm.create_model", "UniformQuantizer",
                     "LogSqrt2Quantizer", "timm.models.vision_transformer.VisionTransformer", "repq", "naive",
                     "token", "test_swin", "vit_digits", "NaN"]),
)
json_values = st.recursive(json_scalars, lambda c: st.one_of(st.lists(c, max_size=3),
                                                             st.dictionaries(st.text(max_size=6), c, max_size=3)),
                           max_leaves=6)


def retype(v):
    """The same value with another JSON type, where one exists (the careless kind of change)."""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return [float(v), str(v), v == 1][hash(v) % 3]
    if isinstance(v, float):
        return int(v) if v == int(v) else str(v)
    if isinstance(v, str):
        return [v] if not v.isdigit() else int(v)
    if isinstance(v, list):
        return {str(i): x for i, x in enumerate(v)}
    if isinstance(v, dict):
        return list(v.values())
    return 0


mutation = st.tuples(st.sampled_from(["replace", "retype", "delete", "add"]), st.integers(0, 10**6),
                     json_values, st.text(min_size=1, max_size=8))


def apply_json(meta, op, pick, value, new_key):
    ps = paths(meta)
    path = ps[pick % len(ps)]
    parent = meta
    for k in path[:-1]:
        parent = parent[k]
    last = path[-1]
    if op == "replace":
        parent[last] = value
    elif op == "retype":
        parent[last] = retype(parent[last])
    elif op == "delete":
        del parent[last]
    else:  # add a key to the nearest object
        target = parent[last] if isinstance(parent[last], dict) else parent
        if isinstance(target, dict):
            target[new_key] = value
        else:
            parent[last] = value


@contextlib.contextmanager
def scratch_copy(d0: Path):
    """A throw-away copy of the calibrated folder ``d0`` to mutate (hypothesis runs many examples per test,
    so pytest's per-test tmp_path would be shared between them)."""
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "cal"
        shutil.copytree(d0, d)
        yield d


@FUZZ
@given(muts=st.lists(mutation, min_size=1, max_size=3))
def test_fuzz_quant_json(base, muts):
    d0, ref, x = base
    with scratch_copy(d0) as d:
        meta = json.loads((d / "quant.json").read_text())
        for m in muts:
            apply_json(meta, *m)
        (d / "quant.json").write_text(json.dumps(meta))
        check(d, ref, x)


# --- model.safetensors mutations -----------------------------------------------------------------

byte_mutation = st.tuples(st.sampled_from(["flip", "set", "insert", "truncate", "header"]),
                          st.integers(0, 10**9), st.integers(0, 255))


def apply_bytes(data: bytearray, op, pos, byte):
    header_len = 8 + int.from_bytes(data[:8], "little") if len(data) >= 8 else len(data)
    if not data:  # truncated to nothing by an earlier mutation
        return data
    if op == "header":  # a byte of the length prefix or the JSON header: the structured part
        i = pos % max(1, min(header_len, len(data)))
        data[i] = byte
        return data
    i = pos % max(1, len(data))
    if op == "flip" and data:
        data[i] ^= 1 << (byte % 8)
    elif op == "set" and data:
        data[i] = byte
    elif op == "insert":
        data[i:i] = bytes([byte])
    elif op == "truncate":
        del data[i:]
    return data


@FUZZ
@given(muts=st.lists(byte_mutation, min_size=1, max_size=3))
def test_fuzz_model_safetensors(base, muts):
    d0, ref, x = base
    with scratch_copy(d0) as d:
        p = d / "model.safetensors"
        data = bytearray(p.read_bytes())
        for m in muts:
            data = apply_bytes(data, *m)
        p.write_bytes(bytes(data))
        check(d, ref, x)


@FUZZ
@given(muts=st.lists(byte_mutation, min_size=1, max_size=2))
def test_fuzz_quant_json_bytes(base, muts):
    """Raw byte damage to quant.json (truncation, bad UTF-8, broken syntax)."""
    d0, ref, x = base
    with scratch_copy(d0) as d:
        p = d / "quant.json"
        data = bytearray(p.read_bytes())
        for op, pos, byte in muts:
            apply_bytes(data, "set" if op == "header" else op, pos, byte)
        p.write_bytes(bytes(data))
        check(d, ref, x)


def test_fuzz_harness_sees_both_outcomes(base, tmp_path):
    """The harness can tell the outcomes apart: an untouched folder loads, a harmless change of a record
    field loads, a damaging one is refused."""
    d0, ref, x = base
    d = tmp_path / "cal"
    shutil.copytree(d0, d)
    assert check(d, ref, x) == "loaded"
    meta = json.loads((d / "quant.json").read_text())
    meta["calibration"]["seed"] = 7
    (d / "quant.json").write_text(json.dumps(meta))
    assert check(d, ref, x) == "loaded"
    meta["quant_config"]["w_bits"] = 5
    (d / "quant.json").write_text(json.dumps(meta))
    assert check(d, ref, x) == "refused"
