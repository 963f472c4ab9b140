"""The training loop behind ``petite pretrain`` and ``petite finetune``.

One function, :func:`train`, runs a configured job into a run folder
(:mod:`petite.engine.run_folder` lists its files).  The loop draws batches,
validates, keeps the best weights and checkpoints; the optimisation step itself
(losses, optimisers, the GAN's discriminator) is the model's
:class:`~petite.engine.steps.TrainingStep`.

Pre-training (no ``init``) trains every parameter, the GAN's discriminator
included.  Fine-tuning loads ``init`` and applies the PEFT spec; the GAN's
discriminator trains only under ``full`` and stays frozen under PEFT, as in
the paper.  The best epoch is chosen by validation PSNR; the test split is
evaluated once, at the end, with the best weights.

Determinism: every epoch re-seeds torch and the crop sampler from ``(seed,
epoch)``, so a run resumed from ``checkpoints/last`` (after Ctrl-C or
``kill -9``) ends with the same weights as an uninterrupted one.  Under
``torchrun`` each process takes its share of every batch and gradients are
averaged across processes, which equals single-process training on the same
global batch.
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from petite.atomic import write_json, write_text
from petite.data.datalist import read_datalist
from petite.data.transforms import draw_batch, draw_item, make_dataset, split_crop_size
from petite.device import resolve_device
from petite.engine.config import TrainConfig
from petite.engine.distributed import barrier, process_group
from petite.engine.evaluate import evaluate_split, write_results
from petite.engine.infer import inference_roi, load_predictor, resolve_checkpoint
from petite.engine.memory import peak_memory_mb, reset_peak_memory
from petite.engine.optim import parameter_groups
from petite.engine.run_folder import RunFolder
from petite.engine.state import load_state, save_state
from petite.engine.steps import is_gan, make_step
from petite.errors import UserError
from petite.models import build_model, load_model, save_model
from petite.models.contract import WHOLE_MODEL, component_modules
from petite.peft import Spec, apply_spec, recommended_hparams, save_adapter
from petite.peft.accounting import prune_dead
from petite.peft.probe import probe
from petite.peft.accounting import summary as peft_summary

log = logging.getLogger("petite.train")


def _tensorboard(run: RunFolder, rank: int) -> Any:
    """A TensorBoard writer in ``run/tensorboard`` when the tensorboard package is installed, else None."""
    if rank != 0:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # optional: metrics.jsonl always has the same numbers
        return None
    return SummaryWriter(log_dir=str(run.root / "tensorboard"))


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def _build(cfg: TrainConfig, datalist: dict[str, Any]) -> tuple[nn.Module, tuple[int, int, int]]:
    """The model to train and the training crop size."""
    if cfg.init:
        model = load_model(resolve_checkpoint(cfg.init))
        if model.config["name"] != cfg.model:
            raise UserError(f"checkpoint holds a {model.config['name']!r} model, config says {cfg.model!r}", cfg.init)
        crop = tuple(cfg.crop_size or getattr(model, "img_size", None) or split_crop_size(datalist, cfg.train_split))
        return model, crop  # type: ignore[return-value]
    crop = tuple(cfg.crop_size or split_crop_size(datalist, cfg.train_split))
    # UNETR's position embedding is sized for its input: build it for the crop.
    overrides = {"img_size": list(crop)} if cfg.model == "unetr" else {}
    return build_model(cfg.model, cfg.preset, **overrides), crop  # type: ignore[return-value]


def _fill_hparams(cfg: TrainConfig, model_name: str, spec: Spec) -> dict[str, Any]:
    """Fill unset optimiser, schedule and epochs from the paper's table; returns the table row used.

    Learning rate and weight decay stay as the user set them (``None``: chosen per method
    by :func:`petite.engine.optim.parameter_groups`).
    """
    table = recommended_hparams(model_name, spec)
    for key in ("optimizer", "schedule", "epochs"):
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
    """This process's ``(position, item index)`` pairs for each step of ``epoch``.

    The epoch's order is drawn from ``(seed, epoch)``; each global batch is split
    across processes.  The position within the epoch seeds that sample's crop,
    so crops do not depend on how many processes share the work.
    """
    rng = np.random.default_rng([cfg.seed, epoch])
    order = list(enumerate(rng.permutation(np.repeat(np.arange(n_items), cfg.samples_per_volume)).tolist()))
    steps = math.ceil(len(order) / cfg.batch_size)
    batches = [order[i * cfg.batch_size : (i + 1) * cfg.batch_size] for i in range(steps)]
    if world > 1:
        # Equal shards keep the averaged gradient equal to the global batch's: drop a partial last batch.
        batches = [batch for batch in batches if len(batch) == cfg.batch_size]
    return [batch[rank::world] for batch in batches]


def train(cfg: TrainConfig, resume: bool = False, overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run ``cfg`` into its run folder (see the module docstring); returns ``final.json``'s content."""
    rank, world = process_group()
    if cfg.batch_size % world:
        raise UserError(f"batch_size {cfg.batch_size} must be divisible by the {world} processes")
    run = RunFolder(cfg.out)
    datalist = read_datalist(cfg.datalist)
    spec = Spec.parse(cfg.spec)
    pretraining = not cfg.init
    if pretraining and not spec.full:
        raise UserError(f"pre-training trains the whole model; spec {cfg.spec!r} needs --init (a pretrained checkpoint)")
    _seed_everything(cfg.seed)
    model, crop = _build(cfg, datalist)
    cfg.crop_size = list(crop)  # resolved, so config.yaml records the sliding-window size too
    table = _fill_hparams(cfg, model.config["name"], spec)
    cfg.validate()  # the filled-in values must be ones config.yaml can be reloaded with
    resuming = run.prepare(cfg, resume, overwrite) if rank == 0 else resume
    barrier(world)
    device = resolve_device(cfg.device)

    train_set = make_dataset(datalist, cfg.train_split, train=True, cache_rate=cfg.cache_rate, crop_size=crop) if cfg.epochs else None

    # What trains: everything when pre-training; the spec's tensors when fine-tuning.
    model.to(device)
    preflight: dict[str, Any] | None = None
    if pretraining:
        model.requires_grad_(True)
        peft = None
        trainable = sum(p.numel() for p in model.parameters())
        percent = 100.0
    else:
        peft = apply_spec(model, spec)
        if train_set is not None and not spec.is_empty:
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
    # One optimiser group per method, each with its own learning rate and weight decay.
    groups = parameter_groups(model, _trained_labels(model, peft), model.config["name"], policy=cfg.lr_policy,
                              column=table, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if peft is not None and groups and train_set is not None:
        # How much each method can move this model (petite peft probe): a method that cannot is
        # reported before any time is spent training it.
        preflight = probe(model, peft, batch["short"], batch["long"], {g["method"]: g["lr"] for g in groups})
        for warning in preflight["warnings"]:
            log.warning("%s", warning)
    roi = inference_roi(model, crop)

    if cfg.epochs and trainable == 0:
        raise UserError(f"spec {cfg.spec!r} trains nothing; use --epochs 0 to evaluate the model as it is")
    has_val = bool(datalist.get(cfg.val_split))
    steps_per_epoch = len(_batches(len(train_set), cfg, 0, rank, world)) if train_set is not None else 0
    # The GAN's discriminator trains in pre-training and full fine-tuning, never under PEFT.
    step = make_step(model, cfg, groups, steps_per_epoch * cfg.epochs, device, world, train_discriminator=spec.full) \
        if cfg.epochs else None
    if step is None and is_gan(model):
        model.discriminator.requires_grad_(False)

    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"psnr": None, "epoch": 0}
    start_epoch, elapsed = 0, 0.0
    if resuming:
        saved = load_state(run.state, model, step.optimizers, step.schedulers)
        start_epoch, history, best, elapsed = saved["epoch"], saved["history"], saved["best"], saved["elapsed"]
        log.info("resuming %s at epoch %d/%d", run.root, start_epoch, cfg.epochs)

    def save_best() -> None:
        if rank != 0:
            return
        if pretraining or spec.full:
            save_model(model, run.root / "model")
        else:
            save_adapter(model, peft, run.root)  # adapter.safetensors + adapter.json in the run folder

    bar = tqdm(total=steps_per_epoch * cfg.epochs, initial=steps_per_epoch * start_epoch, desc=run.root.name,
               disable=not progress or rank != 0, dynamic_ncols=True)
    step_times: list[float] = []
    board = _tensorboard(run, rank) if cfg.epochs else None
    memory_at_start = reset_peak_memory(device)  # after set-up: the peak of training and evaluation
    try:
        for epoch in range(start_epoch, cfg.epochs):
            t0 = time.perf_counter()
            # Re-seed from (seed, epoch): resumed runs draw exactly what uninterrupted ones do.
            torch.manual_seed(cfg.seed * 100_003 + epoch)
            step.train_mode()
            losses = []
            for batch in _batches(len(train_set), cfg, epoch, rank, world):
                crop_seed = (cfg.seed * 100_003 + epoch) * 10_007
                items = [draw_item(train_set, index, crop_seed + position) for position, index in batch]
                short = torch.stack([item["short"] for item in items]).to(device)
                long = torch.stack([item["long"] for item in items]).to(device)
                ts = time.perf_counter()
                logs = step(short, long)
                step_times.append(time.perf_counter() - ts)
                losses.append(logs["loss"])
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{logs['loss']:.4f}")
            record: dict[str, Any] = {
                "epoch": epoch + 1, "loss": float(np.mean(losses)),
                "lr": step.lr,
            }
            last_epoch = epoch + 1 == cfg.epochs
            if has_val and ((epoch + 1) % cfg.val_every == 0 or last_epoch):
                model.eval()
                rows = evaluate_split(model, datalist, cfg.val_split, roi, cfg.overlap, cfg.sw_batch_size, progress=False)
                for key in ("psnr", "ssim", "nrmse"):
                    record[f"val_{key}"] = float(np.mean([r[key] for r in rows]))
                if best["psnr"] is None or record["val_psnr"] > best["psnr"]:
                    best = {"psnr": record["val_psnr"], "epoch": epoch + 1}
                    save_best()
            elif not has_val and last_epoch:
                best = {"psnr": None, "epoch": epoch + 1}
                save_best()
            elapsed += time.perf_counter() - t0
            record["time_s"] = round(time.perf_counter() - t0, 3)
            history.append(record)
            log.info("epoch %d/%d %s", epoch + 1, cfg.epochs,
                     " ".join(f"{k}={v:.4g}" for k, v in record.items() if k != "epoch"))
            if board is not None:
                for key, value in record.items():
                    if key != "epoch":
                        board.add_scalar(key, value, epoch + 1)
                board.flush()
            if rank == 0:
                write_text(run.metrics, "".join(json.dumps(h) + "\n" for h in history))
                info = {"epoch": epoch + 1, "history": history, "best": best, "elapsed": elapsed}
                save_state(run.state, model, step.optimizers, step.schedulers, info)
    except KeyboardInterrupt:
        bar.close()
        log.warning("interrupted; resumable state saved after epoch %d: rerun with --resume", len(history))
        raise
    bar.close()
    if board is not None:
        board.close()

    # Test once, with the best weights.
    if rank != 0:
        return {}
    if best["epoch"] > 0:
        model = load_predictor(run.root).to(device)
    model.eval()
    rows = evaluate_split(model, datalist, cfg.test_split, roi, cfg.overlap, cfg.sw_batch_size, progress=progress) \
        if datalist.get(cfg.test_split) else []
    test = write_results(run.root, rows, "test_metrics") if rows else {}
    peak = peak_memory_mb(device)
    final = {
        "model": cfg.model, "preset": model.config.get("preset"), "spec": spec.to_string(),
        "trainable": int(trainable), "percent": float(percent), "epochs": cfg.epochs,
        "best_epoch": best["epoch"], "best_val_psnr": best["psnr"], "test": test,
        "time_s": round(elapsed, 2), "time_per_epoch_s": round(elapsed / cfg.epochs, 3) if cfg.epochs else 0.0,
        "step_time_s": float(np.median(step_times)) if step_times else None,
        # Peak memory of the process during the run, and how much of it the run added over what
        # was in use when it started (the fair comparison between runs sharing one process).
        "peak_memory_mb": round(peak, 1), "peak_memory_added_mb": round(peak - memory_at_start, 1),
        "device": str(device),
        "hparams": {"lr_policy": cfg.lr_policy, "optimizer": cfg.optimizer, "schedule": cfg.schedule,
                    "source": table["source"],
                    "param_groups": [{k: v for k, v in g.items() if k != "params"} for g in groups]},
        "crop_size": list(crop),
        "probe": preflight,
    }
    write_json(run.final, final)
    return final
