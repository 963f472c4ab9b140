"""Per-patient imaging features from a trained segmenter's frozen encoder (the input of the survival heads).

**Features** (:func:`extract_features`), per patient, from one segmenter in one
input mode (a plain CT UNETR in ``"ct"``, PEMMA in ``"ct"`` or ``"ctpet"``,
early fusion in ``"ctpet"``; UNETR or Swin UNETR backbones):

1. *Windows*: ``region="centre"`` (default) takes one window of the model's
   crop size ``roi`` centred on the body (x, y: centroid of the voxels whose
   normalised CT is above 0.1, i.e. HU > -200; z: the middle of the volume) -
   for head-and-neck CT/PET cropped to the neck, as HECKTOR's bounding boxes
   are and the synthetic volumes come, this is where the tumours lie; it costs
   one forward pass.  ``region="volume"`` tiles the whole volume with
   non-overlapping windows (the last flush with the edge).  A volume smaller
   than ``roi`` is padded with each channel's minimum.
2. *Segmentation*: each window goes through the whole model once (eval mode,
   no gradients); its logits give the predicted tumour mask (GTVp or GTVn,
   argmax; outside the windows counts as background).
3. *Encoder features*: a forward hook reads the encoder's last feature map in
   the same pass - UNETR: the ViT's final normalised hidden states (tokens
   after ``vit.norm``, prompts dropped) as a ``(hidden, X/p, Y/p, Z/p)`` map;
   Swin UNETR: the last stage (``layers4``) after the layer norm
   ``proj_out`` applies.  Two poolings over all windows' tokens: the plain mean
   (``enc_mean_*``, context) and the mean weighted by the fraction of each
   token's patch that is predicted tumour (``enc_tumour_*``; when nothing is
   predicted, weighted by the tumour probability ``1 - p(background)``).
4. *Radiomics* (``radiomics=True``): ``log_tumour_ml = log(1 + predicted
   tumour volume in mL)`` (voxel size from the case's ``spacing`` or the CT
   NIfTI header; 1 mm^3 when unknown) and ``tumour_uptake``, the mean of the
   model's normalised input inside the predicted tumour - PET (per-patient
   z-score, so free of each centre's SUV calibration) in modes with PET, CT
   (window [-250, 250] HU -> [0, 1]) in ``"ct"`` mode; where nothing is
   predicted, the value at the most tumour-like voxel.  These two make the
   imaging risk readable by a small head; the PET path is what carries uptake.

So a row has ``2 * width + 2`` values (:func:`feature_names`; UNETR ``width``
= ``hidden_size``, Swin = ``16 * feature_size``).  Deterministic: same model,
same cases -> same array (CPU); windows of several cases share a forward pass
(``batch_size``, several times faster on the CPU than one at a time), which
leaves each case's features unchanged.

**What trains - frozen backbone + LoRA/DoRA**: the image encoder is the
segmentation model as trained (for PEMMA: the frozen CT backbone with its
segmentation-trained LoRA/DoRA and PET parts) and stays frozen; features are
extracted once and only the survival head trains.  A fresh prognosis LoRA on
the encoder is not trained: it would need forward and backward passes through
the encoder for every patient at every Cox step (the partial likelihood couples
the whole cohort), minutes per epoch on the CPU for cohorts this size, for
features that already come from an adapted encoder.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from petite.device import resolve_device
from petite.errors import UserError
from petite.headneck.datalist import load_case
from petite.pemma.segmentation import check_mode, predict, resolve_window, stack_inputs
from petite.pemma.upgrade import PEMMA

#: Where :func:`extract_features` looks: one centred window, or windows tiling the whole volume.
REGIONS: tuple[str, ...] = ("centre", "volume")
#: The two radiomics columns appended to the encoder features.
RADIOMICS: tuple[str, ...] = ("log_tumour_ml", "tumour_uptake")
#: Normalised CT above this is body (HU > -200), for centring the window.
BODY_CT = 0.1


def _backbone(model: nn.Module) -> nn.Module:
    if isinstance(model, PEMMA):
        return model.backbone
    if getattr(model, "accepts_modalities", False):
        raise UserError(f"prognosis features need a segmenter with one encoder (CT UNETR, PEMMA, early fusion), "
                        f"not {type(model).__name__}")
    return model


def _encoder_site(model: nn.Module) -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor], int]:
    """(module whose output is hooked, output -> (B, C, x, y, z) map, C)."""
    bb = _backbone(model)
    name = (getattr(bb, "config", None) or {}).get("name")
    # PEMMA's token design runs CT and PET tokens side by side through the encoder; the features are the
    # sum of the two halves, as the decoder sees them (PEMMA.merge_sequence).
    tokens_design = isinstance(model, PEMMA) and model.fusion_kind == "tokens"
    if name == "unetr":
        feat = tuple(int(f) for f in bb.feat_size)
        n = int(np.prod(feat))

        def to_map(out: torch.Tensor) -> torch.Tensor:
            if tokens_design and out.shape[1] == 2 * n:
                tokens = PEMMA.merge_sequence(out, 2, dim=1)
            else:
                tokens = out[:, -n:]  # VPT prompts (if any) sit in front
            return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *feat)

        return bb.vit.norm, to_map, int(bb.hidden_size)
    if name == "swin_unetr":
        sv = bb.swinViT

        def to_map(out: torch.Tensor) -> torch.Tensor:
            fmap = sv.proj_out(out, True)
            if tokens_design and model.last_parts == 2:  # type: ignore[union-attr]
                fmap = PEMMA.merge_sequence(fmap, 2, dim=-1)
            return fmap

        return sv.layers4[0], to_map, 16 * int(bb.config["feature_size"])
    raise UserError(f"prognosis features need a UNETR or Swin UNETR segmenter, not {name or type(bb).__name__!r}")


def feature_names(model: nn.Module, radiomics: bool = True) -> list[str]:
    """Column names of :func:`extract_features`' rows: ``enc_mean_*``, ``enc_tumour_*``, then :data:`RADIOMICS`."""
    width = _encoder_site(model)[2]
    names = [f"enc_mean_{i}" for i in range(width)] + [f"enc_tumour_{i}" for i in range(width)]
    return names + (list(RADIOMICS) if radiomics else [])


