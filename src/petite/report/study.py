"""``petite report RUNS_DIR``: the paper's tables and figures from a folder of run folders.

What is read
    Every folder under ``RUNS_DIR`` holding a training ``config.yaml`` (a
    mapping with ``datalist`` and ``spec``) is a run folder; the search does not
    descend into a run folder, nor into hidden folders.  A run is *finished*
    when it has ``final.json``; unfinished runs are counted and listed, never
    tabulated.  Per-subject test metrics come from ``test_metrics.json``.
    Labels come from ``config.yaml``'s ``extra`` (written by ``petite sweep``:
    model, preset, source, target, pair, method, family, bitfit, encoder,
    decoder, seed, role).  A run without labels (a plain ``petite finetune``)
    is still reported: model, preset, spec and % from ``final.json``, target =
    the name of the datalist's folder, source ``?``, seed from ``config.yaml``,
    method = the spec string with family ``run`` -- except the specs ``none``
    and ``full``, which are by definition No-FT and Full-FT.  Pre-training runs
    (``role: pretrain``, or no ``init``) are counted but not tabulated.

Statistics (the choices, stated once)
    * A table row = one (model, pair, method, BitFit) group; its metric cells are
      mean ± std over every (seed, test subject) value of the group (the "all
      targets" table pools every (pair, seed, subject) value).  std has ddof 0,
      as the engine's per-run summaries.
    * Paired tests: two-sided Wilcoxon signed-rank (``scipy.stats.wilcoxon``,
      ``zero_method="wilcox"``, scipy's default exact/normal choice) on PSNR,
      pairing by test subject (by (pair, subject) in "all targets").  Each
      subject's value is its mean over the seeds *both* methods have; a method
      that trains nothing (every run 0 epochs, i.e. No-FT) gives the same
      prediction for every seed, so it does not restrict the seeds of the other
      side.  The p-value is "-" for the reference itself, when fewer than 2
      pairs remain, or when every difference is zero (the test is undefined).
    * Best / second best per metric column: bold / underlined, over every row
      (No-FT and Full-FT included), ranked on the *displayed* (rounded) value,
      so rows that print the same number share the mark; NRMSE lower is better.
    * Mix-PEFT table (paper Tables 6/7): rows = encoder method, columns = decoder
      method, pooled over pairs; an empty diagonal cell (same method on both
      parts) is filled from the single-method row with the same BitFit setting
      (a bare method covers the whole model), marked †.
    * PSNR vs % parameters: per method, each seed's value is the mean of its
      runs' test-PSNR means (over pairs); the point is the mean over seeds and
      the error bar their std (ddof 0).  No-FT (0 %) is a dashed line.
    * Cost table (paper Table 5): means over runs of ``final.json``'s time per
      epoch, median step time, peak memory and peak memory added, with ratios
      to the baseline (Full-FT by default) for step time and peak memory.

Output is written into a temporary folder beside the destination and renamed
into place; an existing destination is replaced only if it is an earlier
report (``results.json`` of format ``petite-report/1``) and ``overwrite`` is set.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from petite import __version__
from petite.atomic import write_json, write_text
from petite.documents import read_json, read_yaml
from petite.errors import UserError

log = logging.getLogger("petite.report")

FORMAT = "petite-report/1"
METRICS = ("psnr", "ssim", "nrmse")
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "nrmse": False}
DIGITS = {"psnr": 2, "ssim": 3, "nrmse": 4}
METRIC_NAMES = {"psnr": "PSNR (dB)", "ssim": "SSIM", "nrmse": "NRMSE"}
FAMILY_ORDER = ("none", "full", "single", "preset", "mix", "run")
SINGLE_ORDER = ("LN", "BitFit", "LoRA", "DoRA", "Adapter", "SSF", "VPT")
MIX_ORDER = ("LoRA", "DoRA", "Adapter", "VPT", "SSF", "LN", "BitFit")
DISPLAY = {"layernorm": "LN", "ln": "LN", "bitfit": "BitFit", "lora": "LoRA", "dora": "DoRA", "adapter": "Adapter",
           "ssf": "SSF", "vpt": "VPT"}
NO_FT = "No-FT"
ALL_PAIRS = "all targets"


# ----------------------------------------------------------------------------------------------------------------
# Reading run folders


@dataclass
class Run:
    """One finished run folder, labelled."""

    path: Path
    rel: str
    model: str
    preset: str
    source: str
    target: str
    pair: str
    method: str
    family: str
    bitfit: bool | None
    encoder: str | None
    decoder: str | None
    seed: int
    role: str
    spec: str
    percent: float
    final: dict[str, Any]
    config: dict[str, Any]
    subjects: dict[str, dict[str, float]] = field(default_factory=dict)
    labelled: bool = True
    model_key: str = ""

    @property
    def trains_nothing(self) -> bool:
        """True when the run did not train (its prediction does not depend on the seed)."""
        return self.family == "none" or not self.final.get("epochs")

    def run_mean(self, metric: str) -> float:
        """Mean of ``metric`` over this run's test subjects."""
        return float(np.mean([s[metric] for s in self.subjects.values()]))

    def summary(self) -> dict[str, Any]:
        """The run's labels and test means, for ``results.json``."""
        return {"path": self.rel, "model": self.model_key, "preset": self.preset, "pair": self.pair,
                "source": self.source, "target": self.target, "method": self.method, "family": self.family,
                "bitfit": self.bitfit, "encoder": self.encoder, "decoder": self.decoder, "seed": self.seed,
                "labelled": self.labelled, "spec": self.spec, "percent": self.percent,
                "n_subjects": len(self.subjects), **{m: _num(self.run_mean(m)) for m in METRICS}}


