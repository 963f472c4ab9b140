"""`petite model` commands."""

from __future__ import annotations

from petite.cli import cli  # noqa: F401
