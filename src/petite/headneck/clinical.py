"""Clinical variables ("EHR") and relapse-free survival: synthetic draws, the HECKTOR CSV, imputation.

PEMMA's prognosis head may fuse imaging features with eight tabular variables.
A *record* is a plain dict per patient with these keys (values ``None`` when
missing):

========================  =======================  =====================================
key                       HECKTOR 2022 column      values
========================  =======================  =====================================
``age``                   ``Age``                  years, 0-120
``sex``                   ``Gender``               1 = male (``M``), 0 = female (``F``)
``tobacco``               ``Tobacco``              0/1
``alcohol``               ``Alcohol``              0/1
``performance``           ``Performance status``   ECOG/WHO 0-4 (integer)
``hpv``                   ``HPV status (0=-, 1=+)``  0/1
``surgery``               ``Surgery``              0/1
``chemotherapy``          ``Chemotherapy``         0/1
``time``                  ``RFS``                  relapse-free survival, days, > 0
``event``                 ``Relapse``              1 = relapse observed, 0 = censored
``centre``, ``weight``    ``CenterID``, ``Weight`` kept if present (string, kg); not model inputs
========================  =======================  =====================================

**Synthetic hazard model** (:class:`HazardModel`, default :data:`HAZARD`): a
Weibull proportional-hazards model, ``S(t | x) = exp(-(t / scale)^shape *
exp(eta))`` with shape 0.8 (hazard falling with time, as relapses cluster in
the first two years), scale 3500 days, and the linear predictor ::

    eta = 0.8 * log(volume_ml / 10)          # total tumour volume, GTVp + GTVn
        + 0.15 * (suv - 8)                   # mean SUV of the primary tumour
        - 0.9 * hpv                          # HPV-positive: better prognosis
        + 0.4 * performance                  # per ECOG grade
        + 0.25 * (age - 60) / 10             # per decade
        + 0.3 * tobacco
        + 0 * sex + 0 * alcohol + 0 * surgery + 0 * chemotherapy

Sex, alcohol, surgery and chemotherapy have **no effect** on the hazard (their
coefficients are zero), although chemotherapy is given more often to large,
avid tumours (confounding by indication: it looks harmful in a univariate
analysis) and surgery more often to small ones.  Event times come from
inverse-CDF sampling, ``T = scale * (E / exp(eta))^(1/shape)`` with ``E ~
Exp(1)``.  Censoring is independent of everything else: the study ends for
each patient after a uniform 2-5 years of follow-up (staggered accrual,
administrative censoring at most at 5 years) and patients are lost to follow-up
at rate 1/10 per year.  Times are rounded up to whole days, so ties occur as
in real data.  With the generator's tumours (total volume 3-20 mL for 90 % of
patients, SUV 4.5-15) about 41 % of patients relapse (35-46 % over ten cohorts
of 300), and Harrell's C of ``eta`` against the observed times is about 0.73.

**Missing values**: after the survival time is drawn from the complete
variables, :func:`hide_values` blanks variables completely at random with the
rates in :data:`MISSING_RATES` (tobacco, alcohol, HPV, performance status and
surgery, as in HECKTOR; age, sex and chemotherapy are always known).

**Imputation** (:func:`impute`): the median of the training records for age,
the mode (smallest value on ties) for the binary and ordinal variables.  The
statistics are fitted on training records only and re-applied to validation
and test records.  Each imputed record lists what was filled in
``record["imputed"]``, so :func:`clinical_matrix` can add a missing-indicator
column ``<variable>_missing`` on request (e.g. ``hpv_missing``).
:func:`clinical_matrix` then standardises each column with the training mean
and standard deviation, returned as a JSON-ready ``scaling`` dict.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from petite.atomic import write_text
from petite.errors import UserError

CLINICAL_COLUMNS: tuple[str, ...] = (
    "PatientID", "CenterID", "Gender", "Age", "Weight", "Tobacco", "Alcohol", "Performance status",
    "HPV status (0=-, 1=+)", "Surgery", "Chemotherapy", "Relapse", "RFS",
)
"""The HECKTOR 2022 clinical CSV header (``hecktor2022_clinical_info_training.csv``)."""

VARIABLES: tuple[str, ...] = ("age", "sex", "tobacco", "alcohol", "performance", "hpv", "surgery", "chemotherapy")
"""The model's clinical inputs, in design-matrix order."""

