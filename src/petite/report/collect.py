"""The report's input: run folders found under a runs folder, labelled, and grouped into table rows.

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

Rows
    A table row (:class:`Row`) is one (method, family, BitFit) group of runs
    in one scope (a model's pair, or its pooled "all targets" runs, see
    :func:`pooled_runs`); :func:`group_rows` puts them in table order.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from petite.documents import read_json, read_yaml
from petite.engine.run_folder import stored_path
from petite.errors import UserError

METRICS = ("psnr", "ssim", "nrmse")
#: Inside the head mask (``petite.metrics``): read when every subject has them; they rank methods.
MASKED_METRICS = ("psnr_masked", "ssim_masked", "nrmse_masked")
FAMILY_ORDER = ("baseline", "none", "full", "single", "preset", "mix", "run")
#: The classical baselines of ``final.json``'s ``baselines`` (key -> row label), in table order.
BASELINES = {"short": "Short scan", "gaussian": "Gaussian filter (target-fitted)",
             "gaussian_source": "Gaussian filter (source-fitted)", "calibration": "No-FT + calibration"}
SINGLE_ORDER = ("LN", "BitFit", "LoRA", "DoRA", "Adapter", "SSF", "VPT")
MIX_ORDER = ("LoRA", "DoRA", "Adapter", "VPT", "SSF", "LN", "BitFit")
DISPLAY = {"layernorm": "LN", "ln": "LN", "bitfit": "BitFit", "lora": "LoRA", "dora": "DoRA", "adapter": "Adapter",
           "ssf": "SSF", "vpt": "VPT"}
NO_FT = "No-FT"
ALL_PAIRS = "all targets"


# ----------------------------------------------------------------------------------------------------------------
# Reading run folders


@dataclass
class RunRecord:
    """One finished run folder as the report sees it: its labels, ``final.json`` and test metrics."""

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
        return self.family in ("none", "baseline") or not (self.final.get("steps") or self.final.get("epochs"))

    def run_mean(self, metric: str) -> float:
        """Mean of ``metric`` over this run's test subjects."""
        return float(np.mean([s[metric] for s in self.subjects.values()]))

    def summary(self) -> dict[str, Any]:
        """The run's labels and test means, for ``results.json``."""
        return {"path": self.rel, "model": self.model_key, "preset": self.preset, "pair": self.pair,
                "source": self.source, "target": self.target, "method": self.method, "family": self.family,
                "bitfit": self.bitfit, "encoder": self.encoder, "decoder": self.decoder, "seed": self.seed,
                "labelled": self.labelled, "spec": self.spec, "percent": self.percent,
                "n_subjects": len(self.subjects), **{m: self.run_mean(m) for m in METRICS}}


@dataclass
class Collection:
    """What :func:`collect_runs` found under a runs folder."""

    root: Path
    runs: list[RunRecord]  # finished fine-tuning runs with test metrics (tabulated)
    pretrain: list[RunRecord]  # finished pre-training runs (counted only)
    unfinished: list[dict[str, Any]]  # {"path", "epochs_done", "epochs", "method", "seed"}
    skipped: list[dict[str, str]]  # finished runs without test metrics: {"path", "reason"}
    data_size: list[RunRecord] = field(default_factory=list)  # runs of a data-size curve (role data-size)


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


