"""`petite report`: the paper's tables and figures from a folder of run folders (see :mod:`petite.report.build`)."""

from __future__ import annotations

from pathlib import Path

import click

from petite.cli.app import cli


@cli.command("report")
@click.argument("runs_dir", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), help="Report folder (default: RUNS_DIR/report).")
@click.option("--baseline", default="Full-FT", show_default=True,
              help="Method the first difference column, the default comparisons and the cost ratios use.")
@click.option("--figures/--no-figures", default=True, show_default=True,
              help="Draw the error-map figures (recomputes predictions from the saved weights).")
@click.option("--overwrite", is_flag=True, help="Replace an earlier report in --out.")
@click.option("--study", type=click.Path(path_type=Path),
              help="Study file whose 'report: comparisons' declares the tested comparisons "
                   "(default: RUNS_DIR/study.yaml when present; else every method vs Full-FT and No-FT).")
def report(runs_dir: Path, out: Path | None, baseline: str, figures: bool, overwrite: bool,
           study: Path | None) -> None:
    """Tables (paper Tables 1/2, 5, 6/7), paired tests and figures for the finished runs under RUNS_DIR.

    Writes OUT/report.md, OUT/results.json (every number of the tables) and
    PNGs: PSNR vs % trainable parameters per model and, with --figures, error
    maps in the style of the paper's Fig. 4.  Unfinished runs are listed, not
    reported.  The folder is written whole or not at all.
    """
    from petite.report.build import make_report

    make_report(runs_dir, out, baseline=baseline, figures=figures, overwrite=overwrite, study=study, echo=click.echo)