COLUMN_OF: dict[str, str] = {
    "age": "Age", "sex": "Gender", "tobacco": "Tobacco", "alcohol": "Alcohol", "performance": "Performance status",
    "hpv": "HPV status (0=-, 1=+)", "surgery": "Surgery", "chemotherapy": "Chemotherapy",
    "event": "Relapse", "time": "RFS", "centre": "CenterID", "weight": "Weight",
}
BINARY = ("sex", "tobacco", "alcohol", "hpv", "surgery", "chemotherapy")
NUMERIC = ("age",)

MISSING_RATES: dict[str, float] = {"tobacco": 0.2, "alcohol": 0.25, "performance": 0.1, "hpv": 0.15, "surgery": 0.05}
"""Probability that :func:`hide_values` blanks each variable (others are never missing)."""

MISSING_TOKENS = frozenset({"", "na", "n/a", "nan", "none", "null", "unknown", "?"})
"""Cell values read as missing (case-insensitive, surrounding spaces ignored)."""

_TRUE = frozenset({"1", "yes", "y", "true", "t", "+", "pos", "positive"})
_FALSE = frozenset({"0", "no", "n", "false", "f", "-", "neg", "negative"})
_MALE = frozenset({"m", "male", "man", "1"})
_FEMALE = frozenset({"f", "female", "woman", "0"})
HEADER_ALIASES: dict[str, str] = {
    "patientid": "id", "patient id": "id", "patient": "id",
    "centerid": "centre", "center id": "centre", "centreid": "centre", "centre id": "centre",
    "gender": "sex", "sex": "sex", "age": "age", "weight": "weight",
    "tobacco": "tobacco", "alcohol": "alcohol", "performance status": "performance",
    "hpv status (0=-, 1=+)": "hpv", "hpv status": "hpv", "hpv": "hpv",
    "surgery": "surgery", "chemotherapy": "chemotherapy", "relapse": "event", "rfs": "time",
}
"""Accepted spellings of each CSV header (lower case, spaces collapsed) -> record key (``"id"`` for the patient)."""


# ----------------------------------------------------------------------------- synthetic patients


