"""What ``petite data check`` reports about a datalist.

For each split: the number of subjects, the grids (shapes) and voxel spacings
(from the affines), and intensity statistics of the short and long scans
(min / mean / max / 99th percentile, and the ratio of the long scan's mean to
the short scan's).  Frames items are summarised as the pipeline sees them:
short = frame 0, long = mean of the frames.

Problems in the data (NaN/Inf, all-zero volumes, short/long grid mismatch,
frames that are not 4D) are *reported*, not raised, so one check lists them
all; only a file that cannot be read at all raises
:class:`~petite.errors.UserError`.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from petite.data.datalist import SPLITS, read_datalist
from petite.data.nifti import load_volume, voxel_spacing

STAT_KEYS = ("min", "mean", "max", "p99")


def _read(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Load a volume as float32 without rejecting bad values (they are reported instead)."""
    return load_volume(path, ndim=None, check_values=False)


def volume_stats(data: np.ndarray) -> dict[str, float | None]:
    """Min, mean, max and 99th percentile over the finite voxels (``None`` if there are none)."""
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return {key: None for key in STAT_KEYS}
    return {
        "min": float(finite.min()),
        "mean": float(finite.mean(dtype=np.float64)),
        "max": float(finite.max()),
        "p99": float(np.percentile(finite, 99)),
    }


def _volume_problems(name: str, data: np.ndarray) -> list[str]:
    problems = []
    bad = int(data.size - np.count_nonzero(np.isfinite(data)))
    if bad:
        problems.append(f"{name} has {bad} NaN/Inf voxels")
    if not np.any(data[np.isfinite(data)]):
        problems.append(f"{name} is all zeros")
    return problems


def _fmt_shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in shape)


def _fmt_spacing(spacing: tuple[float, ...]) -> str:
    return "x".join(f"{s:.4g}" for s in spacing)


def inspect_item(entry: dict[str, Any]) -> dict[str, Any]:
    """Shape, spacing, intensity statistics and problems of one datalist item (absolute paths)."""
    problems: list[str] = []
    if "frames" in entry:
        frames, affine = _read(entry["frames"])
        if frames.ndim == 4 and frames.shape[3] > 0:
            short, long = frames[..., 0], frames.mean(axis=3, dtype=np.float64).astype(np.float32)
        else:
            problems.append(f"frames should be 4D, got shape {frames.shape}")
            short = long = frames
        shape = tuple(frames.shape[:3])
        files = {"frames": entry["frames"]}
    else:
        short, affine = _read(entry["short"])
        long, long_affine = _read(entry["long"])
        shape = tuple(short.shape)
        if short.shape != long.shape:
            problems.append(f"short shape {_fmt_shape(short.shape)} differs from long shape {_fmt_shape(long.shape)}")
        elif not np.allclose(affine, long_affine, atol=1e-3):
            problems.append("short and long affines differ")
        files = {"short": entry["short"], "long": entry["long"]}
    problems += _volume_problems("short", short) + _volume_problems("long", long)
    short_stats, long_stats = volume_stats(short), volume_stats(long)
    ratio = None
    if short_stats["mean"] and long_stats["mean"] is not None:
        ratio = long_stats["mean"] / short_stats["mean"]
    return {
        "subject": entry["subject"],
        **files,
        "shape": list(shape),
        "spacing": [round(s, 6) for s in voxel_spacing(affine)],
        "short": short_stats,
        "long": long_stats,
        "long_short_ratio": ratio,
        "problems": problems,
    }


def _aggregate(items: list[dict[str, Any]], key: str) -> dict[str, float | None]:
    """Split-level summary: min of minima, mean of means, max of maxima, mean of p99s."""
    stats = [item[key] for item in items if item[key]["mean"] is not None]
    if not stats:
        return {k: None for k in STAT_KEYS}
    return {
        "min": min(s["min"] for s in stats),
        "mean": float(np.mean([s["mean"] for s in stats])),
        "max": max(s["max"] for s in stats),
        "p99": float(np.mean([s["p99"] for s in stats])),
    }


def inspect_datalist(path: str | Path) -> dict[str, Any]:
    """Per-split counts, shapes, spacings and intensity statistics of a datalist, with any problems."""
    datalist = read_datalist(path)
    report: dict[str, Any] = {
        "datalist": str(Path(path)),
        "scanner": datalist.get("scanner"),
        "seed": datalist.get("seed"),
        "n_subjects": 0,
        "splits": {},
        "problems": [],
    }
    for split in SPLITS:
        items = [inspect_item(entry) for entry in datalist.get(split, [])]
        ratios = [item["long_short_ratio"] for item in items if item["long_short_ratio"] is not None]
        report["splits"][split] = {
            "count": len(items),
            "shapes": dict(Counter(_fmt_shape(tuple(item["shape"])) for item in items)),
            "spacings": dict(Counter(_fmt_spacing(tuple(item["spacing"])) for item in items)),
            "short": _aggregate(items, "short"),
            "long": _aggregate(items, "long"),
            "long_short_ratio": float(np.mean(ratios)) if ratios else None,
            "items": items,
        }
        report["n_subjects"] += len(items)
        report["problems"] += [f"{split}/{item['subject']}: {p}" for item in items for p in item["problems"]]
    return report


def _fmt_num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _fmt_counts(counts: dict[str, int], unit: str = "") -> str:
    return ", ".join(f"{key}{unit} ({n})" for key, n in counts.items()) or "-"


def format_report(report: dict[str, Any]) -> str:
    """Human-readable text of :func:`inspect_datalist`'s report."""
    lines = [f"datalist {report['datalist']} (scanner {report['scanner']}, seed {report['seed']}): {report['n_subjects']} subjects"]
    for split, info in report["splits"].items():
        lines.append(f"{split}: {info['count']} subject{'' if info['count'] == 1 else 's'}")
        if not info["count"]:
            continue
        lines.append(f"  shapes    {_fmt_counts(info['shapes'])}")
        lines.append(f"  spacings  {_fmt_counts(info['spacings'], ' mm')}")
        for key in ("short", "long"):
            s = info[key]
            lines.append(f"  {key:<5}     " + "  ".join(f"{k} {_fmt_num(s[k])}" for k in STAT_KEYS))
        lines.append(f"  long/short mean ratio {_fmt_num(info['long_short_ratio'])}")
    if report["problems"]:
        lines.append(f"{len(report['problems'])} problem(s):")
        lines += [f"  {p}" for p in report["problems"]]
    else:
        lines.append("no problems found")
    return "\n".join(lines)
