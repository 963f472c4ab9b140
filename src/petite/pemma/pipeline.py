"""The multi-modal steps the CLI (``petite mm ...``) and the demo run, each ending in a run folder or report.

- :func:`pretrain`: a plain segmenter from scratch on one centre: CT-only
  (``inputs="ct"``, the model PEMMA later upgrades), PET-only (``"pet"``) or
  early fusion (``"ctpet"``, 2 channels); all weights train.
- :func:`adapt`: PEMMA upgrade of a CT-only run (by default the reference
  design: CT and PET tokens concatenated, LoRA on attention, PET embedding and
  skip, decoder and head train), trained with both modalities and the
  per-batch input mode drawn (CT+PET 0.6, CT 0.2, PET 0.2).
- :func:`continue_adapt`: continual adaptation of a PEMMA run to a new centre
  with one modality; by default only that modality's parts train
  (:data:`petite.pemma.upgrade.MODALITY_PARTS`), everything else, the CT
  base included, stays bit for bit; ``update="adapter"`` (LoRA without
  freezing) and ``update="full"`` (full fine-tuning) are the baselines that
  update shared weights, and so can forget the old centre.
- :func:`late`: a late-fusion run from a CT-only and a PET-only run (no training).
- :func:`evaluate`: Dice and HD95 per class and case of a run on a split, in one input mode.

Training is :func:`petite.pemma.train.train_segmenter` (DiceCE, AdamW with
warm-up and cosine decay, foreground-biased crops, axial flips and rotations).
By default every model trains **to convergence**: it is validated every
``val_every`` steps on the centre's ``<centre>_val`` split (mean foreground
Dice), stops after ``patience`` validations without improvement or at
``max_steps``, and the best state is kept; ``final.json`` records ``converged``
/ ``capped``, ``best_step`` and the learning curve (``curve``).  ``steps=N``
instead trains a fixed budget (the validation split, if any, scored once at the
end).  The model is held in memory and the run folder
written at the end through :func:`petite.atomic.staged_folder`, so a
failure (or Ctrl-C) leaves no half-written run.  Inputs (datalist, centre,
split, run kinds, output folder) are checked before any training starts.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from petite.atomic import check_output_folder, staged_folder, write_json, write_text
from petite.errors import UserError
from petite.headneck.datalist import (
    LABELS,
    PET_NORMS,
    items,
    load_case,
    read_mm_datalist,
    split_name,
    split_names,
)
from petite.pemma import runs
from petite.pemma.baselines import LateFusion, build_baseline
from petite.pemma.evaluate import evaluate_segmenter, mean_metrics
from petite.pemma.segmentation import check_mode, resolve_window
from petite.pemma.train import PATIENCE, resolve_mode_probs, train_segmenter
from petite.pemma.upgrade import PEMMA, check_continual, continual_trainable, summary, trainable_groups

CaseCache = MutableMapping[tuple[str, str, str], list[dict[str, Any]]]
#: ``[(split name, its items), ...]``: one split per centre, pooled.
Splits = list[tuple[str, list[dict[str, Any]]]]

#: Default caps of a training to convergence (``max_steps``) of each step.
MAX_STEPS = {"pretrain": 2000, "adapt": 1000, "continual": 500}


# ----------------------------------------------------------------------------- data


def open_datalist(datalist: str | Path | Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """``(datalist dict with absolute paths, its path as text)`` from a path or an already-read dict."""
    if isinstance(datalist, Mapping):
        return dict(datalist), str(datalist.get("_path", "<datalist>"))
    data = read_mm_datalist(datalist)
    data["_path"] = str(Path(datalist).resolve())
    return data, data["_path"]


def split_items(datalist: Mapping[str, Any], split: str, need: bool = True) -> list[dict[str, Any]]:
    """Items of ``split`` (UserError for an unknown split, or an empty one when ``need``)."""
    found = items(datalist, split)
    if need and not found:
        raise UserError(f"split {split!r} is empty", datalist.get("_path"))
    return found


def centre_split(datalist: Mapping[str, Any], centre: str, kind: str, need: bool = True) -> tuple[str, list[dict[str, Any]]]:
    """``(split name, items)`` of ``centre``'s ``kind`` split (``train``/``val``/``test``)."""
    try:
        split_names(datalist, centre)
    except UserError as err:
        raise UserError(str(err), datalist.get("_path")) from None
    name = split_name(centre, kind)
    if name not in datalist:
        if need:
            raise UserError(f"the datalist has no split {name!r}", datalist.get("_path"))
        return name, []
    return name, split_items(datalist, name, need)