@dataclass(frozen=True)
class HazardModel:
    """The documented Weibull proportional-hazards model of the synthetic cohort (see the module docstring).

    Coefficients are log hazard ratios; ``b_sex``, ``b_alcohol``, ``b_surgery`` and
    ``b_chemotherapy`` are zero by design.  Censoring: follow-up ends uniformly in
    ``follow_up_days``; loss to follow-up is exponential with mean ``loss_mean_days``.
    """

    b_volume: float = 0.8          # per unit of log(volume / reference_volume_ml)
    b_suv: float = 0.15            # per SUV unit above reference_suv
    b_hpv: float = -0.9
    b_performance: float = 0.4     # per ECOG grade
    b_age: float = 0.25            # per decade above reference_age
    b_tobacco: float = 0.3
    b_sex: float = 0.0
    b_alcohol: float = 0.0
    b_surgery: float = 0.0
    b_chemotherapy: float = 0.0
    reference_volume_ml: float = 10.0
    reference_suv: float = 8.0
    reference_age: float = 60.0
    shape: float = 0.8
    scale_days: float = 3500.0
    follow_up_days: tuple[float, float] = (730.0, 1826.0)
    loss_mean_days: float = 3652.5

    @property
    def coefficients(self) -> dict[str, float]:
        """Log hazard ratio of every input: ``volume``, ``suv`` and the eight :data:`VARIABLES`."""
        return {"volume": self.b_volume, "suv": self.b_suv, **{v: getattr(self, f"b_{v}") for v in VARIABLES}}

    def linear_predictor(self, clinical: Mapping[str, Any], tumour_volume_ml: Any, tumour_suv: Any) -> Any:
        """``eta`` (log relative hazard) for complete values; scalars or equal-length arrays.

        Age enters as ``(age - reference_age) / 10``, volume as ``log(volume / reference_volume_ml)``
        and SUV as ``suv - reference_suv``; the other variables as they are.
        """
        missing = [v for v in VARIABLES if clinical.get(v) is None]
        if missing:
            raise ValueError(f"linear_predictor needs complete values; missing: {', '.join(missing)}")
        value = {v: np.asarray(clinical[v], dtype=float) for v in VARIABLES}
        value["age"] = (value["age"] - self.reference_age) / 10.0
        eta = (self.b_volume * np.log(np.asarray(tumour_volume_ml, dtype=float) / self.reference_volume_ml)
               + self.b_suv * (np.asarray(tumour_suv, dtype=float) - self.reference_suv))
        for v in VARIABLES:
            eta = eta + getattr(self, f"b_{v}") * value[v]
        return float(eta) if np.ndim(eta) == 0 else eta

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready parameters (for the dataset's provenance)."""
        return asdict(self)


HAZARD = HazardModel()
"""The default synthetic hazard model."""


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def draw_clinical(rng: np.random.Generator, tumour_volume_ml: float, tumour_suv: float) -> dict[str, Any]:
    """Draw the eight complete clinical variables of one patient.

    Age ~ N(61, 9) rounded, clipped to 30-90; 80 % male; HPV-positive 45 %;
    smokers 40 % (HPV+) or 65 % (HPV-); drinkers 55 % of smokers, 25 % of
    non-smokers; performance status 0-4 with probabilities 50/33/12/4/1 %;
    surgery less likely and chemotherapy more likely for a larger tumour burden
    (``tumour_volume_ml`` total, ``tumour_suv`` primary mean SUV).  The number of
    draws is fixed, so later draws from ``rng`` do not depend on the values.
    """
    burden = math.log(max(float(tumour_volume_ml), 1e-3) / 10.0)
    u = rng.random(6)
    age = int(np.clip(np.rint(61.0 + 9.0 * rng.standard_normal()), 30, 90))
    hpv = int(u[1] < 0.45)
    tobacco = int(u[2] < (0.4 if hpv else 0.65))
    performance = int(rng.choice(5, p=[0.50, 0.33, 0.12, 0.04, 0.01]))
    return {
        "age": age,
        "sex": int(u[0] < 0.8),
        "tobacco": tobacco,
        "alcohol": int(u[3] < (0.55 if tobacco else 0.25)),
        "performance": performance,
        "hpv": hpv,
        "surgery": int(u[4] < _sigmoid(-0.6 - 0.8 * burden)),
        "chemotherapy": int(u[5] < _sigmoid(0.2 + 1.0 * burden + 0.1 * (float(tumour_suv) - 8.0))),
    }


def draw_survival(rng: np.random.Generator, clinical: Mapping[str, Any], tumour_volume_ml: float,
                  tumour_suv: float, model: HazardModel = HAZARD) -> tuple[float, int]:
    """Draw ``(time_days, event)`` from ``model`` for complete ``clinical`` values (three draws).

    The event time is sampled by inverting the Weibull survival function; the
    observed time is the earliest of event, end of follow-up and loss to
    follow-up, rounded up to a whole day; ``event`` is 1 when the relapse came first.
    """
    eta = model.linear_predictor(clinical, tumour_volume_ml, tumour_suv)
    event_time = model.scale_days * (rng.exponential() / math.exp(eta)) ** (1.0 / model.shape)
    end_of_study = rng.uniform(*model.follow_up_days)
    lost = rng.exponential(model.loss_mean_days)
    censor_time = min(end_of_study, lost)
    observed = min(event_time, censor_time)
    return float(max(1.0, math.ceil(observed))), int(event_time <= censor_time)


def hide_values(rng: np.random.Generator, clinical: Mapping[str, Any],
                rates: Mapping[str, float] = MISSING_RATES) -> dict[str, Any]:
    """A copy of ``clinical`` with variables set to ``None`` at ``rates`` (one draw per variable)."""
    u = dict(zip(VARIABLES, rng.random(len(VARIABLES))))
    hidden = dict(clinical)
    for variable, rate in rates.items():
        if u[variable] < rate:
            hidden[variable] = None
    return hidden


def draw_patient(rng: np.random.Generator, tumour_volume_ml: float, tumour_suv: float,
                 model: HazardModel = HAZARD, rates: Mapping[str, float] = MISSING_RATES) -> dict[str, Any]:
    """One synthetic record: :func:`draw_clinical`, :func:`draw_survival`, then :func:`hide_values`.

    Returns the observed record (variables possibly ``None``) with ``time`` and ``event``.
    """
    complete = draw_clinical(rng, tumour_volume_ml, tumour_suv)
    time, event = draw_survival(rng, complete, tumour_volume_ml, tumour_suv, model)
    return {**hide_values(rng, complete, rates), "time": time, "event": event}


# ----------------------------------------------------------------------------- the CSV


class _CellError(ValueError):
    pass


def _parse_binary(text: str, key: str) -> int:
    low = text.lower()
    true, false = (_MALE, _FEMALE) if key == "sex" else (_TRUE, _FALSE)
    if low in true or low in {"1.0"}:
        return 1
    if low in false or low in {"0.0"}:
        return 0
    expected = "M or F" if key == "sex" else "0 or 1 (or yes/no)"
    raise _CellError(f"expected {expected}, got {text!r}")


def _parse_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _CellError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise _CellError(f"expected a finite number, got {text!r}")
    return value


def _parse_cell(key: str, text: str) -> Any:
    """Parse one non-missing cell of column ``key``; raises :class:`_CellError`."""
    if key in BINARY or key == "event":
        return _parse_binary(text, key)
    if key == "centre":
        return text
    value = _parse_number(text)
    if key == "age" and not 0 <= value <= 120:
        raise _CellError(f"age must be within 0-120 years, got {text}")
    if key == "performance":
        if value not in (0, 1, 2, 3, 4):
            raise _CellError(f"performance status must be an integer 0-4, got {text}")
        return int(value)
    if key == "time" and value <= 0:
        raise _CellError(f"RFS must be a positive number of days, got {text}")
    if key == "weight" and not 0 < value <= 400:
        raise _CellError(f"weight must be within 0-400 kg, got {text}")
    return int(value) if key == "age" and value.is_integer() else value


def read_clinical_csv(path: str | Path, *, require_outcome: bool = True) -> dict[str, dict[str, Any]]:
    """Read and validate a HECKTOR-style clinical CSV: ``{PatientID: record}`` in file order.

    Headers are matched case-insensitively (``Sex`` and ``HPV status`` are also
    accepted); unknown columns (``Task 1``...) are ignored.  Required: the
    patient ID and the eight variable columns, plus ``Relapse`` and ``RFS``
    when ``require_outcome`` (then every row needs them).  Cells in
    :data:`MISSING_TOKENS` are missing (``None``).  Any problem raises
    :class:`UserError` naming the file, the row (spreadsheet numbering: the
    header is row 1) and the column.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UserError("clinical CSV not found", path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read clinical CSV: {exc}", path) from None
    rows = [row for row in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in row)]
    if not rows:
        raise UserError("clinical CSV is empty (no header row)", path)
    header = [cell.strip() for cell in rows[0]]
    where: dict[str, int] = {}
    for index, name in enumerate(header):
        key = HEADER_ALIASES.get(" ".join(name.lower().split()))
        if key is None:
            continue
        if key in where:
            column = COLUMN_OF.get(key, "PatientID")
            raise UserError(f"columns {header[where[key]]!r} and {name!r} both give {column!r}", path)
        where[key] = index
    required = ["id", *VARIABLES, *(("event", "time") if require_outcome else ())]
    for key in required:
        if key not in where:
            raise UserError(f"missing required column {COLUMN_OF.get(key, 'PatientID')!r}", path)
    records: dict[str, dict[str, Any]] = {}
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise UserError(f"row {number}: has {len(row)} fields but the header has {len(header)}", path)
        pid = row[where["id"]].strip()
        if pid.lower() in MISSING_TOKENS:
            raise UserError(f"row {number}, column 'PatientID': missing patient ID", path)
        if pid in records:
            raise UserError(f"row {number}, column 'PatientID': duplicate patient ID {pid!r}", path)
        record: dict[str, Any] = {}
        for key in (*VARIABLES, "time", "event", "centre", "weight"):
            if key not in where:
                continue
            cell = row[where[key]].strip()
            column = header[where[key]]
            if cell.lower() in MISSING_TOKENS:
                if require_outcome and key in ("time", "event"):
                    raise UserError(f"row {number}, column {column!r}: missing value (required)", path)
                record[key] = None
                continue
            try:
                record[key] = _parse_cell(key, cell)
            except _CellError as exc:
                raise UserError(f"row {number}, column {column!r}: {exc}", path) from None
        records[pid] = record
    return records


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def write_clinical_csv(path: str | Path, records: Mapping[str, Mapping[str, Any]]) -> None:
    """Atomically write ``records`` with the :data:`CLINICAL_COLUMNS` header (missing values empty).

    ``sex`` is written ``M``/``F``; absent keys (e.g. ``weight``) give empty cells.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CLINICAL_COLUMNS)
    key_of = {column: key for key, column in COLUMN_OF.items()}
    for pid, record in records.items():
        row = [pid]
        for column in CLINICAL_COLUMNS[1:]:
            value = record.get(key_of[column])
            if key_of[column] == "sex" and value is not None:
                value = "M" if int(value) == 1 else "F"
            row.append(_format(value))
        writer.writerow(row)
    write_text(path, buffer.getvalue())


