"""petite.metrics against scikit-image configured the same way, and the `petite metrics` CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.metrics import normalized_root_mse, peak_signal_noise_ratio, structural_similarity

from petite.data.masks import head_mask
from petite.data.nifti import make_affine, save_volume
from petite.metrics import compute_metrics, nrmse, psnr, scale_unit, ssim
from tests.cli_runner import run_cli


def _noisy_smooth(shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A smooth 'activity' volume and a noisy, slightly biased estimate of it, both in [0, 1]."""
    rng = np.random.default_rng(seed)
    truth = ndimage.gaussian_filter(rng.random(shape), 2.0)
    truth = (truth - truth.min()) / (truth.max() - truth.min())
    pred = 0.95 * truth + 0.02 + 0.05 * ndimage.gaussian_filter(rng.standard_normal(shape), 0.7)
    return np.clip(pred, 0, 1), truth


def _skimage_ssim(pred: np.ndarray, target: np.ndarray, gaussian: bool, sample_cov: bool = True) -> float:
    return structural_similarity(
        target, pred, win_size=7, data_range=target.max(), K1=0.01, K2=0.03,
        gaussian_weights=gaussian, use_sample_covariance=sample_cov,
    )


CASES = [
    ("random", lambda: (np.random.default_rng(1).random((20, 18, 15)), np.random.default_rng(2).random((20, 18, 15)))),
    ("noisy-smooth", lambda: _noisy_smooth((24, 22, 17), 3)),
    ("anisotropic-thin", lambda: _noisy_smooth((32, 12, 9), 4)),
]


@pytest.mark.parametrize("window", ["uniform", "gaussian"])
@pytest.mark.parametrize("sample_cov", [True, False])
@pytest.mark.parametrize("name,make", CASES, ids=[c[0] for c in CASES])
def test_ssim_matches_skimage(name: str, make, window: str, sample_cov: bool) -> None:
    pred, target = make()
    ours = ssim(pred, target, window=window, sample_covariance=sample_cov)
    ref = _skimage_ssim(pred, target, gaussian=window == "gaussian", sample_cov=sample_cov)
    assert ours == pytest.approx(ref, abs=1e-4)


def test_ssim_window_and_covariance_actually_differ() -> None:
    # Guards against an option that is silently ignored.
    pred, target = _noisy_smooth((20, 20, 20), 5)
    values = {(w, c): ssim(pred, target, window=w, sample_covariance=c) for w in ("uniform", "gaussian") for c in (True, False)}
    assert len({round(v, 8) for v in values.values()}) == 4


def test_ssim_properties() -> None:
    pred, target = _noisy_smooth((16, 16, 16), 6)
    assert ssim(target, target) == pytest.approx(1.0)
    assert ssim(pred, target) < 1.0
    # The data range defaults to the target's maximum (not its range, not the prediction's).
    shifted = target + 0.5
    assert ssim(pred + 0.5, shifted) == pytest.approx(ssim(pred + 0.5, shifted, data_range=1.5), abs=1e-12)
    assert ssim(pred + 0.5, shifted) != pytest.approx(ssim(pred + 0.5, shifted, data_range=1.0), abs=1e-6)
    # Symmetric once the data range is fixed.
    assert ssim(pred, target, data_range=1.0) == pytest.approx(ssim(target, pred, data_range=1.0), abs=1e-12)
    with pytest.raises(ValueError):
        ssim(np.ones((6, 8, 8)), np.ones((6, 8, 8)))


def test_psnr_and_nrmse_match_skimage() -> None:
    pred, target = _noisy_smooth((20, 20, 12), 7)
    assert psnr(pred, target) == pytest.approx(peak_signal_noise_ratio(target, pred, data_range=1.0), abs=1e-4)
    assert psnr(pred, target) == pytest.approx(-10 * np.log10(np.mean((pred - target) ** 2)), abs=1e-9)
    assert nrmse(pred, target) == pytest.approx(normalized_root_mse(target, pred, normalization="min-max"), abs=1e-6)
    raw_t, raw_p = 1000 * target + 50, 1000 * pred + 50
    assert psnr(raw_p, raw_t, data_range=None) == pytest.approx(
        peak_signal_noise_ratio(raw_t, raw_p, data_range=raw_t.max() - raw_t.min()), abs=1e-4
    )
    assert psnr(target, target) == float("inf")


def test_compute_metrics_accepts_tensors_and_items() -> None:
    pred, target = _noisy_smooth((16, 16, 16), 8)
    ref = compute_metrics(pred, target)
    assert set(ref) == {"psnr", "ssim", "nrmse"}
    as_items = compute_metrics(torch.from_numpy(pred)[None].float(), torch.from_numpy(target)[None, None].float())
    for key in ref:
        assert as_items[key] == pytest.approx(ref[key], rel=1e-4)
    gauss = compute_metrics(pred, target, ssim_window="gaussian")
    assert gauss["ssim"] == pytest.approx(_skimage_ssim(pred, target, gaussian=True), abs=1e-4)
    with pytest.raises(ValueError):
        compute_metrics(pred, target[:-1])




