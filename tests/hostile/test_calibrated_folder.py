"""Hostile and careless calibrated-model folders and checkpoints (issue #10).

A calibrated folder (quant.json + model.safetensors) is input: it may be crafted to run code, hold NaN or
negative scales, be truncated, or record numbers that were not used. Every case must end in an InputError
naming the file and the field or tensor, and nothing named in the folder may be executed.
"""

import json
import pickle
import shutil
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from repq_hw.errors import InputError
from repq_hw.models.registry import create_model, model_config
from repq_hw.quant.model import load_calibrated, save_calibrated
from tests.conftest import calibrated

NAME = "test_vit"
# one weight quantizer (per channel), one per-tensor input quantizer, the post-Softmax log quantizer
W_Q = "blocks.0.attn.qkv.weight_quantizer"
A_Q = "blocks.0.attn.qkv.input_quantizer"
LOG_Q = "blocks.0.attn.matmul2.quantizer_A"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A calibrated test_vit W4A4 folder, its model, and a fixed input."""
    _, q, cfg, x = calibrated(NAME, 4)
    d = tmp_path_factory.mktemp("cal") / "base"
    save_calibrated(q, cfg, model_config(NAME), d)
    return d, q, x[:2]


@pytest.fixture
def folder(base, tmp_path):
    d = tmp_path / "cal"
    shutil.copytree(base[0], d)
    return d


def read_meta(d):
    return json.loads((d / "quant.json").read_text())


def write_meta(d, meta):
    (d / "quant.json").write_text(json.dumps(meta))


def rewrite_state(d, change):
    state = load_file(str(d / "model.safetensors"))
    change(state)
    save_file({k: v.contiguous() for k, v in state.items()}, str(d / "model.safetensors"))


def refused(d, *needles):
    with pytest.raises(InputError) as e:
        load_calibrated(d)
    msg = str(e.value)
    for n in needles:
        assert n in msg, f"{n!r} not in {msg!r}"
    return msg


# ---------------------------------------------------------------------------------------------------
# 1. nothing named in quant.json is imported or called


def test_round_trip_and_records(base, folder):
    _, q, x = base
    q2, _, meta = load_calibrated(folder)
    with torch.no_grad():
        assert torch.equal(q(x), q2(x))
    assert isinstance(meta["float_env"]["reproducible"], bool)
    assert set(meta["float_env"]) >= {"reproducible", "mode", "reason", "settings", "cpu_capability"}
    assert len(meta["weights_sha256"]) == 64


def _payloads(marker):
    return [
        ("os.system", {"command": f"touch {marker}"}),
        ("subprocess.Popen", {"args": [sys.executable, "-c", f"open({str(marker)!r}, 'w')"]}),
        ("builtins.eval", {}),
        ("builtins.exec", {}),
        ("timm.models.resnet.ResNet", {}),  # a real timm class, but not an allowed one
        ("torch.nn.Linear", {"in_features": 1, "out_features": 1}),
    ]


@pytest.mark.parametrize("i", range(6))
def test_model_class_payloads_are_not_executed(folder, tmp_path, i):
    marker = tmp_path / "pwned"
    cls, kwargs = _payloads(marker)[i]
    meta = read_meta(folder)
    meta["model"]["class"] = cls
    meta["model"]["kwargs"] = kwargs
    write_meta(folder, meta)
    refused(folder, "quant.json", "model.class", cls)
    assert not marker.exists()


def test_the_payload_would_run_if_called(tmp_path):
    """The marker payload works: had the loader called the class, the marker would exist."""
    import os

    marker = tmp_path / "pwned"
    os.system(**_payloads(marker)[0][1])
    assert marker.exists()


def test_timm_create_model_with_foreign_name(folder, tmp_path):
    meta = read_meta(folder)
    meta["model"] = {"name": "hf-hub:evil/model", "class": "timm.create_model", "kwargs": {}}
    write_meta(folder, meta)
    refused(folder, "quant.json", "model.name", "hf-hub:evil/model")


def test_allowed_class_but_other_models_class(folder):
    meta = read_meta(folder)
    meta["model"]["class"] = "timm.models.swin_transformer.SwinTransformer"
    write_meta(folder, meta)
    refused(folder, "quant.json", "model.class", "VisionTransformer")


@pytest.mark.parametrize("key, value, needle", [
    ("norm_layer", "builtins.eval", "model.kwargs.norm_layer"),    # a string naming a callable
    ("act_layer", "gelu", "model.kwargs"),                         # a plain word, but not registered
    ("evil", 1, "accepts no arguments ['evil']"),                  # not an argument of the class
    ("num_heads", 1, "num_heads"),                                 # same tensor shapes, other model
    ("depth", "2", "depth"),                                       # a string where a number belongs
    ("qkv_bias", 1, "qkv_bias"),                                   # a number where a bool belongs
    ("mlp_ratio", [2.0], "mlp_ratio"),
    ("embed_dim", {"__class__": "os.system"}, "model.kwargs.embed_dim"),
])
def test_model_kwargs(folder, key, value, needle):
    meta = read_meta(folder)
    meta["model"]["kwargs"][key] = value
    write_meta(folder, meta)
    refused(folder, "quant.json", needle)


def test_kwargs_never_reach_the_class(folder, monkeypatch):
    """The model is built from the registry's own config, not from the kwargs read from the file."""
    import repq_hw.models.registry as reg

    seen = []
    real = reg._build_class
    monkeypatch.setattr(reg, "_build_class", lambda path, kw: seen.append(kw) or real(path, kw))
    load_calibrated(folder)
    assert seen == [reg.TEST_MODEL_CONFIGS[NAME][1]] and seen[0] is reg.TEST_MODEL_CONFIGS[NAME][1]


