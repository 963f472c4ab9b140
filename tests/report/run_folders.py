"""Run folders with known numbers on disk (config.yaml, final.json, test_metrics.json), for the report tests.

By default the old final.json (epochs, whole-volume metrics only), which the report must still read; with
``masked=True`` and the other keywords, the fields the engine writes today (``engine/train.py``, end of ``_run``):
``steps``, ``converged``, masked metrics per subject, ``baselines`` with per-subject rows, ``lr_search``.
"""

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


def with_masked(values: dict[str, dict[str, float]], shift: float = 3.0) -> dict[str, dict[str, float]]:
    """The same subjects with masked metrics (PSNR ``shift`` dB lower inside the head)."""
    return {s: {**m, "psnr_masked": m["psnr"] - shift, "ssim_masked": m["ssim"] - 0.1,
                "nrmse_masked": m["nrmse"] * 2} for s, m in values.items()}


def baseline_entry(values: dict[str, dict[str, float]], per_subject: bool = True, **extra) -> dict:
    """A ``final.json`` baseline: the engine's summary (mean, std, n) plus, by default, the per-subject rows."""
    rows = [{"subject": s, **m} for s, m in values.items()]
    keys = sorted({k for m in values.values() for k in m})
    summary = {"n": len(rows), **{k: float(np.mean([r[k] for r in rows])) for k in keys},
               **{f"{k}_std": float(np.std([r[k] for r in rows])) for k in keys}}
    return {**summary, **({"subjects": rows} if per_subject else {}), **extra}


def write_run(folder: Path, *, extra: dict | None, spec: str, percent: float, subjects: dict | None,
              epochs: int = 2, seed: int = 0, init: str | None = "pre", datalist_path: str = "/data/4h/datalist.json",
              step: float = 0.2, memory: float = 1000.0, real: bool = False, converged: bool | None = None,
              baselines: dict | None = None, lr_search: dict | None = None) -> None:
    """A run folder; ``subjects=None`` leaves it unfinished (config.yaml only); ``real`` writes today's final.json
    (``steps`` = ``epochs`` x 10, ``converged``, ``baselines``, ``lr_search``)."""
    folder.mkdir(parents=True)
    config = {"datalist": datalist_path, "out": str(folder), "spec": spec, "init": init, "seed": seed,
              "epochs": epochs, "model": "unetr", "preset": "small", "extra": extra or {}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    if subjects is None:
        return
    rows = [{"subject": s, **m} for s, m in subjects.items()]
    keys = sorted({k for r in rows for k in r if k != "subject"})
    summary = {"n": len(rows), **{k: float(np.mean([r[k] for r in rows])) for k in keys}}
    if real:
        final = {"model": "unetr", "preset": "small", "spec": spec, "trainable": int(percent * 1000),
                 "percent": percent, "normalise": "input", "steps": 10 * epochs, "max_steps": 100, "val_every": 5,
                 "stopped": "patience" if converged else "max_steps", "converged": bool(converged),
                 "best_step": 10 * epochs, "best_val_psnr_masked": 27.0, "best_val_psnr": 30.0, "test": summary,
                 "baselines": baselines or {}, "time_s": 10.0 * epochs, "step_time_s": step if epochs else None,
                 "peak_memory_mb": memory, "peak_memory_added_mb": memory / 10, "device": "cpu",
                 "hparams": {"lr_policy": "paper", "lr_multiplier": (lr_search or {}).get("chosen", 1.0)},
                 "lr_search": lr_search, "crop_size": [32, 32, 32], "init_fingerprint": "abc", "probe": None}
        (folder / "final.json").write_text(json.dumps(final))
        (folder / "test_metrics.json").write_text(json.dumps({"summary": summary, "subjects": rows}))
        return
    final = {"model": "unetr", "preset": "small", "spec": spec, "trainable": int(percent * 1000), "percent": percent,
             "epochs": epochs, "best_epoch": epochs, "best_val_psnr": 30.0, "test": summary, "time_s": 10.0 * epochs,
             "time_per_epoch_s": 10.0 if epochs else 0.0, "step_time_s": step if epochs else None,
             "peak_memory_mb": memory, "peak_memory_added_mb": memory / 10, "device": "cpu", "hparams": {},
             "crop_size": [32, 32, 32]}
    (folder / "final.json").write_text(json.dumps(final))
    (folder / "test_metrics.json").write_text(json.dumps({"summary": summary, "subjects": rows}))
