"""The Fig. 4 style error-map figure, on small synthetic volumes."""

from __future__ import annotations

import numpy as np
import pytest

from petite.errors import UserError
from petite.report.figures import error_map_figure, pick_slice


def _volumes(shape=(24, 20, 12)):
    rng = np.random.default_rng(0)
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    long = np.clip(1 - (x**2 + y**2 + (z - 0.2) ** 2), 0, 1).astype(np.float32)
    short = np.clip(long + rng.normal(0, 0.15, shape), 0, 1).astype(np.float32)
    outputs = {name: np.clip(long + rng.normal(0, s, shape), 0, 1).astype(np.float32)
               for name, s in (("No-FT", 0.1), ("Full-FT", 0.03), ("PETITE", 0.04))}
    return short, outputs, long


def test_error_map_figure_writes_png_with_paper_layout(tmp_path):
    import matplotlib.image

    short, outputs, long = _volumes()
    path = tmp_path / "fig" / "error_maps.png"
    info = error_map_figure(path, short, outputs, long, title="synthetic", spacing=(2.0, 2.0, 2.0))
    assert path.is_file() and path.stat().st_size > 5000
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[1] > image.shape[0]  # a wide two-row figure
    assert info["grid"] == [2, 5]
    assert info["columns"] == ["Short scan (input)", "No-FT", "Full-FT", "PETITE", "Long scan (reference)"]
    assert info["slice"] == pick_slice(long)
    assert info["error_max"] > 0
    # Titles carry PSNR, computed here when not given, and ordered as the noise levels.
    psnr = {k: v["psnr"] for k, v in info["metrics"].items()}
    assert psnr["Full-FT"] > psnr["PETITE"] > psnr["No-FT"] > psnr["Short scan (input)"]
    assert not list(path.parent.glob(".*tmp*"))  # written atomically, no temp file left


def test_error_map_figure_uses_given_metrics_and_scale(tmp_path):
    short, outputs, long = _volumes()
    given = {"PETITE": {"psnr": 12.345, "ssim": 0.5}}
    info = error_map_figure(tmp_path / "f.png", short, outputs, long, given, view="coronal", slice_index=3,
                            error_max=0.25)
    assert info["metrics"]["PETITE"]["psnr"] == 12.345
    assert info["slice"] == 3 and info["view"] == "coronal" and info["error_max"] == 0.25


def test_error_map_figure_rejects_bad_input(tmp_path):
    short, outputs, long = _volumes()
    with pytest.raises(UserError, match="shape"):
        error_map_figure(tmp_path / "f.png", short[:-1], outputs, long)
    with pytest.raises(UserError, match="view"):
        error_map_figure(tmp_path / "f.png", short, outputs, long, view="oblique")
    with pytest.raises(UserError, match="slice"):
        error_map_figure(tmp_path / "f.png", short, outputs, long, slice_index=99)
    with pytest.raises(UserError, match="no method"):
        error_map_figure(tmp_path / "f.png", short, {}, long)
    assert not (tmp_path / "f.png").exists()


def test_pick_slice_finds_the_hottest_slice():
    volume = np.zeros((5, 6, 7), np.float32)
    volume[:, :, 4] = 1
    assert pick_slice(volume, "axial") == 4
    volume[1] = 5
    assert pick_slice(volume, "sagittal") == 1
