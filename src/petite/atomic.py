"""Atomic writes: a reader sees the old file (or folder) or the complete new one.

Everything petite writes (volumes, datalists, checkpoints, adapters, reports)
goes through :func:`atomic_path`: the content is written to a temporary file in
the destination folder and renamed over the target only once it is complete,
so an interrupted run or a failed validation never leaves a half-written file.
Whole output folders (multi-modal run folders, reports) are built in a hidden
:func:`staged_folder` and renamed into place the same way.  :func:`to_jsonable`
is the one conversion of results (numpy scalars, paths, tuples, NaN) to JSON.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from petite.errors import UserError


def current_umask() -> int:
    """The process umask (read without changing it for longer than one call)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Rust-backed writers (safetensors) report an OS error only in their message: "... (os error 28)".
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def _name_the_target(err: Exception, target: Path) -> Exception:
    """``err`` as an :class:`OSError` naming ``target`` when it is an OS error about our temporary file.

    The user never sees the hidden temporary name (or no name at all, as a failed ``write``
    gives): a full disk or a read-only folder is reported on the file they asked for.  A
    library error that carries an OS error number only in its text becomes that OSError.
    """
    if isinstance(err, OSError):
        name = None if err.filename is None else Path(str(err.filename))
        if name is None or (name.parent == target.parent and name.name.startswith(f".{target.name}.")):
            err.filename = str(target)
        return err
    found = _RUST_OS_ERROR.search(str(err))
    if found is None:
        return err
    code = int(found.group(1))
    converted = OSError(code, os.strerror(code), str(target))
    converted.__cause__ = err
    return converted


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success.

    The temporary name keeps the target's suffixes (``.nii.gz``, ``.safetensors``)
    so libraries that choose a format by extension behave the same.  The file gets
    the usual permissions (``0666`` minus the umask) whatever the writer did to it.
    On any error the temporary file is removed; an OS error (full disk, read-only
    folder) names ``target``.
    """
    target = Path(target)
    suffix = "".join(target.suffixes)
    mode = 0o666 & ~current_umask()  # what a plain open() would give; mkstemp makes 0600 files
    tmp: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=target.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        os.chmod(tmp, mode)
        yield tmp
        # Writers may replace the file we made instead of writing into it (safetensors writes a
        # new 0600 file), so the mode is set again on what is about to become the target.
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except Exception as err:
        named = _name_the_target(err, target)
        if named is err:
            raise
        raise named from err
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()


def write_text(target: str | Path, text: str) -> None:
    """Atomically write ``text`` to ``target``."""
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def to_jsonable(value: Any) -> Any:
    """``value`` with numpy scalars and arrays, paths and tuples made JSON types; NaN/Inf become ``None``.

    Mapping keys become strings.  Anything else unknown is turned into its ``str``.
    """
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if value is None or isinstance(value, str):
        return value
    return str(value)


def write_json(target: str | Path, data: Any) -> None:
    """Atomically write ``data`` (through :func:`to_jsonable`) as indented JSON to ``target``."""
    write_text(target, json.dumps(to_jsonable(data), indent=2, sort_keys=False) + "\n")


def check_output_folder(out: str | Path, overwrite: bool = False) -> None:
    """UserError unless ``out`` can become an output folder (absent or empty, or ``overwrite`` of a folder)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError("output exists and is not a folder", out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError("output folder exists and is not empty; pass --overwrite to replace it", out)


@contextmanager
def staged_folder(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty hidden folder beside ``out``; on success it replaces ``out`` in one rename.

    On any error the staging folder is removed and ``out`` is left as it was.
    ``out`` must be absent or empty unless ``overwrite`` (then it is replaced only at the end).
    """
    out = Path(out)
    check_output_folder(out, overwrite)
    staging: Path | None = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".staging", dir=out.parent))
        os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp makes 0700 folders; give the usual permissions
        yield staging
        trash = None
        if out.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, trash / "old")
        os.replace(staging, out)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
    except OSError as err:
        # A full disk or a read-only parent is reported on the folder asked for, not on the hidden one.
        name = None if err.filename is None else Path(str(err.filename))
        if name is None or (name.parent == out.parent and name.name.startswith(f".{out.name}.")):
            err.filename = str(out)
        elif staging is not None and (name == staging or staging in name.parents):
            err.filename = str(out / name.relative_to(staging))
        raise
    finally:
        if staging is not None and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