def parse_centres(centre: str | Sequence[str]) -> list[str]:
    """``"A,B,C"`` (or a sequence) -> ``["A", "B", "C"]``: the centres whose cases are pooled."""
    names = [c.strip() for c in centre.split(",")] if isinstance(centre, str) else [str(c).strip() for c in centre]
    if not names or not all(names) or len(set(names)) != len(names):
        raise UserError(f"--centre takes one centre or several, comma-separated and distinct, e.g. A,B,C; "
                        f"got {centre!r}")
    return names


def pooled_split(datalist: Mapping[str, Any], centres: Sequence[str], kind: str) -> Splits:
    """The ``kind`` split of every centre (each must exist and hold patients)."""
    return [centre_split(datalist, centre, kind) for centre in centres]


def split_label(splits: Splits) -> str:
    """The splits' names joined by commas (one name for one centre), as configs and reports record them."""
    return ",".join(name for name, _ in splits)


def pooled_cases(datalist: Mapping[str, Any], splits: Splits, pet_norm: str, cache: CaseCache | None = None
                 ) -> list[dict[str, Any]]:
    """The loaded cases of every split, in order (each case keeps its ``centre``)."""
    return [case for name, entries in splits if entries
            for case in load_cases(datalist, name, entries, pet_norm, cache)]


def load_cases(datalist: Mapping[str, Any], split: str, entries: Sequence[Mapping[str, Any]], pet_norm: str,
               cache: CaseCache | None = None) -> list[dict[str, Any]]:
    """Loaded cases (:func:`~petite.headneck.datalist.load_case`), memoised in ``cache`` by (datalist, split, norm)."""
    key = (str(datalist.get("_path")), split, pet_norm)
    if cache is not None and key in cache:
        return cache[key]
    cases = [load_case(e, pet_norm=pet_norm) for e in entries]
    if cache is not None:
        cache[key] = cases
    return cases


def parse_crop(crop: int | Sequence[int]) -> list[int]:
    size = [int(crop)] * 3 if isinstance(crop, int) else [int(c) for c in crop]
    if len(size) != 3 or min(size) < 1:
        raise UserError(f"crop must be three positive integers, got {crop!r}")
    return size


def parse_mode_probs(text: str | Mapping[str, float] | None) -> dict[str, float] | None:
    """``"ctpet=0.6,ct=0.2,pet=0.2"`` (or a mapping) -> ``{mode: probability}``; None stays None."""
    if text is None or isinstance(text, Mapping):
        return None if text is None else {str(k): float(v) for k, v in text.items()}
    out: dict[str, float] = {}
    for part in str(text).split(","):
        mode, sep, value = part.partition("=")
        try:
            out[check_mode(mode.strip())] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise UserError(f"mode probabilities look like ctpet=0.6,ct=0.2,pet=0.2, got {text!r}")
    return out


# ----------------------------------------------------------------------------- training runs


