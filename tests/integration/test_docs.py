"""docs/api.md is a specification: its ```python blocks run, in order, in an empty folder."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_api_doc_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, optikit_home: Path) -> None:
    blocks = python_blocks(DOC.read_text(encoding="utf-8"))
    assert len(blocks) >= 4
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPTIKIT_HOME", str(tmp_path / "home"))
    namespace: dict = {"__name__": "__docs__"}
    for i, block in enumerate(blocks, 1):
        try:
            exec(compile(block, f"{DOC.name}[block {i}]", "exec"), namespace)  # noqa: S102 - our own docs
        except Exception as exc:
            raise AssertionError(f"docs/api.md block {i} failed: {type(exc).__name__}: {exc}") from exc
    assert (tmp_path / "report.html").is_file()
    assert (tmp_path / "reports" / "after-training" / "report.html").is_file()
    assert os.environ["OPTIKIT_HOME"] == str(tmp_path / "home")
