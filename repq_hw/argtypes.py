"""argparse types for CLI numbers and paths: each rejects bad values at parse time with a message naming
the argument's value and what was expected (argparse adds the option name)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def _int(s: str) -> int:
    try:
        return int(s, 10)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected an integer, got {s!r}") from None


def positive_int(s: str) -> int:
    """An integer >= 1 (counts such as --limit, --images, --calib-size)."""
    v = _int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {v}")
    return v


def nonneg_int(s: str) -> int:
    """An integer >= 0 (seeds, --show)."""
    v = _int(s)
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {v}")
    return v


def bits(s: str) -> int:
    """One quantization bit width, as accepted by the quantizers."""
    from repq_hw.quant.quantizers import check_bits

    v = _int(s)
    try:
        return check_bits(v, "bits")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def bits_list(s: str) -> tuple[int, ...]:
    """Comma-separated bit widths, e.g. ``8,6,4``: no empty items, no duplicates."""
    items = [x.strip() for x in str(s).split(",")]
    if not items or any(x == "" for x in items):
        raise argparse.ArgumentTypeError(f"expected comma-separated bit widths such as 8,6,4, got {s!r}")
    out = tuple(bits(x) for x in items)
    if len(set(out)) != len(out):
        raise argparse.ArgumentTypeError(f"bit widths repeat in {s!r}")
    return out


def check_writable_dir(path: str | os.PathLike, what: str = "--out") -> Path:
    """Fail before any work if ``path`` cannot become a writable directory (it may not exist yet).

    Raises ``InputError`` naming ``what`` and the path."""
    from repq_hw.errors import InputError

    p = Path(path)
    if p.exists() and not p.is_dir():
        raise InputError(f"{what} {str(p)!r}: exists and is not a directory")
    probe = p
    while not probe.exists():  # the nearest existing ancestor decides whether we can create it
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"{what} {str(p)!r}: {str(probe)!r} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"{what} {str(p)!r}: {str(probe)!r} is not writable")
    return p
