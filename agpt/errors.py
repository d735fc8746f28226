"""What the CLI treats as the user's mistake: one line on stderr, exit status 2."""

from __future__ import annotations


class UsageError(ValueError):
    """A mistake of the user's (a missing file, an unknown name, a bad option value).

    The message names the problem and what to do; the CLI prints it as one line, no traceback.
    """
