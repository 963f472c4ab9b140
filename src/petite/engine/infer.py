"""Whole-volume inference: sliding windows, loading trained models, predicting NIfTI files."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
import torch.nn as nn
from monai.inferers import sliding_window_inference

from petite.data.nifti import load_volume, save_volume
from petite.data.normalise import denormalise, input_factor, scale_and_offset
from petite.documents import read_yaml
from petite.engine.run_folder import stored_path
from petite.errors import UserError
from petite.models import load_model
from petite.peft import load_adapter, merge

DEFAULT_ROI = (64, 64, 64)


def inference_roi(model: nn.Module, crop_size: Sequence[int] | None = None) -> tuple[int, int, int]:
    """Window size: the model's fixed input size (UNETR's ``img_size``), else the training crop."""
    fixed = getattr(model, "img_size", None)
    if fixed is not None:
        return tuple(int(s) for s in fixed)  # type: ignore[return-value]
    return tuple(int(s) for s in (crop_size or DEFAULT_ROI))  # type: ignore[return-value]


@torch.no_grad()
def predict_volume(
    model: nn.Module,
    volume: torch.Tensor,
    roi: Sequence[int],
    overlap: float = 0.5,
    sw_batch_size: int = 2,
    amp: bool = False,
) -> torch.Tensor:
    """Predict a ``(B, C, D, H, W)`` volume by Gaussian-blended sliding windows (MONAI)."""
    device = next(model.parameters()).device
    with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
        out = sliding_window_inference(
            volume.to(device), roi_size=tuple(roi), sw_batch_size=sw_batch_size, predictor=model,
            overlap=overlap, mode="gaussian",
        )
    return out.float()


def load_predictor(model_path: str | Path, adapter: str | Path | None = None, merged: bool = True) -> nn.Module:
    """A ready-to-run model: a run folder, or a model checkpoint plus an optional adapter folder.

    A run folder resolves to its fine-tuned weights: ``model.safetensors`` (full
    training) or its base checkpoint plus ``adapter.safetensors`` (PEFT).  LoRA,
    DoRA and SSF are merged into the weights unless ``merged`` is False.
    """
    model_path = Path(model_path)
    run = model_path
    base = base_checkpoint(run)
    if base is not None:
        # A PEFT (or No-FT) run: its base checkpoint, plus its adapter if it trained one.
        model_path = base
        if adapter is None and (run / "adapter.safetensors").is_file():
            adapter = run
    model = load_model(resolve_checkpoint(model_path))
    if adapter is not None:
        load_adapter(model, adapter)
        if merged:
            merge(model)
    return model.eval()


def base_checkpoint(run: str | Path) -> Path | None:
    """The base checkpoint of a PEFT (or No-FT) run folder; ``None`` for a checkpoint or a run with its own weights.

    Raises:
        UserError: the run names no base, or its base is missing.
    """
    run = Path(run)
    if not (run / "config.yaml").is_file() or (run / "model.safetensors").is_file():
        return None
    config = read_yaml(run / "config.yaml", "run config")
    if not config.get("init"):
        raise UserError("run folder has neither model.safetensors nor a base checkpoint", run)
    # Stored relative to the run folder, so a run and its base can be moved together.
    path = stored_path(run, config["init"])
    if not resolve_checkpoint(path).with_suffix(".json").is_file():
        raise UserError(f"this run's base model {config['init']} (relative to the run folder) is missing: "
                        f"move the run and its base together, or restore {path}", run)
    return path


def run_settings(path: str | Path) -> dict[str, Any]:
    """What a run folder says about inference: its training crop (the natural window) and its normalisation.

    ``{"crop_size": (d, h, w) | None, "normalise": "input" | "paper"}``; a checkpoint that is not a run
    folder gives no crop and the default normalisation.
    """
    config = Path(path) / "config.yaml"
    values = (read_yaml(config, "run config") or {}) if config.is_file() else {}
    crop = values.get("crop_size")
    return {"crop_size": tuple(int(c) for c in crop) if crop else None,
            "normalise": values.get("normalise", "input")}


def resolve_checkpoint(path: str | Path) -> Path:
    """A model checkpoint path from a checkpoint stem/file or a run folder (its final weights)."""
    path = Path(path)
    if path.is_dir() and (path / "model.safetensors").is_file():
        return path / "model"
    return path


def _to_ras(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ornt = nib.orientations.io_orientation(affine)
    return nib.orientations.apply_orientation(data, ornt), ornt


@dataclass
class _Input:
    source: Path
    destination: Path
    ras: np.ndarray
    affine: np.ndarray
    ornt: np.ndarray
    scale: float
    offset: float


def _read_input(src: Path, dst: Path, normalise: str, frames: str | None = None) -> _Input:
    data, affine = load_volume(src, frames=frames)
    ras, ornt = _to_ras(data, affine)
    factor = input_factor(ras, src) if normalise == "input" else None
    scale, offset = scale_and_offset(ras, normalise, factor, src)
    return _Input(src, dst, ras, affine, ornt, scale, offset)


def check_outputs(pairs: Sequence[tuple[Path, Path]], overwrite: bool) -> None:
    """Refuse an output that is an input (always) or that exists (unless ``overwrite``), before anything runs."""
    sources = {p.resolve() for p, _ in pairs}
    for src, dst in pairs:
        if dst.resolve() in sources:
            raise UserError(f"the output would overwrite an input ({src}); choose another output", dst)
        if dst.exists() and not overwrite:
            raise UserError("output exists; pass --overwrite to replace it", dst)


def predict_files(
    model: nn.Module,
    pairs: Sequence[tuple[Path, Path]],
    roi: Sequence[int],
    overlap: float = 0.5,
    sw_batch_size: int = 2,
    normalise: str = "input",
    overwrite: bool = False,
    on_done: Callable[[Path, Path], None] | None = None,
    frames: str | None = "first",
) -> None:
    """Restore short-scan NIfTI files ``(source, destination)``: every input is read and checked first,
    so a bad one among many stops the command before any output is written.

    Each input is reoriented to RAS (as in training), normalised as the model was trained
    (:mod:`petite.data.normalise`: its own head-mean factor, or the paper's min-max), predicted,
    mapped back to its units and orientation, and written with its affine and header (a NIfTI input's).
    An input may be a folder holding a DICOM series; dynamic frames give one volume as ``frames`` says
    (``first``: the short scan, the default; ``mean``; ``None`` refuses them).
    """
    check_outputs(pairs, overwrite)
    inputs = [_read_input(src, dst, normalise, frames) for src, dst in pairs]
    for item in inputs:
        header = None if item.source.is_dir() else nib.load(str(item.source)).header.copy()
        scaled = torch.from_numpy(np.ascontiguousarray((item.ras - item.offset) / item.scale, dtype=np.float32))
        pred = predict_volume(model, scaled[None, None], roi, overlap, sw_batch_size)[0, 0].cpu().numpy()
        # Activity is never negative; the paper's targets live in [0, 1].
        pred = pred.clip(0.0, 1.0) if normalise == "paper" else pred.clip(0.0, None)
        pred = denormalise(pred, item.scale, item.offset)
        back = nib.orientations.apply_orientation(pred, nib.orientations.ornt_transform(
            nib.orientations.axcodes2ornt(("R", "A", "S")), item.ornt))
        save_volume(item.destination, back, item.affine, header=header)
        if on_done is not None:
            on_done(item.source, item.destination)
