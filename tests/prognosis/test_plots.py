"""The Kaplan-Meier figure: a PNG of two risk groups, refused when the threshold does not split them."""

from __future__ import annotations

import numpy as np
import pytest

from petite.errors import UserError
from petite.prognosis.plots import km_figure

pytestmark = pytest.mark.usefixtures("one_thread")


def test_km_figure_writes_png(tmp_path):
    rng = np.random.default_rng(8)
    risk = rng.normal(size=60)
    time = np.ceil(rng.exponential(300 * np.exp(-risk)))
    event = rng.random(60) < 0.8
    info = km_figure(tmp_path / "km.png", time, event, risk)
    assert (tmp_path / "km.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert info["groups"]["low"]["n"] == info["groups"]["high"]["n"] == 30
    assert info["p_value"] < 0.05
    assert [p.name for p in tmp_path.iterdir()] == ["km.png"]
    with pytest.raises(UserError, match="does not split"):
        km_figure(tmp_path / "bad.png", time, event, np.zeros(60))
    assert not (tmp_path / "bad.png").exists()
