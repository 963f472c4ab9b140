"""The classical baselines recover what they were fitted for, on known data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from petite.baselines.calibration import LinearCalibration
from petite.baselines.gaussian import GaussianFilter
from petite.baselines.nlm import NonLocalMeans
from petite.errors import UserError


def _subjects(n: int = 3, gain: float = 1.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, 24)] * 3, indexing="ij"))
    head = (grid**2).sum(0) < 0.6
    shorts, longs, masks = [], [], []
    for _ in range(n):
        clean = ndimage.gaussian_filter(rng.random(head.shape), 2.0) * 8 * head
        longs.append(clean.astype(np.float32))
        shorts.append((clean / gain + rng.normal(0, 0.4, head.shape)).astype(np.float32))
        masks.append(head)
    return shorts, longs, masks


def test_gaussian_fit_finds_the_gain_and_smooths_the_noise() -> None:
    shorts, longs, masks = _subjects(gain=1.25)
    fitted = GaussianFilter.fit(shorts, longs, masks)
    assert fitted.gain == pytest.approx(1.25, rel=0.05)
    assert fitted.sigma > 0  # white noise on a smooth image: some smoothing helps
    def err(pred: np.ndarray, t: np.ndarray, m: np.ndarray) -> float:
        return float(((pred - t)[m] ** 2).mean())
    s, t, m = _subjects(1, gain=1.25, seed=9)
    assert err(fitted.apply(s[0]), t[0], m[0]) < 0.8 * err(1.25 * s[0], t[0], m[0])
    # The fitted pair beats every other sigma of the grid on the training subjects.
    def total(f: GaussianFilter) -> float:
        return sum(err(f.apply(a), b, c) for a, b, c in zip(shorts, longs, masks))
    for sigma in (0.0, 0.5, 1.0, 2.0, 3.0):
        other = GaussianFilter.fit(shorts, longs, masks, sigmas=(sigma,))
        assert total(fitted) <= total(other) + 1e-9


def test_calibration_recovers_a_known_gain_offset_and_background() -> None:
    rng = np.random.default_rng(1)
    longs = [rng.random((10, 10, 10)).astype(np.float32) for _ in range(2)]
    heads = [np.ones((10, 10, 10), bool) for _ in range(2)]
    for h in heads:
        h[:2] = False
    preds = [(t - 0.3) / 2.0 for t in longs]  # the model is off by a gain of 2 and an offset
    fitted = LinearCalibration.fit(preds, longs, heads)
    assert fitted.gain == pytest.approx(2.0, rel=1e-6) and fitted.offset == pytest.approx(0.3, abs=1e-6)
    assert fitted.background == pytest.approx(float(np.concatenate([t[~h] for t, h in zip(longs, heads)]).mean()))
    out = fitted.apply(preds[0], heads[0])
    np.testing.assert_allclose(out[heads[0]], longs[0][heads[0]], atol=1e-5)


def test_nlm_denoises_better_than_nothing() -> None:
    shorts, longs, masks = _subjects(2)
    fitted = NonLocalMeans.fit(shorts, longs, masks, h_factors=(0.6, 1.0))
    s, t, m = _subjects(1, seed=5)
    assert float(((fitted.apply(s[0]) - t[0])[m[0]] ** 2).mean()) < float(((s[0] - t[0])[m[0]] ** 2).mean())


def test_fitting_needs_subjects() -> None:
    with pytest.raises(UserError, match="at least one subject"):
        GaussianFilter.fit([], [], [])
