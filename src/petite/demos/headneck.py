"""``petite mm demo``: PEMMA end to end on two synthetic head-and-neck centres, on 2 CPU cores.

What it does (every number it prints is measured in that run):

1. **Simulate** centre A (CHUM-like) and centre B (CHUS-like: noisier,
   blurrier PET with another SUV calibration) with
   :func:`petite.headneck.synthetic.simulate_hn` at the ``small`` grid
   (64x64x48, ~3.1 mm) and the ``hecktor`` profile (tumour volumes and node
   burden in HECKTOR's range, low-uptake tumours, physiological and
   inflammatory PET uptake that mimics tumour, mass effect:
   :mod:`petite.headneck.realism`); each centre's patients are split
   train/val/test; one datalist ``DIR/data/datalist.json`` holds both.
2. **Train on A** (UNETR ``small``, random 32^3 crops with axial flips and
   rotations, DiceCE, AdamW with warm-up and cosine decay), every model **to
   convergence** on ``A_val`` (:func:`petite.pemma.train.train_segmenter`:
   whole-volume mean foreground Dice every ``val_every`` steps, stopped after
   ``patience`` validations without improvement or at the cap, the best state
   kept): CT-only (the model PEMMA starts from), PET-only and early fusion
   (2 channels); late fusion averages the CT-only and PET-only logits (no
   training).  The tables say, per model, how many steps it trained, its best
   step and whether it converged or hit the cap.
3. **PEMMA**: upgrade the CT-only model on A with the default (reference)
   design of :class:`petite.pemma.upgrade.PEMMA`: CT and PET tokens
   concatenated through the ViT, LoRA r 4 on q and v, the new PET embedding
   and PET skip (summed with the CT skip), decoder and head trained, with the
   input mode drawn per batch (CT+PET 0.6, CT 0.2, PET 0.2).
4. **Evaluate on A_test**, whole volumes by sliding 32^3 windows, every model in
   every input mode it supports: Dice, DSCagg (with a 95 % bootstrap interval),
   absent-node false positives / true negatives and HD95 (mm, with its case
   count) for GTVp and GTVn (:mod:`petite.pemma.aggregate`).
5. **Continual adaptation to B with PET only** (to convergence on ``B_val``),
   three ways, each at the learning rate of :attr:`DemoSize.continual_lrs`
   with the best ``B_val`` Dice: PEMMA's design (only the PET embedding and
   skip train, so CT-only predictions cannot change) and two baselines that
   update weights centre A's inputs also pass through: LoRA, decoder and head
   left unfrozen, and full fine-tuning of every weight.  Each is scored on
   B_test (PET) and on A_test (CT+PET, CT, PET) before and after: the
   forgetting, measured.
6. **Report**: both tables printed and written to ``DIR/report/table.md``,
   everything in ``DIR/report/results.json``, and ``DIR/report/segmentations.png``
   (CT, PET, ground truth and each model's prediction for one A_test case).
7. **Prognosis**: :func:`petite.prognosis.comparison.demo_step` runs last
   (survival from the adapted encoder: CT, CT+PET, CT+PET+clinical heads);
   its table is printed too.

Sizes (:data:`FULL`): 28 patients at A (17 train, 4 validation, 7 test), 12
at B (6 train, 2 validation, 4 test), ``hecktor`` profile; batch 2; every
training validated every 100 steps with patience 5 (and never stopped before a
quarter of its cap, nor while its best validation Dice is 0); caps 4000 steps
for each model trained from scratch, 1000 for the PEMMA upgrade, 500 for each
continual adaptation (two learning rates x three updates); evaluation (and
validation) windows 32^3 with overlap 0.5 (overlap 0 costs less than half but
loses 0.3 GTVp Dice at the window seams).  The cap 4000 is there because the
CT-only model learns GTVp late: at a 2000-step cap it stopped at the cap with its best validation at the
last step (A_val mean foreground Dice 0.298, A_test DSCagg mean 0.405); with 4000 it converges at 3700
(best 3200; 0.420 and 0.499), so PEMMA's CT -> CT+PET gain is measured against a CT model that has learned.

Measured (README, section "Multi-modal adaptation"; 2 AMD EPYC cores, a test suite running beside it for
its first 13 min): 31.5 min wall clock, 2881 s of CPU in all processes (24 min on 2 idle cores at least);
every model trained from scratch converged (CT-only 3700 steps, PET-only 2700, early fusion 2000).
``quick=True`` (:data:`QUICK`): ``tiny`` grid and model, a handful of patients
and steps: a smoke test, its numbers mean nothing.

Parallelism: the three trainings from scratch, the PEMMA upgrade, the
continual adaptation and the evaluations run as jobs in worker processes with
one torch thread each (:class:`petite.parallel.WorkerPool`; one per core, at
most 3): on 2 cores that is faster than one job at a time with two threads, and
it degrades gracefully when other jobs share the cores (multi-threaded steps
then wait on each other; 5-20x slower steps were seen).  ``--quick`` runs
everything in this process.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from petite.atomic import atomic_path, write_json, write_text
from petite.demos.common import load_average, prepare_demo_folder
from petite.headneck.datalist import read_mm_datalist, split_names, write_mm_datalist
from petite.headneck.synthetic import simulate_hn
from petite.parallel import WorkerPool
from petite.pemma import pipeline
from petite.pemma.aggregate import format_ci
from petite.pemma.evaluate import predict_case
from petite.pemma.runs import load_run, read_final
from petite.prognosis.comparison import demo_step
from petite.tables import render_table

# The demo's own paths inside DIR; --overwrite removes these and nothing else.
DEMO_PATHS = ("data", "runs", "report")
SOURCE, TARGET = "A", "B"


@dataclass(frozen=True)
class DemoSize:
    """How big the demo is: grid, model, patients and steps."""

    grid: str  # simulate_hn size
    preset: str
    crop: tuple[int, int, int]
    source_patients: int
    source_splits: tuple[float, float, float]  # train, val, test fractions
    target_patients: int
    target_splits: tuple[float, float, float]
    batch_size: int
    pretrain_max_steps: int  # caps: every model trains to convergence on its centre's validation split
    pretrain_lr: float
    adapt_max_steps: int
    adapt_lr: float
    continual_max_steps: int
    continual_lrs: tuple[float, ...]  # each continual update trains at each; its B_val Dice picks one
    val_every: int  # steps between validations
    patience: int  # validations without improvement before stopping
    overlap: float  # sliding-window overlap at evaluation (and validation)
    sim_workers: int = 1
    profile: str = "default"  # simulate_hn generator profile (default or hecktor)


FULL = DemoSize(grid="small", preset="small", crop=(32, 32, 32), source_patients=28,
                source_splits=(0.6, 0.15, 0.25), target_patients=12, target_splits=(0.5, 0.17, 0.33), batch_size=2,
                pretrain_max_steps=4000, pretrain_lr=1e-3, adapt_max_steps=1000, adapt_lr=2e-3,
                continual_max_steps=500, continual_lrs=(2e-4, 2e-3), val_every=100, patience=5, overlap=0.5,
                profile="hecktor")
QUICK = DemoSize(grid="tiny", preset="tiny", crop=(16, 16, 16), source_patients=6, source_splits=(0.5, 0.17, 0.33),
                 target_patients=5, target_splits=(0.4, 0.2, 0.4), batch_size=1, pretrain_max_steps=4,
                 pretrain_lr=1e-3, adapt_max_steps=4, adapt_lr=2e-3, continual_max_steps=3, continual_lrs=(2e-3,),
                 val_every=2, patience=1, overlap=0.0)

# (row label, run name, input mode) in table order.
ROWS: tuple[tuple[str, str, str], ...] = (
    ("CT-only", "ct", "ct"),
    ("PET-only", "pet", "pet"),
    ("Early fusion", "early", "ctpet"),
    ("Late fusion", "late", "ctpet"),
    ("PEMMA", "pemma", "ctpet"),
    ("PEMMA", "pemma", "ct"),
    ("PEMMA", "pemma", "pet"),
)
MODE_NAMES = {"ctpet": "CT+PET", "ct": "CT", "pet": "PET"}
#: Continual adaptation to the target with PET only: PEMMA's design, then the two forgetting baselines that
#: update weights the source centre's inputs also pass through (:data:`petite.pemma.upgrade.CONTINUAL_UPDATES`).
CONTINUAL: tuple[tuple[str, str], ...] = (("modality", "PEMMA (PET parts)"), ("adapter", "LoRA + decoder unfrozen"),
                                          ("full", "Full fine-tuning"))


def _cpu_seconds() -> float | None:
    """CPU seconds of this process and its finished children (the job workers), or None where unknown."""
    try:
        import resource
    except ImportError:
        return None
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def simulate_centres(out: Path, size: DemoSize, seed: int) -> Path:
    """Centres A and B (their own patient counts and splits) -> ``out/datalist.json`` holding both."""
    parts = []
    for centre, n, splits in ((SOURCE, size.source_patients, size.source_splits),
                              (TARGET, size.target_patients, size.target_splits)):
        path = simulate_hn(out / centre, centres=(centre,), n_patients=n, seed=seed, size=size.grid, splits=splits,
                           workers=min(size.sim_workers, n), profile=size.profile)
        parts.append(read_mm_datalist(path))
    merged = dict(parts[0])
    merged["centres"] = {**parts[0]["centres"], **parts[1]["centres"]}
    merged.update({name: parts[1][name] for name in split_names(parts[1])})
    merged.pop("split_fractions", None)
    merged["split_fractions_by_centre"] = {SOURCE: list(size.source_splits), TARGET: list(size.target_splits)}
    path = out / "datalist.json"
    write_mm_datalist(path, merged)
    return path


# ----------------------------------------------------------------------------- tables


def _num(value: Any, digits: int) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"


SEGMENTATION_COLUMNS = ("Method", "Input", "% trainable", "Steps (best)", "Stopped", "Dice GTVp", "Dice GTVn",
                        "DSCagg GTVp", "DSCagg GTVn", "DSCagg mean [95 % CI]", "GTVn absent: FP/TN",
                        "HD95 GTVp (mm, n)", "HD95 GTVn (mm, n)")
CONTINUAL_COLUMNS = ("Update", "lr", "% trainable", "Steps (best)", "Test split", "Input", "Dice GTVp before",
                     "Dice GTVp after", "Dice mean before", "Dice mean after", "Change")


def stopping(final: Mapping[str, Any]) -> str:
    """How a run's training ended, in words: ``converged at step B of N`` or ``capped at N (best B)``."""
    if final.get("converged"):
        return f"converged at step {final['steps']} (best {final['best_step']})"
    if final.get("max_steps") is not None:
        return f"hit the cap of {final['max_steps']} steps (best {final['best_step']})"
    return f"fixed budget of {final.get('steps')} steps"


