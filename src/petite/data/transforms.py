"""MONAI dictionary transforms and datasets: datalist items -> training/evaluation tensors.

The chain, for an item ``{"subject", "short", "long"}`` or ``{"subject", "frames"}``:

1. :class:`LoadVolumed` -> MetaTensors carrying the affine: MONAI's ``LoadImaged`` (nibabel reader) for a
   NIfTI file, :func:`petite.data.nifti.load_volume` for a folder holding a DICOM series;
2. ``EnsureChannelFirstd`` -> ``(1, X, Y, Z)``; 4D frames become ``(T, X, Y, Z)``;
3. ``Orientationd`` to RAS, so every scanner's volumes share the axis convention;
4. :class:`FramesToShortLongd`: ``short`` = frame 0, ``long`` = mean of the frames
   (the ADNI protocol, BRIEF section 2); pairs pass through unchanged;
5. :class:`RecordRanged`: the original ``min``/``max`` of ``short`` and ``long`` are kept as
   ``short_min``, ``short_max``, ``long_min``, ``long_max``;
6. :class:`Normalised`: intensities normalised as :mod:`petite.data.normalise` says
   (``input``, the default: both scans divided by one factor from the short scan;
   ``paper``: each scan min-max scaled to [0, 1] by its own range), keeping
   ``<key>_scale`` and ``<key>_offset`` so that ``scan = item * scale + offset``;
7. training only: ``SpatialPadd`` (volumes smaller than the crop are zero-padded,
   zero being the scaled background) then ``RandSpatialCropd`` of ``crop_size``
   (the same box for ``short`` and ``long``); evaluation keeps whole volumes;
8. ``EnsureTyped`` -> float32.

Output items: ``short`` and ``long`` float32 tensors ``(1, D, H, W)``, ``subject``,
the four range keys and the four normalisation keys.  :func:`make_dataset` wraps the chain in a MONAI
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
    SpatialPadd,
)

from petite.data.datalist import PATH_KEYS, SPLITS, read_datalist
from petite.data.nifti import load_volume
from petite.data.normalise import check_mode, input_factor, scale_and_offset
from petite.errors import UserError, user_error_in

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


class LoadVolumed(MapTransform):
    """Load each key's path into a MetaTensor with its affine: a NIfTI file with MONAI's ``LoadImaged``
    (nibabel), a DICOM series folder with :func:`petite.data.nifti.load_volume` (SimpleITK), so that
    ``EnsureChannelFirstd`` and ``Orientationd`` see the same metadata either way."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = True) -> None:
        super().__init__(keys, allow_missing_keys)
        self.nifti = LoadImaged(keys=keys, reader="NibabelReader", image_only=True, allow_missing_keys=True)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        folders = {key: d.pop(key) for key in self.key_iterator(d) if Path(str(d[key])).is_dir()}
        d = dict(self.nifti(d))
        for key, folder in folders.items():
            array, affine = load_volume(folder, ndim=None, check_values=False)
            meta = {"affine": torch.as_tensor(affine, dtype=torch.float64),
                    "original_affine": np.asarray(affine), "spatial_shape": np.asarray(array.shape[:3]),
                    # MONAI's convention: no channel for a 3D volume, frames last for a 4D one.
                    "original_channel_dim": "no_channel" if array.ndim == 3 else -1,
                    "filename_or_obj": str(folder)}
            d[key] = MetaTensor(torch.from_numpy(array), meta=meta)
        return d


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


class Normalised(MapTransform):
    """Normalise ``short`` and ``long`` as :mod:`petite.data.normalise` says, keeping ``<key>_scale``/``_offset``.

    ``input`` mode: one factor from the short scan (its mean inside its head mask) divides both;
    ``paper`` mode: each scan min-max scaled to [0, 1] by its own range.
    """

    def __init__(self, mode: str = "input", keys: KeysCollection = IMAGE_KEYS) -> None:
        super().__init__(keys)
        self.mode = check_mode(mode)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        short_key = self.keys[0]
        source = d.get("subject")
        factor = None
        if self.mode == "input":
            factor = input_factor(torch.as_tensor(d[short_key])[0].numpy(), f"subject {source}")
        for key in self.key_iterator(d):
            volume = d[key]
            scale, offset = scale_and_offset(torch.as_tensor(volume).numpy(), self.mode, factor, f"subject {source}")
            d[key] = (volume - offset) / scale
            d[f"{key}_scale"], d[f"{key}_offset"] = scale, offset
        return d


