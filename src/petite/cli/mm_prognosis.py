"""`petite mm prognosis train | evaluate`: survival heads on a segmentation run's frozen encoder.

See :mod:`petite.prognosis` for the features, the heads and the measures.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import click

from petite.cli.app import parse_size
from petite.cli.mm import mm
from petite.errors import UserError


@mm.group("prognosis")
def prognosis() -> None:
    """Relapse-free survival from a segmentation run's frozen encoder (optionally with clinical data).

    \b
    petite mm prognosis train --model runs/pemma --datalist sim/datalist.json --splits A_train,A_val \\
        --clinical --seeds 0,1,2 --out runs/prognosis
    petite mm prognosis evaluate --run runs/prognosis --datalist sim/datalist.json --split A_test
    """


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        seeds = []
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds must be distinct non-negative integers like 0,1,2, got {text!r}")
    return seeds


def _split_items(datalist: dict[str, Any], splits: list[str], path: str) -> list[dict[str, Any]]:
    from petite.headneck.datalist import items

    found: list[dict[str, Any]] = []
    for split in splits:
        try:
            found.extend(items(datalist, split))
        except UserError as err:
            raise UserError(str(err), path) from None
    if not found:
        raise UserError(f"split(s) {', '.join(splits)} have no patients", path)
    return found


def _records(entries: list[dict[str, Any]], clinical_csv: str | None, require_outcome: bool) -> list[dict[str, Any]]:
    """Each patient's clinical record: from ``--clinical-csv`` (validated) or the datalist items."""
    if clinical_csv is not None:
        from petite.headneck.clinical import read_clinical_csv

        table = read_clinical_csv(clinical_csv, require_outcome=require_outcome)
        missing = [e["patient"] for e in entries if e["patient"] not in table]
        if missing:
            raise UserError(f"patient {missing[0]!r} has no row ({len(missing)} patients missing)", clinical_csv)
        return [dict(table[e["patient"]]) for e in entries]
    return [dict(e.get("clinical") or {}) for e in entries]


def _resolve_model(meta: dict[str, Any], run: Path, override: str | None) -> str:
    if override is not None:
        return override
    link = meta.get("model_run") or {}
    for candidate in (run / str(link.get("path", "")), Path(str(link.get("abs_path", "")))):
        if link and candidate.is_dir():
            return str(candidate)
    raise UserError(f"segmentation run not found (looked for {link.get('path')!r} and {link.get('abs_path')!r}); "
                    "pass --model", run / "prognosis.json")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


_device = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
_clinical_csv = click.option("--clinical-csv", type=click.Path(dir_okay=False),
                             help="HECKTOR clinical CSV to use instead of the datalist items' clinical records.")


@prognosis.command("train")
@click.option("--model", "model_run", required=True, type=click.Path(), help="Segmentation run (ct, early or pemma).")
@click.option("--datalist", required=True, type=click.Path(), help="Multi-modal datalist JSON.")
@click.option("--splits", required=True, help="Comma-separated training splits, e.g. A_train,A_val.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Prognosis run folder to create.")
@click.option("--mode", type=click.Choice(["ctpet", "ct", "pet"]), help="Input mode (default: the run's).")
@click.option("--clinical/--no-clinical", default=False, show_default=True, help="Fuse the clinical variables.")
@click.option("--imaging/--no-imaging", default=True, show_default=True,
              help="Use the encoder features (--no-imaging --clinical: clinical variables alone).")
@click.option("--seeds", default="0,1,2", show_default=True, help="One head per seed (initialisation, dropout).")
@click.option("--region", type=click.Choice(["centre", "volume"]), default="centre", show_default=True,
              help="Feature windows: one centred on the body, or tiling the volume.")
@click.option("--roi", help="Window size X,Y,Z (default: the run's crop).")
@click.option("--components", type=click.IntRange(min=0), default=8, show_default=True,
              help="PCA scores kept of the encoder features (0: all columns).")
@click.option("--epochs", type=click.IntRange(min=1), default=60, show_default=True,
              help="Full-batch AdamW epochs (few: early stopping is the regulariser for small cohorts).")
@click.option("--lr", type=float, default=3e-3, show_default=True)
@click.option("--clinical-branch", type=click.Choice(["mlp", "linear"]), default="mlp", show_default=True,
              help="With --clinical: a two-layer MLP, or a ridge-penalised linear Cox term.")
@click.option("--ridge", type=click.FloatRange(min=0), default=0.1, show_default=True,
              help="Ridge penalty of the linear clinical branch.")
