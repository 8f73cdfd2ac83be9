"""Hostile and careless CLI input (issue #10): every bad argument or file gives exit 2 and one line naming
the option or file, before any work; internal errors say so (exit 1); ``--debug`` shows the traceback;
``--fast-float`` opts out of the reproducible float mode before torch initialises (issue #11)."""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from repq_hw import cli
from repq_hw.cli import main

REPO = Path(__file__).resolve().parents[1]


def run_main(argv, capsys):
    """(exit code, stderr) of main(argv) in-process; argparse's SystemExit counts as its code."""
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    return rc, capsys.readouterr().err


def assert_user_error(rc, err, *needles):
    assert rc == 2, err
    assert "Traceback" not in err
    errors = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(errors) == 1, err  # one message line (argparse prints its usage lines before it)
    for n in needles:
        assert n in errors[0], (n, err)


# ---------------------------------------------------------------------------------------------------
# parse time: argparse types from repq_hw.argtypes, exit 2 with the option named

PARSE_ERRORS = [
    (["run", "--ir", "x", "--limit", "0"], "--limit"),
    (["run", "--ir", "x", "--limit", "-3"], "--limit"),
    (["run", "--ir", "x", "--limit", "ten"], "--limit"),
    (["run", "--ir", "x", "--topk", "-1"], "--topk"),
    (["run", "--ir", "x", "--topk", "0"], "--topk"),
    (["run", "--ir", "x", "--show", "-1"], "--show"),
    (["eval", "--integer", "--bits", "8,9"], "--bits"),
    (["eval", "--integer", "--bits", "8,x"], "--bits"),
    (["eval", "--integer", "--bits", "8,,4"], "--bits"),
    (["eval", "--integer", "--bits", "4,4"], "--bits"),
    (["eval", "--w-bits", "1"], "--w-bits"),
    (["eval", "--a-bits", "16"], "--a-bits"),
    (["eval", "--calib-size", "0"], "--calib-size"),
    (["eval", "--seed", "-1"], "--seed"),
    (["eval", "--seed", str(2**64)], "--seed"),
    (["eval", "--eval-limit", "0"], "--eval-limit"),
    (["calibrate", "--out", "x", "--calib-size", "-5"], "--calib-size"),
    (["ablation", "--bits", "9"], "--bits"),
    (["ablation", "--bits", "8,8"], "--bits"),
    (["ablation", "--bits", ""], "--bits"),
    (["ablation", "--models", "vit_digits,,swin_digits"], "--models"),
    (["ablation", "--models", "vit_digits,vit_digits"], "--models"),
    (["ablation", "--calib-size", "0"], "--calib-size"),
    (["ablation", "--seed", "-2"], "--seed"),
    (["cost", "--sram-kb", "-1"], "--sram-kb"),
    (["cost", "--sram-kb", "0"], "--sram-kb"),
    (["cost", "--sram-kb", "nan"], "--sram-kb"),
    (["cost", "--sram-kb", "inf"], "--sram-kb"),
    (["cost", "--weight-sram-kb", "0"], "--weight-sram-kb"),
    (["cost", "--batch", "0"], "--batch"),
    (["cost", "--bits", "8,8"], "--bits"),
    (["cost", "--calib-size", "0"], "--calib-size"),
    (["cost", "--eval-limit", "0"], "--eval-limit"),
    (["cost", "--seed", "-1"], "--seed"),
]


@pytest.mark.parametrize("argv,option", PARSE_ERRORS, ids=[" ".join(a) for a, _ in PARSE_ERRORS])
def test_bad_numbers_fail_at_parse_time(argv, option, capsys):
    rc, err = run_main(argv, capsys)
    assert_user_error(rc, err, f"argument {option}")


def test_argtypes_bit_range_is_the_quantizers():
    from repq_hw import argtypes
    from repq_hw.quant import quantizers

    assert (argtypes.MIN_BITS, argtypes.MAX_BITS) == (quantizers.MIN_BITS, quantizers.MAX_BITS)


