"""`petite evaluate` and `petite predict`."""

from __future__ import annotations

import json

import click

from petite.cli.app import cli, parse_size


@cli.command("evaluate")
@click.option("--model", "model_path", required=True, help="Run folder, or a model checkpoint (stem or .safetensors).")
@click.option("--adapter", help="Folder holding adapter.safetensors + adapter.json (e.g. a fine-tuning run).")
@click.option("--datalist", required=True, type=click.Path(dir_okay=False), help="Datalist JSON.")
@click.option("--split", default="test", show_default=True, help="Split to evaluate.")
@click.option("--out", required=True, help="Folder for metrics.csv and metrics.json.")
@click.option("--roi", help="Sliding-window size, e.g. 64,64,64 (default: the model's input size, else the run's crop, else 64^3).")
@click.option("--overlap", default=0.5, show_default=True, type=float)
@click.option("--ssim-window", type=click.Choice(["uniform", "gaussian"]), default="uniform", show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
def evaluate_command(model_path: str, adapter: str | None, datalist: str, split: str, out: str, roi: str | None,
                     overlap: float, ssim_window: str, device: str) -> None:
    """PSNR, SSIM and NRMSE per subject on whole volumes (sliding window), with mean +- std."""
    from petite.data.datalist import read_datalist
    from petite.device import resolve_device
    from petite.engine.evaluate import evaluate_split, write_results
    from petite.engine.infer import inference_roi, load_predictor, run_crop_size
    from petite.engine.inference_inputs import check_output_folder_path, check_overlap

    # Everything the user typed is checked before a model is loaded or a volume predicted.
    check_overlap(overlap)
    check_output_folder_path(out)
    roi_size = parse_size(roi, "--roi")
    data = read_datalist(datalist)
    model = load_predictor(model_path, adapter).to(resolve_device(device))
    window = inference_roi(model, roi_size or run_crop_size(model_path))
    rows = evaluate_split(model, data, split, window, overlap, ssim_window=ssim_window)
    summary = write_results(out, rows)
    for row in rows:
        click.echo(f"{row['subject']}: PSNR {row['psnr']:.3f}  SSIM {row['ssim']:.4f}  NRMSE {row['nrmse']:.4f}")
    click.echo(json.dumps(summary, indent=2))


@cli.command("predict")
@click.argument("src", type=click.Path())
@click.argument("dst", type=click.Path())
@click.option("--model", "model_path", required=True, help="Run folder, or a model checkpoint.")
@click.option("--adapter", help="Folder holding adapter.safetensors + adapter.json (e.g. a fine-tuning run).")
@click.option("--no-merge", is_flag=True, help="Keep LoRA/DoRA/SSF separate instead of folding them into the weights.")
@click.option("--roi", help="Sliding-window size, e.g. 64,64,64.")
@click.option("--overlap", default=0.5, show_default=True, type=float)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
def predict_command(src: str, dst: str, model_path: str, adapter: str | None, no_merge: bool, roi: str | None,
                    overlap: float, device: str) -> None:
    """Restore a short scan (SRC.nii.gz -> DST.nii.gz), or every NIfTI in folder SRC into folder DST.

    The output keeps the input's affine and header and its intensity range.
    """
    from petite.device import resolve_device
    from petite.engine.infer import (
        inference_roi,
        load_predictor,
        predict_file,
        run_crop_size,
    )
    from petite.engine.inference_inputs import check_overlap, prediction_pairs

    check_overlap(overlap)
    pairs = prediction_pairs(src, dst)
    roi_size = parse_size(roi, "--roi")
    model = load_predictor(model_path, adapter, merged=not no_merge).to(resolve_device(device))
    window = inference_roi(model, roi_size or run_crop_size(model_path))
    for s, d in pairs:
        predict_file(model, s, d, window, overlap)
        click.echo(f"{s} -> {d}")

