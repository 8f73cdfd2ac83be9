"""`--reference`: the reference mode (z~ = mean(z)) and its refusals."""

import pytest

from repq_hw.cli import _cfg, build_parser, main


def _args(*extra):
    return build_parser().parse_args(["calibrate", "--model", "vit_digits", "--out", "x", *extra])


def test_reference_selects_the_mean_zero_point():
    assert _cfg(_args("--reference")).zero_point == "mean"
    assert _cfg(_args("--zero-point", "mean")).zero_point == "mean"
    assert _cfg(_args()).zero_point == "round"
    assert _cfg(_args("--reference", "--zero-point", "mean")).zero_point == "mean"


@pytest.mark.parametrize("extra,named", [(["--method", "naive"], "--method naive"),
                                         (["--no-reparam"], "--no-reparam"),
                                         (["--zero-point", "round"], "--zero-point round")])
def test_reference_refuses_what_the_reference_code_does_not_do(tmp_path, capsys, extra, named):
    rc = main(["calibrate", "--model", "vit_digits", "--reference", *extra, "--out", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert rc == 2 and named in err and "Traceback" not in err
    assert not (tmp_path / "c").exists()
