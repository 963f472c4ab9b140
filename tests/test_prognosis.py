"""Prognosis: synthetic clinical data and survival, encoder features, survival heads, the CLI and the demo step.

Tiny everything: 32^3 synthetic volumes, a tiny UNETR (16^3 windows) and PEMMA on it, untrained
(features only need to be deterministic and well-shaped here), one torch thread.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from petite.errors import UserError
from petite.multimodal import prognosis as pg
from petite.multimodal.clinical import VARIABLES, draw_patient, read_clinical_csv
from petite.multimodal.datalist import read_mm_datalist, split_names
from petite.multimodal.hecktor import import_hecktor
from petite.multimodal.segmentation import build_segmenter
from petite.multimodal.synthetic import patient_streams, simulate_hn, simulate_patient
from petite.multimodal.upgrade import PEMMA
from tests.cli_runner import run_cli

SIZE = 16
RECORD_KEYS = {*VARIABLES, "time", "event", "centre", "weight"}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 tiny patients of centre A: 7 train (3 relapses), 2 val, 3 test (2 relapses)."""
    return simulate_hn(tmp_path_factory.mktemp("prog") / "sim", centres=("A",), n_patients=12, seed=4, size="tiny")


@pytest.fixture(scope="module")
def datalist(data: Path) -> dict:
    return read_mm_datalist(data)


@pytest.fixture(scope="module")
def models() -> dict:
    torch.manual_seed(0)
    ct = build_segmenter("unetr", "tiny", img_size=SIZE).eval()
    base = build_segmenter("unetr", "tiny", img_size=SIZE)
    base.load_state_dict(ct.state_dict())
    pemma = PEMMA(base, fingerprint=False).eval()
    with torch.no_grad():  # move the PET half of the fusion off zero so PET matters
        pemma.fusion.proj.weight[:, pemma.fusion.width:].normal_(0, 0.05)
    return {"ct": ct, "pemma": pemma}


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory, models: dict) -> Path:
    """A ``ct`` and a ``pemma`` run folder in the format :func:`petite.multimodal.runs.load_run` reads."""
    from petite.multimodal.runs import save_run

    folder = tmp_path_factory.mktemp("runs")
    save_run(folder / "ct", models["ct"], "ct", {"crop": [SIZE] * 3, "pet_norm": "zscore"})
    save_run(folder / "pemma", models["pemma"], "pemma", {"crop": [SIZE] * 3, "pet_norm": "zscore"},
             base_run=folder / "ct")
    return folder


def _all_items(datalist: dict) -> list[dict]:
    return [item for name in split_names(datalist) for item in datalist[name]]


# ----------------------------------------------------------------------------- the generator


def test_generator_writes_clinical_csv_and_records(data: Path, datalist: dict) -> None:
    raw = json.loads(data.read_text())
    assert raw["clinical_csv"] == "clinical.csv" and raw["hazard_model"]["b_sex"] == 0
    table = read_clinical_csv(data.parent / "clinical.csv")
    assert list(table) == [f"A-{k:03d}" for k in range(1, 13)]
    header = (data.parent / "clinical.csv").read_text().splitlines()[0]
    assert header.startswith("PatientID,CenterID,Gender,Age") and header.endswith("Relapse,RFS")
    items = _all_items(datalist)
    for item in items:
        assert item["clinical"] == table[item["patient"]]
        assert set(item["clinical"]) == RECORD_KEYS and item["clinical"]["centre"] == "A"
        assert item["clinical"]["time"] >= 1 and item["clinical"]["event"] in (0, 1)
        assert {"volume_ml", "suv", "eta"} == set(item["facts"]["hazard"])
    assert any(v is None for item in items for v in item["clinical"].values())   # missing values occur
    again = simulate_patient("A", 3, seed=4, size="tiny")
    assert {**again.clinical, "weight": None} == table["A-004"]


def test_survival_does_not_change_with_size() -> None:
    small, tiny = simulate_patient("B", 2, seed=9, size=(40, 40, 32)), simulate_patient("B", 2, seed=9, size="tiny")
    assert small.clinical == tiny.clinical and small.facts["hazard"] == tiny.facts["hazard"]
    other = simulate_patient("B", 3, seed=9, size="tiny")
    assert other.clinical != tiny.clinical
    # The clinical stream is not one of the image streams.
    params, noise = patient_streams(9, "B", 2)
    from petite.multimodal.synthetic import clinical_stream

    first = clinical_stream(9, "B", 2).random()
    assert first not in (params.random(), noise.random())