def test_parsing_never_imports_torch():
    """--fast-float must act before torch initialises, so parsing (types included) stays torch-free."""
    code = ("import sys\n"
            "from repq_hw.cli import build_parser\n"
            "p = build_parser()\n"
            "for argv in (['eval', '--integer', '--bits', '8,6,4', '--w-bits', '4', '--seed', '3'],\n"
            "             ['calibrate', '--out', 'x', '--a-bits', '8', '--calib-size', '4'],\n"
            "             ['ablation', '--bits', '8,4', '--models', 'vit_digits'],\n"
            "             ['cost', '--bits', '8', '--sram-kb', '64', '--batch', '2'],\n"
            "             ['run', '--ir', 'x', '--limit', '3', '--topk', '1', '--show', '0']):\n"
            "    p.parse_args(argv)\n"
            "assert 'torch' not in sys.modules, 'parsing imported torch'\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# ---------------------------------------------------------------------------------------------------
# checks before any work: unknown models, ignored options, outputs that cannot be written


def test_unknown_ablation_model_lists_the_supported(capsys):
    rc, err = run_main(["ablation", "--models", "vit_digits,nope"], capsys)
    assert_user_error(rc, err, "--models", "unknown model 'nope'", "vit_digits", "test_deit")


def test_ablation_checkpoint_with_several_models(tmp_path, capsys):
    rc, err = run_main(["ablation", "--models", "vit_digits,swin_digits", "--checkpoint", str(tmp_path / "w.pth")],
                       capsys)
    assert_user_error(rc, err, "--checkpoint")


@pytest.mark.parametrize("argv,needle", [
    (["eval", "--bits", "8"], "--bits needs --integer"),
    (["eval", "--sqnr-plot", "p.png"], "--sqnr-plot needs --integer"),
    (["eval", "--integer", "--calibrated", "somewhere"], "--calibrated"),
    (["eval", "--integer", "--bits", "8,4", "--w-bits", "4"], "--bits"),
    (["eval", "--calibrated", "somewhere", "--w-bits", "8"], "--w-bits"),
    (["calibrate", "--out", "OUT", "--no-eval", "--eval-limit", "5"], "--eval-limit"),
])
def test_options_that_would_be_ignored(argv, needle, tmp_path, capsys):
    argv = [str(tmp_path / "o") if a == "OUT" else a for a in argv]
    rc, err = run_main(argv, capsys)
    assert_user_error(rc, err, needle)


@pytest.fixture
def a_file(tmp_path):
    f = tmp_path / "a_file"
    f.write_text("not a folder")
    return f


@pytest.mark.parametrize("make_argv,needle", [
    (lambda f: ["calibrate", "--model", "vit_digits", "--out", str(f), "--no-eval"], "--out"),
    (lambda f: ["calibrate", "--model", "vit_digits", "--out", str(f / "sub"), "--no-eval"], "--out"),
    (lambda f: ["lower", "--calibrated", "missing", "--out", str(f)], "--out"),
    (lambda f: ["demo", "--out", str(f)], "--out"),
    (lambda f: ["cost", "--skeleton", "--model", "test_deit", "--out", str(f)], "--out"),
    (lambda f: ["cost", "--model", "vit_digits", "--out", str(f / "x")], "--out"),
    (lambda f: ["eval", "--integer", "--sqnr-plot", str(f / "p.png")], "--sqnr-plot"),
    (lambda f: ["eval", "--integer", "--sqnr-plot", str(f.parent)], "--sqnr-plot"),
    (lambda f: ["eval", "--integer", "--sqnr-plot", str(f.parent / "plot.txt")], "--sqnr-plot"),
])
def test_unwritable_outputs_fail_before_any_work(make_argv, needle, a_file, capsys):
    rc, err = run_main(make_argv(a_file), capsys)
    assert_user_error(rc, err, needle)


def test_read_only_out_dir(tmp_path, capsys, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    if os.geteuid() == 0:  # root may write anywhere: make the permission check see what a user would
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if os.fspath(p) == os.fspath(ro)
                            and mode & os.W_OK else real_access(p, mode, **kw))
    try:
        rc, err = run_main(["cost", "--skeleton", "--model", "test_deit", "--out", str(ro / "c")], capsys)
    finally:
        ro.chmod(0o700)
    assert_user_error(rc, err, "--out", "not writable")


@pytest.mark.parametrize("argv,needle", [
    (["cost", "--ir", "x", "--bits", "4"], "--bits"),
    (["cost", "--ir", "x", "--checkpoint", "w.pth"], "--checkpoint"),
    (["cost", "--skeleton", "--model", "test_deit", "--data", "d"], "--data"),
    (["cost", "--skeleton", "--model", "test_deit", "--seed", "0"], "--seed"),
    (["cost", "--no-accuracy", "--eval-limit", "4"], "--eval-limit"),
])
def test_cost_options_the_source_ignores(argv, needle, tmp_path, capsys):
    rc, err = run_main(argv + ["--out", str(tmp_path / "c")], capsys)
    assert_user_error(rc, err, needle)
    assert not (tmp_path / "c").exists()


def test_counts_beyond_the_data_are_errors(tmp_path, capsys):
    rc, err = run_main(["calibrate", "--model", "vit_digits", "--calib-size", "5000", "--no-eval",
                        "--out", str(tmp_path / "c")], capsys)
    assert_user_error(rc, err, "--calib-size 5000", "1437")
    rc, err = run_main(["eval", "--model", "vit_digits", "--eval-limit", "361"], capsys)
    assert_user_error(rc, err, "--eval-limit 361", "360")
    assert not (tmp_path / "c").exists()


# ---------------------------------------------------------------------------------------------------
# `run`: --ir and --npy files that are not what they must be


@pytest.fixture(scope="module")
def ir_dir(tmp_path_factory):
    from repq_hw.ir.graph import save_graph
    from tests.conftest import lowered

    _, g, _ = lowered("test_deit", 4)
    d = tmp_path_factory.mktemp("ir")
    save_graph(g, d)
    return d, g


def _npy_cases(tmp: Path, g):
    t = g.tensors[g.inputs[0]].type
    shape = (2, *t.shape)
    cases = {}
    (tmp / "text.npy").write_text("hello, not numpy\n")
    cases["text"] = (tmp / "text.npy", "not an NPY")
    (tmp / "pickle.npy").write_bytes(pickle.dumps({"x": 1}))
    cases["pickle"] = (tmp / "pickle.npy", "pickled")
    np.save(tmp / "object.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    cases["object"] = (tmp / "object.npy", "pickled data and object arrays are refused")
    (tmp / "empty.npy").write_bytes(b"")
    cases["empty"] = (tmp / "empty.npy", "not a readable NPY")
    np.save(tmp / "big.npy", np.zeros((64, 64)))
    (tmp / "truncated.npy").write_bytes((tmp / "big.npy").read_bytes()[:300])
    cases["truncated"] = (tmp / "truncated.npy", "not a readable NPY")
    np.savez(tmp / "arch.npz", x=np.zeros(shape, np.float32))
    cases["npz"] = (tmp / "arch.npz", ".npz archive")
    np.save(tmp / "shape.npy", np.zeros((2, 3, 7, 7), np.float32))
    cases["shape"] = (tmp / "shape.npy", "shape [2, 3, 7, 7]")
    np.save(tmp / "nobatch.npy", np.zeros(t.shape, np.float32))
    cases["no batch"] = (tmp / "nobatch.npy", "shape")
    np.save(tmp / "zero.npy", np.zeros((0, *t.shape), np.float32))
    cases["zero images"] = (tmp / "zero.npy", "no images")
    x = np.zeros(shape, np.float32)
    x[1, 0, 3, 3] = np.nan
    x[0, 1, 0, 0] = np.inf
    np.save(tmp / "nan.npy", x)
    cases["nan"] = (tmp / "nan.npy", "2 NaN or infinite")
    np.save(tmp / "range.npy", np.full(shape, t.max + 1, np.int64))
    cases["code range"] = (tmp / "range.npy", "outside the input's")
    np.save(tmp / "bool.npy", np.zeros(shape, bool))
    cases["bool"] = (tmp / "bool.npy", "dtype bool")
    np.save(tmp / "complex.npy", np.zeros(shape, np.complex64))
    cases["complex"] = (tmp / "complex.npy", "dtype complex64")
    np.save(tmp / "struct.npy", np.zeros(2, dtype=[("a", "i4"), ("b", "f4")]))
    cases["structured"] = (tmp / "struct.npy", "not a plain numeric dtype")
    cases["missing"] = (tmp / "missing.npy", "no such file")
    cases["directory"] = (tmp, "not a regular file")
    return cases


def test_bad_npy_files(ir_dir, tmp_path, capsys):
    d, g = ir_dir
    for what, (path, needle) in _npy_cases(tmp_path, g).items():
        rc, err = run_main(["run", "--ir", str(d), "--npy", str(path)], capsys)
        assert_user_error(rc, err, "--npy", str(path), needle)
        assert "allow_pickle=" not in err, what  # never advise loading it unsafely


def test_npy_limit_and_good_run(ir_dir, tmp_path, capsys):
    d, g = ir_dir
    t = g.tensors[g.inputs[0]].type
    x = np.random.default_rng(0).standard_normal((3, *t.shape)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    rc, err = run_main(["run", "--ir", str(d), "--npy", str(tmp_path / "x.npy"), "--limit", "4"], capsys)
    assert_user_error(rc, err, "--limit 4", "only 3 images")
    assert main(["run", "--ir", str(d), "--npy", str(tmp_path / "x.npy"), "--limit", "2", "--topk", "50"]) == 0
    out = capsys.readouterr().out
    assert "ran 2 image(s)" in out and "showing top-10" in out and "image 1:" in out and "image 2:" not in out


def test_run_digits_limit_and_input_shape(ir_dir, capsys):
    d, _ = ir_dir
    rc, err = run_main(["run", "--ir", str(d), "--limit", "361"], capsys)
    assert_user_error(rc, err, "--limit 361", "360")
    rc, err = run_main(["run", "--ir", str(d)], capsys)  # test_deit takes 3-channel images, digits are 1
    assert_user_error(rc, err, "--ir", "--npy")


def test_broken_ir_files(ir_dir, tmp_path, capsys):
    d, _ = ir_dir
    rc, err = run_main(["run", "--ir", str(tmp_path / "nowhere")], capsys)
    assert_user_error(rc, err, "nowhere")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "graph.json").write_text("{ not json")
    (bad / "constants.npz").write_bytes((d / "constants.npz").read_bytes())
    rc, err = run_main(["run", "--ir", str(bad)], capsys)
    assert_user_error(rc, err)
    assert "graph.json" in err or str(bad) in err


def test_bad_calibrated_folder(tmp_path, capsys):
    (tmp_path / "quant.json").write_text("[1, 2")
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 16)
    rc, err = run_main(["eval", "--calibrated", str(tmp_path)], capsys)
    assert_user_error(rc, err)
    assert str(tmp_path) in err


# ---------------------------------------------------------------------------------------------------
# one error path: user errors 2, internal errors 1, Ctrl-C 130, --debug / REPQ_HW_DEBUG re-raise


def _raising(exc):
    def cmd(a):
        raise exc
    return cmd


@pytest.mark.parametrize("exc,rc,needles", [
    (AssertionError("invariant broken"), 1, ("internal error", "AssertionError", "invariant broken", "--debug")),
    (KeyError("x"), 1, ("internal error", "KeyError", "--debug")),
    (TypeError("bad call"), 1, ("internal error", "TypeError", "--debug")),
    (PermissionError(13, "Permission denied", "/some/file"), 2, ("error: /some/file: Permission denied",)),
    (IsADirectoryError(21, "Is a directory", "/a/dir"), 2, ("/a/dir: Is a directory",)),
    (json.JSONDecodeError("Expecting value", "x", 0), 2, ("invalid JSON",)),
    (ValueError("line one\n  line two"), 2, ("line one; line two",)),
    (KeyboardInterrupt(), 130, ("interrupted",)),
    (MemoryError(), 1, ("out of memory", "--debug")),
])
def test_error_classes(exc, rc, needles, monkeypatch, capsys):
    monkeypatch.delenv("REPQ_HW_DEBUG", raising=False)
    monkeypatch.setattr(cli, "cmd_models", _raising(exc))
    got, err = run_main(["models"], capsys)
    assert got == rc, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for n in needles:
        assert n in err, (n, err)


def test_debug_reraises(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("REPQ_HW_DEBUG", raising=False)
    with pytest.raises(FileNotFoundError):
        main(["--debug", "run", "--ir", str(tmp_path / "none")])
    monkeypatch.setattr(cli, "cmd_models", _raising(AssertionError("bug")))
    with pytest.raises(AssertionError):
        main(["--debug", "models"])
    monkeypatch.setenv("REPQ_HW_DEBUG", "1")
    with pytest.raises(AssertionError):
        main(["models"])


def test_broken_pipe_is_quiet():
    """Output piped into a reader that has gone (`repq-hw ... | head`): exit 141, no message, no traceback
    (in a subprocess: the handler redirects the real stdout)."""
    code = ("import sys\n"
            "from repq_hw import cli\n"
            "def cmd(a):\n"
            "    raise BrokenPipeError(32, 'Broken pipe')\n"
            "cli.cmd_models = cmd\n"
            "sys.exit(cli.main(['models']))\n")
    r = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 141 and r.stderr == "", r.stderr


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "repq_hw.cli", *args], check=False, capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, **(env or {})})


