"""The report: verdict, escaping of everything that comes from data, summary.md, and run-to-run comparison."""
from __future__ import annotations

import json
import re
from pathlib import Path

from optikit.report.analysis import compare, verdict
from optikit.report.html import render_html, script_json
from optikit.report.outputs import write_outputs
from optikit.report.summary import summary_markdown
from tests.unit.report.fake import HOSTILE, fake_results


def test_verdict_ships_the_faster_variant_within_budget_and_says_how_sure() -> None:
    v = verdict(fake_results(), 1.0)
    assert v.ship == "int8" and v.headline == "Ship int8."
    assert any("faster" in r for r in v.reasons) and any("4.00× smaller" in r for r in v.reasons)
    assert any("95% CI -0.80 to +0.20" in r for r in v.reasons)
    assert v.confidence.startswith("Confident")


def test_verdict_is_not_certain_when_the_interval_crosses_the_budget() -> None:
    v = verdict(fake_results(ci=(-0.02, 0.0)), 1.0)
    assert v.ship == "int8" and v.confidence.startswith("Not certain: the 95% interval reaches -2.00")
    assert "point estimate only" in verdict(fake_results(ci=None), 1.0).confidence


def test_verdict_keeps_the_baseline_when_nothing_qualifies() -> None:
    assert verdict(fake_results(int8_f1=0.85), 1.0).ship is None  # loses 5 points
    assert verdict(fake_results(int8_p50=1.0), 1.0).ship == "int8"  # still 4× smaller
    keep = verdict(fake_results(int8_f1=0.85), 1.0)
    assert keep.headline == "Keep the baseline." and "1 point" in keep.reasons[0]


def test_report_escapes_every_string_from_data() -> None:
    page = render_html(fake_results(hostile=True))
    assert HOSTILE not in page
    assert "<img src=x" not in page
    assert "&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in page  # shown as text in tables
    # Inside <script> blocks only the page's own closing tags may appear.
    for body in re.findall(r"<script[^>]*>(.*?)</script>", page, flags=re.S):
        assert "<img" not in body


def test_script_json_cannot_close_its_script_element() -> None:
    text = script_json({"label": HOSTILE, "amp": "a&b"})
    assert "</" not in text and "<" not in text and "&" not in text
    assert json.loads(text) == {"label": HOSTILE, "amp": "a&b"}


def test_report_is_self_contained_and_has_every_section() -> None:
    page = render_html(fake_results())
    assert "cdn" not in page.lower().split("<script>", 2)[0]  # nothing fetched before the inlined library
    assert not re.search(r"<script[^>]+src=", page) and not re.search(r"<link[^>]+href=", page)
    for fig in ("latency", "size", "quadrant", "per-class", "per-slice"):
        assert f'id="chart-{fig}"' in page
    for heading in ("Fidelity", "Behavioural suite", "Lineage", "Environment", "Ship int8."):
        assert heading in page
    assert page.count('class="variant-row') == 3
    assert "inv-1" in page and "PassError: boom" in page


def test_summary_markdown_fits_a_pr_comment() -> None:
    md = summary_markdown({"run": fake_results()}, gate=[{"rule": "no-failures", "passed": False,
                                                          "detail": "broken failed (PassError: a|b)"}])
    assert "**Ship int8.**" in md and "| int8 | 89.50 | -0.50 |" in md
    assert "| broken | — | — | — | — | failed: PassError: boom |" in md
    assert "**Gate: FAILED** (0/1 rules hold)" in md and "a\\|b" in md
    assert len(md.splitlines()) < 30


def test_compare_names_what_got_better_and_worse() -> None:
    old, new = fake_results(), fake_results(int8_f1=0.87, int8_p50=0.25)
    changes = {(c.variant, c.metric): c.verdict for c in compare(new, old)}
    assert changes[("int8", "f1_macro (points)")] == "worse"
    assert changes[("int8", "ms b1")] == "better"
    assert changes[("baseline", "f1_macro (points)")] == "same"


def test_write_outputs_with_against_adds_the_changes(tmp_path: Path) -> None:
    paths = write_outputs(fake_results(int8_f1=0.87), tmp_path, against=fake_results(), against_name="old.json")
    assert {p.name for p in paths.values()} == {"results.json", "results.csv", "summary.md", "report.html"}
    assert "Changes against old.json" in paths["html"].read_text()
    assert "**Against old.json**: 1 worse" in paths["md"].read_text()
    assert "broken" in paths["csv"].read_text()
