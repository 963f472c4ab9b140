"""A small study file on disk, for the planner and sweep tests."""

from __future__ import annotations

from pathlib import Path

import yaml


def write_study(path: Path, **changes: object) -> Path:
    """A one-grid study on scanner ``a`` (``data/datalist.json`` beside the file), with top-level ``changes``."""
    study = {
        "name": "t",
        "data": {"datalists": {"a": "data/datalist.json"}},
        "train": {"crop_size": [16, 16, 16], "batch_size": 2, "device": "cpu"},
        "pretrain": {"epochs": 1},
        "finetune": {"epochs": 1},
        "grids": [{"name": "g", "models": ["unetr:tiny"], "pairs": ["a->a"],
                   "methods": ["no-ft", "full-ft", {"label": "LoRA", "spec": "lora"}], "seeds": [0]}],
    }
    study.update(changes)
    path.write_text(yaml.safe_dump(study))
    return path
