"""One exception type for everything a user can get wrong, and the one-line form of any error.

The CLI prints a LaserkitError as a single line and exits with its ``exit_code`` (2 for bad
input, 1 for a write the file system refused); anything else is a bug.
"""

from __future__ import annotations


class LaserkitError(Exception):
    """A user-facing error: the message says what was wrong and what is accepted."""

    exit_code = 2  # the CLI's status: bad input, like click's usage errors


class WriteFailed(LaserkitError):
    """The file system refused a write (full disk, quota, read-only): not the user's input."""

    exit_code = 1


def first_line(e: BaseException, limit: int = 300) -> str:
    """The first non-empty line of an exception's message (its type name when it has none).

    Library errors (safetensors, transformers, yaml) carry multi-line messages or whole dumps;
    a user-facing error quotes only their first line, shortened to ``limit`` characters.
    """
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    text = lines[0] if lines else type(e).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
