"""The ``petite`` command line: thin wrappers that parse, validate and call the library.

Each command family lives in its own module of this package and registers its
commands on :data:`cli`.  No logic lives here beyond turning
:class:`petite.errors.UserError` into one line on stderr and exit status 2, and
parsing the size options several commands share.
"""

from __future__ import annotations

import logging
import sys

import click

from petite import __version__
from petite.errors import UserError


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


def _register_commands() -> None:
    # Imported for their side effect of adding commands to `cli`.
    from petite.cli import data, demo, infer, metrics, model, peft, report, simulate, sweep, train  # noqa: F401
    from petite.cli import mm, mm_prognosis  # noqa: F401  (the `petite mm` group; modules adding to it come after)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    _register_commands()
    try:
        status = cli.main(args=argv, prog_name="petite", standalone_mode=False)
    except UserError as err:
        click.echo(f"petite: error: {err}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("petite: aborted", err=True)
        sys.exit(130)
    except click.ClickException as err:
        # Usage errors (unknown option, missing argument) are bad input too.
        click.echo(f"petite: error: {err.format_message()}", err=True)
        sys.exit(err.exit_code if err.exit_code else 2)
    if isinstance(status, int):
        sys.exit(status)
