"""Synthetic clinical variables and survival, the HECKTOR clinical CSV, imputation and the design matrix."""

from __future__ import annotations

import json

import numpy as np
import pytest

from petite.errors import UserError
from petite.headneck.clinical import (
    CLINICAL_COLUMNS,
    HAZARD,
    MISSING_RATES,
    VARIABLES,
    clinical_matrix,
    draw_clinical,
    draw_patient,
    draw_survival,
    hide_values,
    impute,
    read_clinical_csv,
    write_clinical_csv,
)
from petite.prognosis.metrics import concordance_index


def tumour(rng: np.random.Generator) -> tuple[float, float]:
    """Total volume (mL) and primary SUV distributed like the synthetic generator's lesions."""
    volume = 4 / 3 * np.pi * rng.uniform(8, 15) ** 3 / 1000
    for _ in range(int(rng.choice(4, p=[0.2, 0.35, 0.3, 0.15]))):
        volume += 4 / 3 * np.pi * rng.uniform(4, 12) ** 3 / 1000
    return float(volume), float(rng.uniform(4.5, 15))


def cohort(seed: int, n: int = 300) -> tuple[list[dict], np.ndarray, np.ndarray, np.ndarray]:
    """(complete clinical dicts, times, events, linear predictors)."""
    rng = np.random.default_rng(seed)
    patients, times, events, eta = [], [], [], []
    for _ in range(n):
        volume, suv = tumour(rng)
        clinical = draw_clinical(rng, volume, suv)
        time, event = draw_survival(rng, clinical, volume, suv)
        patients.append(clinical)
        times.append(time)
        events.append(event)
        eta.append(HAZARD.linear_predictor(clinical, volume, suv))
    return patients, np.array(times), np.array(events), np.array(eta)


def test_draws_are_deterministic_and_typed():
    a = draw_patient(np.random.default_rng(5), 12.0, 9.0)
    b = draw_patient(np.random.default_rng(5), 12.0, 9.0)
    assert a == b
    assert set(a) == {*VARIABLES, "time", "event"}
    assert a["time"] >= 1 and a["time"] == int(a["time"]) and a["event"] in (0, 1)
    assert [draw_patient(np.random.default_rng(s), 12.0, 9.0) for s in range(6)] != [a] * 6
    complete = draw_clinical(np.random.default_rng(1), 12.0, 9.0)
    assert 30 <= complete["age"] <= 90 and complete["performance"] in range(5)
    assert all(complete[v] in (0, 1) for v in ("sex", "tobacco", "alcohol", "hpv", "surgery", "chemotherapy"))


def test_hazard_model_event_rate_and_ranking():
    patients, time, event, eta = cohort(0)
    assert 0.3 <= event.mean() <= 0.55
    assert time.max() <= HAZARD.follow_up_days[1] + 1
    assert concordance_index(time, eta, event) > 0.65
    # Tumour burden matters: the larger half relapses more often.
    assert event[eta > np.median(eta)].mean() > event[eta <= np.median(eta)].mean() + 0.15


def test_zero_effect_variables():
    coefficients = HAZARD.coefficients
    for name in ("sex", "alcohol", "surgery", "chemotherapy"):
        assert coefficients[name] == 0.0
    for name in ("volume", "suv", "hpv", "performance", "age", "tobacco"):
        assert coefficients[name] != 0.0
    assert coefficients["hpv"] < 0 < coefficients["volume"]
    base = draw_clinical(np.random.default_rng(2), 10.0, 8.0)
    eta = HAZARD.linear_predictor(base, 10.0, 8.0)
    for name in ("sex", "alcohol", "surgery", "chemotherapy"):
        assert HAZARD.linear_predictor({**base, name: 1 - base[name]}, 10.0, 8.0) == eta
    assert HAZARD.linear_predictor({**base, "hpv": 1 - base["hpv"]}, 10.0, 8.0) != eta
    assert HAZARD.linear_predictor(base, 20.0, 8.0) > eta
    with pytest.raises(ValueError, match="hpv"):
        HAZARD.linear_predictor({**base, "hpv": None}, 10.0, 8.0)
    json.dumps(HAZARD.to_dict())


def test_missing_values_at_documented_rates():
    rng = np.random.default_rng(3)
    complete = draw_clinical(rng, 10.0, 8.0)
    hidden = [hide_values(rng, complete) for _ in range(2000)]
    for variable in VARIABLES:
        fraction = np.mean([h[variable] is None for h in hidden])
        assert fraction == pytest.approx(MISSING_RATES.get(variable, 0.0), abs=0.03)
    assert complete["hpv"] is not None  # the input is not modified


