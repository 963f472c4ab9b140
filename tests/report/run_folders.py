"""Run folders with known numbers on disk (config.yaml, final.json, test_metrics.json), for the report tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

PNG = b"\x89PNG\r\n\x1a\n"
SUBJECTS = ("s0", "s1", "s2")


def subject_values(base: float, seed: int, k: int) -> dict[str, dict[str, float]]:
    """Known, distinct per-subject metrics for one run."""
    out = {}
    for i, subject in enumerate(SUBJECTS):
        psnr = base + 0.37 * i + 0.11 * seed + 0.013 * k * (i + 1) ** 2
        out[subject] = {"psnr": psnr, "ssim": 0.9 + 0.01 * (psnr - 30) / 3, "nrmse": 0.03 - 0.001 * (psnr - 30)}
    return out


def write_run(folder: Path, *, extra: dict | None, spec: str, percent: float, subjects: dict | None,
              epochs: int = 2, seed: int = 0, init: str | None = "pre", datalist_path: str = "/data/4h/datalist.json",
              step: float = 0.2, memory: float = 1000.0) -> None:
    """A run folder; ``subjects=None`` leaves it unfinished (config.yaml only)."""
    folder.mkdir(parents=True)
    config = {"datalist": datalist_path, "out": str(folder), "spec": spec, "init": init, "seed": seed,
              "epochs": epochs, "model": "unetr", "preset": "small", "extra": extra or {}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    if subjects is None:
        return
    rows = [{"subject": s, **m} for s, m in subjects.items()]
    summary = {"n": len(rows), **{k: float(np.mean([r[k] for r in rows])) for k in ("psnr", "ssim", "nrmse")}}
    final = {"model": "unetr", "preset": "small", "spec": spec, "trainable": int(percent * 1000), "percent": percent,
             "epochs": epochs, "best_epoch": epochs, "best_val_psnr": 30.0, "test": summary, "time_s": 10.0 * epochs,
             "time_per_epoch_s": 10.0 if epochs else 0.0, "step_time_s": step if epochs else None,
             "peak_memory_mb": memory, "peak_memory_added_mb": memory / 10, "device": "cpu", "hparams": {},
             "crop_size": [32, 32, 32]}
    (folder / "final.json").write_text(json.dumps(final))
    (folder / "test_metrics.json").write_text(json.dumps({"summary": summary, "subjects": rows}))
