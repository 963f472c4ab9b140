"""The simulated centres: grid sizes keep the field of view (and the patient's lesions)."""

from __future__ import annotations

import numpy as np

from petite.headneck.centres import get_centre
from petite.headneck.patient import simulate_patient


def test_sizes_keep_field_of_view_and_lesions() -> None:
    tiny, small = get_centre("B", "tiny"), get_centre("B", "small")
    assert tiny.shape == (32, 32, 32) and small.shape == (64, 64, 48)
    assert np.allclose(tiny.fov_mm, small.fov_mm, rtol=1e-3)
    assert get_centre("B", (40, 40, 36)).shape == (40, 40, 36)
    p_tiny, p_small = simulate_patient("B", 0, seed=3, size="tiny"), simulate_patient("B", 0, seed=3, size="small")
    assert p_small.ct.shape == (64, 64, 48)
    assert p_tiny.facts["primary_site"] == p_small.facts["primary_site"]
    assert [e["radius_mm"] for e in p_tiny.facts["lesions"]] == [e["radius_mm"] for e in p_small.facts["lesions"]]
