"""Prognosis run folders: trained heads saved as safetensors + JSON and reloaded exactly.

A folder holds ``heads.safetensors`` (every head's tensors, ``seed<k>.<name>``)
and ``prognosis.json`` (format ``petite-prognosis/1``): the head configuration,
seeds, feature names, PCA, clinical imputation and standardisation statistics,
the training outcome and risks (for the Breslow baseline, the censoring
distribution and the KM threshold), and what the caller adds (the
segmentation run, the input mode...).  Never pickle.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from petite.atomic import atomic_path, write_json
from petite.documents import read_json
from petite.errors import UserError
from petite.prognosis.heads import PrognosisHeads
from petite.prognosis.survival_head import SurvivalHead

HEADS_FILE = "heads.safetensors"
META_FILE = "prognosis.json"
META_FORMAT = "petite-prognosis/1"


def save_heads(heads: PrognosisHeads, folder: str | Path, meta: Mapping[str, Any] | None = None) -> Path:
    """Write ``folder/heads.safetensors`` (every head's tensors, ``seed<k>.<name>``) and ``folder/prognosis.json``.

    The JSON holds the head configuration, seeds, feature names, PCA,
    clinical imputation and standardisation statistics, the training outcome
    and risks (for the Breslow baseline, the censoring distribution and the
    KM threshold) and ``meta`` (e.g. the segmentation run and mode).  Returns the JSON path.
    """
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


__all__ = ["HEADS_FILE", "META_FILE", "META_FORMAT", "load_heads", "save_heads"]
