"""Worker processes: one pool for every part of petite that runs jobs side by side.

The simulators map one function over job tuples (:func:`run_jobs`); the sweep
schedules training runs with dependencies and the multi-modal demo trains its
models side by side (both through :class:`WorkerPool`).  Two rules hold for
every worker:

- processes are *spawned*, never forked: forking after torch or OpenMP started
  threads can deadlock;
- a worker dies with its parent: on Linux each worker asks the kernel for
  SIGKILL when the process that started it exits (``PR_SET_PDEATHSIG``), so a
  ``kill -9`` of ``petite sweep`` leaves no orphan still writing into a run
  folder; :meth:`WorkerPool.terminate` stops them on Ctrl-C or SIGTERM.

Why processes rather than threads: on 2 CPU cores two single-threaded trainings
side by side finish sooner than one after the other with two intra-op threads
each, and degrade gracefully when other jobs share the cores.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

Result = TypeVar("Result")

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int | None = None) -> None:
    """Ask the kernel to SIGKILL this process when its parent exits (Linux; a no-op elsewhere).

    ``parent`` is the pid of the process that started this one: if it already died (this
    process was adopted by init or by a subreaper such as ``systemd --user``), exit now.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - exotic libc
        return
    # The parent may have died while this process was starting, before prctl took effect. The
    # adopter is pid 1 only without a subreaper, hence the comparison with the known parent.
    orphaned = (os.getppid() != parent) if parent is not None else (os.getppid() == 1)
    if orphaned:
        os._exit(1)


def _init_worker(parent: int, threads: int | None, quiet: bool, initializer: Callable[[], None] | None) -> None:
    die_with_parent(parent)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    if quiet:
        logging.basicConfig(level=logging.WARNING)
        logging.getLogger("petite").setLevel(logging.WARNING)
    if initializer is not None:
        initializer()


def threads_per_worker(workers: int) -> int:
    """Intra-op threads for each of ``workers`` processes sharing this machine's cores."""
    return max(1, (os.cpu_count() or 1) // max(workers, 1))


class WorkerPool:
    """``workers`` spawned processes, or this process when ``workers == 1``.

    ``submit`` returns a :class:`concurrent.futures.Future` either way (in-process
    jobs run at once and hold their result or exception).  ``threads`` sets
    torch's intra-op threads in each worker; ``quiet`` lowers petite's logging to
    warnings there.  Use as a context manager: leaving it normally waits for the
    jobs, leaving it with an exception (Ctrl-C, SIGTERM) terminates the workers.
    """

    def __init__(self, workers: int, *, threads: int | None = None, quiet: bool = True,
                 initializer: Callable[[], None] | None = None) -> None:
        self.workers = int(workers)
        self.pool: concurrent.futures.ProcessPoolExecutor | None = None
        if self.workers > 1:
            context = multiprocessing.get_context("spawn")
            self.pool = concurrent.futures.ProcessPoolExecutor(
                self.workers, mp_context=context, initializer=_init_worker,
                initargs=(os.getpid(), threads, quiet, initializer))

    def submit(self, fn: Callable[..., Result], *args: Any, **kwargs: Any) -> concurrent.futures.Future[Result]:
        """Run ``fn(*args, **kwargs)`` in a worker (``fn`` must be importable by name)."""
        if self.pool is not None:
            return self.pool.submit(fn, *args, **kwargs)
        future: concurrent.futures.Future[Result] = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as err:  # noqa: BLE001 - re-raised by .result()
            future.set_exception(err)
        return future

    def terminate(self) -> None:
        """Stop every worker now (jobs in flight are lost) and cancel what has not started."""
        if self.pool is None:
            return
        for process in list(getattr(self.pool, "_processes", {}).values()):
            process.terminate()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool = None

    def close(self) -> None:
        """Wait for the jobs in flight, then stop the workers."""
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.terminate()


def run_jobs(function: Callable[..., Result], jobs: Sequence[tuple[Any, ...]], key: Callable[[tuple[Any, ...]], Hashable],
             workers: int, *, progress: bool, desc: str, unit: str,
             initializer: Callable[[], None] | None = None) -> dict[Hashable, Result]:
    """``function(*job)`` for every job, keyed by ``key(job)``.

    ``workers == 1`` runs in this process (``initializer`` is not called);
    otherwise ``workers`` spawned processes each run ``initializer`` first.
    ``function`` must be importable by name (module level).  The first failing
    job cancels those not yet started and its exception propagates.
    """
    from tqdm import tqdm

    results: dict[Hashable, Result] = {}
    bar = tqdm(total=len(jobs), desc=desc, unit=unit, disable=not progress or None, file=sys.stderr)
    try:
        if workers == 1:
            for job in jobs:
                results[key(job)] = function(*job)
                bar.update()
        else:
            with WorkerPool(workers, quiet=False, initializer=initializer) as pool:
                futures = {pool.submit(function, *job): key(job) for job in jobs}
                for future in concurrent.futures.as_completed(futures):
                    results[futures[future]] = future.result()
                    bar.update()
    finally:
        bar.close()
    return results


__all__ = ["WorkerPool", "die_with_parent", "run_jobs", "threads_per_worker"]