def _summary_final(model: nn.Module, result: Mapping[str, Any], kind: str, extra: Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(model, PEMMA):
        counts = summary(model)
        trainable, base, percent = counts["trainable"], counts["base"], counts["percent"]
        groups = counts["groups"]
    else:
        base = sum(p.numel() for p in model.parameters())
        trainable = int(result["trainable"])
        percent, groups = 100.0 * trainable / base, None
    losses = result["losses"]
    tail = losses[-max(1, len(losses) // 10):] if losses else []
    final: dict[str, Any] = {
        "kind": kind, "trainable": int(trainable), "base_parameters": int(base), "percent": percent,
        "steps": result["steps"], "time_s": round(result["seconds"], 2),
        "step_time_s": round(result["seconds"] / max(1, result["steps"]), 4),
        "final_loss": float(sum(tail) / len(tail)) if tail else None,
        "mode_counts": result["mode_counts"], "device": result["device"], "threads": torch.get_num_threads(),
    }
    if groups is not None:
        final["groups"] = groups
    final.update(_training_record(result))
    final.update(extra)
    return final


def _training_record(result: Mapping[str, Any]) -> dict[str, Any]:
    """How long training ran and why it stopped, for ``final.json`` (:func:`~petite.pemma.train.train_segmenter`)."""
    keys = ("stopped", "converged", "max_steps", "val_every", "patience", "min_delta", "min_steps", "best_step",
            "best_val_dice",
            "schedule", "warmup_steps", "augment", "curve")
    record = {k: result[k] for k in keys}
    # A fixed budget neither converges nor hits a cap.
    record["capped"] = result["stopped"] == "max_steps"
    return record


def _cpu(start: float) -> float:
    """CPU seconds of this process since ``start`` (all threads): the time on idle cores, load aside."""
    return round(time.process_time() - start, 2)


def _metrics_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"step": k + 1, "loss": loss, "mode": mode} for k, (loss, mode) in enumerate(zip(result["losses"], result["modes"]))]


class Length:
    """How long to train (see :func:`~petite.pemma.train.train_segmenter`): a fixed budget ``steps``, or to
    convergence on ``<centre>_val`` (``max_steps`` cap, ``val_every``, ``patience``, ``min_delta``)."""

    def __init__(self, step: str, steps: int | None, max_steps: int | None, val_every: int | None, patience: int,
                 min_delta: float, val: bool, min_steps: int | None = None) -> None:
        if steps is not None and max_steps is not None:
            raise UserError("give --steps (a fixed budget) or --max-steps (a cap; stops on validation), not both")
        if steps is None and not val:
            raise UserError("--no-val needs --steps N: training to convergence stops on the validation split")
        self.steps, self.val = steps, val
        self.max_steps = None if steps is not None else (MAX_STEPS[step] if max_steps is None else max_steps)
        self.val_every, self.patience, self.min_delta, self.min_steps = val_every, patience, min_delta, min_steps

    def val_split(self, datalist: Mapping[str, Any], centres: Sequence[str]) -> Splits:
        """The validation splits of ``centres`` (pooled); UserError when training to convergence and they are empty."""
        splits = [centre_split(datalist, centre, "val", need=False) for centre in centres]
        if self.steps is None and not any(entries for _, entries in splits):
            names = " and ".join(repr(name) for name, _ in splits)
            raise UserError(f"training to convergence stops on the validation split {names}, which the datalist "
                            f"lacks or has empty; give --steps N for a fixed budget", datalist.get("_path"))
        return [(name, entries if self.val else []) for name, entries in splits]

    def config(self) -> dict[str, Any]:
        return {"steps": self.steps, "max_steps": self.max_steps, "val_every": self.val_every,
                "patience": self.patience if self.steps is None else None,
                "min_delta": self.min_delta if self.steps is None else None,
                "min_steps": self.min_steps if self.steps is None else None}

    def options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~petite.pemma.train.train_segmenter`."""
        if self.steps is not None:
            return {"steps": self.steps}
        return {"max_steps": self.max_steps, "val_every": self.val_every, "patience": self.patience,
                "min_delta": self.min_delta, "min_steps": self.min_steps}


def _train(model: nn.Module, cases: list[dict[str, Any]], length: Length, val: Splits,
           data: Mapping[str, Any], inputs: str, pet_norm: str, cache: CaseCache | None, **kwargs: Any
           ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Train (:func:`~petite.pemma.train.train_segmenter`) with ``val`` (from :meth:`Length.val_split`) as the
    validation cases; returns ``(its result, the final validation summary for final.json or None)``."""
    val_cases = pooled_cases(data, val, pet_norm, cache)
    result = train_segmenter(model, cases, inputs=inputs, val_cases=val_cases or None, **length.options(), **kwargs)
    scored = None if result["val"] is None else {"split": split_label(val), "mode": inputs, **result["val"]["mean"]}
    return result, scored


def pretrain(
    datalist: str | Path | Mapping[str, Any],
    centre: str,
    out: str | Path,
    *,
    inputs: str = "ct",
    arch: str = "unetr",
    preset: str = "small",
    crop: int | Sequence[int] = (32, 32, 32),
    steps: int | None = None,
    max_steps: int | None = None,
    val_every: int | None = None,
    patience: int = PATIENCE,
    min_delta: float = 0.0,
    min_steps: int | None = None,
    augment: bool = True,
    batch_size: int = 2,
    lr: float = 1e-3,
    seed: int = 0,
    pet_norm: str = "zscore",
    device: str | None = "auto",
    val: bool = True,
    overwrite: bool = False,
    progress: bool = False,
    cache: CaseCache | None = None,
) -> dict[str, Any]:
    """Train a CT-only / PET-only / early-fusion segmenter from scratch on ``centre``'s train split.

    Writes the run folder ``out`` (kind ``ct``, ``pet`` or ``early`` for ``inputs``
    ``ct``, ``pet``, ``ctpet``) and returns its ``final.json``.  Length: to convergence on
    ``<centre>_val`` (cap ``max_steps``, default :data:`MAX_STEPS`; ``val_every``, ``patience``,
    ``min_delta``, ``min_steps``) unless ``steps`` gives a fixed budget; ``val=False`` (only with ``steps``)
    skips the validation split.  ``augment``: axial flips and rotations.
    """
    length = Length("pretrain", steps, max_steps, val_every, patience, min_delta, val, min_steps)
    check_mode(inputs)
    kind = runs.INPUTS_KIND[inputs]
    if pet_norm not in PET_NORMS:
        raise UserError(f"unknown PET normalisation {pet_norm!r}; choose one of {', '.join(PET_NORMS)}")
    size = parse_crop(crop)
    check_output_folder(out, overwrite)
    data, path = open_datalist(datalist)
    centres = parse_centres(centre)
    train_splits = pooled_split(data, centres, "train")
    val_split = length.val_split(data, centres)
    torch.manual_seed(seed)
    model = build_baseline(kind, arch, preset, img_size=size)
    resolve_window(model, size, "crop")  # a crop Swin cannot take fails here, in one line, before any loading
    cases = pooled_cases(data, train_splits, pet_norm, cache)
    cpu_start = time.process_time()
    result, val_summary = _train(model, cases, length, val_split, data, inputs, pet_norm, cache, crop=size,
                                 batch_size=batch_size, lr=lr, augment=augment, seed=seed, progress=progress,
                                 device=device)
    config = {"datalist": path, "centre": ",".join(centres), "centres": centres,
              "train_split": split_label(train_splits), "val_split": split_label(val_split), "inputs": inputs,
              "arch": arch, "preset": preset, "crop": size, **length.config(), "augment": bool(augment),
              "batch_size": batch_size, "lr": lr, "seed": seed, "pet_norm": pet_norm}
    n_by_centre = {c: sum(1 for case in cases if case.get("centre") == c) for c in centres}
    final = _summary_final(model, result, kind, {"n_train": len(cases), "n_train_by_centre": n_by_centre,
                                                 "cpu_time_s": _cpu(cpu_start)})
    final["val"] = val_summary
    model.to("cpu")
    with staged_folder(out, overwrite) as folder:
        runs.save_run(folder, model, kind, config, final=final, metrics=_metrics_rows(result), destination=out)
    return final


def adapt(
    init: str | Path,
    datalist: str | Path | Mapping[str, Any],
    centre: str,
    out: str | Path,
    *,
    method: str = "lora",
    r: int | None = None,
    alpha: float | None = None,
    dropout: float | None = None,
    targets: str | Sequence[str] = "reference",
    fusion: str = "tokens",
    train_decoder: bool = True,
    steps: int | None = None,
    max_steps: int | None = None,
    val_every: int | None = None,
    patience: int = PATIENCE,
    min_delta: float = 0.0,
    min_steps: int | None = None,
    augment: bool = True,
    batch_size: int = 2,
    lr: float = 2e-3,
    seed: int = 0,
    mode_probs: str | Mapping[str, float] | None = None,
    crop: int | Sequence[int] | None = None,
    device: str | None = "auto",
    val: bool = True,
    overwrite: bool = False,
    progress: bool = False,
    cache: CaseCache | None = None,
) -> dict[str, Any]:
    """PEMMA-upgrade the CT-only run ``init`` with CT+PET of ``centre`` (modality dropout); write run ``out``.

    ``crop``: training crop and inference window (default: the CT run's).  Swin
    UNETR takes any crop with one side above 32 voxels; UNETR only its own.
    ``method``, ``r``, ``alpha``, ``dropout``, ``targets``, ``fusion``,
    ``train_decoder``: the design (:class:`~petite.pemma.upgrade.PEMMA`; the
    defaults are the reference one).  Length and validation: as :func:`pretrain` (validation
    in the ``ctpet`` mode).
    """
    length = Length("adapt", steps, max_steps, val_every, patience, min_delta, val, min_steps)
    base_config = runs.require_kind(init, ("ct",), "--init (the model to upgrade)")
    probs = parse_mode_probs(mode_probs)
    check_output_folder(out, overwrite)
    data, path = open_datalist(datalist)
    split, entries = centre_split(data, centre, "train")
    val_split = length.val_split(data, [centre])
    ct_model, _ = runs.load_run(init)
    torch.manual_seed(seed)
    model = PEMMA(ct_model, method=method, r=r, alpha=alpha, dropout=dropout, targets=targets, fusion=fusion,
                  train_decoder=train_decoder, fingerprint=False)
    crop = list(resolve_window(model, base_config["crop"] if crop is None else parse_crop(crop), "crop"))
    probs = resolve_mode_probs(model, "ctpet", probs)
    pet_norm = base_config.get("pet_norm", "zscore")
    cases = load_cases(data, split, entries, pet_norm, cache)
    cpu_start = time.process_time()
    result, val_summary = _train(model, cases, length, val_split, data, "ctpet", pet_norm, cache, crop=crop,
                                 batch_size=batch_size, lr=lr, augment=augment, seed=seed, mode_probs=probs,
                                 progress=progress, device=device)
    config = {"datalist": path, "centre": centre, "train_split": split, "val_split": split_label(val_split),
              "inputs": "ctpet", "method": method,
              "peft": model.config["peft"], "fusion": fusion, "train_decoder": bool(train_decoder),
              "mode_probs": probs,
              "crop": crop, **length.config(), "augment": bool(augment), "batch_size": batch_size, "lr": lr,
              "seed": seed, "pet_norm": pet_norm, "arch": base_config.get("arch"), "preset": base_config.get("preset"),
              "trained_groups": list(model.default_groups)}
    final = _summary_final(model, result, "pemma", {"n_train": len(cases), "cpu_time_s": _cpu(cpu_start)})
    final["val"] = val_summary
    model.to("cpu")
    with staged_folder(out, overwrite) as folder:
        runs.save_run(folder, model, "pemma", config, final=final, metrics=_metrics_rows(result),
                      base_run=init, destination=out)
    return final


def continue_adapt(
    previous: str | Path,
    datalist: str | Path | Mapping[str, Any],
    centre: str,
    out: str | Path,
    *,
    modality: str = "pet",
    update: str = "modality",
    crop: int | Sequence[int] | None = None,
    steps: int | None = None,
    max_steps: int | None = None,
    val_every: int | None = None,
    patience: int = PATIENCE,
    min_delta: float = 0.0,
    min_steps: int | None = None,
    augment: bool = True,
    batch_size: int = 2,
    lr: float = 2e-3,
    seed: int = 0,
    device: str | None = "auto",
    val: bool = True,
    overwrite: bool = False,
    progress: bool = False,
    cache: CaseCache | None = None,
) -> dict[str, Any]:
    """Continual adaptation of PEMMA run ``previous`` to ``centre`` with ``modality`` only.

    ``update``: what trains (:func:`~petite.pemma.upgrade.continual_trainable`): ``modality`` (default,
    PEMMA's design: the modality's own parts), ``adapter`` (every group the upgrade trained) or ``full``
    (every weight); the last two are forgetting baselines.

    ``crop``: training crop and inference window (default: the previous run's; see :func:`adapt`).
    Length and validation: as :func:`pretrain` (validation in ``modality``'s mode on ``centre``'s
    validation split).
    """
    length = Length("continual", steps, max_steps, val_every, patience, min_delta, val, min_steps)
    check_continual(modality, update)
    prev_config = runs.require_kind(previous, ("pemma",), "--continue-from")
    check_output_folder(out, overwrite)
    data, path = open_datalist(datalist)
    split, entries = centre_split(data, centre, "train")
    val_split = length.val_split(data, [centre])
    model, info = runs.load_run(previous)
    crop = list(resolve_window(model, prev_config["crop"] if crop is None else parse_crop(crop), "crop"))
    trained = continual_trainable(model, modality, update)
    groups = [g for g, names in trainable_groups(model).items() if names and set(names) <= set(trained)]
    pet_norm = prev_config.get("pet_norm", "zscore")
    cases = load_cases(data, split, entries, pet_norm, cache)
    cpu_start = time.process_time()
    result, val_summary = _train(model, cases, length, val_split, data, modality, pet_norm, cache, crop=crop,
                                 batch_size=batch_size, lr=lr, augment=augment, seed=seed, progress=progress,
                                 device=device)
    config = {"datalist": path, "centre": centre, "train_split": split, "val_split": split_label(val_split),
              "inputs": modality, "modality": modality, "update": update,
              "parent": runs.run_link(Path(previous), Path(out)), "trained_groups": list(groups),
              "method": prev_config.get("method"), "peft": prev_config.get("peft"),
              "fusion": info.get("pemma", {}).get("fusion", "channels"),
              "train_decoder": bool(info.get("pemma", {}).get("train_decoder", False)), "crop": crop,
              **length.config(), "augment": bool(augment), "batch_size": batch_size, "lr": lr, "seed": seed,
              "pet_norm": pet_norm, "arch": prev_config.get("arch"),
              "preset": prev_config.get("preset")}
    final = _summary_final(model, result, "pemma", {"n_train": len(cases), "trained_groups": list(groups),
                                                    "cpu_time_s": _cpu(cpu_start)})
    final["val"] = val_summary
    model.to("cpu")
    with staged_folder(out, overwrite) as folder:
        runs.save_run(folder, model, "pemma", config, final=final, metrics=_metrics_rows(result),
                      base_run=info["base_path"], destination=out,
                      full_state=update == "full" or bool((prev_config.get("pemma") or {}).get("full_state")))
    return final


def late(ct_run: str | Path, pet_run: str | Path, out: str | Path, *, weight: float = 0.5,
         overwrite: bool = False) -> dict[str, Any]:
    """A late-fusion run (``weight`` x CT logits + (1 - weight) x PET logits) from two trained runs."""
    ct_config = runs.require_kind(ct_run, ("ct",), "the CT model of late fusion")
    pet_config = runs.require_kind(pet_run, ("pet",), "the PET model of late fusion")
    if ct_config["crop"] != pet_config["crop"]:
        raise UserError(f"late fusion needs members with the same crop, got {ct_config['crop']} and {pet_config['crop']}",
                        pet_run)
    check_output_folder(out, overwrite)
    model = LateFusion(runs.load_run(ct_run)[0], runs.load_run(pet_run)[0], weight=weight)
    config = {"crop": list(ct_config["crop"]), "pet_norm": pet_config.get("pet_norm", "zscore"),
              "arch": ct_config.get("arch"), "preset": ct_config.get("preset")}
    final = {"kind": "late", "trainable": 0, "base_parameters": sum(p.numel() for p in model.parameters()),
             "percent": 100.0, "note": "both members fully trained; % trainable counts their training"}
    with staged_folder(out, overwrite) as folder:
        runs.save_run(folder, model, "late", config, final=final, members={"ct": ct_run, "pet": pet_run},
                      destination=out)
    return final


# ----------------------------------------------------------------------------- evaluation


def per_centre(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{centre: {"n": cases, **mean metrics}}`` of evaluated cases, centres in order of appearance."""
    centres = list(dict.fromkeys(str(r.get("centre")) for r in rows))
    return {c: {"n": sum(1 for r in rows if str(r.get("centre")) == c),
                **mean_metrics([r for r in rows if str(r.get("centre")) == c])} for c in centres}


CASE_COLUMNS = ("patient", "centre", "dice_1", "dice_2", "dice_mean", "hd95_1", "hd95_2", "hd95_mean", "hd95_unit",
                "inter_1", "pred_1", "gt_1", "inter_2", "pred_2", "gt_2")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def evaluate(
    run: str | Path | tuple[nn.Module, Mapping[str, Any]],
    datalist: str | Path | Mapping[str, Any],
    split: str,
    *,
    mode: str | None = None,
    out: str | Path | None = None,
    pet_run: str | Path | None = None,
    late_weight: float = 0.5,
    roi: int | Sequence[int] | None = None,
    overlap: float = 0.5,
    sw_batch_size: int = 4,
    device: str | None = "auto",
    progress: bool = False,
    cache: CaseCache | None = None,
) -> dict[str, Any]:
    """Score a run (or a ``(model, info)`` pair from :func:`~petite.pemma.runs.load_run`) on ``split``.

    ``split`` may pool several, comma-separated (``"A_test,B_test"``, e.g. for a model
    pre-trained on several centres); the report then holds ``per_centre``: the means
    (and case count) of each centre's patients, beside the pooled ones.

    ``mode`` defaults to the run's own (ct / pet / ctpet); ``pet_run`` makes late
    fusion of ``run`` (a CT-only run) with it.  ``roi``: the sliding window (default:
    the run's crop; Swin UNETR takes others, UNETR only its own).  With ``out``, writes
    ``out/<split>_<mode>.csv`` (one row per case, voxel counts included) and
    ``out/<split>_<mode>.json`` (cases, means, the HECKTOR summary of
    :func:`petite.pemma.aggregate.aggregate` under ``hecktor``, and what was
    evaluated).  Returns that JSON's content.
    """
    if isinstance(run, tuple):
        model, info = run
    elif pet_run is not None:
        runs.require_kind(run, ("ct",), "--model (with --pet-model: the CT member of late fusion)")
        pet_config = runs.require_kind(pet_run, ("pet",), "--pet-model")
        ct_model, info = runs.load_run(run)
        if list(pet_config["crop"]) != list(info["crop"]):
            raise UserError(f"late fusion needs members with the same crop, got {info['crop']} and {pet_config['crop']}",
                            pet_run)
        model = LateFusion(ct_model, runs.load_run(pet_run)[0], weight=late_weight).eval()
        info = {**info, "kind": "late", "modes": list(runs.KIND_MODES["late"]), "mode": "ctpet",
                "members": {"ct": str(run), "pet": str(pet_run)}}
    else:
        model, info = runs.load_run(run)
    mode = info["mode"] if mode is None else check_mode(mode)
    if mode not in info["modes"]:
        raise UserError(f"a {info['kind']!r} model takes input mode {' or '.join(info['modes'])}, not {mode!r}",
                        info.get("path"))
    window = resolve_window(model, info["crop"] if roi is None else parse_crop(roi), "roi")
    data, path = open_datalist(datalist)
    names = [name.strip() for name in split.split(",")]
    if not all(names) or len(set(names)) != len(names):
        raise UserError(f"--split takes one split or several, comma-separated and distinct; got {split!r}")
    cases = pooled_cases(data, [(name, split_items(data, name)) for name in names], info.get("pet_norm", "zscore"),
                         cache)
    started, cpu_start = time.perf_counter(), time.process_time()
    result = evaluate_segmenter(model, cases, mode, roi=window, overlap=overlap, sw_batch_size=sw_batch_size,
                                device=device, progress=progress)
    report = {
        "run": info.get("path"), "kind": info["kind"], "datalist": path, "split": split, "mode": mode,
        "classes": {str(k): v for k, v in LABELS.items() if k}, "roi": result["roi"], "overlap": overlap,
        "n": len(cases), "seconds": round(time.perf_counter() - started, 2), "cpu_time_s": _cpu(cpu_start),
        "mean": result["mean"], "hecktor": result["hecktor"], "cases": result["cases"],
        "per_centre": per_centre(result["cases"]),
    }
    if "members" in info:
        report["members"] = info["members"]
    if out is not None:
        out = Path(out)
        if out.exists() and not out.is_dir():
            raise UserError("evaluation output exists and is not a folder", out)
        stem = f"{split.replace(',', '+')}_{mode}"
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(CASE_COLUMNS)
        for row in result["cases"]:
            writer.writerow([_cell(row.get(c)) for c in CASE_COLUMNS])
        write_text(out / f"{stem}.csv", buffer.getvalue())
        write_json(out / f"{stem}.json", report)
    return report


__all__ = ["adapt", "continue_adapt", "evaluate", "late", "load_cases", "open_datalist",
           "parse_mode_probs", "pretrain"]