def _training_cells(row: Mapping[str, Any]) -> list[str]:
    """``Steps (best)`` and ``Stopped`` of a table row (late fusion trains nothing: its members did)."""
    if row.get("steps") is None:
        return ["-", "-"]
    stopped = "converged" if row.get("converged") else ("cap" if row.get("max_steps") is not None else "budget")
    return [f"{row['steps']} ({row['best_step']})", stopped]


def format_segmentation_table(rows: list[dict[str, Any]]) -> tuple[str, str]:
    """(plain text, markdown) of the A_test comparison."""
    cells = []
    for r in rows:
        h = r["hecktor"]
        p, n = h["classes"]["1"], h["classes"]["2"]
        cells.append([r["method"], MODE_NAMES[r["mode"]], _num(r["percent"], 2), *_training_cells(r),
                      _num(p["dice_mean"], 3),
                      _num(n["dice_mean"], 3), _num(p["dsc_agg"], 3), _num(n["dsc_agg"], 3),
                      format_ci(h["overall"]["dsc_agg"], h["overall"]["dsc_agg_ci"]),
                      f"{n['absent']['false_positive']}/{n['absent']['true_negative']}",
                      f"{_num(p['hd95_mean'], 1)} ({p['hd95_n']})", f"{_num(n['hd95_mean'], 1)} ({n['hd95_n']})"])
    return render_table(SEGMENTATION_COLUMNS, cells)


