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
``checkpoints/last.json`` does.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from petite.atomic import write_text
from petite.documents import read_yaml
from petite.engine.config import TrainConfig
from petite.errors import UserError


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

    def prepare(self, cfg: TrainConfig, resume: bool, overwrite: bool) -> bool:
        """Create the folder (writing ``config.yaml``) or check it may be continued; returns whether to resume.

        Raises:
            UserError: the path is a file; ``overwrite`` of a folder that is not a run; a finished
                run without ``overwrite``; ``resume`` with nothing to resume or another configuration;
                an interrupted run without ``resume`` or ``overwrite``.
        """
        root = self.root
        if root.exists() and not root.is_dir():
            raise UserError("output exists and is not a folder", root)
        if overwrite and root.exists():
            if not self.config.is_file() and any(root.iterdir()):
                raise UserError("refusing to clear a non-empty folder that is not a petite run", root)
            shutil.rmtree(root)
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
