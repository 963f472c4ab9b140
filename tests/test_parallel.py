"""petite.parallel: a worker never outlives the process that started it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# Becomes a child subreaper (as `systemd --user`, tini or a container's init can be), runs the
# parent script, then reaps whatever the parent left behind until nothing is left.
_SUBREAPER = """
import ctypes, os, subprocess, sys, time
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
subprocess.run([sys.executable, *sys.argv[1:]])
deadline = time.time() + 60
while time.time() < deadline:
    try:
        pid, _ = os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        break
    if pid == 0:
        time.sleep(0.05)
"""

# Starts a pool, gives it a job and dies by SIGKILL while the worker is still starting up
# (the worker re-imports this file as __mp_main__ and sleeps there first).
_PARENT = """
import os, signal, sys, time
if __name__ == "__mp_main__":
    time.sleep(1.5)
if __name__ == "__main__":
    from petite.atomic import write_text
    from petite.parallel import WorkerPool
    pool = WorkerPool(2)
    pool.submit(write_text, sys.argv[1], "a worker outlived its parent")
    time.sleep(0.3)
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and subreapers are Linux")
def test_worker_whose_parent_died_during_its_start_exits_under_a_subreaper(tmp_path: Path) -> None:
    parent = tmp_path / "parent.py"
    parent.write_text(_PARENT)
    survivor = tmp_path / "survivor.txt"
    subprocess.run([sys.executable, "-c", _SUBREAPER, str(parent), str(survivor)], timeout=120, check=True)
    # The orphan was adopted by the subreaper, not pid 1; it must still notice and exit before its job.
    assert not survivor.exists()
