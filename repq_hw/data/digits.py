"""scikit-learn's bundled handwritten digits as a small, real, offline image data set.

Pretrained ImageNet weights are not available to the project, so the reference models
(``repq_hw.models.digits_configs``) are trained on the 1,797 8x8 handwritten digits that ship
with scikit-learn (``sklearn.datasets.load_digits``; pixel values are integers 0..16).

Split (fixed, deterministic, documented):
    ``sklearn.model_selection.train_test_split(X, y, test_size=0.2, random_state=0, stratify=y)``
    over the data set in its bundled order, giving 1437 train and 360 test images. Every class
    0..9 appears in both splits. The split is computed on indices, so the two splits are
    disjoint by index.

Host-side preprocessing (applied identically to both splits, no augmentation here):
    1. ``x = pixel / 16``                         -> float32 in [0, 1], shape [N, 1, 8, 8];
    2. ``F.interpolate(x, size=(img_size, img_size), mode="bilinear", align_corners=False)``
       (bilinear interpolation is a convex combination, so values stay in [0, 1]);
    3. ``x = (x - DIGITS_MEAN) / DIGITS_STD`` with mean 0.5, std 0.5 -> values in [-1, 1].

Calibration batch:
    ``calibration_batch(n, seed)`` takes the first ``n`` entries of a ``torch.randperm`` of the
    TRAIN split drawn from a ``torch.Generator`` seeded with ``seed``, mirroring the reference
    RepQ-ViT code, which takes its calibration batch from the shuffled train loader.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "DIGITS_IMG_SIZE",
    "DIGITS_MEAN",
    "DIGITS_NUM_CLASSES",
    "DIGITS_PREPROCESSING_DESCRIPTION",
    "DIGITS_SPLIT_DESCRIPTION",
    "DIGITS_STD",
    "SPLITS",
    "calibration_batch",
    "load_all_digits",
    "load_digits_split",
]

DIGITS_IMG_SIZE: int = 32
DIGITS_MEAN: tuple[float, ...] = (0.5,)
DIGITS_STD: tuple[float, ...] = (0.5,)
DIGITS_NUM_CLASSES: int = 10
SPLITS: tuple[str, ...] = ("train", "test")

# Parameters of the fixed split; changing them changes every recorded accuracy.
_TEST_SIZE = 0.2
_SPLIT_RANDOM_STATE = 0

DIGITS_SPLIT_DESCRIPTION: str = (
    "sklearn.datasets.load_digits (1797 images, 8x8, 0..16); "
    "sklearn.model_selection.train_test_split(X, y, test_size=0.2, random_state=0, stratify=y) "
    "-> 1437 train / 360 test"
)
DIGITS_PREPROCESSING_DESCRIPTION: str = (
    "x = pixel / 16 (float32, [0,1]); "
    "F.interpolate(x, size=(img_size, img_size), mode='bilinear', align_corners=False); "
    "x = (x - 0.5) / 0.5 (values in [-1,1])"
)


@lru_cache(maxsize=1)
def _split_indices() -> tuple[np.ndarray, np.ndarray]:
    """Return (train_idx, test_idx) into the bundled data set; fixed by the module contract."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    y = load_digits().target
    idx = np.arange(len(y))
    train_idx, test_idx = train_test_split(
        idx, test_size=_TEST_SIZE, random_state=_SPLIT_RANDOM_STATE, stratify=y
    )
    return np.asarray(train_idx, dtype=np.int64), np.asarray(test_idx, dtype=np.int64)


@lru_cache(maxsize=1)
def _raw_digits() -> tuple[np.ndarray, np.ndarray]:
    """Return (images uint8 [1797, 8, 8] in 0..16, labels int64 [1797]) in bundled order."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(np.uint8), d.target.astype(np.int64)


def split_indices(split: str) -> np.ndarray:
    """Indices (into the bundled 1,797-image order) of one split.

    Args:
        split: ``"train"`` or ``"test"``.

    Returns:
        A fresh int64 array of indices.
    """
    _check_split(split)
    train_idx, test_idx = _split_indices()
    return (train_idx if split == "train" else test_idx).copy()


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS!r}, got split={split!r}")


def preprocess(pixels: torch.Tensor, img_size: int = DIGITS_IMG_SIZE) -> torch.Tensor:
    """Apply the documented host-side preprocessing to raw digit pixels.

    Args:
        pixels: raw pixels in 0..16, shape [N, 8, 8] or [N, 1, 8, 8], any real/int dtype.
        img_size: output side length (positive int).

    Returns:
        float32 tensor [N, 1, img_size, img_size] with values in [-1, 1].
    """
    if img_size <= 0:
        raise ValueError(f"img_size must be a positive int, got img_size={img_size!r}")
    x = pixels.to(torch.float32)
    if x.dim() == 3:
        x = x.unsqueeze(1)
    x = x / 16.0
    if x.shape[-1] != img_size or x.shape[-2] != img_size:
        x = F.interpolate(x, size=(img_size, img_size), mode="bilinear", align_corners=False)
    mean = torch.tensor(DIGITS_MEAN, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(DIGITS_STD, dtype=torch.float32).view(1, -1, 1, 1)
    return ((x - mean) / std).contiguous()


def load_digits_split(split: str, img_size: int = DIGITS_IMG_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """Load one split of the digits, preprocessed as documented in the module docstring.

    Args:
        split: ``"train"`` (1437 images) or ``"test"`` (360 images).
        img_size: output side length; 32 for the bundled reference models.

    Returns:
        ``(images, labels)``: float32 [N, 1, img_size, img_size] in [-1, 1] and int64 [N] in 0..9.

    Raises:
        ValueError: if ``split`` is not ``"train"`` or ``"test"``.
    """
    _check_split(split)
    images, labels = _raw_digits()
    idx = split_indices(split)
    x = preprocess(torch.from_numpy(images[idx]), img_size)
    y = torch.from_numpy(labels[idx].copy())
    return x, y


def load_all_digits(img_size: int = DIGITS_IMG_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits, preprocessed: the test split (360), then the train split (1,437). For measuring
    agreement between two implementations of one model (integer vs fake-quant), where the number of images
    matters and held-out images do not; accuracy figures use the test split."""
    xt, yt = load_digits_split("test", img_size)
    xr, yr = load_digits_split("train", img_size)
    return torch.cat([xt, xr]), torch.cat([yt, yr])


def calibration_batch(n: int = 32, seed: int = 0, img_size: int = DIGITS_IMG_SIZE) -> torch.Tensor:
    """A deterministic calibration batch of ``n`` train images.

    The first ``n`` entries of ``torch.randperm(1437, generator=torch.Generator().manual_seed(seed))``
    select the images from the TRAIN split (never the test split).

    Args:
        n: number of images, 1..1437.
        seed: seed of the permutation.
        img_size: output side length.

    Returns:
        float32 tensor [n, 1, img_size, img_size] in [-1, 1].
    """
    x, _ = load_digits_split("train", img_size)
    if not 1 <= n <= x.shape[0]:
        raise ValueError(f"n must be in [1, {x.shape[0]}], got n={n!r}")
    g = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(x.shape[0], generator=g)
    return x[perm[:n]].clone()
