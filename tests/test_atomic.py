"""petite.atomic: files appear complete or not at all, with the usual permissions, and a full disk names the file."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from petite.atomic import atomic_path, staged_folder, write_text


@pytest.fixture
def umask() -> Iterator[None]:
    """Run the test under umask 022 (a colleague may read what we write), whatever the caller had."""
    before = os.umask(0o022)
    yield
    os.umask(before)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _leftovers(folder: Path) -> list[str]:
    """Hidden temporary files or staging folders anywhere under ``folder``."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*"))


def test_checkpoint_and_adapter_are_readable_by_colleagues(tmp_path: Path, umask: None) -> None:
    from petite.models import build_model
    from petite.models.checkpoint import save_model
    from petite.peft import apply_spec, save_adapter

    model = build_model("unetr", "tiny")
    weights, sidecar = save_model(model, tmp_path / "model")
    state = apply_spec(model, "lora")
    folder = save_adapter(model, state, tmp_path / "adapter")
    modes = {p.name: oct(_mode(p)) for p in (weights, sidecar, folder / "adapter.safetensors", folder / "adapter.json")}
    assert modes == {"model.safetensors": "0o644", "model.json": "0o644", "adapter.safetensors": "0o644",
                     "adapter.json": "0o644"}
    # The umask decides, not a fixed mode: a private umask keeps the weights private.
    os.umask(0o077)
    save_model(model, tmp_path / "private")
    assert oct(_mode(tmp_path / "private.safetensors")) == "0o600"


def test_a_writer_that_recreates_the_file_still_gets_the_usual_mode(tmp_path: Path, umask: None) -> None:
    target = tmp_path / "w.bin"
    with atomic_path(target) as tmp:
        tmp.unlink()  # as safetensors does: a new file, created 0600, in place of ours
        tmp.touch(mode=0o600)
    assert oct(_mode(target)) == "0o644"


def test_full_disk_midway_leaves_no_temporary_and_names_the_target(tmp_path: Path) -> None:
    target = tmp_path / "out" / "table.csv"
    write_text(target, "old\n")
    with pytest.raises(OSError) as err:
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # a failed write() carries no file name
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(target)
    assert target.read_text() == "old\n" and _leftovers(tmp_path) == []


def test_safetensors_disk_error_becomes_an_os_error_naming_the_target(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors import SafetensorError

    from petite.models import build_model, checkpoint

    def full_disk(tensors: object, filename: str, metadata: object = None) -> None:
        Path(filename).write_bytes(b"partial")
        # What safetensors' Rust writer raised on a full tmpfs.
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(checkpoint, "save_file", full_disk)
    with pytest.raises(OSError) as err:
        checkpoint.save_model(build_model("unetr", "tiny"), tmp_path / "model")
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(tmp_path / "model.safetensors")
    assert isinstance(err.value.__cause__, SafetensorError)
    assert list(tmp_path.iterdir()) == []

    def bad_dtype(tensors: object, filename: str, metadata: object = None) -> None:
        raise SafetensorError("bad dtype")

    # Any other library error is left as it is.
    monkeypatch.setattr(checkpoint, "save_file", bad_dtype)
    with pytest.raises(SafetensorError):
        checkpoint.save_model(build_model("unetr", "tiny"), tmp_path / "model")
    assert list(tmp_path.iterdir()) == []


def test_read_only_folder_is_reported_on_the_file_asked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    def read_only(*args: object, dir: str | None = None, **kwargs: object) -> tuple[int, str]:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.path.join(str(dir), ".x.json.k2j3.tmp.json"))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(OSError) as err:
        write_text(tmp_path / "x.json", "{}")
    assert err.value.errno == errno.EROFS and err.value.filename == str(tmp_path / "x.json")


def test_staged_folder_errors_name_the_folder_asked_for(tmp_path: Path) -> None:
    out = tmp_path / "report"
    with pytest.raises(OSError) as err:
        with staged_folder(out) as staging:
            write_text(staging / "tables" / "a.md", "x")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(staging / "tables" / "b.md"))
    assert err.value.filename == str(out / "tables" / "b.md")
    assert not out.exists() and _leftovers(tmp_path) == []
