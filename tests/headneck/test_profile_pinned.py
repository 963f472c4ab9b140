"""The default generator profile is frozen: pinned hashes of patients computed with the code before profiles existed.

Other work (the demo, its sizing) depends on the default synthetic cohort, so
adding the opt-in ``hecktor`` profile must leave every default array, fact and
clinical record bit for bit the same.  The hashes below were computed on the
``main`` code before :mod:`petite.headneck.profiles` existed (numpy 2.4.6,
scipy 1.17.1).  Update them only for a deliberate change of the default
profile (or if a numpy/scipy upgrade changes floating-point results, which
then shows in every array at once).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from petite.headneck.patient import simulate_patient

PINNED = [
    # (centre, index, seed, size): (ct, pet, label, facts, clinical), sha256 prefixes
    (("A", 0, 0, "tiny"), ("77ac9b543670ce02", "72fbf846db79a6a6", "7ed475bf0ea3ac4d", "f7a45e087a445873",
                           "2eb64efb4a840856")),
    (("C", 1, 3, "tiny"), ("4a3776b12e66ec5d", "e8f3af18eb0a737b", "2b41a840dee2207d", "5dc71e49e6ba3a41",
                           "ba2252bec20748de")),
    (("B", 2, 0, "small"), ("1e6029432d9f1c79", "7d41b440037c283c", "9c7c23ad0de9800f", "977a2dd82e03957d",
                            "aa074dbf0209bab1")),
]


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def fingerprint(patient) -> tuple[str, ...]:
    """sha256 prefixes of a patient's CT, PET, label bytes, facts and clinical record (JSON, sorted keys)."""
    arrays = tuple(_digest(np.ascontiguousarray(getattr(patient, key)).tobytes()) for key in ("ct", "pet", "label"))
    return (*arrays, _digest(json.dumps(patient.facts, sort_keys=True).encode()),
            _digest(json.dumps(patient.clinical, sort_keys=True).encode()))


@pytest.mark.parametrize("args, expected", PINNED)
def test_default_profile_is_bit_for_bit_unchanged(args: tuple, expected: tuple) -> None:
    centre, index, seed, size = args
    assert fingerprint(simulate_patient(centre, index, seed=seed, size=size)) == expected
