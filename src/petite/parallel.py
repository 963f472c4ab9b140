"""Run independent jobs in this process or in worker processes, with a progress bar.

Both simulators (brain PET and head-and-neck CT/PET) map one function over a
list of job tuples; :func:`run_jobs` is that loop, once.  Worker processes are
*spawned* (never forked): forking after torch or OpenMP started threads can
deadlock.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import sys
from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

Result = TypeVar("Result")


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
            context = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=initializer) as pool:
                futures = {pool.submit(function, *job): key(job) for job in jobs}
                try:
                    for future in concurrent.futures.as_completed(futures):
                        results[futures[future]] = future.result()
                        bar.update()
                except BaseException:
                    for future in futures:
                        future.cancel()
                    raise
    finally:
        bar.close()
    return results


__all__ = ["run_jobs"]
