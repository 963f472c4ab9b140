"""`petite metrics`: PSNR, SSIM and NRMSE of a prediction against a target, whole volume and inside the head."""

from __future__ import annotations

import json
from pathlib import Path

import click

from petite.atomic import to_jsonable
from petite.cli.app import cli
from petite.data.masks import head_mask
from petite.data.nifti import load_volume
from petite.errors import UserError
from petite.metrics import WINDOWS, compute_metrics, scale_unit


@cli.command("metrics")
@click.argument("pred", type=click.Path(path_type=Path))
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
@click.option("--ssim-window", type=click.Choice(WINDOWS), default="uniform", show_default=True,
              help="SSIM window (7^3 box, or Gaussian sigma 1.5).")
@click.option("--mask", "mask_path", type=click.Path(path_type=Path),
              help="A head/body mask NIfTI or DICOM folder (non-zero = inside); default: computed from the target.")
@click.option("--scale-each", is_flag=True,
              help="Scale each volume to [0, 1] by its own min/max first (the paper's pre-processing; wrong for a "
                   "prediction in the target's units, which is the default assumption).")
@click.option("--frames", type=click.Choice(["first", "mean"]), default="mean", show_default=True,
              help="A dynamic TARGET (4D NIfTI or DICOM series) is compared as the mean of its frames (the long "
                   "scan) or its first frame.")
def metrics(pred: Path, target: Path, as_json: bool, ssim_window: str, mask_path: Path | None, scale_each: bool,
            frames: str) -> None:
    """PSNR, SSIM and NRMSE of PRED against TARGET, both in the target's units.

    PRED, TARGET and --mask are NIfTI files or folders holding one DICOM series each.

    Both are mapped by the target's min-max to the target's [0, 1] scale (the paper's scale); the
    metrics are computed over the whole volume and inside the head (a mask from the target, the same
    for every method: smoothed, above 10 % of its 99.5th percentile, largest component, holes filled),
    with the prediction's mean in the background.
    """
    pred_data, _ = load_volume(pred)
    target_data, _ = load_volume(target, frames=frames)
    if pred_data.shape != target_data.shape:
        raise UserError(f"shape {pred_data.shape} differs from the target's {target_data.shape} ({target.name})", pred)
    if min(target_data.shape) < 7:
        raise UserError(f"SSIM needs at least 7 voxels along every axis, got shape {target_data.shape}", target)
    for data, path in ((pred_data, pred), (target_data, target)) if scale_each else ((target_data, target),):
        if float(data.max()) == float(data.min()):
            raise UserError("constant volume: the metrics are undefined", path)
    if scale_each:
        pred_data, target_data = scale_unit(pred_data), scale_unit(target_data)
    if mask_path is not None:
        mask = load_volume(mask_path, what="mask")[0] != 0
        if mask.shape != target_data.shape:
            raise UserError(f"mask shape {mask.shape} differs from the target's {target_data.shape}", mask_path)
    else:
        mask = head_mask(target_data, target)
    result = compute_metrics(pred_data, target_data, mask=mask, ssim_window=ssim_window)
    if as_json:
        click.echo(json.dumps(to_jsonable(result)))
    else:
        click.echo(
            f"in the head: PSNR {result['psnr_masked']:.4f} dB  SSIM {result['ssim_masked']:.4f}  "
            f"NRMSE {result['nrmse_masked']:.5f}\n"
            f"whole volume: PSNR {result['psnr']:.4f} dB  SSIM {result['ssim']:.4f}  NRMSE {result['nrmse']:.5f}  "
            f"(background mean {result['background']:.4f}; SSIM window {ssim_window})"
        )