def format_continual_table(rows: list[dict[str, Any]]) -> tuple[str, str]:
    """(plain text, markdown) of the continual adaptation / forgetting table."""
    cells = []
    for r in rows:
        change = r["after"]["dice_mean"] - r["before"]["dice_mean"]
        cells.append([r["method"], f"{r['lr']:g}", _num(r["percent"], 2), *_training_cells(r)[:1], r["label"],
                      MODE_NAMES[r["mode"]], _num(r["before"]["dice_1"], 3), _num(r["after"]["dice_1"], 3),
                      _num(r["before"]["dice_mean"], 3), _num(r["after"]["dice_mean"], 3), f"{change:+.3f}"])
    return render_table(CONTINUAL_COLUMNS, cells)


# ----------------------------------------------------------------------------- the demo


def default_workers() -> int:
    """Parallel worker processes: one per core, at most 3 (there are three independent trainings)."""
    return max(1, min(os.cpu_count() or 1, 3))


def _evaluate_job(run: str, datalist: str, split: str, mode: str, out: str, overlap: float) -> dict[str, Any]:
    return pipeline.evaluate(run, datalist, split, mode=mode, out=out, overlap=overlap, device="cpu")


def _train_and_evaluate(jobs: WorkerPool, size: DemoSize, data: Mapping[str, Any], dl: str, runs: Path, seed: int,
                        stage: Callable[[str, str], None], timings: dict[str, float]) -> dict[str, Any]:
    """Steps 2-5 of the demo as jobs: train, upgrade, continual adaptation, every evaluation."""
    common = dict(batch_size=size.batch_size, seed=seed, device="cpu", val_every=size.val_every,
                  patience=size.patience)
    crop = "x".join(map(str, size.crop))

    # 2-3. From scratch on A (CT-only, PET-only, early fusion), then the PEMMA upgrade of CT-only.
    t = time.perf_counter()
    labels = {"ct": "CT-only", "pet": "PET-only", "early": "early fusion", "pemma": "PEMMA upgrade"}
    stage("train", f"UNETR {size.preset} on {SOURCE}_train from scratch: CT-only, PET-only, early fusion, "
          f"each to convergence on {SOURCE}_val (validated every {size.val_every} steps, patience "
          f"{size.patience}, cap {size.pretrain_max_steps}; batch {size.batch_size}, crop {crop}, "
          f"lr {size.pretrain_lr:g})")
    futures = {name: jobs.submit(pipeline.pretrain, dl, SOURCE, str(runs / name), inputs=inputs,
                                 preset=size.preset, crop=size.crop, max_steps=size.pretrain_max_steps,
                                 lr=size.pretrain_lr, **common)
               for name, inputs in (("ct", "ct"), ("pet", "pet"), ("early", "ctpet"))}
    finals: dict[str, dict[str, Any]] = {}

    def collect(name: str) -> dict[str, Any]:
        finals[name] = futures[name].result()
        f = finals[name]
        stage(f"train {labels[name]}", f"done: {stopping(f)}, {f['time_s']:.0f} s, {f['step_time_s']:.2f} s/step, "
              f"{f['percent']:.2f} % trainable, final loss {f['final_loss']:.3f}")
        return f

    collect("ct")
    stage("PEMMA", f"upgrade CT-only (reference design: CT+PET tokens, LoRA r 4 on q/v, PET embedding and skip, "
          f"decoder) on {SOURCE}_train to convergence (cap {size.adapt_max_steps} steps), "
          f"modes CT+PET/CT/PET 0.6/0.2/0.2, lr {size.adapt_lr:g}")
    futures["pemma"] = jobs.submit(pipeline.adapt, str(runs / "ct"), dl, SOURCE, str(runs / "pemma"),
                                   max_steps=size.adapt_max_steps, lr=size.adapt_lr, **common)
    for name in ("pet", "early", "pemma"):
        collect(name)
    pipeline.late(runs / "ct", runs / "pet", runs / "late")
    timings["train"] = time.perf_counter() - t

    # 4-5. Evaluate on A_test in every mode; continual adaptation to B with PET only, evaluated before/after.
    t = time.perf_counter()
    test_a, test_b = f"{SOURCE}_test", f"{TARGET}_test"
    stage("evaluate", f"{len(data[test_a])} {test_a} cases, whole volumes, sliding {crop} windows "
          f"(overlap {size.overlap:g}); continual adaptation to {TARGET} with PET only: "
          f"on {TARGET}_train to convergence on {TARGET}_val (cap {size.continual_max_steps} steps), "
          f"{', '.join(label for _, label in CONTINUAL)}, each at lr "
          f"{'/'.join(f'{lr:g}' for lr in size.continual_lrs)}")
    # Each continual run is scored on the target (PET) and on the source in every mode (the forgetting).
    continual_scores = ((test_b, "pet"), (test_a, "ctpet"), (test_a, "ct"), (test_a, "pet"))
    grid = {continual_run(update, lr): (update, lr) for update, _ in CONTINUAL for lr in size.continual_lrs}
    for name, (update, lr) in grid.items():
        futures[name] = jobs.submit(pipeline.continue_adapt, str(runs / "pemma"), dl, TARGET, str(runs / name),
                                    modality="pet", update=update, max_steps=size.continual_max_steps, lr=lr,
                                    **common)
    evaluations: dict[str, concurrent.futures.Future] = {}

    def score(run: str, split: str, mode: str) -> None:
        evaluations[f"{run}/{split}/{mode}"] = jobs.submit(_evaluate_job, str(runs / run), dl, split, mode,
                                                           str(runs / run / "eval"), size.overlap)

    for _, run, mode in ROWS:
        score(run, test_a, mode)
    score("pemma", test_b, "pet")
    score("pet", test_b, "pet")
    for name in grid:
        finals[name] = futures[name].result()
    chosen = choose_continual(grid, finals)
    for update, label in CONTINUAL:
        name = chosen[update]
        stage("continual", f"{label}: lr {grid[name][1]:g} chosen on {TARGET}_val (best Dice "
              f"{finals[name]['best_val_dice']:.3f}), {stopping(finals[name])}, {finals[name]['time_s']:.0f} s, "
              f"{finals[name]['percent']:.2f} % trainable")
        for split, mode in continual_scores:
            score(name, split, mode)
    reports = {key: future.result() for key, future in evaluations.items()}
    timings["evaluate_and_continual"] = time.perf_counter() - t
    stage("evaluate", f"done in {timings['evaluate_and_continual']:.0f} s")

    rows = []
    for label, run, mode in ROWS:
        report = reports[f"{run}/{test_a}/{mode}"]
        final_run = read_final(runs / run)
        rows.append({"method": label, "run": run, "mode": mode, "percent": final_run.get("percent"),
                     "trainable": final_run.get("trainable"), "n": report["n"],
                     **{k: final_run.get(k) for k in ("steps", "best_step", "converged", "max_steps")},
                     **{k: report["mean"].get(k) for k in ("dice_1", "dice_2", "dice_mean", "hd95_1", "hd95_2",
                                                           "hd95_mean")},
                     "dice_mean_std": float(np.nanstd([c["dice_mean"] for c in report["cases"]])),
                     "hecktor": report["hecktor"]})
    continual = []
    for update, label in CONTINUAL:
        name = chosen[update]
        run_facts = {"method": label, "update": update, "run": name, "lr": grid[name][1],
                     "lrs_tried": {f"{grid[n][1]:g}": finals[n]["best_val_dice"] for n in grid if grid[n][0] == update},
                     **{k: finals[name].get(k) for k in ("percent", "steps", "best_step", "converged", "max_steps")}}
        for split, mode in continual_scores:
            continual.append({**run_facts, "label": split if split == test_b else f"{split} (forgetting)",
                              "split": split, "mode": mode, "before": reports[f"pemma/{split}/{mode}"]["mean"],
                              "after": reports[f"{name}/{split}/{mode}"]["mean"]})
    pet_only_b = reports[f"pet/{test_b}/pet"]
    return {"rows": rows, "continual": continual, "pet_only_b": pet_only_b, "finals": finals, "reports": reports,
            "chosen": chosen}


