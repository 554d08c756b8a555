"""The API's report functions: the HTML page and the four files come from the report package, not the harness."""
from __future__ import annotations

from pathlib import Path

import optikit
from optikit import api
from tests.unit.report.fake import fake_results


def test_write_html_writes_the_report_page_alone(tmp_path: Path) -> None:
    from optikit.report.html import render_html

    results = fake_results()
    page = optikit.write_html(results, tmp_path / "report.html")
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]
    assert page.read_text() == render_html(results)


def test_render_report_rerenders_beside_the_results_and_keeps_them(tmp_path: Path) -> None:
    paths = optikit.write_report(fake_results(), tmp_path / "run")
    saved = paths["json"].read_text()
    again = api.render_report(paths["json"], against=paths["json"])
    assert again["md"] == paths["md"] and "Against" in again["md"].read_text()
    assert paths["json"].read_text() == saved
