"""``petite report RUNS_DIR``: the paper's tables and figures from a folder of run folders.

:func:`make_report` puts the pieces together, one section per model:

* :mod:`petite.report.collect` finds, labels and groups the run folders;
* :mod:`petite.report.stats` holds the statistics: seed-averaged subjects, seed and
  subject spreads, paired bootstrap intervals, Holm-corrected tests of the
  declared comparisons, best marked only where resolved;
* :mod:`petite.report.tables` renders the method, comparison, Mix-PEFT and cost tables;
* :mod:`petite.report.run_figures` draws PSNR vs % parameters and picks the
  runs of the error-map figure (:mod:`petite.report.error_maps`).

Output (``report.md``, ``results.json`` and the PNGs) is built in a hidden
folder beside the destination and renamed into place
(:func:`petite.atomic.staged_folder`); an existing destination is replaced only
if it is an earlier report (``results.json`` of format ``petite-report/1``) and
``overwrite`` is set.

The comparisons that get p-values, and the rows added after seeing results
(``post_hoc``), come from a study file's ``report`` section
(:func:`petite.study.plan.report_settings`): ``study`` if given, else
``RUNS_DIR/study.yaml`` when present (``petite sweep`` copies the study there).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from petite.atomic import staged_folder, to_jsonable, write_json, write_text
from petite.errors import UserError
from petite.report.collect import (
    ALL_PAIRS,
    NO_FT,
    Collection,
    RunRecord,
    collect_runs,
    group_rows,
    pooled_runs,
)
from petite.report.data_size import data_size_curves, data_size_figure
from petite.report.run_figures import error_maps_for_model, figure_slug, params_figure
from petite.report.tables import cost_table, method_table, mix_tables
from petite.study.plan import read_report_settings
from petite.version import __version__

FORMAT = "petite-report/1"


def _is_report(folder: Path) -> bool:
    try:
        return json.loads((folder / "results.json").read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def check_destination(out: Path, overwrite: bool) -> None:
    """Refuse a destination that is a file, a non-report folder, or a report without ``overwrite``."""
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError("report destination exists and is not a folder", out)
    if not any(out.iterdir()):
        return
    if not _is_report(out):
        raise UserError("exists and is not a petite report folder; refusing to overwrite it", out)
    if not overwrite:
        raise UserError("already holds a report; pass --overwrite to replace it", out)


def make_report(runs_dir: str | Path, out: str | Path | None = None, *, baseline: str = "Full-FT",
                figures: bool = True, overwrite: bool = False, study: str | Path | None = None,
                echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Collect the runs under ``runs_dir`` and write the report folder ``out`` (default ``runs_dir/report``).

    Writes ``report.md``, ``results.json`` and the PNGs atomically (staging
    folder, then rename).  ``figures=False`` skips the error-map figures (which
    recompute predictions from the saved weights); the PSNR-vs-parameters plot
    is always drawn.  ``study``: the study file whose ``report`` section declares the comparisons (default
    ``RUNS_DIR/study.yaml`` when present).  Returns the content of ``results.json``.
    """
    runs_dir = Path(runs_dir)
    out = Path(out) if out is not None else runs_dir / "report"
    check_destination(out, overwrite)
    study_path = Path(study) if study is not None else runs_dir / "study.yaml"
    if study is not None and not study_path.is_file():
        raise UserError("study file not found", study_path)
    settings = read_report_settings(study_path) if study_path.is_file() else {"comparisons": None, "post_hoc": []}
    collection = collect_runs(runs_dir)
    say = echo or (lambda line: None)
    runs = collection.runs
    models = sorted({r.model_key for r in runs + collection.data_size})
    notes: list[str] = []
    results: dict[str, Any] = {
        "format": FORMAT, "petite_version": __version__, "runs_dir": str(runs_dir.resolve()),
        "baseline": baseline, "study": str(study_path) if study_path.is_file() else None,
        "comparisons_declared": settings["comparisons"], "post_hoc": settings["post_hoc"],
        "counts": {"run_folders": len(runs) + len(collection.pretrain) + len(collection.unfinished)
                   + len(collection.skipped) + len(collection.data_size), "reported": len(runs),
                   "data_size": len(collection.data_size), "pretrain": len(collection.pretrain),
                   "unfinished": len(collection.unfinished), "skipped": len(collection.skipped)},
        "models": models, "pairs": sorted({r.pair for r in runs}), "seeds": sorted({r.seed for r in runs}),
        "runs": [r.summary() for r in runs], "pretrain_runs": [r.rel for r in collection.pretrain],
        "unfinished": collection.unfinished, "skipped": collection.skipped,
        "method_tables": [], "mix_tables": [], "cost_tables": [], "data_size_curves": [], "figures": [],
        "notes": notes,
    }
    # check_destination has refused everything but an absent or empty folder, or an earlier report to overwrite.
    with staged_folder(out, overwrite) as staging:
        sections = [_model_section([r for r in runs if r.model_key == model], model, baseline, figures, staging,
                                   results, say, settings)
                    + _data_size_section([r for r in collection.data_size if r.model_key == model],
                                         [r for r in runs if r.model_key == model], model, staging, results)
                    for model in models]
        text = _header(collection, results) + "\n" + "\n".join(sections) + _footer(collection, notes)
        content = to_jsonable(results)
        write_text(staging / "report.md", text)
        write_json(staging / "results.json", content)
    say(f"report: {out} ({len(runs)} runs, {len(models)} model(s))")
    return content


