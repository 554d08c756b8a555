"""The HTML report in a real browser (headless Chromium): draws every chart, makes no request, logs no error."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")


def open_in_chromium(page: Path, workdir: Path) -> tuple[str, str, list[str]]:
    """(DOM after scripts ran, browser log, URLs the page itself requested), plus a screenshot beside `page`."""
    common = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
              "--virtual-time-budget=8000", "--window-size=1280,2400"]
    net_log = workdir / "net.json"
    dom = subprocess.run([*common, f"--user-data-dir={workdir / 'profile'}", "--enable-logging=stderr", "--v=0",
                          f"--log-net-log={net_log}", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120, check=True)
    subprocess.run([*common, f"--user-data-dir={workdir / 'profile2'}", f"--screenshot={page.with_suffix('.png')}",
                    page.as_uri()], capture_output=True, timeout=120, check=True)
    # Requests the page made carry its opaque file:// origin ("null"); the browser's own housekeeping does not.
    events = json.loads(net_log.read_text()).get("events", []) if net_log.is_file() else []
    urls = [e["params"]["url"] for e in events
            if (e.get("params") or {}).get("initiator") == "null" and "url" in e["params"]
            and not e["params"]["url"].startswith(("file:", "data:", "blob:"))]
    return dom.stdout, dom.stderr, urls


def check_page(page: Path, workdir: Path, rows: int) -> str:
    dom, log, urls = open_in_chromium(page, workdir)
    console = [ln for ln in log.splitlines() if "CONSOLE" in ln]
    assert console == [], console
    assert urls == []
    assert re.search(r'data-errors="\[\]"', dom), "the page recorded script errors or blocked requests"
    charts = re.findall(r'<div class="chart[^"]*" id="chart-([^"]+)"(.*?)</div>\s*<script', dom, flags=re.S)
    drawn = re.search(r'data-rendered="(\d+)"', dom)
    assert drawn and int(drawn.group(1)) == len(charts) >= 3
    for name, body in charts:
        assert "<svg" in body, f"chart {name} has no svg"
    table = re.search(r'<table id="variants".*?</table>', dom, flags=re.S).group(0)
    assert table.count('class="variant-row') == rows
    assert page.with_suffix(".png").stat().st_size > 10_000
    return dom


def test_matrix_report_renders_in_chromium(two_cell_run: Path, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    shutil.copy(two_cell_run / "report.html", page)
    check_page(page, tmp_path, rows=2)


def test_hostile_labels_stay_text_in_chromium(tmp_path: Path) -> None:
    from optikit.report.html import render_html
    from tests.unit.report.fake import fake_results

    page = tmp_path / "hostile.html"
    page.write_text(render_html(fake_results(hostile=True)))
    dom = check_page(page, tmp_path, rows=3)
    markup = re.sub(r"<script[^>]*>.*?</script>", "", dom, flags=re.S)  # the library's own source aside
    assert "<img" not in markup  # the label was shown as text, never parsed into an element


def test_ten_variant_charts_name_variants_in_legends_not_on_the_plot(tmp_path: Path) -> None:
    from optikit.report.html import render_html
    from tests.unit.report.fake import ten_variants

    page = tmp_path / "ten.html"
    page.write_text(render_html(ten_variants()))
    dom = check_page(page, tmp_path, rows=10)
    assert 'class="textpoint"' not in dom  # plotly draws text-mode labels as textpoints: none, so none overlap
    legends = re.findall(r'class="legendtext"[^>]*>([^<]*)<', dom)
    assert "digits-cnn+export-onnx+quantize:mode=weight-only" in legends and "chain-5" in legends