def test_metrics_cli_scales_and_matches_library(tmp_path, capsys) -> None:
    pred, target = _noisy_smooth((20, 18, 16), 9)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in pred.shape], indexing="ij"))
    ball = ((grid**2).sum(0) < 0.7).astype(np.float64)  # a head in an empty background
    pred, target = pred * ball, target * ball
    affine = make_affine((2.0, 2.0, 2.0), pred.shape)
    # A prediction in the target's units: the CLI must not rescale it by its own range.
    save_volume(tmp_path / "pred.nii.gz", 300 * pred + 1, affine)
    save_volume(tmp_path / "target.nii.gz", 300 * target + 1, affine)
    code, out, _ = run_cli(["metrics", str(tmp_path / "pred.nii.gz"), str(tmp_path / "target.nii.gz"), "--json"], capsys)
    assert code == 0
    result = json.loads(out)
    target32 = (300 * target + 1).astype(np.float32)
    expected = compute_metrics((300 * pred + 1).astype(np.float32), target32, mask=head_mask(target32))
    assert set(result) == set(expected) >= {"psnr", "ssim", "nrmse", "psnr_masked", "ssim_masked", "background"}
    for key in expected:
        assert result[key] == pytest.approx(expected[key], rel=1e-4)
    # On the target's [0, 1] scale these are the paper's numbers (skimage, data range 1).
    assert result["psnr"] == pytest.approx(peak_signal_noise_ratio(scale_unit(target32), (300 * pred + 1 - target32.min())
                                                                   / (target32.max() - target32.min()), data_range=1.0),
                                           rel=1e-4)
    # A prediction with another gain is worse, not rescaled away (the old default scaled each by its own range).
    save_volume(tmp_path / "gain.nii.gz", 1.5 * (300 * pred + 1), affine)
    code, out, _ = run_cli(["metrics", str(tmp_path / "gain.nii.gz"), str(tmp_path / "target.nii.gz"), "--json"], capsys)
    assert json.loads(out)["psnr_masked"] < result["psnr_masked"] - 3
    code, out, _ = run_cli(["metrics", str(tmp_path / "gain.nii.gz"), str(tmp_path / "target.nii.gz"), "--json",
                            "--scale-each"], capsys)
    assert json.loads(out)["psnr"] == pytest.approx(result["psnr"], abs=0.5)

    argv = ["metrics", str(tmp_path / "pred.nii.gz"), str(tmp_path / "target.nii.gz"), "--ssim-window", "gaussian"]
    code, out, _ = run_cli(argv, capsys)
    assert code == 0 and "PSNR" in out and "SSIM" in out and "NRMSE" in out and "head" in out


def test_metrics_cli_shape_mismatch(tmp_path, capsys) -> None:
    save_volume(tmp_path / "a.nii.gz", np.random.default_rng(0).random((10, 10, 10)), np.eye(4))
    save_volume(tmp_path / "b.nii.gz", np.random.default_rng(1).random((10, 10, 9)), np.eye(4))
    code, out, err = run_cli(["metrics", str(tmp_path / "a.nii.gz"), str(tmp_path / "b.nii.gz")], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "a.nii.gz" in err and "shape" in err


def test_masked_metrics_agree_with_scikit_image_on_the_head_voxels() -> None:
    pred, target = _noisy_smooth((24, 22, 20), 11)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in target.shape], indexing="ij"))
    mask = (grid**2).sum(0) < 0.5
    pred, target = 5 * pred + 2, 5 * target + 2  # in "scan units": compute_metrics maps both by the target's range
    got = compute_metrics(pred, target, mask=mask)
    lo, hi = target.min(), target.max()
    p, t = (pred - lo) / (hi - lo), (target - lo) / (hi - lo)
    assert got["psnr_masked"] == pytest.approx(peak_signal_noise_ratio(t[mask], p[mask], data_range=1.0), rel=1e-9)
    assert got["nrmse_masked"] == pytest.approx(np.sqrt(np.mean((p[mask] - t[mask]) ** 2)), rel=1e-9)
    _, full = structural_similarity(t, p, win_size=7, data_range=1.0, K1=0.01, K2=0.03, full=True)
    inner = (slice(3, -3),) * 3
    assert got["ssim_masked"] == pytest.approx(full[inner][mask[inner]].mean(), rel=1e-6)
    assert got["background"] == pytest.approx(p[~mask].mean(), rel=1e-9)
    assert got["psnr"] == pytest.approx(peak_signal_noise_ratio(t, p, data_range=1.0), rel=1e-9)
