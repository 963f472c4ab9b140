"""Survival prognosis from the segmentation-adapted CT/PET encoder, optionally fused with clinical data.

PEMMA's second task (BRIEF section 7): the encoder adapted for segmentation
also feeds a survival head.  This module turns a trained segmenter into
per-patient feature vectors, trains Cox heads on them
(:mod:`petite.multimodal.survival`), evaluates them, and runs the demo's
CT / CT+PET / CT+PET+clinical comparison.

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

**Heads** (:func:`train_prognosis`): one :class:`~petite.multimodal.survival.SurvivalHead`
per seed (seed = initialisation and dropout masks), full-batch AdamW on the Cox
partial likelihood (Efron ties), 60 epochs by default: with tens of training
patients, stopping early regularises the clinical MLP better than training
longer (on the synthetic cohort 30-60 epochs beat 100-150 for every setting
with clinical variables, and cost less).  Inputs: the radiomics columns as they are
plus the encoder columns reduced by PCA to ``deep_components`` scores (fitted
on the training patients; pooled encoder features have hundreds of columns and
a cohort has tens to hundreds of patients), all standardised inside the head;
with ``use_clinical`` also the eight clinical variables, imputed (median/mode)
and standardised with training statistics
(:func:`~petite.multimodal.clinical.impute`, :func:`~petite.multimodal.clinical.clinical_matrix`).
The statistics are saved with the heads (:func:`save_heads`).

**Evaluation** (:func:`evaluate_prognosis`): Harrell's C-index of each seed's
risk and of the ensemble (mean risk over seeds), the integrated Brier score
(IPCW, censoring distribution and Breslow baseline from the training data) on
40 times evenly spaced between the 10th and 80th percentiles of the evaluated
patients' times (kept where the training censoring survival is positive), and
Kaplan-Meier curves of the predicted low/high-risk halves (threshold: the
training patients' median ensemble risk) with the log-rank p-value, as PNG.

**Demo step** (:func:`demo_step`): see its docstring.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from petite.atomic import atomic_path, write_json, write_text
from petite.errors import UserError
from petite.multimodal.clinical import VARIABLES, clinical_matrix, impute
from petite.multimodal.segmentation import check_mode, predict, resolve_window, stack_inputs
from petite.multimodal.survival import (
    SurvivalHead,
    breslow_baseline,
    concordance_index,
    fit_survival_head,
    integrated_brier_score,
    kaplan_meier,
    km_figure,
    logrank_test,
    predict_risk,
    step_value,
    survival_function,
)

#: Where :func:`extract_features` looks: one centred window, or windows tiling the whole volume.
REGIONS: tuple[str, ...] = ("centre", "volume")
#: The two radiomics columns appended to the encoder features.
RADIOMICS: tuple[str, ...] = ("log_tumour_ml", "tumour_uptake")
#: Normalised CT above this is body (HU > -200), for centring the window.
BODY_CT = 0.1
#: The demo's three settings: name -> (features of which model, mode, with clinical variables).
DEMO_SETTINGS: dict[str, tuple[str, str, bool]] = {
    "CT": ("ct", "ct", False),
    "CT+PET": ("pemma", "ctpet", False),
    "CT+PET+clinical": ("pemma", "ctpet", True),
}
HEADS_FILE = "heads.safetensors"
META_FILE = "prognosis.json"
META_FORMAT = "petite-prognosis/1"


# ----------------------------------------------------------------------------- features


def _backbone(model: nn.Module) -> nn.Module:
    from petite.multimodal.upgrade import PEMMA

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
    if name == "unetr":
        feat = tuple(int(f) for f in bb.feat_size)
        n = int(np.prod(feat))

        def to_map(out: torch.Tensor) -> torch.Tensor:
            tokens = out[:, -n:]  # VPT prompts (if any) sit in front
            return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *feat)

        return bb.vit.norm, to_map, int(bb.hidden_size)
    if name == "swin_unetr":
        sv = bb.swinViT

        def to_map(out: torch.Tensor) -> torch.Tensor:
            return sv.proj_out(out, True)

        return sv.layers4[0], to_map, 16 * int(bb.config["feature_size"])
    raise UserError(f"prognosis features need a UNETR or Swin UNETR segmenter, not {name or type(bb).__name__!r}")


def feature_names(model: nn.Module, radiomics: bool = True) -> list[str]:
    """Column names of :func:`extract_features`' rows: ``enc_mean_*``, ``enc_tumour_*``, then :data:`RADIOMICS`."""
    width = _encoder_site(model)[2]
    names = [f"enc_mean_{i}" for i in range(width)] + [f"enc_tumour_{i}" for i in range(width)]
    return names + (list(RADIOMICS) if radiomics else [])


