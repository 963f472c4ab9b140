"""Fixtures of the head-and-neck data tests (defined in :mod:`tests.headneck.cohort`)."""

from tests.headneck.cohort import data, datalist, dataset  # noqa: F401  (fixtures)
