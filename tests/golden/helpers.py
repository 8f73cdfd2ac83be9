"""Shared by tests/golden and tests/sim: a tiny lowered IR (test_deit, W4A4, random weights) saved once
per session, its input codes, and golden sets written from it."""

from __future__ import annotations

import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np

from repq_hw.golden.model import COMMITTED_SETS, GOLDEN_ROOT

_TMP = Path(tempfile.mkdtemp(prefix="repq_golden_tests_"))


@functools.cache
def tiny_ir(bits: int = 4) -> tuple[Path, np.ndarray]:
    """(IR directory, input codes [2, 3, 32, 32]) of the tiny DeiT, calibrated once per session."""
    from repq_hw.ir.graph import save_graph
    from repq_hw.pipeline import host_input_codes
    from tests.conftest import lowered

    _, g, x = lowered("test_deit", bits)
    d = _TMP / f"ir_w{bits}"
    save_graph(g, d)
    return d, host_input_codes(g, x[:2].numpy())


@functools.cache
def tiny_graph(bits: int = 4):
    from repq_hw.ir.graph import load_graph

    d, codes = tiny_ir(bits)
    return load_graph(d), codes


@functools.cache
def tiny_set(bits: int = 4) -> Path:
    """A golden set of the tiny DeiT with every op and every format (do not modify: copy first)."""
    from repq_hw.golden import Formats, write_golden_set

    g, codes = tiny_graph(bits)
    return write_golden_set(g, codes, _TMP / f"tiny_w{bits}", model="test_deit", seed=0, progress=False,
                            formats=Formats(tensors=("npy", "hex", "bin"), constants=("npy", "hex", "bin", "coe", "mif")))


def copy_set(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def committed_paths() -> list[Path]:
    return [GOLDEN_ROOT / s.name for s in COMMITTED_SETS if (GOLDEN_ROOT / s.name / "manifest.json").is_file()]


def bundled_weights_present() -> bool:
    from repq_hw.models.registry import bundled_weights

    return bundled_weights("vit_digits").is_file()
