"""Imports point one way: the harness never imports the report, and the CLI reaches the package only through the API."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "optikit"


def imported_modules(path: Path) -> set[str]:
    """Every optikit module a file imports, at module level or inside a function (`from optikit import x` → optikit.x)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            if node.module == "optikit":
                found.update(f"optikit.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level:
            found.add(f"<relative import in {path.name}>")  # the package uses absolute imports only
    return {m for m in found if m.split(".")[0] == "optikit" or m.startswith("<")}


def test_imported_modules_sees_function_level_and_from_imports(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text("import os\nfrom optikit import api\n\ndef f():\n    from optikit.report.html import render_html\n")
    assert imported_modules(src) == {"optikit", "optikit.api", "optikit.report.html"}


HARNESS = [pytest.param(p, id=p.name) for p in sorted(PACKAGE.glob("harness/*.py"))]


@pytest.mark.parametrize("path", HARNESS)
def test_harness_never_imports_the_report(path: Path) -> None:
    wrong = sorted(m for m in imported_modules(path) if m == "optikit.report" or m.startswith("optikit.report."))
    assert not wrong, f"{path.name} imports {wrong}: the report reads the harness, never the reverse"


def test_cli_imports_only_the_api_and_the_errors() -> None:
    allowed = {"optikit", "optikit.api", "optikit.errors"}  # `from optikit import api` names the package itself
    wrong = sorted(imported_modules(PACKAGE / "cli.py") - allowed)
    assert not wrong, f"cli.py imports {wrong}: give the CLI what it needs through optikit.api"


@pytest.mark.parametrize("path", sorted(p for p in PACKAGE.rglob("*.py") if p.name not in ("cli.py", "__main__.py")),
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_nothing_in_the_package_imports_the_cli(path: Path) -> None:
    assert "optikit.cli" not in imported_modules(path), f"{path.name} imports the CLI: the CLI sits on top of the API"