def _spacing_of(item: Mapping[str, Any]) -> list[float] | None:
    import nibabel as nib

    try:
        img = nib.as_closest_canonical(nib.load(str(item["ct"])))
        return [float(s) for s in img.header.get_zooms()[:3]]
    except Exception:  # the CT was read by load_case already; spacing is only a nicety
        return None


def load_cases(items: Sequence[Mapping[str, Any]], pet_norm: str = "zscore") -> list[dict[str, Any]]:
    """Load datalist items (:func:`~petite.multimodal.datalist.load_case`) with ``spacing`` (mm) added."""
    from petite.multimodal.datalist import load_case

    cases = []
    for item in items:
        case = load_case(item, pet_norm=pet_norm)
        if case.get("spacing") is None:
            case["spacing"] = _spacing_of(item)
        cases.append(case)
    return cases


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
    from tqdm import tqdm

    from petite.device import resolve_device

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


# ----------------------------------------------------------------------------- heads


def _outcome(time_days: Any, event: Any, what: str = "training") -> tuple[np.ndarray, np.ndarray]:
    try:
        t = np.asarray(time_days, dtype=float).reshape(-1)
        e = np.asarray(event, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise UserError(f"every {what} patient needs a relapse-free survival time (RFS) and Relapse "
                        f"(0/1); some are missing") from None
    if t.shape != e.shape:
        raise UserError(f"{t.size} times but {e.size} events")
    if not np.all(np.isfinite(t)) or np.any(t <= 0):
        raise UserError(f"every {what} patient needs a positive RFS time; some are missing or not positive")
    if not np.all(np.isin(e, (0.0, 1.0))):
        raise UserError(f"Relapse must be 0 or 1 for every {what} patient")
    return t, e.astype(int)


def outcome_of(records: Sequence[Mapping[str, Any] | None], patients: Sequence[str] | None = None,
               what: str = "training") -> tuple[np.ndarray, np.ndarray]:
    """``(time, event)`` arrays from clinical records; UserError naming the first patient without them."""
    times, events = [], []
    for k, record in enumerate(records):
        who = patients[k] if patients is not None else str(k)
        if not record or record.get("time") is None or record.get("event") is None:
            raise UserError(f"patient {who!r} has no relapse-free survival (RFS) and Relapse in its clinical "
                            f"record; {what} needs both")
        times.append(record["time"])
        events.append(record["event"])
    return _outcome(times, events, what)


def _check_records(records: Sequence[Mapping[str, Any] | None], patients: Sequence[str] | None = None) -> None:
    for k, record in enumerate(records):
        who = patients[k] if patients is not None else str(k)
        if not isinstance(record, Mapping) or not any(v in record for v in VARIABLES):
            raise UserError(f"patient {who!r} has no parsed clinical record (keys {', '.join(VARIABLES)}); "
                            "import with a HECKTOR clinical CSV that has these columns, or give --clinical-csv")


def _pca_fit(deep: np.ndarray, k: int) -> dict[str, Any]:
    mean = deep.mean(axis=0)
    centred = deep - mean
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    k = int(min(k, vt.shape[0]))
    components = vt[:k]
    signs = np.sign(components[np.arange(k), np.abs(components).argmax(axis=1)])
    components = components * np.where(signs == 0, 1.0, signs)[:, None]
    return {"mean": mean.tolist(), "components": components.tolist()}


@dataclass
class PrognosisHeads:
    """Trained survival heads (one per seed) and everything needed to apply them to new patients.

    Build with :func:`train_prognosis`; save with :func:`save_heads`, load with :func:`load_heads`.
    """

    heads: list[SurvivalHead]
    seeds: list[int]
    feature_names: list[str]
    use_imaging: bool
    use_clinical: bool
    clinical_columns: list[str]
    imputation: dict[str, Any] | None
    scaling: dict[str, Any] | None
    reduction: dict[str, Any] | None
    train_time: np.ndarray
    train_event: np.ndarray
    train_risk: np.ndarray
    options: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)

    def imaging_matrix(self, features: Any) -> np.ndarray | None:
        """The head's imaging input: radiomics columns as given, encoder columns as PCA scores."""
        if not self.use_imaging:
            return None
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.feature_names):
            raise UserError(f"features must have {len(self.feature_names)} columns (as at training), "
                            f"got shape {list(x.shape)}")
        if self.reduction is None:
            return x.astype(np.float32)
        deep_cols = self.reduction["deep_columns"]
        keep = [i for i in range(x.shape[1]) if i not in set(deep_cols)]
        scores = (x[:, deep_cols] - np.asarray(self.reduction["mean"])) @ np.asarray(self.reduction["components"]).T
        return np.concatenate([scores, x[:, keep]], axis=1).astype(np.float32)

    def clinical_input(self, records: Sequence[Mapping[str, Any]] | None,
                       patients: Sequence[str] | None = None) -> np.ndarray | None:
        """The head's clinical input: records imputed and standardised with the training statistics."""
        if not self.use_clinical:
            return None
        if records is None:
            raise UserError("these heads use clinical variables; give the patients' clinical records")
        _check_records(records, patients)
        keyed = {str(k): dict(r) for k, r in enumerate(records)}
        imputed, _ = impute(keyed, reference=self.imputation)
        matrix, _ = clinical_matrix(imputed, self.clinical_columns, scaling=self.scaling)
        return matrix

    def predict(self, features: Any, records: Sequence[Mapping[str, Any]] | None = None,
                patients: Sequence[str] | None = None) -> np.ndarray:
        """Risk (log relative hazard) of each head: ``(n_seeds, n)``."""
        x = self.imaging_matrix(features)
        c = self.clinical_input(records, patients)
        return np.stack([predict_risk(head, x, c) for head in self.heads])


