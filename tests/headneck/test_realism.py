"""The ``hecktor`` generator profile: determinism, tumour burden, low uptake, unlabelled hotspots, mass effect, CLI."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import ndimage

from petite.errors import UserError
from petite.headneck.cohort_stats import cohort_summary, summarise_datalist
from petite.headneck.patient import _draw_anatomy, patient_streams, simulate_patient
from petite.headneck.realism import HECKTOR, HOTSPOT_KINDS, nominal_ml_of, resolve_profile
from petite.headneck.synthetic import simulate_hn

ALWAYS_HOT = dataclasses.replace(HECKTOR, hotspot_kinds={k: (1.0, r) for k, (_, r) in HOTSPOT_KINDS.items()})


def test_same_seed_same_patient_and_differs_from_default() -> None:
    one = simulate_patient("B", 2, seed=5, size="tiny", profile="hecktor")
    two = simulate_patient("B", 2, seed=5, size="tiny", profile=HECKTOR)
    for key in ("ct", "pet", "label"):
        assert np.array_equal(getattr(one, key), getattr(two, key))
    assert one.facts == two.facts and one.clinical == two.clinical
    assert one.facts["profile"] == "hecktor" and "profile" not in simulate_patient("B", 2, seed=5, size="tiny").facts
    assert not np.array_equal(one.pet, simulate_patient("B", 2, seed=6, size="tiny", profile="hecktor").pet)
    with pytest.raises(UserError, match="unknown generator profile"):
        resolve_profile("realistic")


def _draws(n: int) -> tuple[list[float], list[int], list[float], list[float], list[bool]]:
    """Nominal GTVp volumes, node counts drawn, per-node volumes, primary SUVs, low-uptake flags of ``n`` patients."""
    volumes, counts, node_volumes, suvs, low = [], [], [], [], []
    for k in range(n):
        rng, _ = patient_streams(11, "A", k)
        lesions, drawn = HECKTOR.draw_lesions(rng, _draw_anatomy(rng))
        volumes.append(nominal_ml_of(lesions[0]))
        counts.append(drawn)
        node_volumes += [nominal_ml_of(node) for node in lesions[1:]]
        suvs.append(lesions[0].suv)
        low.append(lesions[0].suv <= HECKTOR.low_uptake_suv[1])
    return volumes, counts, node_volumes, suvs, low


def test_tumour_burden_follows_the_declared_distributions() -> None:
    volumes, counts, node_volumes, suvs, low = _draws(400)
    # GTVp: log-normal, median 14 mL, log-sd 0.9 -> quartiles ~7.6 / 25.8 mL, 95th percentile ~61 mL.
    assert 11 < np.median(volumes) < 17.5
    assert 5.5 < np.quantile(volumes, 0.25) < 10 and 19 < np.quantile(volumes, 0.75) < 34
    assert 40 < np.quantile(volumes, 0.95) < 90 and min(volumes) >= 1.0 - 1e-9 and max(volumes) <= 150 + 1e-9
    # Nodes: P(0) = 0.25, P(1..3) = 0.62, at most 6; each node median 3 mL.
    counts = np.asarray(counts)
    assert 0.19 < np.mean(counts == 0) < 0.31 and 0.55 < np.mean((counts >= 1) & (counts <= 3)) < 0.69
    assert counts.max() <= 6 and np.mean(counts >= 4) > 0.05
    assert 2.2 < np.median(node_volumes) < 4.0 and min(node_volumes) >= 0.3 - 1e-9
    # Low-uptake primaries: ~15 %, mean SUV 1.8-3.0; the others 4-20.
    assert 0.10 < np.mean(low) < 0.21
    suvs = np.asarray(suvs)
    assert np.all((suvs >= 1.8) & (suvs <= 20)) and not np.any((suvs > 3.0) & (suvs < 4.0))


def test_small_cohort_measured_on_the_images() -> None:
    patients = [simulate_patient(c, k, seed=3, size="tiny", profile="hecktor") for c in ("A", "C") for k in range(4)]
    summary = cohort_summary([{"facts": p.facts} for p in patients])
    assert summary["patients"] == 8 and sum(summary["node_count"].values()) == 8
    for p in patients:
        f = p.facts
        assert f["n_nodes"] <= f["n_nodes_drawn"] and (np.count_nonzero(p.label == 2) > 0) == (f["n_nodes"] > 0)
        # The label's volume tracks the drawn one (lobes add some, the coarse grid and the body clip some).
        assert 0.4 < f["gtvp_ml"] / f["gtvp_ml_nominal"] < 2.5, (p.patient, f["gtvp_ml"], f["gtvp_ml_nominal"])
        assert f["lesions"][0]["ct_cnr"] is None or -1.5 < f["lesions"][0]["ct_cnr"] < 4


def test_low_uptake_primary_measures_suvmax_2_to_4() -> None:
    low = dataclasses.replace(HECKTOR, primary_low_uptake=1.0, hotspots=False)
    for k in range(3):
        p = simulate_patient("A", k, seed=2, size=(40, 40, 32), profile=low)
        assert p.facts["gtvp_low_uptake"]
        assert 1.5 < p.facts["gtvp_suv_max"] / p.centre.pet_scale < 4.5, p.facts["gtvp_suv_max"]


@pytest.mark.parametrize("index", [0, 1])
def test_hotspots_are_unlabelled_and_in_their_suv_range(index: int) -> None:
    hot = simulate_patient("A", index, seed=4, size="tiny", profile=ALWAYS_HOT)
    cold = simulate_patient("A", index, seed=4, size="tiny", profile=dataclasses.replace(ALWAYS_HOT, hotspots=False))
    assert np.array_equal(hot.label, cold.label)  # hotspots never change the labels
    assert np.array_equal(hot.ct, cold.ct)  # nor the CT (physiological uptake is invisible on CT)
    spots = hot.facts["hotspots"]
    assert len({s["kind"] for s in spots}) >= 5 and hot.facts["n_hotspots"] == len(spots)
    assert cold.facts["n_hotspots"] == 0
    background = float(np.median(cold.pet[(cold.ct > -200) & (cold.ct < 100) & (cold.label == 0)]))
    for s in spots:
        low, high = HOTSPOT_KINDS[s["kind"]][1]
        assert low * hot.centre.pet_scale - 1e-6 <= s["suv_true"] <= high * hot.centre.pet_scale + 1e-6, s
        assert hot.label[tuple(s["peak_voxel"])] == 0
        assert s["suv_max"] == pytest.approx(float(hot.pet[tuple(s["peak_voxel"])]), abs=1e-3)
        assert s["suv_max"] > background
    raised = hot.pet - cold.pet
    # Tumours are painted over the hotspots; only the PET blur spills some uptake across the border.
    assert raised.max() > 1.0 and hot.label.ravel()[int(np.argmax(raised))] == 0


def _airway_near(ct: np.ndarray, label: np.ndarray) -> np.ndarray | None:
    """Centroid (voxels) of the airway in the primary's axial slices: internal air, not touching the x/y border."""
    air, _ = ndimage.label(ct < -500)
    border = set(np.unique(np.concatenate([air[0].ravel(), air[-1].ravel(), air[:, 0].ravel(), air[:, -1].ravel()])))
    internal = (air > 0) & ~np.isin(air, list(border))
    z = np.nonzero((label == 1).any(axis=(0, 1)))[0]
    internal[:, :, : z.min()] = False
    internal[:, :, z.max() + 1:] = False
    return np.argwhere(internal).mean(axis=0) if internal.any() else None


