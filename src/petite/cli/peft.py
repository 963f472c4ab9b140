"""`petite peft` commands: inspect PEFT specs on the models (parameter counts, Mix-PEFT combos, the probe)."""

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


@peft_group.command("probe")
@click.option("--init", required=True, help="Pre-trained model: a run folder or a checkpoint.")
@click.option("--datalist", required=True, type=click.Path(dir_okay=False), help="Datalist of the target scanner.")
@click.option("--spec", "-s", "spec_text", required=True, help="PEFT spec, preset or YAML file.")
@click.option("--split", default="finetune_train", show_default=True, help="Split the crops come from.")
@click.option("--crops", type=int, default=2, show_default=True, help="Training crops in the probe's batch.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def probe_cmd(init: str, datalist: str, spec_text: str, split: str, crops: int, seed: int, device: str,
              as_json: bool) -> None:
    """Before training: how much gradient each method of a spec gets on a pre-trained model.

    Prints, per method and component, the trained tensors, their share of the whole model's
    gradient norm and their gradient per parameter relative to the model's; the attention
    entropy of every transformer block against the uniform maximum; and a warning for every
    method that cannot move the model (for example LoRA on query/key where attention is uniform).
    """
    from petite.atomic import to_jsonable
    from petite.engine.preflight import preflight
    from petite.peft.probe import format_probe

    result = preflight(init, datalist, _load_spec(spec_text), split=split, crops=crops, seed=seed, device=device)
    if as_json:
        click.echo(json.dumps(to_jsonable(result)))
        return
    info = result["summary"]
    click.echo(f"{result['model']['name']} ({result['model'].get('preset')})  spec: {result['spec']}  "
               f"trainable {info['trainable']:,} = {info['percent']:.3f} %  loss {result['loss']:.4g}")
    if result["dead"]:
        click.echo(f"frozen (no gradient reaches them): {len(result['dead'])} tensors")
    click.echo(format_probe(result))


@peft_group.command("export")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["peft"]), default="peft", show_default=True,
              help="Adapter format: HF peft's adapter_config.json + adapter_model.safetensors.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder to write.")
@click.option("--overwrite", is_flag=True, help="Replace the output folder if it exists.")
def export_cmd(run: Path, fmt: str, out: Path, overwrite: bool) -> None:
    """Write the LoRA/DoRA adapter of fine-tuning run RUN in HF peft's format.

    Load it with ``peft.PeftModel.from_pretrained(base_model, OUT)`` onto the run's base model
    (``petite.load_model``).  Specs with parts peft lacks (SSF, VPT, bottleneck adapters, LayerNorm,
    BitFit, LoRA on convolutions) are refused, naming the part; nothing is written then.
    """
    from petite.atomic import check_output_folder
    from petite.engine.infer import base_checkpoint, load_predictor, resolve_checkpoint
    from petite.errors import UserError
    from petite.models import load_model
    from petite.peft.export import export_peft

    check_output_folder(out, overwrite)
    if not run.is_dir():
        raise UserError("run folder not found", run)
    base_path = base_checkpoint(run)
    if base_path is None:
        raise UserError("not a fine-tuning run with an adapter (no base checkpoint in config.yaml)", run)
    if not (run / "adapter.safetensors").is_file():
        raise UserError("the run trained no adapter (adapter.safetensors missing); nothing to export", run)
    model = load_predictor(run, merged=False)
    base = load_model(resolve_checkpoint(base_path)).eval()
    try:
        export_peft(model, base, out, overwrite=overwrite,
                    source={"run": str(run.resolve()), "base_checkpoint": str(resolve_checkpoint(base_path).resolve())})
    except UserError as err:
        if err.path is None:  # the spec's problem: name the run it belongs to
            raise UserError(str(err), run) from None
        raise
    click.echo(f"wrote {out} (load with peft.PeftModel.from_pretrained(base_model, {str(out)!r}))")