def train_prognosis(features: Any, clinical: Sequence[Mapping[str, Any]] | None, time: Any, event: Any, *,
                    use_clinical: bool = False, use_imaging: bool = True, seeds: Sequence[int] = (0,),
                    names: Sequence[str] | None = None, clinical_columns: Sequence[str] = VARIABLES,
                    deep_components: int | None = 8, hidden: int = 16, dropout: float = 0.3, epochs: int = 60,
                    lr: float = 3e-3, weight_decay: float = 1e-2,
                    patients: Sequence[str] | None = None) -> PrognosisHeads:
    """Train one survival head per seed on ``features`` (n, d) and/or the ``clinical`` records.

    ``time`` (days, > 0) and ``event`` (0/1) are the training outcome.  ``names``:
    the feature column names (default :data:`RADIOMICS` for the last two columns
    and encoder columns before them, as :func:`extract_features` makes them);
    encoder columns are reduced to ``deep_components`` PCA scores (``None``:
    no reduction).  ``use_clinical``: fuse the ``clinical_columns`` of the
    records (imputed and standardised, statistics fitted here).
    See the module docstring.

    Raises:
        UserError: no inputs chosen, mismatched lengths, missing outcome or clinical records, no event.
    """
    if not use_imaging and not use_clinical:
        raise UserError("choose imaging features, clinical variables or both")
    t, e = _outcome(time, event)
    n = t.size
    if n < 2 or e.sum() < 1:
        raise UserError(f"training needs at least 2 patients and 1 relapse, got {n} patients and {int(e.sum())}")
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise UserError(f"seeds must be distinct integers, got {seeds}")
    x_raw = np.asarray(features, dtype=np.float64) if use_imaging else np.zeros((n, 0))
    if use_imaging and (x_raw.ndim != 2 or x_raw.shape[0] != n):
        raise UserError(f"features must be (n patients, columns) with n = {n}, got {list(x_raw.shape)}")
    if names is None:
        width = x_raw.shape[1]
        names = [f"f{i}" for i in range(max(width - 2, 0))] + list(RADIOMICS)[: min(2, width)]
    names = list(names)
    if use_imaging and len(names) != x_raw.shape[1]:
        raise UserError(f"{len(names)} feature names for {x_raw.shape[1]} columns")
    reduction = None
    if use_imaging and deep_components:
        deep_cols = [i for i, name in enumerate(names) if name not in RADIOMICS]
        if len(deep_cols) > int(deep_components):
            reduction = {"deep_columns": deep_cols, "n_components": int(deep_components),
                         **_pca_fit(x_raw[:, deep_cols], int(deep_components))}
    imputation = scaling = None
    columns = list(clinical_columns)
    if use_clinical:
        if clinical is None or len(clinical) != n:
            raise UserError(f"use_clinical needs one clinical record per patient ({n})")
        _check_records(clinical, patients)
        _, imputation = impute({str(k): dict(r) for k, r in enumerate(clinical)})
        imputed, _ = impute({str(k): dict(r) for k, r in enumerate(clinical)}, reference=imputation)
        _, scaling = clinical_matrix(imputed, columns)
    model = PrognosisHeads(heads=[], seeds=seeds, feature_names=names if use_imaging else [], use_imaging=use_imaging,
                           use_clinical=use_clinical, clinical_columns=columns, imputation=imputation,
                           scaling=scaling, reduction=reduction, train_time=t, train_event=e,
                           train_risk=np.zeros((0, n)),
                           options={"hidden": int(hidden), "dropout": float(dropout), "epochs": int(epochs),
                                    "lr": float(lr), "weight_decay": float(weight_decay),
                                    "deep_components": deep_components})
    x = model.imaging_matrix(x_raw) if use_imaging else None
    c = model.clinical_input(clinical, patients) if use_clinical else None
    risks = []
    for seed in seeds:
        head = SurvivalHead(0 if x is None else x.shape[1], 0 if c is None else c.shape[1], hidden=int(hidden),
                            dropout=float(dropout))
        info = fit_survival_head(head, x, c, t, e, epochs=int(epochs), lr=float(lr),
                                 weight_decay=float(weight_decay), seed=seed)
        model.heads.append(head)
        model.history.append({"seed": seed, "final_loss": info["final_loss"], "train_c_index": info["train_c_index"]})
        risks.append(predict_risk(head, x, c))
    model.train_risk = np.stack(risks)
    return model