@dataclass
class Collection:
    """What :func:`collect_runs` found under a runs folder."""

    root: Path
    runs: list[Run]  # finished fine-tuning runs with test metrics (tabulated)
    pretrain: list[Run]  # finished pre-training runs (counted only)
    unfinished: list[dict[str, Any]]  # {"path", "epochs_done", "epochs", "method", "seed"}
    skipped: list[dict[str, str]]  # finished runs without test metrics: {"path", "reason"}


def _is_run_config(path: Path) -> dict[str, Any] | None:
    config = read_yaml(path, "run config")
    if isinstance(config, dict) and "datalist" in config and "spec" in config:
        return config
    return None


def find_run_folders(root: str | Path) -> list[tuple[Path, dict[str, Any]]]:
    """(folder, config) of every run folder under ``root``, sorted by path (hidden folders skipped)."""
    root = Path(root)
    found: list[tuple[Path, dict[str, Any]]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if "config.yaml" in filenames:
            config = _is_run_config(Path(dirpath) / "config.yaml")
            if config is not None:
                found.append((Path(dirpath), config))
                dirnames[:] = []
    return sorted(found, key=lambda item: str(item[0]))


def _display(name: str | None) -> str | None:
    return None if name is None else DISPLAY.get(str(name).lower(), str(name))


def _label_run(folder: Path, rel: str, config: dict[str, Any], final: dict[str, Any]) -> Run:
    extra = config.get("extra") or {}
    if not isinstance(extra, dict):
        raise UserError("config.yaml: 'extra' must be a mapping", folder / "config.yaml")
    labelled = "method" in extra
    spec = str(final.get("spec", config.get("spec", "?")))
    model = str(extra.get("model") or final.get("model") or config.get("model") or "?")
    preset = str(extra.get("preset") or final.get("preset") or config.get("preset") or "?")
    datalist = config.get("datalist") or ""
    target = str(extra.get("target") or (Path(datalist).parent.name if datalist else "?") or "?")
    source = str(extra.get("source") or "?")
    pair = str(extra.get("pair") or f"{source}->{target}")
    default_role = "finetune" if config.get("init") else "pretrain"
    role = str(extra.get("role") or default_role)
    items = [item.strip() for item in spec.split(",")]
    if labelled:
        method, family = str(extra["method"]), str(extra.get("family") or "run")
        bitfit = extra.get("bitfit")
        bitfit = None if bitfit is None else bool(bitfit)
    elif spec == "none":
        method, family, bitfit = NO_FT, "none", False
    elif spec == "full":
        method, family, bitfit = "Full-FT", "full", False
    else:
        method, family, bitfit = spec, "run", "bitfit" in items
    seed = extra.get("seed", config.get("seed", 0))
    try:
        seed = int(seed)
    except (TypeError, ValueError):
        raise UserError(f"seed must be an integer, got {seed!r}", folder / "config.yaml") from None
    percent = final.get("percent")
    if not isinstance(percent, (int, float)):
        raise UserError("final.json has no numeric 'percent'", folder / "final.json")
    return Run(path=folder, rel=rel, model=model, preset=preset, source=source, target=target, pair=pair,
               method=method, family=family, bitfit=bitfit, encoder=_display(extra.get("encoder")),
               decoder=_display(extra.get("decoder")), seed=seed, role=role, spec=spec, percent=float(percent),
               final=final, config=config, labelled=labelled)


def _read_subjects(path: Path) -> dict[str, dict[str, float]]:
    data = read_json(path, "test metrics")
    rows = data.get("subjects") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise UserError("test metrics must be an object with a 'subjects' list", path)
    out: dict[str, dict[str, float]] = {}
    for row in rows:
        if not isinstance(row, dict) or "subject" not in row:
            raise UserError("every entry of 'subjects' needs a 'subject'", path)
        try:
            out[str(row["subject"])] = {m: float(row[m]) for m in METRICS}
        except (KeyError, TypeError, ValueError):
            raise UserError(f"subject {row['subject']!r} lacks a numeric psnr, ssim or nrmse", path) from None
    return out


def _progress(folder: Path) -> int:
    lines = folder / "metrics.jsonl"
    if not lines.is_file():
        return 0
    try:
        return sum(1 for line in lines.read_text().splitlines() if line.strip())
    except OSError:
        return 0


def collect_runs(runs_dir: str | Path) -> Collection:
    """Read and label every run folder under ``runs_dir`` (UserError naming the file on bad input)."""
    root = Path(runs_dir)
    if not root.is_dir():
        raise UserError("runs folder not found", root)
    folders = find_run_folders(root)
    if not folders:
        raise UserError("no run folders (config.yaml of a training run) found", root)
    runs: list[Run] = []
    pretrain: list[Run] = []
    unfinished: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for folder, config in folders:
        rel = str(folder.relative_to(root)) if folder != root else "."
        extra = config.get("extra") if isinstance(config.get("extra"), dict) else {}
        if not (folder / "final.json").is_file():
            unfinished.append({"path": rel, "epochs_done": _progress(folder), "epochs": config.get("epochs"),
                               "method": extra.get("method", config.get("spec")),
                               "seed": extra.get("seed", config.get("seed"))})
            continue
        final = read_json(folder / "final.json", "final.json")
        if not isinstance(final, dict):
            raise UserError("final.json must be an object", folder / "final.json")
        run = _label_run(folder, rel, config, final)
        if run.role == "pretrain":
            pretrain.append(run)
            continue
        metrics_path = folder / "test_metrics.json"
        if not metrics_path.is_file():
            skipped.append({"path": rel, "reason": "finished without test_metrics.json (no test split?)"})
            continue
        run.subjects = _read_subjects(metrics_path)
        if not run.subjects:
            skipped.append({"path": rel, "reason": "test_metrics.json lists no subject"})
            continue
        runs.append(run)
    if not runs:
        raise UserError(f"no finished fine-tuning run with test metrics ({len(unfinished)} not finished, "
                        f"{len(pretrain)} pre-training, {len(skipped)} without test metrics)", root)
    presets: dict[str, set[str]] = {}
    for run in runs + pretrain:
        presets.setdefault(run.model, set()).add(run.preset)
    for run in runs + pretrain:
        run.model_key = run.model if len(presets[run.model]) == 1 else f"{run.model}-{run.preset}"
    return Collection(root, runs, pretrain, unfinished, skipped)


# ----------------------------------------------------------------------------------------------------------------
# Rows, statistics and formatting


@dataclass
class Row:
    """A group of runs of one method (and BitFit setting) in one scope (model, pair or all pairs)."""

    method: str
    family: str
    bitfit: bool | None
    encoder: str | None
    decoder: str | None
    runs: list[Run]

    @property
    def label(self) -> str:
        """Method name plus "+BitFit" where BitFit is an option of the method (singles, mixes, plain runs)."""
        if self.bitfit and self.family in ("single", "mix") and self.method != "BitFit":
            return f"{self.method} +BitFit"
        return self.method

    def values(self, metric: str) -> np.ndarray:
        """Every (run, subject) value of ``metric``."""
        return np.array([s[metric] for run in self.runs for s in run.subjects.values()], dtype=np.float64)

    def stat(self, metric: str) -> tuple[float, float]:
        """(mean, std with ddof 0) over every (run, subject) value."""
        v = self.values(metric)
        return float(v.mean()), float(v.std())

    @property
    def percent(self) -> float:
        return float(np.mean([r.percent for r in self.runs]))

    @property
    def seeds(self) -> list[int]:
        return sorted({r.seed for r in self.runs})

    @property
    def trains_nothing(self) -> bool:
        return all(r.trains_nothing for r in self.runs)

    def sort_key(self) -> tuple[Any, ...]:
        fam = FAMILY_ORDER.index(self.family) if self.family in FAMILY_ORDER else len(FAMILY_ORDER)
        if self.family == "mix":
            inner: tuple[Any, ...] = (_order(MIX_ORDER, self.encoder), _order(MIX_ORDER, self.decoder), self.method)
        elif self.family == "single":
            inner = (_order(SINGLE_ORDER, self.method), self.method)
        else:
            inner = (0, self.method)
        return (fam, *inner, bool(self.bitfit))


def _order(order: Sequence[str], name: str | None) -> tuple[int, str]:
    return (order.index(name), "") if name in order else (len(order), str(name))


def group_rows(runs: Iterable[Run]) -> list[Row]:
    """Runs grouped by (method, family, BitFit), in table order."""
    groups: dict[tuple[Any, ...], Row] = {}
    for run in runs:
        key = (run.family, run.method, run.bitfit)
        if key not in groups:
            groups[key] = Row(run.method, run.family, run.bitfit, run.encoder, run.decoder, [])
        groups[key].runs.append(run)
    return sorted(groups.values(), key=Row.sort_key)


def paired_wilcoxon(row: Row, ref: Row, metric: str = "psnr") -> dict[str, Any]:
    """Two-sided Wilcoxon signed-rank test of ``row`` vs ``ref`` on ``metric``, paired by (pair, subject).

    Each side's subject value is its mean over the seeds both sides have (a side
    that trains nothing does not restrict the seeds).  Returns ``{"p", "n",
    "seeds", "reason"}``; ``p`` is None (with a reason) for the reference
    itself, fewer than 2 pairs, or all differences zero.
    """
    if row is ref:
        return {"p": None, "n": 0, "seeds": [], "reason": "reference"}
    a_use, b_use = set(row.seeds), set(ref.seeds)
    if row.trains_nothing == ref.trains_nothing:  # otherwise the side that trains nothing is seed-independent
        a_use = b_use = a_use & b_use
    seeds = sorted(b_use if row.trains_nothing else a_use)

    def subject_means(side: Row, use: set[int]) -> dict[tuple[str, str], float]:
        values: dict[tuple[str, str], list[float]] = {}
        for run in side.runs:
            if run.seed in use:
                for subject, m in run.subjects.items():
                    values.setdefault((run.pair, subject), []).append(m[metric])
        return {k: float(np.mean(v)) for k, v in values.items()}

    a, b = subject_means(row, a_use), subject_means(ref, b_use)
    keys = sorted(set(a) & set(b))
    x = np.array([a[k] for k in keys])
    y = np.array([b[k] for k in keys])
    out: dict[str, Any] = {"p": None, "n": len(keys), "seeds": seeds, "reason": None}
    if len(keys) < 2:
        out["reason"] = "fewer than 2 paired subjects"
        return out
    if np.all(x - y == 0):
        out["reason"] = "all differences zero"
        return out
    from scipy.stats import wilcoxon

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p = float(wilcoxon(x, y, zero_method="wilcox", alternative="two-sided").pvalue)
    except ValueError as err:
        out["reason"] = str(err)
        return out
    if not math.isfinite(p):
        out["reason"] = "undefined"
        return out
    out["p"] = p
    return out


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


def mark_best(values: Sequence[float | None], higher_is_better: bool, digits: int) -> list[str]:
    """``"best"``, ``"second"`` or ``""`` per value, ranking the values rounded to ``digits`` (ties share)."""
    rounded = [round(v, digits) if v is not None and math.isfinite(v) else None for v in values]
    distinct = sorted({v for v in rounded if v is not None}, reverse=higher_is_better)
    marks = []
    for v in rounded:
        if v is None:
            marks.append("")
        elif v == distinct[0]:
            marks.append("best")
        elif len(distinct) > 1 and v == distinct[1]:
            marks.append("second")
        else:
            marks.append("")
    return marks


def _emphasis(text: str, mark: str) -> str:
    return f"**{text}**" if mark == "best" else f"<u>{text}</u>" if mark == "second" else text


def _num(value: Any) -> Any:
    """JSON-safe number: non-finite floats become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _tick(bitfit: bool | None, family: str) -> str:
    if family in ("none", "full") or bitfit is None:
        return "-"
    return "✓" if bitfit else "✗"


def _find(rows: Sequence[Row], name: str) -> Row | None:
    for row in rows:
        if name in (row.label, row.method):
            return row
    return None


def _no_ft(rows: Sequence[Row]) -> Row | None:
    return next((r for r in rows if r.family == "none"), None) or _find(rows, NO_FT)


def _fmt_num(value: float | None, digits: int) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    if digits >= 2 and 0 < abs(value) < 10 ** -digits * 10:
        return f"{value:.2g}"
    return f"{value:.{digits}f}"


# ----------------------------------------------------------------------------------------------------------------
# Tables


def pooled_runs(runs: Sequence[Run]) -> list[Run]:
    """The runs an "all targets" table pools: methods compared on the same pairs only.

    Pooling a method run on one pair with one run on three would compare
    different targets, so the table keeps the set of >= 2 pairs that covers the
    most (method x pair) cells, and the runs of the methods run on all of them.
    Empty when no method was run on two pairs or more.
    """
    coverage: dict[tuple[str, Any], set[str]] = {}
    for run in runs:
        coverage.setdefault((run.method, run.bitfit), set()).add(run.pair)
    candidates = {frozenset(pairs) for pairs in coverage.values() if len(pairs) >= 2}
    if not candidates:
        return []
    best = max(sorted(candidates, key=sorted),
               key=lambda pairs: len(pairs) * sum(pairs <= covered for covered in coverage.values()))
    keep = {key for key, covered in coverage.items() if best <= covered}
    return [run for run in runs if run.pair in best and (run.method, run.bitfit) in keep]


def method_table(runs: Sequence[Run], model: str, pair: str, baseline: str = "Full-FT") -> dict[str, Any]:
    """A Table 1/2 style table (``results.json`` form plus ``markdown``) for the runs of one scope."""
    rows = group_rows(runs)
    ref, noft = _find(rows, baseline), _no_ft(rows)
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
            **{m: {"mean": _num(stats[m][i][0]), "std": _num(stats[m][i][1]), "mark": marks[m][i]} for m in METRICS},
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


def mix_tables(runs: Sequence[Run], model: str) -> list[dict[str, Any]]:
    """Paper Tables 6/7: PSNR (and % params) of each encoder x decoder method pair, one table per BitFit setting."""
    mixes = [r for r in runs if r.family == "mix" and r.encoder and r.decoder]
    singles = {(row.method, bool(row.bitfit)): row for row in group_rows(r for r in runs if r.family == "single")}
    tables = []
    for bitfit in sorted({bool(r.bitfit) for r in mixes}):
        chosen = [r for r in mixes if bool(r.bitfit) == bitfit]
        names = sorted({r.encoder for r in chosen} | {r.decoder for r in chosen}, key=lambda n: _order(MIX_ORDER, n))
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
                cells[(enc, dec)] = {"encoder": enc, "decoder": dec, "psnr": {"mean": _num(mean), "std": _num(std)},
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


COST_KEYS = ("time_per_epoch_s", "step_time_s", "peak_memory_mb", "peak_memory_added_mb")


def cost_table(runs: Sequence[Run], model: str, baseline: str = "Full-FT") -> dict[str, Any]:
    """Paper Table 5: training cost per method (means over runs) and ratios to ``baseline``."""
    rows = group_rows(runs)

    def mean_of(row: Row, key: str) -> float | None:
        values = [r.final.get(key) for r in row.runs]
        values = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
        return float(np.mean(values)) if values else None

    ref = _find(rows, baseline)
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


# ----------------------------------------------------------------------------------------------------------------
# Figures


def _slug(text: str) -> str:
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


def _weights_problem(run: Run) -> str | None:
    """Why ``run``'s weights cannot be loaded, or None."""
    from petite.engine.infer import resolve_checkpoint

    if (run.path / "model.safetensors").is_file():
        return None
    init = run.config.get("init")
    if not init:
        return f"{run.rel}: no model.safetensors and no base checkpoint"
    base = resolve_checkpoint(init)
    stem = base.with_suffix("") if base.suffix == ".safetensors" else base
    if not Path(f"{stem}.safetensors").is_file():
        return f"{run.rel}: base checkpoint {init} not found"
    if run.trains_nothing or (run.path / "adapter.safetensors").is_file():
        return None
    return f"{run.rel}: no adapter.safetensors"


def error_maps_for_model(runs: Sequence[Run], model: str, out_dir: Path) -> tuple[dict[str, Any] | None, str | None]:
    """Fig. 4 for one model: the pair with the most methods, first test subject, No-FT, Full-FT, PETITE
    and the best single method, lowest seed each.  Returns (figure info, None) or (None, why skipped)."""
    pairs = sorted({r.pair for r in runs})
    counts = {p: len(group_rows(r for r in runs if r.pair == p)) for p in pairs}
    pair = max(pairs, key=lambda p: counts[p])  # max keeps the first of equals
    rows = group_rows(r for r in runs if r.pair == pair)
    chosen: list[Row] = []
    for pick in (_no_ft(rows), _find(rows, "Full-FT"), next((r for r in rows if r.family == "preset"), None)):
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
    datalist = Path(str(first.config.get("datalist", "")))
    if not datalist.is_file():
        problems.append(f"datalist {datalist} not found")
    if problems:
        return None, f"error maps for {model} {pair} skipped: " + "; ".join(problems)
    from petite.report.error_maps import run_error_maps

    name = f"error_maps_{_slug(model)}_{_slug(pair)}.png"
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


# ----------------------------------------------------------------------------------------------------------------
# The report


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
                figures: bool = True, overwrite: bool = False,
                echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Collect the runs under ``runs_dir`` and write the report folder ``out`` (default ``runs_dir/report``).

    Writes ``report.md``, ``results.json`` and the PNGs atomically (temporary
    folder, then rename).  ``figures=False`` skips the error-map figures (which
    recompute predictions from the saved weights); the PSNR-vs-parameters plot
    is always drawn.  Returns the content of ``results.json``.
    """
    runs_dir = Path(runs_dir)
    out = Path(out) if out is not None else runs_dir / "report"
    check_destination(out, overwrite)
    collection = collect_runs(runs_dir)
    say = echo or (lambda line: None)
    runs = collection.runs
    models = sorted({r.model_key for r in runs})
    notes: list[str] = []

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        results: dict[str, Any] = {
            "format": FORMAT, "petite_version": __version__, "runs_dir": str(runs_dir.resolve()),
            "baseline": baseline,
            "counts": {"run_folders": len(runs) + len(collection.pretrain) + len(collection.unfinished)
                       + len(collection.skipped), "reported": len(runs), "pretrain": len(collection.pretrain),
                       "unfinished": len(collection.unfinished), "skipped": len(collection.skipped)},
            "models": models, "pairs": sorted({r.pair for r in runs}), "seeds": sorted({r.seed for r in runs}),
            "runs": [r.summary() for r in runs], "pretrain_runs": [r.rel for r in collection.pretrain],
            "unfinished": collection.unfinished, "skipped": collection.skipped,
            "method_tables": [], "mix_tables": [], "cost_tables": [], "figures": [], "notes": notes,
        }
        sections: list[str] = []
        for model in models:
            model_runs = [r for r in runs if r.model_key == model]
            pairs = sorted({r.pair for r in model_runs})
            parts = [f"## {model}", ""]
            scopes = [(pair, [r for r in model_runs if r.pair == pair]) for pair in pairs]
            pooled = pooled_runs(model_runs)
            if pooled:
                scopes.append((ALL_PAIRS, pooled))
            for pair, scope_runs in scopes:
                table = method_table(scope_runs, model, pair, baseline)
                if not table["baseline_found"]:
                    notes.append(f"{model}, {pair}: no '{baseline}' runs, so no p-values against it")
                results["method_tables"].append({k: v for k, v in table.items() if k != "markdown"})
                parts += [f"### {model}: {pair}", "", table["markdown"], "", table["caption"], ""]
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
                suffix = "" if scope == ALL_PAIRS else f"_{_slug(scope)}"
                plot = params_figure(group_rows(scope_runs), model, tmp / f"psnr_vs_params_{_slug(model)}{suffix}.png",
                                     scope)
                results["figures"].append(plot)
                where = scope if scope != ALL_PAIRS else f"{scope} ({', '.join(sorted({r.pair for r in scope_runs}))})"
                parts += [f"![PSNR vs % trainable parameters, {model}, {scope}]({plot['path']})", "",
                          f"PSNR vs % trainable parameters (log axis), {where}: one point per method, mean over "
                          "seeds of each seed's mean test PSNR over pairs, error bar = std over seeds (ddof 0); "
                          "Full-FT at 100 %; No-FT (0 %) as the dashed line.", ""]
            if figures:
                say(f"error maps for {model} (recomputing predictions from the saved weights)")
                info, why = error_maps_for_model(model_runs, model, tmp)
                if info is not None:
                    results["figures"].append(info)
                    parts += [f"![error maps, {model}, {info['pair']}]({info['path']})", "",
                              f"Error maps (paper Fig. 4 layout): {model}, pair {info['pair']}, test subject "
                              f"{info['subject']}, predictions recomputed from the saved weights ({info['seeds']}); "
                              f"top: images, bottom: |prediction - long scan| on one shared scale.", ""]
                else:
                    notes.append(why or "")
                    parts += [f"*Error-map figure not drawn: {why}.*", ""]
            sections.append("\n".join(parts))

        text = _header(collection, results) + "\n" + "\n".join(sections) + _footer(collection, notes)
        write_text(tmp / "report.md", text)
        write_json(tmp / "results.json", _jsonable(results))
        _install(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    say(f"report: {out} ({len(runs)} runs, {len(models)} model(s))")
    return results


def _install(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` onto ``out``, replacing an earlier report (already checked) or an empty folder."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.rmdir(old)
        os.replace(out, old)
    os.chmod(tmp, 0o777 & ~_umask())
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return _num(float(value))
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, Path):
        return str(value)
    return value


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
             f"- paired tests against: {results['baseline']} and {NO_FT}"]
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


__all__ = ["Collection", "Row", "Run", "collect_runs", "cost_table", "error_maps_for_model", "find_run_folders",
           "format_p", "format_percent", "format_stat", "group_rows", "make_report", "mark_best", "method_table",
           "mix_tables", "paired_wilcoxon", "params_figure"]
