"""A training run folder: where each file lives, and whether a run may start, resume or be replaced.

::

    config.yaml           the resolved configuration
    metrics.jsonl         one line per epoch (loss, learning rate, validation metrics, time)
    tensorboard/          the same curves, when the tensorboard package is installed
    checkpoints/last.*    resumable state, written atomically after every epoch
    model.*               best full weights (pre-training, full fine-tuning), or
    adapter.*             best PEFT adapter (fine-tuning with a PEFT spec)
    test_metrics.csv/json per-subject test metrics, computed once at the end
    final.json            test summary, trainable parameters, timing, peak memory

A run is *finished* when ``final.json`` exists and *resumable* when
``checkpoints/last.json`` does.  ``config.yaml`` stores the datalist and the
base checkpoint (``init``) relative to the run folder, so a run folder moves
with its base; :func:`stored_path` reads them back.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from petite.atomic import write_text
from petite.documents import read_yaml
from petite.engine.config import TrainConfig
from petite.errors import UserError
from petite.locks import LOCK_NAME


def stored_path(run: str | Path, value: str | Path) -> Path:
    """A path as a run folder's ``config.yaml`` stores it (relative to the run folder), made usable."""
    path = Path(value)
    return path if path.is_absolute() else Path(run) / path


#: Settings stored as paths relative to the run folder.
PATH_SETTINGS = ("datalist", "init")


def changed_settings(run: str | Path, saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """Keys of ``wanted`` whose value differs from the run's saved ``config.yaml`` values (paths compared
    as the files they name, wherever the run folder now is).  ``out`` is not compared: it names the run
    folder itself, which may have moved (a study folder copied to another disk, or restored from an archive)."""
    changed = []
    for key, value in wanted.items():
        if key == "out":
            continue
        old = saved.get(key)
        if key in PATH_SETTINGS and old and value:
            if stored_path(run, old).resolve() != Path(value).resolve():
                changed.append(key)
        elif old != value:
            changed.append(key)
    return sorted(changed)


class RunFolder:
    """The paths of one run folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.config = self.root / "config.yaml"
        self.metrics = self.root / "metrics.jsonl"
        self.state = self.root / "checkpoints" / "last"
        self.final = self.root / "final.json"

    @property
    def finished(self) -> bool:
        return self.final.is_file()

    @property
    def resumable(self) -> bool:
        return self.state.with_suffix(".json").is_file()

    def prepare(self, cfg: TrainConfig, resume: bool, overwrite: bool, keep: tuple[str, ...] = ()) -> bool:
        """Create the folder (writing ``config.yaml``) or check it may be continued; returns whether to resume.

        ``overwrite`` clears what the run wrote except the entries named in ``keep``.

        Raises:
            UserError: the path is a file; ``overwrite`` of a folder that is not a run; a finished
                run without ``overwrite``; ``resume`` with nothing to resume or another configuration;
                an interrupted run without ``resume`` or ``overwrite``.
        """
        root = self.root
        if root.exists() and not root.is_dir():
            raise UserError("output exists and is not a folder", root)
        if overwrite and root.exists():
            content = [p for p in root.iterdir() if p.name != LOCK_NAME and p.name not in keep]
            if not self.config.is_file() and content:
                raise UserError("refusing to clear a non-empty folder that is not a petite run", root)
            # The folder stays (its lock file is held by this process): only what the run wrote goes.
            for path in content:
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        if self.finished:
            raise UserError("run already finished (final.json exists); pass --overwrite to redo it", root)
        if resume:
            if not self.resumable:
                raise UserError("nothing to resume (no checkpoints/last.json)", root)
            saved = read_yaml(self.config, "run config")
            changed = sorted(k for k, v in cfg.to_dict().items() if saved.get(k) != v)
            if changed:
                raise UserError(f"configuration differs from the interrupted run in: {', '.join(changed)}", self.config)
            return True
        if self.resumable:
            raise UserError("an interrupted run is here; pass --resume to continue or --overwrite", root)
        root.mkdir(parents=True, exist_ok=True)
        write_text(self.config, cfg.to_yaml())
        return False
