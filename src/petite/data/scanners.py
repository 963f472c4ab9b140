"""The scanner registry: the paper's five scanners (Table 4), their half-resolution copies, a tiny one, and yours.

A :class:`Scanner` describes both what a scanner's images look like (grid,
voxel spacing, vendor, site) and how :mod:`petite.data.simulate` imitates its
acquisition and reconstruction (resolution, count level, scatter and randoms
fractions, OSEM settings, post-filter, calibration).  The five built-in
scanners differ in all of these on purpose: those differences are the domain
shift that fine-tuning has to fix.

Users add scanners in a YAML file (``petite simulate --scanner-file my.yaml``)::

    scanners:
      - id: "6"
        shape: [160, 160, 96]
        spacing: [1.6, 1.6, 2.0]
        vendor: GE
        site: My hospital
        fwhm_mm: [4.0, 4.0, 4.5]     # or one number
        counts: 3.0e8                 # expected prompts of the 30-min scan
        intensity_scale: 1.05
        # optional: scatter_fraction, randoms_fraction, osem_iterations,
        # osem_subsets, postfilter_fwhm_mm, n_angles, resolution_modelling

A scanner of a file also exists at half resolution as ``<id>h`` (like the built-in
``1h``..``5h``) unless the file defines that id itself.  ``examples/scanners/realistic.yaml``
holds a set of scanners whose reconstructions differ as the paper's sites plausibly do.

Every field is validated; a mistake raises :class:`petite.errors.UserError`
naming the file and the field.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from petite.data.nifti import make_affine
from petite.documents import read_yaml
from petite.errors import UserError

# Accepted expected total prompts of a 30-minute scan.  The paper scanners use 1e8-1e9
# (BRIEF section 8); the wider range leaves room for test and what-if scanners.
MIN_COUNTS, MAX_COUNTS = 1e7, 1e10
_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Scanner:
    """One PET scanner: image grid plus the parameters its simulation uses.

    Attributes:
        id: short identifier used on the command line and in subject IDs ("1".."5", "tiny").
        shape: image grid (x, y, z) in voxels; axes are RAS, z is the scanner axis.
        spacing: voxel size (x, y, z) in mm.
        vendor, site: provenance, for the record.
        fwhm_mm: system resolution (x, y, z) FWHM in mm, applied as a Gaussian PSF.
        counts: expected total prompts (trues + scatter + randoms) of the 30-minute scan.
        intensity_scale: calibration factor applied to reconstructed activity.
        scatter_fraction: scatter / (trues + scatter).
        randoms_fraction: randoms / prompts.
        osem_iterations, osem_subsets: the scanner's clinical reconstruction.
        postfilter_fwhm_mm: isotropic Gaussian post-filter after OSEM (0 = none).
        n_angles: projection angles over 180 degrees; ``None`` picks about half the
            transaxial matrix size, rounded up to a multiple of ``osem_subsets``.
        resolution_modelling: OSEM models the scanner's PSF (``fwhm_mm``) in its system
            matrix ("PSF reconstruction"): sharper images with correlated, blobby noise.
            Off by default, which is how every built-in scanner reconstructs.
    """

    id: str
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    vendor: str
    site: str
    fwhm_mm: tuple[float, float, float]
    counts: float
    intensity_scale: float = 1.0
    scatter_fraction: float = 0.30
    randoms_fraction: float = 0.15
    osem_iterations: int = 3
    osem_subsets: int = 8
    postfilter_fwhm_mm: float = 2.0
    n_angles: int | None = None
    resolution_modelling: bool = False

    def affine(self) -> np.ndarray:
        """RAS voxel-to-world affine (mm) centred on the field of view."""
        return make_affine(self.spacing, self.shape)

    def projection_angles(self) -> int:
        """Number of projection angles the simulation uses for this scanner."""
        if self.n_angles is not None:
            return self.n_angles
        half = max(self.shape[0], self.shape[1]) / 2
        return int(math.ceil(half / self.osem_subsets) * self.osem_subsets)

    def to_dict(self) -> dict[str, Any]:
        """JSON/YAML-ready description (lists instead of tuples)."""
        out = dataclasses.asdict(self)
        for key in ("shape", "spacing", "fwhm_mm"):
            out[key] = list(out[key])
        return out


# Paper Table 4 grids and spacings; the simulation parameters are plausible for
# each scanner generation (HRRT-like high resolution on 1-2, a PET/CT on 3, an
# older Philips and an HR+-like scanner on 4-5) and differ on purpose.
BUILTIN_SCANNERS: dict[str, Scanner] = {
    s.id: s
    for s in (
        Scanner("1", (192, 192, 136), (1.21875, 1.21875, 1.21875), "Siemens", "Univ. of California",
                fwhm_mm=(2.6, 2.6, 2.6), counts=3.0e8, intensity_scale=1.00, scatter_fraction=0.32,
                randoms_fraction=0.18, osem_iterations=3, osem_subsets=8, postfilter_fwhm_mm=2.0),
        Scanner("2", (192, 192, 128), (1.21875, 1.21875, 1.21875), "Siemens", "Univ. of California",
                fwhm_mm=(3.2, 3.2, 3.4), counts=2.0e8, intensity_scale=0.92, scatter_fraction=0.30,
                randoms_fraction=0.15, osem_iterations=3, osem_subsets=8, postfilter_fwhm_mm=2.5),
        Scanner("3", (224, 224, 81), (1.01821, 1.01821, 2.02699), "Siemens", "Univ. of California",
                fwhm_mm=(4.2, 4.2, 4.8), counts=5.0e8, intensity_scale=1.12, scatter_fraction=0.28,
                randoms_fraction=0.12, osem_iterations=2, osem_subsets=14, postfilter_fwhm_mm=2.0),
        Scanner("4", (128, 128, 90), (2.0, 2.0, 2.0), "Philips", "OHSU",
                fwhm_mm=(5.2, 5.2, 5.5), counts=1.0e8, intensity_scale=0.85, scatter_fraction=0.35,
                randoms_fraction=0.20, osem_iterations=3, osem_subsets=8, postfilter_fwhm_mm=3.0),
        Scanner("5", (128, 128, 63), (2.05941, 2.05941, 2.425), "Siemens", "UCSD",
                fwhm_mm=(4.8, 4.8, 5.5), counts=1.3e8, intensity_scale=1.06, scatter_fraction=0.33,
                randoms_fraction=0.16, osem_iterations=4, osem_subsets=8, postfilter_fwhm_mm=4.0),
        # For tests and quick trials: about 40x fewer voxels than scanner 1, yet the
        # 224 mm field of view holds the whole head (a smaller one would truncate it).
        Scanner("tiny", (56, 56, 40), (4.0, 4.0, 4.0), "synthetic", "petite tests",
                fwhm_mm=(6.0, 6.0, 6.0), counts=1.0e7, intensity_scale=1.0, scatter_fraction=0.30,
                randoms_fraction=0.15, osem_iterations=2, osem_subsets=4, postfilter_fwhm_mm=0.0),
    )
}



def half_resolution(scanner: Scanner, new_id: str | None = None) -> Scanner:
    """A half-resolution copy of ``scanner``: grid halved (rounded), spacing doubled, same field of view.

    Vendor, site, PSF (FWHM), counts, calibration and OSEM settings are kept, so the copy
    differs from the other scanners' copies as the originals differ; ``n_angles`` (if fixed)
    is halved like the grid, never below the subset count.
    """
    shape = tuple(max(8, int(round(n / 2))) for n in scanner.shape)
    spacing = tuple(float(s) * 2 for s in scanner.spacing)
    angles = None if scanner.n_angles is None else max(scanner.osem_subsets, int(round(scanner.n_angles / 2)))
    return dataclasses.replace(scanner, id=new_id or f"{scanner.id}h", shape=shape, spacing=spacing, n_angles=angles)


# "1h".."5h": the paper's scanners at half resolution (8x fewer voxels), for source -> target
# trials that run in minutes on a laptop's CPU (`petite simulate --scanners 1h,4h`).
BUILTIN_SCANNERS.update({f"{n}h": half_resolution(BUILTIN_SCANNERS[n]) for n in ("1", "2", "3", "4", "5")})

_REQUIRED = ("id", "shape", "spacing", "fwhm_mm", "counts")
_FIELDS = {f.name for f in dataclasses.fields(Scanner)}


def list_scanners(extra_file: str | Path | None = None) -> list[Scanner]:
    """All known scanners: the built-ins, then those of ``extra_file`` (a YAML file)."""
    scanners = dict(BUILTIN_SCANNERS)
    if extra_file is not None:
        scanners.update(load_scanner_file(extra_file))
    return list(scanners.values())


def get_scanner(name: str, extra_file: str | Path | None = None) -> Scanner:
    """Look a scanner up by id; scanners in ``extra_file`` override built-ins of the same id.

    ``<id>h`` names the half-resolution copy (:func:`half_resolution`) of a scanner ``<id>`` of
    ``extra_file`` that does not define ``<id>h`` itself.
    """
    scanners = {s.id: s for s in list_scanners(extra_file)}
    key = str(name).strip()
    if key not in scanners and key.endswith("h") and key[:-1] in scanners:
        return half_resolution(scanners[key[:-1]])
    if key not in scanners:
        raise UserError(f"unknown scanner {key!r}; known: {', '.join(scanners)}", extra_file)
    return scanners[key]


def parse_scanner_ids(text: str, extra_file: str | Path | None = None) -> list[Scanner]:
    """Parse a comma-separated list like ``"1,2,5"`` into scanners (no duplicates)."""
    names = [part.strip() for part in str(text).split(",") if part.strip()]
    if not names:
        raise UserError(f"no scanner given in {text!r}")
    if len(set(names)) != len(names):
        raise UserError(f"scanner listed twice in {text!r}")
    return [get_scanner(name, extra_file) for name in names]


def load_scanner_file(path: str | Path) -> dict[str, Scanner]:
    """Read user scanners from YAML: ``{scanners: [ {id, shape, spacing, ...}, ... ]}``.

    A bare list of scanner mappings is accepted too.
    """
    path = Path(path)
    document = read_yaml(path, "scanner file")
    entries = document.get("scanners") if isinstance(document, dict) else document
    if not isinstance(entries, list) or not entries:
        raise UserError("expected a non-empty list under 'scanners:'", path)
    scanners: dict[str, Scanner] = {}
    for position, entry in enumerate(entries):
        scanner = scanner_from_mapping(entry, source=path, where=f"scanners[{position}]")
        if scanner.id in scanners:
            raise UserError(f"scanner id {scanner.id!r} defined twice", path)
        scanners[scanner.id] = scanner
    return scanners


def scanner_from_mapping(entry: Any, source: str | Path | None = None, where: str = "scanner") -> Scanner:
    """Validate one scanner mapping (as read from YAML) and build a :class:`Scanner`."""
    if not isinstance(entry, dict):
        raise UserError(f"{where}: expected a mapping of scanner fields", source)
    unknown = sorted(set(entry) - _FIELDS)
    if unknown:
        raise UserError(f"{where}: unknown field {unknown[0]!r} (allowed: {', '.join(sorted(_FIELDS))})", source)
    missing = [name for name in _REQUIRED if name not in entry]
    if missing:
        raise UserError(f"{where}: missing field {missing[0]!r}", source)

    def fail(field: str, problem: str) -> UserError:
        return UserError(f"{where}.{field}: {problem}, got {entry.get(field)!r}", source)

    scanner_id = str(entry["id"])
    if not _ID_PATTERN.match(scanner_id):
        raise fail("id", "must be letters, digits, '_', '-' or '.'")
    shape = _triple(entry["shape"], int, lambda v: 8 <= v <= 1024, fail("shape", "must be three integers in [8, 1024]"))
    spacing = _triple(entry["spacing"], float, lambda v: 0.1 <= v <= 20, fail("spacing", "must be three numbers in [0.1, 20] mm"))
    fwhm = _triple(entry["fwhm_mm"], float, lambda v: 0 <= v <= 30, fail("fwhm_mm", "must be one or three numbers in [0, 30] mm"), allow_scalar=True)
    values: dict[str, Any] = {"id": scanner_id, "shape": shape, "spacing": spacing, "fwhm_mm": fwhm,
                              "vendor": str(entry.get("vendor", "unknown")), "site": str(entry.get("site", "unknown"))}
    checks: dict[str, tuple[type, Any, str]] = {
        "counts": (float, lambda v: MIN_COUNTS <= v <= MAX_COUNTS, f"must be a number in [{MIN_COUNTS:g}, {MAX_COUNTS:g}]"),
        "intensity_scale": (float, lambda v: 0 < v <= 100, "must be a positive number"),
        "scatter_fraction": (float, lambda v: 0 <= v < 0.9, "must be in [0, 0.9)"),
        "randoms_fraction": (float, lambda v: 0 <= v < 0.9, "must be in [0, 0.9)"),
        "osem_iterations": (int, lambda v: 1 <= v <= 50, "must be an integer in [1, 50]"),
        "osem_subsets": (int, lambda v: 1 <= v <= 64, "must be an integer in [1, 64]"),
        "postfilter_fwhm_mm": (float, lambda v: 0 <= v <= 30, "must be a number in [0, 30] mm"),
        "n_angles": (int, lambda v: 4 <= v <= 1024, "must be an integer in [4, 1024]"),
    }
    for field, (kind, valid, problem) in checks.items():
        if field not in entry or (field == "n_angles" and entry[field] is None):
            continue
        value = _scalar(entry[field], kind)
        if value is None or not valid(value):
            raise fail(field, problem)
        values[field] = value
    if "resolution_modelling" in entry:
        if not isinstance(entry["resolution_modelling"], bool):
            raise fail("resolution_modelling", "must be true or false")
        values["resolution_modelling"] = entry["resolution_modelling"]
    if values.get("n_angles") is not None and values["n_angles"] < values.get("osem_subsets", 8):
        raise fail("n_angles", "must be at least osem_subsets (each subset needs an angle)")
    return Scanner(**values)


def _scalar(value: Any, kind: type) -> Any:
    if isinstance(value, bool):
        return None
    if kind is int:
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):  # YAML reads "3e8" (no dot) as a string
        try:
            number = float(value)
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _triple(value: Any, kind: type, valid: Any, error: UserError, allow_scalar: bool = False) -> tuple:
    if allow_scalar and not isinstance(value, (list, tuple)):
        value = [value, value, value]
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise error
    parsed = tuple(_scalar(v, kind) for v in value)
    if any(v is None or not valid(v) for v in parsed):
        raise error
    return parsed
