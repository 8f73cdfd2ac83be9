"""Tests of the bundled real data (scikit-learn digits) and the bundled reference models."""

from __future__ import annotations

import json

import pytest
import torch

from repq_hw.data.digits import (
    DIGITS_IMG_SIZE,
    calibration_batch,
    load_digits_split,
    split_indices,
)
from repq_hw.models.digits_configs import DIGITS_MODEL_CONFIGS, create_digits_model
from repq_hw.models.train_digits import EVAL_BATCH_SIZE, EVAL_NUM_THREADS, load_train_split, weights_paths

# the least float test top-1 (%) each bundled model must reach on its own test split
MIN_TEST_TOP1 = {"vit_digits": 96.0, "swin_digits": 96.0, "vit_mnist": 95.0}


@pytest.fixture(scope="module")
def splits() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {s: load_digits_split(s) for s in ("train", "test")}


def test_split_sizes_and_shapes(splits: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
    for split, n in (("train", 1437), ("test", 360)):
        x, y = splits[split]
        assert x.shape == (n, 1, DIGITS_IMG_SIZE, DIGITS_IMG_SIZE)
        assert x.dtype == torch.float32
        assert y.shape == (n,)
        assert y.dtype == torch.int64


def test_splits_disjoint_by_index() -> None:
    train_idx, test_idx = split_indices("train"), split_indices("test")
    assert len(set(train_idx.tolist())) == 1437
    assert len(set(test_idx.tolist())) == 360
    assert set(train_idx.tolist()).isdisjoint(test_idx.tolist())
    assert sorted(train_idx.tolist() + test_idx.tolist()) == list(range(1797))


def test_value_range_and_labels(splits: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
    for x, y in splits.values():
        assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
        assert float(x.min()) == -1.0  # blank background maps to -1
        assert set(y.tolist()) == set(range(10))


def test_other_img_size() -> None:
    x, _ = load_digits_split("test", img_size=8)
    assert x.shape == (360, 1, 8, 8)
    # At the native size the preprocessing is exactly (pixel / 16 - 0.5) / 0.5.
    assert torch.all((x + 1.0) * 8.0 == torch.round((x + 1.0) * 8.0))


@pytest.mark.parametrize("bad", ["val", "TRAIN", "", None])
def test_bad_split_raises(bad: object) -> None:
    with pytest.raises(ValueError, match="split"):
        load_digits_split(bad)  # type: ignore[arg-type]


def test_calibration_batch_deterministic(splits: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
    a = calibration_batch(32, seed=0)
    b = calibration_batch(32, seed=0)
    c = calibration_batch(32, seed=1)
    assert a.shape == (32, 1, DIGITS_IMG_SIZE, DIGITS_IMG_SIZE)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # Drawn from the train split.
    train_x = splits["train"][0].flatten(1)
    for img in a.flatten(1):
        assert bool((train_x == img).all(dim=1).any())


def test_unknown_model_name() -> None:
    with pytest.raises(ValueError, match="vit_digits"):
        create_digits_model("resnet_digits")


@pytest.mark.parametrize("name", sorted(DIGITS_MODEL_CONFIGS))
def test_bundled_weights_reproduce_accuracy(
    name: str, splits: dict[str, tuple[torch.Tensor, torch.Tensor]]
) -> None:
    from safetensors.torch import load_file

    st_path, json_path = weights_paths(name)
    assert st_path.is_file() and json_path.is_file(), f"missing bundled weights for {name}"
    meta = json.loads(json_path.read_text())
    assert meta["model"] == name
    assert meta["config"] == DIGITS_MODEL_CONFIGS[name][1]

    model = create_digits_model(name)
    model.load_state_dict(load_file(str(st_path)), strict=True)
    model.eval()

    x, y = load_train_split(name, "test")  # the model's own data set (digits_configs.MODEL_DATA)
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(EVAL_NUM_THREADS)
    try:
        correct = 0
        loss_sum = 0.0
        with torch.no_grad():
            for i in range(0, x.shape[0], EVAL_BATCH_SIZE):
                logits = model(x[i : i + EVAL_BATCH_SIZE])
                yb = y[i : i + EVAL_BATCH_SIZE]
                correct += int((logits.argmax(dim=1) == yb).sum())
                loss_sum += float(torch.nn.functional.cross_entropy(logits, yb, reduction="sum"))
    finally:
        torch.set_num_threads(prev_threads)
    top1 = 100.0 * correct / x.shape[0]
    assert top1 == meta["test_top1"]
    assert abs(loss_sum / x.shape[0] - meta["test_loss"]) < 1e-5
    assert top1 >= MIN_TEST_TOP1[name]
