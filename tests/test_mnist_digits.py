"""The second real evaluation set: 5,000 MNIST digits converted to the scikit-learn digits format."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from repq_hw.data.digits import calibration_batch, load_digits_split, preprocess
from repq_hw.data.mnist import (
    MNIST_NUM_IMAGES,
    MNIST_THRESHOLD,
    _raw_mnist,
    load_digits_and_mnist,
    load_mnist_as_digits,
    mnist_to_digits_pixels,
)


def test_conversion_by_hand():
    img = np.zeros((3, 28, 28))
    img[0] = 255  # all on: the 2-pixel pad leaves corner blocks 2x2 = 4, edge blocks 2x4 = 8, inner 16
    img[1, 0, 0] = MNIST_THRESHOLD  # on: lands at (2, 2) of the 32x32 bitmap, block (0, 0)
    img[1, 27, 27] = MNIST_THRESHOLD - 1  # off
    img[2, 2:6, 2:6] = 200  # padded rows/cols 4..7: exactly block (1, 1)
    out = mnist_to_digits_pixels(img)
    assert out.dtype == np.uint8 and out.shape == (3, 8, 8)
    full = np.full((8, 8), 16)
    full[[0, -1], :] = 8
    full[:, [0, -1]] = 8
    full[[0, 0, -1, -1], [0, -1, 0, -1]] = 4
    assert np.array_equal(out[0], full)
    assert out[1].sum() == 1 and out[1, 0, 0] == 1
    assert out[2].sum() == 16 and out[2, 1, 1] == 16
    # flat rows of 784 are the same images
    assert np.array_equal(mnist_to_digits_pixels(img.reshape(3, 784)), out)
    with pytest.raises(ValueError, match="shape"):
        mnist_to_digits_pixels(np.zeros((2, 32, 32)))


@pytest.fixture(scope="module")
def mnist() -> tuple[torch.Tensor, torch.Tensor]:
    return load_mnist_as_digits()


def test_mnist_as_digits(mnist):
    x, y = mnist
    assert x.shape == (MNIST_NUM_IMAGES, 1, 32, 32) and x.dtype == torch.float32
    assert y.shape == (MNIST_NUM_IMAGES,) and y.dtype == torch.int64
    assert np.array_equal(np.bincount(y.numpy()), [500] * 10)
    assert float(x.min()) == -1.0 and float(x.max()) <= 1.0
    # exactly the digits preprocessing of the converted 8x8 pixels
    grey, labels = _raw_mnist()
    pixels = mnist_to_digits_pixels(grey)
    assert pixels.max() <= 16
    assert torch.equal(x, preprocess(torch.from_numpy(pixels)))
    assert np.array_equal(labels, y.numpy())
    # native size: (pixel / 16 - 0.5) / 0.5, as for the digits
    x8, _ = load_mnist_as_digits(img_size=8)
    assert torch.equal(x8[:, 0], torch.from_numpy(pixels.astype(np.float32)) / 8 - 1)


def test_union_is_digits_test_then_mnist(mnist):
    x, y = load_digits_and_mnist()
    xd, yd = load_digits_split("test")
    assert x.shape[0] == 360 + MNIST_NUM_IMAGES
    assert torch.equal(x[:360], xd) and torch.equal(y[:360], yd)
    assert torch.equal(x[360:], mnist[0]) and torch.equal(y[360:], mnist[1])


@pytest.mark.parametrize("data,n", [("digits", 360), ("mnist-digits", 5000), ("digits+mnist", 5360)])
def test_pipeline_data_names(data, n):
    from repq_hw.models.registry import create_model
    from repq_hw.pipeline import calibration_images, eval_batches

    m = create_model("vit_digits")
    batches, nb = eval_batches(m, "vit_digits", data)
    assert sum(len(b[1]) for b in batches) == n and nb == (n + 99) // 100
    limited, _ = eval_batches(m, "vit_digits", data, limit=7)
    assert sum(len(b[1]) for b in limited) == 7
    # evaluation-only sets never calibrate: the batch is the digits train one
    assert torch.equal(calibration_images(m, "vit_digits", data, 8, seed=1), calibration_batch(8, seed=1))
