"""The one error type for bad user input.

Every artefact reader and argument check raises :class:`InputError` (or a subclass) with a message that
names the file, tensor, field or argument, what was expected and what was found.  The CLI prints such
errors as one line (``repq-hw: error: ...``, exit 2) and shows a traceback only with ``--debug``.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input: a file, tensor, field or CLI argument that is not what it must be.

    Subclasses ``ValueError`` so that callers who catch ``ValueError`` keep working.
    """
