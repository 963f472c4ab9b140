"""Simulated multi-scanner FDG brain PET: short (5-min) and long (30-min) scans per subject and scanner.

One job = one subject on one scanner (BRIEF section 8):

1. draw the subject (:mod:`petite.data.phantom`) and sample its activity and
   attenuation onto the scanner's grid, blur the activity with the scanner's PSF;
2. project (:mod:`petite.data.projector`), attenuate, add scatter (a heavily
   smoothed copy of the true sinogram) and uniform randoms at the scanner's
   fractions, and draw Poisson counts whose total is the scanner's count level;
3. the short scan is binomial thinning of those counts with p = 1/6 (a true
   subset of the acquisition); with ``frames`` the counts are split into six
   5-minute frames by multinomial thinning instead (frame 0 is the short scan);
4. reconstruct every scan with OSEM (attenuation and scatter + randoms in the
   model; the scanner's PSF too where it has ``resolution_modelling``), post-filter,
   and convert to kBq/mL: each scan is divided by its own
   acquisition time, so short and long scans have the same intensity and differ
   in noise only; then apply the scanner's calibration (``intensity_scale``).

Every job has its own random stream derived from (seed, scanner id, subject
index), so results do not depend on ``workers`` or on the order jobs run in.
"""

from __future__ import annotations

import logging
import math
import platform
import re
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from scipy import ndimage

from petite.atomic import write_json
from petite.data.datalist import (
    DEFAULT_SPLIT_SIZES,
    SPLITS,
    assign_splits,
    build_datalist,
    write_datalist,
)
from petite.data.montage import montage_rows_from_datalists, save_montage
from petite.data.nifti import save_volume
from petite.data.phantom import (
    SubjectPhantom,
    load_template_tissues,
    make_subject_phantom,
)
from petite.data.projector import ImageBlur, OsemSensitivity, ParallelProjector, osem
from petite.data.scanners import Scanner
from petite.errors import UserError
from petite.parallel import run_jobs
from petite.version import __version__

log = logging.getLogger(__name__)

SIMULATION_FORMAT = "petite-simulation/1"
N_FRAMES = 6  # six 5-minute frames of a 30-minute acquisition (ADNI protocol)
SHORT_FRACTION = 1.0 / N_FRAMES
FRAME_SECONDS = 300.0
# Size of the phantom head (MNI brain + 13 mm of skull and scalp, up to +8 % scale): a smaller
# field of view truncates it.  Only a warning: a user scanner may image part of the head on purpose.
HEAD_DIAMETER_MM, BRAIN_HEIGHT_MM = 220, 140
SCATTER_SIGMA_MM = 30.0  # width of the scatter kernel: scatter is a broad, smooth background
_FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
_VOLUME_NAME = re.compile(r"^s.+-\d+_(short|long|frames)\.nii\.gz$")


@dataclass(frozen=True)
class ReconSettings:
    """Overrides of the scanner's own reconstruction settings (``None`` keeps the scanner's)."""

    iterations: int | None = None
    subsets: int | None = None

    def for_scanner(self, scanner: Scanner) -> tuple[int, int]:
        """(iterations, subsets) to use for ``scanner``."""
        return (self.iterations or scanner.osem_iterations, self.subsets or scanner.osem_subsets)


@dataclass
class SubjectScans:
    """The reconstructed scans of one subject on one scanner (float32, kBq/mL, scanner grid)."""

    subject: str
    short: np.ndarray | None = None
    long: np.ndarray | None = None
    frames: np.ndarray | None = None  # (x, y, z, 6) in frames mode
    phantom: SubjectPhantom | None = field(default=None, repr=False)
    seconds: float = 0.0  # wall clock of simulate_subject
    cpu_seconds: float = 0.0  # CPU time of this process (all threads) meanwhile


def subject_id(scanner: Scanner, index: int) -> str:
    """Subject IDs are distinct across scanners: ``s4-0007`` is subject 7 of scanner 4."""
    return f"s{scanner.id}-{index:04d}"


