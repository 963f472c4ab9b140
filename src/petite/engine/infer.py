"""Whole-volume inference: sliding windows, loading trained models, predicting NIfTI files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn as nn
from monai.inferers import sliding_window_inference

from petite.data.nifti import load_volume, save_volume
from petite.documents import read_yaml
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
    if (run / "config.yaml").is_file() and not (run / "model.safetensors").is_file():
        # A PEFT (or No-FT) run: its base checkpoint, plus its adapter if it trained one.
        config = read_yaml(run / "config.yaml", "run config")
        if not config.get("init"):
            raise UserError("run folder has neither model.safetensors nor a base checkpoint", run)
        model_path = Path(config["init"])
        if adapter is None and (run / "adapter.safetensors").is_file():
            adapter = run
    model = load_model(resolve_checkpoint(model_path))
    if adapter is not None:
        load_adapter(model, adapter)
        if merged:
            merge(model)
    return model.eval()


def run_crop_size(path: str | Path) -> tuple[int, int, int] | None:
    """The training crop recorded by a run folder (its natural sliding-window size), else ``None``."""
    config = Path(path) / "config.yaml"
    if not config.is_file():
        return None
    crop = (read_yaml(config, "run config") or {}).get("crop_size")
    return tuple(int(c) for c in crop) if crop else None  # type: ignore[return-value]


def resolve_checkpoint(path: str | Path) -> Path:
    """A model checkpoint path from a checkpoint stem/file or a run folder (its final weights)."""
    path = Path(path)
    if path.is_dir() and (path / "model.safetensors").is_file():
        return path / "model"
    return path


def _to_ras(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ornt = nib.orientations.io_orientation(affine)
    return nib.orientations.apply_orientation(data, ornt), ornt


def predict_file(
    model: nn.Module,
    src: str | Path,
    dst: str | Path,
    roi: Sequence[int],
    overlap: float = 0.5,
    sw_batch_size: int = 2,
) -> None:
    """Restore one short-scan NIfTI into ``dst``.

    The input is reoriented to RAS (as in training), scaled to [0, 1] by its own
    range, predicted, clipped to [0, 1], mapped back to the input's orientation
    and intensity range, and written with the input's affine and header.
    """
    data, affine = load_volume(src)
    header = nib.load(str(src)).header.copy()
    ras, ornt = _to_ras(data, affine)
    vmin, vmax = float(ras.min()), float(ras.max())
    if vmax <= vmin:
        raise UserError("volume is constant; cannot scale it to [0, 1]", src)
    scaled = torch.from_numpy(np.ascontiguousarray((ras - vmin) / (vmax - vmin), dtype=np.float32))[None, None]
    pred = predict_volume(model, scaled, roi, overlap, sw_batch_size)[0, 0].cpu().numpy()
    # Targets live in [0, 1]; clipping keeps the output inside the input's intensity range.
    pred = pred.clip(0.0, 1.0) * (vmax - vmin) + vmin
    back = nib.orientations.apply_orientation(pred, nib.orientations.ornt_transform(
        nib.orientations.axcodes2ornt(("R", "A", "S")), ornt))
    save_volume(dst, back, affine, header=header)
