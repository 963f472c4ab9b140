"""The report's tables: the method, declared-comparison, Mix-PEFT and cost tables, in markdown.

Each table function returns its ``results.json`` form with the markdown
(``markdown``, ``markdown_percent`` for the Mix-PEFT tables) and a caption.
Statistics are those of :mod:`petite.report.stats`; tables are rendered by
:func:`petite.tables.render_table` (header row, ``|---|`` separator).

* Method table (paper Tables 1/2, :func:`method_table`): one row per method of
  a scope, after the classical baselines of the runs' ``final.json`` (short
  scan, fitted Gaussian filter; No-FT + calibration when the No-FT runs have
  it).  Metric cells are means over test subjects of seed-averaged values:
  masked PSNR and SSIM first (they rank), then the whole-volume PSNR, SSIM and
  NRMSE; the seed and subject spreads of the ranking metric in their own
  columns; the paired difference against Full-FT and No-FT with its 95 %
  bootstrap interval; whether the runs converged and the lr ``lr: auto`` chose.
  **Bold** = best, resolved against the runner-up; ``=`` = tied for best.
* Declared comparisons (:func:`comparison_table`): the only p-values, Holm-
  corrected over the table's comparisons, with n and the smallest p n allows.
* Mix-PEFT table (paper Tables 6/7, :func:`mix_tables`): rows = encoder method,
  columns = decoder method, pooled over pairs; an empty diagonal cell (same
  method on both parts) is filled from the single-method row with the same
  BitFit setting (a bare method covers the whole model), marked †.
* Cost table (paper Table 5, :func:`cost_table`): means over runs of
  ``final.json``'s time per epoch, median step time, peak memory and peak
  memory added, with ratios to the baseline (Full-FT by default) for step time
  and peak memory.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from petite.report.collect import (
    ALL_PAIRS,
    BASELINES,
    METRICS,
    MIX_ORDER,
    NO_FT,
    Row,
    RunRecord,
    baseline_rows,
    find_row,
    group_rows,
    method_order,
    no_ft_row,
)
from petite.report.stats import (
    ALPHA,
    LEVEL,
    N_BOOT,
    compare,
    declared_tests,
    mark_best,
    spreads,
)
from petite.tables import render_table

HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "nrmse": False, "psnr_masked": True, "ssim_masked": True,
                    "nrmse_masked": False}
DIGITS = {"psnr": 2, "ssim": 3, "nrmse": 4, "psnr_masked": 2, "ssim_masked": 3, "nrmse_masked": 4}
METRIC_NAMES = {"psnr": "PSNR (dB)", "ssim": "SSIM", "nrmse": "NRMSE", "psnr_masked": "PSNR head (dB)",
                "ssim_masked": "SSIM head", "nrmse_masked": "NRMSE head"}
COST_KEYS = ("time_per_epoch_s", "step_time_s", "peak_memory_mb", "peak_memory_added_mb")
TIE = "="
MARK_LEGEND = (f"**Bold**: best in its column, resolved: the paired {LEVEL:.0%} interval of its difference to the "
               f"runner-up excludes 0. `{TIE}`: tied for best (no resolved best; the row's interval against the top "
               f"row includes 0).")


# ----------------------------------------------------------------------------------------------------------------
# Cell formatting


def format_p(p: float | None) -> str:
    """``0.031``; ``<1e-3`` below 0.001; ``-`` when there is no p-value."""
    if p is None:
        return "-"
    return "<1e-3" if p < 1e-3 else f"{p:.3f}"


def format_percent(p: float | None) -> str:
    """% of parameters: 2 decimals, 3 significant digits below 0.1, ``0`` for none."""
    if p is None or not math.isfinite(p):
        return "-"
    if p == 0:
        return "0"
    return f"{p:.3g}" if abs(p) < 0.1 else f"{p:.2f}"


def format_stat(mean: float | None, std: float | None, digits: int) -> str:
    """``mean ± std`` at ``digits`` decimals (``-`` for a missing or non-finite mean)."""
    if mean is None or not math.isfinite(mean):
        return "-"
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def format_diff(result: dict[str, Any] | None, digits: int) -> str:
    """``+0.52 [+0.31, +0.70]`` (paired mean difference and interval); ``-`` without one."""
    if result is None or result.get("diff") is None:
        return "-"
    text = f"{result['diff']:+.{digits}f}"
    if result.get("ci") is not None:
        lo, hi = result["ci"]
        text += f" [{lo:+.{digits}f}, {hi:+.{digits}f}]"
    return text


def _emphasis(text: str, mark: str) -> str:
    if text == "-":
        return text
    return f"**{text}**" if mark == "best" else f"{text} {TIE}" if mark == "tie" else text


def _tick(bitfit: bool | None, family: str) -> str:
    if family in ("none", "full", "baseline") or bitfit is None:
        return "-"
    return "✓" if bitfit else "✗"


def _fmt_num(value: float | None, digits: int) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    if digits >= 2 and 0 < abs(value) < 10 ** -digits * 10:
        return f"{value:.2g}"
    return f"{value:.{digits}f}"


def _converged(row: Row) -> str:
    counts = row.converged
    return "-" if counts is None else f"{counts[0]}/{counts[1]}"


def _lr(row: Row) -> str:
    return ", ".join(f"×{m:g}" for m in row.lr_chosen) or "-"


def rank_metric(rows: Sequence[Row]) -> str:
    """``psnr_masked`` when every row with runs has it, else ``psnr`` (run folders from before masked metrics)."""
    measured = [r for r in rows if r.runs]
    return "psnr_masked" if measured and all(r.has("psnr_masked") for r in measured) else "psnr"


def _row_mean(row: Row, metric: str) -> float | None:
    if row.summary is not None:
        return row.summary.get(metric)
    return spreads(row, metric)["mean"] if row.has(metric) else None


# ----------------------------------------------------------------------------------------------------------------
# Tables


def scope_rows(runs: Sequence[RunRecord]) -> list[Row]:
    """A scope's rows in table order: short scan, Gaussian filter, No-FT, No-FT + calibration, then the methods."""
    rows = group_rows(runs)
    bases = {row.method: row for row in baseline_rows(runs)}
    ordered = [bases[label] for key, label in BASELINES.items() if key != "calibration" and label in bases]
    calibration = bases.get(BASELINES["calibration"])
    for row in rows:
        ordered.append(row)
        if row.family == "none" and calibration is not None:
            ordered.append(calibration)
            calibration = None
    if calibration is not None:
        ordered.insert(len(bases) - 1, calibration)
    return ordered