def test_hecktor_import_parses_a_full_clinical_csv(data: Path, tmp_path: Path, datalist: dict) -> None:
    out = import_hecktor(data.parent / "A", tmp_path / "imported.json", clinical_csv=data.parent / "clinical.csv",
                         splits=(1, 0, 0))
    imported = read_mm_datalist(out)
    by_patient = {i["patient"]: i["clinical"] for i in _all_items(datalist)}
    items = _all_items(imported)
    assert len(items) == 12 and set(imported["centres"]) == {"A"}
    for item in items:
        assert item["clinical"] == by_patient[item["patient"]]
    bad = tmp_path / "bad.csv"
    text = (data.parent / "clinical.csv").read_text().splitlines()
    cells = text[1].split(",")
    cells[3] = "old"
    bad.write_text("\n".join([text[0], ",".join(cells), *text[2:]]) + "\n")
    with pytest.raises(UserError, match="row 2, column 'Age'"):
        import_hecktor(data.parent / "A", tmp_path / "x.json", clinical_csv=bad)


# ----------------------------------------------------------------------------- features


def test_extract_features_is_deterministic_with_the_documented_shape(datalist: dict, models: dict) -> None:
    items = _all_items(datalist)[:3]
    cases = pg.load_cases(items)
    assert cases[0]["spacing"] == pytest.approx([6.25, 6.25, 5.0])
    ct = pg.extract_features(models["ct"], cases, "ct")
    width = 2 * models["ct"].hidden_size + 2
    assert ct.shape == (3, width) and ct.dtype == np.float32 and np.isfinite(ct).all()
    assert pg.feature_names(models["ct"])[-2:] == ["log_tumour_ml", "tumour_uptake"]
    assert len(pg.feature_names(models["ct"])) == width
    np.testing.assert_array_equal(ct, pg.extract_features(models["ct"], items, "ct"))  # items load the same
    both = pg.extract_features(models["pemma"], cases, "ctpet")
    assert both.shape == (3, width)
    np.testing.assert_array_equal(both, pg.extract_features(models["pemma"], cases, "ctpet"))
    assert not np.array_equal(both, pg.extract_features(models["pemma"], cases, "ct"))
    whole = pg.extract_features(models["ct"], cases, "ct", region="volume")
    assert whole.shape == (3, width) and not np.array_equal(whole, ct)
    assert (ct[:, -2] >= 0).all()
    with pytest.raises(UserError, match="input channel"):
        pg.extract_features(models["ct"], cases, "ctpet")
    with pytest.raises(UserError, match="differs from the model's input size"):
        pg.extract_features(models["ct"], cases, "ct", roi=24)
    from petite.multimodal.baselines import LateFusion

    with pytest.raises(UserError, match="one encoder"):
        pg.extract_features(LateFusion(models["ct"], models["ct"]), cases, "ctpet")


# ----------------------------------------------------------------------------- heads


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
    imaging = pg.train_prognosis(features[train], records[train], time_days[train], event[train], seeds=[0, 1],
                                 epochs=80)
    result = pg.evaluate_prognosis(imaging, features[test], records[test], time_days[test], event[test],
                                   km_png=tmp_path / "km.png")
    assert result["c_index"] > 0.7 and min(result["c_index_per_seed"]) > 0.7
    assert 0 < result["ibs"] < 0.25 and result["logrank_p"] < 0.05
    assert Path(result["km_png"]).read_bytes()[:4] == b"\x89PNG"
    fused = pg.train_prognosis(features[train], records[train], time_days[train], event[train], seeds=[0],
                               use_clinical=True, epochs=80)
    both = pg.evaluate_prognosis(fused, features[test], records[test], time_days[test], event[test])
    assert both["c_index"] > result["c_index"] - 0.02       # hpv carries extra risk
    assert fused.imputation["fill"]["hpv"] in (0, 1) and fused.scaling["columns"] == list(VARIABLES)
    pg.save_heads(fused, tmp_path / "heads", {"mode": "ctpet"})
    loaded, meta = pg.load_heads(tmp_path / "heads")
    assert meta["mode"] == "ctpet" and meta["imputation"] == fused.imputation
    np.testing.assert_array_equal(loaded.predict(features[test], records[test]),
                                  fused.predict(features[test], records[test]))
    with pytest.raises(UserError, match="relapse"):
        pg.train_prognosis(features[:5], None, time_days[:5], np.zeros(5))
    with pytest.raises(UserError, match="no parsed clinical record"):
        pg.train_prognosis(features[:9], [{"Age": "60"}] * 9, time_days[:9], event[:9], use_clinical=True)


