"""CLI errors and the ImageFolder path (with a generated folder of real PNG files)."""

import numpy as np
import pytest
import torch

from repq_hw.cli import main
from repq_hw.data.imagefolder import ImageFolderDataset, list_image_folder


def test_bits_out_of_range(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--model", "test_deit", "--w-bits", "9"])
    assert "bits must be an integer in 2..8" in capsys.readouterr().err


def test_unknown_model(capsys):
    assert main(["eval", "--model", "nope", "--data", "x"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'nope'" in err and "vit_digits" in err


def test_missing_and_empty_image_folder(tmp_path, capsys):
    assert main(["eval", "--model", "test_deit", "--data", str(tmp_path / "none")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty" / "cls0").mkdir(parents=True)
    assert main(["eval", "--model", "test_deit", "--data", str(tmp_path / "empty")]) == 2
    assert "contains no images" in capsys.readouterr().err
    with pytest.raises(ValueError, match="no class sub-folders"):
        list_image_folder(tmp_path / "empty" / "cls0")


def write_folder(root, n_per_class=3, classes=("a", "b")):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(root / c / f"{i}.png")


def test_undecodable_image_is_named(tmp_path):
    write_folder(tmp_path)
    (tmp_path / "a" / "broken.png").write_bytes(b"\x89PNG not really")
    ds = ImageFolderDataset(tmp_path, transform=lambda im: im)
    idx = [i for i, (p, _) in enumerate(ds.samples) if p.name == "broken.png"][0]
    with pytest.raises(ValueError, match="broken.png"):
        ds[idx]


def test_eval_on_image_folder_with_timm_transform(tmp_path, capsys):
    write_folder(tmp_path, n_per_class=4)
    rc = main(["eval", "--model", "test_deit", "--data", str(tmp_path), "--calib-size", "4", "--w-bits", "8",
               "--a-bits", "8"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "float" in out and "fake-quant" in out and "n=8" in out


def test_calibrate_writes_loadable_model(tmp_path, capsys):
    write_folder(tmp_path / "data", n_per_class=2)
    out = tmp_path / "cal"
    assert main(["calibrate", "--model", "test_swin", "--data", str(tmp_path / "data"), "--calib-size", "4",
                 "--out", str(out), "--no-eval"]) == 0
    from repq_hw.quant.model import load_calibrated

    q, cfg, meta = load_calibrated(out)
    assert cfg.label == "W4A4" and meta["calibration"]["n"] == 4
    with torch.no_grad():
        assert torch.isfinite(q(torch.randn(1, 3, 32, 32))).all()
