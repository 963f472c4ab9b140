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
def sweep_command(study_file: str, out: str | None, workers: int, emit: bool, stage: str | None, only: str | None,
                  list_jobs: bool) -> None:
    """Run every model x pair x method x seed of STUDY_FILE; finished runs are skipped, interrupted ones resumed.

    Pre-training runs are shared by all fine-tuning runs of a model and source
    scanner.  See petite/study/plan.py for the study format and
    examples/study/cpu-study.yaml for the study behind docs/RESULTS.md.
    """
    from petite.errors import UserError
    from petite.study.plan import Study
    from petite.study.sweep import emit_jobs, job_done, run_sweep

    study = Study.load(study_file)
    folder = Path(out) if out else Path("study-runs") / study.name
    if stage and not emit:
        raise UserError("--stage only applies with --emit-jobs")
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
