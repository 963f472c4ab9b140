"""The ``petite`` command line: thin wrappers that parse, validate and call the library.

Each command family lives in its own module of this package and registers its
commands on :data:`petite.cli.app.cli`.  No logic lives here beyond turning
:class:`petite.errors.UserError`, and the storage errors the user has to fix (a
full disk, a quota, a read-only or forbidden output), into one line on stderr
and exit status 2.
"""

from __future__ import annotations

import sys

import click

from petite.cli.app import cli, parse_size
from petite.errors import UserError, storage_problem

__all__ = ["cli", "main", "parse_size"]


def _register_commands() -> None:
    # Imported for their side effect of adding commands to `cli`.
    from petite.cli import (  # noqa: F401  # noqa: F401  (the `petite mm` group; modules adding to it come after)
        bench,
        data,
        demo,
        infer,
        metrics,
        mm,
        mm_prognosis,
        model,
        peft,
        report,
        simulate,
        sweep,
        train,
    )


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    _register_commands()
    try:
        status = cli.main(args=argv, prog_name="petite", standalone_mode=False)
    except UserError as err:
        click.echo(f"petite: error: {err}", err=True)
        sys.exit(2)
    except OSError as err:
        problem = storage_problem(err)
        if problem is None:
            raise
        click.echo(f"petite: error: {problem}", err=True)
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
