"""Statistics of a synthetic head-and-neck cohort, from its datalist's ``facts`` (no image is read).

:func:`cohort_summary` answers "how hard is this cohort": tumour volumes
(measured on the label grid, and the drawn nominal volumes where the profile
records them), the distribution of the number of nodes, SUVmax of primaries,
nodes and unlabelled physiological hotspots (how many primaries are no hotter
than the hottest hotspot of the same patient, i.e. where a PET-only reading
is ambiguous), CT contrast of the primaries and the mass effect.  ``petite mm
simulate --summary`` prints it for the cohort it generated.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from petite.headneck.datalist import split_names

QUANTILES: tuple[float, ...] = (0.05, 0.25, 0.5, 0.75, 0.95)


def describe(values: Sequence[float | None]) -> dict[str, Any]:
    """``n``, mean and the :data:`QUANTILES` (keys ``p5`` ... ``p95``) of the non-missing values."""
    data = np.asarray([v for v in values if v is not None], dtype=float)
    if data.size == 0:
        return {"n": 0}
    out: dict[str, Any] = {"n": int(data.size), "mean": round(float(data.mean()), 3)}
    for q in QUANTILES:
        out[f"p{round(q * 100)}"] = round(float(np.quantile(data, q)), 3)
    return out


def _fraction(flags: Sequence[bool]) -> float | None:
    return round(float(np.mean(flags)), 3) if flags else None


def cohort_summary(items: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Summary statistics of datalist items (each with ``facts`` as the generator writes them).

    Works for both profiles; what only the ``hecktor`` profile records
    (nominal volumes, hotspots, CT CNR, mass effect) is ``{"n": 0}`` or
    ``None`` for a default cohort.
    """
    facts = [item["facts"] for item in items]
    lesions = [lesion for f in facts for lesion in f["lesions"]]
    primaries = [lesion for lesion in lesions if lesion["label"] == 1]
    nodes = [lesion for lesion in lesions if lesion["label"] == 2]
    counts = Counter(int(f["n_nodes"]) for f in facts)
    hotspots = [h for f in facts for h in f.get("hotspots", [])]
    profiled = [f for f in facts if "hotspots" in f]
    ambiguous = [f["gtvp_suv_max"] <= f["hotspot_suv_max"] for f in profiled if f.get("hotspot_suv_max") is not None]
    return {
        "patients": len(facts),
        "profiles": sorted({f.get("profile", "default") for f in facts}),
        "gtvp_ml": describe([f["gtvp_ml"] for f in facts]),
        "gtvp_ml_nominal": describe([f.get("gtvp_ml_nominal") for f in facts]),
        "gtvn_ml_per_node": describe([n["volume_ml"] for n in nodes]),
        "gtvn_ml_total_if_any": describe([f["gtvn_ml"] for f in facts if f["n_nodes"] > 0]),
        "node_count": {str(k): counts[k] for k in sorted(counts)},
        "node_free_fraction": _fraction([f["n_nodes"] == 0 for f in facts]),
        "gtvp_suv_max": describe([p["suv_max"] for p in primaries]),
        "gtvp_suv_max_below_4_fraction": _fraction([p["suv_max"] < 4 for p in primaries]),
        "gtvn_suv_max": describe([n["suv_max"] for n in nodes]),
        "hotspot_suv_max": describe([h["suv_max"] for h in hotspots]),
        "hotspots_per_patient": describe([f["n_hotspots"] for f in profiled]),
        "hotspot_kinds": dict(sorted(Counter(h["kind"] for h in hotspots).items())),
        "gtvp_not_hotter_than_a_hotspot_fraction": (
            round(float(np.sum(ambiguous)) / len(profiled), 3) if profiled else None),
        "gtvp_ct_delta_hu": describe([p["ct_delta_hu"] for p in primaries]),
        "gtvp_ct_visible_fraction": _fraction([bool(p["ct_visible"]) for p in primaries]),
        "gtvp_ct_cnr": describe([p.get("ct_cnr") for p in primaries]),
        "push_5mm_mm": describe([lesion.get("push_5mm_mm") for lesion in lesions]),
        "largest_structure_push_mm": describe(
            [f["mass_effect"]["largest_structure_push_mm"] for f in facts if "mass_effect" in f]),
    }


def summarise_datalist(path: str | Path) -> dict[str, Any]:
    """:func:`cohort_summary` of every item of every split of the datalist JSON at ``path``."""
    data = json.loads(Path(path).read_text())
    return cohort_summary(item for name in split_names(data) for item in data[name])


__all__ = ["QUANTILES", "cohort_summary", "describe", "summarise_datalist"]
