"""Result tables as petite prints and reports them: aligned columns for the terminal, markdown for report files."""

from __future__ import annotations

from collections.abc import Sequence


def _md_cell(value: object) -> str:
    """A markdown cell: ``|`` escaped and line breaks flattened, so every row keeps its number of cells."""
    return " ".join(str(value).replace("|", "\\|").split()) or " "


def render_table(columns: Sequence[str], cells: Sequence[Sequence[str]]) -> tuple[str, str]:
    """``(plain text, markdown)`` of a table with header ``columns`` and rows of ``cells`` (already formatted).

    Plain text: columns left-aligned to their widest cell, two spaces apart, a dashed rule under the header.
    Markdown (GitHub-flavoured, renders on every common host): a header row, the ``|---|`` separator row, and
    one line per row (``|`` inside a cell escaped, so a row has as many cells as it was given).
    """
    widths = [max(len(str(c)) for c in col) for col in zip(columns, *cells)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(columns, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in cells]
    md = ["| " + " | ".join(_md_cell(c) for c in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    md += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in cells]
    return "\n".join(lines), "\n".join(md)


__all__ = ["render_table"]
