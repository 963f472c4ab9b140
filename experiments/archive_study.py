"""Keep a study's results in the repository, and put them back: the runs' records, not their volumes.

    python experiments/archive_study.py save study-runs/realistic-cpu experiments/study-runs/realistic-cpu
    python experiments/archive_study.py restore experiments/study-runs/realistic-cpu study-runs/realistic-cpu

A study on 2 CPU cores takes longer than one working session, and ``study-runs/`` is not tracked
(its volumes and weights run to gigabytes), so what a session ran was lost with its machine.
``save`` copies what ``petite report`` and ``petite sweep`` read from each run folder: every
JSON/YAML/log file (``final.json``, ``test_metrics.json``, ``config.yaml``, ``metrics.jsonl``, the lr
trials' records) and the source models' weights (``pretrain/*/model.safetensors`` + ``model.json``,
needed to fine-tune the runs still to do).  It leaves out the simulated data (``data/``: the sweep
re-simulates it, deterministically, from the study's seed), training checkpoints, fine-tuned weights
and locks.  ``restore`` copies the archive into a runs folder without overwriting a file there.

After ``restore``, ``petite sweep`` skips every archived run (its ``final.json`` is there), runs the
rest, and ``petite report`` tables them all; only the error-map figure needs fine-tuned weights, and
the report skips it (saying why) for runs restored from an archive.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

RECORD_SUFFIXES = {".json", ".jsonl", ".yaml", ".yml", ".log", ".txt", ".md"}
SKIP_DIRS = {"checkpoints", "data"}
LOCK = ".lock"


def archived(rel: Path) -> bool:
    """Whether the file at ``rel`` (relative to the runs folder) belongs in the archive."""
    if rel.name == LOCK or any(part in SKIP_DIRS for part in rel.parts[:-1]):
        return False
    if rel.suffix in RECORD_SUFFIXES:
        return True
    # The source models: fine-tuning starts from them, and pre-training one costs 15-25 minutes.
    return rel.parts[0] == "pretrain" and rel.name == "model.safetensors" and "lr-search" not in rel.parts


def finished(rel: Path, runs: set[Path]) -> bool:
    """Whether ``rel`` is a top-level file or lies in a finished run folder (one with ``final.json``).

    An unfinished run's own files are left out (restored without its checkpoints it could not resume);
    its finished lr trials (each a run folder with ``final.json``) are kept, and the sweep reuses them
    as it does after an interruption between trials."""
    return len(rel.parts) == 1 or any(parent in runs for parent in rel.parents)


def copy_tree(source: Path, dest: Path, select: bool, overwrite: bool) -> tuple[int, int]:
    """Copy (selected) files from ``source`` to ``dest``; returns (copied, kept because already there)."""
    runs = {final.parent.relative_to(source) for final in source.rglob("final.json")}
    copied = kept = 0
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        rel = path.relative_to(source)
        if select and not (archived(rel) and finished(rel, runs)):
            continue
        target = dest / rel
        if target.exists() and not overwrite:
            kept += 1
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
        copied += 1
    return copied, kept


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in ("save", "restore"):
        print("usage: archive_study.py save RUNS ARCHIVE | restore ARCHIVE RUNS", file=sys.stderr)
        return 2
    action, source, dest = argv[0], Path(argv[1]), Path(argv[2])
    if not source.is_dir():
        print(f"{source}: not a folder", file=sys.stderr)
        return 2
    # save refreshes the archive (runs finish, records change); restore never overwrites a run's files.
    copied, kept = copy_tree(source, dest, select=action == "save", overwrite=action == "save")
    print(f"{action}: {copied} files copied to {dest}" + (f", {kept} already there kept" if kept else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
