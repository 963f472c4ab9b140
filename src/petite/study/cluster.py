"""Running a study's jobs on a cluster through submitit (``petite sweep STUDY --executor slurm``).

The jobs and what "finished" means are the local sweep's (:mod:`petite.study.sweep`): a finished
job (:func:`~petite.study.sweep.job_done`) is skipped, an interrupted run resumes from its last
checkpoint, each job holds its folder's lock while it runs, and the function a cluster job executes
is :func:`~petite.study.sweep.run_job_record` (the same one a local worker runs).  What differs is
who runs them:

- ``slurm``: every unfinished job is submitted at once with ``sbatch``; a job that needs another
  one still unfinished carries ``--dependency=afterok:<ids>`` (and ``--kill-on-invalid-dep=yes``, so
  a failed pre-training cancels its fine-tunings instead of leaving them pending forever);
- ``submitit-local``: submitit's ``LocalExecutor`` (one process per job on this machine, no
  dependencies): a job is submitted when the jobs it needs have finished.  It exercises the same
  path as Slurm without a cluster (CI runs it).

The submitting process tracks the jobs until they end and prints one line per job, as the local
sweep does.  The submitted job ids are kept in ``<out>/.submitit/jobs.json``: when the submitting
process is interrupted (Ctrl-C, a closed terminal), Slurm jobs keep running, and the same command
run again finds them (still queued or running) and tracks them instead of submitting them twice;
jobs that ended meanwhile count as finished or failed by their folders, like every other job.
Local submitit jobs are cancelled with the process that submitted them; a rerun resumes them.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from petite.atomic import write_json, write_text
from petite.errors import UserError
from petite.study.plan import Job, Study
from petite.study.sweep import job_done, run_job_record

EXECUTORS = ("local", "slurm", "submitit-local")
JOBS_FILE = "jobs.json"
#: Slurm states of a job that will still run (the rerun tracks it rather than submitting it again).
ACTIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED", "UNKNOWN"}


@dataclasses.dataclass(frozen=True)
class Resources:
    """What each cluster job asks for: ``partition``, GPUs, wall-clock minutes and CPU cores."""

    partition: str | None = None
    gpus_per_job: int = 0
    time_min: int = 240
    cpus_per_job: int | None = None

    def __post_init__(self) -> None:
        if self.gpus_per_job < 0:
            raise UserError(f"--gpus-per-job must be >= 0, got {self.gpus_per_job}")
        if self.time_min < 1:
            raise UserError(f"--time must be at least one minute, got {self.time_min} min")
        if self.cpus_per_job is not None and self.cpus_per_job < 1:
            raise UserError(f"--cpus-per-job must be >= 1, got {self.cpus_per_job}")


def parse_time(text: str) -> int:
    """Minutes from Slurm's time formats: ``MM``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]`` (seconds round up)."""
    value = str(text).strip()
    try:
        days, _, rest = value.rpartition("-")
        parts = [int(p) for p in rest.split(":")]
        if not parts or len(parts) > 3 or any(p < 0 for p in parts):
            raise ValueError
        if days:
            hours, minutes, seconds = (parts + [0, 0])[:3]
        elif len(parts) == 1:
            hours, minutes, seconds = 0, parts[0], 0
        elif len(parts) == 2:
            hours, minutes, seconds = 0, parts[0], parts[1]
        else:
            hours, minutes, seconds = parts
        return int(days or 0) * 1440 + hours * 60 + minutes + (1 if seconds else 0)
    except ValueError:
        raise UserError(f"--time must be minutes or Slurm's [D-]HH:MM:SS, got {text!r}") from None


class Backend:
    """A submitit executor and whether the scheduler it feeds understands dependencies."""

    def __init__(self, executor: Any, dependencies: bool, kind: str) -> None:
        self.executor = executor
        self.dependencies = dependencies
        self.kind = kind

    def submit(self, job: Job, out: Path, after: list[str]) -> Any:
        """Submit ``job`` (after the cluster jobs ``after``, when the scheduler takes dependencies)."""
        if self.dependencies:
            extra = {"dependency": "afterok:" + ":".join(after), "kill_on_invalid_dep": "yes"} if after else {}
            self.executor.update_parameters(slurm_additional_parameters=extra)
        return self.executor.submit(run_job_record, job, str(out))

    def attach(self, job_id: str) -> Any | None:
        """The cluster job ``job_id`` if it is still queued or running, else ``None`` (Slurm only)."""
        if self.kind != "slurm":
            return None
        import submitit

        found = submitit.SlurmJob(folder=self.executor.folder, job_id=job_id)
        return found if found.state.split()[0] in ACTIVE_STATES else None


def make_backend(kind: str, folder: Path, resources: Resources, name: str) -> Backend:
    """The submitit executor of ``kind`` (``slurm`` or ``submitit-local``) writing its files in ``folder``.

    Raises:
        UserError: submitit is not installed, or Slurm's ``sbatch`` is not on this machine.
    """
    try:
        import submitit
    except ImportError:
        raise UserError("submitit is not installed: pip install 'petite[slurm]'") from None
    if kind == "submitit-local":
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=resources.time_min, gpus_per_node=resources.gpus_per_job)
        return Backend(executor, dependencies=False, kind=kind)
    if kind != "slurm":
        raise UserError(f"unknown executor {kind!r}; expected one of {', '.join(EXECUTORS)}")
    import shutil

    if shutil.which("sbatch") is None:
        raise UserError("--executor slurm needs Slurm's sbatch on this machine (a cluster login node)")
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    params: dict[str, Any] = {"timeout_min": resources.time_min, "gpus_per_node": resources.gpus_per_job,
                              "tasks_per_node": 1, "nodes": 1, "name": f"petite-{name}"}
    if resources.cpus_per_job is not None:
        params["cpus_per_task"] = resources.cpus_per_job
    if resources.partition:
        params["slurm_partition"] = resources.partition
    executor.update_parameters(**params)
    return Backend(executor, dependencies=True, kind=kind)


