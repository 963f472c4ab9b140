"""``petite demo``: the whole PETITE story, end to end, on 2 CPU cores, with every baseline beside it.

What it does (every number it prints is measured in that run):

1. **Simulate two scanners at half resolution.**  Reduced copies of paper
   scanners 1 and 4 (the built-in ``1h`` and ``4h``, made by
   :func:`petite.data.scanners.half_resolution`: grid halved, voxel spacing doubled, same field of view, vendor, resolution, counts, calibration and
   reconstruction), ids ``1h`` (source, 96x96x68 voxels of 2.44 mm) and ``4h``
   (target, 64x64x45 voxels of 4 mm), written to ``DIR/scanners.yaml``.  The
   source gets pre-training, validation and test subjects; the target
   fine-tuning, validation and test subjects.
2. **Pre-train** a UNETR (``small`` preset, with a global residual: it predicts
   a correction to its input, as the CVT-GAN does; a documented deviation that
   starts the denoiser at the identity) on scanner 1h **to convergence**: it
   validates on held-out 1h subjects and stops when they stop improving.  The
   **quality gate**: on 1h's test subjects the source model must beat a
   Gaussian filter (sigma and gain fitted on 1h's training subjects) by 0.5 dB
   masked PSNR; if it does not, the demo says so and makes no claim about PEFT.
3. **Baselines on scanner 4h's test subjects**: the short scan; the Gaussian
   filter fitted on 4h's fine-tuning subjects and the one fitted on 1h's; the
   source model as it is (No-FT); and No-FT followed by a linear intensity
   calibration fitted on 4h's fine-tuning subjects (three numbers).
4. **Fine-tune** on 4h, each to convergence on 4h's validation subjects, side by
   side in two processes: Full-FT (every weight) and PETITE (``petite-unetr``:
   LoRA r=4 on the encoder's query/key, SSF on the decoder, BitFit; each
   method's tensors at its own Table 3 learning rate).
5. **Report**: the table (masked and whole-volume PSNR/SSIM, % trainable,
   step time, memory, steps and whether each run converged), a verdict computed
   from the numbers, and ``DIR/report/{table.md, results.json, error_maps.png}``.

Metrics are in the scans' units (each run's input normalisation undone),
inside the head (the long scan's head mask) and over the whole volume (the
paper's numbers, dominated by the background).  Rankings use the head.

``quick=True`` runs the same pipeline with the ``tiny`` preset, few subjects and
a few steps: a smoke test (about a minute), its numbers mean nothing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from petite.atomic import write_json, write_text
from petite.data.scanners import BUILTIN_SCANNERS, Scanner, load_scanner_file
from petite.demos.common import load_average, prepare_demo_folder
from petite.documents import read_json
from petite.tables import render_table

log = logging.getLogger("petite.demo")

SOURCE_SCANNER, TARGET_SCANNER = "1", "4"
# The demo's own paths inside DIR; --overwrite removes these and nothing else.
DEMO_PATHS = ("scanners.yaml", "data", "runs", "report")


@dataclass(frozen=True)
class DemoSize:
    """How big the demo is: model, crop, subjects, and the caps and validation intervals of its runs."""

    preset: str
    crop: tuple[int, int, int]
    source_splits: tuple[int, int, int, int, int]  # pretrain_train, pretrain_val, finetune_train, finetune_val, test
    target_splits: tuple[int, int, int, int, int]
    batch_size: int
    pretrain_max_steps: int
    pretrain_val_every: int
    finetune_max_steps: int
    finetune_val_every: int
    patience: int
    pretrain_lr: float
    pretrain_patience: int | None = None  # None: patience
    pretrain_min_delta: float = 0.0  # dB a pre-training validation must gain to count as an improvement
    workers: int = 2


# Sized for 2 CPU cores (measured in run_demo's docstring).
FULL = DemoSize(preset="small", crop=(32, 32, 32), source_splits=(12, 2, 0, 0, 4), target_splits=(0, 0, 4, 2, 6),
                batch_size=4, pretrain_max_steps=1500, pretrain_val_every=100, finetune_max_steps=400,
                finetune_val_every=50, patience=2, pretrain_lr=2e-3, pretrain_patience=2, pretrain_min_delta=0.05)
QUICK = DemoSize(preset="tiny", crop=(32, 32, 32), source_splits=(2, 1, 0, 0, 1), target_splits=(0, 0, 2, 1, 2),
                 batch_size=2, pretrain_max_steps=4, pretrain_val_every=2, finetune_max_steps=2,
                 finetune_val_every=1, patience=2, pretrain_lr=1e-3, workers=1)

# Validation only ranks checkpoints: windows overlapping by a quarter (the test keeps 0.5) make each
# pre-training validation 2.3x cheaper (12.6 -> 5.6 s for two 96x96x68 subjects on 2 cores).
VAL_OVERLAP = 0.25

# (label, spec) of the fine-tuning runs, in table order.
METHODS: tuple[tuple[str, str], ...] = (("No-FT", "none"), ("Full-FT", "full"), ("PETITE", "petite-unetr"))


def demo_scanners() -> tuple[Scanner, Scanner]:
    """(source, target): half-resolution paper scanners 1 and 4, ids ``1h`` and ``4h``."""
    return BUILTIN_SCANNERS[f"{SOURCE_SCANNER}h"], BUILTIN_SCANNERS[f"{TARGET_SCANNER}h"]


def _describe(scanner: Scanner) -> str:
    grid = "x".join(str(n) for n in scanner.shape)
    spacing = "x".join(f"{s:g}" for s in scanner.spacing)
    return f"scanner {scanner.id}: {grid} voxels of {spacing} mm, {scanner.vendor}, {scanner.site}"


def _write_scanner_file(path: Path, scanners: tuple[Scanner, ...]) -> None:
    entries = []
    for scanner in scanners:
        entry = scanner.to_dict()
        if entry["n_angles"] is None:
            del entry["n_angles"]
        entries.append(entry)
    header = ("# Half-resolution copies of paper scanners 1 and 4 used by `petite demo`:\n"
              "# grid halved, spacing doubled (same field of view), everything else unchanged.\n")
    write_text(path, header + yaml.safe_dump({"scanners": entries}, sort_keys=False))
    loaded = load_scanner_file(path)  # the documented user path must read back what the demo simulates
    if any(loaded[s.id] != s for s in scanners):
        raise RuntimeError(f"{path} does not read back as the demo scanners")


def _fmt(mean: float | None, std: float | None, digits: int) -> str:
    if mean is None or not math.isfinite(mean):
        return "-"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if std is not None else f"{mean:.{digits}f}"


TABLE_COLUMNS = ("Method", "% trainable", "PSNR head (dB)", "SSIM head", "PSNR whole (dB)", "SSIM whole",
                 "Steps (stop)", "Step time (s)", "Peak memory added (MB)")


def format_table(rows: list[dict[str, Any]]) -> tuple[str, str]:
    """(plain text, markdown) renderings of the comparison table (mean ± std over test subjects)."""
    cells = []
    for row in rows:
        pct = "-" if row.get("percent") is None else f"{row['percent']:.2f}"
        step = "-" if row.get("step_time_s") is None else f"{row['step_time_s']:.2f}"
        mem = "-" if row.get("peak_memory_added_mb") is None else f"{row['peak_memory_added_mb']:.0f}"
        steps = "-" if not row.get("steps") else f"{row['steps']} ({'converged' if row.get('converged') else 'cap'})"
        cells.append([row["method"], pct, _fmt(row.get("psnr_masked"), row.get("psnr_masked_std"), 2),
                      _fmt(row.get("ssim_masked"), row.get("ssim_masked_std"), 3),
                      _fmt(row["psnr"], row.get("psnr_std"), 2), _fmt(row["ssim"], row.get("ssim_std"), 3),
                      steps, step, mem])
    return render_table(TABLE_COLUMNS, cells)


def _row(method: str, subjects: list[dict[str, Any]], final: dict[str, Any] | None = None,
         **fitted: Any) -> dict[str, Any]:
    """A table row from the per-subject metrics (``fitted``: a baseline's fitted numbers, kept apart)."""
    from petite.engine.evaluate import summarize

    summary = summarize(subjects)
    row: dict[str, Any] = {"method": method, "n": summary.get("n"), "fitted": fitted or None}
    # Per-subject masked PSNR: the verdict compares methods subject by subject (paired).
    row["subjects"] = {r["subject"]: r["psnr_masked"] for r in subjects}
    for key in ("psnr", "ssim", "nrmse", "psnr_masked", "ssim_masked", "nrmse_masked", "background"):
        row[key], row[f"{key}_std"] = summary.get(key), summary.get(f"{key}_std")
    if final is not None:
        row.update({"spec": final.get("spec"), "percent": final.get("percent"), "trainable": final.get("trainable"),
                    "step_time_s": final.get("step_time_s"), "peak_memory_mb": final.get("peak_memory_mb"),
                    "peak_memory_added_mb": final.get("peak_memory_added_mb"), "train_time_s": final.get("time_s"),
                    "steps": final.get("steps"), "converged": final.get("converged"),
                    "stopped": final.get("stopped"), "best_step": final.get("best_step"),
                    "param_groups": (final.get("hparams") or {}).get("param_groups")})
    return row


def paired_difference(a: dict[str, float], b: dict[str, float], resamples: int = 10_000,
                      seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``a - b`` over the subjects both have, with its 95 % bootstrap interval (resampling subjects)."""
    from petite.report.stats import bootstrap_ci

    keys = sorted(set(a) & set(b))
    diff = np.array([a[k] - b[k] for k in keys], dtype=np.float64)
    interval = bootstrap_ci(diff, n_boot=resamples, seed=seed)
    if interval is None:  # fewer than two subjects: no interval
        return float(diff.mean()) if diff.size else float("nan"), float("nan"), float("nan")
    return float(diff.mean()), *interval


def _versus(rows: dict[str, dict[str, Any]], name: str, other: str) -> tuple[str, bool]:
    """``"+0.30 dB [0.21, 0.38]"`` for ``name - other`` per subject, and whether the interval is above 0."""
    mean, lo, hi = paired_difference(rows[name]["subjects"], rows[other]["subjects"])
    return f"{mean:+.2f} dB [{lo:+.2f}, {hi:+.2f}]", lo > 0


def verdict(rows: dict[str, dict[str, Any]], gate: dict[str, Any]) -> list[str]:
    """The demo's conclusions, computed from the subjects' masked PSNR (the lines it prints).

    Differences are paired over the test subjects, with 95 % bootstrap intervals over subjects;
    a method "beats" another only where that interval lies above zero.  With few test subjects
    the intervals are wide: an interval that includes zero is reported as no resolved difference.
    """
    psnr = {name: row["psnr_masked"] for name, row in rows.items()}
    lines = [gate["verdict"] + "."]
    if not gate["passed"]:
        lines.append("No claim about fine-tuning is made: the source model has not learned more than a filter.")
        return lines
    filters = [name for name in rows if name.startswith("Gaussian filter")]
    best_filter = max(filters, key=lambda name: psnr[name])
    for name in ("Full-FT", "PETITE"):
        gain = psnr[name] - psnr["No-FT"]
        # How much of the method's gain over No-FT three fitted numbers already give (~100 %: no adaptation).
        calibration_gain = psnr["No-FT + calibration"] - psnr["No-FT"]
        recovered = (f"which recovers {calibration_gain / gain * 100:.0f} % of the gain over No-FT"
                     if gain > 0 and calibration_gain > 0 else f"which alone changes No-FT by {calibration_gain:+.2f} dB")
        lines.append(
            f"{name}: {psnr[name]:.2f} dB in the head; per subject (mean [95 % interval]) "
            f"{_versus(rows, name, 'No-FT')[0]} over No-FT, {_versus(rows, name, 'No-FT + calibration')[0]} over "
            f"No-FT + calibration ({recovered}), "
            f"{_versus(rows, name, best_filter)[0]} over the best fitted filter.")
    over_filter = _versus(rows, "PETITE", best_filter)[1]
    over_no_ft = _versus(rows, "PETITE", "No-FT")[1]
    over_calib = _versus(rows, "PETITE", "No-FT + calibration")[1]
    gap, _ = _versus(rows, "PETITE", "Full-FT")
    resolved = [what for what, ok in (("the fitted filter", over_filter), ("No-FT", over_no_ft),
                                      ("the calibrated source model", over_calib)) if ok]
    unresolved = [what for what, ok in (("the fitted filter", over_filter), ("No-FT", over_no_ft),
                                        ("the calibrated source model", over_calib)) if not ok]
    line = (f"PETITE trains {rows['PETITE']['percent']:.2f} % of the parameters and ends {gap} from Full-FT; "
            f"it beats {', '.join(resolved) or 'none of the baselines'}")
    if unresolved:
        line += f"; its difference to {', '.join(unresolved)} is not resolved on these {len(rows['PETITE']['subjects'])} " \
                "test subjects (interval includes 0)"
    lines.append(line + ".")
    return lines


def describe_stop(final: dict[str, Any], run: Path) -> str:
    """How a run stopped, for the log: converged, or at its cap with the last validation gain (from metrics.jsonl).

    A run at its cap is not called converged, but a cap reached with a gain per validation far below
    the stopping threshold is a schedule that ran out on a flat curve, and the reader should see that.
    """
    if final["converged"]:
        return f"converged, best at step {final['best_step']}"
    lines = (run / "metrics.jsonl").read_text().splitlines() if (run / "metrics.jsonl").exists() else []
    curve = [(r["step"], r["val_psnr_masked"]) for r in map(json.loads, lines) if "val_psnr_masked" in r]
    note = f"hit the cap at the end of its schedule, best at step {final['best_step']}"
    if len(curve) >= 2:
        (s0, v0), (s1, v1) = curve[-2:]
        gain = round(v1 - v0, 2) + 0.0  # + 0.0: no "-0.00"
        note += f"; the last {s1 - s0} steps gained {gain:+.2f} dB on validation"
    return note


def _finetune(cfg: dict[str, Any]) -> dict[str, Any]:
    """One fine-tuning run (module level: the demo runs two side by side in worker processes)."""
    from petite.engine.config import TrainConfig
    from petite.engine.train import train

    return train(TrainConfig(**cfg), progress=False)


def run_demo(out: str | Path = "demo_out", quick: bool = False, seed: int = 0, overwrite: bool = False,
             echo: Callable[[str], None] = print, precision: str = "auto", normalise: str = "input") -> dict[str, Any]:
    """Run the demo into ``out`` (see the module docstring); returns what ``report/results.json`` holds.

    Full size (``quick=False``): 18 subjects on scanner 1h (12 pre-training, 2 validation, 4 test) and
    12 on scanner 4h (4 fine-tuning, 2 validation, 6 test); UNETR ``small`` with a global residual on
    random 32^3 crops, batch 4; pre-training validated every 100 steps (cap 1500) and stopped after 2
    validations without a 0.05 dB improvement, fine-tuning validated every 50 steps (cap 400) and
    stopped after 2 without improvement; validation windows overlap by :data:`VAL_OVERLAP`, the test
    on whole volumes by 0.5 (sliding 32^3 windows).  Measured with bf16 training steps: 7.1 min on 2 idle
    AMD EPYC cores (pre-training 1300 steps, 4.6 min), 19.4 min on 2 idle Intel Xeon cores (12.6 min),
    about 26 min in float32 there.
    ``precision``: autocast of every training step (``auto``: bf16 where the CPU has it natively;
    ``bf16`` is faster on CPUs with AMX or AVX-512 BF16, much slower on CPUs without; evaluation stays
    in float32).  ``normalise``: ``input`` or ``paper`` (:mod:`petite.data.normalise`).
    """
    from petite.baselines.predictors import filter_predictor, fit_gaussian
    from petite.data.datalist import read_datalist
    from petite.data.normalise import check_mode
    from petite.data.simulate import SimulationRequest, run_simulation
    from petite.engine.config import TrainConfig
    from petite.engine.efficiency import resolve_precision
    from petite.engine.evaluate import evaluate, iter_scans
    from petite.engine.train import train
    from petite.parallel import WorkerPool

    precision = resolve_precision(precision, False, "cpu")  # before anything is written
    check_mode(normalise)
    size = QUICK if quick else FULL
    out = Path(out)
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def stage(name: str, message: str) -> None:
        echo(f"[{time.perf_counter() - started:7.1f} s] {name}: {message}")

    prepare_demo_folder(out, DEMO_PATHS, overwrite)
    source, target = demo_scanners()
    load_start = load_average()
    echo(f"petite demo{' --quick' if quick else ''} -> {out} (seed {seed}, {precision} training steps, "
         f"normalisation {normalise!r}, "
         f"{os.cpu_count()} CPU cores visible, load average {load_start})")
    echo("Scanners: half-resolution versions of paper scanners 1 and 4 (grid halved, spacing doubled,")
    echo("same field of view, vendor, site and simulation parameters), written to scanners.yaml:")
    echo(f"  source {_describe(source)}")
    echo(f"  target {_describe(target)}")
    _write_scanner_file(out / "scanners.yaml", (source, target))

    # 1. Simulation.
    t = time.perf_counter()
    datalists: dict[str, Path] = {}
    for role, scanner, splits in (("source", source, size.source_splits), ("target", target, size.target_splits)):
        n = sum(splits)
        stage("simulate", f"{n} subjects on scanner {scanner.id} ({role})")
        request = SimulationRequest(out=out / "data" / role, scanners=(scanner,), n_subjects=n, seed=seed,
                                    workers=min(size.workers, n), split_sizes=splits)
        run_simulation(request, progress=False)
        datalists[role] = out / "data" / role / f"scanner{scanner.id}" / "datalist.json"
    timings["simulate"] = time.perf_counter() - t
    stage("simulate", f"done in {timings['simulate']:.0f} s")

    # 2. Pre-training on the source scanner, to convergence, and the quality gate.
    crop = list(size.crop)
    runs = out / "runs"
    common = dict(model="unetr", crop_size=crop, batch_size=size.batch_size, seed=seed, device="cpu",
                  test_split="test", patience=size.patience, precision=precision, normalise=normalise,
                  val_overlap=VAL_OVERLAP)
    stage("pretrain", f"UNETR {size.preset} (global residual) on scanner {source.id}: {size.source_splits[0]} "
          f"volumes, crop {'x'.join(map(str, crop))}, batch {size.batch_size}, validated every "
          f"{size.pretrain_val_every} steps on {size.source_splits[1]} subjects (cap {size.pretrain_max_steps})")
    t = time.perf_counter()
    pretrain_final = train(TrainConfig(
        datalist=str(datalists["source"]), out=str(runs / "pretrain"), spec="full", preset=size.preset, residual=True,
        train_split="pretrain_train", val_split="pretrain_val", max_steps=size.pretrain_max_steps,
        val_every=size.pretrain_val_every, lr=size.pretrain_lr, schedule="warmup-cosine",
        min_delta=size.pretrain_min_delta, **{**common, "patience": size.pretrain_patience or size.patience}),
        progress=False)
    timings["pretrain"] = time.perf_counter() - t
    gate = pretrain_final["gate"]
    stage("pretrain", f"done in {timings['pretrain']:.0f} s: {pretrain_final['steps']} steps "
          f"({describe_stop(pretrain_final, runs / 'pretrain')}); {gate['verdict']}")

    # 3. Baselines on the target's test subjects.  The No-FT run (a fine-tuning that trains nothing) scores the
    # short scan, the Gaussian filter fitted on the target's fine-tuning subjects and No-FT + calibration in its
    # final.json; only the filter fitted on the source is the demo's own.
    t = time.perf_counter()
    configs = {label: dict(datalist=str(datalists["target"]), out=str(runs / label.lower()), spec=spec,
                           init=str(runs / "pretrain"), train_split="finetune_train", val_split="finetune_val",
                           max_steps=size.finetune_max_steps if spec != "none" else 0,
                           val_every=size.finetune_val_every, **common)
               for label, spec in METHODS}
    target_datalist, source_datalist = read_datalist(datalists["target"]), read_datalist(datalists["source"])
    test = list(iter_scans(target_datalist, "test"))
    gauss_source = fit_gaussian(list(iter_scans(source_datalist, "pretrain_train")))
    finals = {"No-FT": _finetune(configs["No-FT"])}
    baselines = finals["No-FT"]["baselines"]
    gauss_target, calibration = baselines["gaussian"], baselines["calibration"]
    stage("baselines", f"on {len(test)} test subjects of scanner {target.id}: Gaussian filters fitted on "
          f"{target.id} (sigma {gauss_target['sigma']:g} voxel, gain {gauss_target['gain']:.3f}) and on {source.id} "
          f"(sigma {gauss_source.sigma:g}, gain {gauss_source.gain:.3f}); No-FT; No-FT + calibration")
    rows: dict[str, dict[str, Any]] = {
        "Short scan (input)": _row("Short scan (input)", baselines["short"]["subjects"]),
        f"Gaussian filter (fitted on {target.id})": _row(
            f"Gaussian filter (fitted on {target.id})", gauss_target["subjects"],
            sigma=gauss_target["sigma"], gain=gauss_target["gain"]),
        f"Gaussian filter (fitted on {source.id})": _row(
            f"Gaussian filter (fitted on {source.id})", evaluate(test, filter_predictor(gauss_source)),
            sigma=gauss_source.sigma, gain=gauss_source.gain),
    }
    timings["baselines"] = time.perf_counter() - t

    # 4. Fine-tuning on the target: Full-FT and PETITE side by side.
    t = time.perf_counter()
    stage("fine-tune", f"on scanner {target.id}: {', '.join(label for label, _ in METHODS[1:])} in parallel, each "
          f"validated every {size.finetune_val_every} steps on {size.target_splits[3]} subjects "
          f"(cap {size.finetune_max_steps}), each method at its own Table 3 learning rate")
    with WorkerPool(size.workers, threads=max(1, (os.cpu_count() or 1) // size.workers)) as pool:
        futures = {label: pool.submit(_finetune, configs[label]) for label, _ in METHODS[1:]}
        finals.update({label: future.result() for label, future in futures.items()})
    timings["finetune"] = time.perf_counter() - t
    for label, _ in METHODS[1:]:
        final = finals[label]
        stage(f"fine-tune {label}", f"{final['percent']:.2f} % trainable, {final['steps']} steps "
              f"({describe_stop(final, runs / label.lower())}), test PSNR in the head "
              f"{final['test']['psnr_masked']:.2f} dB")

    def tested(label: str) -> list[dict[str, Any]]:  # the run's own per-subject test metrics
        return read_json(runs / label.lower() / "test_metrics.json")["subjects"]

    rows["No-FT"] = _row("No-FT", tested("No-FT"), finals["No-FT"])
    rows["No-FT + calibration"] = _row(
        "No-FT + calibration", calibration["subjects"],
        **{key: calibration[key] for key in ("gain", "offset", "background")})
    for label, _ in METHODS[1:]:
        rows[label] = _row(label, tested(label), finals[label])
    rows = {key: rows[key] for key in (*list(rows)[:3], "No-FT", "No-FT + calibration", "Full-FT", "PETITE")}

    # 5. Report.
    t = time.perf_counter()
    stage("report", f"figure and tables in {out / 'report'}")
    figure = _figure(out / "report" / "error_maps.png", target_datalist, runs, tuple(crop), target)
    timings["report"] = time.perf_counter() - t
    total = time.perf_counter() - started
    timings["total"] = total

    text, markdown = format_table(list(rows.values()))
    caption = (f"Scanner {source.id} -> {target.id} (half-resolution paper scanners 1 -> 4), UNETR {size.preset} "
               f"with a global residual, {len(test)} test subjects, mean ± std over subjects, in the scans' units "
               f"mapped by each target's range to [0, 1]; 'head' = inside the long scan's head mask (rankings), "
               f"'whole' = the whole volume (the paper's numbers). Steps = optimisation steps until validation "
               f"stopped improving (converged) or the cap. Step time = median training step (batch "
               f"{size.batch_size}, CPU; Full-FT and PETITE ran side by side, one core each); peak memory added = "
               f"the run's peak resident set minus what its process held when training started.")
    lines = verdict(rows, gate)
    results = {
        "format": "petite-demo/2", "quick": quick, "seed": seed, "precision": precision, "normalise": normalise,
        "size": dataclasses.asdict(size),
        "scanners": {"source": source.to_dict(), "target": target.to_dict()},
        "pretrain": {k: pretrain_final.get(k) for k in ("steps", "stopped", "converged", "best_step",
                                                         "best_val_psnr_masked", "time_s", "step_time_s",
                                                         "peak_memory_mb", "trainable", "hparams", "baselines")},
        "gate": gate, "calibration": {key: calibration[key] for key in ("gain", "offset", "background", "fitted_on")},
        "rows": list(rows.values()), "verdict": lines, "figure": figure,
        "timings_s": {k: round(v, 1) for k, v in timings.items()}, "cpu_count": os.cpu_count(),
        "load_average": {"start": load_start, "end": load_average()},
    }
    verdict_md = "\n".join(f"- {line}" for line in lines)
    write_text(out / "report" / "table.md", f"# petite demo{' (quick)' if quick else ''}\n\n{markdown}\n\n"
                                            f"{caption}\n\n{verdict_md}\n")
    write_json(out / "report" / "results.json", results)

    echo("")
    echo(text)
    echo("")
    echo(caption)
    echo("")
    for line in lines:
        echo(line)
    if quick:
        echo("(--quick: tiny model and a few steps; a smoke test, the numbers mean nothing.)")
    echo(f"Report: {out / 'report'} (table.md, results.json, error_maps.png)")
    echo("Stage times: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items() if k != "total"))
    echo(f"Total time: {total:.0f} s ({total / 60:.1f} min); load average at start {load_start}, at end "
         f"{load_average()} (times are wall clock: other jobs on these cores slow every stage)")
    return results


def _figure(path: Path, datalist: dict[str, Any], runs: Path, roi: tuple[int, ...], scanner: Scanner) -> dict[str, Any]:
    """Fig. 4 style figure for the first test subject, from each run's saved weights."""
    from petite.report.error_maps import run_error_maps

    return run_error_maps(path, datalist, {label: runs / label.lower() for label, _ in METHODS}, roi=roi,
                          spacing=scanner.spacing,
                          title=lambda subject: f"Scanner {scanner.id} test subject {subject}: fine-tuning from "
                                                f"scanner 1h (PSNR dB / SSIM in the head)")


__all__ = ["FULL", "QUICK", "DemoSize", "demo_scanners", "format_table", "paired_difference", "run_demo", "verdict"]
