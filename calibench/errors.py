"""The one exception type that the CLI turns into a clear message and exit code 2."""

from __future__ import annotations


class CalibenchError(Exception):
    """Bad input from the user: the message says what was wrong and what to do about it."""
