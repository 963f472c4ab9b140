"""Encoder features: deterministic, the documented shape, the refused models and windows."""

from __future__ import annotations

import numpy as np
import pytest

from petite.errors import UserError
from petite.prognosis.features import extract_features, feature_names, load_cases
from tests.headneck.cohort import all_items as _all_items

pytestmark = pytest.mark.usefixtures("one_thread")


def test_extract_features_is_deterministic_with_the_documented_shape(datalist: dict, models: dict) -> None:
    items = _all_items(datalist)[:3]
    cases = load_cases(items)
    assert cases[0]["spacing"] == pytest.approx([6.25, 6.25, 5.0])
    ct = extract_features(models["ct"], cases, "ct")
    width = 2 * models["ct"].hidden_size + 2
    assert ct.shape == (3, width) and ct.dtype == np.float32 and np.isfinite(ct).all()
    assert feature_names(models["ct"])[-2:] == ["log_tumour_ml", "tumour_uptake"]
    assert len(feature_names(models["ct"])) == width
    np.testing.assert_array_equal(ct, extract_features(models["ct"], items, "ct"))  # items load the same
    both = extract_features(models["pemma"], cases, "ctpet")
    assert both.shape == (3, width)
    np.testing.assert_array_equal(both, extract_features(models["pemma"], cases, "ctpet"))
    assert not np.array_equal(both, extract_features(models["pemma"], cases, "ct"))
    whole = extract_features(models["ct"], cases, "ct", region="volume")
    assert whole.shape == (3, width) and not np.array_equal(whole, ct)
    assert (ct[:, -2] >= 0).all()
    with pytest.raises(UserError, match="input channel"):
        extract_features(models["ct"], cases, "ctpet")
    with pytest.raises(UserError, match="differs from the model's input size"):
        extract_features(models["ct"], cases, "ct", roi=24)
    from petite.pemma.baselines import LateFusion

    with pytest.raises(UserError, match="one encoder"):
        extract_features(LateFusion(models["ct"], models["ct"]), cases, "ctpet")