# ---------------------------------------------------------------------------------------------------
# every field of quant.json


def _set(meta, path, value):
    *head, last = path
    for k in head:
        meta = meta[k]
    if value is DELETE:
        del meta[last]
    else:
        meta[last] = value


DELETE = object()


@pytest.mark.parametrize("path, value, needle", [
    (("format_version",), 2, "format_version"),
    (("format_version",), "1", "format_version"),
    (("format_version",), True, "format_version"),
    (("format_version",), DELETE, "format_version"),
    (("torch_version",), 2.4, "torch_version"),
    (("evil",), "x", "unknown keys ['evil']"),
    (("model",), "test_vit", "'model'"),
    (("model", "name"), "vit_nope", "model.name"),
    (("model", "name"), ["test_vit"], "model.name"),
    (("model", "extra"), 1, "'model'"),
    (("quant_config", "w_bits"), 9, "quant_config.w_bits"),
    (("quant_config", "w_bits"), "4", "quant_config.w_bits"),
    (("quant_config", "w_bits"), 4.0, "quant_config.w_bits"),
    (("quant_config", "a_bits"), True, "quant_config.a_bits"),
    (("quant_config", "a_bits"), 8, "quantizers."),  # valid bits, but not what the quantizers record
    (("quant_config", "method"), "os.system", "quant_config.method"),
    (("quant_config", "reparam"), "yes", "quant_config.reparam"),
    (("quant_config", "reparam"), False, f"quantizers.{A_Q}.channel_wise"),
    (("quant_config", "zero_point"), None, "quant_config.zero_point"),
    (("quant_config", "log_zero_state"), DELETE, "missing keys ['log_zero_state']"),
    (("quant_config", "lr"), 0.1, "unknown keys ['lr']"),
    (("quantizers", W_Q, "n_bits"), 8, f"quantizers.{W_Q}.n_bits"),
    (("quantizers", W_Q, "n_bits"), 99, f"quantizers.{W_Q}.n_bits"),
    (("quantizers", W_Q, "channel_wise"), False, f"quantizers.{W_Q}.channel_wise"),
    (("quantizers", W_Q, "channel_axis"), -1, f"quantizers.{W_Q}.channel_axis"),
    (("quantizers", W_Q, "method"), "minmax", f"quantizers.{W_Q}.method"),
    (("quantizers", W_Q, "inited"), False, f"quantizers.{W_Q}.inited"),
    (("quantizers", W_Q, "kind"), "LogSqrt2Quantizer", f"quantizers.{W_Q}"),
    (("quantizers", W_Q, "kind"), "os.system", f"quantizers.{W_Q}.kind"),
    (("quantizers", LOG_Q, "zero_state"), "b_bit", f"quantizers.{LOG_Q}.zero_state"),
    (("quantizers", W_Q), DELETE, W_Q),
    (("quantizers", "blocks.9.evil"), {"kind": "UniformQuantizer"}, "blocks.9.evil"),
    (("quantizers",), {}, "quantizers"),
    (("calibration",), {"data": "digits", "n": 0, "seed": 0, "seconds": 1.0}, "calibration.n"),
    (("calibration",), {"data": "digits", "n": "32", "seed": 0, "seconds": 1.0}, "calibration.n"),
    (("calibration",), {"data": "digits", "n": 32, "seed": -1, "seconds": 1.0}, "calibration.seed"),
    (("calibration",), {"data": 3, "n": 32, "seed": 0, "seconds": 1.0}, "calibration.data"),
    (("calibration",), {"data": "d", "n": 32, "seed": 0, "seconds": -1}, "calibration.seconds"),
    (("calibration",), {"data": "d", "n": 32, "seed": 0}, "missing keys ['seconds']"),
    (("calibration",), {"data": "d", "n": 32, "seed": 0, "seconds": 10**400}, "calibration.seconds"),
    (("calibration",), {"data": "d", "n": 10**400, "seed": 0, "seconds": 1}, "calibration.n"),
    (("accuracy",), {"quant": {"top1": 1, "top5": 1, "loss": 10**400, "n": 3}}, "accuracy.quant.loss"),
    (("checkpoint",), 5, "checkpoint"),
    (("pretrained",), "no", "pretrained"),
    (("accuracy",), {"float": {"top1": 101, "top5": 1, "loss": 0.1, "n": 3}}, "accuracy.float.top1"),
    (("weights_sha256",), "0" * 63, "weights_sha256"),
    (("float_env",), {"reproducible": "yes"}, "float_env.reproducible"),
    (("float_env",), {"mode": "x"}, "missing keys ['reproducible']"),
    (("float_env",), True, "float_env"),
    (("float_env", "settings"), {"MKL_CBWR": 1}, "float_env.settings.MKL_CBWR"),
])
def test_bad_fields(folder, path, value, needle):
    meta = read_meta(folder)
    _set(meta, path, value)
    write_meta(folder, meta)
    refused(folder, "quant.json", needle)