def continual_run(update: str, lr: float) -> str:
    """Run folder name of one continual adaptation of the grid."""
    return f"pemma_b_{update}_lr{lr:g}"


def choose_continual(grid: Mapping[str, tuple[str, float]], finals: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """update -> the run of the grid with the best validation Dice on the target (ties: the lower lr)."""
    chosen: dict[str, str] = {}
    for name, (update, lr) in sorted(grid.items(), key=lambda item: item[1][1]):
        best = finals[name].get("best_val_dice")
        if best is None:
            raise RuntimeError(f"continual run {name} has no validation Dice to choose by")
        if update not in chosen or best > finals[chosen[update]]["best_val_dice"]:
            chosen[update] = name
    return chosen


def run_demo(out: str | Path = "mm_demo_out", quick: bool = False, seed: int = 0, overwrite: bool = False,
             workers: int | None = None, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the demo into ``out`` (see the module docstring); returns what ``report/results.json`` holds.

    ``workers``: parallel processes for training and evaluation (default
    :func:`default_workers`; ``quick`` defaults to 1, in this process).
    Measured (full size): see the README section "Multi-modal adaptation (PEMMA)".
    """
    size = QUICK if quick else FULL
    out = Path(out)
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def stage(name: str, message: str) -> None:
        echo(f"[{time.perf_counter() - started:7.1f} s] {name}: {message}")

    prepare_demo_folder(out, DEMO_PATHS, overwrite)
    load_start, cpu_start = load_average(), _cpu_seconds()
    n_workers = int(workers) if workers is not None else (1 if quick else default_workers())
    cores = os.cpu_count() or 1
    # One thread per job for --quick (tiny models do not parallelise), else the cores shared among the workers.
    threads = 1 if quick else max(1, min(cores // n_workers, torch.get_num_threads() if n_workers == 1 else cores))
    before_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        echo(f"petite mm demo{' --quick' if quick else ''} -> {out} (seed {seed}, {cores} CPU cores visible, "
             f"load average {load_start}; {n_workers} worker process(es) x {threads} torch thread(s))")

        # 1. Data.
        t = time.perf_counter()
        stage("simulate", f"centre {SOURCE}: {size.source_patients} patients, centre {TARGET}: {size.target_patients} "
              f"patients, grid {size.grid}")
        datalist = simulate_centres(out / "data", size, seed)
        data, _ = pipeline.open_datalist(datalist)
        counts = {name: len(data[name]) for name in data if isinstance(data[name], list)}
        timings["simulate"] = time.perf_counter() - t
        stage("simulate", f"done in {timings['simulate']:.0f} s: " +
              ", ".join(f"{k} {v}" for k, v in counts.items() if v))

        runs = out / "runs"
        with WorkerPool(n_workers, threads=threads, quiet=True) as jobs:
            done = _train_and_evaluate(jobs, size, data, str(datalist), runs, seed, stage, timings)
        rows, continual, pet_only_b = done["rows"], done["continual"], done["pet_only_b"]
        adapted = done["chosen"]["modality"]
        finals, reports = done["finals"], done["reports"]
        test_a, test_b, crop = f"{SOURCE}_test", f"{TARGET}_test", "x".join(map(str, size.crop))

        # 6. Figure and report (this process).
        t = time.perf_counter()
        stage("report", f"figure and tables in {out / 'report'}")
        loaded = {name: load_run(runs / name) for name in ("ct", "pet", "early", "late", "pemma")}
        loaded["pemma_b"] = load_run(runs / adapted)
        figure = save_segmentation_figure(out / "report" / "segmentations.png", data, test_a, loaded, size.crop,
                                          size.overlap, {})
        timings["report"] = time.perf_counter() - t

        text, markdown = format_segmentation_table(rows)
        c_text, c_markdown = format_continual_table(continual)
        n_a, n_b = len(data[test_a]), len(data[test_b])
        caption = (f"Centre {SOURCE} test set ({n_a} synthetic patients), means over patients; UNETR {size.preset}, "
                   f"crop {crop}, batch {size.batch_size}; every model trained to convergence on {SOURCE}_val "
                   f"(mean foreground Dice every {size.val_every} steps, stopped after {size.patience} validations "
                   f"without improvement, best state kept; caps: from scratch {size.pretrain_max_steps}, PEMMA "
                   f"upgrade {size.adapt_max_steps} steps); Steps (best): steps trained (the step whose state is "
                   f"kept); Stopped: converged, or cap if the cap came first. % trainable: of the model itself "
                   f"(late fusion: both members train "
                   f"fully); PEMMA: of the CT model. Dice: mean over the patients who have the class; DSCagg: "
                   f"sum 2|P&G| / sum (|P|+|G|) over all patients (HECKTOR's metric), 95 % percentile bootstrap "
                   f"over patients; patients without nodes are counted apart (false positives / true negatives); "
                   f"HD95 over the n cases where both masks are non-empty.")
        lrs = "/".join(f"{lr:g}" for lr in size.continual_lrs)
        c_caption = (f"Each model adapted from the PEMMA model trained on {SOURCE} to centre {TARGET} with PET only, to "
                     f"convergence on {TARGET}_val (cap {size.continual_max_steps} steps), at the learning rate of "
                     f"{lrs} with the best {TARGET}_val Dice (no test data chooses anything). Update: what trains "
                     f"(% of the CT model): PEMMA's design trains only the PET embedding and skip, so CT-only "
                     f"predictions cannot change; the two baselines update weights the {SOURCE} inputs also pass "
                     f"through (LoRA, decoder and head; every weight), which is where forgetting can happen. Before = "
                     f"the PEMMA model trained on {SOURCE}; after = adapted to {TARGET}. Reference: the PET-only "
                     f"baseline trained on {SOURCE} scores Dice {pet_only_b['mean']['dice_mean']:.3f} on {test_b} "
                     f"({n_b} patients).")
        t = time.perf_counter()
        models = {name: model for name, (model, _) in loaded.items()}
        prognosis = dict(demo_step(out, datalist, models, echo, quick=quick))
        timings["prognosis"] = time.perf_counter() - t
        total = time.perf_counter() - started
        timings["total"] = total
        cpu_end = _cpu_seconds()
        cpu = None if cpu_start is None or cpu_end is None else cpu_end - cpu_start
        results = {
            "format": "petite-mm-demo/1", "quick": quick, "seed": seed, "size": dataclasses.asdict(size),
            "workers": n_workers, "threads": threads, "cpu_count": cores, "datalist": str(datalist), "splits": counts,
            "rows": rows, "continual": continual, "pet_only_on_target": pet_only_b["mean"],
            "finals": finals,
            "evaluations": {k: {kk: v.get(kk) for kk in ("run", "split", "mode", "n", "mean", "hecktor", "seconds",
                                                         "cpu_time_s")}
                            for k, v in reports.items()},
            "figure": figure, "prognosis": prognosis, "timings_s": {k: round(v, 1) for k, v in timings.items()},
            "load_average": {"start": load_start, "end": load_average()}, "cpu_time_s": cpu,
        }
        title = f"# petite mm demo{' (quick)' if quick else ''}"
        md = f"{title}\n\n## Segmentation on {test_a}\n\n{markdown}\n\n{caption}\n\n" \
             f"## Continual adaptation to {TARGET} with PET only, and forgetting on {SOURCE}\n\n{c_markdown}\n\n{c_caption}\n"
        if prognosis and prognosis.get("markdown"):
            md += f"\n## Prognosis\n\n{prognosis['markdown']}\n"
        write_text(out / "report" / "table.md", md)
        write_json(out / "report" / "results.json", results)

        echo("")
        echo(f"Segmentation on {test_a}:")
        echo(text)
        echo(caption)
        echo("")
        echo(f"Continual adaptation to {TARGET} with PET only, and forgetting on {SOURCE}:")
        echo(c_text)
        echo(c_caption)
        if prognosis and prognosis.get("table"):
            echo("")
            echo(str(prognosis["table"]))
        echo("")
        if quick:
            echo("(--quick: tiny grid and model, a few steps; a smoke test, the numbers mean nothing.)")
        echo(f"Report: {out / 'report'} (table.md, results.json, segmentations.png)")
        echo("Stage times: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items() if k != "total"))
        echo(f"Total time: {total:.0f} s ({total / 60:.1f} min); load average at start {load_start}, at end {load_average()} "
             f"(wall clock: other jobs on these cores slow every stage)")
        if cpu is not None:
            echo(f"CPU time: {cpu:.0f} s in all processes ({cpu / cores:.0f} s per core: the wall time on {cores} idle "
                 f"cores cannot be lower)")
        return results
    finally:
        torch.set_num_threads(before_threads)


# ----------------------------------------------------------------------------- figure


FIGURE_PANELS: tuple[tuple[str, str, str], ...] = (
    ("CT-only", "ct", "ct"), ("PET-only", "pet", "pet"), ("Early fusion", "early", "ctpet"),
    ("Late fusion", "late", "ctpet"), ("PEMMA CT+PET", "pemma", "ctpet"), ("PEMMA CT", "pemma", "ct"),
    ("PEMMA PET", "pemma", "pet"), ("PEMMA->B PET", "pemma_b", "pet"),
)


def save_segmentation_figure(path: Path, data: Mapping[str, Any], split: str, loaded: Mapping[str, tuple],
                             crop: tuple[int, int, int], overlap: float, cache: dict) -> dict[str, Any]:
    """PNG: CT, PET, ground truth and each model's prediction on the axial slice through the largest GTVp.

    The test case is the one with the largest primary tumour (most voxels of label 1).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    entries = data[split]
    cases = pipeline.load_cases(data, split, entries, "zscore", cache)
    case = max(cases, key=lambda c: int((c["label"] == 1).sum()))
    label = case["label"][0].numpy()
    z = int(np.argmax((label == 1).sum(axis=(0, 1))))
    ct, pet = case["ct"][0, :, :, z].numpy().T, case["pet"][0, :, :, z].numpy().T
    panels: list[tuple[str, np.ndarray | None]] = [("Ground truth", label[:, :, z].T)]
    for title, run, mode in FIGURE_PANELS:
        if run not in loaded:
            continue
        model, info = loaded[run]
        model.eval()
        logits = predict_case(model, case, mode, crop, overlap, device=torch.device("cpu"))
        panels.append((title, logits.argmax(dim=1)[0, :, :, z].numpy().T))
    n_columns = math.ceil((2 + len(panels)) / 2)
    figure, grid = plt.subplots(2, n_columns, figsize=(2.3 * n_columns, 5.0), facecolor="black", squeeze=False)
    axes = list(grid.ravel())
    overlay = ListedColormap([(0, 0, 0, 0), (1, 0.1, 0.1, 0.6), (0.1, 0.9, 1, 0.6)])
    axes[0].imshow(ct, cmap="gray", vmin=0, vmax=1, origin="lower")
    axes[0].set_title(f"CT {case['patient']}", color="white", fontsize=8)
    axes[1].imshow(pet, cmap="hot", vmin=0, vmax=max(float(np.percentile(pet, 99.5)), 1e-3), origin="lower")
    axes[1].set_title("PET (z-score)", color="white", fontsize=8)
    for ax, (title, mask) in zip(axes[2:], panels):
        ax.imshow(ct, cmap="gray", vmin=0, vmax=1, origin="lower")
        ax.imshow(mask, cmap=overlay, vmin=0, vmax=2, origin="lower", interpolation="nearest")
        ax.set_title(title, color="white", fontsize=8)
    for ax in axes:
        ax.axis("off")
    figure.suptitle(f"{split} case {case['patient']}, axial slice {z}: red GTVp, cyan GTVn", color="white", fontsize=9)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=90, facecolor="black")
    plt.close(figure)
    return {"path": str(path), "patient": case["patient"], "slice_z": z, "panels": [p[0] for p in panels]}


__all__ = ["FULL", "QUICK", "DemoSize", "format_continual_table", "format_segmentation_table", "default_workers",
           "run_demo", "save_segmentation_figure"]
