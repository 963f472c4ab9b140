"""`petite peft` commands: inspect PEFT specs on the models (parameter counts, Mix-PEFT combos)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import torch
from torch import nn

from petite.cli.app import cli


@cli.group("peft")
def peft_group() -> None:
    """Parameter-efficient fine-tuning: specs, trainable parameters, Mix-PEFT combinations."""


def _build(model: str, preset: str) -> nn.Module:
    from petite.models import build_model

    return build_model(model, preset)


def _load_spec(text: str) -> Any:
    from petite.peft import Spec

    path = Path(text)
    if path.suffix in {".yaml", ".yml"}:
        return Spec.from_yaml(path)
    return Spec.parse(text)


def peft_info(model: str, preset: str, spec_text: str) -> dict[str, Any]:
    """Build MODEL/PRESET, apply the spec and return :func:`petite.peft.summary` (plus model and preset)."""
    from petite.peft import apply_spec, summary

    spec = _load_spec(spec_text)
    try:
        # Counting needs no values: the meta device allocates nothing (the paper UNETR has 101 M parameters).
        with torch.device("meta"):
            net = _build(model, preset)
            state = apply_spec(net, spec, fingerprint=False)
    except (RuntimeError, NotImplementedError):
        net = _build(model, preset)
        state = apply_spec(net, spec, fingerprint=False)
    return {"model": model, "preset": preset, **summary(net, state)}


@peft_group.command("info")
@click.argument("model")
@click.option("--preset", "-p", default="small", show_default=True, help="Model preset: paper, small or tiny.")
@click.option("--spec", "-s", "spec_text", required=True,
              help="PEFT spec ('encoder=lora:r=4,decoder=ssf,bitfit'), a preset (petite-unetr, petite-cvtgan, "
                   "full, none) or a YAML file.")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
def info_cmd(model: str, preset: str, spec_text: str, as_json: bool) -> None:
    """Trainable parameters of MODEL under a PEFT spec: total, per component, per method, % of the base."""
    info = peft_info(model, preset, spec_text)
    if as_json:
        click.echo(json.dumps(info))
        return
    click.echo(f"{model} ({preset})  spec: {info['spec']}")
    click.echo(f"  trainable {info['trainable']:>12,} of {info['total']:,} base parameters = {info['percent']:.4f} %")
    click.echo("  per component:")
    for name, n in info["per_component"].items():
        click.echo(f"    {name:<14}{n:>12,}")
    click.echo("  per method:")
    for name, n in info["per_method"].items():
        click.echo(f"    {name:<14}{n:>12,}")


@peft_group.command("combos")
@click.argument("model")
@click.option("--preset", "-p", default="tiny", show_default=True,
              help="Model preset to inspect (feasibility does not depend on the preset).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of spec strings.")
def combos_cmd(model: str, preset: str, as_json: bool) -> None:
    """Feasible Mix-PEFT combinations of MODEL (paper Tables 6-7), each with BitFit."""
    from petite.peft import combos

    with torch.device("meta"):
        net = _build(model, preset)
    specs = [s.to_string() for s in combos(net)]
    if as_json:
        click.echo(json.dumps(specs))
        return
    for s in specs:
        click.echo(s)
    click.echo(f"{len(specs)} combinations")