def subject_streams(seed: int, scanner: Scanner, index: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent (phantom, acquisition) random generators of one subject-scanner job.

    Derived from (seed, scanner id, subject index) only, so a job's output does
    not depend on which other jobs run, in which order or in which process.
    The phantom has its own stream so it can be rebuilt without simulating counts.
    """
    sequence = np.random.SeedSequence(entropy=int(seed), spawn_key=(zlib.crc32(scanner.id.encode()), int(index)))
    phantom_seq, acquisition_seq = sequence.spawn(2)
    return np.random.default_rng(phantom_seq), np.random.default_rng(acquisition_seq)


def subject_phantom(seed: int, scanner: Scanner, index: int, vary_anatomy: bool = False) -> SubjectPhantom:
    """The ground-truth phantom of one simulated subject (same draws as :func:`simulate_subject`)."""
    return make_subject_phantom(subject_streams(seed, scanner, index)[0], vary_anatomy=vary_anatomy)


def simulate_subject(scanner: Scanner, index: int, seed: int, frames: bool = False,
                     recon: ReconSettings = ReconSettings(), vary_anatomy: bool = False) -> SubjectScans:
    """Simulate and reconstruct one subject on one scanner.

    Returns the short and long scans, or the six frames when ``frames`` is set,
    plus the phantom the scans were drawn from.  ``vary_anatomy`` gives the subject
    its own cortex thickness, ventricle size and a smooth deformation (opt-in: see
    :func:`petite.data.phantom.make_subject_phantom`).
    """
    started, cpu_started = time.perf_counter(), time.process_time()
    phantom_rng, acquisition_rng = subject_streams(seed, scanner, index)
    phantom = make_subject_phantom(phantom_rng, vary_anatomy=vary_anatomy)
    iterations, n_subsets = recon.for_scanner(scanner)
    projector = ParallelProjector(scanner.shape[:2], scanner.spacing[:2], _projection_angles(scanner, recon), n_subsets)

    activity = ndimage.gaussian_filter(phantom.activity(scanner), _sigma_voxels(scanner.fwhm_mm, scanner.spacing))
    mu = torch.from_numpy(phantom.attenuation(scanner))
    # numpy for exp and sums: torch's results can depend on the thread count, and the
    # output must not depend on --workers.
    attenuation = torch.from_numpy(np.exp(-projector.forward(mu).numpy()))
    trues = attenuation * projector.forward(torch.from_numpy(activity))  # kBq/mL * mm, per ray
    scatter, randoms = _background(projector, trues, scanner)
    # One scale turns the noiseless model into expected counts of the 30-min scan.
    counts_per_unit = scanner.counts / _total(trues + scatter + randoms)
    background = counts_per_unit * (scatter + randoms)
    expected = counts_per_unit * trues + background
    long_counts = acquisition_rng.poisson(expected.double().numpy())

    # Resolution modelling: the reconstruction knows the PSF the data were blurred with (as a vendor's
    # PSF reconstruction uses the scanner's measured PSF).
    blur = ImageBlur(projector, _sigma_voxels(scanner.fwhm_mm, scanner.spacing)) if scanner.resolution_modelling else None
    sensitivity = OsemSensitivity(projector, attenuation, blur)

    def reconstruct(counts: np.ndarray, fraction: float) -> np.ndarray:
        # Model: counts ~ Poisson(fraction * k * a * A x + fraction * background).  Dividing by the
        # scan's own duration (fraction) puts short and long scans in the same unit, kBq/mL.
        image = osem(projector, torch.from_numpy(counts.astype(np.float32)), attenuation, fraction * background,
                     iterations, scale=fraction * counts_per_unit, sensitivity=sensitivity, blur=blur)
        return _finish(image.numpy(), scanner)

    scans = SubjectScans(subject=subject_id(scanner, index), phantom=phantom)
    if frames:
        remaining = long_counts
        images = []
        for frame in range(N_FRAMES):
            # Multinomial thinning, one frame at a time: frame f gets 1/(6-f) of what is left.
            frame_counts = acquisition_rng.binomial(remaining, 1.0 / (N_FRAMES - frame))
            remaining = remaining - frame_counts
            images.append(reconstruct(frame_counts, SHORT_FRACTION))
        scans.frames = np.stack(images, axis=-1)
    else:
        short_counts = acquisition_rng.binomial(long_counts, SHORT_FRACTION)
        scans.short = reconstruct(short_counts, SHORT_FRACTION)
        scans.long = reconstruct(long_counts, 1.0)
    scans.seconds = time.perf_counter() - started
    scans.cpu_seconds = time.process_time() - cpu_started
    return scans


def _projection_angles(scanner: Scanner, recon: ReconSettings) -> int:
    """The scanner's angles; with a ``--subsets`` override, rounded up to a multiple of it."""
    if recon.subsets is None:
        return scanner.projection_angles()
    if scanner.n_angles is not None:
        return max(scanner.n_angles, recon.subsets)
    half = max(scanner.shape[0], scanner.shape[1]) / 2
    return int(math.ceil(half / recon.subsets) * recon.subsets)


def _sigma_voxels(fwhm_mm: Sequence[float], spacing: Sequence[float]) -> tuple[float, ...]:
    return tuple(f * _FWHM_TO_SIGMA / s for f, s in zip(fwhm_mm, spacing))


def _background(projector: ParallelProjector, trues: torch.Tensor, scanner: Scanner) -> tuple[torch.Tensor, torch.Tensor]:
    """Expected scatter and randoms sinograms in the units of ``trues``."""
    geometry = projector.geometry
    smooth = ndimage.gaussian_filter(
        projector.sinogram_view(trues).numpy(),
        sigma=(0.0, SCATTER_SIGMA_MM / geometry.bin_width, SCATTER_SIGMA_MM / scanner.spacing[2]), mode="constant")
    smooth = torch.from_numpy(smooth).reshape(trues.shape)
    total_trues = _total(trues)
    scatter_total = total_trues * scanner.scatter_fraction / (1.0 - scanner.scatter_fraction)
    scatter = smooth * (scatter_total / max(_total(smooth), 1e-30))
    randoms_total = (total_trues + scatter_total) * scanner.randoms_fraction / (1.0 - scanner.randoms_fraction)
    randoms = torch.full_like(trues, randoms_total / trues.numel())
    return scatter, randoms


def _total(values: torch.Tensor) -> float:
    """Sum in float64 with numpy: exact-order, independent of torch's thread count."""
    return float(values.numpy().sum(dtype=np.float64))


def _finish(image: np.ndarray, scanner: Scanner) -> np.ndarray:
    if scanner.postfilter_fwhm_mm > 0:
        image = ndimage.gaussian_filter(image, _sigma_voxels([scanner.postfilter_fwhm_mm] * 3, scanner.spacing))
    return (np.clip(image, 0, None) * scanner.intensity_scale).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# The dataset: all subjects x scanners, files, datalists, montage, record.


@dataclass(frozen=True)
class SimulationRequest:
    """Everything ``petite simulate`` needs; validated by :meth:`validate`."""

    out: Path
    scanners: tuple[Scanner, ...]
    n_subjects: int
    seed: int = 0
    frames: bool = False
    workers: int = 1
    split_sizes: tuple[int, ...] = DEFAULT_SPLIT_SIZES
    recon: ReconSettings = ReconSettings()
    overwrite: bool = False
    montage: bool = True
    vary_anatomy: bool = False  # opt-in per-subject anatomy (cortex, ventricles, deformation)

    def validate(self) -> None:
        """Raise :class:`UserError` for anything the user can get wrong, before anything is written."""
        if not self.scanners:
            raise UserError("no scanner to simulate")
        if len({s.id for s in self.scanners}) != len(self.scanners):
            raise UserError("a scanner is listed twice")
        if self.n_subjects < 1:
            raise UserError(f"--subjects must be at least 1, got {self.n_subjects}")
        if self.workers < 1:
            raise UserError(f"--workers must be at least 1, got {self.workers}")
        if self.seed < 0:
            raise UserError(f"--seed must be non-negative, got {self.seed}")
        if len(self.split_sizes) != len(SPLITS) or any(s < 0 for s in self.split_sizes):
            raise UserError(f"split sizes must be five non-negative integers, got {self.split_sizes}")
        for name, value in (("--iterations", self.recon.iterations), ("--subsets", self.recon.subsets)):
            if value is not None and not 1 <= value <= 64:
                raise UserError(f"{name} must be in [1, 64], got {value}")
        out = Path(self.out)
        if out.exists() and not out.is_dir():
            raise UserError("output folder is a file", out)
        if out.is_dir() and holds_simulation(out) and not self.overwrite:
            raise UserError("already holds a simulation; pass --overwrite to replace it", out)


def holds_simulation(folder: Path) -> bool:
    """Whether ``folder`` contains the output of an earlier simulation."""
    return (folder / "simulation.json").exists() or any(folder.glob("scanner*/datalist.json"))


def run_simulation(request: SimulationRequest, progress: bool = True) -> dict[str, Any]:
    """Simulate every subject on every scanner and write the dataset; returns the record written.

    Layout: ``out/scanner<id>/<subject>_{short,long}.nii.gz`` (or ``_frames``),
    ``out/scanner<id>/datalist.json``, ``out/montage.png``, ``out/simulation.json``.
    Volumes are written atomically as jobs finish; datalists, montage and the
    record only once every job succeeded (the record last).
    """
    request.validate()
    for scanner in request.scanners:
        _warn_if_head_is_cut(scanner)
    out = Path(request.out)
    out.mkdir(parents=True, exist_ok=True)
    if request.overwrite:
        # The old record and datalists go first: a failed rerun then leaves no datalist
        # pointing at volumes that were half replaced.
        (out / "simulation.json").unlink(missing_ok=True)
        for scanner in request.scanners:
            (out / f"scanner{scanner.id}" / "datalist.json").unlink(missing_ok=True)
    jobs = [(scanner, index, request.seed, request.frames, request.recon, str(out), request.vary_anatomy)
            for scanner in request.scanners for index in range(request.n_subjects)]
    started = time.perf_counter()
    if request.workers == 1:
        load_template_tissues()  # once per process; kept out of the per-job timings
    results = run_jobs(_run_job, jobs, lambda job: (job[0].id, job[1]), request.workers, progress=progress,
                       desc="simulate", unit="scan", initializer=_init_worker)
    wall = time.perf_counter() - started

    datalists = {}
    for scanner in request.scanners:
        folder = out / f"scanner{scanner.id}"
        items = {results[(scanner.id, i)]["subject"]: results[(scanner.id, i)]["files"] for i in range(request.n_subjects)}
        _remove_stale_volumes(folder, {Path(p).name for files in items.values() for p in files.values()})
        splits = assign_splits(sorted(items), request.split_sizes, seed=request.seed)
        datalists[scanner.id] = build_datalist(items, splits, scanner.id, request.seed, folder)
    if request.montage:
        rows = montage_rows_from_datalists([(f"scanner {sid}", out / f"scanner{sid}", dl) for sid, dl in datalists.items()])
        save_montage(out / "montage.png", rows)
    for scanner_id, datalist in datalists.items():
        write_datalist(out / f"scanner{scanner_id}" / "datalist.json", datalist)

    def per_scanner(scanner: Scanner, key: str) -> list[Any]:
        return [results[(scanner.id, index)][key] for index in range(request.n_subjects)]

    record = {
        "format": SIMULATION_FORMAT,
        "petite_version": __version__,
        "software": {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__},
        "options": {
            "scanners": [s.id for s in request.scanners], "subjects": request.n_subjects, "seed": request.seed,
            "frames": request.frames, "workers": request.workers, "split_sizes": list(request.split_sizes),
            "iterations": request.recon.iterations, "subsets": request.recon.subsets,
            "anatomy": "varied" if request.vary_anatomy else "template",
        },
        "seed": request.seed,
        "scanners": [dict(s.to_dict(), projection_angles=_projection_angles(s, request.recon),
                          osem=dict(zip(("iterations", "subsets"), request.recon.for_scanner(s))))
                     for s in request.scanners],
        "subjects": {s.id: dict(zip(per_scanner(s, "subject"), per_scanner(s, "parameters"))) for s in request.scanners},
        # Means per subject-scanner job: simulation + reconstructions (wall clock and CPU time
        # of all threads), then the NIfTI writing (gzip).
        "seconds_per_subject": {s.id: float(np.mean(per_scanner(s, "seconds"))) for s in request.scanners},
        "cpu_seconds_per_subject": {s.id: float(np.mean(per_scanner(s, "cpu_seconds"))) for s in request.scanners},
        "write_seconds_per_subject": {s.id: float(np.mean(per_scanner(s, "write_seconds"))) for s in request.scanners},
        "wall_seconds": wall,
    }
    write_json(out / "simulation.json", record)
    return record


def _warn_if_head_is_cut(scanner: Scanner) -> None:
    transaxial = min(scanner.shape[0] * scanner.spacing[0], scanner.shape[1] * scanner.spacing[1])
    axial = scanner.shape[2] * scanner.spacing[2]
    if transaxial < HEAD_DIAMETER_MM or axial < BRAIN_HEIGHT_MM:
        log.warning("scanner %s: field of view %.0f mm across and %.0f mm axially may cut the head "
                    "(about %d x %d mm): activity outside it is lost", scanner.id, transaxial, axial,
                    HEAD_DIAMETER_MM, BRAIN_HEIGHT_MM)


def _init_worker() -> None:
    # Parallelism comes from the processes; threads inside each would oversubscribe the cores.
    torch.set_num_threads(1)
    load_template_tissues()


def _run_job(scanner: Scanner, index: int, seed: int, frames: bool, recon: ReconSettings, out: str,
             vary_anatomy: bool = False) -> dict[str, Any]:
    scans = simulate_subject(scanner, index, seed, frames=frames, recon=recon, vary_anatomy=vary_anatomy)
    writing = time.perf_counter()
    folder = Path(out) / f"scanner{scanner.id}"
    affine = scanner.affine()
    files: dict[str, str] = {}
    volumes = {"frames": scans.frames} if frames else {"short": scans.short, "long": scans.long}
    for key, volume in volumes.items():
        path = folder / f"{scans.subject}_{key}.nii.gz"
        save_volume(path, volume, affine, header=_frame_header(volume.shape, scanner) if key == "frames" else None)
        files[key] = str(path)
    log.debug("%s on scanner %s: %.1f s", scans.subject, scanner.id, scans.seconds)
    return {"subject": scans.subject, "files": files, "seconds": scans.seconds,
            "write_seconds": time.perf_counter() - writing, "cpu_seconds": scans.cpu_seconds,
            "parameters": scans.phantom.parameters.to_dict() if scans.phantom else None}


def _frame_header(shape: tuple[int, ...], scanner: Scanner) -> nib.Nifti1Header:
    """Header whose 4th pixel dimension is the frame duration in seconds (5 minutes)."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_zooms((*scanner.spacing, FRAME_SECONDS))
    return header


def _remove_stale_volumes(folder: Path, keep: set[str]) -> None:
    """After ``--overwrite``: drop volumes of an earlier, larger simulation (our naming pattern only)."""
    for path in folder.glob("*.nii.gz"):
        if _VOLUME_NAME.match(path.name) and path.name not in keep:
            path.unlink()
