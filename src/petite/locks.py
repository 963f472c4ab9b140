"""One writer per run folder: an advisory lock held for as long as a process writes the folder.

``with run_lock(folder): ...`` creates ``folder`` if needed and takes an
exclusive, non-blocking ``flock`` on ``folder/.lock`` (:data:`LOCK_NAME`).  A
second process asking for the same folder gets a :class:`~petite.errors.UserError`
naming the holder's pid at once instead of waiting or racing it.  The kernel
drops the lock when the holder's file descriptor closes, so a holder killed
with ``kill -9`` (or a pool worker killed with its parent, see
:func:`petite.parallel.die_with_parent`) never leaves a stale lock behind: the
pid written into the file is only a hint for the error message.

The lock file stays in the folder after release: deleting it would let a
process that opened the old file and one that creates a new file both "hold"
the lock.  Code that checks whether a folder is empty (or clears it) must
ignore :data:`LOCK_NAME`, and must not delete the folder while holding its lock
(a new ``.lock`` created in a recreated folder would be a different lock).

Locks are re-entrant within a process: the sweep takes the lock of a job's
folder and then calls the training engine, which takes the same lock again.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from petite.errors import UserError

#: Name of the lock file inside a locked folder; ignore it when checking whether a folder is empty.
LOCK_NAME = ".lock"

# (device, inode) of the lock files this process holds -> (owning pid, nesting depth). The pid guards
# against a forked child believing it holds its parent's locks.
_held: dict[tuple[int, int], tuple[int, int]] = {}
_held_guard = threading.Lock()


def lock_path(folder: str | Path) -> Path:
    """The lock file of ``folder``."""
    return Path(folder) / LOCK_NAME


def _holder(fd: int) -> str:
    """The pid recorded by the current holder, for the message (``unknown`` while it is being written)."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"


@contextmanager
def run_lock(folder: str | Path) -> Iterator[Path]:
    """Hold the exclusive lock of ``folder`` (created if missing) for the ``with`` block; yields the lock file.

    Raises:
        UserError: ``folder`` exists and is not a folder, or another process holds its lock
            ("another petite process is writing this run folder (pid N)").
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError("output exists and is not a folder", folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = lock_path(folder)
    # Not inherited by spawned processes (Python opens descriptors non-inheritable), so a worker
    # pool started inside the block does not keep the lock alive after this process ends.
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        stat = os.fstat(fd)
        key = (stat.st_dev, stat.st_ino)
        with _held_guard:
            owner, depth = _held.get(key, (None, 0))
            if owner == os.getpid():
                _held[key] = (owner, depth + 1)
                nested = True
            else:
                nested = False
        if nested:
            try:
                yield path
            finally:
                with _held_guard:
                    owner, depth = _held[key]
                    _held[key] = (owner, depth - 1)
                    if depth == 1:
                        del _held[key]
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise UserError(f"another petite process is writing this run folder (pid {_holder(fd)})",
                            folder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        with _held_guard:
            _held[key] = (os.getpid(), 1)
        try:
            yield path
        finally:
            with _held_guard:
                _held.pop(key, None)
    finally:
        os.close(fd)  # releases the flock (the kernel does the same when the process dies)


__all__ = ["LOCK_NAME", "lock_path", "run_lock"]
