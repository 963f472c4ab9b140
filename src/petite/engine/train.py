"""The training loop behind ``petite pretrain`` and ``petite finetune``: to convergence, judged on validation.

One function, :func:`train`, runs a configured job into a run folder
(:mod:`petite.engine.run_folder` lists its files).  The loop draws batches,
validates every ``val_every`` steps on the validation split (masked PSNR, in the
scan's units), keeps the best weights, and stops after ``patience`` validations
without improvement (*converged*) or at ``max_steps`` (*capped*); ``final.json``
says which.  The optimisation step itself (losses, optimisers, the GAN's
discriminator) is the model's :class:`~petite.engine.steps.TrainingStep`.

Before anything is written, everything is checked: the datalist, every
training and validation volume (a NaN voxel is refused, naming the file), the
model, the spec, the crop.  Then the run folder is created.  A loss that turns
non-finite stops the run with one line; the best weights so far stay.

Pre-training (no ``init``) trains every parameter, the GAN's discriminator
included.  Fine-tuning loads ``init`` and applies the PEFT spec; the GAN's
discriminator trains only under ``full`` and stays frozen under PEFT, as in the
paper.  The test split is evaluated once, at the end, with the best weights,
beside two classical baselines (the short scan and a Gaussian filter fitted on
the training subjects).  Pre-training also applies the quality gate: the source
model must beat that filter by :data:`GATE_DB` dB masked PSNR in-domain.

Determinism: every step's batch is drawn from ``(seed, step)``, so a run
resumed from ``checkpoints/last`` (after Ctrl-C or ``kill -9``) ends with the
same weights as an uninterrupted one.  Under ``torchrun`` each process takes its
share of every batch and gradients are averaged across processes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from petite.atomic import write_json, write_text
from petite.data.datalist import read_datalist
from petite.data.nifti import load_volume
from petite.data.transforms import draw_batch, draw_item, make_dataset, split_crop_size
from petite.device import resolve_device
from petite.engine.config import AUTO, TrainConfig
from petite.engine.distributed import barrier, process_group
from petite.engine.efficiency import apply_memory_options, default_checkpoint, resolve_precision
from petite.engine.evaluate import evaluate_split, iter_scans, model_predictor, summarize, write_results
from petite.engine.infer import inference_roi, load_predictor, resolve_checkpoint
from petite.engine.lr_search import best_trial, next_lr_multiplier
from petite.engine.memory import peak_memory_mb, reset_peak_memory
from petite.engine.optim import describe_groups, parameter_groups
from petite.engine.run_folder import RunFolder
from petite.engine.state import load_state, save_state
from petite.engine.steps import is_gan, make_step
from petite.engine.tracking import Tracker
from petite.errors import UserError
from petite.locks import run_lock
from petite.models import build_model, load_model, save_model
from petite.models.contract import WHOLE_MODEL, component_modules
from petite.peft import Spec, apply_spec, recommended_hparams, save_adapter
from petite.peft.accounting import prune_dead
from petite.peft.accounting import summary as peft_summary
from petite.peft.probe import probe

log = logging.getLogger("petite.train")

#: The quality gate: a source model must beat the fitted Gaussian filter in-domain by this much (masked PSNR).
GATE_DB = 0.5
#: Subjects the test-time Gaussian baseline is fitted on (the first of the training split; the fit is cheap
#: but reading volumes is not).
BASELINE_FIT_SUBJECTS = 10


def _tensorboard(run: RunFolder, rank: int) -> Any:
    """A TensorBoard writer in ``run/tensorboard`` when the tensorboard package is installed, else None."""
    if rank != 0:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # optional: metrics.jsonl always has the same numbers
        return None
    return SummaryWriter(log_dir=str(run.root / "tensorboard"))


def _build(cfg: TrainConfig, datalist: dict[str, Any]) -> tuple[nn.Module, tuple[int, int, int]]:
    """The model to train and the training crop size."""
    if cfg.init:
        model = load_model(resolve_checkpoint(cfg.init))
        if model.config["name"] != cfg.model:
            raise UserError(f"checkpoint holds a {model.config['name']!r} model, config says {cfg.model!r}", cfg.init)
        found = model.config.get("preset")
        if cfg.preset is not None and cfg.preset != found:
            raise UserError(f"--preset {cfg.preset} conflicts with the checkpoint's preset {found}; "
                            "leave it out when fine-tuning (the checkpoint decides)", cfg.init)
        cfg.preset = found
        crop = tuple(cfg.crop_size or getattr(model, "img_size", None) or split_crop_size(datalist, cfg.train_split))
        return model, crop  # type: ignore[return-value]
    crop = tuple(cfg.crop_size or split_crop_size(datalist, cfg.train_split))
    # UNETR's position embedding is sized for its input: build it for the crop.
    overrides: dict[str, Any] = {"img_size": list(crop), "residual": cfg.residual} if cfg.model == "unetr" else {}
    cfg.preset = cfg.preset or "small"
    return build_model(cfg.model, cfg.preset, **overrides), crop  # type: ignore[return-value]


def _fill_hparams(cfg: TrainConfig, model_name: str, spec: Spec) -> dict[str, Any]:
    """Fill unset optimiser and schedule from the paper's table; returns the table row used.

    Learning rate and weight decay stay as the user set them (``None``: chosen per method
    by :func:`petite.engine.optim.parameter_groups`).
    """
    table = recommended_hparams(model_name, spec)
    for key in ("optimizer", "schedule"):
        if getattr(cfg, key) is None:
            setattr(cfg, key, table[key])
    return table


def _trained_labels(model: nn.Module, peft: Any) -> dict[str, str]:
    """Parameter name -> the method training it: the PEFT state's, or ``full`` for every tensor PEFT may touch."""
    if peft is not None:
        return dict(peft.trainable)
    scope = set(component_modules(model, WHOLE_MODEL))
    return {n: "full" for n, _ in model.named_parameters() if n.rpartition(".")[0] in scope}


