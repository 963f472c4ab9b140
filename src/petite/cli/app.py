"""The ``petite`` click group and the option parsers several commands share.

Command modules import :data:`cli` from here and add their commands to it;
:mod:`petite.cli` imports those modules and runs the group.
"""

from __future__ import annotations

import logging

import click

from petite.errors import UserError
from petite.version import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="petite")
@click.option("-v", "--verbose", is_flag=True, help="Show debug logs.")
def cli(verbose: bool) -> None:
    """petite: parameter-efficient fine-tuning of 3D PET networks across scanners."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def parse_size(text: str | None, option: str) -> tuple[int, int, int] | None:
    """``"64,64,32"`` -> ``(64, 64, 32)`` for size options such as ``--crop`` and ``--roi``."""
    if text is None:
        return None
    try:
        size = tuple(int(v) for v in text.split(","))
    except ValueError:
        size = ()
    if len(size) != 3 or min(size) < 1:
        raise UserError(f"{option} must be three positive integers like 64,64,32, got {text!r}")
    return size  # type: ignore[return-value]
