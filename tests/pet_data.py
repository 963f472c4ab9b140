"""A tiny short/long PET data set on disk, for the engine, sweep and report tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from petite.data.datalist import assign_splits, build_datalist, write_datalist
from petite.data.nifti import make_affine, save_volume

PET_SHAPE = (32, 32, 24)


def make_pet_dataset(root: Path, n: int = 9, seed: int = 0) -> Path:
    """A smooth 'head' (an ellipsoid with texture) on an empty background as the long scan, plus noise as the
    short one; splits 2/1/2/1/2 (+1 spare); returns the datalist."""
    rng = np.random.default_rng(seed)
    items = {}
    affine = make_affine((4.0, 4.0, 4.0), PET_SHAPE)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in PET_SHAPE], indexing="ij"))
    head = (grid**2).sum(axis=0) < 0.7**2
    for i in range(n):
        long = (gaussian_filter(rng.random(PET_SHAPE), 2.0) * 10 + 1) * gaussian_filter(head.astype(float), 1.0)
        short = np.clip(long + rng.normal(0, 0.5, PET_SHAPE), 0, None)
        subject = f"sub{i:02d}"
        save_volume(root / f"{subject}_short.nii.gz", short, affine)
        save_volume(root / f"{subject}_long.nii.gz", long, affine)
        items[subject] = {"short": str(root / f"{subject}_short.nii.gz"), "long": str(root / f"{subject}_long.nii.gz")}
    splits = assign_splits(sorted(items), (2, 1, 2, 1, 2), seed=seed)
    path = root / "datalist.json"
    write_datalist(path, build_datalist(items, splits, "synthetic", seed, root))
    return path