def _batches(n_items: int, cfg: TrainConfig, epoch: int, rank: int, world: int) -> list[list[tuple[int, int]]]:
    """This process's ``(position, item index)`` pairs for each step of ``epoch`` (one pass over the items).

    The epoch's order is drawn from ``(seed, epoch)``; each global batch is split
    across processes.  The position within the epoch seeds that sample's crop,
    so crops do not depend on how many processes share the work.
    """
    rng = np.random.default_rng([cfg.seed, epoch])
    items = rng.permutation(np.repeat(np.arange(n_items), cfg.samples_per_volume))
    steps = math.ceil(len(items) / cfg.batch_size)
    # Every step is a full batch: a partial last batch is filled by wrapping around the epoch's order.
    # (A one-crop batch breaks BatchNorm at the CVT-GAN's 1x1x1 bottleneck, and with fewer items than
    # batch_size the effective batch size would otherwise shrink with the data; equal shards also keep
    # the averaged gradient of several processes equal to the global batch's.)
    order = list(enumerate(np.resize(items, steps * cfg.batch_size).tolist()))
    batches = [order[i * cfg.batch_size : (i + 1) * cfg.batch_size] for i in range(steps)]
    return [batch[rank::world] for batch in batches]


def check_volumes(datalist: dict[str, Any], splits: list[str]) -> None:
    """Read every volume of ``splits`` once: a NaN/Inf voxel, an all-zero or unreadable file is refused now,
    naming the file, rather than found as a NaN loss after hours of training."""
    for split in splits:
        for item in datalist.get(split, []):
            if "frames" in item:
                load_volume(item["frames"], ndim=4)
            else:
                load_volume(item["short"])
                load_volume(item["long"])


def _portable(path: str | None, run_root: Path) -> str | None:
    """``path`` as the run folder stores it: relative to the run folder, so run and base can move together."""
    if not path:
        return path
    return os.path.relpath(Path(path).resolve(), run_root.resolve())


