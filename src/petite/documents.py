"""Reading the JSON and YAML documents users hand us, with one-line errors.

Datalists, configs, scanner files, specs, checkpoint sidecars and adapter
metadata all go through these two functions, so a missing, unreadable or
malformed file always fails the same way: :class:`petite.errors.UserError`
naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from petite.errors import UserError


def _text(path: Path, what: str) -> str:
    if not path.is_file():
        raise UserError(f"{what} not found", path)
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read {what} ({err})", path) from None


def read_json(path: str | Path, what: str = "file") -> Any:
    """Parse the JSON file at ``path``; ``what`` names it in errors ("datalist", ...)."""
    path = Path(path)
    try:
        return json.loads(_text(path, what))
    except json.JSONDecodeError as err:
        raise UserError(f"{what} is not valid JSON ({err.msg}, line {err.lineno})", path) from None


def read_yaml(path: str | Path, what: str = "file") -> Any:
    """Parse the YAML file at ``path``; ``what`` names it in errors ("config", ...)."""
    path = Path(path)
    try:
        return yaml.safe_load(_text(path, what))
    except yaml.YAMLError as err:
        raise UserError(f"{what} is not valid YAML ({str(err).splitlines()[0]})", path) from None
