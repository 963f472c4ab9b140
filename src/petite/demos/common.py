"""What the demos share: their output folder and the load average they report beside every time."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from petite.errors import UserError


def prepare_demo_folder(out: Path, names: tuple[str, ...], overwrite: bool) -> None:
    """Create ``out`` for a demo; its earlier demo paths ``names`` are removed only with ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise UserError("demo output exists and is not a folder", out)
    present = [out / name for name in names if (out / name).exists()]
    if present and not overwrite:
        raise UserError("already holds a demo; pass --overwrite to replace it", out)
    for path in present:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    out.mkdir(parents=True, exist_ok=True)


def load_average() -> str:
    """The 1-minute load average (how busy the cores were), or "n/a" where the OS does not say."""
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except (AttributeError, OSError):
        return "n/a"
