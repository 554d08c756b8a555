"""The report: verdict, escaping of everything that comes from data, summary.md, and run-to-run comparison."""
from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

from optikit.harness.compare import display_names
from optikit.harness.records import MeasuredSpeedup
from optikit.harness.significance import speedup_verdict
from optikit.report.analysis import compare, verdict
from optikit.report.html import render_html, script_json
from optikit.report.outputs import write_outputs
from optikit.report.summary import summary_markdown
from tests.unit.report.fake import HOSTILE, fake_results, ten_variants


def _interleaved(ratio: float, low: float, high: float) -> tuple[MeasuredSpeedup, ...]:
    return tuple(MeasuredSpeedup(b, ratio, low, high, 10, speedup_verdict(low, high)) for b in (1, 32))

def test_verdict_ships_the_faster_variant_within_budget_and_says_how_sure() -> None:
    v = verdict(fake_results(), 1.0)
    assert v.ship == "int8" and (v.objective, v.batch_size) == ("latency", 32)
    assert v.headline == "Ship int8 for speed: 2.00× faster at batch 32, 4.00× smaller."
    assert v.reasons[0] == "speedup 2.00× at batch 32 (ratio of steady medians, no interval)"
    assert any("95% CI -0.80 to +0.20" in r for r in v.reasons)
    assert v.confidence.startswith("Confident")


def test_verdict_never_calls_a_slower_variant_faster() -> None:
    # The case a new user met: int8 is 4× smaller and ~4× slower; the summary read "Ship int8. 0.23× faster".
    res = fake_results(int8_p50=4.35)
    res.variants[1] = replace(res.variants[1], speedup=_interleaved(0.23, 0.21, 0.25))
    v = verdict(res, 1.0)
    assert v.ship == "int8" and v.objective == "size"
    assert v.headline == "Ship int8 for size: 4.00× smaller, 4.35× slower at batch 32."
    md = summary_markdown({"run": res})
    page = render_html(res)
    for text in (md, page, v.headline, *v.reasons):
        assert not re.search(r"0\.\d+× faster", text) and "Ship int8." not in text
    assert f"**{v.headline}**" in md and v.headline in page


def test_verdict_names_no_speed_claim_whose_interval_holds_one() -> None:
    res = fake_results(int8_p50=0.9)
    int8 = res.variants[1]
    assert int8.size is not None
    res.variants[1] = replace(int8, size=replace(int8.size, bytes_on_disk=3_990_000),
                              speedup=_interleaved(1.3, 0.97, 1.6))
    keep = verdict(res, 1.0)
    assert keep.ship is None and keep.headline.startswith("Keep the baseline: no variant is faster at batch 32")
    assert keep.reasons == ("int8: no measurable speed difference at batch 32, 1.00× smaller",)


def test_verdict_is_not_certain_when_the_interval_crosses_the_budget() -> None:
    v = verdict(fake_results(ci=(-0.02, 0.0)), 1.0)
    assert v.ship == "int8" and v.confidence.startswith("Not certain: the 95% interval reaches -2.00")
    assert "point estimate only" in verdict(fake_results(ci=None), 1.0).confidence


def test_verdict_keeps_the_baseline_when_nothing_qualifies() -> None:
    assert verdict(fake_results(int8_f1=0.85), 1.0).ship is None  # loses 5 points
    small = verdict(fake_results(int8_p50=1.0), 1.0)  # as fast, still 4× smaller
    assert small.ship == "int8" and small.headline == \
        "Ship int8 for size: 4.00× smaller, no measurable speed difference at batch 32."
    keep = verdict(fake_results(int8_f1=0.85), 1.0)
    assert keep.headline.startswith("Keep the baseline:") and "1 point(s) of macro-F1" in keep.headline
    assert keep.reasons == ("int8: 2.00× faster at batch 32, 4.00× smaller, but loses 5.00 points of macro-F1",)


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
    for heading in ("Fidelity", "Behavioural suite", "Lineage", "Environment", "Ship int8 for speed"):
        assert heading in page
    assert page.count('class="variant-row') == 3
    assert "inv-1" in page and "PassError: boom" in page


def test_summary_markdown_fits_a_pr_comment() -> None:
    md = summary_markdown({"run": fake_results()}, gate=[{"rule": "no-failures", "passed": False,
                                                          "detail": "broken failed (PassError: a|b)"}])
    assert "**Ship int8 for speed: 2.00× faster at batch 32, 4.00× smaller.**" in md and "| int8 | 89.50 | -0.50 |" in md
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
    assert {p.name for p in paths.values()} == {"results.json", "results.csv", "results-long.csv", "summary.md",
                                                "report.html"}
    assert "Changes against old.json" in paths["html"].read_text()
    assert "**Against old.json**: 1 worse" in paths["md"].read_text()
    assert "broken" in paths["csv"].read_text()


def test_charts_stay_readable_with_ten_variants() -> None:
    from optikit.report.figures import latency_vs_f1, quadrant

    res = ten_variants()
    names = set(display_names(res.variants))
    for fig in (latency_vs_f1(res), quadrant(res)):
        spec = fig.to_plotly_json()
        scatters = [t for t in spec["data"] if t["type"] == "scatter"]
        assert not any("text" in (t.get("mode") or "") for t in scatters)  # no names printed on the plot
        assert names - {"baseline"} <= {t.get("name") for t in scatters}  # every variant in the legend …
        assert spec["layout"].get("showlegend") is not False
        assert all(t.get("hovertemplate", "").startswith(t["name"]) for t in scatters if t["mode"] == "markers")
    assert "digits-cnn+export-onnx+quantize:mode=weight-only" in names  # … under a name that tells it apart


def test_tables_and_report_show_the_names_that_tell_siblings_apart() -> None:
    res = ten_variants()
    md = summary_markdown({"run": res})
    page = render_html(res)
    frame = res.to_frame()
    for mode in ("static", "dynamic", "weight-only"):
        name = f"digits-cnn+export-onnx+quantize:mode={mode}"
        assert f"| {name} |" in md and name in page and name in set(frame["variant"])


def test_results_written_before_the_newer_fields_still_load_and_render(tmp_path: Path) -> None:
    # A schema-1 file: no significance, quadrant, behavioural, speedup, peak RSS or diagnostics on any row.
    data = fake_results().to_dict()
    data["schema"] = 1
    for row in data["variants"]:
        for key in ("significance", "quadrant", "behavioral", "speedup", "peak_rss_mb", "diagnostics"):
            row.pop(key, None)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    from optikit.harness.results import Results

    old = Results.load(path)
    v = verdict(old, 1.0)
    assert v.ship == "int8" and "point estimate only" in v.confidence
    assert "Ship int8 for speed" in render_html(old) and "| int8 | 89.50 | -0.50 | 2.00 | 4.00 | ok |" in \
        summary_markdown({"run": old})
    assert old.to_frame().loc[1, "speedup_source_b32"] == "medians"
