"""Shared fixtures: calibrated and lowered tiny models (cached per session)."""

import copy
import functools

import pytest

import repq_hw  # noqa: F401  (first: pins torch's CPU float paths before torch initialises)
import torch

from repq_hw.models.registry import create_model
from repq_hw.quant.model import QuantConfig, build_calibrated


@functools.lru_cache(maxsize=None)
def calibrated(name: str, bits: int, seed: int = 0):
    """(float model, calibrated model, cfg, calibration images) for a tiny random-weight config."""
    torch.manual_seed(seed)
    m = create_model(name)
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    cfg = QuantConfig(w_bits=bits, a_bits=bits)
    return m, build_calibrated(copy.deepcopy(m), x, cfg, progress=False), cfg, x


@functools.lru_cache(maxsize=None)
def lowered(name: str, bits: int):
    from repq_hw.lower.vit import lower_vit

    m, q, cfg, x = calibrated(name, bits)
    return q, lower_vit(q, cfg, x), x


@pytest.fixture
def numba_threads():
    import numba

    n = numba.get_num_threads()
    yield numba.set_num_threads
    numba.set_num_threads(n)
