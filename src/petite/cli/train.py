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
        click.option("--epochs", type=int, help="Epochs (default: the paper's for this model and spec)."),
        click.option("--batch-size", type=int),
        click.option("--lr", type=float, help="Learning rate of every trained tensor (default: each PEFT method's "
                     "own value from the paper's Table 3)."),
        click.option("--weight-decay", type=float, help="Weight decay of every trained tensor (default: per method)."),
        click.option("--lr-policy", type=click.Choice(["per-method", "paper"]),
                     help="Without --lr: per-method (each method's Table 3 values, BitFit's biases at BitFit's) "
                     "or paper (the spec's single Table 3 column, as the paper ran Mix-PEFT)."),
        click.option("--optimizer", type=click.Choice(["adam", "adamw"])),
        click.option("--schedule", type=click.Choice(["cosine", "warmup-cosine", "constant"])),
        click.option("--crop", "crop_size", help="Training crop, e.g. 64,64,32 (default: from the volumes)."),
        click.option("--samples-per-volume", type=int, help="Random crops per training volume per epoch."),
        click.option("--val-every", type=int, help="Validate every N epochs."),
        click.option("--seed", type=int),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"])),
        click.option("--no-amp", "amp", flag_value=False, default=None, help="Disable mixed precision on CUDA."),
        click.option("--resume", is_flag=True, help="Continue an interrupted run in --out."),
        click.option("--overwrite", is_flag=True, help="Replace a finished or interrupted run in --out."),
        click.option("--quiet", is_flag=True, help="No progress bar."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _run(config: str | None, resume: bool, overwrite: bool, quiet: bool, defaults: dict[str, Any] | None = None,
         **values: Any) -> None:
    from petite.engine.config import TrainConfig
    from petite.engine.train import train

    crop = parse_size(values.pop("crop_size"), "--crop")
    values["crop_size"] = list(crop) if crop else None
    cfg = TrainConfig.load(config, defaults=defaults, **values)
    final = train(cfg, resume=resume, overwrite=overwrite, progress=not quiet)
    if final:
        click.echo(json.dumps({k: final[k] for k in ("spec", "trainable", "percent", "best_epoch", "test")}, indent=2))


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