def test_optional_fields_may_be_absent(base, folder):
    meta = read_meta(folder)
    for k in ("float_env", "weights_sha256", "calibration", "checkpoint"):
        meta.pop(k, None)
    write_meta(folder, meta)
    q2, _, got = load_calibrated(folder)
    assert got["float_env"]["reproducible"] is False  # no record: not reproducible
    with torch.no_grad():
        assert torch.equal(base[1](base[2]), q2(base[2]))


def test_float_env_kept(folder):
    meta = read_meta(folder)
    meta["float_env"]["reproducible"] = True
    write_meta(folder, meta)
    assert load_calibrated(folder)[2]["float_env"] == meta["float_env"]


def test_save_records_float_env_and_refuses_unknown_extra(base, tmp_path):
    from repq_hw import float_env

    _, q, cfg, _ = calibrated(NAME, 4)
    rec = dict(float_env.record(), reproducible=False, reason="given")
    save_calibrated(q, cfg, model_config(NAME), tmp_path / "a", float_env=rec)
    assert read_meta(tmp_path / "a")["float_env"] == rec
    with pytest.raises(InputError, match="extra keys"):
        save_calibrated(q, cfg, model_config(NAME), tmp_path / "b", extra={"notes": "x"})
    with pytest.raises(InputError, match="model.kwargs"):  # a config the loader would refuse is never written
        save_calibrated(q, cfg, dict(model_config(NAME), kwargs={"depth": 2}), tmp_path / "c")
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


# ---------------------------------------------------------------------------------------------------
# 2. tensors: scales, zero points, shapes, dtypes, missing / unexpected


@pytest.mark.parametrize("q", [W_Q, A_Q, LOG_Q])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 0.0, -0.01, 1e-30])
def test_bad_delta(folder, q, bad):
    def change(state):
        state[f"{q}.delta"].reshape(-1)[0] = bad

    rewrite_state(folder, change)
    refused(folder, "model.safetensors", f"{q}.delta")


@pytest.mark.parametrize("bad, needle", [(float("nan"), "zero points"), (float("-inf"), "zero points"),
                                         (0.5, "integer-valued"), (2.0**40, "2147483647")])
def test_bad_zero_point(folder, bad, needle):
    def change(state):
        state[f"{W_Q}.zero_point"][3] = bad

    rewrite_state(folder, change)
    refused(folder, "model.safetensors", f"{W_Q}.zero_point", needle)


def test_zero_points_outside_the_code_range_are_legitimate(folder):
    """Calibration gives zero points outside [0, 2^b - 1] to channels that do not straddle 0 (the bundled
    swin_digits has -8 and 18 at 4 bits), so the loader must accept them."""
    rewrite_state(folder, lambda s: s[f"{W_Q}.zero_point"].__setitem__(0, -8.0))
    meta = read_meta(folder)
    del meta["weights_sha256"]
    write_meta(folder, meta)
    load_calibrated(folder)


