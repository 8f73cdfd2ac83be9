"""Golden vectors for RTL verification (GitHub issue 4).

A golden set is a directory holding, for every selected op of an integer IR in execution order, its
input tensors, output tensors and integer constants, as ``.npy`` / ``.hex`` (``$readmemh``) / ``.bin``
(and ``.coe`` / ``.mif`` for constant ROMs), the IR itself (``ir/graph.json`` + ``ir/constants.npz``), a
schema-validated ``manifest.json`` and a ``provenance.json``. Format: ``docs/golden_format.md``.

Everything here is numpy-only, except :func:`write_for_model` / :func:`digits_inputs`, which import the
torch side lazily to calibrate a model or preprocess the digits images.
"""

from repq_hw.golden.model import (
    COMMITTED_SETS,
    SetComparison,
    compare_sets,
    digits_inputs,
    regenerate_committed,
    replay_hint,
    write_demo_golden,
    write_for_model,
)
from repq_hw.golden.reader import GoldenSet, manifest_schema, validate_manifest
from repq_hw.golden.verify import Mismatch, VerifyReport, verify_golden_set
from repq_hw.golden.writer import (
    Formats,
    GoldenError,
    Selection,
    build_set,
    ir_files,
    set_name,
    write_golden_set,
)

__all__ = [
    "COMMITTED_SETS",
    "Formats",
    "GoldenError",
    "GoldenSet",
    "Mismatch",
    "Selection",
    "SetComparison",
    "VerifyReport",
    "build_set",
    "compare_sets",
    "digits_inputs",
    "ir_files",
    "manifest_schema",
    "regenerate_committed",
    "replay_hint",
    "set_name",
    "validate_manifest",
    "verify_golden_set",
    "write_demo_golden",
    "write_for_model",
    "write_golden_set",
]