def synthetic_records(n: int = 25, seed: int = 0) -> dict[str, dict]:
    rng = np.random.default_rng(seed)
    records = {}
    for k in range(n):
        record = draw_patient(rng, *tumour(rng))
        records[f"A-{k + 1:03d}"] = {**record, "centre": "A"}
    return records


def test_csv_round_trip(tmp_path):
    records = synthetic_records()
    assert any(r[v] is None for r in records.values() for v in VARIABLES)  # some missing values travel too
    path = tmp_path / "clinical.csv"
    write_clinical_csv(path, records)
    assert path.read_text().splitlines()[0].split(",")[:5] == list(CLINICAL_COLUMNS[:5])
    back = read_clinical_csv(path)
    assert list(back) == list(records)
    for pid, record in records.items():
        assert {k: back[pid][k] for k in record} == record
        assert back[pid]["weight"] is None
    assert [p.name for p in tmp_path.iterdir()] == ["clinical.csv"]


HEADER = ('\ufeffPatientID,Task 1,CenterID,Gender,Age,Weight,Tobacco,Alcohol,Performance status,'
          '"HPV status (0=-, 1=+)",Surgery,Chemotherapy,Relapse,RFS\n')
GOOD = ["CHUM-001,1,1,M,62,80.5,1.0,,0,1,0,1,0,1704.3", "CHUP-002,1,2,F,55,,No,yes,2.0,NA,,1,1,345"]


def write(tmp_path, lines, header=HEADER):
    path = tmp_path / "hecktor.csv"
    path.write_text(header + "\n".join(lines) + "\n")
    return path


def test_reads_hecktor_style_csv(tmp_path):
    records = read_clinical_csv(write(tmp_path, GOOD))
    assert records["CHUM-001"] == {"age": 62, "sex": 1, "tobacco": 1, "alcohol": None, "performance": 0, "hpv": 1,
                                   "surgery": 0, "chemotherapy": 1, "time": 1704.3, "event": 0, "centre": "1",
                                   "weight": 80.5}
    assert records["CHUP-002"]["hpv"] is None and records["CHUP-002"]["alcohol"] == 1
    assert records["CHUP-002"]["performance"] == 2 and records["CHUP-002"]["sex"] == 0


def test_outcome_optional_for_test_sets(tmp_path):
    header = "PatientID,Gender,Age,Tobacco,Alcohol,Performance status,HPV status,Surgery,Chemotherapy\n"
    records = read_clinical_csv(write(tmp_path, ["X-1,M,70,0,0,1,0,1,1"], header), require_outcome=False)
    assert "time" not in records["X-1"] and records["X-1"]["hpv"] == 0
    with pytest.raises(UserError, match="missing required column 'Relapse'"):
        read_clinical_csv(tmp_path / "hecktor.csv")


@pytest.mark.parametrize(("row", "message"), [
    ("CHUV-003,1,3,M,150,70,0,0,0,1,0,1,0,500", r"row 4, column 'Age': age must be within 0-120"),
    ("CHUV-003,1,3,M,abc,70,0,0,0,1,0,1,0,500", r"row 4, column 'Age': expected a number"),
    ("CHUV-003,1,3,X,60,70,0,0,0,1,0,1,0,500", r"row 4, column 'Gender': expected M or F"),
    ("CHUV-003,1,3,M,60,70,maybe,0,0,1,0,1,0,500", r"row 4, column 'Tobacco': expected 0 or 1"),
    ("CHUV-003,1,3,M,60,70,0,0,5,1,0,1,0,500", r"row 4, column 'Performance status': .* integer 0-4"),
    ("CHUV-003,1,3,M,60,70,0,0,1.5,1,0,1,0,500", r"row 4, column 'Performance status'"),
    ("CHUV-003,1,3,M,60,70,0,0,0,2,0,1,0,500", r"row 4, column 'HPV status \(0=-, 1=\+\)'"),
    ("CHUV-003,1,3,M,60,70,0,0,0,1,0,1,2,500", r"row 4, column 'Relapse'"),
    ("CHUV-003,1,3,M,60,70,0,0,0,1,0,1,0,0", r"row 4, column 'RFS': RFS must be a positive"),
    ("CHUV-003,1,3,M,60,70,0,0,0,1,0,1,0,", r"row 4, column 'RFS': missing value"),
    ("CHUV-003,1,3,M,60,70,0,0,0,1,0,1,,500", r"row 4, column 'Relapse': missing value"),
    ("CHUM-001,1,3,M,60,70,0,0,0,1,0,1,0,500", r"row 4, column 'PatientID': duplicate patient ID 'CHUM-001'"),
    (",1,3,M,60,70,0,0,0,1,0,1,0,500", r"row 4, column 'PatientID': missing patient ID"),
    ("CHUV-003,1,3,M,60", r"row 4: has 5 fields but the header has 14"),
])
def test_bad_rows_name_file_row_and_column(tmp_path, row, message):
    path = write(tmp_path, [*GOOD, row])
    with pytest.raises(UserError, match=message) as info:
        read_clinical_csv(path)
    assert info.value.path == str(path)
    assert str(path) in str(info.value)