def _model_section(model_runs: list[RunRecord], model: str, baseline: str, figures: bool, folder: Path,
                   results: dict[str, Any], say: Callable[[str], None], settings: dict[str, Any]) -> str:
    """The markdown section of one model; its tables, figures and notes are added to ``results``."""
    notes: list[str] = results["notes"]
    pairs = sorted({r.pair for r in model_runs})
    parts = [f"## {model}", ""]
    scopes = [(pair, [r for r in model_runs if r.pair == pair]) for pair in pairs]
    pooled = pooled_runs(model_runs)
    if pooled:
        scopes.append((ALL_PAIRS, pooled))
    for pair, scope_runs in scopes:
        table = method_table(scope_runs, model, pair, baseline, settings["comparisons"], settings["post_hoc"])
        if not table["baseline_found"]:
            notes.append(f"{model}, {pair}: no '{baseline}' runs, so no differences against it")
        results["method_tables"].append({k: v for k, v in table.items() if not k.endswith("markdown")})
        parts += [f"### {model}: {pair}", "", table["markdown"], "", table["caption"], "",
                  f"#### {model}: {pair}, declared comparisons", "", table["comparisons_markdown"], "",
                  table["comparisons_caption"], ""]
    for mix in mix_tables(model_runs, model):
        results["mix_tables"].append({k: v for k, v in mix.items() if not k.startswith("markdown")})
        parts += [f"### {model}: Mix-PEFT {'+ BitFit' if mix['bitfit'] else 'without BitFit'} (PSNR, dB)", "",
                  mix["markdown"], "", mix["caption"], "", mix["markdown_percent"], ""]
    cost = cost_table(model_runs, model, baseline)
    results["cost_tables"].append({k: v for k, v in cost.items() if k != "markdown"})
    parts += [f"### {model}: training cost", "", cost["markdown"], "", cost["caption"], ""]

    # One plot for the pooled targets, and one per pair that has more methods than the pool
    # (points must come from the same targets to be comparable).
    plot_scopes = [(ALL_PAIRS, pooled)] if pooled else []
    pooled_methods = len(group_rows(pooled)) if pooled else 0
    for pair in pairs:
        pair_runs = [r for r in model_runs if r.pair == pair]
        if len(group_rows(pair_runs)) > pooled_methods:
            plot_scopes.append((pair, pair_runs))
    parts += [f"### {model}: figures", ""]
    for scope, scope_runs in plot_scopes:
        suffix = "" if scope == ALL_PAIRS else f"_{figure_slug(scope)}"
        plot = params_figure(group_rows(scope_runs), model, folder / f"psnr_vs_params_{figure_slug(model)}{suffix}.png",
                             scope)
        results["figures"].append(plot)
        where = scope if scope != ALL_PAIRS else f"{scope} ({', '.join(sorted({r.pair for r in scope_runs}))})"
        parts += [f"![PSNR vs % trainable parameters, {model}, {scope}]({plot['path']})", "",
                  _params_caption(plot, where), ""]
    if figures:
        say(f"error maps for {model} (recomputing predictions from the saved weights)")
        info, why = error_maps_for_model(model_runs, model, folder)
        if info is not None:
            results["figures"].append(info)
            parts += [f"![error maps, {model}, {info['pair']}]({info['path']})", "",
                      f"Error maps (paper Fig. 4 layout): {model}, pair {info['pair']}, test subject "
                      f"{info['subject']}, predictions recomputed from the saved weights ({info['seeds']}); "
                      f"top: images, bottom: |prediction - long scan| on one shared scale.", ""]
        else:
            notes.append(why or "")
            parts += [f"*Error-map figure not drawn: {why}.*", ""]
    return "\n".join(parts)


