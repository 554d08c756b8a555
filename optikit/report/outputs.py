"""Writes one run's outputs: results.json, results.csv, summary.md and report.html, each atomically."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from optikit._io import write_json_atomic, write_text_atomic
from optikit.harness.results import Results
from optikit.report.analysis import compare
from optikit.report.html import render_html
from optikit.report.summary import summary_markdown


def results_csv(results: Results) -> str:
    try:
        return results.to_frame().to_csv(index=False)
    except (KeyError, StopIteration, TypeError, ZeroDivisionError):
        # to_frame needs a measured baseline; without one the CSV still lists every cell and its error.
        import pandas as pd

        return pd.DataFrame([{"variant": v.name, "status": v.status, "format": v.format,
                              "lineage": " → ".join(v.lineage), "error": v.error} for v in results.variants]
                            ).to_csv(index=False)


def write_outputs(results: Results, out: Path, *, against: Results | None = None, against_name: str | None = None,
                  budget_points: float | None = None, title: str = "optikit bench",
                  write_json: bool = True) -> dict[str, Path]:
    """All four files under `out`; `against` adds what got better or worse since that earlier run."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "csv": out / "results.csv", "md": out / "summary.md",
             "html": out / "report.html"}
    changes = compare(results, against) if against is not None else None
    if write_json:
        write_json_atomic(paths["json"], results.to_dict())
    write_text_atomic(paths["csv"], results_csv(results))
    gate: list[dict[str, Any]] = results.settings.get("gate") or []
    write_text_atomic(paths["md"], summary_markdown({results.settings.get("matrix", {}).get("group", "") or "run": results},
                                                    title=title, gate=gate, changes=changes, against=against_name,
                                                    budget_points=budget_points))
    write_text_atomic(paths["html"], render_html(results, changes=changes, against=against_name,
                                                 budget_points=budget_points))
    return paths
