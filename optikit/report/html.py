"""The HTML comparison report: one self-contained file (plotly inlined, no network), every string escaped."""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any

from optikit.harness.compare import baseline, batch_sizes, delta, display_names, headline_batch, ok, size_ratio, speedup
from optikit.harness.records import Flip, plain
from optikit.harness.results import Results, VariantResult
from optikit.report.analysis import Change, verdict


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
    base = baseline(results)
    sizes = batch_sizes(results)
    headers = ["variant", "status", "format", "lineage", "macro-F1", "ΔF1 (pts)", "accuracy", "size MB", "×smaller"]
    headers += [f"ms b{b}" for b in sizes] + [f"×faster b{b}" for b in sizes]
    headers += ["agreement", "flips →wrong", "behavioural", "peak RSS MB"]
    rows = []
    for v, name in zip(results.variants, display_names(results.variants), strict=True):
        cells = [Cell(name, name), Cell(v.status, v.status, "bad" if v.status != "ok" else ""),
                 Cell(v.format, v.format),
                 # pass names only here; the Lineage section shows every option
                 Cell(" → ".join(s.split(":")[0] for s in v.lineage) or "teacher", len(v.lineage))]
        if not ok(v) or base is None:
            cells.append(Cell(f"{v.error or 'not measured'}", None, "error"))
            rows.append({"cells": cells, "span": len(headers) - len(cells) + 1, "baseline": v.is_baseline})
            continue
        d = delta(v, base)
        ci = d.interval_points if d else None
        delta_text = "—" if d is None else f"{d.points:+.2f}" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")
        a, fid, beh = v.alignment, v.fidelity, v.behavioral
        cells += [_num(a.f1_macro * 100 if a else None, ".2f"),
                  Cell(delta_text, d.points if d else None, "bad" if d is not None and d.points < -1 else ""),
                  _num(a.accuracy * 100 if a else None, ".2f"),
                  _num(v.size.bytes_on_disk / 1e6 if v.size else None, ".3f"), _num(size_ratio(v, base), ".2f", "×")]
        cells += [_num(lat.headline_ms if (lat := v.latency_at(b)) else None, ".3f") for b in sizes]
        for b in sizes:
            s = speedup(v, base, b)
            c = _num(s.ratio if s else None, ".2f", "×")
            if s is not None and s.low is not None and s.high is not None:
                c = Cell(f"{c.text} [{s.low:.2f}, {s.high:.2f}]", s.ratio)
            cells.append(c)
        cells += [_num(fid.agreement if fid else 1.0 if v.is_baseline else None, ".4f"),
                  _num(fid.flips_right_to_wrong if fid else None, "d"),
                  _num(beh.pass_rate * 100 if beh and beh.pass_rate is not None else None, ".1f", "%"),
                  _num(v.peak_rss_mb, ".0f")]
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
    for v, name in zip(results.variants, display_names(results.variants), strict=True):
        if ok(v) and not v.is_baseline and v.fidelity:
            f = v.fidelity
            out.append({"name": name, "agreement": f.agreement, "r2w": f.flips_right_to_wrong,
                        "w2r": f.flips_wrong_to_right, "kl": f.kl_mean,
                        "flipped": [_named(e, results.task.label_names) for e in f.flipped[:15]]})
    return out


def _named(flip: Flip, label_names: tuple[str, ...]) -> Flip:
    """The flip with its class indices shown as the task's label names."""
    def name(label: int | str) -> int | str:
        return label_names[label] if isinstance(label, int) and 0 <= label < len(label_names) else label

    return replace(flip, label=name(flip.label), baseline=name(flip.baseline), variant=name(flip.variant))


def _pair(before: Any, after: Any, fmt: str) -> str:
    return " / ".join("—" if x is None else format(x, fmt) for x in (before, after))


def conditions_rows(results: Results) -> list[dict[str, Any]]:
    """Each assessed variant's measurement conditions: the load read before and after its timing, and why it was
    flagged (empty when every check holds)."""
    out = []
    for v, name in zip(results.variants, display_names(results.variants), strict=True):
        c = v.conditions
        if c is None:
            continue
        b, a = c.before, c.after
        state = " and ".join(w for w, on in (("a starved machine", c.starved), ("inconsistent figures", c.inconsistent))
                             if on) or "fair conditions"
        out.append({"name": name, "flagged": c.flagged, "state": state, "reasons": list(c.reasons),
                    "busy": _pair(b.other_cpu_cores if b else None, a.other_cpu_cores if a else None, ".2f"),
                    "queue": _pair(b.run_queue if b else None, a.run_queue if a else None, "d"),
                    "steal": _pair(b.steal_fraction if b else None, a.steal_fraction if a else None, ".0%")})
    return out


def behavioral_rows(results: Results) -> list[dict[str, Any]]:
    out = []
    for v, name in zip(results.variants, display_names(results.variants), strict=True):
        beh = v.behavioral
        if ok(v) and beh:
            out.append({"name": name, "pass_rate": beh.pass_rate, "by_type": beh.by_type,
                        "regressions": list(beh.regressions)})
    return out


def render_html(results: Results, *, changes: list[Change] | None = None, against: str | None = None,
                budget_points: float | None = None) -> str:
    import jinja2
    import plotly.offline
    from markupsafe import Markup

    from optikit.report.figures import all_figures
    from optikit.report.machine import capabilities, choices

    matrix = results.settings.get("matrix") or {}
    budget = budget_points if budget_points is not None else matrix.get("f1_budget_points", 1.0)
    figures = [{"id": fid, "heading": heading, "json": Markup(script_json(fig.to_json()))}
               for fid, heading, fig in all_figures(results)]
    headers, rows = table(results)
    names = display_names(results.variants)
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    template = env.from_string(resources.files("optikit.report").joinpath("report.html.j2").read_text("utf-8"))
    # The library is ~4.6 MB of our own trusted text; `</` can only appear inside its string literals.
    plotly_js = Markup(plotly.offline.get_plotlyjs().replace("</", "<\\/"))
    return template.render(
        results=results, verdict=verdict(results, budget), headers=headers, rows=rows, figures=figures,
        plotly_js=plotly_js, fidelity=fidelity_rows(results), behavioral=behavioral_rows(results),
        conditions=conditions_rows(results), preflight=results.settings.get("preflight"),
        lineages=[(n, lineage(v), v.status) for v, n in zip(results.variants, names, strict=True)],
        environment=flatten(plain(results.environment)), gate=results.settings.get("gate") or [],
        changes=changes, against=against, matrix=matrix, base=baseline(results),
        machine_caps=capabilities(results), machine_choices=choices(results),
        headline=headline_batch(results), failed=[v for v in results.variants if v.status != "ok"],
        notes=[(name, n) for v, name in zip(results.variants, names, strict=True) for n in v.notes])
