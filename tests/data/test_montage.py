"""The dataset montage (petite.data.montage): every label drawn whole, inside the picture."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from petite.data.montage import MontageRow, save_montage


def test_titles_are_not_clipped_at_the_edges(tmp_path: Path) -> None:
    import matplotlib.image

    rng = np.random.default_rng(0)
    # A full-height axial panel (square in mm) under a two-line title: the case that ran off the top.
    rows = [MontageRow("scanner tiny: stiny-0000", rng.random((32, 32, 24)) + 1, rng.random((32, 32, 24)) + 1,
                       (4.0, 4.0, 4.0))]
    path = tmp_path / "montage.png"
    save_montage(path, rows)
    image = matplotlib.image.imread(str(path))[..., :3].max(axis=2)
    assert image.max() > 0.5  # something was drawn
    # A black margin on every side: no glyph (or panel) touches the border.
    border = np.concatenate([image[:2].ravel(), image[-2:].ravel(), image[:, :2].ravel(), image[:, -2:].ravel()])
    assert border.max() == 0.0
