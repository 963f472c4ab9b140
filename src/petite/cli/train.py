"""`petite pretrain` and `petite finetune`."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from petite.cli.app import cli, parse_size


def _training_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by both commands; each overrides the YAML config when given."""
    options = [
        click.option("--config", "config", type=click.Path(dir_okay=False), help="YAML config; options below override it."),
        click.option("--datalist", help="Datalist JSON of the scanner to train on."),
        click.option("--out", help="Run folder to create."),
        click.option("--model", help="unetr or cvtgan."),
        click.option("--preset", help="Model preset: paper, small or tiny."),
        click.option("--max-steps", "--steps", "max_steps", type=int,
                     help="Cap on optimisation steps; validation stops the run earlier (default: the paper's "
                     "epochs as steps)."),
        click.option("--epochs", type=int, help="The cap given in epochs (passes over the training subjects)."),
        click.option("--val-every", type=int, help="Validate every N steps (default: one pass over the training subjects)."),
        click.option("--val-overlap", type=float,
                     help="Sliding-window overlap of validation only (default: --overlap's; 0.25 is 2-3x faster)."),
        click.option("--patience", type=int, help="Stop after N validations without improvement (default 10; 0: "
                     "train to the cap)."),
        click.option("--min-delta", type=float, help="Improvement in validation masked PSNR (dB) that counts."),
        click.option("--normalise", type=click.Choice(["input", "paper"]),
                     help="input (default): one factor from the short scan divides both scans; paper: each volume "
                     "min-max scaled to [0, 1] (the paper's protocol, which invents a per-scanner gain)."),
        click.option("--residual", is_flag=True, default=None,
                     help="UNETR (pre-training): predict a correction added to the input, as the CVT-GAN does."),
        click.option("--batch-size", type=int),
        click.option("--lr", help="Learning rate of every trained tensor (default: each PEFT method's own value "
                     "from the paper's Table 3), or 'auto': a multiplier of those chosen on validation."),
        click.option("--warmup", type=float, help="warmup-cosine: fraction of the steps with a rising learning rate."),
        click.option("--weight-decay", type=float, help="Weight decay of every trained tensor (default: per method)."),
        click.option("--lr-policy", type=click.Choice(["per-method", "paper"]),
                     help="Without --lr: per-method (each method's Table 3 values, BitFit's biases at BitFit's) "
                     "or paper (the spec's single Table 3 column, as the paper ran Mix-PEFT)."),
        click.option("--optimizer", type=click.Choice(["adam", "adamw"])),
        click.option("--schedule", type=click.Choice(["cosine", "warmup-cosine", "constant"])),
        click.option("--crop", "crop_size", help="Training crop, e.g. 64,64,32 (default: from the volumes)."),
        click.option("--samples-per-volume", type=int, help="Random crops per training volume per epoch."),
        click.option("--seed", type=int),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"])),
        click.option("--no-amp", "amp", flag_value=False, default=None, help="Disable mixed precision on CUDA."),
        click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
                     help="Autocast precision of training steps: bf16 on the CPU or a GPU, fp16 on CUDA, auto = "
                     "bf16 where the hardware has it (AMX/AVX-512 BF16 CPUs, recent GPUs) "
                     "(default: fp16 on CUDA unless --no-amp, fp32 on the CPU)."),
        click.option("--checkpoint", type=click.Choice(["none", "frozen", "all"]),
                     help="Recompute blocks in backward instead of storing their activations: frozen blocks "
                     "(default under PEFT), all, or none (default for full fine-tuning)."),
        click.option("--no-lean", "lean", flag_value=False, default=None,
                     help="Let frozen convolutions keep their input for backward (PyTorch's default; more memory)."),
        click.option("--resume", is_flag=True, help="Continue an interrupted run in --out."),
        click.option("--overwrite", is_flag=True, help="Replace a finished or interrupted run in --out."),
        click.option("--quiet", is_flag=True, help="No progress bar."),
        click.option("--track", type=click.Choice(["mlflow"]),
                     help="Also log settings, per-step metrics, final metrics and the weights to MLflow "
                     "(pip install 'petite[track]')."),
        click.option("--track-uri", help="MLflow tracking URI (default: a file store in ./mlruns)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _run(config: str | None, resume: bool, overwrite: bool, quiet: bool, track: str | None, track_uri: str | None,
         defaults: dict[str, Any] | None = None, **values: Any) -> None:
    from petite.atomic import to_jsonable
    from petite.engine.config import TrainConfig
    from petite.engine.tracking import make_tracker
    from petite.engine.train import train

    tracker = make_tracker(track, track_uri)  # a missing mlflow is refused before anything is read or written
    crop = parse_size(values.pop("crop_size"), "--crop")
    values["crop_size"] = list(crop) if crop else None
    cfg = TrainConfig.load(config, defaults=defaults, **values)
    final = train(cfg, resume=resume, overwrite=overwrite, progress=not quiet, tracker=tracker)
    if final:
        keys = ("spec", "trainable", "percent", "steps", "stopped", "converged", "best_step", "test", "baselines")
        click.echo(json.dumps(to_jsonable({k: final.get(k) for k in keys}), indent=2))
        if "gate" in final:
            click.echo(final["gate"]["verdict"])


@cli.command("pretrain")
@_training_options
def pretrain_command(**kwargs: Any) -> None:
    """Train a model from scratch on a source scanner (the GAN trains its discriminator too).

    Uses the datalist's pretrain_train / pretrain_val splits unless the config says otherwise.
    """
    _run(**kwargs)


@cli.command("finetune")
@_training_options
@click.option("--init", help="Pretrained checkpoint or pre-training run folder.")
@click.option("--spec", help="none | full | a PEFT preset (petite-unetr, petite-cvtgan) | a Mix-PEFT spec.")
def finetune_command(**kwargs: Any) -> None:
    """Adapt a pretrained model to a target scanner with a PEFT spec (finetune_train / finetune_val)."""
    from petite.errors import UserError

    if not kwargs.get("init") and not kwargs.get("config"):
        raise UserError("finetune needs --init (a pretrained checkpoint or run folder)")
    _run(defaults={"train_split": "finetune_train", "val_split": "finetune_val"}, **kwargs)
