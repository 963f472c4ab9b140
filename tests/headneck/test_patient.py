"""One synthetic patient: determinism, plausible anatomy and lesions, centres, clinical record and survival."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from petite.headneck.centres import get_centre
from petite.headneck.patient import patient_streams, simulate_patient


@pytest.fixture(scope="module")
def patients() -> list:
    return [simulate_patient(c, k, seed=1, size="tiny") for c in ("A", "B", "C", "D") for k in range(3)]


def test_same_seed_same_patient_and_seed_matters() -> None:
    one, two = simulate_patient("A", 1, seed=5, size="tiny"), simulate_patient("A", 1, seed=5, size="tiny")
    for key in ("ct", "pet", "label"):
        assert np.array_equal(getattr(one, key), getattr(two, key))
    assert one.facts == two.facts
    other = simulate_patient("A", 1, seed=6, size="tiny")
    assert not np.array_equal(one.pet, other.pet)


def test_every_patient_has_a_hot_primary_and_plausible_ct(patients: list) -> None:
    for p in patients:
        assert p.label.dtype == np.uint8 and set(np.unique(p.label)) <= {0, 1, 2}
        gtvp = p.label == 1
        assert gtvp.any(), p.patient
        body_background = (p.ct > -500) & (p.label == 0)
        assert p.pet[gtvp].mean() > 2 * p.pet[body_background].mean(), p.patient
        assert abs(float(np.median(p.ct[:3, :3, :])) + 1000) < 30  # air outside the body
        assert p.ct.max() > 300  # bone
        assert p.pet.min() >= 0
        assert p.facts["gtvp_ml"] > 0 and p.facts["n_nodes"] == len(p.facts["lesions"]) - 1
    visible = [p.facts["gtvp_ct_visible"] for p in patients]
    assert any(visible) and not all(visible)
    assert any(p.facts["n_nodes"] > 0 for p in patients)


def test_centres_change_appearance_not_anatomy() -> None:
    a = get_centre("A", "tiny")
    c_like_a = dataclasses.replace(get_centre("C", "tiny"), id="A", spacing=a.spacing, shape=a.shape)
    sharp, blurry = simulate_patient(a, 0, seed=2), simulate_patient(c_like_a, 0, seed=2)
    assert np.array_equal(sharp.label, blurry.label)  # same patient, same tumours
    gtvp = sharp.label == 1
    assert blurry.pet[gtvp].mean() < 0.9 * sharp.pet[gtvp].mean()  # worse resolution, lower calibration
    air = sharp.ct < -900
    assert blurry.ct[air].std() > 1.8 * sharp.ct[air].std()  # 28 HU vs 12 HU noise
    assert abs(float(np.median(blurry.ct[air])) - float(np.median(sharp.ct[air]))) > 10  # calibration


def test_survival_does_not_change_with_size() -> None:
    small, tiny = simulate_patient("B", 2, seed=9, size=(40, 40, 32)), simulate_patient("B", 2, seed=9, size="tiny")
    assert small.clinical == tiny.clinical and small.facts["hazard"] == tiny.facts["hazard"]
    other = simulate_patient("B", 3, seed=9, size="tiny")
    assert other.clinical != tiny.clinical
    # The clinical stream is not one of the image streams.
    params, noise = patient_streams(9, "B", 2)
    from petite.headneck.patient import clinical_stream

    first = clinical_stream(9, "B", 2).random()
    assert first not in (params.random(), noise.random())
