"""The report's figures drawn from collected runs: PSNR vs % parameters, and the runs the error maps show.

* PSNR vs % parameters (:func:`params_figure`): per method, each seed's value
  is the mean of its runs' test-PSNR means (over pairs); the point is the mean
  over seeds and the error bar their std (ddof 0).  No-FT (0 %) is a dashed line.
* Error maps (:func:`error_maps_for_model`, paper Fig. 4): which pair, subject
  and runs to show; the predictions are recomputed from the saved weights by
  :func:`petite.report.error_maps.run_error_maps`, drawn by
  :mod:`petite.report.figures`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from petite.engine.run_folder import stored_path
from petite.errors import UserError
from petite.report.collect import (
    ALL_PAIRS,
    NO_FT,
    Row,
    RunRecord,
    find_row,
    group_rows,
    no_ft_row,
)


def figure_slug(text: str) -> str:
    """``text`` as part of a file name (``1h->4h`` -> ``1h-to-4h``, other unsafe characters -> ``_``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text.replace("->", "-to-")).strip("_") or "x"


def params_figure(rows: Sequence[Row], model: str, path: Path, scope: str = ALL_PAIRS) -> dict[str, Any]:
    """PSNR vs % trainable parameters (log x), one point per method, No-FT as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"full": "black", "single": "tab:blue", "preset": "tab:red", "mix": "tab:green", "run": "tab:purple"}
    points, noft = [], None
    for row in rows:
        per_seed: dict[int, list[float]] = {}
        for run in row.runs:
            per_seed.setdefault(run.seed, []).append(run.run_mean("psnr"))
        seed_values = np.array([np.mean(v) for _, v in sorted(per_seed.items())])
        point = {"method": row.label, "family": row.family, "percent": row.percent,
                 "psnr": float(seed_values.mean()), "psnr_std_over_seeds": float(seed_values.std()),
                 "n_seeds": int(seed_values.size)}
        if row.family == "none" or row.percent <= 0:
            noft = point if noft is None and row.family == "none" else noft
            continue
        points.append(point)
    fig, ax = plt.subplots(figsize=(7.0, 4.6))
    for p in points:
        colour = colours.get(p["family"], "tab:gray")
        ax.errorbar(p["percent"], p["psnr"], yerr=p["psnr_std_over_seeds"], fmt="o", color=colour, capsize=3, ms=5)
        ax.annotate(p["method"], (p["percent"], p["psnr"]), xytext=(5, 3), textcoords="offset points", fontsize=7)
    if noft is not None:
        ax.axhline(noft["psnr"], color="gray", linestyle="--", linewidth=1)
        ax.annotate(f"{NO_FT} ({noft['psnr']:.2f} dB)", (0.99, noft["psnr"]), xycoords=("axes fraction", "data"),
                    xytext=(0, 3), textcoords="offset points", fontsize=7, color="gray", ha="right")
    ax.set_xscale("log")
    ax.set_xlabel("% trainable parameters (log scale)")
    ax.set_ylabel("test PSNR (dB)")
    ax.set_title(f"{model}, {scope}: PSNR vs trainable parameters (mean ± std over seeds)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=130, format="png", facecolor="white")
    plt.close(fig)
    return {"kind": "psnr_vs_params", "model": model, "scope": scope, "path": path.name, "points": points,
            "no_ft": noft}


def _weights_problem(run: RunRecord) -> str | None:
    """Why ``run``'s weights cannot be loaded, or None."""
    from petite.engine.infer import resolve_checkpoint

    if (run.path / "model.safetensors").is_file():
        return None
    init = run.config.get("init")
    if not init:
        return f"{run.rel}: no model.safetensors and no base checkpoint"
    base = resolve_checkpoint(stored_path(run.path, init))
    stem = base.with_suffix("") if base.suffix == ".safetensors" else base
    if not Path(f"{stem}.safetensors").is_file():
        return f"{run.rel}: base checkpoint {init} not found"
    if run.trains_nothing or (run.path / "adapter.safetensors").is_file():
        return None
    return f"{run.rel}: no adapter.safetensors"


def error_maps_for_model(runs: Sequence[RunRecord], model: str,
                         out_dir: Path) -> tuple[dict[str, Any] | None, str | None]:
    """Fig. 4 for one model: the pair with the most methods, first test subject, No-FT, Full-FT, PETITE
    and the best single method, lowest seed each.  Returns (figure info, None) or (None, why skipped)."""
    pairs = sorted({r.pair for r in runs})
    counts = {p: len(group_rows(r for r in runs if r.pair == p)) for p in pairs}
    pair = max(pairs, key=lambda p: counts[p])  # max keeps the first of equals
    rows = group_rows(r for r in runs if r.pair == pair)
    chosen: list[Row] = []
    for pick in (no_ft_row(rows), find_row(rows, "Full-FT"), next((r for r in rows if r.family == "preset"), None)):
        if pick is not None:
            chosen.append(pick)
    singles = [r for r in rows if r.family == "single"]
    if singles:
        chosen.append(max(singles, key=lambda r: r.stat("psnr")[0]))
    if not chosen:
        return None, f"{model} {pair}: no No-FT, Full-FT, PETITE or single-method runs"
    selected = {row.label: min(row.runs, key=lambda r: r.seed) for row in chosen}
    problems = [p for p in (_weights_problem(r) for r in selected.values()) if p]
    first = next(iter(selected.values()))
    datalist = stored_path(first.path, str(first.config.get("datalist", "")))
    if not datalist.is_file():
        problems.append(f"datalist {datalist} not found")
    if problems:
        return None, f"error maps for {model} {pair} skipped: " + "; ".join(problems)
    from petite.report.error_maps import run_error_maps

    name = f"error_maps_{figure_slug(model)}_{figure_slug(pair)}.png"
    seeds = ", ".join(f"{label} seed {run.seed}" for label, run in selected.items())
    try:
        info = run_error_maps(out_dir / name, datalist, {label: run.path for label, run in selected.items()},
                              split=str(first.config.get("test_split") or "test"),
                              title=lambda subject: f"{model}, {pair}, test subject {subject} (PSNR dB / SSIM)")
    except (UserError, OSError) as err:
        return None, f"error maps for {model} {pair} skipped: {err}"
    info.update({"kind": "error_maps", "model": model, "pair": pair, "path": name,
                 "runs": {label: run.rel for label, run in selected.items()}, "seeds": seeds})
    return info, None


__all__ = ["error_maps_for_model", "figure_slug", "params_figure"]
