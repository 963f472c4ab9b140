"""The relapse-free survival outcome, ``(time, event)``, read from clinical records and checked.

``time`` is the RFS in days (> 0), ``event`` 1 when a relapse was observed and
0 when censored (HECKTOR's ``RFS`` and ``Relapse`` columns; the ``time`` and
``event`` keys of a :mod:`petite.headneck.clinical` record).  Every problem is
a :class:`~petite.errors.UserError` that says which patients (``what``:
training, evaluation...) lack what.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from petite.errors import UserError


def check_outcome(time_days: Any, event: Any, what: str = "training") -> tuple[np.ndarray, np.ndarray]:
    """``(time (float, days > 0), event (int 0/1))`` arrays; UserError saying what the ``what`` patients lack."""
    try:
        t = np.asarray(time_days, dtype=float).reshape(-1)
        e = np.asarray(event, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise UserError(f"every {what} patient needs a relapse-free survival time (RFS) and Relapse "
                        f"(0/1); some are missing") from None
    if t.shape != e.shape:
        raise UserError(f"{t.size} times but {e.size} events")
    if not np.all(np.isfinite(t)) or np.any(t <= 0):
        raise UserError(f"every {what} patient needs a positive RFS time; some are missing or not positive")
    if not np.all(np.isin(e, (0.0, 1.0))):
        raise UserError(f"Relapse must be 0 or 1 for every {what} patient")
    return t, e.astype(int)


def outcome_of(records: Sequence[Mapping[str, Any] | None], patients: Sequence[str] | None = None,
               what: str = "training") -> tuple[np.ndarray, np.ndarray]:
    """``(time, event)`` arrays from clinical records; UserError naming the first patient without them."""
    times, events = [], []
    for k, record in enumerate(records):
        who = patients[k] if patients is not None else str(k)
        if not record or record.get("time") is None or record.get("event") is None:
            raise UserError(f"patient {who!r} has no relapse-free survival (RFS) and Relapse in its clinical "
                            f"record; {what} needs both")
        times.append(record["time"])
        events.append(record["event"])
    return check_outcome(times, events, what)


__all__ = ["check_outcome", "outcome_of"]
