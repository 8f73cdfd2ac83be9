"""Shared fixtures: calibrated and lowered tiny models (cached per session)."""

import copy
import functools
import os

import pytest

# The CLI's default is a local Dask cluster; the suite's many short commands run in-process (the same
# bits, tests/distributed); tests/distributed starts its clusters explicitly.
os.environ.setdefault("REPQ_HW_NO_CLUSTER", "1")

import repq_hw  # noqa: F401  (first: pins torch's CPU float paths before torch initialises)
import torch

from repq_hw.models.registry import create_model
from repq_hw.quant.model import QuantConfig, build_calibrated


@functools.lru_cache(maxsize=None)
def calibrated(name: str, bits: int, seed: int = 0):
    """(float model, calibrated model, cfg, calibration images) for a tiny random-weight config."""
    torch.manual_seed(seed)
    m = create_model(name)
    x = torch.randn(16, *image_shape(m), generator=torch.Generator().manual_seed(seed))
    cfg = QuantConfig(w_bits=bits, a_bits=bits)
    return m, build_calibrated(copy.deepcopy(m), x, cfg, progress=False), cfg, x


def image_shape(model) -> tuple[int, int, int]:
    """(C, H, W) of a timm model's input."""
    h, w = model.patch_embed.img_size
    return model.patch_embed.proj.in_channels, h, w


@functools.lru_cache(maxsize=None)
def lowered(name: str, bits: int):
    from repq_hw.lower import lower_model

    m, q, cfg, x = calibrated(name, bits)
    return q, lower_model(q, cfg, x), x


@pytest.fixture
def numba_threads():
    import numba

    n = numba.get_num_threads()
    yield numba.set_num_threads
    numba.set_num_threads(n)
