"""The report's tables: markdown rendering and the paper-style method, Mix-PEFT and cost tables.

Each table function returns its ``results.json`` form with the markdown
(``markdown``, and ``markdown_percent`` for the Mix-PEFT tables) and a caption.

* Method table (paper Tables 1/2, :func:`method_table`): one row per method of
  a scope, mean ± std of PSNR, SSIM and NRMSE, paired tests against the
  baseline and No-FT (:mod:`petite.report.stats`), best and second best marked.
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
    METRICS,
    MIX_ORDER,
    NO_FT,
    Row,
    RunRecord,
    find_row,
    group_rows,
    method_order,
    no_ft_row,
)
from petite.report.stats import mark_best, paired_wilcoxon

HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "nrmse": False}
DIGITS = {"psnr": 2, "ssim": 3, "nrmse": 4}
METRIC_NAMES = {"psnr": "PSNR (dB)", "ssim": "SSIM", "nrmse": "NRMSE"}
COST_KEYS = ("time_per_epoch_s", "step_time_s", "peak_memory_mb", "peak_memory_added_mb")


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


def format_stat(mean: float, std: float | None, digits: int) -> str:
    """``mean ± std`` at ``digits`` decimals (``-`` for a missing or non-finite mean)."""
    if mean is None or not math.isfinite(mean):
        return "-"
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _emphasis(text: str, mark: str) -> str:
    return f"**{text}**" if mark == "best" else f"<u>{text}</u>" if mark == "second" else text


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _tick(bitfit: bool | None, family: str) -> str:
    if family in ("none", "full") or bitfit is None:
        return "-"
    return "✓" if bitfit else "✗"


def _fmt_num(value: float | None, digits: int) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    if digits >= 2 and 0 < abs(value) < 10 ** -digits * 10:
        return f"{value:.2g}"
    return f"{value:.{digits}f}"


# ----------------------------------------------------------------------------------------------------------------
# Tables


def method_table(runs: Sequence[RunRecord], model: str, pair: str, baseline: str = "Full-FT") -> dict[str, Any]:
    """A Table 1/2 style table (``results.json`` form plus ``markdown``) for the runs of one scope."""
    rows = group_rows(runs)
    ref, noft = find_row(rows, baseline), no_ft_row(rows)
    stats = {m: [row.stat(m) for row in rows] for m in METRICS}
    marks = {m: mark_best([s[0] for s in stats[m]], HIGHER_IS_BETTER[m], DIGITS[m]) for m in METRICS}
    out_rows: list[dict[str, Any]] = []
    cells: list[list[str]] = []
    for i, row in enumerate(rows):
        tests = {"baseline": paired_wilcoxon(row, ref) if ref is not None else
                 {"p": None, "n": 0, "seeds": [], "reason": f"no {baseline} runs"},
                 "no_ft": paired_wilcoxon(row, noft) if noft is not None else
                 {"p": None, "n": 0, "seeds": [], "reason": "no No-FT runs"}}
        out_rows.append({
            "method": row.method, "label": row.label, "family": row.family, "bitfit": row.bitfit,
            "encoder": row.encoder, "decoder": row.decoder, "percent": row.percent, "n_runs": len(row.runs),
            "seeds": row.seeds, "n_values": int(row.values("psnr").size),
            **{m: {"mean": stats[m][i][0], "std": stats[m][i][1], "mark": marks[m][i]} for m in METRICS},
            "p_vs_baseline": tests["baseline"], "p_vs_no_ft": tests["no_ft"],
            "runs": [r.rel for r in row.runs],
        })
        cells.append([row.method, _tick(row.bitfit, row.family), format_percent(row.percent),
                      *(_emphasis(format_stat(*stats[m][i], DIGITS[m]), marks[m][i]) for m in METRICS),
                      format_p(tests["baseline"]["p"]), format_p(tests["no_ft"]["p"]), str(len(row.runs))])
    header = ["Method", "BitFit", "% params", *(METRIC_NAMES[m] for m in METRICS), f"p vs {baseline}",
              f"p vs {NO_FT}", "runs"]
    n_subjects = len({(r.pair, s) for r in runs for s in r.subjects})
    seeds = sorted({r.seed for r in runs})
    scope = "pair, " if pair == ALL_PAIRS else ""
    where = pair if pair != ALL_PAIRS else f"{pair} ({', '.join(sorted({r.pair for r in runs}))}; methods run on each)"
    caption = (f"{model}, {where}: {n_subjects} test subjects, seeds {', '.join(map(str, seeds))}. Metric cells: "
               f"mean ± std (ddof 0) over every ({scope}seed, test subject) value of the method"
               f"{' (pooled over the pairs it was run on)' if pair == ALL_PAIRS else ''}. p: two-sided "
               f"Wilcoxon signed-rank test on PSNR, paired by {'(pair, subject)' if pair == ALL_PAIRS else 'subject'}"
               f", each subject's PSNR averaged over the seeds both methods share (No-FT, which trains nothing, "
               f"pairs with every seed); '-' for the reference itself, fewer than 2 pairs or identical values. "
               f"**Best** and <u>second best</u> per column over all rows (NRMSE: lower is better), ranked on the "
               f"printed values.")
    return {"model": model, "pair": pair, "baseline": baseline, "baseline_found": ref is not None,
            "rows": out_rows, "markdown": _md_table(header, cells), "caption": caption}


def mix_tables(runs: Sequence[RunRecord], model: str) -> list[dict[str, Any]]:
    """Paper Tables 6/7: PSNR (and % params) of each encoder x decoder method pair, one table per BitFit setting."""
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
        for enc in encoders:
            for dec in decoders:
                group = [r for r in chosen if r.encoder == enc and r.decoder == dec]
                from_single = False
                if not group and enc == dec and (enc, bitfit) in singles:
                    group, from_single = singles[(enc, bitfit)].runs, True
                if not group:
                    continue
                row = Row(f"{enc} + {dec}", "mix", bitfit, enc, dec, group)
                mean, std = row.stat("psnr")
                cells[(enc, dec)] = {"encoder": enc, "decoder": dec, "psnr": {"mean": mean, "std": std},
                                     "percent": row.percent, "n_runs": len(group), "seeds": row.seeds,
                                     "from_single": from_single}
        keys = list(cells)
        marks = mark_best([cells[k]["psnr"]["mean"] for k in keys], True, DIGITS["psnr"])
        for key, mark in zip(keys, marks):
            cells[key]["psnr"]["mark"] = mark
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
                prow.append(_emphasis(format_stat(cell["psnr"]["mean"], cell["psnr"]["std"], 2), cell["psnr"]["mark"])
                            + dagger)
                crow.append(format_percent(cell["percent"]) + dagger)
            psnr_rows.append(prow)
            pct_rows.append(crow)
        header = ["Encoder \\ Decoder", *decoders]
        caption = (f"{model}, Mix-PEFT {'with' if bitfit else 'without'} BitFit, all targets: test PSNR (dB), mean ± "
                   f"std (ddof 0) over every (pair, seed, test subject) value; rows = encoder method, columns = decoder "
                   f"method; **best**, <u>second best</u>. † = the single method on the whole model (the same method on "
                   f"both parts). The second table gives % trainable parameters.")
        tables.append({"model": model, "bitfit": bitfit, "encoders": encoders, "decoders": decoders,
                       "cells": list(cells.values()), "caption": caption,
                       "markdown": _md_table(header, psnr_rows), "markdown_percent": _md_table(header, pct_rows)})
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
            "markdown": _md_table(header, cells)}


__all__ = ["COST_KEYS", "DIGITS", "cost_table", "format_p", "format_percent", "format_stat", "method_table",
           "mix_tables"]
