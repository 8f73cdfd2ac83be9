"""Model registry and checkpoint loading (safetensors and weights_only .pth), with clear errors."""

import pickle

import pytest
import torch
from safetensors.torch import save_file

from repq_hw.models.registry import TIMM_MODELS, create_model, load_checkpoint, supported_models


def test_unknown_model_lists_supported():
    with pytest.raises(ValueError, match="unknown model 'vit_nope'.*deit_small_patch16_224"):
        create_model("vit_nope")


def test_supported_list_has_paper_models_and_bundled():
    names = supported_models()
    for n in TIMM_MODELS + ("vit_digits", "swin_digits"):
        assert n in names


@pytest.mark.parametrize("suffix", [".safetensors", ".pth", ".bin"])
def test_checkpoint_round_trip(tmp_path, suffix):
    src = create_model("test_deit")
    path = tmp_path / f"w{suffix}"
    state = {k: v.contiguous() for k, v in src.state_dict().items()}
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"model": state} if suffix == ".pth" else state, path)
    dst = create_model("test_deit", checkpoint=path)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))


def test_checkpoint_mismatch_names_keys_and_shapes(tmp_path):
    state = dict(create_model("test_deit").state_dict())
    state.pop("head.weight")
    state["extra.weight"] = torch.zeros(1)
    state["pos_embed"] = torch.zeros(1, 3, 48)
    path = tmp_path / "bad.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    with pytest.raises(ValueError) as e:
        load_checkpoint(create_model("test_deit"), path)
    msg = str(e.value)
    assert "bad.safetensors" in msg and "head.weight" in msg and "extra.weight" in msg and "pos_embed" in msg


class NotATensor:
    pass


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"x": NotATensor()}, f)
    with pytest.raises(ValueError, match="weights_only=True"):
        create_model("test_deit", checkpoint=path)


def test_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_model("test_deit", checkpoint=tmp_path / "missing.safetensors")
    (tmp_path / "w.txt").write_text("x")
    with pytest.raises(ValueError, match="expected .safetensors"):
        create_model("test_deit", checkpoint=tmp_path / "w.txt")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="junk.safetensors"):
        create_model("test_deit", checkpoint=tmp_path / "junk.safetensors")