def test_mass_effect_pushes_soft_structures_away() -> None:
    strong = dataclasses.replace(HECKTOR, mass_effect_range=(0.9, 0.9), hotspots=False)
    none = dataclasses.replace(strong, mass_effect=False)
    checked = 0
    for k in range(3):
        pushed = simulate_patient("E", k, seed=1, size=(48, 48, 40), profile=strong)
        plain = simulate_patient("E", k, seed=1, size=(48, 48, 40), profile=none)
        assert np.array_equal(pushed.label, plain.label)  # the tumours are the same, only the anatomy moved
        assert plain.facts["mass_effect"]["max_shift_mm"] == 0 and pushed.facts["mass_effect"]["max_shift_mm"] > 1
        pushes = pushed.facts["mass_effect"]["structures"]
        assert max(v["max_mm"] for v in pushes.values()) > 1 and not plain.facts["mass_effect"]["structures"]
        # Image check where the airway is beside the primary (not under it, not far from it).
        primary = np.argwhere(pushed.label == 1).mean(axis=0)
        before, after = _airway_near(plain.ct, plain.label), _airway_near(pushed.ct, pushed.label)
        radius = pushed.facts["lesions"][0]["radius_mm"]
        if before is None or after is None or not (
                radius + 3 < np.linalg.norm((before - primary) * pushed.centre.spacing) < radius + 30):
            continue
        away = (before - primary) / np.linalg.norm(before - primary)
        assert float((after - before) @ away) > 0.05, (k, before, after, primary)
        checked += 1
    assert checked >= 1


def test_cohort_datalist_and_cli(tmp_path: Path, dataset: Path) -> None:
    assert "profile" not in json.loads(dataset.read_text())  # a default cohort's datalist is as before profiles
    path = simulate_hn(tmp_path / "h", centres=("A",), n_patients=2, seed=1, size="tiny", profile="hecktor")
    assert json.loads(path.read_text())["profile"] == "hecktor"
    summary = summarise_datalist(path)
    assert summary["profiles"] == ["hecktor"] and summary["gtvp_ml_nominal"]["n"] == 2
    assert summarise_datalist(dataset)["hotspots_per_patient"] == {"n": 0}
    with pytest.raises(UserError, match="unknown generator profile"):
        simulate_hn(tmp_path / "x", centres=("A",), n_patients=1, size="tiny", profile="nope")
    assert not (tmp_path / "x" / "datalist.json").exists()

    from petite.cli import _register_commands
    from petite.cli.app import cli

    _register_commands()
    result = CliRunner().invoke(cli, ["mm", "simulate", "--out", str(tmp_path / "c"), "--centres", "A",
                                      "--patients", "1", "--size", "tiny", "--quiet", "--profile", "hecktor",
                                      "--summary"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].endswith("datalist.json") and json.loads(Path(lines[0]).read_text())["profile"] == "hecktor"
    stats = json.loads("\n".join(lines[1:]))
    assert stats["profiles"] == ["hecktor"] and stats["patients"] == 1 and stats["hotspots_per_patient"]["n"] == 1
