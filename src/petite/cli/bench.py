"""`petite bench` commands: what fine-tuning will cost, measured before training (library: :mod:`petite.bench`)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from petite.cli.app import cli, parse_size


@cli.group("bench")
def bench_group() -> None:
    """Measure costs before training: will this fit on my GPU?"""


@bench_group.command("peft")
@click.option("--model", "-m", required=True, help="unetr or cvtgan.")
@click.option("--preset", "-p", default="small", show_default=True, help="Model preset: paper, small or tiny.")
@click.option("--crop", default="64,64,64", show_default=True, help="Training crop D,H,W.")
@click.option("--specs", "specs_text", default=None,
              help="Comma-separated specs or presets, 'full' among them ('petite' = the model's PETITE preset); "
                   "separate with ';' when a spec has commas itself. Default: full, every single method, PETITE.")
@click.option("--checkpoint", type=click.Choice(["frozen", "all", "none"]), default=None,
              help="Activation checkpointing of the model's blocks. Default: per spec (none for full, "
                   "frozen for PEFT).")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True,
              help="Autocast precision (fp16: CUDA only).")
@click.option("--lean/--no-lean", default=True, show_default=True,
              help="Keep less for backward: frozen convolutions no input, ReLU/LeakyReLU a 1-byte mask "
                   "(--no-lean: what PyTorch keeps).")
@click.option("--batch", type=int, default=1, show_default=True, help="Crops per step.")
@click.option("--steps", type=int, default=5, show_default=True, help="Timed steps.")
@click.option("--warmup", type=int, default=2, show_default=True, help="Untimed steps first.")
@click.option("--repeats", type=int, default=1, show_default=True,
              help="Rounds over all specs, each spec in a fresh process; medians over rounds are reported.")
@click.option("--timing", type=click.Choice(["interleaved", "isolated"]), default="interleaved", show_default=True,
              help="Step times from one process stepping every spec in turn (steady ratios on a busy machine; "
                   "all models in memory at once) or from each spec's own process.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N].")
@click.option("--threads", type=int, default=None, help="CPU threads (default: PyTorch's).")
@click.option("--infer-rounds", type=int, default=7, show_default=True,
              help="Round-robin inference timings of base, unmerged, merged and unloaded.")
@click.option("--no-infer", is_flag=True, help="Skip the inference latencies.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON instead of a table.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the JSON result to this file.")
@click.option("--markdown", is_flag=True, help="Print the table as markdown.")
def peft_cmd(model: str, preset: str, crop: str, specs_text: str | None, checkpoint: str | None, precision: str,
             lean: bool, batch: int, steps: int, warmup: int, repeats: int, timing: str, infer_rounds: int, device: str,
             threads: int | None, no_infer: bool, as_json: bool, out: Path | None, markdown: bool) -> None:
    """Step time and peak memory of PEFT specs relative to full fine-tuning, and merged inference latency.

    Each spec's memory is measured in a fresh process (its peak is its own); step times by default
    in one process that steps every spec in turn.  Ratios are taken against `full` in the same round
    and reported as medians (min-max) over rounds; `full-plain` is full fine-tuning as PyTorch runs it.
    """
    from petite.atomic import write_json
    from petite.bench import BenchConfig, default_specs, format_bench, run_bench, split_specs

    size = parse_size(crop, "--crop")
    assert size is not None
    cfg = BenchConfig(
        model=model, preset=preset, crop=size,
        specs=split_specs(specs_text) if specs_text else default_specs(model),
        checkpoint=checkpoint, precision=precision, lean=lean, batch=batch, steps=steps,
        warmup=warmup, repeats=repeats, timing=timing, infer_rounds=infer_rounds, device=device, threads=threads, infer=not no_infer,
    )
    result = run_bench(cfg, progress=lambda line: click.echo(line, err=True))
    if out is not None:
        write_json(out, result)
    if as_json:
        click.echo(json.dumps(result))
        return
    text, md = format_bench(result)
    load = result["load_average"]
    click.echo(f"{model} ({preset}) crop {'x'.join(map(str, size))} batch {batch}, {precision}, {result['device']}, "
               f"load average {load['before']} -> {load['after']}")
    click.echo(md if markdown else text)
