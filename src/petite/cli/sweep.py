"""`petite sweep STUDY.yaml`: run a cross-scanner study (or print its jobs for a cluster)."""

from __future__ import annotations

from pathlib import Path

import click

from petite.cli.app import cli


@cli.command("sweep")
@click.argument("study_file", type=click.Path(dir_okay=False))
@click.option("--out", help="Study output folder (default: ./study-runs/<study name>).")
@click.option("--workers", type=int, default=1, show_default=True,
              help="Jobs run at once, each in its own process with cpu_count/workers threads.")
@click.option("--emit-jobs", "emit", is_flag=True,
              help="Print one command per unfinished job (dependency order) instead of running.")
@click.option("--stage", type=click.Choice(["data", "pretrain", "finetune"]),
              help="With --emit-jobs: only this stage's jobs (all of a stage can run at once).")
@click.option("--job", "only", help="Run this one job (a key printed by --list or --emit-jobs).")
@click.option("--list", "list_jobs", is_flag=True, help="List every job and whether it has finished.")
@click.option("--executor", type=click.Choice(["local", "slurm", "submitit-local"]), default="local", show_default=True,
              help="local: worker processes here; slurm: one Slurm job per run through submitit, with dependencies "
                   "(pre-training before fine-tuning); submitit-local: submitit's local executor (no cluster).")
@click.option("--partition", help="Slurm partition of every job.")
@click.option("--gpus-per-job", type=int, help="GPUs per job (default 0).")
@click.option("--time", "time_limit", help="Wall-clock limit per job: minutes or [D-]HH:MM:SS (default 240 min).")
@click.option("--cpus-per-job", type=int, help="CPU cores per job (default: the cluster's).")
@click.option("--poll-seconds", type=float, default=None, hidden=True,
              help="How often the job states are checked (default 30 s for Slurm, 1 s for submitit-local).")
def sweep_command(study_file: str, out: str | None, workers: int, emit: bool, stage: str | None, only: str | None,
                  list_jobs: bool, executor: str, partition: str | None, gpus_per_job: int | None,
                  time_limit: str | None, cpus_per_job: int | None, poll_seconds: float | None) -> None:
    """Run every model x pair x method x seed of STUDY_FILE; finished runs are skipped, interrupted ones resumed.

    Pre-training runs are shared by all fine-tuning runs of a model and source
    scanner.  With --executor slurm every unfinished run is submitted as a Slurm job (through
    submitit) that depends on the runs it needs, and tracked until all end; run the same
    command again after an interruption: finished runs are skipped, queued ones tracked,
    interrupted ones resumed.  See petite/study/plan.py for the study format and
    examples/study/realistic-cpu.yaml for the study behind docs/RESULTS.md.
    """
    from petite.errors import UserError
    from petite.study.plan import Study
    from petite.study.sweep import emit_jobs, job_done, run_sweep

    cluster_options = {"--partition": partition, "--gpus-per-job": gpus_per_job, "--time": time_limit,
                       "--cpus-per-job": cpus_per_job}
    if executor == "local":
        given = [name for name, value in cluster_options.items() if value is not None]
        if given:
            raise UserError(f"{', '.join(given)} only appl{'ies' if len(given) == 1 else 'y'} with --executor slurm")
    else:
        clash = [name for name, value in (("--workers", workers != 1), ("--job", only), ("--emit-jobs", emit),
                                          ("--list", list_jobs)) if value]
        if clash:
            raise UserError(f"{clash[0]} does not go with --executor {executor} (the cluster runs the jobs)")
        from petite.study.cluster import Resources, parse_time

        resources = Resources(partition=partition, gpus_per_job=gpus_per_job or 0,
                              time_min=parse_time(time_limit) if time_limit is not None else 240,
                              cpus_per_job=cpus_per_job)
    study = Study.load(study_file)
    folder = Path(out) if out else Path("study-runs") / study.name
    if stage and not emit:
        raise UserError("--stage only applies with --emit-jobs")
    if executor != "local":
        from petite.study.cluster import submit_sweep

        poll = poll_seconds if poll_seconds is not None else (30.0 if executor == "slurm" else 1.0)
        submit_sweep(study, folder, executor=executor, resources=resources, poll_s=poll, echo=click.echo)
        return
    if emit:
        for line in emit_jobs(study, folder, stage):
            click.echo(line)
        return
    if list_jobs:
        for job in study.jobs(folder.resolve()):
            state = "done" if job_done(job, folder.resolve()) else "todo"
            click.echo(f"{state}  {job.key}")
        return
    run_sweep(study, folder, workers=workers, only=only, echo=click.echo)
