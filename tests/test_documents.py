"""Every JSON/YAML document petite reads fails the same way: one UserError naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from petite.documents import read_json, read_yaml
from petite.errors import UserError


def test_reads_valid_documents(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text('{"x": [1, 2]}')
    (tmp_path / "a.yaml").write_text("x: [1, 2]\n")
    assert read_json(tmp_path / "a.json") == {"x": [1, 2]} == read_yaml(tmp_path / "a.yaml")


@pytest.mark.parametrize(
    ("name", "content", "reader", "message"),
    [
        ("missing.json", None, read_json, "datalist not found"),
        ("bad.json", '{"x": ', read_json, "datalist is not valid JSON"),
        ("bad.yaml", "x: [1, 2\n", read_yaml, "datalist is not valid YAML"),
        ("binary.json", b"\xff\xfe\x00", read_json, "cannot read datalist"),
    ],
)
def test_bad_documents_name_the_file(tmp_path: Path, name: str, content: object, reader, message: str) -> None:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(UserError, match=message) as info:
        reader(path, "datalist")
    assert str(path) in str(info.value) and "\n" not in str(info.value)
