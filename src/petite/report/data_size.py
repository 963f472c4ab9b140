"""The data-size curve: test quality against the number of target subjects a method was fine-tuned on.

A hospital with few scans asks how many it needs.  A study answers with a grid
that lists ``train_subjects`` (:mod:`petite.study.plan`): each method fine-tuned
on the first 1, 2, 4, ... subjects of the target's training split, every run
scored on the same test subjects.  Runs of the method tables that used another
count (the main grid's) join their curve at that count.  The baselines that are
fitted on the training subjects (the target-fitted Gaussian filter, No-FT +
calibration) are read from the No-FT run at each count, so they see the same
subjects as the networks.

Each point is the mean over test subjects of the seed-averaged values
(:func:`petite.report.stats.subject_values`) with a 95 % percentile bootstrap
interval over subjects (:func:`petite.report.stats.bootstrap_ci`); the seed
spread is given beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from petite.report.collect import Row, RunRecord, baseline_rows, group_rows
from petite.report.stats import bootstrap_ci, spreads, subject_values

#: Rows a curve leaves out: flat lines that do not depend on the count would only crowd the figure.
_FLAT = ("Short scan", "Gaussian filter (source-fitted)")


def train_subjects(run: RunRecord) -> int | None:
    """How many training subjects ``run`` used (``final.json``, else its config; None when unknown)."""
    value = run.final.get("train_subjects", run.config.get("train_subjects"))
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def data_size_curves(curve_runs: Sequence[RunRecord], other_runs: Sequence[RunRecord], model: str,
                     metric: str = "psnr_masked") -> list[dict[str, Any]]:
    """One curve per pair that has data-size runs: ``{"model", "pair", "metric", "sizes", "series", "markdown"}``.

    ``other_runs``: the model's method-table runs; those of the curve's pair and methods join at their count.
    """
    curves = []
    for pair in sorted({r.pair for r in curve_runs}):
        runs = [r for r in curve_runs if r.pair == pair]
        methods = {(r.method, r.bitfit) for r in runs}
        runs += [r for r in other_runs if r.pair == pair and (r.method, r.bitfit) in methods]
        by_size: dict[int, list[RunRecord]] = {}
        for run in runs:
            n = train_subjects(run)
            if n is not None:
                by_size.setdefault(n, []).append(run)
        series: dict[str, list[dict[str, Any]]] = {}
        for n in sorted(by_size):
            rows: list[Row] = baseline_rows(by_size[n]) + group_rows(by_size[n])
            for row in rows:
                if row.label in _FLAT or not row.runs or not row.runs[0].subjects or not row.has(metric):
                    continue
                values = list(subject_values(row, metric).values())
                spread = spreads(row, metric)
                series.setdefault(row.label, []).append({
                    "n": n, "mean": spread["mean"], "ci": bootstrap_ci(values), "sd_seeds": spread["sd_seeds"],
                    "n_seeds": spread["n_seeds"], "n_subjects": spread["n_subjects"]})
        sizes = sorted(by_size)
        curves.append({"model": model, "pair": pair, "metric": metric, "sizes": sizes, "series": series,
                       "markdown": _markdown(series, sizes)})
    return curves


def _markdown(series: dict[str, list[dict[str, Any]]], sizes: Sequence[int]) -> str:
    head = "| Method | " + " | ".join(f"{n} subject{'s' if n > 1 else ''}" for n in sizes) + " |"
    lines = [head, "|---|" + "---|" * len(sizes)]
    for label, points in series.items():
        at = {p["n"]: p for p in points}
        cells = []
        for n in sizes:
            p = at.get(n)
            if p is None:
                cells.append("-")
                continue
            ci = f" [{p['ci'][0]:.2f}, {p['ci'][1]:.2f}]" if p["ci"] is not None else ""
            seeds = f" ({p['n_seeds']} seeds)" if p["n_seeds"] > 1 else ""
            cells.append(f"{p['mean']:.2f}{ci}{seeds}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def data_size_figure(curve: dict[str, Any], path: Path) -> dict[str, Any]:
    """Draw ``curve`` (mean and 95 % interval against the count, log2 x axis) to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 4.6))
    for label, points in curve["series"].items():
        xs = [p["n"] for p in points]
        ys = [p["mean"] for p in points]
        dashed = label in ("No-FT", "Gaussian filter (target-fitted)", "No-FT + calibration")
        line, = ax.plot(xs, ys, "--" if dashed else "-", marker="o", label=label)
        lows = [p["ci"][0] if p["ci"] else p["mean"] for p in points]
        highs = [p["ci"][1] if p["ci"] else p["mean"] for p in points]
        ax.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.15)
    ax.set_xscale("log", base=2)
    ax.set_xticks(curve["sizes"], [str(n) for n in curve["sizes"]])
    ax.set_xlabel("target subjects fine-tuned on")
    ax.set_ylabel("masked PSNR (dB)" if curve["metric"] == "psnr_masked" else curve["metric"])
    ax.set_title(f"{curve['model']}, {curve['pair']}: how many target subjects?")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return {"kind": "data_size", "model": curve["model"], "pair": curve["pair"], "path": path.name}


__all__ = ["data_size_curves", "data_size_figure", "train_subjects"]
