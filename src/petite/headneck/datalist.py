"""The multi-modal (CT/PET) datalist, case loading, normalisation and training crops.

Datalist layout (``"format": "petite-mm/1"``), MONAI-style: every split is a list
of items, paths relative to the datalist's own folder (``"root": "."``)::

    {
      "format": "petite-mm/1", "root": ".", "seed": 0,
      "centres": {"A": {...centre parameters or import facts...}, "B": {...}},
      "A_train": [{"patient": "A-003", "centre": "A", "ct": "A/A-003_ct.nii.gz",
                   "pet": "A/A-003_pet.nii.gz", "label": "A/A-003_label.nii.gz",
                   "facts": {...}, "clinical": {...}}, ...],
      "A_val": [...], "A_test": [...], "B_train": [...], ...
    }

Splits are centre-wise, ``<centre>_train``, ``<centre>_val``, ``<centre>_test``
(all three always written, possibly empty), and a patient appears in at most
one split.  Every item has ``patient``, ``centre`` (equal to its split's
centre), ``ct``, ``pet`` and ``label``; ``facts`` (generator or import facts)
and ``clinical`` (raw CSV strings) are optional.  Other top-level keys
(``seed``, ``source``, ``size``) are metadata and kept as they are.

Loading (:func:`load_case`) and its choices:

* Reading: :func:`petite.data.nifti.load_volume` (3D, finite; an empty
  label is allowed), which names the file on any problem.
* Orientation: every volume is brought to the closest canonical (RAS+)
  orientation (``canonical=True``), so array axes are (x: left->right, y:
  posterior->anterior, z: inferior->superior) whatever the file's.
* Grid: the CT grid is the reference.  When the PET (or label) grid differs
  in shape or affine, as in real HECKTOR data where PET voxels are ~4 mm and
  CT voxels ~1 mm, it is resampled onto the CT grid through the two affines
  (:func:`petite.data.resample.resample_to`; trilinear for PET, nearest
  neighbour for labels; zero outside the PET field of view).
* CT: Hounsfield units clipped to the soft-tissue window [-250, 250] HU and
  scaled to [0, 1] (air -> 0, fat ~0.3, soft tissue / tumour ~0.6, bone -> 1).
  Head-and-neck tumours differ from soft tissue by tens of HU, so a narrow
  window keeps the contrast the network needs; air and bone only need to be
  recognisable, not graded.
* PET (default ``pet_norm="zscore"``): z-score per patient, mean and standard
  deviation taken over the body (CT > -500 HU) so they do not depend on how
  much air the field of view holds, no clipping.  This is common HECKTOR
  practice (nnU-Net's default for non-CT images) and removes the per-centre
  SUV calibration factor, which otherwise is pure domain shift.
  ``pet_norm="suv"`` keeps SUV meaning instead: clip to [0, 20] and divide
  by 20, so 0..1 like the CT.
* Label: int64 in {0: background, 1: GTVp, 2: GTVn}.

:func:`random_crop` draws training patches, foreground-biased like MONAI's
``RandCropByPosNegLabel`` and deterministic given a ``numpy.random.Generator``.
torch is imported only inside load_case and random_crop, so the generator's worker
processes start quickly.
"""

from __future__ import annotations

import copy
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from petite.atomic import write_json
from petite.data.nifti import load_volume, voxel_spacing
from petite.data.resample import resample_to, same_grid, world_overlap
from petite.documents import read_json
from petite.errors import UserError

FORMAT = "petite-mm/1"
SPLIT_KINDS: tuple[str, ...] = ("train", "val", "test")
PATH_KEYS: tuple[str, ...] = ("ct", "pet", "label")
LABELS: dict[int, str] = {0: "background", 1: "GTVp", 2: "GTVn"}
CT_WINDOW_HU: tuple[float, float] = (-250.0, 250.0)
PET_SUV_RANGE: tuple[float, float] = (0.0, 20.0)
BODY_HU = -500.0
PET_NORMS = ("zscore", "suv")
DEFAULT_FRACTIONS: tuple[float, float, float] = (0.6, 0.2, 0.2)


# ----------------------------------------------------------------------------- splits


def split_name(centre: str, kind: str) -> str:
    """``split_name("A", "train") -> "A_train"``."""
    return f"{centre}_{kind}"


def parse_split_name(name: str) -> tuple[str, str] | None:
    """``"A_train" -> ("A", "train")``; ``None`` when ``name`` is not a split key."""
    centre, sep, kind = name.rpartition("_")
    if not sep or not centre or kind not in SPLIT_KINDS:
        return None
    return centre, kind