def _outcome(cluster_job: Any, key: str) -> dict[str, Any]:
    """The record a finished cluster job returned, or an error record naming why it gave none."""
    try:
        return cluster_job.result()
    except Exception as err:  # noqa: BLE001 - a killed, timed-out or failed cluster job is reported, not raised
        first = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
        return {"key": key, "error": f"cluster job {cluster_job.job_id} ended without a result: {first.strip()[:200]}"}


def submit_sweep(study: Study, out: str | Path, backend: Backend | None = None, *, executor: str = "slurm",
                 resources: Resources = Resources(), poll_s: float = 30.0,
                 echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Submit every unfinished job of ``study`` (output folder ``out``) and track them until they end.

    ``backend`` overrides the executor made from ``executor`` and ``resources`` (tests pass a
    submitit ``DebugExecutor`` in one).  Returns the same summary as :func:`petite.study.sweep.run_sweep`.

    Raises:
        UserError: at the end, if any job failed (after tracking all the others).
    """
    out = Path(out).resolve()
    jobs = study.jobs(out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "study.yaml", study.path.read_text())  # what this folder was swept with
    logs = out / ".submitit"
    backend = backend or make_backend(executor, logs, resources, study.name)
    ids_path = logs / JOBS_FILE
    recorded: dict[str, str] = json.loads(ids_path.read_text()) if ids_path.is_file() else {}

    done = {job.key for job in jobs if job_done(job, out)}
    todo = [job for job in jobs if job.key not in done]
    in_flight: dict[str, Any] = {}
    for job in todo:
        if job.key in recorded:
            found = backend.attach(recorded[job.key])
            if found is not None:
                in_flight[job.key] = found
    echo(f"sweep {study.name}: {len(jobs)} jobs, {len(done)} already finished, {len(todo)} to run "
         f"on {backend.kind}" + (f" ({len(in_flight)} still queued or running from before)" if in_flight else "")
         + f" -> {out}")
    failed: dict[str, str] = {}
    skipped: set[str] = set()
    finished: list[dict[str, Any]] = []
    pending = [job for job in todo if job.key not in in_flight]
    started = time.perf_counter()
    count = 0

    def submit_ready() -> None:
        for job in list(pending):
            if any(need in failed or need in skipped for need in job.needs):
                pending.remove(job)
                skipped.add(job.key)
                continue
            waiting = [need for need in job.needs if need not in done]
            if waiting and not (backend.dependencies and all(need in in_flight for need in waiting)):
                continue
            pending.remove(job)
            cluster_job = backend.submit(job, out, [str(in_flight[need].job_id) for need in waiting])
            in_flight[job.key] = cluster_job
            recorded[job.key] = str(cluster_job.job_id)
            write_json(ids_path, recorded)
            echo(f"submitted {job.key} as {backend.kind} job {cluster_job.job_id}"
                 + (f" (after {', '.join(waiting)})" if waiting else ""))

    try:
        while True:
            submit_ready()
            if not in_flight:
                break
            ended = [key for key, cluster_job in in_flight.items() if cluster_job.done()]
            for key in ended:
                record = _outcome(in_flight.pop(key), key)
                count += 1
                if "error" in record:
                    failed[key] = record["error"]
                    echo(f"[{count}/{len(todo)}] FAILED {key}: {record['error']}")
                    continue
                done.add(key)
                finished.append(record)
                extra = f", test PSNR {record['psnr']:.2f} dB" if record.get("psnr") is not None else ""
                extra += " (resumed)" if record.get("resumed") else ""
                echo(f"[{count}/{len(todo)}] done {key} in {record.get('time_s', 0):.0f} s{extra} "
                     f"(elapsed {(time.perf_counter() - started) / 60:.1f} min)")
            if not ended:
                time.sleep(poll_s)
    except BaseException:
        if backend.kind == "slurm":
            echo(f"interrupted: {len(in_flight)} Slurm job(s) keep running; run the same command again to track "
                 f"them (job ids in {ids_path})")
        else:
            for cluster_job in in_flight.values():  # local jobs die with their submitter; a rerun resumes them
                cluster_job.cancel(check=False)
            # Wait until they have let go of their run folders' locks, so a rerun does not find them held.
            deadline = time.monotonic() + 60
            for cluster_job in in_flight.values():
                while not cluster_job.done() and time.monotonic() < deadline:
                    time.sleep(0.2)
        raise
    elapsed = time.perf_counter() - started
    echo(f"sweep {study.name}: ran {len(finished)}, failed {len(failed)}, skipped {len(skipped)} "
         f"(needing a failed job) in {elapsed / 60:.1f} min")
    if failed:
        raise UserError(f"{len(failed)} job(s) failed: {', '.join(sorted(failed))}; rerun to retry them", out)
    return {"jobs": len(jobs), "already_finished": len(jobs) - len(todo), "ran": len(finished),
            "failed": failed, "skipped": sorted(skipped), "time_s": round(elapsed, 1)}


__all__ = ["EXECUTORS", "Backend", "Resources", "make_backend", "parse_time", "submit_sweep"]
