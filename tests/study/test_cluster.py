"""`petite sweep --executor slurm|submitit-local` (petite.study.cluster): jobs through submitit, with
dependencies where the scheduler takes them, tracked, and resumed after an interruption like the local sweep."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from petite.errors import UserError
from petite.study.cluster import Backend, parse_time, submit_sweep
from petite.study.plan import Study
from tests.cli_runner import run_cli
from tests.study.study_files import write_study

submitit = pytest.importorskip("submitit")

LORA = {"label": "LoRA", "spec": "lora"}


def test_parse_time_reads_slurm_formats() -> None:
    assert [parse_time(t) for t in ("90", "1:30:00", "2-00", "0-01:00:01", "45:30")] == [90, 90, 2880, 61, 46]
    with pytest.raises(UserError, match="--time must be minutes"):
        parse_time("soon")


def test_cluster_options_are_checked_before_anything_runs(tmp_path: Path, capsys) -> None:
    path = write_study(tmp_path / "study.yaml")
    out = tmp_path / "out"
    cases = [(["--partition", "gpu"], "--partition only applies with --executor slurm"),
             (["--executor", "slurm", "--workers", "2"], "--workers does not go with --executor slurm"),
             (["--executor", "submitit-local", "--job", "pretrain/unetr-tiny/a"], "--job does not go with"),
             (["--executor", "slurm", "--time", "later"], "--time must be minutes")]
    for options, message in cases:
        result = run_cli(["sweep", path, "--out", out, *options], capsys)
        assert result.code == 2 and message in result.err and result.err.count("\n") == 1, result.err
    assert not out.exists()


class FakeJob:
    """A cluster job that has already ended with the record of a successful run (nothing trains)."""

    def __init__(self, job_id: str, key: str) -> None:
        self.job_id, self.key = job_id, key

    def done(self) -> bool:
        return True

    def result(self) -> dict[str, Any]:
        return {"key": self.key, "time_s": 0.0}


class RecordingExecutor:
    """Stands in for submitit's Slurm executor: records each submission with its dependency parameters."""

    def __init__(self) -> None:
        self.dependency: dict[str, Any] = {}
        self.submitted: list[tuple[str, dict[str, Any], str]] = []

    def update_parameters(self, **kwargs: Any) -> None:
        self.dependency = dict(kwargs.get("slurm_additional_parameters", {}))

    def submit(self, fn: Any, job: Any, out: str) -> FakeJob:
        job_id = str(1000 + len(self.submitted))
        self.submitted.append((job.key, self.dependency, job_id))
        return FakeJob(job_id, job.key)


def test_jobs_are_submitted_at_once_with_afterok_on_the_jobs_they_need(study_dir: Path, tmp_path: Path) -> None:
    path = write_study(study_dir / "deps.yaml", grids=[{"name": "g", "models": ["unetr:tiny"], "pairs": ["a->a"],
                                                       "methods": ["no-ft", LORA], "seeds": [0]}])
    out = tmp_path / "out"
    executor = RecordingExecutor()
    lines: list[str] = []
    summary = submit_sweep(Study.load(path), out, Backend(executor, dependencies=True, kind="fake-slurm"), poll_s=0,
                           echo=lines.append)
    submitted = {key: (dependency, job_id) for key, dependency, job_id in executor.submitted}
    pre_dependency, pre_id = submitted.pop("pretrain/unetr-tiny/a")
    assert pre_dependency == {}  # nothing to wait for
    # Submitted before the pre-training ran, to start after it: the scheduler holds them.
    assert sorted(submitted) == ["runs/unetr-tiny/a-to-a/lora/seed0", "runs/unetr-tiny/a-to-a/no-ft/seed0"]
    for dependency, _ in submitted.values():
        assert dependency == {"dependency": f"afterok:{pre_id}", "kill_on_invalid_dep": "yes"}
    assert [line.split(" as ")[0] for line in lines[1:4]] == [f"submitted {k}" for k, _, _ in executor.submitted]
    assert summary["ran"] == 3 and summary["failed"] == {}
    assert json.loads((out / ".submitit" / "jobs.json").read_text())["pretrain/unetr-tiny/a"] == pre_id


@pytest.mark.e2e
def test_submitit_local_sweep_interrupted_then_resumed(study_dir: Path, tmp_path: Path, capsys) -> None:
    path = write_study(study_dir / "cluster.yaml", grids=[{"name": "g", "models": ["unetr:tiny"], "pairs": ["a->a"],
                                                          "methods": ["no-ft", LORA], "seeds": [0]}])
    out = tmp_path / "out"
    lines: list[str] = []

    def interrupt_when_lora_is_submitted(line: str) -> None:
        lines.append(line)
        if line.startswith("submitted runs/unetr-tiny/a-to-a/lora/seed0"):
            raise KeyboardInterrupt  # Ctrl-C of the submitting process, fine-tunings in flight

    with pytest.raises(KeyboardInterrupt):
        submit_sweep(Study.load(path), out, executor="submitit-local", poll_s=0.2,
                     echo=interrupt_when_lora_is_submitted)
    assert any(line.startswith("[1/3] done pretrain/unetr-tiny/a") for line in lines), lines
    # The fine-tunings in flight are cancelled with it; a tiny one may have finished first on a fast machine.
    finished = len(list(out.glob("runs/**/final.json")))
    assert finished < 2

    again = run_cli(["sweep", path, "--out", out, "--executor", "submitit-local", "--poll-seconds", "0.2"], capsys)
    assert again.code == 0, again.err
    assert f"3 jobs, {1 + finished} already finished, {2 - finished} to run on submitit-local" in again.out
    assert sorted(str(p.parent.relative_to(out)) for p in out.glob("runs/**/final.json")) == [
        "runs/unetr-tiny/a-to-a/lora/seed0", "runs/unetr-tiny/a-to-a/no-ft/seed0"]

    # A run interrupted after its last checkpoint (final.json gone) resumes there; the others are left alone.
    lora = out / "runs/unetr-tiny/a-to-a/lora/seed0"
    stamp = (out / "runs/unetr-tiny/a-to-a/no-ft/seed0/final.json").stat().st_mtime_ns
    (lora / "final.json").unlink()
    third = run_cli(["sweep", path, "--out", out, "--executor", "submitit-local", "--poll-seconds", "0.2"], capsys)
    assert third.code == 0, third.err
    assert "3 jobs, 2 already finished, 1 to run" in third.out and "(resumed)" in third.out
    assert (lora / "final.json").is_file()
    assert (out / "runs/unetr-tiny/a-to-a/no-ft/seed0/final.json").stat().st_mtime_ns == stamp
