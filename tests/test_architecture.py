"""The layout's rules, checked: imports go one way, and no module grows past its budget unexplained."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "petite"


def _tool():
    spec = importlib.util.spec_from_file_location("import_cycles", ROOT / "tools" / "import_cycles.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_import_cycles() -> None:
    tool = _tool()
    assert tool.cycles(tool.import_graph(PACKAGE)) == []


def test_the_cycle_finder_finds_a_cycle(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.b import x\n")
    (pkg / "b.py").write_text("def f():\n    from pkg import a\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    tool = _tool()
    assert tool.cycles(tool.import_graph(pkg)) == [["pkg.a", "pkg.b"]]


def test_modules_over_600_lines_say_why() -> None:
    long = []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        if text.count("\n") > 600 and "lines" not in (ast.get_docstring(ast.parse(text)) or ""):
            long.append(str(path.relative_to(PACKAGE)))
    assert long == [], f"modules over 600 lines whose docstring does not say why: {long}"