def _base_transforms(normalise: str = "input") -> list[Any]:
    load_keys = [*IMAGE_KEYS, "frames"]
    return [
        LoadVolumed(keys=load_keys),
        EnsureChannelFirstd(keys=load_keys, allow_missing_keys=True),
        # Explicit RAS labels: MONAI >= 1.5 warns when they are left to the default.
        Orientationd(keys=load_keys, axcodes="RAS", labels=_RAS_LABELS, allow_missing_keys=True),
        FramesToShortLongd(),
        RecordRanged(keys=IMAGE_KEYS),
        Normalised(normalise),
    ]


def train_transforms(crop_size: Sequence[int] | None = None, normalise: str = "input") -> Compose:
    """Load, orient, derive short/long, normalise, pad and randomly crop to ``crop_size``.

    ``crop_size=None`` uses 64^3; :func:`make_dataset` instead picks it from the
    volumes' shapes with :func:`choose_crop_size`.
    """
    crop = tuple(int(c) for c in (crop_size or DEFAULT_CROP))
    return Compose(
        [
            *_base_transforms(normalise),
            SpatialPadd(keys=IMAGE_KEYS, spatial_size=crop, mode="constant"),
            RandSpatialCropd(keys=IMAGE_KEYS, roi_size=crop, random_size=False),
            EnsureTyped(keys=IMAGE_KEYS, dtype=torch.float32),
        ]
    )


def eval_transforms(normalise: str = "input") -> Compose:
    """Load, orient, derive short/long and normalise; whole volumes."""
    return Compose([*_base_transforms(normalise), EnsureTyped(keys=IMAGE_KEYS, dtype=torch.float32)])


def ras_shape(path: str | Path) -> tuple[int, int, int]:
    """Spatial shape of a NIfTI file (read from its header only) or a DICOM series after reorientation to RAS."""
    path = Path(path)
    if path.is_dir():  # a DICOM series has no header of the whole volume: read it (small next to training)
        data, affine = load_volume(path, ndim=None, check_values=False)
        shape = data.shape[:3]
    elif not path.is_file():
        raise UserError("file not found", path)
    else:
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


class PetDataset(CacheDataset):
    """MONAI's ``CacheDataset`` whose transforms' :class:`UserError` reaches the caller as itself.

    MONAI wraps any exception raised inside a transform in ``RuntimeError("applying transform ...")``;
    a constant volume or an empty head mask is the user's problem and must stay a one-line error.
    """

    def _load_cache_item(self, *args: Any, **kwargs: Any) -> Any:
        with _unwrapped_user_errors():
            return super()._load_cache_item(*args, **kwargs)

    def _transform(self, index: int) -> Any:
        with _unwrapped_user_errors():
            return super()._transform(index)


class _unwrapped_user_errors:  # noqa: N801 - a context manager used like a function
    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc is not None and not isinstance(exc, UserError):
            found = user_error_in(exc)
            if found is not None:
                raise found from None
        return False


def make_dataset(
    datalist: Mapping[str, Any] | str | Path,
    split: str,
    train: bool,
    cache_rate: float = 1.0,
    crop_size: Sequence[int] | None = None,
    num_workers: int = 0,
    normalise: str = "input",
) -> PetDataset:
    """A ``CacheDataset`` of one split of a datalist.

    ``datalist`` is a path or a dictionary as returned by
    :func:`petite.data.datalist.read_datalist` (absolute paths).  ``train``
    selects random crops (of ``crop_size``, or chosen from the smallest volume
    of the split by :func:`choose_crop_size` when ``None``) or whole volumes.
    ``cache_rate`` is the fraction of items cached after the deterministic
    transforms; ``num_workers`` threads fill the cache.  ``normalise``: ``input``
    or ``paper`` (:mod:`petite.data.normalise`).
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
        transform = train_transforms(crop_size or split_crop_size(datalist, split), normalise)
    else:
        transform = eval_transforms(normalise)
    return PetDataset(
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
