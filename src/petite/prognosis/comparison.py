"""The demo's prognosis comparison: CT, CT+PET and CT+PET+clinical survival heads on a frozen encoder.

:func:`demo_step` is the last step of ``petite mm demo``
(:mod:`petite.demos.headneck`): it extracts encoder features of the demo's
CT-only and PEMMA segmenters (:mod:`petite.prognosis.features`), cross-validates
survival heads on them with and without clinical variables
(:mod:`petite.prognosis.crossval`) and reports the table, a Kaplan-Meier figure
and JSON/markdown (see its docstring).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from petite.atomic import write_json, write_text
from petite.errors import UserError
from petite.headneck.datalist import read_mm_datalist, split_names
from petite.headneck.synthetic import SOURCE as SYNTHETIC_SOURCE
from petite.headneck.synthetic import simulate_hn
from petite.prognosis.crossval import cross_validate, stratified_folds
from petite.prognosis.evaluation import bootstrap_c_index, bootstrap_c_index_difference, c_index_or_nan, mean_std
from petite.prognosis.features import extract_features, feature_names, load_cases
from petite.prognosis.outcome import outcome_of
from petite.prognosis.plots import km_figure
from petite.tables import render_table

#: The demo's three settings: name -> (features of which model, mode, with clinical variables).
DEMO_SETTINGS: dict[str, tuple[str, str, bool]] = {
    "CT": ("ct", "ct", False),
    "CT+PET": ("pemma", "ctpet", False),
    "CT+PET+clinical": ("pemma", "ctpet", True),
}


def _fmt(mean: float, std: float, digits: int = 3) -> str:
    """``"mean ± std"`` (``"n/a"`` for NaN)."""
    return "n/a" if math.isnan(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _pooled(row: Mapping[str, Any]) -> str:
    """Seed 0's pooled out-of-fold C-index with its bootstrap interval (``"-"`` where there is none)."""
    values, ci = row.get("pooled_c_index"), row.get("pooled_c_index_ci")
    if not values or math.isnan(values[0]):
        return "-"
    return f"{values[0]:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def _versus_ct(row: Mapping[str, Any]) -> str:
    """The row's pooled C-index minus CT's on the same patients, with its paired bootstrap interval."""
    delta, ci = row.get("pooled_vs_ct"), row.get("pooled_vs_ct_ci")
    if delta is None or math.isnan(delta):
        return "-"
    return f"{delta:+.3f}" + (f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "")


