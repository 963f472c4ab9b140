"""`petite prepare` (real data -> datalist) and `petite data check` (datalist statistics)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from petite.cli.app import cli
from petite.data.datalist import SPLITS, parse_split_sizes
from petite.data.inspect import format_report, inspect_datalist
from petite.data.prepare import (
    N_FRAMES,
    prepare_datalist,
    scan_csv,
    scan_frames_dir,
    scan_pairs_dir,
)
from petite.errors import UserError


@cli.command("prepare")
@click.option("--frames-dir", type=click.Path(path_type=Path),
              help="Folder of 4D dynamic NIfTI files, one per subject (<subject>.nii.gz), or of DICOM series "
                   "sub-folders <subject>/ (short = first frame, long = mean of the frames).")
@click.option("--pairs-dir", type=click.Path(path_type=Path),
              help="Folder of <subject>_short.nii.gz / <subject>_long.nii.gz pairs, or of DICOM series sub-folders "
                   "<subject>_short/ and <subject>_long/.")
@click.option(
    "--csv",
    "csv_file",
    type=click.Path(path_type=Path),
    help="CSV with columns subject and frames, or subject, short, long; optional split.",
)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Datalist JSON to write.")
@click.option("--scanner", default=None, help="Scanner name stored in the datalist [default: the input's name].")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the split assignment.")
@click.option(
    "--split-sizes",
    default="30,15,10,15,15",
    show_default=True,
    help=f"Subjects per split ({', '.join(SPLITS)}); ignored with a CSV split column.",
)
@click.option("--n-frames", default=N_FRAMES, show_default=True, type=click.IntRange(min=1), help="Frames expected in each 4D file.")
def prepare(
    frames_dir: Path | None,
    pairs_dir: Path | None,
    csv_file: Path | None,
    out: Path,
    scanner: str | None,
    seed: int,
    split_sizes: str,
    n_frames: int,
) -> None:
    """Validate real scans and write a datalist (short = frame 0, long = mean of frames for 4D input)."""
    if sum(value is not None for value in (frames_dir, pairs_dir, csv_file)) != 1:
        raise UserError("give exactly one of --frames-dir, --pairs-dir, --csv")
    sizes = parse_split_sizes(split_sizes)
    if frames_dir is not None:
        source = scan_frames_dir(frames_dir)
    elif pairs_dir is not None:
        source = scan_pairs_dir(pairs_dir)
    else:
        source = scan_csv(csv_file)
    name = scanner if scanner is not None else (source.origin.stem or "real")
    datalist = prepare_datalist(source, out, scanner=name, seed=seed, split_sizes=sizes, n_frames=n_frames)
    counts = ", ".join(f"{split} {len(datalist[split])}" for split in SPLITS)
    click.echo(f"wrote {out}: {len(source.items)} subjects validated ({counts})")


@cli.group("data")
def data() -> None:
    """Inspect datasets."""


@data.command("check")
@click.argument("datalist", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the full report (per item too) as JSON.")
def check(datalist: Path, as_json: bool) -> int:
    """Counts, shapes, spacings and intensity statistics per split; flags data problems.

    Exit status 0 when no problem is found, 1 when problems are flagged, 2 when
    a file cannot be read.
    """
    report = inspect_datalist(datalist)
    click.echo(json.dumps(report, indent=2) if as_json else format_report(report))
    return 1 if report["problems"] else 0
