"""Sweep files and cluster options are checked before any work, with errors naming the file, key or option."""

import pytest

from repq_hw.cli import main
from repq_hw.errors import InputError
from repq_hw.sweep import SweepRow, load_spec, markdown_text


def _spec(tmp_path, text, suffix=".toml"):
    p = tmp_path / f"s{suffix}"
    p.write_text(text)
    return p


def test_toml_and_yaml_give_the_same_spec(tmp_path):
    t = load_spec(_spec(tmp_path, 'models = ["vit_digits"]\nbits = [8, 4]\nmethods = ["repq", "naive"]\n'))
    y = load_spec(_spec(tmp_path, "models: [vit_digits]\nbits: [8, 4]\nmethods: [repq, naive]\n", ".yaml"))
    assert t == y and t.bits == (8, 4) and t.integer and t.calib_size == 32


@pytest.mark.parametrize("text, match", [
    ('models = ["vit_digits"]\nbits = [4]\nbogus = 1\n', "unknown key.*bogus"),
    ('models = ["nope"]\nbits = [4]\n', "unknown model.*nope"),
    ('models = ["vit_digits"]\nbits = [9]\n', "'bits' must be in 2..8"),
    ('models = ["vit_digits"]\nbits = [4, 4]\n', "lists a value twice"),
    ('models = ["vit_digits"]\nbits = [4]\nmethods = ["gptq"]\n', "unknown method.*gptq"),
    ('models = ["vit_digits"]\nbits = [4]\ncalib_size = 0\n', "'calib_size' must be an integer >= 1"),
    ('models = ["vit_digits"]\nbits = [4]\n[checkpoints]\nvit_digits = "/no/such.safetensors"\n',
     "no such file"),
    ('models = ["vit_digits"\n', "cannot parse"),
    ('bits = [4]\n', "'models' must be a non-empty list"),
])
def test_bad_sweep_files_are_refused(tmp_path, text, match):
    p = _spec(tmp_path, text)
    with pytest.raises(InputError, match=match) as e:
        load_spec(p)
    assert str(p) in str(e.value)


def test_markdown_table_marks_missing_values():
    md = markdown_text([SweepRow("m", "naive", 4, 90.0, 80.0, None, 10, 0.5, "integer: no")])
    assert "| m | naive | W4A4 | 90.00 | 80.00 | - | 10 | 0.50 | integer: no |" in md


@pytest.mark.parametrize("argv, match", [
    (["eval", "--integer", "--no-cluster", "--workers", "2"], "--no-cluster runs in this process"),
    (["golden", "--model", "vit_digits", "--bits", "4", "--scheduler", "h:1"], "expected an address such as"),
    (["ablation", "--scheduler", "tcp://h:1", "--workers", "2"], "--workers sizes the local cluster"),
])
def test_conflicting_cluster_options_exit_2(tmp_path, capsys, argv, match):
    import re

    if argv[0] == "golden":
        argv = [*argv, "--out", str(tmp_path / "gs")]
    assert main(argv) == 2
    assert re.search(match, capsys.readouterr().err)