# ----------------------------------------------------------------------------- evaluation


def brier_times(time_days: np.ndarray, train_time: np.ndarray, train_event: np.ndarray, n: int = 40) -> np.ndarray:
    """The IBS grid: ``n`` times from the 10th to the 80th percentile of ``time_days``, where G_train > 0."""
    lo, hi = np.quantile(time_days, 0.1), np.quantile(time_days, 0.8)
    if not hi > lo:
        return np.zeros(0)
    grid = np.linspace(lo, hi, n)
    g_times, g_values = kaplan_meier(train_time, 1 - np.asarray(train_event))
    return grid[(step_value(g_times, g_values, grid) > 0) & (grid < train_time.max())]


def _ibs(heads: PrognosisHeads, risk: np.ndarray, t: np.ndarray, e: np.ndarray, grid: np.ndarray) -> tuple[list, float]:
    """Per-seed IBS and the ensemble's (mean survival curve over seeds)."""
    if grid.size < 2:
        return [math.nan] * len(heads.heads), math.nan
    curves = []
    for k in range(len(heads.heads)):
        baseline = breslow_baseline(heads.train_time, heads.train_event, heads.train_risk[k])
        curves.append(survival_function(baseline, risk[k], grid))
    kw = {"train_time": heads.train_time, "train_event": heads.train_event}
    per_seed = [integrated_brier_score(t, e, s, grid, **kw) for s in curves]
    return per_seed, integrated_brier_score(t, e, np.mean(curves, axis=0), grid, **kw)


def _c_index(t: np.ndarray, risk: np.ndarray, e: np.ndarray) -> float:
    try:
        return concordance_index(t, risk, e)
    except ValueError:
        return math.nan


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return math.nan, math.nan
    return float(np.mean(finite)), float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0