def parse_fractions(fractions: Sequence[float], source: str | Path | None = None) -> tuple[float, float, float]:
    """Validate (train, val, test) split fractions: three non-negative numbers, not all zero."""
    try:
        values = tuple(float(f) for f in fractions)
    except (TypeError, ValueError):
        raise UserError(f"splits must be three numbers (train, val, test), got {fractions!r}", source) from None
    if len(values) != 3 or any(not np.isfinite(v) or v < 0 for v in values) or sum(values) <= 0:
        raise UserError(f"splits must be three non-negative fractions (train, val, test) with a positive sum, "
                        f"got {fractions!r}", source)
    total = sum(values)
    return values[0] / total, values[1] / total, values[2] / total


def centre_split_counts(n: int, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> dict[str, int]:
    """How many of a centre's ``n`` patients go to train, val and test.

    Largest remainder on ``n * fraction`` (ties: train, test, val); then every
    split with a positive fraction gets at least one patient while another
    split can spare one.
    """
    fr = parse_fractions(fractions)
    priority = (0, 2, 1)
    shares = [n * f for f in fr]
    counts = [int(np.floor(s)) for s in shares]
    order = sorted(range(3), key=lambda i: (-(shares[i] - counts[i]), priority.index(i)))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    for i in priority:
        if fr[i] > 0 and counts[i] == 0:
            donor = max(range(3), key=lambda j: (counts[j], -priority.index(j)))
            if counts[donor] > 1:
                counts[donor] -= 1
                counts[i] += 1
    return dict(zip(SPLIT_KINDS, counts))


def assign_centre_splits(patients_by_centre: Mapping[str, Sequence[str]], fractions: Sequence[float] = DEFAULT_FRACTIONS,
                         seed: int = 0) -> dict[str, list[str]]:
    """Shuffle each centre's patients (seeded by ``seed`` and the centre id) and cut train/val/test.

    Returns ``{"A_train": [...], "A_val": [...], "A_test": [...], ...}`` with sorted patient IDs.
    """
    splits: dict[str, list[str]] = {}
    seen: set[str] = set()
    for centre, patients in patients_by_centre.items():
        order = sorted(patients)
        if len(set(order)) != len(order) or seen & set(order):
            raise UserError(f"patient IDs must be unique (centre {centre!r})")
        seen.update(order)
        rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(zlib.crc32(centre.encode()), 0)))
        rng.shuffle(order)
        start = 0
        for kind, count in centre_split_counts(len(order), fractions).items():
            splits[split_name(centre, kind)] = sorted(order[start : start + count])
            start += count
    return splits


# ----------------------------------------------------------------------------- reading and writing


def validate_mm_datalist(data: Any, source: str | Path | None = None) -> None:
    """Check the structure of a datalist dictionary (not the files); UserError naming ``source``."""
    if not isinstance(data, dict):
        raise UserError("not a multi-modal datalist: expected a JSON object", source)
    if data.get("format") != FORMAT:
        raise UserError(f"not a multi-modal datalist: 'format' must be {FORMAT!r}, got {data.get('format')!r}", source)
    centres = data.get("centres")
    if not isinstance(centres, dict) or not centres:
        raise UserError("'centres' must be a non-empty object {centre id: parameters}", source)
    if not isinstance(data.get("root", "."), str):
        raise UserError("'root' must be a string (a folder relative to the datalist)", source)
    seen: dict[str, str] = {}
    for name, entries in data.items():
        parsed = parse_split_name(name)
        if parsed is None:
            continue
        centre, _ = parsed
        if centre not in centres:
            raise UserError(f"split {name!r} names centre {centre!r}, which is not in 'centres' "
                            f"({', '.join(sorted(centres))})", source)
        if not isinstance(entries, list):
            raise UserError(f"split {name!r} must be a list of items", source)
        for k, entry in enumerate(entries):
            if not isinstance(entry, dict) or not isinstance(entry.get("patient"), str) or not entry["patient"]:
                raise UserError(f"item {k} of {name!r} needs a 'patient' ID string", source)
            patient = entry["patient"]
            if entry.get("centre") != centre:
                raise UserError(f"patient {patient!r} in {name!r} has centre {entry.get('centre')!r}, "
                                f"expected {centre!r}", source)
            for key in PATH_KEYS:
                if not isinstance(entry.get(key), str) or not entry[key]:
                    raise UserError(f"patient {patient!r} in {name!r} needs a {key!r} path", source)
            for key in ("facts", "clinical"):
                if key in entry and not isinstance(entry[key], dict):
                    raise UserError(f"patient {patient!r} in {name!r}: {key!r} must be an object", source)
            if patient in seen:
                raise UserError(f"patient {patient!r} appears in both {seen[patient]!r} and {name!r}", source)
            seen[patient] = name


