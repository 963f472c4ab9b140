"""`petite sweep` (petite.study.sweep): resumable runs, shared pre-training, emitted jobs that run as written,
parallel workers that stop on SIGTERM."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml

from tests.cli_runner import run_cli
from tests.study.study_files import write_study


@pytest.mark.e2e
def test_sweep_resumes_without_redoing_finished_runs(study_dir: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = write_study(study_dir / "study.yaml")
    out = tmp_path / "out"
    first = run_cli(["sweep", path, "--out", out], capsys)
    assert first.code == 0, first.err
    runs = sorted(p.parent for p in out.glob("**/final.json"))
    assert [str(p.relative_to(out)) for p in runs] == [
        "pretrain/unetr-tiny/a", "runs/unetr-tiny/a-to-a/full-ft/seed0", "runs/unetr-tiny/a-to-a/lora/seed0",
        "runs/unetr-tiny/a-to-a/no-ft/seed0"]
    labels = yaml.safe_load((out / "runs/unetr-tiny/a-to-a/lora/seed0/config.yaml").read_text())["extra"]
    assert labels["method"] == "LoRA" and labels["pair"] == "a->a" and labels["seed"] == 0
    stamps = {p: (p / "final.json").stat().st_mtime_ns for p in runs}

    # Interrupt one run (final.json gone, its last checkpoint kept) and add a seed: the rerun
    # resumes that run, trains only the new seed's runs and leaves every other run alone.
    lora = out / "runs/unetr-tiny/a-to-a/lora/seed0"
    (lora / "final.json").unlink()
    write_study(path, grids=[{"name": "g", "models": ["unetr:tiny"], "pairs": ["a->a"],
                              "methods": ["no-ft", "full-ft", {"label": "LoRA", "spec": "lora"}], "seeds": [0, 1]}])
    second = run_cli(["sweep", path, "--out", out], capsys)
    assert second.code == 0, second.err
    assert "6 jobs, 3 already finished, 3 to run" in second.out and "(resumed)" in second.out
    for run, stamp in stamps.items():
        if run != lora:
            assert (run / "final.json").stat().st_mtime_ns == stamp, run
    assert (out / "runs/unetr-tiny/a-to-a/lora/seed1/final.json").is_file()
    third = run_cli(["sweep", path, "--out", out], capsys)
    assert third.code == 0 and "0 to run" in third.out

    # A finished run made with other settings is not silently reused.
    write_study(path, finetune={"epochs": 2})
    changed = run_cli(["sweep", path, "--out", out], capsys)
    assert changed.code == 2 and "other settings (epochs" in changed.err


@pytest.mark.e2e
def test_emitted_jobs_run_as_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_study(tmp_path / "study.yaml", data={"subjects": {"tiny": [2, 1, 2, 1, 1]}},
                       grids=[{"models": ["unetr:tiny"], "pairs": ["tiny->tiny"], "methods": ["full-ft"],
                               "seeds": [0, 1]}])
    out = tmp_path / "out"
    emitted = run_cli(["sweep", path, "--out", out, "--emit-jobs"], capsys)
    assert emitted.code == 0 and not out.exists()  # emitting runs nothing
    lines = emitted.out.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("petite sweep ") for line in lines)
    stages = [run_cli(["sweep", path, "--out", out, "--emit-jobs", "--stage", s], capsys).out.split("\n")[0]
              for s in ("data", "pretrain")]
    assert stages == lines[:2]
    # A job whose dependencies have not finished says so instead of running.
    early = run_cli(shlex.split(lines[-1])[1:], capsys)
    assert early.code == 2 and "to finish first" in early.err
    for line in lines:
        result = run_cli(shlex.split(line)[1:], capsys)
        assert result.code == 0, (line, result.err)
    assert (out / "data/tiny/scannertiny/datalist.json").is_file()
    finals = sorted(out.glob("runs/**/final.json"))
    assert len(finals) == 2 and all(json.loads(f.read_text())["test"]["n"] == 1 for f in finals)
    assert run_cli(["sweep", path, "--out", out, "--emit-jobs"], capsys).out.strip() == ""


def _children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.e2e
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_parallel_workers_stop_on_sigterm_and_resume(study_dir: Path, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    path = write_study(study_dir / "parallel.yaml", finetune={"epochs": 3},
                       grids=[{"models": ["unetr:tiny"], "pairs": ["a->a"], "methods": ["full-ft", "petite"],
                               "seeds": [0]}])
    out = tmp_path / "out"
    command = [sys.executable, "-m", "petite", "sweep", str(path), "--out", str(out), "--workers", "2"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not (out / "pretrain/unetr-tiny/a/final.json").exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    workers = _children(process.pid)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    time.sleep(0.5)
    alive = [pid for pid in workers if Path(f"/proc/{pid}").exists()
             and Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"]
    assert process.returncode != 0 and alive == []
    # Rerun: whatever finished stays, the rest runs (2 at a time) to the end.
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert len(list(out.glob("runs/**/final.json"))) == 2
    assert os.path.getsize(out / "pretrain/unetr-tiny/a/final.json") > 0


def _alive(pids: list[int]) -> list[int]:
    """Those of ``pids`` still running (a zombie waiting to be reaped is dead)."""
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(pid)
    return alive


@pytest.mark.e2e
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_kill_9_of_a_parallel_sweep_then_an_immediate_rerun(study_dir: Path, tmp_path: Path) -> None:
    import os
    import re
    import signal
    import subprocess
    import sys
    import time

    from petite.errors import UserError
    from petite.locks import run_lock

    epochs = 10
    path = write_study(study_dir / "kill9.yaml", finetune={"epochs": epochs},
                       grids=[{"models": ["unetr:tiny"], "pairs": ["a->a"], "methods": ["full-ft", "petite"],
                               "seeds": [0]}])
    out = tmp_path / "out"
    runs = [out / "runs/unetr-tiny/a-to-a/full-ft/seed0", out / "runs/unetr-tiny/a-to-a/petite/seed0"]
    command = [sys.executable, "-m", "petite", "sweep", str(path), "--out", str(out), "--workers", "2"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, busy = time.time() + 300, []
        while not busy and process.poll() is None and time.time() < deadline:
            # A fine-tuning run in the middle of its epochs.
            busy = [run for run in runs if (run / "checkpoints/last.json").is_file() and not (run / "final.json").exists()]
            time.sleep(0.05)
        assert busy, "no fine-tuning run was caught in flight"
        workers = _children(process.pid)
        # Anyone else asking to write that run is refused at once, and told which worker holds it.
        with pytest.raises(UserError) as refused:
            with run_lock(busy[0]):
                pass
        holder = re.search(r"another petite process is writing this run folder \(pid (\d+)\)", str(refused.value))
        assert holder is not None and int(holder.group(1)) in workers
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    # The workers die with their parent: nothing keeps writing into the run folders.
    deadline = time.time() + 10
    while _alive(workers) and time.time() < deadline:
        time.sleep(0.05)
    assert _alive(workers) == []

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "FAILED" not in rerun.stdout and "Traceback" not in rerun.stderr
    for run in runs:
        final = json.loads((run / "final.json").read_text())
        assert final["max_steps"] == epochs * final["steps_per_epoch"] and final["test"]["n"] == 2, run
        # Resumed, not restarted or doubled: every validation once, in order.
        history = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert history == list(range(final["val_every"], final["steps"] + 1, final["val_every"])), run


def test_full_disk_in_a_job_is_one_line_not_a_traceback(study_dir: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    import errno
    import os

    from petite.engine import train as engine_train

    out = tmp_path / "out"
    weights = out / "pretrain/unetr-tiny/a/model.safetensors"

    def full_disk(cfg: object, **kwargs: object) -> dict:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(weights))

    monkeypatch.setattr(engine_train, "train", full_disk)
    path = write_study(study_dir / "full.yaml")
    result = run_cli(["sweep", path, "--out", out], capsys)
    assert result.code == 2
    assert f"FAILED pretrain/unetr-tiny/a: {weights}: no space left on device" in result.out
    assert "Traceback" not in result.out + result.err
    assert not [r for r in caplog.records if r.levelname == "ERROR"]  # not logged as a bug


@pytest.mark.e2e
def test_an_archived_study_restores_into_a_sweep_with_nothing_to_redo(study_dir: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    script = Path(__file__).resolve().parents[2] / "experiments" / "archive_study.py"
    spec = importlib.util.spec_from_file_location("archive_study", script)
    archive_study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(archive_study)

    path = write_study(study_dir / "archived.yaml")
    out, archive, restored = tmp_path / "out", tmp_path / "archive", tmp_path / "restored"
    assert run_cli(["sweep", path, "--out", out], capsys).code == 0
    unfinished = out / "runs/unetr-tiny/a-to-a/lora/seed0"
    (unfinished / "final.json").unlink()  # an interrupted run: it cannot travel without its checkpoints
    assert archive_study.main(["save", str(out), str(archive)]) == 0
    saved = {str(p.relative_to(archive)) for p in archive.rglob("*") if p.is_file()}
    assert "pretrain/unetr-tiny/a/model.safetensors" in saved  # the source model, to fine-tune from
    assert not [p for p in saved if "checkpoints" in p or (p.startswith("runs/") and p.endswith(".safetensors"))]
    assert not [p for p in saved if p.startswith("runs/unetr-tiny/a-to-a/lora/")]
    assert "runs/unetr-tiny/a-to-a/full-ft/seed0/test_metrics.json" in saved

    assert archive_study.main(["restore", str(archive), str(restored)]) == 0
    again = run_cli(["sweep", path, "--out", restored], capsys)  # only the unfinished run is redone
    assert again.code == 0 and "4 jobs, 3 already finished, 1 to run" in again.out, again.out
    final = json.loads((restored / "runs/unetr-tiny/a-to-a/full-ft/seed0/final.json").read_text())
    assert final == json.loads((out / "runs/unetr-tiny/a-to-a/full-ft/seed0/final.json").read_text())
    assert archive_study.main(["restore", str(tmp_path / "missing"), str(restored)]) == 2
