"""Run the ``petite`` command line in-process, as a user's shell would see it."""

from __future__ import annotations

from typing import NamedTuple

import pytest

from petite.cli import main


class CliRun(NamedTuple):
    code: int
    out: str
    err: str


def run_cli(argv: list[object], capsys: pytest.CaptureFixture[str] | None = None) -> CliRun:
    """Exit status and (with ``capsys``) the stdout/stderr of ``petite ARGV``."""
    if capsys is not None:
        capsys.readouterr()  # drop output captured before this command
    try:
        main([str(a) for a in argv])
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    out, err = capsys.readouterr() if capsys is not None else ("", "")
    return CliRun(code, out, err)
