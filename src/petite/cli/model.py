"""`petite model` commands: inspect the model presets."""

from __future__ import annotations

import json

import click
import torch

from petite.cli.app import cli


@cli.group("model")
def model_group() -> None:
    """Inspect the networks (unetr, cvtgan, swin_unetr) and their presets."""


@model_group.command("list")
def list_cmd() -> None:
    """List the models and their presets."""
    from petite.models import list_models, list_presets

    for name in list_models():
        click.echo(f"{name}: {', '.join(list_presets(name))}")


@model_group.command("info")
@click.argument("model")
@click.option("--preset", "-p", default="small", show_default=True, help="Preset: paper, small or tiny.")
@click.option("--json", "as_json", is_flag=True, help='Print {"total": n, "components": {...}} as JSON.')
def info_cmd(model: str, preset: str, as_json: bool) -> None:
    """Parameter counts of MODEL, in total and per component."""
    from petite.models import build_model, count_parameters

    try:
        # The meta device allocates nothing, so even the paper presets count instantly.
        with torch.device("meta"):
            net = build_model(model, preset)
    except RuntimeError:
        # MONAI's SwinUNETR reads tensor values while constructing (drop-path rates): build it for real.
        net = build_model(model, preset)
    counts = count_parameters(net)
    if as_json:
        click.echo(json.dumps({"total": counts["total"], "components": counts["components"]}))
        return
    frozen = set(net.frozen_components)
    click.echo(f"{model} ({preset})")
    click.echo(f"  {'total':<15}{counts['total']:>13,}")
    for name, n in counts["components"].items():
        note = "  (frozen in PEFT)" if name in frozen else ""
        click.echo(f"  {name:<15}{n:>13,}{note}")
    click.echo(f"  {'other':<15}{counts['other']:>13,}  (in no component)")