def _label_run(folder: Path, rel: str, config: dict[str, Any], final: dict[str, Any]) -> RunRecord:
    extra = config.get("extra") or {}
    if not isinstance(extra, dict):
        raise UserError("config.yaml: 'extra' must be a mapping", folder / "config.yaml")
    labelled = "method" in extra
    spec = str(final.get("spec", config.get("spec", "?")))
    model = str(extra.get("model") or final.get("model") or config.get("model") or "?")
    preset = str(extra.get("preset") or final.get("preset") or config.get("preset") or "?")
    datalist = config.get("datalist") or ""
    target = str(extra.get("target") or (stored_path(folder, datalist).resolve().parent.name if datalist else "?")
                 or "?")
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
    return RunRecord(path=folder, rel=rel, model=model, preset=preset, source=source, target=target, pair=pair,
                     method=method, family=family, bitfit=bitfit, encoder=_display(extra.get("encoder")),
                     decoder=_display(extra.get("decoder")), seed=seed, role=role, spec=spec,
                     percent=float(percent), final=final, config=config, labelled=labelled)


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
            values = {m: float(row[m]) for m in METRICS}
        except (KeyError, TypeError, ValueError):
            raise UserError(f"subject {row['subject']!r} lacks a numeric psnr, ssim or nrmse", path) from None
        for m in MASKED_METRICS:
            if isinstance(row.get(m), (int, float)):
                values[m] = float(row[m])
        out[str(row["subject"])] = values
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
    runs: list[RunRecord] = []
    pretrain: list[RunRecord] = []
    unfinished: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    data_size: list[RunRecord] = []
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
        (data_size if run.role == "data-size" else runs).append(run)
    if not runs and not data_size:
        raise UserError(f"no finished fine-tuning run with test metrics ({len(unfinished)} not finished, "
                        f"{len(pretrain)} pre-training, {len(skipped)} without test metrics)", root)
    presets: dict[str, set[str]] = {}
    for run in runs + pretrain + data_size:
        presets.setdefault(run.model, set()).add(run.preset)
    for run in runs + pretrain + data_size:
        run.model_key = run.model if len(presets[run.model]) == 1 else f"{run.model}-{run.preset}"
    return Collection(root, runs, pretrain, unfinished, skipped, data_size)


# ----------------------------------------------------------------------------------------------------------------
# Grouping runs into table rows


@dataclass
class Row:
    """A group of runs of one method (and BitFit setting) in one scope (model, pair or all pairs)."""

    method: str
    family: str
    bitfit: bool | None
    encoder: str | None
    decoder: str | None
    runs: list[RunRecord]
    summary: dict[str, float] | None = None  # a baseline known only by its means (no per-subject values)

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
        """Mean % of trainable parameters over the row's runs (0 for a row without runs)."""
        return float(np.mean([r.percent for r in self.runs])) if self.runs else 0.0

    @property
    def seeds(self) -> list[int]:
        """The seeds the row's runs were made with, sorted."""
        return sorted({r.seed for r in self.runs})

    @property
    def trains_nothing(self) -> bool:
        """True when no run of the row trained (No-FT, the baselines)."""
        return all(r.trains_nothing for r in self.runs)

    def has(self, metric: str) -> bool:
        """True when every subject of every run has ``metric`` (the masked metrics are missing in old runs)."""
        return bool(self.runs) and all(run.subjects and all(metric in m for m in run.subjects.values())
                                       for run in self.runs)

    @property
    def converged(self) -> tuple[int, int] | None:
        """(runs that stopped on patience, runs that say either way), ``None`` when no run says or none trained."""
        said = [r.final["converged"] for r in self.runs if isinstance(r.final.get("converged"), bool)]
        if not said or self.trains_nothing:
            return None
        return sum(said), len(said)

    @property
    def lr_chosen(self) -> list[float]:
        """The learning-rate multipliers ``lr: auto`` chose (``final.json: lr_search``), sorted; [] without it."""
        chosen = {float(r.final["lr_search"]["chosen"]) for r in self.runs
                  if isinstance(r.final.get("lr_search"), dict)
                  and isinstance(r.final["lr_search"].get("chosen"), (int, float))}
        return sorted(chosen)

    def sort_key(self) -> tuple[Any, ...]:
        """Table order: family, then the paper's method order, then BitFit off before on."""
        fam = FAMILY_ORDER.index(self.family) if self.family in FAMILY_ORDER else len(FAMILY_ORDER)
        if self.family == "mix":
            inner: tuple[Any, ...] = (method_order(MIX_ORDER, self.encoder), method_order(MIX_ORDER, self.decoder),
                                      self.method)
        elif self.family == "single":
            inner = (method_order(SINGLE_ORDER, self.method), self.method)
        else:
            inner = (0, self.method)
        return (fam, *inner, bool(self.bitfit))


