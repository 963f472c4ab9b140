"""MONAI dictionary transforms and datasets: datalist items -> training/evaluation tensors.

The chain, for an item ``{"subject", "short", "long"}`` or ``{"subject", "frames"}``:

1. ``LoadImaged`` (nibabel reader) -> MetaTensors carrying the affine;
2. ``EnsureChannelFirstd`` -> ``(1, X, Y, Z)``; 4D frames become ``(T, X, Y, Z)``;
3. ``Orientationd`` to RAS, so every scanner's volumes share the axis convention;
4. :class:`FramesToShortLongd`: ``short`` = frame 0, ``long`` = mean of the frames
   (the ADNI protocol, BRIEF section 2); pairs pass through unchanged;
5. :class:`RecordRanged`: the original ``min``/``max`` of ``short`` and ``long`` are kept as
   ``short_min``, ``short_max``, ``long_min``, ``long_max`` so a prediction on the
   [0, 1] scale can be mapped back with :func:`unscale`;
6. ``ScaleIntensityd(minv=0, maxv=1)``: each of ``short`` and ``long`` is min-max
   scaled to [0, 1] by *its own* range.  This is the paper's pre-processing: it
   removes the scanner- and dose-dependent intensity scale; metrics are computed
   on this scale;
7. training only: ``SpatialPadd`` (volumes smaller than the crop are zero-padded,
   zero being the scaled background) then ``RandSpatialCropd`` of ``crop_size``
   (the same box for ``short`` and ``long``); evaluation keeps whole volumes;
8. ``EnsureTyped`` -> float32.

Output items: ``short`` and ``long`` float32 tensors ``(1, D, H, W)``, ``subject``,
and the four range keys.  :func:`make_dataset` wraps the chain in a MONAI
``CacheDataset``; everything before the random crop is cached.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import CacheDataset, MetaTensor
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    Orientationd,
    RandSpatialCropd,
    ScaleIntensityd,
    SpatialPadd,
)

from petite.data.datalist import PATH_KEYS, SPLITS, read_datalist
from petite.errors import UserError

IMAGE_KEYS: tuple[str, str] = ("short", "long")
DEFAULT_CROP: tuple[int, int, int] = (64, 64, 64)
# Crops shrink by halves on thin axes but not below this: both models downsample by 16.
MIN_CROP = 16
_RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


def choose_crop_size(
    shape: Sequence[int], preferred: Sequence[int] = DEFAULT_CROP, min_size: int = MIN_CROP
) -> tuple[int, ...]:
    """Training crop for volumes of ``shape``: ``preferred``, halved on axes that are too short.

    An axis shorter than its preferred crop gets the crop halved until it fits
    or would drop below ``min_size`` (then the volume is padded up to the
    crop).  Scanner 5's 128x128x63 grid gives 64x64x32 as in the paper; a
    36-slice volume gives 32; a 10-slice volume gives 16 (padded).
    """
    if len(shape) != len(preferred):
        raise ValueError(f"shape {tuple(shape)} and preferred crop {tuple(preferred)} differ in length")
    crop = []
    for size, want in zip(shape, preferred):
        c = int(want)
        while c > size and c % 2 == 0 and c // 2 >= min_size:
            c //= 2
        crop.append(c)
    return tuple(crop)


class FramesToShortLongd(MapTransform):
    """Turn a ``frames`` item ``(T, X, Y, Z)`` into ``short`` (frame 0) and ``long`` (mean of frames).

    Items that already have ``short`` and ``long`` pass through.  The frames
    are dropped to free memory; the outputs keep the frames' affine, metadata
    and applied operations (so the orientation can be inverted).
    """

    def __init__(self, frames_key: str = "frames", keys: KeysCollection = IMAGE_KEYS) -> None:
        super().__init__(keys)
        self.frames_key = frames_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.frames_key not in d:
            return d
        frames = d.pop(self.frames_key)
        plain = frames.as_tensor() if isinstance(frames, MetaTensor) else torch.as_tensor(frames)
        short_key, long_key = self.keys
        d[short_key] = _like(plain[0:1].clone(), frames)
        # Accumulate in float64 so the mean is correctly rounded to the frames' precision.
        d[long_key] = _like(plain.double().mean(dim=0, keepdim=True).to(plain.dtype), frames)
        return d


def _like(t: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    if isinstance(ref, MetaTensor):
        meta = dict(ref.meta)
        meta["affine"] = ref.affine.clone()  # own copy: short and long must not share one tensor
        return MetaTensor(t, meta=meta, applied_operations=list(ref.applied_operations))
    return t


class RecordRanged(MapTransform):
    """Store each key's original minimum and maximum as ``<key>_min`` / ``<key>_max`` floats."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[f"{key}_min"] = float(torch.as_tensor(d[key]).min())
            d[f"{key}_max"] = float(torch.as_tensor(d[key]).max())
        return d


def unscale(volume: Any, vmin: float, vmax: float) -> Any:
    """Map a [0, 1]-scaled volume (numpy or torch) back to the range ``[vmin, vmax]``."""
    return volume * (vmax - vmin) + vmin