def _length(cfg: TrainConfig, steps_per_epoch: int, table: dict[str, Any], spec: Spec) -> tuple[int, int]:
    """``(max_steps, val_every)``: the cap (max_steps, else epochs, else the paper's epochs) and the validation interval."""
    if spec.is_empty:
        return 0, 1
    if cfg.max_steps is not None:
        cap = cfg.max_steps
    else:
        cap = steps_per_epoch * (cfg.epochs if cfg.epochs is not None else table["epochs"])
    return cap, cfg.val_every or steps_per_epoch


def train(cfg: TrainConfig, resume: bool = False, overwrite: bool = False, progress: bool = True,
          tracker: Tracker | None = None) -> dict[str, Any]:
    """Run ``cfg`` into its run folder (see the module docstring); returns ``final.json``'s content.

    ``lr: auto`` first runs one short trial per multiplier of ``lr_grid`` (in ``<out>/lr-search/``) and
    keeps the multiplier with the best validation masked PSNR.  ``tracker`` (:mod:`petite.engine.tracking`)
    mirrors the run's settings, metrics and weights into a tracking service (the trials are not tracked).
    """
    if cfg.lr == AUTO and not Spec.parse(cfg.spec).is_empty and cfg.max_steps != 0 and cfg.epochs != 0:
        return _train_with_lr_search(cfg, resume, overwrite, progress, tracker)
    # A run that trains nothing (No-FT) has no learning rate to search.
    return _train(cfg, resume, overwrite, progress, tracker=tracker)


def _train_with_lr_search(cfg: TrainConfig, resume: bool, overwrite: bool, progress: bool,
                          tracker: Tracker | None = None) -> dict[str, Any]:
    import dataclasses

    out = Path(cfg.out)
    main = RunFolder(out)
    trials: list[dict[str, Any]] = []
    while (multiplier := next_lr_multiplier(list(cfg.lr_grid), trials, cfg.lr_grid_extend)) is not None:
        trial_out = out / "lr-search" / f"x{multiplier:g}"
        trial_cfg = dataclasses.replace(cfg, out=str(trial_out), lr=None, extra={**cfg.extra, "lr_multiplier": multiplier})
        trial_cfg.extra["lr_search_trial"] = True
        if RunFolder(trial_out).finished and not overwrite:
            final = json.loads(RunFolder(trial_out).final.read_text())
        else:
            final = _train(trial_cfg, resume=resume and RunFolder(trial_out).resumable, overwrite=overwrite,
                           progress=progress, lr_multiplier=multiplier, trial_fraction=cfg.lr_trial_fraction)
        trials.append({"multiplier": multiplier, "best_val_psnr_masked": final.get("best_val_psnr_masked"),
                       "steps": final.get("steps")})
    chosen = best_trial(trials)
    if chosen is None:
        raise UserError("lr auto needs a validation split to compare the trials", cfg.datalist)
    log.info("lr auto: multiplier %g chosen (%s)", chosen["multiplier"],
             ", ".join(f"x{t['multiplier']:g}: {t['best_val_psnr_masked']:.3f} dB" for t in trials
                       if t["best_val_psnr_masked"] is not None))
    search = {"grid": sorted(t["multiplier"] for t in trials), "trials": sorted(trials, key=lambda t: t["multiplier"]),
              "chosen": chosen["multiplier"]}
    redo = overwrite
    if main.finished and not overwrite:
        # A run finished before its search was extended: its training stands if the choice did not change.
        final = json.loads(main.final.read_text())
        before = (final.get("lr_search") or {}).get("chosen")
        if before == chosen["multiplier"]:
            final["lr_search"] = search
            write_json(main.final, final)
            return final
        log.info("lr auto: the extended search chose x%g instead of x%g; the run is redone",
                 chosen["multiplier"], before)
        redo, resume = True, False
    return _train(dataclasses.replace(cfg, lr=None), resume, redo, progress, lr_multiplier=chosen["multiplier"],
                  lr_search=search, config_lr=AUTO, tracker=tracker)


