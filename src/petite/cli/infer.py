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
    from petite.engine.infer import inference_roi, load_predictor, run_settings
    from petite.engine.inference_inputs import check_output_folder_path, check_overlap

    # Everything the user typed is checked before a model is loaded or a volume predicted.
    check_overlap(overlap)
    check_output_folder_path(out)
    roi_size = parse_size(roi, "--roi")
    data = read_datalist(datalist)
    settings = run_settings(model_path)
    model = load_predictor(model_path, adapter).to(resolve_device(device))
    window = inference_roi(model, roi_size or settings["crop_size"])
    rows = evaluate_split(model, data, split, window, overlap, normalise=settings["normalise"], ssim_window=ssim_window)
    short = evaluate_split(None, data, split, window, normalise=settings["normalise"], progress=False)
    summary = write_results(out, rows)
    for row, ref in zip(rows, short):
        click.echo(f"{row['subject']}: PSNR in the head {row['psnr_masked']:.3f} dB (short scan {ref['psnr_masked']:.3f})"
                   f"  SSIM {row['ssim_masked']:.4f}  whole volume: PSNR {row['psnr']:.3f}  SSIM {row['ssim']:.4f}")
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
@click.option("--overwrite", is_flag=True, help="Replace outputs that exist (an output is never one of the inputs).")
@click.option("--frames", type=click.Choice(["first", "mean"]), default="first", show_default=True,
              help="A dynamic input (4D NIfTI or DICOM series): restore its first frame (the short scan) or the mean.")
def predict_command(src: str, dst: str, model_path: str, adapter: str | None, no_merge: bool, roi: str | None,
                    overlap: float, device: str, overwrite: bool, frames: str) -> None:
    """Restore a short scan (SRC.nii.gz -> DST.nii.gz), or every NIfTI in folder SRC into folder DST.

    SRC may be a folder holding one DICOM series (the output is NIfTI).

    The output keeps the input's affine, header and units.  Every input is checked before any
    output is written; an existing output is refused without --overwrite.
    """
    from petite.device import resolve_device
    from petite.engine.infer import check_outputs, inference_roi, load_predictor, predict_files, run_settings
    from petite.engine.inference_inputs import check_overlap, prediction_pairs

    check_overlap(overlap)
    pairs = prediction_pairs(src, dst)
    check_outputs(pairs, overwrite)
    roi_size = parse_size(roi, "--roi")
    settings = run_settings(model_path)
    model = load_predictor(model_path, adapter, merged=not no_merge).to(resolve_device(device))
    window = inference_roi(model, roi_size or settings["crop_size"])
    predict_files(model, pairs, window, overlap, normalise=settings["normalise"], overwrite=overwrite,
                  on_done=lambda s, d: click.echo(f"{s} -> {d}"), frames=frames)