def _base_transforms() -> list[Any]:
    load_keys = [*IMAGE_KEYS, "frames"]
    return [
        LoadImaged(keys=load_keys, reader="NibabelReader", image_only=True, allow_missing_keys=True),
        EnsureChannelFirstd(keys=load_keys, allow_missing_keys=True),
        # Explicit RAS labels: MONAI >= 1.5 warns when they are left to the default.
        Orientationd(keys=load_keys, axcodes="RAS", labels=_RAS_LABELS, allow_missing_keys=True),
        FramesToShortLongd(),
        RecordRanged(keys=IMAGE_KEYS),
        ScaleIntensityd(keys=IMAGE_KEYS, minv=0.0, maxv=1.0),
    ]


def train_transforms(crop_size: Sequence[int] | None = None) -> Compose:
    """Load, orient, derive short/long, scale to [0, 1], pad and randomly crop to ``crop_size``.

    ``crop_size=None`` uses 64^3; :func:`make_dataset` instead picks it from the
    volumes' shapes with :func:`choose_crop_size`.
    """
    crop = tuple(int(c) for c in (crop_size or DEFAULT_CROP))
    return Compose(
        [
            *_base_transforms(),
            SpatialPadd(keys=IMAGE_KEYS, spatial_size=crop, mode="constant"),
            RandSpatialCropd(keys=IMAGE_KEYS, roi_size=crop, random_size=False),
            EnsureTyped(keys=IMAGE_KEYS, dtype=torch.float32),
        ]
    )


def eval_transforms() -> Compose:
    """Load, orient, derive short/long and scale to [0, 1]; whole volumes."""
    return Compose([*_base_transforms(), EnsureTyped(keys=IMAGE_KEYS, dtype=torch.float32)])


def ras_shape(path: str | Path) -> tuple[int, int, int]:
    """Spatial shape of a NIfTI file after reorientation to RAS, read from its header only."""
    path = Path(path)
    if not path.is_file():
        raise UserError("file not found", path)
    try:
        img = nib.load(str(path))
        shape, affine = img.shape[:3], img.affine
    except Exception as err:  # nibabel raises many types for corrupt files
        raise UserError(f"cannot read NIfTI header ({type(err).__name__}: {err})", path) from None
    ornt = nib.orientations.io_orientation(affine)
    out = [0, 0, 0]
    for axis, (target, _flip) in enumerate(ornt):
        out[int(target)] = int(shape[axis])
    return (out[0], out[1], out[2])


def _item_path(item: Mapping[str, Any]) -> str:
    return item["frames"] if "frames" in item else item["short"]


def split_crop_size(datalist: Mapping[str, Any], split: str) -> tuple[int, ...]:
    """Training crop for a split: :func:`choose_crop_size` of its smallest volume (from headers)."""
    entries = datalist.get(split, [])
    if not entries:
        raise UserError(f"split {split!r} of the datalist is empty")
    smallest = np.min([ras_shape(_item_path(entry)) for entry in entries], axis=0)
    return choose_crop_size(tuple(int(s) for s in smallest))


def make_dataset(
    datalist: Mapping[str, Any] | str | Path,
    split: str,
    train: bool,
    cache_rate: float = 1.0,
    crop_size: Sequence[int] | None = None,
    num_workers: int = 0,
) -> CacheDataset:
    """A ``CacheDataset`` of one split of a datalist.

    ``datalist`` is a path or a dictionary as returned by
    :func:`petite.data.datalist.read_datalist` (absolute paths).  ``train``
    selects random crops (of ``crop_size``, or chosen from the smallest volume
    of the split by :func:`choose_crop_size` when ``None``) or whole volumes.
    ``cache_rate`` is the fraction of items cached after the deterministic
    transforms; ``num_workers`` threads fill the cache.
    """
    if not isinstance(datalist, Mapping):
        datalist = read_datalist(datalist)
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if not 0.0 <= cache_rate <= 1.0:
        raise UserError(f"cache rate must be between 0 and 1, got {cache_rate}")
    items = [{k: v for k, v in entry.items() if k == "subject" or k in PATH_KEYS} for entry in datalist.get(split, [])]
    if not items:
        raise UserError(f"split {split!r} of the datalist is empty")
    if train:
        transform = train_transforms(crop_size or split_crop_size(datalist, split))
    else:
        transform = eval_transforms()
    return CacheDataset(
        data=items, transform=transform, cache_rate=cache_rate, num_workers=max(num_workers, 1), progress=False
    )


def draw_item(dataset: Any, index: int, seed: int) -> dict[str, Any]:
    """Item ``index`` of a training dataset, its random crop drawn from ``seed`` (reproducible, resumable)."""
    dataset.transform.set_random_state(seed=seed % 2**32)
    return dataset[index]


def draw_batch(dataset: Any, size: int, seed: int) -> dict[str, torch.Tensor]:
    """``size`` training crops (items taken in turn, crops drawn from ``seed + k``) stacked as ``short``/``long``."""
    items = [draw_item(dataset, k % len(dataset), seed + k) for k in range(size)]
    return {key: torch.stack([item[key] for item in items]) for key in ("short", "long")}
