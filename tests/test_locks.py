"""petite.locks: one writer per run folder, refused at once, released when the holder dies (even by kill -9)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from petite.errors import UserError
from petite.locks import LOCK_NAME, run_lock

# A process that takes the lock, says so, and holds it until stdin closes or it is killed.
_HOLDER = """
import sys
from petite.locks import run_lock
with run_lock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.read()
"""


@contextmanager
def holder(folder: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the lock of ``folder``."""
    process = subprocess.Popen([sys.executable, "-c", _HOLDER, str(folder)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "locked"
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def test_second_holder_is_refused_with_the_first_holders_pid(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    with holder(folder) as process:
        with pytest.raises(UserError) as err:
            with run_lock(folder):
                pytest.fail("two processes hold the same run folder")
        assert str(err.value) == f"{folder}: another petite process is writing this run folder (pid {process.pid})"
        # Refused again while it holds on: the refusal itself took nothing.
        with pytest.raises(UserError):
            with run_lock(folder):
                pass
        assert process.stdin is not None
        process.stdin.close()  # the holder leaves its `with` block normally
        process.wait(timeout=30)
    with run_lock(folder) as lock:
        assert lock == folder / LOCK_NAME and lock.read_text().strip() == str(os.getpid())


def test_lock_is_released_when_the_holder_is_killed(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    with holder(folder) as process:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        with run_lock(folder):  # no stale lock: the kernel dropped it with the process
            assert (folder / LOCK_NAME).is_file()


def test_lock_creates_the_folder_and_is_reentrant_in_one_process(tmp_path: Path) -> None:
    folder = tmp_path / "a" / "run"
    with run_lock(folder):
        assert folder.is_dir()
        # The sweep holds the lock and the engine it calls takes it again: not a second writer.
        with run_lock(folder):
            pass
        with run_lock(folder):
            pass
        # Still held after the nested blocks ended: another process is refused.
        probe = subprocess.run([sys.executable, "-c", _HOLDER, str(folder)], stdin=subprocess.DEVNULL,
                               capture_output=True, text=True, timeout=60)
        assert probe.returncode != 0 and "another petite process is writing this run folder" in probe.stderr
    # Released at the end of the outer block.
    with holder(folder):
        pass


def test_a_file_in_place_of_the_folder_is_a_user_error(tmp_path: Path) -> None:
    file = tmp_path / "run"
    file.write_text("x")
    with pytest.raises(UserError, match="not a folder"):
        with run_lock(file):
            pass
    assert file.read_text() == "x"