@pytest.mark.parametrize("change, needles", [
    (lambda s: s.__setitem__(f"{W_Q}.delta", s[f"{W_Q}.delta"][:-1]), [f"{W_Q}.delta", "shape"]),
    (lambda s: s.__setitem__(f"{A_Q}.delta", torch.ones(48)), [f"{A_Q}.delta", "shape"]),
    (lambda s: s.__setitem__(f"{A_Q}.delta", s[f"{A_Q}.delta"].double()), [f"{A_Q}.delta", "dtype"]),
    (lambda s: s.__setitem__(f"{W_Q}.zero_point", s[f"{W_Q}.zero_point"].to(torch.int32)), ["zero_point", "dtype"]),
    (lambda s: s.pop(f"{LOG_Q}.delta"), ["missing", f"{LOG_Q}.delta"]),
    (lambda s: s.pop("head.weight"), ["missing", "head.weight"]),
    (lambda s: s.__setitem__("evil.weight", torch.zeros(1)), ["unexpected", "evil.weight"]),
    (lambda s: s.__setitem__("pos_embed", torch.zeros(1, 3, 48)), ["pos_embed", "shape"]),
    (lambda s: s["blocks.1.mlp.fc2.weight"].__setitem__((0, 0), float("nan")), ["blocks.1.mlp.fc2.weight", "NaN"]),
])
def test_bad_tensors(folder, change, needles):
    rewrite_state(folder, change)
    refused(folder, "model.safetensors", *needles)


def test_modified_weights_fail_the_recorded_sha256(folder):
    rewrite_state(folder, lambda s: s["head.bias"].add_(1.0))  # valid values, but not the calibrated ones
    refused(folder, "model.safetensors", "weights_sha256")


# ---------------------------------------------------------------------------------------------------
# truncated and malformed files


@pytest.mark.parametrize("keep", [0, 7, 8, 100, -100, -1])
def test_truncated_safetensors(folder, keep):
    p = folder / "model.safetensors"
    data = p.read_bytes()
    p.write_bytes(data[:keep] if keep >= 0 else data[:len(data) + keep])
    refused(folder, "model.safetensors")


