"""The HTML comparison report: one self-contained file (no network), every string escaped."""
from __future__ import annotations

from importlib import resources

from optikit.harness.results import Results
from optikit.report.table import summary_rows


def render_html(results: Results) -> str:
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    template = env.from_string(resources.files("optikit.report").joinpath("report.html.j2").read_text("utf-8"))
    headers, rows = summary_rows(results)
    return template.render(results=results, headers=headers, rows=rows)