def default_comparisons(rows: Sequence[Row], baseline: str) -> list[tuple[str, str]]:
    """Every method (not a baseline, not post hoc) against ``baseline`` and against No-FT, by label."""
    ref, noft = find_row(rows, baseline), no_ft_row(rows)
    out: list[tuple[str, str]] = []
    for row in rows:
        if row.family == "baseline":
            continue
        for other in (ref, noft):
            if other is not None and other is not row and not (row is noft and other is ref):
                out.append((row.label, other.label))
    return out


def _resolve(rows: Sequence[Row], name: str) -> Row | None:
    return next((r for r in rows if r.label == name), None) or find_row(rows, name)


def method_table(runs: Sequence[RunRecord], model: str, pair: str, baseline: str = "Full-FT",
                 comparisons: Sequence[Sequence[str]] | None = None,
                 post_hoc: Sequence[str] = ()) -> dict[str, Any]:
    """A Table 1/2 style table (``results.json`` form, ``markdown``, ``caption``) for the runs of one scope,
    with its declared comparisons (``comparisons``: (row, reference) labels; default :func:`default_comparisons`)
    in ``comparisons`` / ``comparisons_markdown``.  Rows labelled in ``post_hoc`` are shown but never marked best.
    """
    rows = scope_rows(runs)
    rank = rank_metric(rows)
    metrics = [*(m for m in ("psnr_masked", "ssim_masked") if rank == "psnr_masked"), *METRICS]
    ref, noft = find_row(rows, baseline), no_ft_row(rows)
    late = {name for name in post_hoc}
    is_post_hoc = [row.label in late or row.method in late for row in rows]
    summaries = {m: [spreads(row, m) if row.has(m) else None for row in rows] for m in metrics}
    means = {m: [_row_mean(row, m) for row in rows] for m in metrics}
    marks: dict[str, list[str]] = {}
    checks: dict[str, Any] = {}
    for m in metrics:
        eligible = [row if summaries[m][i] is not None and not is_post_hoc[i] else None for i, row in enumerate(rows)]
        marked = mark_best(eligible, m, HIGHER_IS_BETTER[m], means[m])
        marks[m], checks[m] = marked["marks"], {"best": marked["best"], "runner_up": marked["runner_up"],
                                                "check": marked["check"]}
    out_rows: list[dict[str, Any]] = []
    cells: list[list[str]] = []
    digits = DIGITS[rank]
    for i, row in enumerate(rows):
        paired = row.runs and row.has(rank)
        vs = {"baseline": compare(row, ref, rank) if paired and ref is not None and ref.has(rank) else None,
              "no_ft": compare(row, noft, rank) if paired and noft is not None and noft.has(rank) else None}
        spread = summaries[rank][i] or {}
        out_rows.append({
            "method": row.method, "label": row.label, "family": row.family, "bitfit": row.bitfit,
            "encoder": row.encoder, "decoder": row.decoder, "percent": row.percent, "n_runs": len(row.runs),
            "seeds": [] if row.trains_nothing else row.seeds, "post_hoc": is_post_hoc[i],
            "summary_only": row.summary is not None, "converged": row.converged, "lr_chosen": row.lr_chosen,
            **{m: {"mean": means[m][i], "sd_seeds": (summaries[m][i] or {}).get("sd_seeds"),
                   "sd_subjects": (summaries[m][i] or {}).get("sd_subjects"), "mark": marks[m][i]} for m in metrics},
            "vs_baseline": vs["baseline"], "vs_no_ft": vs["no_ft"],
            "runs": [r.rel for r in row.runs],
        })
        label = row.method + (" (post hoc)" if is_post_hoc[i] else "")
        cells.append([label, _tick(row.bitfit, row.family), format_percent(row.percent) if row.family != "baseline"
                      else "-",
                      *(_emphasis(format_stat(means[m][i], None, DIGITS[m]), marks[m][i]) for m in metrics),
                      format_stat(spread.get("sd_seeds"), None, digits), format_stat(spread.get("sd_subjects"), None,
                                                                                     digits),
                      "-" if row is ref else format_diff(vs["baseline"], digits),
                      "-" if row is noft else format_diff(vs["no_ft"], digits),
                      _converged(row), _lr(row), str(len(row.runs)) if row.family != "baseline" else "-"])
    short = METRIC_NAMES[rank].replace(" (dB)", "")
    header = ["Method", "BitFit", "% params", *(METRIC_NAMES[m] for m in metrics), f"SD seeds ({short})",
              f"SD subjects ({short})", f"Δ vs {baseline} [{LEVEL:.0%} CI]", f"Δ vs {NO_FT} [{LEVEL:.0%} CI]",
              "converged", "lr (auto)", "runs"]
    n_subjects = len({(r.pair, s) for r in runs for s in r.subjects})
    seeds = sorted({r.seed for r in runs})
    unit = "(pair, test subject)" if pair == ALL_PAIRS else "test subject"
    where = pair if pair != ALL_PAIRS else f"{pair} ({', '.join(sorted({r.pair for r in runs}))}; methods run on each)"
    summary_only = [row.label for row in rows if row.summary is not None]
    caption = (
        f"{model}, {where}: {n_subjects} test subjects, seeds {', '.join(map(str, seeds))}. Metric cells: mean over "
        f"each {unit} of its value averaged over the method's seeds; "
        f"{'PSNR head and SSIM head are inside the head mask and rank the methods' if rank == 'psnr_masked' else 'these runs have no masked metrics: whole-volume PSNR ranks'}"
        f". SD seeds: sample SD (ddof 1) over seeds of each seed's mean {short}; SD subjects: sample SD over "
        f"{unit}s of the seed-averaged {short} ('-' below 2 values; rows that train nothing have no seed spread). "
        f"Δ: mean paired difference in {short} (row minus reference) per {unit}, each side averaged over the seeds "
        f"both share (No-FT and the baselines pair with every seed), with a {LEVEL:.0%} percentile bootstrap "
        f"interval ({N_BOOT} resamples of {unit}s, fixed seed); intervals are not tests, are not corrected for "
        f"multiplicity, and with few subjects a percentile interval is narrower than its nominal coverage. converged: runs that stopped on patience / runs that say (the rest hit max_steps). "
        f"lr (auto): the multiplier `lr: auto` chose. {MARK_LEGEND} Rows that train nothing are ranked too; "
        f"post-hoc rows are not."
        + (f" {', '.join(summary_only)}: means from final.json's summaries (no per-subject values in these runs)."
           if summary_only else ""))
    names = [tuple(c) for c in comparisons] if comparisons is not None else default_comparisons(rows, baseline)
    declared = [(a, b) for a, b in names if _resolve(rows, a) is not None and _resolve(rows, b) is not None
                and _resolve(rows, a).runs and _resolve(rows, b).runs]  # type: ignore[union-attr]
    missing = [f"{a} vs {b}" for a, b in names if (a, b) not in declared]
    tests = declared_tests([(_resolve(rows, a), _resolve(rows, b)) for a, b in declared], rank)  # type: ignore[misc]
    comparison = comparison_table(tests, rank, declared=comparisons is not None, missing=missing)
    return {"model": model, "pair": pair, "baseline": baseline, "baseline_found": ref is not None,
            "rank_metric": rank, "rows": out_rows, "marks": checks, "markdown": render_table(header, cells)[1],
            "caption": caption, "comparisons": tests, "comparisons_missing": missing,
            "comparisons_markdown": comparison["markdown"], "comparisons_caption": comparison["caption"]}


