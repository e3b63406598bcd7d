"""One exception type for everything a user can get wrong.

The CLI prints a LaserkitError as a single line and exits with status 2; anything else is a bug
and keeps its traceback.
"""


class LaserkitError(Exception):
    """A user-facing error: the message says what was wrong and what is accepted."""