def load_cases(items: Sequence[Mapping[str, Any]], pet_norm: str = "zscore") -> list[dict[str, Any]]:
    """Load datalist items (:func:`~petite.headneck.datalist.load_case`, which gives ``spacing`` in mm)."""
    return [load_case(item, pet_norm=pet_norm) for item in items]


def _window_starts(shape: Sequence[int], roi: Sequence[int], region: str,
                   ct: torch.Tensor) -> list[tuple[int, int, int]]:
    if region == "volume":
        axes = []
        for n, r in zip(shape, roi):
            starts = list(range(0, n - r + 1, r))
            if starts[-1] + r < n:
                starts.append(n - r)
            axes.append(starts)
        return [(a, b, c) for a in axes[0] for b in axes[1] for c in axes[2]]
    body = ct.reshape(ct.shape[-3:]) > BODY_CT
    centre = [(n - 1) / 2 for n in shape]
    if bool(body.any()):
        where = body.nonzero().double().mean(0)
        centre[0], centre[1] = float(where[0]), float(where[1])
    start = tuple(int(np.clip(round(c - (r - 1) / 2), 0, n - r)) for c, r, n in zip(centre, roi, shape))
    return [start]  # type: ignore[list-item]


@dataclass
class _Prepared:
    """One case ready for windowing: padded channels, windows, accumulators."""

    x: torch.Tensor                      # (C, X', Y', Z') padded input channels of the mode
    shape: tuple[int, int, int]          # unpadded shape
    pad_before: list[int]
    starts: list[tuple[int, int, int]]
    spacing: Any
    logits: torch.Tensor                 # (3, X', Y', Z') summed window logits
    count: torch.Tensor                  # (X', Y', Z') windows covering each voxel
    maps: list[torch.Tensor] = field(default_factory=list)  # encoder map of each window