def test_bad_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_clinical_csv(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("\n")
    with pytest.raises(UserError, match="empty"):
        read_clinical_csv(tmp_path / "empty.csv")
    path = write(tmp_path, GOOD, HEADER.replace(",Alcohol", ",Drinks"))
    with pytest.raises(UserError, match="missing required column 'Alcohol'") as info:
        read_clinical_csv(path)
    assert info.value.path == str(path)
    path = write(tmp_path, [], "PatientID,Gender,Sex,Age\n")
    with pytest.raises(UserError, match="'Gender' and 'Sex'"):
        read_clinical_csv(path)


def full(**values):
    return {**dict.fromkeys(VARIABLES, 0), "age": 60, **values}


def test_impute_uses_training_statistics_only():
    train = {"a": full(age=50, hpv=1), "b": full(age=60, hpv=1, performance=None),
             "c": full(age=90, hpv=0, performance=2), "d": full(age=None, hpv=None, performance=2)}
    filled, info = impute(train)
    assert info["fill"]["age"] == 60.0 and info["fill"]["hpv"] == 1 and info["fill"]["performance"] == 2
    assert filled["d"]["age"] == 60.0 and filled["d"]["imputed"] == ["age", "hpv"]
    assert filled["a"]["imputed"] == [] and train["d"]["age"] is None   # input untouched
    assert info["missing_fraction"]["hpv"] == 0.25
    json.dumps(info)
    # The test set alone would give a median age of 20 and HPV mode 0: the training values are used.
    test = {"x": full(age=None, hpv=None), "y": full(age=20, hpv=0), "z": full(age=20, hpv=0)}
    filled_test, test_info = impute(test, reference=info)
    assert filled_test["x"]["age"] == 60.0 and filled_test["x"]["hpv"] == 1
    assert test_info["fill"] == info["fill"]


def test_impute_ties_and_fallback():
    _, info = impute({"a": full(surgery=1, tobacco=None), "b": full(surgery=0, tobacco=None)})
    assert info["fill"]["surgery"] == 0                       # mode ties -> the smallest value
    assert info["fill"]["tobacco"] == 0 and info["fallback"] == ["tobacco"]


def test_clinical_matrix_standardises_with_training_scaling():
    train, info = impute({"a": full(age=50, hpv=1), "b": full(age=70, hpv=None), "c": full(age=60, hpv=0)})
    columns = [*VARIABLES, "hpv_missing"]
    matrix, scaling = clinical_matrix(train, columns)
    assert matrix.dtype == np.float32 and matrix.shape == (3, 9)
    np.testing.assert_allclose(matrix.mean(axis=0), 0, atol=1e-6)
    assert matrix[:, VARIABLES.index("age")].std() == pytest.approx(1.0, rel=1e-6)
    assert matrix[:, VARIABLES.index("sex")].tolist() == [0, 0, 0]          # constant column: std 1, no NaN
    assert matrix[:, -1].argmax() == 1
    json.dumps(scaling)
    test, _ = impute({"t": full(age=80, hpv=None)}, reference=info)
    row, same = clinical_matrix(test, columns, scaling=scaling)
    assert same == scaling
    assert row[0, VARIABLES.index("age")] == pytest.approx((80 - 60) / np.std([50, 70, 60]), rel=1e-6)
    assert row[0, -1] > 0
    ordered, _ = clinical_matrix(train, columns, scaling=scaling, ids=["c", "a"])
    np.testing.assert_array_equal(ordered, matrix[[2, 0]])
    with pytest.raises(ValueError, match="impute"):
        clinical_matrix({"q": full(hpv=None)}, VARIABLES)
    with pytest.raises(ValueError, match="fitted for columns"):
        clinical_matrix(train, VARIABLES, scaling=scaling)
    with pytest.raises(ValueError, match="unknown clinical column"):
        clinical_matrix(train, ["bmi"])
