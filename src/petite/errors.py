"""The one exception type for bad user input.

Anything raised as :class:`UserError` is the user's to fix (a missing file, a
wrong shape, a bad option): the CLI prints its message on one line to stderr
and exits with status 2.  So does an :class:`OSError` of a full disk, a quota
or an unwritable output (:func:`storage_problem`).  Every other exception is a
bug and keeps its traceback.
"""

from __future__ import annotations

import errno
from pathlib import Path

#: OS errors that are the user's to fix (free some space, fix permissions), not bugs: one line, no traceback.
STORAGE_ERRORS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
}


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


def storage_problem(err: BaseException) -> str | None:
    """``"<path>: no space left on device"`` (and the like) for a storage :data:`STORAGE_ERRORS` error, else None."""
    if not isinstance(err, OSError):
        return None
    reason = STORAGE_ERRORS.get(err.errno)  # type: ignore[arg-type]
    if reason is None:
        return None
    return f"{err.filename}: {reason}" if err.filename else reason