def evaluate_prognosis(heads: PrognosisHeads, features: Any, clinical: Sequence[Mapping[str, Any]] | None,
                       time: Any, event: Any, *, km_png: str | Path | None = None,
                       title: str = "Kaplan-Meier by predicted risk",
                       patients: Sequence[str] | None = None) -> dict[str, Any]:
    """C-index, IBS, KM PNG and log-rank p of ``heads`` on new patients (see the module docstring).

    Returns ``{"c_index" (ensemble), "c_index_per_seed", "c_index_mean", "c_index_std", "ibs" (ensemble),
    "ibs_per_seed", "ibs_mean", "ibs_std", "km_png" (path or None), "logrank_p", "threshold", "n",
    "events", "risk" (ensemble, list)}``.  NaN where a measure is undefined (no comparable pair;
    too few distinct times for the IBS grid).
    """
    t, e = _outcome(time, event, "evaluated")
    risk = heads.predict(features, clinical, patients)
    if risk.shape[1] != t.size:
        raise UserError(f"{risk.shape[1]} patients' features but {t.size} outcomes")
    ensemble = risk.mean(axis=0)
    per_seed = [_c_index(t, r, e) for r in risk]
    grid = brier_times(t, heads.train_time, heads.train_event)
    ibs_seed, ibs = _ibs(heads, risk, t, e, grid)
    c_mean, c_std = _mean_std(per_seed)
    i_mean, i_std = _mean_std(ibs_seed)
    out: dict[str, Any] = {
        "n": int(t.size), "events": int(e.sum()),
        "c_index": _c_index(t, ensemble, e), "c_index_per_seed": per_seed, "c_index_mean": c_mean,
        "c_index_std": c_std, "ibs": ibs, "ibs_per_seed": ibs_seed, "ibs_mean": i_mean, "ibs_std": i_std,
        "ibs_times": [float(grid[0]), float(grid[-1])] if grid.size else None,
        "km_png": None, "logrank_p": math.nan, "threshold": None, "risk": ensemble.tolist(),
    }
    threshold = float(np.median(heads.train_risk.mean(axis=0)))
    if (ensemble > threshold).all() or not (ensemble > threshold).any():
        threshold = float(np.median(ensemble))
    high = ensemble > threshold
    if high.any() and not high.all():
        out["threshold"] = threshold
        out["logrank_p"] = logrank_test(t[~high], e[~high], t[high], e[high])[1]
        if km_png is not None:
            out["km_png"] = km_figure(km_png, t, e, ensemble, threshold=threshold, title=title)["path"]
    return out


# ----------------------------------------------------------------------------- saving


def save_heads(heads: PrognosisHeads, folder: str | Path, meta: Mapping[str, Any] | None = None) -> Path:
    """Write ``folder/heads.safetensors`` (every head's tensors, ``seed<k>.<name>``) and ``folder/prognosis.json``.

    The JSON holds the head configuration, seeds, feature names, PCA,
    clinical imputation and standardisation statistics, the training outcome
    and risks (for the Breslow baseline, the censoring distribution and the
    KM threshold) and ``meta`` (e.g. the segmentation run and mode).  Returns the JSON path.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"seed{k}.{name}": value.detach().cpu().contiguous().clone()
               for k, head in enumerate(heads.heads) for name, value in head.state_dict().items()}
    with atomic_path(folder / HEADS_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"format": META_FORMAT})
    data = {
        "format": META_FORMAT, "weights": HEADS_FILE, "seeds": heads.seeds,
        "head": heads.heads[0].config if heads.heads else None,
        "use_imaging": heads.use_imaging, "use_clinical": heads.use_clinical,
        "feature_names": heads.feature_names, "clinical_columns": heads.clinical_columns,
        "imputation": heads.imputation, "scaling": heads.scaling, "reduction": heads.reduction,
        "train": {"time": heads.train_time.tolist(), "event": heads.train_event.tolist(),
                  "risk": heads.train_risk.tolist()},
        "options": heads.options, "history": heads.history, **dict(meta or {}),
    }
    path = folder / META_FILE
    write_json(path, data)
    return path


def load_heads(folder: str | Path) -> tuple[PrognosisHeads, dict[str, Any]]:
    """Read what :func:`save_heads` wrote: ``(heads, the JSON dict)``; UserError naming the file on problems."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from petite.documents import read_json

    folder = Path(folder)
    meta_path, weights = folder / META_FILE, folder / HEADS_FILE
    if not meta_path.is_file():
        raise UserError(f"not a prognosis run folder (no {META_FILE})", folder)
    meta = read_json(meta_path, "prognosis run")
    if not isinstance(meta, dict) or meta.get("format") != META_FORMAT:
        raise UserError(f"not a prognosis run description (format {META_FORMAT!r} expected)", meta_path)
    try:
        tensors = load_file(str(weights))
    except FileNotFoundError:
        raise UserError("prognosis head weights not found", weights) from None
    except (SafetensorError, OSError) as err:
        raise UserError(f"cannot read prognosis head weights: {err}", weights) from None
    heads = []
    try:
        for k, _ in enumerate(meta["seeds"]):
            head = SurvivalHead(**meta["head"])
            prefix = f"seed{k}."
            head.load_state_dict({n[len(prefix):]: v for n, v in tensors.items() if n.startswith(prefix)}, strict=True)
            head.eval()
            heads.append(head)
        train = meta["train"]
        model = PrognosisHeads(
            heads=heads, seeds=list(meta["seeds"]), feature_names=list(meta["feature_names"]),
            use_imaging=bool(meta["use_imaging"]), use_clinical=bool(meta["use_clinical"]),
            clinical_columns=list(meta["clinical_columns"]), imputation=meta["imputation"], scaling=meta["scaling"],
            reduction=meta["reduction"], train_time=np.asarray(train["time"], dtype=float),
            train_event=np.asarray(train["event"], dtype=int), train_risk=np.asarray(train["risk"], dtype=float),
            options=dict(meta.get("options", {})), history=list(meta.get("history", [])))
    except (KeyError, TypeError, RuntimeError, ValueError) as err:
        raise UserError(f"prognosis run does not fit its weights ({type(err).__name__}: {err})", meta_path) from None
    return model, meta


