"""The API's report functions: the HTML page and the four files come from the report package, not the harness."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

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


def test_write_report_saves_results_json_before_a_failing_renderer_and_says_where(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import optikit.report.outputs

    def broken_renderer(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the renderer broke")

    monkeypatch.setattr(optikit.report.outputs, "write_outputs", broken_renderer)
    measured = SimpleNamespace(to_dict=lambda: {"variants": ["measured"]})
    with pytest.raises(RuntimeError, match="the renderer broke") as failed:
        api.write_report(measured, tmp_path / "run")  # type: ignore[arg-type]
    saved = tmp_path / "run" / "results.json"
    assert json.loads(saved.read_text()) == {"variants": ["measured"]}
    assert failed.value.__notes__ == [f"the results are saved in {saved}: `optikit report {saved}` writes the other "
                                      "files once that is fixed"]


def test_render_report_refuses_an_out_through_a_file_before_rendering(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from optikit.errors import ConfigError

    (tmp_path / "a-file").write_text("")
    monkeypatch.setattr(api.Results, "load", lambda path: SimpleNamespace())
    monkeypatch.setattr(api, "write_report", lambda *a, **k: pytest.fail("rendered into an unwritable folder"))
    with pytest.raises(ConfigError, match=r"^out .*/a-file/sub: .*/a-file is a file, not a folder; pass a folder path$"):
        api.render_report(tmp_path / "results.json", out=tmp_path / "a-file" / "sub")