def comparison_table(tests: Sequence[dict[str, Any]], metric: str, declared: bool,
                     missing: Sequence[str] = ()) -> dict[str, str]:
    """The declared comparisons of one scope: difference, interval, Holm-corrected p, n and what n allows."""
    digits = DIGITS[metric]
    cells = []
    for t in tests:
        if t["p"] is None:
            verdict = f"no test ({t['reason']})"
        elif not t["can_reach_alpha"]:
            verdict = f"n = {t['n_nonzero']} cannot reach p < {ALPHA:g}"
        elif t["min_p"] * len(tests) >= ALPHA:
            verdict = f"n = {t['n_nonzero']} cannot reach Holm p < {ALPHA:g} over {len(tests)} comparisons"
        elif t["significant"]:
            verdict = f"different (Holm p < {ALPHA:g})"
        else:
            verdict = "not resolved"
        cells.append([f"{t['row']} vs {t['ref']}", str(t["n"]), ", ".join(map(str, t["seeds"])) or "-",
                      format_diff({"diff": t["diff"], "ci": None}, digits),
                      "-" if t["ci"] is None else f"[{t['ci'][0]:+.{digits}f}, {t['ci'][1]:+.{digits}f}]",
                      format_p(t["p_holm"]) if t["p"] is not None else "-", format_p(t["min_p"]), verdict])
    header = ["Comparison", "n", "seeds", f"Δ {METRIC_NAMES[metric]}", f"{LEVEL:.0%} CI", "p (Holm)",
              "smallest p possible", "verdict"]
    source = ("declared in the study's `report: comparisons`" if declared else
              "the default set: every method against Full-FT and against No-FT (no `report: comparisons` declared)")
    caption = (f"Declared comparisons on {METRIC_NAMES[metric]} ({source}); only these are tested. Two-sided "
               f"Wilcoxon signed-rank test on the paired differences, p-values Holm-corrected over the {len(tests)} "
               f"comparisons of this table (a test that cannot be computed counts as p = 1); uncorrected p-values "
               f"are in results.json only. n: paired subjects; smallest p possible: 2 / 2^n for n non-zero "
               f"differences (an exact test with n = 5 cannot reach {ALPHA:g}, whatever the effect).")
    if missing:
        caption += f" Not in this scope: {', '.join(missing)}."
    md = render_table(header, cells)[1] if cells else "*No comparison to test in this scope.*"
    return {"markdown": md, "caption": caption}


