"""`petite mm ...`: multi-modal (CT/PET) head-and-neck segmentation and PEMMA (see :mod:`petite.pemma`).

The group :data:`mm` is importable (``from petite.cli.mm import mm``) so other
command modules can add their commands to it.
"""

from __future__ import annotations

import json
from typing import Any

import click

from petite.atomic import to_jsonable
from petite.cli.app import cli, parse_size
from petite.errors import UserError


def _rounded(value: Any) -> Any:
    """Floats of JSON data rounded to 4 decimals, for reading on a terminal."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(_rounded(to_jsonable(data)), indent=2))


@cli.group("mm")
def mm() -> None:
    """Multi-modal CT/PET head-and-neck tumour segmentation: upgrade a CT model to PET with PEMMA.

    \b
    petite mm simulate --out sim --centres A,B --patients 20
    petite mm pretrain --datalist sim/datalist.json --centre A --inputs ct --out runs/ct
    petite mm adapt --init runs/ct --datalist sim/datalist.json --centre A --out runs/pemma
    petite mm adapt --continue-from runs/pemma --modality pet --datalist sim/datalist.json --centre B --out runs/pemma_b
    petite mm evaluate --model runs/pemma --datalist sim/datalist.json --split A_test --mode pet
    petite mm demo
    """


_device = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
_quiet = click.option("--quiet", is_flag=True, help="No progress bar.")
_overwrite = click.option("--overwrite", is_flag=True, help="Replace an existing run folder (only once training succeeded).")


@mm.command("simulate")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder (datalist.json inside).")
@click.option("--centres", default="A,B,C", show_default=True, help="Comma-separated centre ids (A..F).")
@click.option("--patients", type=click.IntRange(min=1), default=10, show_default=True, help="Patients per centre.")
@click.option("--size", default="small", show_default=True, help="tiny (32^3), small (64x64x48), full (128x128x96) or X,Y,Z.")
@click.option("--splits", default="0.6,0.2,0.2", show_default=True, help="Train, val, test fractions per centre.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--profile", type=click.Choice(["default", "hecktor"]), default="default", show_default=True,
              help="hecktor: HECKTOR-like tumour burden, low-uptake tumours, unlabelled physiological PET uptake, "
                   "mass effect, low CT contrast (petite.headneck.realism).")
@click.option("--summary", is_flag=True, help="Also print the cohort's statistics (volumes, nodes, SUVmax) as JSON.")
@_quiet
def simulate(out: str, centres: str, patients: int, size: str, splits: str, seed: int, workers: int, profile: str,
             summary: bool, quiet: bool) -> None:
    """Synthetic head-and-neck CT/PET patients (GTVp, GTVn) from several centres, with a datalist."""
    from petite.headneck.synthetic import simulate_hn

    grid: Any = parse_size(size, "--size") if "," in size else size
    fractions = [s for s in splits.split(",")]
    path = simulate_hn(out, centres=centres, n_patients=patients, seed=seed, size=grid, splits=fractions,
                       workers=workers, progress=not quiet, profile=profile)
    click.echo(str(path))
    if summary:
        from petite.headneck.cohort_stats import summarise_datalist

        _echo_json(summarise_datalist(path))


@mm.command("import")
@click.argument("folder", type=click.Path())
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Datalist JSON to write.")
@click.option("--clinical", type=click.Path(dir_okay=False), help="Clinical CSV (HECKTOR's, rows by PatientID).")
@click.option("--splits", default="0.6,0.2,0.2", show_default=True, help="Train, val, test fractions per centre.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
def import_command(folder: str, out: str, clinical: str | None, splits: str, seed: int) -> None:
    """Validate a HECKTOR-style folder (imagesTr/labelsTr, or flat *_ct/_pet/_label) and write a datalist."""
    from petite.headneck.hecktor import import_hecktor

    path = import_hecktor(folder, out, clinical_csv=clinical, splits=splits.split(","), seed=seed)
    click.echo(str(path))


def _train_options(func: Any) -> Any:
    options = [
        click.option("--datalist", required=True, type=click.Path(), help="Multi-modal datalist JSON."),
        click.option("--centre", required=True,
                     help="Centre to train on (its <centre>_train split; <centre>_val validates). pretrain: several, "
                          "e.g. A,B,C, pool their training and validation patients."),
        click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder to create."),
        click.option("--max-steps", type=click.IntRange(min=1),
                     help="Cap of the training to convergence (default: pretrain 2000, adapt 1000, "
                          "--continue-from 500)."),
        click.option("--val-every", type=click.IntRange(min=1),
                     help="Steps between validations on <centre>_val (default: max steps / 20)."),
        click.option("--patience", type=click.IntRange(min=0),
                     help="Validations without a better mean foreground Dice before stopping (default 5; 0: train "
                          "to the cap, keep the best)."),
        click.option("--min-delta", type=click.FloatRange(min=0), default=0.0, show_default=True,
                     help="Dice gain that counts as better."),
        click.option("--min-steps", type=click.IntRange(min=0),
                     help="No stopping on patience before this step (default: max steps / 4; a model from scratch "
                          "can predict background only for a long while)."),
        click.option("--steps", type=click.IntRange(min=0),
                     help="A fixed budget instead: exactly this many steps, no stopping on validation."),
        click.option("--no-augment", "augment", flag_value=False, default=True,
                     help="No random axial flips / 90-degree rotations of the training crops."),
        click.option("--batch-size", type=click.IntRange(min=1), default=2, show_default=True),
        click.option("--lr", type=float, help="Learning rate."),
        click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True),
        click.option("--no-val", "val", flag_value=False, default=True,
                     help="With --steps: do not score <centre>_val at the end (final.json)."),
        _device, _overwrite, _quiet,
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _length(steps: int | None, max_steps: int | None, val_every: int | None, patience: int | None,
            min_delta: float, min_steps: int | None, augment: bool) -> dict[str, Any]:
    """The training-length options of the pipeline functions (those not given keep the pipeline's defaults)."""
    return _drop_none({"steps": steps, "max_steps": max_steps, "val_every": val_every, "patience": patience,
                       "min_delta": min_delta, "min_steps": min_steps, "augment": augment})


@mm.command("pretrain")
@_train_options
@click.option("--inputs", type=click.Choice(["ct", "pet", "ctpet"]), default="ct", show_default=True,
              help="ct: CT-only (PEMMA's starting point); pet: PET-only; ctpet: early fusion (2 channels).")
@click.option("--arch", type=click.Choice(["unetr", "swin_unetr"]), default="unetr", show_default=True)
@click.option("--preset", type=click.Choice(["paper", "small", "tiny"]), default="small", show_default=True)
@click.option("--crop", default="32,32,32", show_default=True,
              help="Training crop = inference window (= UNETR's input size). Swin UNETR: one side above 32, "
                   "e.g. 64,64,64.")
@click.option("--pet-norm", type=click.Choice(["zscore", "suv"]), default="zscore", show_default=True)
def pretrain(datalist: str, centre: str, out: str, max_steps: int | None, val_every: int | None, patience: int | None,
             min_delta: float, min_steps: int | None, steps: int | None, augment: bool, batch_size: int,
             lr: float | None, seed: int,
             val: bool, device: str, overwrite: bool, quiet: bool, inputs: str, arch: str, preset: str, crop: str,
             pet_norm: str) -> None:
    """Train a CT-only, PET-only or early-fusion segmenter from scratch (all weights; lr 1e-3 by default), to
    convergence on <centre>_val (best state kept; final.json: converged or capped, best step, learning curve)."""
    from petite.pemma.pipeline import pretrain as run

    final = run(datalist, centre, out, inputs=inputs, arch=arch, preset=preset, crop=parse_size(crop, "--crop"),
                batch_size=batch_size, seed=seed, pet_norm=pet_norm, device=device, val=val, overwrite=overwrite,
                progress=not quiet, **_length(steps, max_steps, val_every, patience, min_delta, min_steps, augment),
                **_drop_none({"lr": lr}))
    _echo_json(final)


@mm.command("adapt")
@_train_options
@click.option("--init", type=click.Path(), help="CT-only run to upgrade with PEMMA.")
@click.option("--continue-from", "continue_from", type=click.Path(),
              help="PEMMA run to adapt further to --centre with one modality (continual adaptation).")
@click.option("--modality", help="With --continue-from: pet or ct, the one modality the new centre has "
                                 "(only its parts train).")
@click.option("--update", type=click.Choice(["modality", "adapter", "full"]),
              help="With --continue-from: what trains: modality (default, PEMMA: only the modality's own parts), "
                   "adapter (every part the upgrade trained: LoRA without freezing) or full (every weight); the "
                   "last two are forgetting baselines.")
@click.option("--method", type=click.Choice(["lora", "dora"]), help="With --init: LoRA (default) or DoRA on the transformer.")
@click.option("--r", "rank", type=click.IntRange(min=1),
              help="With --init: rank (default 4 for the reference targets, 8 for extended).")
@click.option("--alpha", type=float, help="With --init: scale numerator (default: UNETR 4, Swin 8; extended 16).")
@click.option("--lora-dropout", type=click.FloatRange(0, 1, max_open=True),
              help="With --init: dropout on the LoRA input (default: UNETR 0, Swin 0.1; extended 0).")
@click.option("--lora-targets",
              help="With --init: reference (default: UNETR q,v; Swin qkv), extended (q,k,v, attention output, "
                   "both MLP linears) or roles/patterns, e.g. query,key,value.")
@click.option("--fusion", type=click.Choice(["tokens", "channels"]),
              help="With --init: tokens (default, reference: CT and PET tokens concatenated, skips summed) or "
                   "channels (1x1x1 projection of the concatenated embeddings, modality adapters).")
@click.option("--train-decoder/--freeze-decoder", default=None,
              help="With --init: train the CNN decoder and head (default, reference) or keep them frozen.")
@click.option("--mode-probs", help="With --init: per-batch input modes, default ctpet=0.6,ct=0.2,pet=0.2.")
@click.option("--crop", help="Training crop = inference window X,Y,Z (default: the run's; Swin UNETR can change it, "
                             "UNETR cannot).")
def adapt(datalist: str, centre: str, out: str, max_steps: int | None, val_every: int | None, patience: int | None,
          min_delta: float, min_steps: int | None, steps: int | None, augment: bool, batch_size: int,
          lr: float | None, seed: int,
          val: bool, device: str, overwrite: bool, quiet: bool, init: str | None, continue_from: str | None,
          modality: str | None, update: str | None, method: str | None, rank: int | None, alpha: float | None,
          lora_dropout: float | None, lora_targets: str | None, fusion: str | None, train_decoder: bool | None,
          mode_probs: str | None, crop: str | None) -> None:
    """PEMMA: upgrade a CT-only run to CT+PET (by default the reference design: CT+PET tokens through the
    ViT with LoRA on attention, PET embedding and skip, decoder and head train; lr 2e-3), or with --continue-from
    adapt a PEMMA run to a new centre with one modality; to convergence on <centre>_val as pretrain."""
    from petite.pemma import pipeline

    common = dict(batch_size=batch_size, seed=seed, device=device, val=val, overwrite=overwrite,
                  progress=not quiet, crop=parse_size(crop, "--crop") if crop is not None else None,
                  **_length(steps, max_steps, val_every, patience, min_delta, min_steps, augment),
                  **_drop_none({"lr": lr}))
    if (init is None) == (continue_from is None):
        raise UserError("give exactly one of --init (a CT-only run to upgrade) and --continue-from (a PEMMA run)")
    if init is not None:
        if modality is not None or update is not None:
            raise UserError("--modality and --update go with --continue-from (an --init upgrade trains with CT and "
                            "PET)")
        final = pipeline.adapt(init, datalist, centre, out, mode_probs=mode_probs,
                               **_drop_none({"method": method, "r": rank, "alpha": alpha, "dropout": lora_dropout,
                                             "targets": lora_targets, "fusion": fusion,
                                             "train_decoder": train_decoder}), **common)
    else:
        given = [name for name, v in (("--method", method), ("--r", rank), ("--alpha", alpha),
                                      ("--lora-dropout", lora_dropout), ("--lora-targets", lora_targets),
                                      ("--fusion", fusion), ("--train-decoder/--freeze-decoder", train_decoder),
                                      ("--mode-probs", mode_probs)) if v is not None]
        if given:
            raise UserError(f"{', '.join(given)} go with --init; --continue-from keeps the PEMMA run's settings")
        if modality is None:
            raise UserError("--continue-from needs --modality pet or ct (the modality the new centre has)")
        final = pipeline.continue_adapt(continue_from, datalist, centre, out, modality=modality,
                                        update=update or "modality", **common)
    _echo_json(final)


@mm.command("params")
@click.option("--arch", default="unetr,swin_unetr", show_default=True, help="Comma-separated architectures.")
@click.option("--preset", default="pemma,paper", show_default=True,
              help="Comma-separated presets: pemma (the authors' model configuration), paper, small, tiny.")
@click.option("--markdown", is_flag=True, help="Print a markdown table.")
def params(arch: str, preset: str, markdown: bool) -> None:
    """% of the CT model each PEMMA design trains (counted on built models), beside the paper's ~8 %."""
    from petite.pemma.params import PAPER_PERCENT, format_rows, variant_rows

    rows = [row for a in arch.split(",") for p in preset.split(",") for row in variant_rows(a.strip(), p.strip())]
    text, md = format_rows(rows)
    click.echo(md if markdown else text)
    click.echo(f"The PEMMA paper reports about {PAPER_PERCENT:g} % trainable for its design.")


@mm.command("late")
@click.option("--ct-model", required=True, type=click.Path(), help="CT-only run.")
@click.option("--pet-model", required=True, type=click.Path(), help="PET-only run.")
@click.option("--weight", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.5, show_default=True,
              help="CT weight of the logit average.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder to create.")
@_overwrite
def late(ct_model: str, pet_model: str, weight: float, out: str, overwrite: bool) -> None:
    """Late fusion: a run folder that averages the logits of a CT-only and a PET-only run (no training)."""
    from petite.pemma.pipeline import late as run

    _echo_json(run(ct_model, pet_model, out, weight=weight, overwrite=overwrite))


@mm.command("evaluate")
@click.option("--model", "model", required=True, type=click.Path(), help="Run folder (any kind).")
@click.option("--pet-model", type=click.Path(), help="PET-only run: late fusion with --model (a CT-only run).")
@click.option("--late-weight", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.5, show_default=True)
@click.option("--datalist", required=True, type=click.Path(), help="Multi-modal datalist JSON.")
@click.option("--split", required=True,
              help="Split to score, e.g. A_test; several pooled: A_test,B_test (the report adds per-centre means).")
@click.option("--mode", type=click.Choice(["ctpet", "ct", "pet"]), help="Input images (default: the run's own).")
@click.option("--out", type=click.Path(file_okay=False),
              help="Folder for <split>_<mode>.csv/.json (default: RUN/eval; with --pet-model RUN/eval_late).")
@click.option("--overlap", type=click.FloatRange(0, 1, max_open=True), default=0.5, show_default=True,
              help="Sliding-window overlap.")
@click.option("--roi", help="Sliding window X,Y,Z (default: the run's crop; Swin UNETR can change it, UNETR cannot).")
@_device
@_quiet
def evaluate(model: str, pet_model: str | None, late_weight: float, datalist: str, split: str, mode: str | None,
             out: str | None, overlap: float, roi: str | None, device: str, quiet: bool) -> None:
    """Dice and HD95 (mm) per class (GTVp, GTVn) and case, whole volumes by sliding windows; HECKTOR summary
    (DSCagg, absent-class false positives / true negatives, HD95 coverage, 95 % bootstrap intervals)."""
    from pathlib import Path

    from petite.pemma.pipeline import evaluate as run

    folder = Path(out) if out is not None else Path(model) / ("eval_late" if pet_model else "eval")
    report = run(model, datalist, split, mode=mode, out=folder, pet_run=pet_model, late_weight=late_weight,
                 roi=parse_size(roi, "--roi") if roi is not None else None, overlap=overlap, device=device,
                 progress=not quiet)
    stem = f"{split.replace(',', '+')}_{report['mode']}"
    pooled = ("per_centre",) if len(report["per_centre"]) > 1 else ()
    shown = ("kind", "split", "mode", "n", "mean", "hecktor", *pooled)
    _echo_json({k: report[k] for k in shown} | {"files": [str(folder / f"{stem}.{e}") for e in ("csv", "json")]})


@mm.command("demo")
@click.option("--out", default="mm_demo_out", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the data, runs and report.")
@click.option("--quick", is_flag=True, help="Tiny model, few patients and steps (about a minute): a smoke test.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of data and training.")
@click.option("--workers", type=click.IntRange(min=1),
              help="Parallel single-threaded job processes (default: one per core, at most 3; --quick: 1, in-process).")
@click.option("--overwrite", is_flag=True, help="Replace an earlier demo in --out.")
def demo(out: str, quick: bool, seed: int, workers: int | None, overwrite: bool) -> None:
    """PEMMA end to end on two synthetic centres: CT-only, PET-only, early/late fusion, PEMMA, continual
    adaptation with PET only and forgetting, every model trained to convergence on validation; prints the
    tables, writes OUT/report/ (tens of minutes on 2 CPU cores; --quick: about a minute)."""
    from petite.demos.headneck import run_demo

    run_demo(out, quick=quick, seed=seed, overwrite=overwrite, workers=workers, echo=click.echo)
