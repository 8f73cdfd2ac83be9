"""One strict JSON reader for every artefact (graph.json, quant.json, manifest.json, provenance.json).

Strict means: UTF-8 only; no NaN / Infinity / -Infinity; no number that overflows a float; no duplicate
keys in an object; a size cap; and every failure (missing, unreadable, truncated, malformed, nested too
deeply, an integer literal longer than Python parses) raised as ONE error type whose message starts with
the file's path.  Standard library only, so the integer side can use it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from repq_hw.errors import InputError


class _Bad(Exception):
    """Raised from the json hooks; turned into the caller's error type with the path in front."""


def _pairs(items):
    d = {}
    for k, v in items:
        if k in d:
            raise _Bad(f"duplicate keys in one object: {k!r}")
        d[k] = v
    return d


def _constant(name):
    raise _Bad(f"{name} is not a JSON number (only finite numbers are allowed)")


def _finite(text):
    v = float(text)
    if not math.isfinite(v):
        raise _Bad(f"the number {text[:40]} overflows a float (only finite numbers are allowed)")
    return v


def read_strict_json(path: str | Path, *, max_bytes: int, error: type[Exception] = InputError,
                     what: str | None = None, want_object: bool = True):
    """Parse ``path`` strictly; raise ``error`` (an InputError subclass) with ``"<what or path>: ..."``.

    ``max_bytes``: a larger file is refused before it is read. ``want_object``: the top level must be an
    object (dict)."""
    path = Path(path)
    label = f"{what}: {path}" if what else str(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise error(f"{label}: no such file") from None
    except OSError as e:
        raise error(f"{label}: cannot be read: {e.strerror or e}") from None
    if size > max_bytes:
        raise error(f"{label}: {size} bytes, more than the {max_bytes} such a file may have")
    try:
        text = path.read_bytes().decode("utf-8")
        doc = json.loads(text, object_pairs_hook=_pairs, parse_constant=_constant, parse_float=_finite)
    except _Bad as e:
        raise error(f"{label}: {e}") from None
    except OSError as e:
        raise error(f"{label}: cannot be read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise error(f"{label}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise error(f"{label}: not valid JSON (truncated or malformed?): {e.msg} at line {e.lineno} "
                    f"column {e.colno}") from None
    except RecursionError:
        raise error(f"{label}: not valid JSON: nested too deeply") from None
    except ValueError as e:  # e.g. an integer literal longer than Python's int-parsing limit
        raise error(f"{label}: not valid JSON: unreadable value ({e})") from None
    if want_object and not isinstance(doc, dict):
        raise error(f"{label}: the top level must be a JSON object, got {type(doc).__name__}")
    return doc
