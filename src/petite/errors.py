"""The one exception type for bad user input.

Anything raised as :class:`UserError` is the user's to fix (a missing file, a
wrong shape, a bad option): the CLI prints its message on one line to stderr
and exits with status 2.  Every other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """Bad input from the user; the message names the file and the problem."""

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)


def user_error_in(error: BaseException) -> UserError | None:
    """The :class:`UserError` behind ``error``, if any: libraries such as MONAI wrap exceptions raised
    inside their transforms (``RuntimeError("applying transform ...")``), and the user's problem must
    still reach them as one line."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, UserError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
