"""Prognosis heads learn a known risk (with and without clinical variables) and round-trip through a run folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from petite.errors import UserError
from petite.headneck.clinical import VARIABLES, draw_patient
from petite.prognosis.evaluation import evaluate_prognosis
from petite.prognosis.heads import train_prognosis
from petite.prognosis.runs import load_heads, save_heads

pytestmark = pytest.mark.usefixtures("one_thread")


def _cohort(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, 30)) * 2 + 3
    records = [draw_patient(np.random.default_rng(1000 + k), 10.0, 8.0) for k in range(n)]
    hpv = np.array([r["hpv"] if r["hpv"] is not None else 0 for r in records])
    eta = 1.5 * (features[:, -1] - 3) / 2 - 1.5 * hpv
    time_days = np.ceil(rng.exponential(np.exp(-eta) * 800))
    censor = rng.uniform(200, 2500, n)
    event = (time_days <= censor).astype(int)
    return features, records, np.minimum(time_days, np.ceil(censor)), event


def test_train_prognosis_learns_a_known_risk_and_round_trips(tmp_path: Path) -> None:
    features, records, time_days, event = _cohort(160)
    train, test = slice(0, 110), slice(110, 160)
    imaging = train_prognosis(features[train], records[train], time_days[train], event[train], seeds=[0, 1],
                                 epochs=80)
    result = evaluate_prognosis(imaging, features[test], records[test], time_days[test], event[test],
                                   km_png=tmp_path / "km.png")
    assert result["c_index"] > 0.7 and min(result["c_index_per_seed"]) > 0.7
    assert 0 < result["ibs"] < 0.25 and result["logrank_p"] < 0.05
    assert Path(result["km_png"]).read_bytes()[:4] == b"\x89PNG"
    fused = train_prognosis(features[train], records[train], time_days[train], event[train], seeds=[0],
                               use_clinical=True, epochs=80)
    both = evaluate_prognosis(fused, features[test], records[test], time_days[test], event[test])
    assert both["c_index"] > result["c_index"] - 0.02       # hpv carries extra risk
    assert fused.imputation["fill"]["hpv"] in (0, 1) and fused.scaling["columns"] == list(VARIABLES)
    save_heads(fused, tmp_path / "heads", {"mode": "ctpet"})
    loaded, meta = load_heads(tmp_path / "heads")
    assert meta["mode"] == "ctpet" and meta["imputation"] == fused.imputation
    np.testing.assert_array_equal(loaded.predict(features[test], records[test]),
                                  fused.predict(features[test], records[test]))
    with pytest.raises(UserError, match="relapse"):
        train_prognosis(features[:5], None, time_days[:5], np.zeros(5))
    with pytest.raises(UserError, match="no parsed clinical record"):
        train_prognosis(features[:9], [{"Age": "60"}] * 9, time_days[:9], event[:9], use_clinical=True)