# ----------------------------------------------------------------------------- the demo step


def stratified_folds(event: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold index (0..k-1) of every patient: events and censored patients dealt round-robin after a seeded shuffle."""
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(7,)))
    fold = np.zeros(event.size, dtype=int)
    offset = 0
    for value in (1, 0):
        members = np.flatnonzero(event == value)
        rng.shuffle(members)
        fold[members] = (np.arange(members.size) + offset) % k
        offset += members.size
    return fold


def cross_validate(features: np.ndarray | None, records: Sequence[Mapping[str, Any]], time_days: np.ndarray,
                   event: np.ndarray, *, use_clinical: bool, seeds: Sequence[int], folds: int = 3,
                   **train_args: Any) -> dict[str, Any]:
    """Repeated stratified k-fold CV: per seed, fresh folds and head initialisation; test measures per fold.

    Returns ``{"c_index": [per seed: mean over folds], "ibs": [...], "oof_risk": seed 0's out-of-fold
    risks, each fold's standardised by its training risks}``.
    """
    use_imaging = features is not None
    dummy = np.zeros((time_days.size, 0))
    c_seed, ibs_seed, oof = [], [], np.zeros(time_days.size)
    for n_seed, seed in enumerate(seeds):
        fold = stratified_folds(event, folds, seed)
        c_fold, ibs_fold = [], []
        for f in range(folds):
            train, test = fold != f, fold == f
            heads = train_prognosis(features[train] if use_imaging else dummy[train],
                                    [records[i] for i in np.flatnonzero(train)], time_days[train], event[train],
                                    use_clinical=use_clinical, use_imaging=use_imaging, seeds=[seed], **train_args)
            result = evaluate_prognosis(heads, features[test] if use_imaging else dummy[test],
                                        [records[i] for i in np.flatnonzero(test)], time_days[test], event[test])
            c_fold.append(result["c_index"])
            ibs_fold.append(result["ibs"])
            if n_seed == 0:
                ref = heads.train_risk.mean(axis=0)
                oof[test] = (np.asarray(result["risk"]) - ref.mean()) / max(float(ref.std()), 1e-12)
        c_seed.append(float(np.nanmean(c_fold)))
        ibs_seed.append(float(np.nanmean(ibs_fold)))
    return {"c_index": c_seed, "ibs": ibs_seed, "oof_risk": oof}


def _finite(value: Any) -> Any:
    """``value`` with NaN floats as ``None`` (strict JSON)."""
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _fmt(mean: float, std: float, digits: int = 3) -> str:
    return "n/a" if math.isnan(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _table(rows: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
    header = ["Setting", "Features", "C-index", "IBS", "Seeds"]
    body = [[r["setting"], r["features"], _fmt(r["c_index_mean"], r["c_index_std"]),
             _fmt(r["ibs_mean"], r["ibs_std"]), str(len(r["c_index"]))] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths)) for b in body]
    markdown = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    markdown += ["| " + " | ".join(b) + " |" for b in body]
    return "\n".join(lines), "\n".join(markdown)


def _cohort(out_dir: Path, datalist: Mapping[str, Any], n_patients: int, echo: Callable[[str], None]
            ) -> tuple[list[dict[str, Any]], str]:
    """The prognosis cohort: the datalist's patients if it has enough with outcomes, else a simulated one."""
    from petite.multimodal.datalist import read_mm_datalist, split_names

    patients = [item for name in split_names(datalist) for item in datalist[name]]
    with_outcome = [i for i in patients if isinstance(i.get("clinical"), dict)
                    and i["clinical"].get("time") is not None and i["clinical"].get("event") is not None]
    if len(with_outcome) >= n_patients:
        return with_outcome, f"the datalist's {len(with_outcome)} patients with outcomes"
    if datalist.get("source") != "petite.multimodal.synthetic":
        if len(with_outcome) < 12:
            raise UserError(f"only {len(with_outcome)} patients have a survival outcome; prognosis needs more")
        return with_outcome, f"the datalist's {len(with_outcome)} patients with outcomes"
    from petite.multimodal.synthetic import simulate_hn

    centres = list(datalist["centres"])
    per_centre = int(math.ceil(n_patients / len(centres)))
    seed = int(datalist.get("seed", 0)) + 1000
    size = datalist.get("size", "small")
    folder = out_dir / "prognosis_data"
    echo(f"prognosis: simulating a cohort of {per_centre * len(centres)} new patients "
         f"({per_centre} per centre {', '.join(centres)}, size {size}, seed {seed}) in {folder}")
    path = simulate_hn(folder, centres=centres, n_patients=per_centre, seed=seed,
                       size=size if isinstance(size, str) else tuple(size))
    cohort = read_mm_datalist(path)
    items = [item for name in split_names(cohort) for item in cohort[name]]
    return items, (f"{len(items)} new synthetic patients ({per_centre} per centre {', '.join(centres)}, "
                   f"seed {seed}, size {size}) in prognosis_data/, not used for segmentation training")


def demo_step(out_dir: str | Path, datalist: str | Path | Mapping[str, Any], models: Mapping[str, nn.Module],
              echo: Callable[[str], None] = print, *, n_patients: int = 90, seeds: Sequence[int] = (0, 1, 2, 3, 4),
              folds: int = 3, roi: int | Sequence[int] | None = None, region: str = "centre",
              references: bool = True, pet_norm: str = "zscore", epochs: int = 60,
              quick: bool = False) -> dict[str, Any]:
    """The demo's prognosis comparison: CT, CT+PET and CT+PET+clinical survival heads on a frozen encoder.

    Cohort: the demo's datalist has too few patients for survival (a C-index
    on a handful of test patients is noise), so unless it holds at least
    ``n_patients`` with outcomes, ``n_patients`` *new* synthetic patients are
    simulated from the same centres, at the same size, with the datalist's
    seed + 1000 (not the segmentation training patients) into
    ``out_dir/prognosis_data``.  Features: ``models["ct"]`` (the CT-only
    segmenter) in ``"ct"`` mode and ``models["pemma"]`` in ``"ctpet"`` mode,
    extracted once per model (:func:`extract_features`, ``region``) and reused
    across seeds.  Evaluation: for each seed, stratified ``folds``-fold
    cross-validation over the whole cohort (folds drawn from the seed; head
    initialisation from the seed); a seed's C-index and IBS are the means over
    its folds; the table gives mean ± std over ``seeds``.  ``references``
    adds two rows for reading the table: clinical variables alone and the
    oracle (the true linear predictor of the hazard model, synthetic data only; no training).
    Writes ``out_dir/report/prognosis_km.png`` (CT+PET+clinical, seed 0's
    out-of-fold risks, median split), ``prognosis.json`` and ``prognosis.md``.
    ``quick`` (the demo's smoke test): at most 24 patients, 2 seeds, 2 folds, 30 epochs.

    Returns ``{"rows", "table", "markdown", "km_png", "logrank_p", "cohort", "seconds", ...}``.
    """
    from petite.multimodal.datalist import read_mm_datalist

    started = time.perf_counter()
    if quick:
        n_patients, seeds, folds, epochs = min(int(n_patients), 24), list(seeds)[:2], 2, min(int(epochs), 30)
    out_dir = Path(out_dir)
    data = read_mm_datalist(datalist) if isinstance(datalist, (str, Path)) else datalist
    for key in ("ct", "pemma"):
        if key not in models:
            raise UserError(f"demo_step needs models['ct'] and models['pemma']; missing {key!r}")
    seeds = [int(s) for s in seeds]
    items, cohort = _cohort(out_dir, data, int(n_patients), echo)
    patients = [str(i["patient"]) for i in items]
    records = [dict(i["clinical"]) for i in items]
    t, e = outcome_of(records, patients)
    echo(f"prognosis: {len(items)} patients, {int(e.sum())} relapses; loading volumes")
    cases = load_cases(items, pet_norm)
    seconds: dict[str, float] = {"cohort": time.perf_counter() - started}
    features: dict[str, np.ndarray] = {}
    names: dict[str, list[str]] = {}
    for key, mode in (("ct", "ct"), ("pemma", "ctpet")):
        tick = time.perf_counter()
        features[key] = extract_features(models[key], cases, mode, roi, region=region)
        names[key] = feature_names(models[key])
        seconds[f"features_{key}"] = time.perf_counter() - tick
        echo(f"prognosis: {key} features ({mode}) {features[key].shape[1]} columns in "
             f"{seconds[f'features_{key}']:.1f} s")
    del cases
    tick = time.perf_counter()
    settings = [(name, *DEMO_SETTINGS[name]) for name in DEMO_SETTINGS]
    if references:
        settings.append(("clinical only (reference)", None, None, True))
    rows: list[dict[str, Any]] = []
    oof: dict[str, np.ndarray] = {}
    for name, key, mode, use_clinical in settings:
        feats = features[key] if key else None
        result = cross_validate(feats, records, t, e, use_clinical=use_clinical, seeds=seeds, folds=folds,
                                epochs=int(epochs), **({"names": names[key]} if key else {}))
        described = (f"{key} model, {mode} mode" if key else "none") + (" + clinical" if use_clinical else "")
        c_mean, c_std = _mean_std(result["c_index"])
        i_mean, i_std = _mean_std(result["ibs"])
        rows.append({"setting": name, "features": described, "c_index": result["c_index"], "ibs": result["ibs"],
                     "c_index_mean": c_mean, "c_index_std": c_std, "ibs_mean": i_mean, "ibs_std": i_std})
        oof[name] = result["oof_risk"]
        echo(f"prognosis: {name}: C-index {_fmt(c_mean, c_std)}, IBS {_fmt(i_mean, i_std)}")
    if references and all(isinstance(i.get("facts", {}).get("hazard"), dict) for i in items):
        eta = np.array([i["facts"]["hazard"]["eta"] for i in items], dtype=float)
        c_oracle = []
        for seed in seeds:
            fold = stratified_folds(e, folds, seed)
            c_oracle.append(float(np.nanmean([_c_index(t[fold == f], eta[fold == f], e[fold == f])
                                              for f in range(folds)])))
        c_mean, c_std = _mean_std(c_oracle)
        rows.append({"setting": "oracle (true hazard, reference)", "features": "true linear predictor",
                     "c_index": c_oracle, "ibs": [math.nan] * len(seeds), "c_index_mean": c_mean,
                     "c_index_std": c_std, "ibs_mean": math.nan, "ibs_std": math.nan})
    seconds["heads"] = time.perf_counter() - tick
    report = out_dir / "report"
    report.mkdir(parents=True, exist_ok=True)
    km_png = report / "prognosis_km.png"
    km = km_figure(km_png, t, e, oof["CT+PET+clinical"], threshold=float(np.median(oof["CT+PET+clinical"])),
                   title=f"CT+PET+clinical, out-of-fold risk (seed {seeds[0]}, {folds}-fold CV)")
    table, markdown = _table(rows)
    seconds["total"] = time.perf_counter() - started
    note = (f"Relapse-free survival, {cohort}; {int(e.sum())} relapses. Survival heads on frozen encoder features "
            f"(window region {region!r}), {folds}-fold stratified CV repeated over seeds {seeds}; "
            f"mean ± std over seeds of the per-seed mean over folds. Higher C-index, lower IBS is better.")
    result = {"rows": rows, "table": table, "markdown": markdown, "note": note, "km_png": str(km_png),
              "logrank_p": km["p_value"], "cohort": cohort, "n": len(items), "events": int(e.sum()),
              "seeds": seeds, "folds": folds, "region": region, "seconds": seconds}
    write_json(report / "prognosis.json", _finite(result))
    write_text(report / "prognosis.md", f"## Prognosis\n\n{markdown}\n\n{note}\n")
    echo(f"prognosis: done in {seconds['total']:.0f} s\n{table}")
    return result


__all__ = [
    "DEMO_SETTINGS", "RADIOMICS", "REGIONS", "PrognosisHeads", "cross_validate", "demo_step", "evaluate_prognosis",
    "extract_features", "feature_names", "load_cases", "load_heads", "outcome_of", "save_heads",
    "stratified_folds", "train_prognosis",
]