def mix_tables(runs: Sequence[RunRecord], model: str) -> list[dict[str, Any]]:
    """Paper Tables 6/7: the ranking metric (and % params) of each encoder x decoder pair, one table per BitFit
    setting; best marked only where resolved (:func:`petite.report.stats.mark_best`)."""
    mixes = [r for r in runs if r.family == "mix" and r.encoder and r.decoder]
    singles = {(row.method, bool(row.bitfit)): row for row in group_rows(r for r in runs if r.family == "single")}
    tables = []
    for bitfit in sorted({bool(r.bitfit) for r in mixes}):
        chosen = [r for r in mixes if bool(r.bitfit) == bitfit]
        names = sorted({r.encoder for r in chosen} | {r.decoder for r in chosen},
                       key=lambda n: method_order(MIX_ORDER, n))
        encoders = [n for n in names if any(r.encoder == n for r in chosen)]
        decoders = [n for n in names if any(r.decoder == n for r in chosen)]
        cells: dict[tuple[str, str], dict[str, Any]] = {}
        cell_rows: dict[tuple[str, str], Row] = {}
        from_singles: set[tuple[str, str]] = set()
        for enc in encoders:
            for dec in decoders:
                group = [r for r in chosen if r.encoder == enc and r.decoder == dec]
                from_single = False
                if not group and enc == dec and (enc, bitfit) in singles:
                    group, from_single = singles[(enc, bitfit)].runs, True
                if not group:
                    continue
                cell_rows[(enc, dec)] = Row(f"{enc} + {dec}", "mix", bitfit, enc, dec, group)
                if from_single:
                    from_singles.add((enc, dec))
        rank = rank_metric(list(cell_rows.values()))
        keys = list(cell_rows)
        marked = mark_best([cell_rows[k] for k in keys], rank, True)
        for key, mark in zip(keys, marked["marks"]):
            row = cell_rows[key]
            cells[key] = {"encoder": key[0], "decoder": key[1], "metric": rank, rank: {**spreads(row, rank),
                          "mark": mark}, "percent": row.percent, "n_runs": len(row.runs), "seeds": row.seeds,
                          "from_single": key in from_singles}
        psnr_rows, pct_rows = [], []
        for enc in encoders:
            prow, crow = [f"**{enc}**"], [f"**{enc}**"]
            for dec in decoders:
                cell = cells.get((enc, dec))
                if cell is None:
                    prow.append("-")
                    crow.append("-")
                    continue
                dagger = " †" if cell["from_single"] else ""
                prow.append(_emphasis(format_stat(cell[rank]["mean"], None, DIGITS[rank]), cell[rank]["mark"])
                            + dagger)
                crow.append(format_percent(cell["percent"]) + dagger)
            psnr_rows.append(prow)
            pct_rows.append(crow)
        header = ["Encoder \\ Decoder", *decoders]
        pairs = sorted({r.pair for row in cell_rows.values() for r in row.runs})
        references = [row for row in scope_rows([r for r in runs if r.pair in pairs])
                      if row.family in ("baseline", "none", "full")]
        reference = "; ".join(f"{row.label} {format_stat(_row_mean(row, rank), None, DIGITS[rank])}"
                              for row in references if _row_mean(row, rank) is not None)
        caption = (f"{model}, Mix-PEFT {'with' if bitfit else 'without'} BitFit, pairs {', '.join(pairs)}: test "
                   f"{METRIC_NAMES[rank]}, mean over (pair, test subject) of values averaged over seeds (spreads in "
                   f"results.json); rows = encoder method, columns = decoder method. {MARK_LEGEND} † = the single "
                   f"method on the whole model (the same method on both parts). "
                   + (f"For reference, on the same pairs: {reference}. " if reference else "")
                   + "The second table gives % trainable parameters.")
        tables.append({"model": model, "bitfit": bitfit, "encoders": encoders, "decoders": decoders,
                       "metric": rank, "cells": list(cells.values()), "caption": caption,
                       "markdown": render_table(header, psnr_rows)[1],
                       "markdown_percent": render_table(header, pct_rows)[1]})
    return tables