def baseline_rows(runs: Sequence[RunRecord]) -> list[Row]:
    """The classical baselines of ``runs``' ``final.json`` (:data:`BASELINES`) as rows, on the same test subjects.

    Each pair's baseline is read from the first run (by path) that has it; it does not depend on the seed.  A
    baseline with per-subject values (``subjects``) becomes a row like any other; one with only its summary
    (runs made before per-subject baselines were saved) becomes a row without runs whose ``summary`` holds the
    means (weighted by subjects over pairs).  Baselines are absent from runs made before they existed.
    """
    rows: list[Row] = []
    for kind, label in BASELINES.items():
        records: list[RunRecord] = []
        summaries: list[dict[str, Any]] = []
        for pair in sorted({r.pair for r in runs}):
            entry = next((r.final["baselines"][kind] for r in sorted(runs, key=lambda r: r.rel)
                          if r.pair == pair and isinstance(r.final.get("baselines"), dict)
                          and isinstance(r.final["baselines"].get(kind), dict)), None)
            if entry is None:
                continue
            source = next(r for r in sorted(runs, key=lambda r: r.rel) if r.pair == pair)
            subjects = _baseline_subjects(entry.get("subjects"))
            if subjects:
                records.append(dataclasses.replace(
                    source, rel=f"{source.rel}#baselines.{kind}", method=label, family="baseline", bitfit=None,
                    encoder=None, decoder=None, seed=0, percent=0.0, final={"steps": 0, "baseline": kind},
                    subjects=subjects))
            else:
                summaries.append(entry)
        if records:
            rows.append(Row(label, "baseline", None, None, None, records))
        elif summaries:
            n = np.array([float(e.get("n") or 1) for e in summaries])
            summary = {}
            for metric in (*METRICS, *MASKED_METRICS):
                values = [e.get(metric) for e in summaries]
                if all(isinstance(v, (int, float)) for v in values):
                    summary[metric] = float(np.sum(n * np.array(values, dtype=np.float64)) / n.sum())
            rows.append(Row(label, "baseline", None, None, None, [], summary=summary))
    return rows


def _baseline_subjects(rows: Any) -> dict[str, dict[str, float]]:
    """Per-subject baseline values (``{"subject", metric: value}`` rows); {} when absent or not numeric."""
    if not isinstance(rows, list):
        return {}
    out: dict[str, dict[str, float]] = {}
    for row in rows:
        if not isinstance(row, dict) or "subject" not in row:
            return {}
        values = {m: float(row[m]) for m in (*METRICS, *MASKED_METRICS) if isinstance(row.get(m), (int, float))}
        if not all(m in values for m in METRICS):
            return {}
        out[str(row["subject"])] = values
    return out


def method_order(order: Sequence[str], name: str | None) -> tuple[int, str]:
    """Sort key of ``name`` in the display ``order`` (unknown names after the known ones, by name)."""
    return (order.index(name), "") if name in order else (len(order), str(name))


def group_rows(runs: Iterable[RunRecord]) -> list[Row]:
    """Runs grouped by (method, family, BitFit), in table order."""
    groups: dict[tuple[Any, ...], Row] = {}
    for run in runs:
        key = (run.family, run.method, run.bitfit)
        if key not in groups:
            groups[key] = Row(run.method, run.family, run.bitfit, run.encoder, run.decoder, [])
        groups[key].runs.append(run)
    return sorted(groups.values(), key=Row.sort_key)


def find_row(rows: Sequence[Row], name: str) -> Row | None:
    """The first row whose label or method is ``name``."""
    for row in rows:
        if name in (row.label, row.method):
            return row
    return None


def no_ft_row(rows: Sequence[Row]) -> Row | None:
    """The No-FT row (family ``none``, or labelled No-FT)."""
    return next((r for r in rows if r.family == "none"), None) or find_row(rows, NO_FT)


def pooled_runs(runs: Sequence[RunRecord]) -> list[RunRecord]:
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


__all__ = ["ALL_PAIRS", "BASELINES", "MASKED_METRICS", "METRICS", "NO_FT", "Collection", "Row", "RunRecord",
           "baseline_rows", "collect_runs", "find_row",
           "find_run_folders", "group_rows", "method_order", "no_ft_row", "pooled_runs"]
