"""`petite demo`: simulate two scanners, pre-train, fine-tune three ways, report (see :mod:`petite.demos.pet`)."""

from __future__ import annotations

import click

from petite.cli.app import cli


@cli.command("demo")
@click.option("--out", default="demo_out", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the data, runs and report.")
@click.option("--quick", is_flag=True, help="Tiny model, few subjects and steps (1-2 min): a smoke test.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of data and training.")
@click.option("--overwrite", is_flag=True, help="Replace an earlier demo in --out.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True,
              help="Autocast of the training steps: bf16 is faster on CPUs with AMX/AVX-512 BF16, slower without; "
              "auto = bf16 where the CPU has those units, else fp32.")
@click.option("--normalise", type=click.Choice(["input", "paper"]), default="input", show_default=True,
              help="Intensity normalisation of every run: one factor from the short scan (input), or each "
              "volume min-max to [0, 1] as the paper did (paper).")
def demo(out: str, quick: bool, seed: int, overwrite: bool, precision: str, normalise: str) -> None:
    """End-to-end demo on half-resolution paper scanners 1 -> 4 (7-19 min on 2 CPU cores with bf16, by CPU; --quick: 1-2 min).

    Simulates scanners 1h (source) and 4h (target), pre-trains a small UNETR on
    1h, fine-tunes it on 4h with No-FT, Full-FT and PETITE, prints the
    comparison table and writes OUT/report/ (table.md, results.json,
    error_maps.png).
    """
    from petite.demos.pet import run_demo

    run_demo(out, quick=quick, seed=seed, overwrite=overwrite, echo=click.echo, precision=precision,
             normalise=normalise)