def read_mm_datalist(path: str | Path) -> dict[str, Any]:
    """Read and validate a multi-modal datalist.

    Item paths come back absolute (resolved against the datalist's folder and
    its ``root``), every file must exist, and ``root`` becomes the absolute
    folder.  Any problem raises :class:`UserError` naming ``path``.
    """
    path = Path(path)
    data = read_json(path, "datalist")
    validate_mm_datalist(data, path)
    root = (path.parent / data.get("root", ".")).resolve()
    for name in split_names(data):
        for entry in data[name]:
            for key in PATH_KEYS:
                file = Path(entry[key]) if Path(entry[key]).is_absolute() else root / entry[key]
                if not file.is_file() and not file.is_dir():  # a folder: a DICOM series (data/dicom.py)
                    raise UserError(f"patient {entry['patient']!r} in {name!r}: {key} file not found: {file}", path)
                entry[key] = str(file.resolve())
    data["root"] = str(root)
    return data


def write_mm_datalist(path: str | Path, data: Mapping[str, Any]) -> None:
    """Atomically write ``data`` to ``path`` with item paths relative to ``path``'s folder.

    Relative item paths are taken relative to ``data["root"]`` when that is
    absolute (as :func:`read_mm_datalist` returns it), otherwise relative to
    the destination folder (never to the working directory: writers that
    build paths from a user's ``--out`` make them absolute first).  Files
    outside that folder keep absolute paths.
    """
    path = Path(path)
    out = copy.deepcopy(dict(data))
    out.setdefault("format", FORMAT)
    validate_mm_datalist(out, path)
    folder = path.parent.resolve()
    root = Path(out.get("root", "."))
    base = root if root.is_absolute() else folder
    for name in split_names(out):
        for entry in out[name]:
            for key in PATH_KEYS:
                file = Path(entry[key])
                file = file if file.is_absolute() else base / file
                entry[key] = _relative(file, folder)
    out["root"] = "."
    ordered = {key: out[key] for key in ("format", "root") if key in out}
    ordered.update({key: value for key, value in out.items() if key not in ordered})
    write_json(path, ordered)


def split_names(datalist: Mapping[str, Any], centre: str | None = None) -> list[str]:
    """The split keys of ``datalist`` (optionally of one centre), centre by centre, train/val/test order."""
    centres = list(datalist.get("centres", {}))
    if centre is not None and centre not in centres:
        raise UserError(f"unknown centre {centre!r}; the datalist has {', '.join(centres) or 'none'}")
    names = []
    for c in centres if centre is None else [centre]:
        names.extend(split_name(c, kind) for kind in SPLIT_KINDS if split_name(c, kind) in datalist)
    return names


def items(datalist: Mapping[str, Any], split: str) -> list[dict[str, Any]]:
    """The items of ``split``; UserError listing the known splits when it is not one."""
    known = split_names(datalist)
    if split not in known:
        raise UserError(f"unknown split {split!r}; the datalist has {', '.join(known) or 'none'}")
    return list(datalist[split])


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path.resolve())


# ----------------------------------------------------------------------------- loading


def normalise_ct(hu: np.ndarray) -> np.ndarray:
    """Clip Hounsfield units to the soft-tissue window [-250, 250] and scale to [0, 1]."""
    lo, hi = CT_WINDOW_HU
    return ((np.clip(hu, lo, hi) - lo) / (hi - lo)).astype(np.float32)


def normalise_pet(suv: np.ndarray, body: np.ndarray | None = None, mode: str = "zscore") -> np.ndarray:
    """PET normalisation: per-patient z-score over ``body`` (default), or ``"suv"``: clip [0, 20] / 20."""
    if mode == "suv":
        lo, hi = PET_SUV_RANGE
        return ((np.clip(suv, lo, hi) - lo) / (hi - lo)).astype(np.float32)
    if mode != "zscore":
        raise UserError(f"unknown PET normalisation {mode!r}; choose one of {', '.join(PET_NORMS)}")
    values = suv[body] if body is not None and body.sum() > 1 else suv
    std = float(values.std())
    return ((suv - float(values.mean())) / (std if std > 1e-6 else 1.0)).astype(np.float32)