@dataclass
class _Setup:
    """Everything a run needs, checked before its folder is created (built by :func:`_set_up`)."""

    cfg: TrainConfig
    run: RunFolder
    datalist: dict[str, Any]
    spec: Spec
    model: nn.Module
    peft: Any  # PeftState, or None when pre-training
    table: dict[str, Any]
    crop: tuple[int, int, int]
    roi: tuple[int, int, int]
    train_set: Any
    groups: list[dict[str, Any]]
    steps_per_epoch: int
    max_steps: int
    val_every: int
    has_val: bool
    trainable: int
    percent: float
    preflight: dict[str, Any] | None
    device: torch.device
    rank: int
    world: int

    @property
    def pretraining(self) -> bool:
        return self.peft is None

    @property
    def training(self) -> bool:
        return self.max_steps > 0


def _train(cfg: TrainConfig, resume: bool, overwrite: bool, progress: bool, lr_multiplier: float = 1.0,
           trial_fraction: float | None = None, lr_search: dict[str, Any] | None = None,
           config_lr: float | str | None = None, tracker: Tracker | None = None) -> dict[str, Any]:
    rank, world = process_group()
    if cfg.batch_size % world:
        raise UserError(f"batch_size {cfg.batch_size} must be divisible by the {world} processes")
    run = RunFolder(cfg.out)
    datalist = _limit_training_subjects(read_datalist(cfg.datalist), cfg)
    spec = Spec.parse(cfg.spec)
    pretraining = not cfg.init
    if pretraining and not spec.full:
        raise UserError(f"pre-training trains the whole model; spec {cfg.spec!r} needs --init (a pretrained checkpoint)")
    torch.manual_seed(cfg.seed)
    model, crop = _build(cfg, datalist)
    cfg.crop_size = list(crop)  # resolved, so config.yaml records the sliding-window size too
    table = _fill_hparams(cfg, model.config["name"], spec)
    cfg.validate()
    training = not spec.is_empty and (cfg.max_steps != 0 and cfg.epochs != 0)
    has_val = bool(datalist.get(cfg.val_split))
    if training and cfg.patience and not has_val:
        raise UserError(f"early stopping (patience {cfg.patience}) needs a validation split, but "
                        f"{cfg.val_split!r} is empty; give --patience 0 to train to the cap", cfg.datalist)
    if training:
        check_volumes(datalist, [cfg.train_split, cfg.val_split] if has_val else [cfg.train_split])
    device = resolve_device(cfg.device)
    resolve_precision(cfg.precision, cfg.amp, device)  # refused here (fp16 on a CPU), not after the folder exists
    train_set = make_dataset(datalist, cfg.train_split, train=True, cache_rate=cfg.cache_rate, crop_size=crop,
                             normalise=cfg.normalise) if training else None

    # What trains: everything when pre-training; the spec's tensors when fine-tuning.
    model.to(device)
    preflight: dict[str, Any] | None = None
    batch: dict[str, torch.Tensor] | None = None
    if pretraining:
        model.requires_grad_(True)
        peft = None
        trainable = sum(p.numel() for p in model.parameters())
        percent = 100.0
    else:
        peft = apply_spec(model, spec)
        if train_set is not None:
            # One training batch, in training mode: BatchNorm then sees what training shows it.
            batch = {k: v.to(device) for k, v in draw_batch(train_set, cfg.batch_size, cfg.seed).items()}
            if not spec.full:
                # A PEFT tensor that cannot move the output is neither trained nor counted (BRIEF
                # section 9); probed on real training crops, as data decide what is dead.
                dead = prune_dead(model, batch["short"])
                if dead:
                    log.info("froze %d tensors that get no gradient: %s", len(dead), ", ".join(dead[:5]))
        info = peft_summary(model, peft)
        trainable, percent = info["trainable"], info["percent"]
    if training and trainable == 0:
        raise UserError(f"spec {cfg.spec!r} trains nothing; use --max-steps 0 to evaluate the model as it is")
    # One optimiser group per method, each with its own learning rate and weight decay.
    groups = parameter_groups(model, _trained_labels(model, peft), model.config["name"], policy=cfg.lr_policy,
                              column=table, lr=cfg.lr if isinstance(cfg.lr, float) else None,
                              weight_decay=cfg.weight_decay)
    for group in groups:
        group["lr"] *= lr_multiplier
    if peft is not None and groups and batch is not None:
        # How much each method can move this model (petite peft probe): a method that cannot is
        # reported before any time is spent training it.
        preflight = probe(model, peft, batch["short"], batch["long"], {g["method"]: g["lr"] for g in groups})
        for warning in preflight["warnings"]:
            log.warning("%s", warning)
    roi = inference_roi(model, crop)
    steps_per_epoch = len(_batches(len(train_set), cfg, 0, rank, world)) if train_set is not None else 1
    max_steps, val_every = _length(cfg, steps_per_epoch, table, spec) if training else (0, 1)
    if trial_fraction is not None:
        max_steps = max(val_every, int(max_steps * trial_fraction))

    setup = _Setup(cfg, run, datalist, spec, model, peft, table, crop, roi, train_set, groups, steps_per_epoch,
                   max_steps, val_every, has_val, trainable, percent, preflight, device, rank, world)
    # Everything is checked: now the run folder is created (or continued), by one writer only.
    saved_cfg = TrainConfig(**{**cfg.to_dict(), "lr": config_lr if config_lr is not None else cfg.lr,
                               "init": _portable(cfg.init, run.root), "datalist": _portable(cfg.datalist, run.root)})
    tracker = tracker if tracker is not None and rank == 0 else Tracker()
    with run_lock(run.root) if rank == 0 else contextlib.nullcontext():
        # The main run of lr auto keeps its trials (made just before) when it clears its folder.
        keep = ("lr-search",) if lr_search is not None else ()
        resuming = run.prepare(saved_cfg, resume, overwrite, keep) if rank == 0 else resume
        barrier(world)
        tracker.start(run.root, saved_cfg.to_dict(), {"petite.kind": "pretrain" if setup.pretraining else "finetune",
                                                      "petite.model": cfg.model or "", "petite.spec": spec.to_string()})
        try:
            final = _run(setup, resuming, progress, lr_multiplier, lr_search, tracker)
        except BaseException as err:
            tracker.finish(run.root, None, "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
            raise
        tracker.finish(run.root, final)
        return final


def _run(setup: _Setup, resuming: bool, progress: bool, lr_multiplier: float,
         lr_search: dict[str, Any] | None, tracker: Tracker) -> dict[str, Any]:
    """The loop and the final evaluation of a checked run whose folder is prepared (and locked)."""
    cfg, run, datalist, spec, model, peft = setup.cfg, setup.run, setup.datalist, setup.spec, setup.model, setup.peft
    groups, device, rank, world, roi = setup.groups, setup.device, setup.rank, setup.world, setup.roi
    max_steps, val_every, steps_per_epoch = setup.max_steps, setup.val_every, setup.steps_per_epoch
    train_set, has_val, training, pretraining = setup.train_set, setup.has_val, setup.training, setup.pretraining

    # The GAN's discriminator trains in pre-training and full fine-tuning, never under PEFT.
    step = make_step(model, cfg, groups, max_steps, device, world, train_discriminator=spec.full,
                     warmup_steps=round(cfg.warmup * max_steps) if cfg.schedule == "warmup-cosine" else 0) \
        if training else None
    if step is None and is_gan(model):
        model.discriminator.requires_grad_(False)
    # The trainable set is final (spec, pruning, the step's discriminator): keep fewer activations.
    checkpoint_mode = cfg.checkpoint or default_checkpoint(spec)
    memory = apply_memory_options(model, checkpoint_mode, lean=cfg.lean) if training else {"checkpointed": [], "lean": []}

    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"psnr_masked": None, "step": 0}
    done, since_best, elapsed = 0, 0, 0.0
    if resuming and step is not None:
        saved = load_state(run.state, model, step.optimizers, step.schedulers)
        done, history, best, elapsed = saved["step"], saved["history"], saved["best"], saved["elapsed"]
        since_best = saved["since_best"]
        log.info("resuming %s at step %d/%d", run.root, done, max_steps)

    def save_best() -> None:
        if rank != 0:
            return
        if pretraining or spec.full:
            save_model(model, run.root / "model")
        else:
            save_adapter(model, peft, run.root)  # adapter.safetensors + adapter.json in the run folder

    bar = tqdm(total=max_steps, initial=done, desc=run.root.name, disable=not progress or rank != 0,
               dynamic_ncols=True)
    step_times: list[float] = []
    board = _tensorboard(run, rank) if training else None
    memory_at_start = reset_peak_memory(device)  # after set-up: the peak of training and evaluation
    stopped = "max_steps" if training else "not trained"
    epoch_batches: tuple[int, list[list[tuple[int, int]]]] = (-1, [])
    try:
        losses: list[float] = []
        t0 = time.perf_counter()
        while done < max_steps:
            epoch, position = divmod(done, steps_per_epoch)
            if epoch_batches[0] != epoch:
                epoch_batches = (epoch, _batches(len(train_set), cfg, epoch, rank, world))
            # Re-seeded from (seed, step): a resumed run draws exactly what an uninterrupted one does.
            torch.manual_seed(cfg.seed * 100_003 + done)
            step.train_mode()
            crop_seed = (cfg.seed * 100_003 + epoch) * 10_007
            items = [draw_item(train_set, index, crop_seed + pos) for pos, index in epoch_batches[1][position]]
            short = torch.stack([item["short"] for item in items]).to(device)
            long = torch.stack([item["long"] for item in items]).to(device)
            ts = time.perf_counter()
            logs = step(short, long)
            step_times.append(time.perf_counter() - ts)
            if not math.isfinite(logs["loss"]):
                raise UserError(
                    f"training diverged: the loss became {logs['loss']} at step {done + 1}; the best weights so far "
                    f"(step {best['step']}) are kept; lower the learning rate", run.root)
            losses.append(logs["loss"])
            done += 1
            tracker.log_metrics({"train_loss": float(logs["loss"])}, done)
            bar.update(1)
            bar.set_postfix(loss=f"{logs['loss']:.4f}")
            if done % val_every and done < max_steps:
                continue
            record: dict[str, Any] = {"step": done, "epoch": round(done / steps_per_epoch, 3),
                                      "loss": float(np.mean(losses)), "lr": step.lr}
            losses = []
            if has_val:
                model.eval()
                overlap = cfg.overlap if cfg.val_overlap is None else cfg.val_overlap
                rows = evaluate_split(model, datalist, cfg.val_split, roi, overlap, cfg.sw_batch_size,
                                      normalise=cfg.normalise, progress=False)
                val = summarize(rows)
                record.update({f"val_{k}": val[k] for k in ("psnr", "ssim", "psnr_masked", "ssim_masked")})
                if best["psnr_masked"] is None or record["val_psnr_masked"] > best["psnr_masked"] + cfg.min_delta:
                    best = {"psnr_masked": record["val_psnr_masked"], "psnr": record["val_psnr"], "step": done}
                    since_best = 0
                    save_best()
                else:
                    since_best += 1
            elif done >= max_steps:
                best = {"psnr_masked": None, "step": done}
                save_best()
            elapsed += time.perf_counter() - t0
            record["time_s"] = round(time.perf_counter() - t0, 3)
            t0 = time.perf_counter()
            history.append(record)
            log.info("step %d/%d %s", done, max_steps,
                     " ".join(f"{k}={v:.4g}" for k, v in record.items() if k not in ("step", "epoch")))
            tracker.log_metrics({k: v for k, v in record.items() if k not in ("step", "epoch")}, done)
            if board is not None:
                for key, value in record.items():
                    if key != "step":
                        board.add_scalar(key, value, done)
                board.flush()
            if rank == 0:
                write_text(run.metrics, "".join(json.dumps(h) + "\n" for h in history))
                state = {"step": done, "history": history, "best": best, "elapsed": elapsed, "since_best": since_best}
                save_state(run.state, model, step.optimizers, step.schedulers, state)
            if has_val and cfg.patience and since_best >= cfg.patience:
                stopped = "patience"
                break
    except KeyboardInterrupt:
        bar.close()
        log.warning("interrupted; resumable state saved at step %d: rerun with --resume",
                    history[-1]["step"] if history else 0)
        raise
    bar.close()
    if board is not None:
        board.close()

    # Test once, with the best weights, beside the classical baselines.
    if rank != 0:
        return {}
    if best["step"] > 0:
        model = load_predictor(run.root).to(device)
    model.eval()
    # An lr-search trial is compared on validation only: testing it would cost a test pass and tempt a look.
    test_split = cfg.test_split if datalist.get(cfg.test_split) and not cfg.extra.get("lr_search_trial") else None
    rows = evaluate_split(model, datalist, test_split, roi, cfg.overlap, cfg.sw_batch_size, normalise=cfg.normalise,
                          progress=progress) if test_split else []
    test = write_results(run.root, rows, "test_metrics") if rows else {}
    # No-FT (a fine-tuning run that trains nothing) also gets "No-FT + calibration": its output recalibrated.
    calibrate = model_predictor(model, roi, cfg.overlap, cfg.sw_batch_size) if (
        not pretraining and not training) else None
    baselines = _baselines(datalist, cfg, test_split, calibrate) if test_split else {}
    peak = peak_memory_mb(device)
    final = {
        "model": cfg.model, "preset": model.config.get("preset"), "spec": spec.to_string(),
        "trainable": int(setup.trainable), "percent": float(setup.percent), "normalise": cfg.normalise,
        "train_subjects": len(datalist.get(cfg.train_split) or []),
        "steps": done, "max_steps": max_steps, "val_every": val_every, "steps_per_epoch": steps_per_epoch,
        "stopped": stopped, "converged": stopped == "patience",
        "best_step": best["step"], "best_val_psnr_masked": best["psnr_masked"], "best_val_psnr": best.get("psnr"),
        "test": test, "baselines": baselines,
        "time_s": round(elapsed, 2), "step_time_s": float(np.median(step_times)) if step_times else None,
        # Peak memory of the process during the run, and how much of it the run added over what
        # was in use when it started (the fair comparison between runs sharing one process).
        "peak_memory_mb": round(peak, 1), "peak_memory_added_mb": round(peak - memory_at_start, 1),
        "memory_options": {"precision": step.precision if step is not None else "fp32", "checkpoint": checkpoint_mode,
                           "checkpointed_blocks": len(memory["checkpointed"]), "lean_layers": len(memory["lean"])},
        "device": str(device),
        "hparams": {"lr_policy": cfg.lr_policy, "lr_multiplier": lr_multiplier, "optimizer": cfg.optimizer,
                    "schedule": cfg.schedule, "warmup": cfg.warmup, "source": setup.table["source"],
                    "param_groups": describe_groups(groups)},
        "lr_search": lr_search,
        "crop_size": list(setup.crop),
        # The base this run was fine-tuned from: adapters are only ever loaded onto it.
        "init_fingerprint": peft.base_fingerprint if peft is not None else None,
        "probe": setup.preflight,
    }
    if pretraining and test and "gaussian" in baselines:
        final["gate"] = _gate(test, baselines["gaussian"], test_split)
        log.warning("%s", final["gate"]["verdict"]) if not final["gate"]["passed"] else log.info(
            "%s", final["gate"]["verdict"])
    write_json(run.final, final)
    return final