# ----------------------------------------------------------------------------- CLI and demo step


def test_cli_train_and_evaluate_round_trip(data: Path, runs_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "prognosis"
    run = run_cli(["mm", "prognosis", "train", "--model", runs_dir / "pemma", "--datalist", data,
                   "--splits", "A_train,A_val", "--clinical", "--seeds", "0,1", "--out", out, "--device", "cpu",
                   "--epochs", "20"], capsys)
    assert run.code == 0, run.err
    assert "9 patients (4 relapses)" in run.out
    meta = json.loads((out / "prognosis.json").read_text())
    assert meta["mode"] == "ctpet" and meta["use_clinical"] and meta["seeds"] == [0, 1]
    assert set(meta["imputation"]["fill"]) == set(VARIABLES) and len(meta["scaling"]["mean"]) == len(VARIABLES)
    assert (out / "heads.safetensors").is_file()
    run = run_cli(["mm", "prognosis", "evaluate", "--run", out, "--datalist", data, "--split", "A_test",
                   "--device", "cpu"], capsys)
    assert run.code == 0, run.err
    assert "A_test: 3 patients, 2 relapses; C-index" in run.out
    result = json.loads((out / "eval" / "evaluation_A_test.json").read_text())
    assert {"c_index", "ibs", "km_png", "logrank_p", "c_index_per_seed"} <= set(result)
    rows = list(csv.DictReader((out / "eval" / "risks_A_test.csv").open()))
    assert [r["patient"] for r in rows] == [i["patient"] for i in read_mm_datalist(data)["A_test"]]
    ct_out = tmp_path / "ct"
    run = run_cli(["mm", "prognosis", "train", "--model", runs_dir / "ct", "--datalist", data, "--splits", "A_train",
                   "--seeds", "3", "--out", ct_out, "--device", "cpu", "--epochs", "5"], capsys)
    assert run.code == 0, run.err
    assert json.loads((ct_out / "prognosis.json").read_text())["mode"] == "ct"


def test_cli_refuses_a_bad_clinical_csv_in_one_line(data: Path, runs_dir: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.csv"
    lines = (data.parent / "clinical.csv").read_text().splitlines()
    bad.write_text("\n".join([lines[0], lines[1].replace(",M,", ",X,").replace(",F,", ",X,"), *lines[2:]]) + "\n")
    run = run_cli(["mm", "prognosis", "train", "--model", runs_dir / "ct", "--datalist", data, "--splits", "A_train",
                   "--clinical", "--clinical-csv", bad, "--out", tmp_path / "o"], capsys)
    assert run.code == 2
    assert run.err.count("\n") == 1 and "bad.csv" in run.err and "row 2, column 'Gender'" in run.err
    assert not (tmp_path / "o").exists()
    run = run_cli(["mm", "prognosis", "evaluate", "--run", tmp_path, "--datalist", data, "--split", "A_test"], capsys)
    assert run.code == 2 and "not a prognosis run folder" in run.err


def test_demo_step_compares_the_three_settings(data: Path, models: dict, tmp_path: Path) -> None:
    messages: list[str] = []
    result = pg.demo_step(tmp_path, data, models, messages.append, n_patients=12, seeds=(0, 1), folds=2,
                          epochs=10)
    assert [r["setting"] for r in result["rows"]][:3] == ["CT", "CT+PET", "CT+PET+clinical"]
    assert "CT+PET+clinical" in result["table"] and result["markdown"].startswith("| Setting")
    assert all(len(r["c_index"]) == 2 for r in result["rows"])
    assert Path(result["km_png"]).is_file() and (tmp_path / "report" / "prognosis.json").is_file()
    assert "12 patients" in " ".join(messages)
