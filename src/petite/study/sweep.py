"""Run (or emit) the jobs of a study: resumable, in parallel worker processes.

:func:`run_sweep` walks the jobs of :class:`petite.study.plan.Study` in
dependency order (data, then pre-training, then fine-tuning):

- a finished job is skipped (a simulation with its datalist, a run with its
  ``final.json``), after checking that the finished run was made with the
  settings the study asks for now;
- an interrupted run (``checkpoints/last.json``) is resumed where it stopped;
- each job holds its folder's lock (:mod:`petite.locks`) while it runs, so a
  second sweep (or ``--job`` line) started while the first one's workers still
  write a folder is refused for that job, in one line, instead of racing it;
- up to ``workers`` jobs run at once, each in its own process
  (:class:`petite.parallel.WorkerPool`) with ``cpu_count // workers`` torch
  threads; a failed job is reported and only the jobs that need it are skipped.

:func:`emit_jobs` writes one ``petite sweep STUDY --out OUT --job KEY`` command
per line instead, stage by stage, for a cluster scheduler: every line of a
stage can run at once (e.g. one Slurm array per stage, each array depending on
the previous one).  A ``--job`` command runs that one job through the same
skip/resume logic, so re-submitting a finished line is harmless.
:mod:`petite.study.cluster` submits the jobs itself (Slurm through submitit) and tracks them.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import shlex
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from petite.atomic import write_text
from petite.documents import read_yaml
from petite.engine.config import TrainConfig
from petite.engine.lr_search import lr_search_complete
from petite.engine.run_folder import changed_settings
from petite.errors import UserError, storage_problem
from petite.locks import run_lock
from petite.parallel import WorkerPool, threads_per_worker
from petite.study.plan import Job, Study

log = logging.getLogger("petite.sweep")


def job_done(job: Job, out: Path) -> bool:
    """Whether ``job`` has finished (its output is complete)."""
    folder = out / job.key
    if job.kind == "simulate":
        return (folder / "simulation.json").is_file() and (folder / f"scanner{job.config['scanner']}" /
                                                           "datalist.json").is_file()
    if not (folder / "final.json").is_file():
        return False
    _check_same_settings(job, folder)
    cfg = TrainConfig(**job.config)
    # A run whose lr search stopped at an edge the current rule extends past is completed by train().
    return lr_search_complete(json.loads((folder / "final.json").read_text()), cfg.lr_grid, cfg.lr_grid_extend)


def _check_same_settings(job: Job, folder: Path) -> None:
    """A finished run must have been made with the settings the study asks for now."""
    saved = read_yaml(folder / "config.yaml", "run config") or {}
    changed = changed_settings(folder, saved, job.config)
    if changed:
        raise UserError(f"finished run was made with other settings ({', '.join(changed)}); "
                        "use another --out or delete the run", folder)


def run_job(job: Job, out: Path, progress: bool = False) -> dict[str, Any]:
    """Run one job to completion (resuming it if interrupted); returns a short record of the outcome.

    The job's folder is locked for the whole job (:func:`petite.locks.run_lock`): a job another
    process is still writing (a second sweep, a resubmitted ``--job`` line) is refused with a
    UserError instead of raced.  Under the lock the job is checked again, so one that another
    process finished since the sweep was planned is reported as such (``"finished_elsewhere"``)
    rather than run twice or failed.
    """
    started = time.perf_counter()
    folder = out / job.key
    with run_lock(folder):
        if job_done(job, out):
            return {"key": job.key, "time_s": 0.0, "finished_elsewhere": True}
        if job.kind == "simulate":
            from petite.data.scanners import get_scanner
            from petite.data.simulate import SimulationRequest, run_simulation

            cfg = job.config
            scanner = get_scanner(cfg["scanner"], cfg["scanner_file"])
            # Not done, and nobody else writes here: whatever the folder holds is a partial simulation to redo.
            request = SimulationRequest(out=folder, scanners=(scanner,), n_subjects=sum(cfg["split_sizes"]),
                                        seed=cfg["seed"], workers=cfg["workers"],
                                        split_sizes=tuple(cfg["split_sizes"]), overwrite=True,
                                        vary_anatomy=bool(cfg.get("vary_anatomy", False)))
            run_simulation(request, progress=progress)
            return {"key": job.key, "time_s": round(time.perf_counter() - started, 1)}

        from petite.engine.config import TrainConfig
        from petite.engine.run_folder import RunFolder
        from petite.engine.train import train

        cfg = TrainConfig(**job.config)
        cfg.validate(folder)
        resume = RunFolder(folder).resumable
        final = train(cfg, resume=resume, progress=progress)
    return {"key": job.key, "time_s": round(time.perf_counter() - started, 1), "resumed": resume,
            "psnr": (final.get("test") or {}).get("psnr"), "percent": final.get("percent")}


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_job_record(job: Job, out: str) -> dict[str, Any]:
    """:func:`run_job` in a worker or a cluster job: its record, or ``{"key", "error"}`` with one line.

    Every job runs through here, in a local worker or on a cluster (:mod:`petite.study.cluster`),
    so both report a failure the same way and a bug in one run never stops the sweep."""
    try:
        return run_job(job, Path(out))
    except UserError as err:
        return {"key": job.key, "error": str(err)}
    except Exception as err:  # noqa: BLE001 - a bug in one run must not stop the sweep; it is reported
        problem = storage_problem(err)
        if problem is not None:  # a full disk or an unwritable folder is the user's to fix: one line, no traceback
            return {"key": job.key, "error": problem}
        log.exception("job %s failed", job.key)
        return {"key": job.key, "error": f"{type(err).__name__}: {err}"}


def run_sweep(study: Study, out: str | Path, workers: int = 1, only: str | None = None,
              echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every unfinished job of ``study`` into ``out`` (or just job ``only``); returns a summary.

    Raises :class:`UserError` at the end if any job failed (after running all it could).
    """
    out = Path(out).resolve()
    if workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    jobs = study.jobs(out)
    by_key = {job.key: job for job in jobs}
    if only is not None:
        if only not in by_key:
            raise UserError(f"no job {only!r} in this study (see --list)", study.path)
        missing = [need for need in by_key[only].needs if not job_done(by_key[need], out)]
        if missing:
            raise UserError(f"job {only} needs {', '.join(missing)} to finish first (an earlier stage)")
        jobs = [by_key[only]]
    out.mkdir(parents=True, exist_ok=True)
    if only is None:
        write_text(out / "study.yaml", study.path.read_text())  # what this folder was swept with

    done = {job.key for job in jobs if job_done(job, out)}
    todo = [job for job in jobs if job.key not in done]
    echo(f"sweep {study.name}: {len(jobs)} jobs, {len(done)} already finished, {len(todo)} to run "
         f"with {workers} worker(s) -> {out}")
    failed: dict[str, str] = {}
    finished: list[dict[str, Any]] = []
    started = time.perf_counter()

    def report(record: dict[str, Any], position: int) -> None:
        key = record["key"]
        if "error" in record:
            failed[key] = record["error"]
            echo(f"[{position}/{len(todo)}] FAILED {key}: {record['error']}")
            return
        done.add(key)
        if record.get("finished_elsewhere"):
            echo(f"[{position}/{len(todo)}] {key} was finished by another process meanwhile")
            return
        finished.append(record)
        extra = f", test PSNR {record['psnr']:.2f} dB" if record.get("psnr") is not None else ""
        extra += " (resumed)" if record.get("resumed") else ""
        echo(f"[{position}/{len(todo)}] done {key} in {record['time_s']:.0f} s{extra} "
             f"(elapsed {(time.perf_counter() - started) / 60:.1f} min)")

    def ready(job: Job) -> bool:
        return all(need in done for need in job.needs)

    def blocked(job: Job) -> bool:
        return any(need in failed or need in skipped for need in job.needs)

    pending = list(todo)
    skipped: set[str] = set()
    count = 0
    if workers == 1:
        for job in pending:
            if blocked(job):
                skipped.add(job.key)
                continue
            count += 1
            report(run_job_record(job, str(out)), count)
    else:
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)  # `kill`/scancel stop the workers too
        try:
            # Leaving the pool with an exception (Ctrl-C, SIGTERM) terminates the runs in flight;
            # each resumes from its last epoch next time.
            with WorkerPool(workers, threads=threads_per_worker(workers), quiet=True) as pool:
                running: dict[cf.Future[dict[str, Any]], Job] = {}
                while pending or running:
                    for job in [j for j in pending if blocked(j)]:
                        pending.remove(job)
                        skipped.add(job.key)
                    while len(running) < workers:
                        job = next((j for j in pending if ready(j)), None)
                        if job is None:
                            break
                        pending.remove(job)
                        running[pool.submit(run_job_record, job, str(out))] = job
                    if not running:
                        break
                    finished_now, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                    for future in finished_now:
                        running.pop(future)
                        count += 1
                        report(future.result(), count)
        finally:
            signal.signal(signal.SIGTERM, previous)
    elapsed = time.perf_counter() - started
    summary = {"jobs": len(jobs), "already_finished": len(jobs) - len(todo), "ran": len(finished),
               "failed": failed, "skipped": sorted(skipped), "time_s": round(elapsed, 1)}
    echo(f"sweep {study.name}: ran {len(finished)}, failed {len(failed)}, skipped {len(skipped)} "
         f"(needing a failed job) in {elapsed / 60:.1f} min")
    if failed:
        raise UserError(f"{len(failed)} job(s) failed: {', '.join(sorted(failed))}; rerun to retry them", out)
    return summary


def emit_jobs(study: Study, out: str | Path, stage: str | None = None, program: str = "petite") -> list[str]:
    """One shell command per unfinished job, in dependency order (``stage``: only data/pretrain/finetune)."""
    out = Path(out).resolve()
    stages = {"data": 0, "pretrain": 1, "finetune": 2}
    if stage is not None and stage not in stages:
        raise UserError(f"--stage must be one of {', '.join(stages)}, got {stage!r}")
    lines = []
    for job in study.jobs(out):
        if stage is not None and job.stage != stages[stage]:
            continue
        if job_done(job, out):
            continue
        lines.append(" ".join([program, "sweep", shlex.quote(str(study.path.resolve())), "--out",
                               shlex.quote(str(out)), "--job", shlex.quote(job.key)]))
    return lines


__all__ = ["emit_jobs", "job_done", "run_job", "run_job_record", "run_sweep"]
