"""petite.cli.main: a full disk or an unwritable output is one line and exit status 2, and nothing is left behind."""

from __future__ import annotations

import errno
import os
import pathlib
import tempfile
from pathlib import Path

import numpy as np
import pytest

from petite.data.nifti import make_affine, save_volume
from petite.cli import main
from tests.cli_runner import run_cli

SHAPE = (10, 9, 8)


def _pairs(root: Path, n: int = 5) -> Path:
    """``n`` short/long NIfTI pairs for `petite prepare --pairs-dir`."""
    folder = root / "pairs"
    rng = np.random.default_rng(0)
    for i in range(n):
        long = (rng.random(SHAPE) + 0.5).astype(np.float32)
        save_volume(folder / f"p{i}_short.nii.gz", long + 0.1, make_affine((2.0, 2.0, 2.0), SHAPE))
        save_volume(folder / f"p{i}_long.nii.gz", long, make_affine((2.0, 2.0, 2.0), SHAPE))
    return folder


def _prepare(pairs: Path, out: Path) -> list[object]:
    return ["prepare", "--pairs-dir", pairs, "--out", out, "--split-sizes", "1,1,1,1,1"]


def test_disk_full_while_writing_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    pairs = _pairs(tmp_path)
    out = tmp_path / "out" / "datalist.json"
    write_text = pathlib.Path.write_text

    def full_disk(self: Path, data: str, *args: object, **kwargs: object) -> int:
        if self.name.startswith(".datalist.json."):
            write_text(self, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as a failed write(): no file name
        return write_text(self, data, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "write_text", full_disk)
    result = run_cli(_prepare(pairs, out), capsys)
    assert result.code == 2
    assert result.err == f"petite: error: {out}: no space left on device\n"
    assert list(out.parent.iterdir()) == []  # neither the datalist nor half of it under a hidden name

    # Only storage errors become one line: any other OS error is a bug and keeps its traceback.
    def broken(self: Path, data: str, *args: object, **kwargs: object) -> int:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(pathlib.Path, "write_text", broken)
    with pytest.raises(OSError) as err:
        main([str(a) for a in _prepare(pairs, out)])
    assert err.value.errno == errno.EIO and list(out.parent.iterdir()) == []


@pytest.mark.parametrize("code, reason", [(errno.EROFS, "read-only file system"), (errno.EACCES, "permission denied"),
                                          (errno.EDQUOT, "disk quota exceeded")])
def test_unwritable_output_is_one_line(code: int, reason: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    pairs = _pairs(tmp_path)
    out = tmp_path / "out" / "datalist.json"
    out.parent.mkdir()
    mkstemp = tempfile.mkstemp

    # What creating a file in a read-only (or, without root, a chmod 0o555) folder raises; we run as root here.
    def refused(*args: object, dir: str | None = None, **kwargs: object) -> tuple[int, str]:
        if dir is not None and Path(dir) == out.parent:
            raise OSError(code, os.strerror(code), os.path.join(dir, ".datalist.json.x1y2.tmp.json"))
        return mkstemp(*args, dir=dir, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(tempfile, "mkstemp", refused)
    result = run_cli(_prepare(pairs, out), capsys)
    assert result.code == 2 and result.err == f"petite: error: {out}: {reason}\n"
    assert list(out.parent.iterdir()) == []