@pytest.mark.parametrize("text, needle", [
    (None, "truncated"),                      # the first half of the real file
    ("", "not valid JSON"),
    ("[1, 2, 3]", "(top level)"),
    ('{"format_version": NaN}', "NaN"),
    ('{"a": 1, "a": 2}', "duplicate keys"),
    ('{"format_version": 1e400}', "overflows"),
    ('{"format_version": ' + "1" * 5000 + "}", "quant.json"),
    ("[" * 100000 + "]" * 100000, "quant.json"),
])
def test_malformed_quant_json(folder, text, needle):
    p = folder / "quant.json"
    p.write_text(p.read_text()[: len(p.read_text()) // 2] if text is None else text)
    refused(folder, "quant.json", needle)


def test_quant_json_not_utf8(folder):
    (folder / "quant.json").write_bytes(b'{"format_version": "\xff\xfe"}')
    refused(folder, "quant.json", "UTF-8")


def test_missing_files(folder):
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_calibrated(folder)


# ---------------------------------------------------------------------------------------------------
# 3. the calibration record: the images actually used, the data source actually used


def _image_folder(root, n_per_class, classes=("a", "b")):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def test_too_few_images_is_an_error_naming_both_numbers(tmp_path):
    from repq_hw.pipeline import QuantConfig, run_calibrate

    data = _image_folder(tmp_path / "data", 3)  # 6 images
    with pytest.raises(InputError) as e:
        run_calibrate(NAME, QuantConfig(), data=str(data), calib_size=8, evaluate_acc=False,
                      out_dir=tmp_path / "out", progress=False)
    assert "8" in str(e.value) and "only 6" in str(e.value) and str(data) in str(e.value)
    assert not (tmp_path / "out").exists()


def test_too_few_digits_is_an_error():
    from repq_hw.pipeline import calibration_images

    with pytest.raises(InputError, match="2000 requested.*only 1437"):
        calibration_images(None, "vit_digits", None, 2000)


def test_recorded_size_is_the_number_used(tmp_path, monkeypatch):
    """Whatever the data source hands back, quant.json records the batch that was used."""
    import repq_hw.pipeline as pl
    from repq_hw.pipeline import QuantConfig, run_calibrate

    real = pl.calibration_images
    monkeypatch.setattr(pl, "calibration_images", lambda m, name, data, n, seed: real(m, name, data, n, seed)[:5])
    data = _image_folder(tmp_path / "data", 4)
    run_calibrate(NAME, QuantConfig(), data=str(data), calib_size=8, evaluate_acc=False,
                  out_dir=tmp_path / "out", progress=False)
    meta = read_meta(tmp_path / "out")
    assert meta["calibration"]["n"] == 5
    assert meta["calibration"]["data"] == str(data) and meta["pretrained"] is False
    assert isinstance(meta["float_env"]["reproducible"], bool)


def test_recorded_data_is_the_calibration_source(tmp_path):
    """An evaluation-only data set calibrates on the digits train split, and the record says so."""
    from repq_hw.pipeline import QuantConfig, run_calibrate

    run_calibrate("vit_digits", QuantConfig(), data="mnist-digits", calib_size=2, evaluate_acc=False,
                  out_dir=tmp_path / "out", progress=False)
    cal = read_meta(tmp_path / "out")["calibration"]
    assert cal["data"] == "digits" and cal["n"] == 2


# ---------------------------------------------------------------------------------------------------
# 4. --checkpoint files


@pytest.fixture(scope="module")
def float_state():
    return {k: v.contiguous() for k, v in create_model("test_deit").state_dict().items()}


def test_checkpoint_not_a_weights_file(tmp_path):
    for name in ("w.txt", "w.json", "w"):
        (tmp_path / name).write_text("{}")
        with pytest.raises(InputError, match=f"{name}.*expected .safetensors, .pth, .pt or .bin"):
            create_model("test_deit", checkpoint=tmp_path / name)
    (tmp_path / "d.safetensors").mkdir()
    with pytest.raises(InputError, match="d.safetensors.*expected a file"):
        create_model("test_deit", checkpoint=tmp_path / "d.safetensors")


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_truncated_checkpoint(tmp_path, float_state, suffix):
    p = tmp_path / f"w{suffix}"
    save_file(float_state, str(p)) if suffix == ".safetensors" else torch.save(float_state, p)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(InputError, match=f"w{suffix}"):
        create_model("test_deit", checkpoint=p)


def test_checkpoint_bad_entries(tmp_path, float_state):
    p = tmp_path / "w.pth"
    torch.save({**float_state, 3: torch.zeros(1)}, p)
    with pytest.raises(InputError, match="w.pth.*named tensors.*3"):
        create_model("test_deit", checkpoint=p)
    with open(p, "wb") as f:
        pickle.dump([1, 2], f)
    with pytest.raises(InputError, match="w.pth"):
        create_model("test_deit", checkpoint=p)


@pytest.mark.parametrize("change, needles", [
    (lambda s: s["head.weight"].__setitem__((0, 0), float("inf")), ["NaN/inf", "head.weight"]),
    (lambda s: s.__setitem__("head.bias", s["head.bias"].to(torch.int64)), ["dtype", "head.bias"]),
    (lambda s: s.pop("cls_token"), ["missing", "cls_token"]),
    (lambda s: s.__setitem__("cls_token", s["cls_token"].to(torch.float8_e4m3fn)), ["dtype", "cls_token"]),
])
def test_checkpoint_bad_tensors(tmp_path, float_state, change, needles):
    state = {k: v.clone() for k, v in float_state.items()}
    change(state)
    p = tmp_path / "w.safetensors"
    save_file(state, str(p))
    with pytest.raises(InputError) as e:
        create_model("test_deit", checkpoint=p)
    for n in ["w.safetensors", *needles]:
        assert n in str(e.value)


def test_checkpoint_float16_and_upper_case_suffix(tmp_path, float_state):
    p = tmp_path / "w.PTH"
    torch.save({k: v.half() for k, v in float_state.items()}, p)
    m = create_model("test_deit", checkpoint=p)
    assert torch.equal(m.head.weight, float_state["head.weight"].half().float())


@pytest.mark.parametrize("argv", [["lower", "--calibrated", "{d}", "--out", "{out}"],
                                  ["eval", "--calibrated", "{d}"]])
def test_cli_entry_points_refuse_the_payload(folder, tmp_path, argv, capsys):
    """`repq-hw lower --calibrated` and `repq-hw eval --calibrated` go through the same validation."""
    from repq_hw.cli import main

    marker = tmp_path / "pwned"
    meta = read_meta(folder)
    meta["model"]["class"], meta["model"]["kwargs"] = "os.system", {"command": f"touch {marker}"}
    write_meta(folder, meta)
    rc = main([a.format(d=folder, out=tmp_path / "ir") for a in argv])
    err = capsys.readouterr().err
    assert rc == 2 and "quant.json" in err and "model.class" in err and "os.system" in err
    assert not marker.exists() and not (tmp_path / "ir").exists()
