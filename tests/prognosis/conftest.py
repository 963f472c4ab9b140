"""Fixtures of the prognosis tests: the synthetic cohort with outcomes, tiny untrained segmenters and their runs.

Tiny everything: 32^3 synthetic volumes, a tiny UNETR (16^3 windows) and PEMMA on it, untrained
(features only need to be deterministic and well-shaped here).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from petite.pemma.segmentation import build_segmenter
from petite.pemma.upgrade import PEMMA
from tests.headneck.cohort import data, datalist  # noqa: F401  (fixtures)

SIZE = 16


@pytest.fixture(scope="module")
def models() -> dict:
    torch.manual_seed(0)
    ct = build_segmenter("unetr", "tiny", img_size=SIZE).eval()
    base = build_segmenter("unetr", "tiny", img_size=SIZE)
    base.load_state_dict(ct.state_dict())
    # The reference design: PET matters from the start (CT tokens attend to PET tokens; the PET skip is added).
    pemma = PEMMA(base, fingerprint=False).eval()
    return {"ct": ct, "pemma": pemma}


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory, models: dict) -> Path:
    """A ``ct`` and a ``pemma`` run folder in the format :func:`petite.pemma.runs.load_run` reads."""
    from petite.pemma.runs import save_run

    folder = tmp_path_factory.mktemp("runs")
    save_run(folder / "ct", models["ct"], "ct", {"crop": [SIZE] * 3, "pet_norm": "zscore"})
    save_run(folder / "pemma", models["pemma"], "pemma", {"crop": [SIZE] * 3, "pet_norm": "zscore"},
             base_run=folder / "ct")
    return folder
