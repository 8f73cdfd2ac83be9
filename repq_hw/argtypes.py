"""argparse types for CLI numbers and paths: each rejects bad values at parse time with a message naming
the argument's value and what was expected (argparse adds the option name)."""

from __future__ import annotations

import argparse
import math
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


# The quantizers' bit-width range (repq_hw.quant.quantizers.MIN_BITS / MAX_BITS; a test keeps them equal).
# Repeated here so that parsing --bits never imports torch: ``--fast-float`` must act before torch loads.
MIN_BITS, MAX_BITS = 2, 8


def positive_float(s: str) -> float:
    """A finite number > 0 (capacities such as --sram-kb)."""
    try:
        v = float(s)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {s!r}")
    return v


def seed(s: str) -> int:
    """A random seed: an integer in 0..2**32 - 1 (the range every generator used here accepts)."""
    v = _int(s)
    if not 0 <= v < 2**32:
        raise argparse.ArgumentTypeError(f"expected an integer in 0..{2**32 - 1}, got {v}")
    return v


def names_list(s: str) -> tuple[str, ...]:
    """Comma-separated names (e.g. ``--models a,b``): no empty items, no duplicates."""
    items = tuple(x.strip() for x in str(s).split(","))
    if any(x == "" for x in items):
        raise argparse.ArgumentTypeError(f"expected comma-separated names such as a,b, got {s!r}")
    if len(set(items)) != len(items):
        raise argparse.ArgumentTypeError(f"names repeat in {s!r}")
    return items


def bits(s: str) -> int:
    """One quantization bit width, as accepted by the quantizers (2..8). Does not import torch."""
    v = _int(s)
    if not MIN_BITS <= v <= MAX_BITS:
        raise argparse.ArgumentTypeError(f"bits must be an integer in {MIN_BITS}..{MAX_BITS}, got {v!r}")
    return v


def bits_list(s: str) -> tuple[int, ...]:
    """Comma-separated bit widths, e.g. ``8,6,4``: no empty items, no duplicates."""
    items = [x.strip() for x in str(s).split(",")]
    if not items or any(x == "" for x in items):
        raise argparse.ArgumentTypeError(f"expected comma-separated bit widths such as 8,6,4, got {s!r}")
    out = tuple(bits(x) for x in items)
    if len(set(out)) != len(out):
        raise argparse.ArgumentTypeError(f"bit widths repeat in {s!r}")
    return out


def _not_creatable(p: Path) -> str | None:
    """Why directory ``p`` (existing or not) cannot be created / written, or None if it can."""
    probe = p
    while not probe.exists():  # the nearest existing ancestor decides whether we can create it
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        return f"{str(probe)!r} is not a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{str(probe)!r} is not writable"
    return None


def check_writable_dir(path: str | os.PathLike, what: str = "--out") -> Path:
    """Fail before any work if ``path`` cannot become a writable directory (it may not exist yet).

    Raises ``InputError`` naming ``what`` and the path."""
    from repq_hw.errors import InputError

    p = Path(path)
    if p.exists() and not p.is_dir():
        raise InputError(f"{what} {str(p)!r}: exists and is not a directory")
    why = _not_creatable(p)
    if why:
        raise InputError(f"{what} {str(p)!r}: {why}")
    return p


def check_writable_file(path: str | os.PathLike, what: str, suffixes: tuple[str, ...] = ()) -> Path:
    """Fail before any work if ``path`` cannot be written as a file: it is a directory, its folder cannot be
    created or written, or (with ``suffixes``) its extension is not one of them. Raises ``InputError``."""
    from repq_hw.errors import InputError

    p = Path(path)
    if p.is_dir():
        raise InputError(f"{what} {str(p)!r}: is a directory, expected a file name")
    if suffixes and p.suffix.lower() not in suffixes:
        raise InputError(f"{what} {str(p)!r}: expected a file name ending in {' or '.join(suffixes)}")
    if p.exists() and not os.access(p, os.W_OK):
        raise InputError(f"{what} {str(p)!r}: exists and is not writable")
    why = _not_creatable(p.parent)
    if why:
        raise InputError(f"{what} {str(p)!r}: {why}")
    return p


def load_npy(path: str | os.PathLike, what: str = "--npy"):
    """Read one array from a ``.npy`` file without unpickling anything (``allow_pickle=False``).

    Refuses, with an ``InputError`` naming ``what`` and the file: a missing file or a directory, a file
    that is not NPY (text, pickles), object arrays, structured dtypes, ``.npz`` archives and truncated
    files. Shape, dtype and value checks that depend on the consumer are the caller's."""
    import numpy as np

    from repq_hw.errors import InputError

    p = Path(path)
    name = f"{what} {str(p)!r}"
    if not p.exists():
        raise InputError(f"{name}: no such file")
    if not p.is_file():
        raise InputError(f"{name}: not a regular file")
    try:
        x = np.load(p, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise InputError(f"{name}: not an NPY array file (pickled data and object arrays are refused)") from None
        raise InputError(f"{name}: not a readable NPY file ({e})") from None
    except (EOFError, OSError) as e:
        raise InputError(f"{name}: not a readable NPY file ({e or 'empty or truncated'})") from None
    if not isinstance(x, np.ndarray):  # an .npz archive
        close = getattr(x, "close", None)
        if close:
            close()
        raise InputError(f"{name}: an .npz archive, expected a single array saved with numpy.save")
    if x.dtype.hasobject or x.dtype.names is not None or x.dtype.subdtype is not None:
        raise InputError(f"{name}: dtype {x.dtype} is not a plain numeric dtype")
    return x