def test_subprocess_messages_and_debug_traceback(tmp_path):
    env = {"REPQ_HW_DEBUG": ""}
    r = _cli("run", "--ir", "x", "--limit", "0", env=env)
    assert r.returncode == 2 and "argument --limit" in r.stderr and "Traceback" not in r.stderr
    r = _cli("run", "--ir", str(tmp_path / "none"), env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("repq-hw: error: ") and len(r.stderr.strip().splitlines()) == 1
    r = _cli("--debug", "run", "--ir", str(tmp_path / "none"), env=env)
    assert r.returncode == 1 and "Traceback" in r.stderr and "none" in r.stderr
    r = _cli("run", "--ir", str(tmp_path / "none"), env={"REPQ_HW_DEBUG": "1"})
    assert "Traceback" in r.stderr


# ---------------------------------------------------------------------------------------------------
# --fast-float (issue #11): global, and per subcommand; acts before torch initialises

FLOAT_PROBE = """
import json, os, sys
from repq_hw.cli import main
rc = main({argv!r})
import torch
from repq_hw import float_env
print(json.dumps({{"rc": rc, "requested": float_env.fast_float_requested(),
                  "pins": {{k: os.environ.get(k) for k in float_env.PINNED_ENV}},
                  "cap": torch.backends.cpu.get_cpu_capability(), "mode": float_env.record()["mode"],
                  "reproducible": float_env.record()["reproducible"]}}))
"""


def _float_probe(argv):
    env = {k: v for k, v in os.environ.items()
           if k not in ("REPQ_HW_FAST_FLOAT", "REPQ_HW_DEBUG", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA",
                        "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR")}
    r = subprocess.run([sys.executable, "-c", FLOAT_PROBE.format(argv=argv)], check=False,
                       capture_output=True, text=True, cwd=REPO, env=env)
    assert r.returncode == 0, r.stderr
    assert "already initialised" not in r.stderr, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("argv,rc", [
    (["--fast-float", "models"], 0),
    (["--fast-float", "golden", "verify", "/nonexistent/set"], 1),  # verify's own "FAILED" status
    (["eval", "--w-bits", "8", "--model", "nope", "--fast-float"], 2),
    (["lower", "--calibrated", "/nonexistent/cal", "--out", "/nonexistent/out/ir", "--fast-float"], 2),
], ids=["global", "global-golden", "eval", "lower"])
def test_fast_float_unpins_before_torch(argv, rc):
    from repq_hw.float_env import PINNED_ENV

    got = _float_probe(argv)
    assert got["rc"] == rc
    assert got["requested"] is True and got["mode"] == "fast-float" and got["reproducible"] is False
    assert all(v is None for v in got["pins"].values()), got  # torch saw its own defaults
    assert set(got["pins"]) == set(PINNED_ENV)
    assert got["cap"]  # the native capability (AVX2 on an AVX2-only CPU either way)


def test_without_fast_float_the_pins_stay():
    from repq_hw.float_env import PINNED_ENV

    got = _float_probe(["models"])
    assert got["rc"] == 0 and got["requested"] is False and got["mode"] == "reproducible-avx2"
    assert got["pins"] == PINNED_ENV and got["cap"] == "AVX2"


def test_fast_float_in_every_subcommand_help():
    p = cli.build_parser()
    import argparse

    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("calibrate", "eval", "lower", "ablation", "demo", "cost"):
        assert "--fast-float" in sub.choices[name].format_help(), name
    assert "reproducible: false" in p.format_help()
