"""`petite metrics`: PSNR, SSIM and NRMSE of a prediction against a target NIfTI."""

from __future__ import annotations

import json
from pathlib import Path

import click

from petite.cli.app import cli
from petite.data.nifti import load_volume
from petite.errors import UserError
from petite.metrics import WINDOWS, compute_metrics


@cli.command("metrics")
@click.argument("pred", type=click.Path(path_type=Path))
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help='Print {"psnr": ..., "ssim": ..., "nrmse": ...}.')
@click.option("--ssim-window", type=click.Choice(WINDOWS), default="uniform", show_default=True, help="SSIM window (7^3 box, or Gaussian sigma 1.5).")
@click.option("--no-scale", is_flag=True, help="Use raw intensities (PSNR peak = target max - min) instead of scaling each volume to [0, 1].")
def metrics(pred: Path, target: Path, as_json: bool, ssim_window: str, no_scale: bool) -> None:
    """PSNR, SSIM and NRMSE of PRED against TARGET, each scaled to [0, 1] by its own min/max first."""
    pred_data, _ = load_volume(pred)
    target_data, _ = load_volume(target)
    if pred_data.shape != target_data.shape:
        raise UserError(f"shape {pred_data.shape} differs from the target's {target_data.shape} ({target.name})", pred)
    if min(target_data.shape) < 7:
        raise UserError(f"SSIM needs at least 7 voxels along every axis, got shape {target_data.shape}", target)
    if not no_scale:
        for data, path in ((pred_data, pred), (target_data, target)):
            lo, hi = float(data.min()), float(data.max())
            if hi == lo:
                raise UserError("constant volume cannot be scaled to [0, 1] (use --no-scale)", path)
            data -= lo
            data /= hi - lo
    elif float(target_data.max()) == float(target_data.min()):
        raise UserError("constant target: NRMSE and PSNR are undefined", target)
    result = compute_metrics(pred_data, target_data, ssim_window=ssim_window, data_range=None if no_scale else 1.0)
    if as_json:
        click.echo(json.dumps(result))
    else:
        scale = "raw intensities" if no_scale else "each scaled to [0, 1]"
        click.echo(
            f"PSNR {result['psnr']:.4f} dB  SSIM {result['ssim']:.4f}  NRMSE {result['nrmse']:.5f}"
            f"  (SSIM window {ssim_window}, {scale})"
        )