@_clinical_csv
@_device
@click.option("--overwrite", is_flag=True, help="Replace an existing run folder.")
def train(model_run: str, datalist: str, splits: str, out: str, mode: str | None, clinical: bool, imaging: bool,
          seeds: str, region: str, roi: str | None, components: int, epochs: int, lr: float, clinical_branch: str,
          ridge: float, clinical_csv: str | None, device: str, overwrite: bool) -> None:
    """Train survival heads (Cox partial likelihood) on a segmentation run's frozen encoder features."""
    from petite.atomic import check_output_folder, staged_folder
    from petite.headneck.datalist import read_mm_datalist
    from petite.pemma.runs import load_run, run_link
    from petite.prognosis.features import extract_features, feature_names, load_cases
    from petite.prognosis.heads import train_prognosis
    from petite.prognosis.outcome import outcome_of
    from petite.prognosis.runs import save_heads

    seed_list = _seeds(seeds)
    names = [s.strip() for s in splits.split(",") if s.strip()]
    if not imaging and not clinical:
        raise UserError("--no-imaging needs --clinical (something must feed the head)")
    check_output_folder(out, overwrite)
    data = read_mm_datalist(datalist)
    entries = _split_items(data, names, datalist)
    patients = [e["patient"] for e in entries]
    records = _records(entries, clinical_csv, require_outcome=True)
    time_days, event = outcome_of(records, patients)
    model, info = load_run(model_run, device="cpu")
    use_mode = mode or info["mode"]
    if use_mode not in info["modes"]:
        raise UserError(f"a {info['kind']!r} run takes mode {' or '.join(info['modes'])}, not {use_mode!r}", model_run)
    window = parse_size(roi, "--roi") or tuple(info["crop"])
    if imaging:
        features = extract_features(model, load_cases(entries, info.get("pet_norm", "zscore")), use_mode,
                                    window, region=region, device=device)
        columns = feature_names(model)
    else:
        features, columns = None, None
    heads = train_prognosis(features, records, time_days, event, use_clinical=clinical, use_imaging=imaging,
                            seeds=seed_list, names=columns, deep_components=components or None, epochs=epochs,
                            lr=lr, clinical_branch=clinical_branch, ridge=ridge, patients=patients)
    train_c = [h["train_c_index"] for h in heads.history]
    meta = {"model_run": run_link(Path(model_run), Path(out)), "model_kind": info["kind"], "mode": use_mode,
            "roi": list(window), "region": region, "pet_norm": info.get("pet_norm", "zscore"),
            "datalist": str(Path(datalist).resolve()), "splits": names, "patients": patients,
            "clinical_csv": None if clinical_csv is None else str(Path(clinical_csv).resolve()),
            "n": len(patients), "events": int(event.sum()), "train_c_index": train_c}
    with staged_folder(out, overwrite) as folder:
        save_heads(heads, folder, meta)
    inputs = " + ".join([f"{info['kind']} encoder ({use_mode})"] * imaging + ["clinical"] * clinical)
    click.echo(f"trained {len(seed_list)} head(s) on {len(patients)} patients ({int(event.sum())} relapses), "
               f"inputs: {inputs}; training C-index {' '.join(_fmt(c) for c in train_c)}")
    click.echo(f"wrote {out}")


@prognosis.command("evaluate")
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False), help="Prognosis run folder.")
@click.option("--datalist", required=True, type=click.Path(), help="Multi-modal datalist JSON.")
@click.option("--split", required=True, help="Split to evaluate (comma-separated for several), e.g. A_test.")
@click.option("--model", "model_run", type=click.Path(), help="Segmentation run (default: the one trained with).")
@click.option("--out", type=click.Path(file_okay=False), help="Folder for the results (default: RUN/eval).")
@_clinical_csv
@_device
def evaluate(run_dir: str, datalist: str, split: str, model_run: str | None, out: str | None,
             clinical_csv: str | None, device: str) -> None:
    """C-index, integrated Brier score and Kaplan-Meier curves (PNG) of a prognosis run on a split."""
    from petite.atomic import write_json, write_text
    from petite.headneck.datalist import read_mm_datalist
    from petite.pemma.runs import load_run
    from petite.prognosis.evaluation import evaluate_prognosis
    from petite.prognosis.features import extract_features, load_cases
    from petite.prognosis.outcome import outcome_of
    from petite.prognosis.runs import load_heads

    run = Path(run_dir)
    heads, meta = load_heads(run)
    names = [s.strip() for s in split.split(",") if s.strip()]
    data = read_mm_datalist(datalist)
    entries = _split_items(data, names, datalist)
    patients = [e["patient"] for e in entries]
    records = _records(entries, clinical_csv, require_outcome=True)
    time_days, event = outcome_of(records, patients, "evaluation")
    features = None
    if heads.use_imaging:
        model, info = load_run(_resolve_model(meta, run, model_run), device="cpu")
        if meta["mode"] not in info["modes"]:
            raise UserError(f"this prognosis run used mode {meta['mode']!r}, which a {info['kind']!r} run cannot take")
        features = extract_features(model, load_cases(entries, meta.get("pet_norm", "zscore")), meta["mode"],
                                    meta["roi"], region=meta.get("region", "centre"), device=device)
    folder = Path(out) if out is not None else run / "eval"
    folder.mkdir(parents=True, exist_ok=True)
    tag = "+".join(names)
    km_png = folder / f"km_{tag}.png"
    result = evaluate_prognosis(heads, features, records, time_days, event, km_png=km_png,
                                title=f"Relapse-free survival, {tag}: predicted risk groups", patients=patients)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["patient", "risk", "time", "event", "group"])
    for k, patient in enumerate(patients):
        group = "" if result["threshold"] is None else ("high" if result["risk"][k] > result["threshold"] else "low")
        writer.writerow([patient, f"{result['risk'][k]:.6f}", f"{time_days[k]:g}", int(event[k]), group])
    write_text(folder / f"risks_{tag}.csv", buffer.getvalue())
    summary = {"run": str(run.resolve()), "datalist": str(Path(datalist).resolve()), "splits": names,
               **{k: v for k, v in result.items() if k != "risk"}}
    write_json(folder / f"evaluation_{tag}.json", summary)
    click.echo(f"{tag}: {result['n']} patients, {result['events']} relapses; C-index {_fmt(result['c_index'])} "
               f"(seeds {_fmt(result['c_index_mean'])} ± {_fmt(result['c_index_std'])}), "
               f"IBS {_fmt(result['ibs'])}, log-rank p {_fmt(result['logrank_p'])}")
    click.echo(f"wrote {folder}: evaluation_{tag}.json, risks_{tag}.csv"
               + (f", {km_png.name}" if result["km_png"] else " (no KM figure: the risks do not split the patients)"))
