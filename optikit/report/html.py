"""The HTML comparison report: one self-contained file (plotly inlined, no network), every string escaped."""
from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from optikit.harness.latency import headline_ms
from optikit.harness.results import Results, VariantResult
from optikit.report.analysis import (
    Change,
    base_of,
    batch_sizes,
    f1_delta_points,
    f1_interval_points,
    field,
    headline_batch,
    ok,
    size_ratio,
    speedup,
    verdict,
)


def script_json(data: Any) -> str:
    """JSON that is safe inside <script>: no `</script>`, `<!--` or `&` can end or confuse the element."""
    text = data if isinstance(data, str) else json.dumps(data, default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


@dataclass(frozen=True)
class Cell:
    text: str
    sort: str | float | None = None  # the value the table sorts by (numbers sort as numbers)
    cls: str = ""


def _num(value: float | None, fmt: str, suffix: str = "") -> Cell:
    return Cell("—" if value is None else format(value, fmt) + suffix, value)


def table(results: Results) -> tuple[list[str], list[dict[str, Any]]]:
    """Headers and one row per variant (failed ones included, with their error)."""
    base = base_of(results)
    sizes = batch_sizes(results)
    headers = ["variant", "status", "format", "lineage", "macro-F1", "ΔF1 (pts)", "accuracy", "size MB", "×smaller"]
    headers += [f"ms b{b}" for b in sizes] + [f"×faster b{b}" for b in sizes]
    headers += ["agreement", "flips →wrong", "behavioural", "peak RSS MB"]
    rows = []
    for v in results.variants:
        cells = [Cell(v.name, v.name), Cell(v.status, v.status, "bad" if v.status != "ok" else ""),
                 Cell(v.format, v.format),
                 # pass names only here; the Lineage section shows every option
                 Cell(" → ".join(s.split(":")[0] for s in v.lineage) or "teacher", len(v.lineage))]
        if not ok(v) or base is None:
            cells.append(Cell(f"{v.error or 'not measured'}", None, "error"))
            rows.append({"cells": cells, "span": len(headers) - len(cells) + 1, "baseline": v.is_baseline})
            continue
        delta = f1_delta_points(v, base)
        ci = f1_interval_points(v)
        delta_text = "—" if delta is None else f"{delta:+.2f}" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")
        cells += [_num(v.alignment["f1_macro"] * 100, ".2f"),
                  Cell(delta_text, delta, "bad" if delta is not None and delta < -1 else ""),
                  _num(v.alignment.get("accuracy", 0) * 100, ".2f"),
                  _num(v.size.get("bytes_on_disk", 0) / 1e6, ".3f"), _num(size_ratio(v, base), ".2f", "×")]
        cells += [_num(headline_ms(v.latency_at(b)) if v.latency_at(b) else None, ".3f") for b in sizes]
        for b in sizes:
            ratio, lo, hi = speedup(v, base, b)
            c = _num(ratio, ".2f", "×")
            if lo is not None and hi is not None:
                c = Cell(f"{c.text} [{lo:.2f}, {hi:.2f}]", ratio)
            cells.append(c)
        beh = field(v, "behavioral", {})
        cells += [_num(v.fidelity.get("agreement", 1.0 if v.is_baseline else None), ".4f"),
                  _num(v.fidelity.get("flips_right_to_wrong"), "d"),
                  _num(beh.get("pass_rate") * 100 if beh.get("pass_rate") is not None else None, ".1f", "%"),
                  _num(field(v, "peak_rss_mb"), ".0f")]
        rows.append({"cells": cells, "span": 1, "baseline": v.is_baseline})
    return headers, rows


def lineage(v: VariantResult) -> list[str]:
    return ["teacher", *v.lineage]


def flatten(d: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested environment dicts as `key.sub = value` rows."""
    if isinstance(d, dict):
        return [row for k, val in d.items() for row in flatten(val, f"{prefix}{k}.")]
    if isinstance(d, list):
        return [(prefix.rstrip("."), ", ".join(map(str, d)))]
    return [(prefix.rstrip("."), str(d))]


def fidelity_rows(results: Results) -> list[dict[str, Any]]:
    out = []
    for v in results.variants:
        if ok(v) and not v.is_baseline and v.fidelity:
            f = v.fidelity
            out.append({"name": v.name, "agreement": f.get("agreement"), "r2w": f.get("flips_right_to_wrong"),
                        "w2r": f.get("flips_wrong_to_right"), "kl": f.get("kl_mean"),
                        "flipped": list(f.get("flipped") or [])[:15]})
    return out


def behavioral_rows(results: Results) -> list[dict[str, Any]]:
    out = []
    for v in results.variants:
        beh = field(v, "behavioral", {})
        if ok(v) and beh:
            out.append({"name": v.name, "pass_rate": beh.get("pass_rate"), "by_type": beh.get("by_type") or {},
                        "regressions": list(beh.get("regressions") or [])})
    return out


def render_html(results: Results, *, changes: list[Change] | None = None, against: str | None = None,
                budget_points: float | None = None) -> str:
    import jinja2
    import plotly.offline
    from markupsafe import Markup

    from optikit.report.figures import all_figures

    matrix = results.settings.get("matrix") or {}
    budget = budget_points if budget_points is not None else matrix.get("f1_budget_points", 1.0)
    figures = [{"id": fid, "heading": heading, "json": Markup(script_json(fig.to_json()))}
               for fid, heading, fig in all_figures(results)]
    headers, rows = table(results)
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    template = env.from_string(resources.files("optikit.report").joinpath("report.html.j2").read_text("utf-8"))
    # The library is ~4.6 MB of our own trusted text; `</` can only appear inside its string literals.
    plotly_js = Markup(plotly.offline.get_plotlyjs().replace("</", "<\\/"))
    return template.render(
        results=results, verdict=verdict(results, budget), headers=headers, rows=rows, figures=figures,
        plotly_js=plotly_js, fidelity=fidelity_rows(results), behavioral=behavioral_rows(results),
        lineages=[(v.name, lineage(v), v.status) for v in results.variants],
        environment=flatten(results.environment), gate=results.settings.get("gate") or [],
        changes=changes, against=against, matrix=matrix, base=base_of(results),
        headline=headline_batch(results), failed=[v for v in results.variants if v.status != "ok"],
        notes=[(v.name, n) for v in results.variants for n in v.notes])