def _prepare(case: Mapping[str, Any], mode: str, roi: tuple[int, int, int], region: str) -> _Prepared:
    x = stack_inputs(case, mode).float()
    if x.ndim != 4:
        raise UserError(f"case {case.get('patient', '?')!r}: expected (C, X, Y, Z) images, got {list(x.shape)}")
    shape = tuple(int(s) for s in x.shape[1:])
    pad_before = [max(r - n, 0) // 2 for r, n in zip(roi, shape)]
    pad_after = [max(r - n, 0) - b for r, n, b in zip(roi, shape, pad_before)]
    pad = (pad_before[2], pad_after[2], pad_before[1], pad_after[1], pad_before[0], pad_after[0])
    ct = stack_inputs(case, "ct").float() if case.get("ct") is not None else x[:1]
    if any(pad):
        x = torch.stack([F.pad(ch, pad, value=float(ch.min())) for ch in x])
        ct = F.pad(ct, pad, value=float(ct.min()))
    padded = tuple(int(s) for s in x.shape[1:])
    return _Prepared(x=x, shape=shape, pad_before=pad_before,  # type: ignore[arg-type]
                     starts=_window_starts(padded, roi, region, ct), spacing=case.get("spacing"),
                     logits=torch.zeros((3, *padded)), count=torch.zeros(padded))


def _finish(prep: _Prepared, mode: str, roi: tuple[int, int, int], radiomics: bool) -> np.ndarray:
    covered = prep.count > 0
    prob = torch.softmax(prep.logits / prep.count.clamp(min=1), dim=0)
    tumour_prob = torch.where(covered, 1.0 - prob[0], torch.zeros_like(prep.count))
    mask = (prob.argmax(0) > 0) & covered

    def pooled(volume: torch.Tensor) -> torch.Tensor:
        """``volume`` averaged onto each window's encoder grid: (W, x, y, z)."""
        windows = [volume[a:a + roi[0], b:b + roi[1], c:c + roi[2]][None, None].float() for a, b, c in prep.starts]
        return torch.stack([F.adaptive_avg_pool3d(w, fmap.shape[1:])[0, 0] for w, fmap in zip(windows, prep.maps)]
                           ).double()

    stacked = torch.stack(prep.maps).double()                              # (W, C, x, y, z)
    mean = stacked.mean(dim=(0, 2, 3, 4))
    w = pooled(mask)
    if float(w.sum()) <= 0:
        w = pooled(tumour_prob)
    tumour = (stacked * w[:, None]).sum(dim=(0, 2, 3, 4)) / float(w.sum()) if float(w.sum()) > 0 else mean
    row = [mean.numpy(), tumour.numpy()]
    if radiomics:
        crop = tuple(slice(b, b + n) for b, n in zip(prep.pad_before, prep.shape))
        inner_mask, inner_prob = mask[crop], tumour_prob[crop]
        voxel_ml = float(np.prod([float(v) for v in prep.spacing])) / 1000.0 if prep.spacing is not None else 1e-3
        volume = float(inner_mask.sum()) * voxel_ml
        channel = prep.x[1 if mode == "ctpet" else 0][crop]
        if bool(inner_mask.any()):
            uptake = float(channel[inner_mask].double().mean())
        else:
            uptake = float(channel.reshape(-1)[int(inner_prob.reshape(-1).argmax())])
        row.append(np.array([math.log1p(volume), uptake]))
    return np.concatenate(row)


@torch.no_grad()
def _group_features(model: nn.Module, cases: Sequence[Mapping[str, Any]], mode: str, roi: tuple[int, int, int],
                    region: str, radiomics: bool, batch_size: int, site: tuple[nn.Module, Callable, int],
                    device: torch.device) -> list[np.ndarray]:
    """Features of a few cases, their windows run through the model ``batch_size`` at a time."""
    module, to_map, _ = site
    prepared = [_prepare(case, mode, roi, region) for case in cases]
    windows = [(k, start) for k, prep in enumerate(prepared) for start in prep.starts]
    captured: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, out: captured.append(to_map(out).float().cpu()))
    try:
        for first in range(0, len(windows), batch_size):
            group = windows[first:first + batch_size]
            batch = torch.stack([prepared[k].x[:, a:a + roi[0], b:b + roi[1], c:c + roi[2]]
                                 for k, (a, b, c) in group]).to(device)
            captured.clear()
            out = predict(model, batch, mode).float().cpu()
            if len(captured) != 1:
                raise RuntimeError(f"expected one encoder output per forward pass, got {len(captured)}")
            for (k, (a, b, c)), window, fmap in zip(group, out, captured[0]):
                prep = prepared[k]
                prep.logits[:, a:a + roi[0], b:b + roi[1], c:c + roi[2]] += window
                prep.count[a:a + roi[0], b:b + roi[1], c:c + roi[2]] += 1
                prep.maps.append(fmap)
    finally:
        handle.remove()
    return [_finish(prep, mode, roi, radiomics) for prep in prepared]


def extract_features(model: nn.Module, cases: Sequence[Mapping[str, Any]], mode: str,
                     roi: int | Sequence[int] | None = None, *, region: str = "centre", radiomics: bool = True,
                     batch_size: int = 8, device: str | torch.device | None = "cpu",
                     progress: bool = False, pet_norm: str = "zscore") -> np.ndarray:
    """Pooled encoder features (+ radiomics) of ``cases`` under ``model`` in ``mode``: ``(n, len(feature_names))``.

    ``cases``: loaded cases (``load_case`` dicts, optional ``spacing``) or
    datalist items with file paths (loaded here with ``pet_norm``, which must be
    the normalisation the model was trained with).  ``roi``: the window (default:
    the model's fixed input size; required for Swin UNETR).  See the module
    docstring for windows, pooling and radiomics.  float32, deterministic.

    Raises:
        UserError: a model without a single encoder (late fusion), a mode the
            model cannot take, a window that does not fit the model.
    """
    check_mode(mode)
    if region not in REGIONS:
        raise UserError(f"unknown feature region {region!r}; choose one of {', '.join(REGIONS)}")
    window = resolve_window(model, roi)
    if int(batch_size) < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    site = _encoder_site(model)
    dev = resolve_device(device)
    model.to(dev)
    was_training = model.training
    model.eval()
    rows: list[np.ndarray] = []
    try:
        for first in tqdm(range(0, len(cases), int(batch_size)), desc=f"features {mode}", disable=not progress,
                          leave=False):
            group = [load_cases([c], pet_norm)[0] if isinstance(c.get("ct"), (str, Path))
                     or isinstance(c.get("pet"), (str, Path)) else c for c in cases[first:first + int(batch_size)]]
            rows.extend(_group_features(model, group, mode, window, region, radiomics, int(batch_size), site, dev))
    finally:
        model.train(was_training)
    width = len(feature_names(model, radiomics))
    return np.asarray(rows, dtype=np.float32).reshape(len(rows), width)


__all__ = ["BODY_CT", "RADIOMICS", "REGIONS", "extract_features", "feature_names", "load_cases"]