def _table(rows: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
    """(plain text, markdown) of the comparison rows."""
    header = ["Setting", "Features", "C-index", "Pooled OOF C-index [95 % CI]", "Pooled minus CT, paired [95 % CI]",
              "IBS", "Seeds"]
    body = [[r["setting"], r["features"], _fmt(r["c_index_mean"], r["c_index_std"]), _pooled(r), _versus_ct(r),
             _fmt(r["ibs_mean"], r["ibs_std"]), str(len(r["c_index"]))] for r in rows]
    return render_table(header, body)


def _cohort(out_dir: Path, datalist: Mapping[str, Any], n_patients: int, echo: Callable[[str], None]
            ) -> tuple[list[dict[str, Any]], str]:
    """The prognosis cohort: the datalist's patients if it has enough with outcomes, else a simulated one."""
    patients = [item for name in split_names(datalist) for item in datalist[name]]
    with_outcome = [i for i in patients if isinstance(i.get("clinical"), dict)
                    and i["clinical"].get("time") is not None and i["clinical"].get("event") is not None]
    if len(with_outcome) >= n_patients:
        return with_outcome, f"the datalist's {len(with_outcome)} patients with outcomes"
    if datalist.get("source") != SYNTHETIC_SOURCE:
        if len(with_outcome) < 12:
            raise UserError(f"only {len(with_outcome)} patients have a survival outcome; prognosis needs more")
        return with_outcome, f"the datalist's {len(with_outcome)} patients with outcomes"
    centres = list(datalist["centres"])
    per_centre = int(math.ceil(n_patients / len(centres)))
    seed = int(datalist.get("seed", 0)) + 1000
    size = datalist.get("size", "small")
    folder = out_dir / "prognosis_data"
    echo(f"prognosis: simulating a cohort of {per_centre * len(centres)} new patients "
         f"({per_centre} per centre {', '.join(centres)}, size {size}, seed {seed}) in {folder}")
    path = simulate_hn(folder, centres=centres, n_patients=per_centre, seed=seed,
                       size=size if isinstance(size, str) else tuple(size))
    cohort = read_mm_datalist(path)
    items = [item for name in split_names(cohort) for item in cohort[name]]
    return items, (f"{len(items)} new synthetic patients ({per_centre} per centre {', '.join(centres)}, "
                   f"seed {seed}, size {size}) in prognosis_data/, not used for segmentation training")


def demo_step(out_dir: str | Path, datalist: str | Path | Mapping[str, Any], models: Mapping[str, nn.Module],
              echo: Callable[[str], None] = print, *, n_patients: int = 90, seeds: Sequence[int] = (0, 1, 2, 3, 4),
              folds: int = 3, roi: int | Sequence[int] | None = None, region: str = "centre",
              references: bool = True, pet_norm: str = "zscore", epochs: int = 60,
              quick: bool = False) -> dict[str, Any]:
    """The demo's prognosis comparison: CT, CT+PET and CT+PET+clinical survival heads on a frozen encoder.

    Cohort: the demo's datalist has too few patients for survival (a C-index
    on a handful of test patients is noise), so unless it holds at least
    ``n_patients`` with outcomes, ``n_patients`` *new* synthetic patients are
    simulated from the same centres, at the same size, with the datalist's
    seed + 1000 (not the segmentation training patients) into
    ``out_dir/prognosis_data``.  Features: ``models["ct"]`` (the CT-only
    segmenter) in ``"ct"`` mode and ``models["pemma"]`` in ``"ctpet"`` mode,
    extracted once per model (:func:`extract_features`, ``region``) and reused
    across seeds.  Evaluation: for each seed, stratified ``folds``-fold
    cross-validation over the whole cohort (folds drawn from the seed; head
    initialisation from the seed); a seed's C-index and IBS are the means over
    its folds; the table gives mean ± std over ``seeds``.  ``references``
    adds rows for reading the table: clinical variables alone (MLP and ridge
    linear Cox) and the oracle (the true linear predictor of the hazard model, synthetic data only; no training).
    Writes ``out_dir/report/prognosis_km.png`` (CT+PET+clinical, seed 0's
    out-of-fold risks, median split), ``prognosis.json`` and ``prognosis.md``.
    ``quick`` (the demo's smoke test): at most 24 patients, 2 seeds, 2 folds, 30 epochs.

    Returns ``{"rows", "table", "markdown", "km_png", "logrank_p", "cohort", "seconds", ...}``.
    """
    started = time.perf_counter()
    if quick:
        n_patients, seeds, folds, epochs = min(int(n_patients), 24), list(seeds)[:2], 2, min(int(epochs), 30)
    out_dir = Path(out_dir)
    data = read_mm_datalist(datalist) if isinstance(datalist, (str, Path)) else datalist
    for key in ("ct", "pemma"):
        if key not in models:
            raise UserError(f"demo_step needs models['ct'] and models['pemma']; missing {key!r}")
    seeds = [int(s) for s in seeds]
    items, cohort = _cohort(out_dir, data, int(n_patients), echo)
    patients = [str(i["patient"]) for i in items]
    records = [dict(i["clinical"]) for i in items]
    t, e = outcome_of(records, patients)
    echo(f"prognosis: {len(items)} patients, {int(e.sum())} relapses; loading volumes")
    cases = load_cases(items, pet_norm)
    seconds: dict[str, float] = {"cohort": time.perf_counter() - started}
    features: dict[str, np.ndarray] = {}
    names: dict[str, list[str]] = {}
    for key, mode in (("ct", "ct"), ("pemma", "ctpet")):
        tick = time.perf_counter()
        features[key] = extract_features(models[key], cases, mode, roi, region=region)
        names[key] = feature_names(models[key])
        seconds[f"features_{key}"] = time.perf_counter() - tick
        echo(f"prognosis: {key} features ({mode}) {features[key].shape[1]} columns in "
             f"{seconds[f'features_{key}']:.1f} s")
    del cases
    tick = time.perf_counter()
    settings = [(name, *DEMO_SETTINGS[name], "mlp") for name in DEMO_SETTINGS]
    settings.append(("CT+PET+clinical, linear Cox branch", "pemma", "ctpet", True, "linear"))
    if references:
        settings.append(("clinical only (reference)", None, None, True, "mlp"))
        settings.append(("clinical only, ridge Cox (reference)", None, None, True, "linear"))
    rows: list[dict[str, Any]] = []
    oof: dict[str, np.ndarray] = {}
    for name, key, mode, use_clinical, branch in settings:
        feats = features[key] if key else None
        result = cross_validate(feats, records, t, e, use_clinical=use_clinical, seeds=seeds, folds=folds,
                                epochs=int(epochs), clinical_branch=branch, **({"names": names[key]} if key else {}))
        described = ((f"{key} model, {mode} mode" if key else "none")
                     + (f" + clinical ({'MLP' if branch == 'mlp' else 'ridge linear Cox'})" if use_clinical else ""))
        c_mean, c_std = mean_std(result["c_index"])
        i_mean, i_std = mean_std(result["ibs"])
        rows.append({"setting": name, "features": described, "c_index": result["c_index"], "ibs": result["ibs"],
                     "c_index_mean": c_mean, "c_index_std": c_std, "ibs_mean": i_mean, "ibs_std": i_std,
                     "pooled_c_index": result["pooled_c_index"], "pooled_c_index_ci": result["pooled_c_index_ci"]})
        oof[name] = result["oof_risk"]
        echo(f"prognosis: {name}: C-index {_fmt(c_mean, c_std)}, IBS {_fmt(i_mean, i_std)}")
    if references and all(isinstance(i.get("facts", {}).get("hazard"), dict) for i in items):
        eta = np.array([i["facts"]["hazard"]["eta"] for i in items], dtype=float)
        c_oracle = []
        for seed in seeds:
            fold = stratified_folds(e, folds, seed)
            c_oracle.append(float(np.nanmean([c_index_or_nan(t[fold == f], eta[fold == f], e[fold == f])
                                              for f in range(folds)])))
        c_mean, c_std = mean_std(c_oracle)
        rows.append({"setting": "oracle (true hazard, reference)", "features": "true linear predictor",
                     "c_index": c_oracle, "ibs": [math.nan] * len(seeds), "c_index_mean": c_mean,
                     "c_index_std": c_std, "ibs_mean": math.nan, "ibs_std": math.nan,
                     "pooled_c_index": [c_index_or_nan(t, eta, e)],
                     "pooled_c_index_ci": bootstrap_c_index(t, eta, e)})
        oof[rows[-1]["setting"]] = eta
    # Paired against CT: the same patients (and seed 0's folds) score both risks, per bootstrap resample.
    for row in rows:
        if row["setting"] != "CT":
            row["pooled_vs_ct"], row["pooled_vs_ct_ci"] = bootstrap_c_index_difference(t, oof[row["setting"]],
                                                                                       oof["CT"], e)
    seconds["heads"] = time.perf_counter() - tick
    report = out_dir / "report"
    report.mkdir(parents=True, exist_ok=True)
    km_png: Path | None = report / "prognosis_km.png"
    # Threshold 0 = each fold's training median (crossval module docstring): no test patient sets it, so
    # every patient may land on one side, and then there is no figure to draw.
    high = oof["CT+PET+clinical"] > 0
    if high.any() and not high.all():
        km = km_figure(km_png, t, e, oof["CT+PET+clinical"], threshold=0.0,
                       title=f"CT+PET+clinical, out-of-fold risk (seed {seeds[0]}, {folds}-fold CV, training-fold "
                             f"median split)")
    else:
        km_png, km = None, {"p_value": None}
        echo("prognosis: every out-of-fold risk falls on one side of its training median; no Kaplan-Meier figure")
    table, markdown = _table(rows)
    seconds["total"] = time.perf_counter() - started
    note = (f"Relapse-free survival, {cohort}; {int(e.sum())} relapses. Survival heads on frozen encoder features "
            f"(window region {region!r}), {folds}-fold stratified CV repeated over seeds {seeds}; "
            f"mean ± std over seeds of the per-seed mean over folds; pooled: all out-of-fold risks of seed {seeds[0]} "
            f"scored together, 95 % percentile bootstrap over patients; minus CT: the pooled C-index difference on "
            f"the same patients, paired bootstrap (both risks scored on each resample). Higher C-index, lower IBS "
            f"is better.")
    result = {"rows": rows, "table": table, "markdown": markdown, "note": note,
              "km_png": None if km_png is None else str(km_png),
              "logrank_p": km["p_value"], "cohort": cohort, "n": len(items), "events": int(e.sum()),
              "seeds": seeds, "folds": folds, "region": region, "seconds": seconds}
    write_json(report / "prognosis.json", result)
    write_text(report / "prognosis.md", f"## Prognosis\n\n{markdown}\n\n{note}\n")
    echo(f"prognosis: done in {seconds['total']:.0f} s\n{table}")
    return result


__all__ = ["DEMO_SETTINGS", "demo_step"]