def load_case(item: Mapping[str, Any], pet_norm: str = "zscore") -> dict[str, Any]:
    """Load one datalist item as tensors on the CT grid, normalised (see the module docstring).

    Returns ``{"ct": float32 (1, X, Y, Z), "pet": float32 (1, X, Y, Z),
    "label": int64 (1, X, Y, Z), "patient": str, "centre": str, "spacing": (sx, sy, sz)}``;
    ``spacing`` is the CT voxel size in mm along the array axes (from the
    canonical affine), so :mod:`petite.pemma.evaluate` reports HD95 in mm.
    """
    import torch

    if pet_norm not in PET_NORMS:
        raise UserError(f"unknown PET normalisation {pet_norm!r}; choose one of {', '.join(PET_NORMS)}")
    ct, ct_affine = load_volume(item["ct"], what="CT", canonical=True, allow_zero=True)
    pet, pet_affine = load_volume(item["pet"], what="PET", canonical=True, allow_zero=True)
    label, label_affine = load_volume(item["label"], what="label", canonical=True, allow_zero=True)
    if not same_grid(pet.shape, pet_affine, ct.shape, ct_affine):
        if world_overlap(ct.shape, ct_affine, pet.shape, pet_affine) <= 0:
            raise UserError(f"PET {item['pet']} (shape {pet.shape}) does not overlap the CT {item['ct']} "
                            f"(shape {ct.shape}) in space", item["pet"])
        pet = resample_to(pet, pet_affine, ct.shape, ct_affine, order=1)
    if not same_grid(label.shape, label_affine, ct.shape, ct_affine):
        label = resample_to(label, label_affine, ct.shape, ct_affine, order=0)
    label_int = np.rint(label).astype(np.int64)
    bad = np.setdiff1d(np.unique(label_int), list(LABELS))
    if bad.size:
        raise UserError(f"label values must be 0, 1, 2 (background, GTVp, GTVn), found {bad.tolist()}", item["label"])
    return {
        "ct": torch.from_numpy(normalise_ct(ct))[None],
        "pet": torch.from_numpy(normalise_pet(pet, ct > BODY_HU, pet_norm))[None],
        "label": torch.from_numpy(label_int)[None],
        "patient": str(item["patient"]),
        "centre": str(item["centre"]),
        "spacing": voxel_spacing(ct_affine),
    }


# ----------------------------------------------------------------------------- training crops


def random_crop(case: Mapping[str, Any], size: int | Sequence[int], rng: np.random.Generator,
                foreground_prob: float = 0.7) -> dict[str, Any]:
    """A random ``size`` patch of a loaded case (every tensor ``(C, X, Y, Z)`` cropped alike).

    With probability ``foreground_prob`` (and when the label has any tumour
    voxel) the patch contains a tumour voxel picked uniformly among all tumour
    voxels, at a uniformly random position inside the patch; otherwise the
    patch position is uniform.  A volume smaller than ``size`` is first padded
    symmetrically: images with their own minimum (air / background), the label
    with 0.  Non-tensor entries are copied; ``crop_start`` is the patch origin
    in the original volume's voxels (negative where padded).  Deterministic
    given ``rng``.
    """
    import torch

    sizes = (int(size),) * 3 if isinstance(size, (int, np.integer)) else tuple(int(s) for s in size)
    if len(sizes) != 3 or min(sizes) < 1:
        raise UserError(f"crop size must be a positive integer or three of them, got {size!r}")
    if not 0.0 <= foreground_prob <= 1.0:
        raise UserError(f"foreground_prob must be in [0, 1], got {foreground_prob}")
    label = case["label"]
    shape = tuple(label.shape[-3:])
    pad_before = [max(s - n, 0) // 2 for s, n in zip(sizes, shape)]
    pad_after = [max(s - n, 0) - b for s, n, b in zip(sizes, shape, pad_before)]
    padded_shape = [n + b + a for n, b, a in zip(shape, pad_before, pad_after)]

    want_foreground = bool(rng.random() < foreground_prob)
    foreground = np.argwhere(label.reshape(shape).numpy() > 0) if want_foreground else np.empty((0, 3))
    if len(foreground):
        voxel = foreground[rng.integers(len(foreground))] + np.asarray(pad_before)
        start = [int(rng.integers(max(0, v - s + 1), min(v, n - s) + 1)) for v, s, n in zip(voxel, sizes, padded_shape)]
    else:
        start = [int(rng.integers(0, n - s + 1)) for n, s in zip(padded_shape, sizes)]

    out: dict[str, Any] = {}
    for key, value in case.items():
        if isinstance(value, torch.Tensor) and value.ndim >= 3 and tuple(value.shape[-3:]) == shape:
            fill = 0 if key == "label" else float(value.min())
            pad = (pad_before[2], pad_after[2], pad_before[1], pad_after[1], pad_before[0], pad_after[0])
            tensor = torch.nn.functional.pad(value, pad, value=fill) if any(pad) else value
            window = tensor[..., start[0] : start[0] + sizes[0], start[1] : start[1] + sizes[1],
                            start[2] : start[2] + sizes[2]]
            out[key] = window.clone()
        else:
            out[key] = value
    out["crop_start"] = tuple(s - b for s, b in zip(start, pad_before))
    return out