# ----------------------------------------------------------------------------- imputation and design matrix


def _fit_fill(values: Sequence[Any], variable: str) -> tuple[float | int, bool]:
    """(fill value, whether a fallback was needed because nothing was observed)."""
    observed = np.asarray([v for v in values if v is not None], dtype=float)
    if observed.size == 0:
        return (60 if variable == "age" else 0), True
    if variable in NUMERIC:
        return float(np.median(observed)), False
    levels, counts = np.unique(observed, return_counts=True)   # sorted: argmax picks the smallest mode
    return int(levels[int(np.argmax(counts))]), False


def impute(records: Mapping[str, Mapping[str, Any]],
           reference: Mapping[str, Any] | None = None) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Fill missing :data:`VARIABLES`: median (age) or mode (the others).

    With ``reference=None`` the statistics are fitted on ``records`` (call this on
    the training records); pass the returned ``info`` as ``reference`` to impute
    validation and test records with the *training* statistics.  A variable with
    no observed training value is filled with a fallback (age 60, others 0) and
    flagged in ``info["fallback"]``.  Returns new records (the input is not
    modified), each with ``imputed``: the variables that were filled, and
    ``info = {"method", "fill", "missing_fraction", "fallback"}`` (JSON-ready).
    """
    rows = list(records.values())
    if reference is None:
        fitted = {v: _fit_fill([r.get(v) for r in rows], v) for v in VARIABLES}
        fill = {v: fitted[v][0] for v in VARIABLES}
        fallback = [v for v in VARIABLES if fitted[v][1]]
    else:
        fill = dict(reference["fill"])
        absent = [v for v in VARIABLES if v not in fill]
        if absent:
            raise ValueError(f"reference imputation lacks {', '.join(absent)}")
        fallback = list(reference.get("fallback", []))
    out: dict[str, dict[str, Any]] = {}
    for pid, record in records.items():
        filled = dict(record)
        filled["imputed"] = [v for v in VARIABLES if record.get(v) is None]
        for v in filled["imputed"]:
            filled[v] = fill[v]
        out[pid] = filled
    n = max(len(rows), 1)
    info = {
        "method": "median (age), mode (binary and ordinal); fitted on training records",
        "fill": fill,
        "missing_fraction": {v: sum(r.get(v) is None for r in rows) / n for v in VARIABLES},
        "fallback": fallback,
    }
    return out, info


def clinical_matrix(records: Mapping[str, Mapping[str, Any]], columns: Iterable[str] = VARIABLES,
                    scaling: Mapping[str, Any] | None = None,
                    ids: Sequence[str] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Standardised float32 design matrix of imputed ``records`` (rows in ``ids`` or record order).

    ``columns``: names from :data:`VARIABLES` and ``<variable>_missing`` (1 where
    :func:`impute` filled the variable).  With ``scaling=None`` the column means
    and standard deviations are fitted on these records (the training set; a
    constant column gets std 1); pass the returned ``scaling`` for validation and
    test.  Returns ``(matrix, scaling)`` with ``scaling = {"columns", "mean", "std"}``.
    """
    columns = list(columns)
    for column in columns:
        base = column[: -len("_missing")] if column.endswith("_missing") else column
        if base not in VARIABLES:
            raise ValueError(f"unknown clinical column {column!r}; "
                             f"choose from {', '.join(VARIABLES)} or <name>_missing")
    ids = list(records) if ids is None else list(ids)
    matrix = np.zeros((len(ids), len(columns)), dtype=np.float64)
    for i, pid in enumerate(ids):
        record = records[pid]
        for j, column in enumerate(columns):
            if column.endswith("_missing"):
                matrix[i, j] = float(column[: -len("_missing")] in record.get("imputed", ()))
            elif record.get(column) is None:
                raise ValueError(f"patient {pid}: {column} is missing; call impute() first")
            else:
                matrix[i, j] = float(record[column])
    if scaling is None:
        mean = matrix.mean(axis=0) if len(ids) else np.zeros(len(columns))
        std = matrix.std(axis=0) if len(ids) else np.ones(len(columns))
        std = np.where(std > 1e-12, std, 1.0)
        scaling = {"columns": columns, "mean": mean.tolist(), "std": std.tolist()}
    elif list(scaling["columns"]) != columns:
        raise ValueError(f"scaling was fitted for columns {list(scaling['columns'])}, not {columns}")
    standardised = (matrix - np.asarray(scaling["mean"])) / np.asarray(scaling["std"])
    return standardised.astype(np.float32), dict(scaling)