def _limit_training_subjects(datalist: dict[str, Any], cfg: TrainConfig) -> dict[str, Any]:
    """``datalist`` with only the first ``cfg.train_subjects`` subjects of the training split (all when None).

    The baselines' fits then see the same subjects as the network, so a data-size curve compares like with like.
    """
    if cfg.train_subjects is None:
        return datalist
    available = datalist.get(cfg.train_split) or []
    if len(available) < cfg.train_subjects:
        raise UserError(f"train_subjects {cfg.train_subjects} but split {cfg.train_split!r} holds "
                        f"{len(available)} subject(s)", cfg.datalist)
    return {**datalist, cfg.train_split: available[:cfg.train_subjects]}


def _baselines(datalist: dict[str, Any], cfg: TrainConfig, split: str,
               calibrate: Any = None) -> dict[str, Any]:
    """The short scan and a Gaussian filter (fitted on the training split) on ``split``: summary plus the
    per-subject rows (``subjects``, for the report's paired comparisons).  With ``calibrate`` (the predictor of a
    run that trains nothing, No-FT) also ``calibration``: that prediction with a linear calibration fitted on the
    same training subjects (:mod:`petite.baselines.calibration`)."""
    from petite.baselines.predictors import calibrated_predictor, filter_predictor, fit_calibration, fit_gaussian
    from petite.engine.evaluate import evaluate, input_predictor

    fit_split = cfg.train_split if datalist.get(cfg.train_split) else split
    fit_data = {**datalist, fit_split: datalist[fit_split][:BASELINE_FIT_SUBJECTS]}
    fit_scans = list(iter_scans(fit_data, fit_split, cfg.normalise))
    gaussian = fit_gaussian(fit_scans)
    scans = list(iter_scans(datalist, split, cfg.normalise))

    def scored(predict: Any) -> dict[str, Any]:
        rows = evaluate(scans, predict)
        return {**summarize(rows), "subjects": rows}

    out = {
        "short": scored(input_predictor),
        "gaussian": {**scored(filter_predictor(gaussian)), "sigma": gaussian.sigma, "gain": gaussian.gain,
                     "fitted_on": fit_split},
    }
    source_filter = _source_gaussian(cfg.init)
    if source_filter is not None:
        out["gaussian_source"] = {**scored(filter_predictor(source_filter)), "sigma": source_filter.sigma,
                                  "gain": source_filter.gain, "fitted_on": "the pre-training run's training subjects"}
    if calibrate is not None:
        calibration = fit_calibration(fit_scans, calibrate)
        out["calibration"] = {**scored(calibrated_predictor(calibration, calibrate)), "gain": calibration.gain,
                              "offset": calibration.offset, "background": calibration.background,
                              "fitted_on": fit_split}
    return out