def _data_size_section(curve_runs: list[RunRecord], model_runs: list[RunRecord], model: str, folder: Path,
                       results: dict[str, Any]) -> str:
    """The data-size curves of one model (table and figure per pair), or "" when it has no data-size runs."""
    parts: list[str] = []
    for curve in data_size_curves(curve_runs, model_runs, model):
        plot = data_size_figure(curve, folder / f"data_size_{figure_slug(model)}_{figure_slug(curve['pair'])}.png")
        results["data_size_curves"].append({k: v for k, v in curve.items() if k != "markdown"})
        results["figures"].append(plot)
        parts += [f"### {model}: {curve['pair']}, how many target subjects?", "", curve["markdown"], "",
                  "Masked PSNR (dB) on the same test subjects at each number of fine-tuning subjects: mean over "
                  "subjects of the seed-averaged values, [95 % bootstrap interval over subjects]; the "
                  "target-fitted Gaussian filter and the calibration are fitted on the same subjects as the "
                  "networks.", "", f"![data-size curve, {model}, {curve['pair']}]({plot['path']})", ""]
    return "\n" + "\n".join(parts) if parts else ""


def _params_caption(plot: dict[str, Any], where: str) -> str:
    """The caption of a PSNR-vs-parameters figure, naming only what the figure draws."""
    caption = (f"PSNR vs % trainable parameters (log axis), {where}: one point per method, mean over seeds of "
               "each seed's mean test PSNR over pairs, error bar = std over seeds (ddof 0)")
    if any(p["family"] == "full" for p in plot["points"]):
        caption += "; Full-FT at 100 %"
    if plot["no_ft"] is not None:
        caption += "; No-FT (0 %) as the dashed line"
    return caption + "."


def _header(collection: Collection, results: dict[str, Any]) -> str:
    counts = results["counts"]
    runs = collection.runs
    studies = sorted({str((r.config.get("extra") or {}).get("study")) for r in runs if r.labelled
                      and (r.config.get("extra") or {}).get("study")})
    subjects = sorted({len(r.subjects) for r in runs})
    lines = [f"# petite report: {collection.root.name or collection.root}", "",
             f"From `{results['runs_dir']}`: {counts['run_folders']} run folders; **{counts['reported']} finished "
             f"fine-tuning runs reported**, {counts['unfinished']} not finished, {counts['pretrain']} pre-training "
             f"run(s) (not tabulated), {counts['skipped']} finished without test metrics.", "",
             f"- models: {', '.join(results['models'])}",
             f"- pairs (source->target): {', '.join(results['pairs'])}",
             f"- seeds: {', '.join(map(str, results['seeds']))}",
             f"- test subjects per run: {', '.join(map(str, subjects))}",
             "- statistics: per-subject values averaged over seeds; paired differences against "
             f"{results['baseline']} and {NO_FT} with 95 % bootstrap intervals; Wilcoxon p-values, Holm-corrected, "
             "only for the "
             + ("comparisons declared in the study's `report: comparisons`" if results["comparisons_declared"]
                is not None else f"default comparisons (every method against {results['baseline']} and {NO_FT})")]
    if studies:
        lines.append(f"- studies: {', '.join(studies)}")
    unlabelled = sum(not r.labelled for r in runs)
    if unlabelled:
        lines.append(f"- {unlabelled} run(s) without sweep labels: method = spec string, source '?', target = "
                     f"the datalist's folder")
    lines += ["", f"Written by petite {__version__} (`petite report`); every number is also in `results.json`.", ""]
    return "\n".join(lines)


def _footer(collection: Collection, notes: list[str]) -> str:
    lines = [""]
    if collection.unfinished:
        lines += ["## Not finished", "", "Run folders without final.json (not reported):", ""]
        for item in collection.unfinished:
            what = f" ({item['method']}, seed {item['seed']})" if item.get("method") is not None else ""
            done = f", {item['epochs_done']} of {item['epochs']} epochs logged" if item.get("epochs") else ""
            lines.append(f"- `{item['path']}`{what}{done}")
        lines.append("")
    if collection.skipped:
        lines += ["## Skipped", ""] + [f"- `{s['path']}`: {s['reason']}" for s in collection.skipped] + [""]
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes if n] + [""]
    return "\n".join(lines)


__all__ = ["FORMAT", "check_destination", "make_report"]