def cost_table(runs: Sequence[RunRecord], model: str, baseline: str = "Full-FT") -> dict[str, Any]:
    """Paper Table 5: training cost per method (means over runs) and ratios to ``baseline``."""
    rows = group_rows(runs)

    def mean_of(row: Row, key: str) -> float | None:
        values = [r.final.get(key) for r in row.runs]
        values = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
        return float(np.mean(values)) if values else None

    ref = find_row(rows, baseline)
    ref_cost = {k: mean_of(ref, k) for k in COST_KEYS} if ref is not None else {}

    def ratio(value: float | None, key: str) -> float | None:
        base = ref_cost.get(key)
        return value / base if value is not None and base else None

    out_rows, cells = [], []
    for row in rows:
        cost = {k: mean_of(row, k) for k in COST_KEYS}
        step_ratio, mem_ratio = ratio(cost["step_time_s"], "step_time_s"), ratio(cost["peak_memory_mb"], "peak_memory_mb")
        out_rows.append({"method": row.method, "label": row.label, "family": row.family, "bitfit": row.bitfit,
                         "percent": row.percent, "n_runs": len(row.runs), **cost,
                         "step_time_ratio": step_ratio, "peak_memory_ratio": mem_ratio,
                         "devices": sorted({str(r.final.get("device")) for r in row.runs})})
        cells.append([row.method, _tick(row.bitfit, row.family), format_percent(row.percent),
                      _fmt_num(cost["time_per_epoch_s"], 1), _fmt_num(cost["step_time_s"], 3),
                      "-" if step_ratio is None else f"{step_ratio:.2f}", _fmt_num(cost["peak_memory_mb"], 0),
                      _fmt_num(cost["peak_memory_added_mb"], 0), "-" if mem_ratio is None else f"{mem_ratio:.2f}",
                      str(len(row.runs))])
    header = ["Method", "BitFit", "% params", "Time / epoch (s)", "Step time (s)", f"Step × {baseline}",
              "Peak memory (MB)", "Peak added (MB)", f"Memory × {baseline}", "runs"]
    devices = sorted({str(r.final.get("device")) for r in runs})
    caption = (f"{model}, training cost over all pairs: means over runs of final.json's time per epoch, median step "
               f"time, peak memory (GPU allocator peak on CUDA, process peak RSS on CPU) and peak memory added over "
               f"what the process held when training started; ratios to {baseline} (step time, peak memory). "
               f"Device(s): {', '.join(devices)}; wall-clock times depend on what else ran on the machine.")
    return {"model": model, "baseline": baseline, "rows": out_rows, "caption": caption,
            "markdown": render_table(header, cells)[1]}


__all__ = ["COST_KEYS", "DIGITS", "comparison_table", "cost_table", "default_comparisons", "format_diff", "format_p",
           "format_percent", "format_stat", "method_table", "mix_tables", "rank_metric", "scope_rows"]