def _source_gaussian(init: str | None) -> Any:
    """The Gaussian filter fitted where the model was pre-trained (``baselines.gaussian`` of the init run's
    ``final.json``), or None (no init, a bare checkpoint, or a run made before baselines were saved).

    Applied unchanged on the target, it is the classical analogue of No-FT: what a site gets by reusing the
    source's filter instead of fitting its own."""
    from petite.baselines.gaussian import GaussianFilter

    if not init:
        return None
    folder = Path(init) if Path(init).is_dir() else Path(init).parent
    try:
        fit = json.loads((folder / "final.json").read_text())["baselines"]["gaussian"]
        return GaussianFilter(sigma=float(fit["sigma"]), gain=float(fit["gain"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _gate(test: dict[str, Any], gaussian: dict[str, Any], split: str) -> dict[str, Any]:
    """Does the source model beat the fitted Gaussian filter in-domain by :data:`GATE_DB` dB masked PSNR?"""
    margin = float(test["psnr_masked"] - gaussian["psnr_masked"])
    passed = margin >= GATE_DB
    verdict = (f"quality gate {'passed' if passed else 'FAILED'}: on the {split} split the model's masked PSNR is "
               f"{test['psnr_masked']:.2f} dB, the fitted Gaussian filter's {gaussian['psnr_masked']:.2f} dB "
               f"({margin:+.2f} dB; needed +{GATE_DB} dB)")
    if not passed:
        verdict += ": this source model has not learned more than a filter; claims about fine-tuning it mean nothing"
    return {"model_psnr_masked": test["psnr_masked"], "gaussian_psnr_masked": gaussian["psnr_masked"],
            "margin_db": margin, "needed_db": GATE_DB, "passed": passed, "split": split, "verdict": verdict}
