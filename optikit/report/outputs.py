"""Writes one run's outputs: results.json, results.csv, results-long.csv, summary.md and report.html, each atomically."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from optikit._io import write_json_atomic, write_text_atomic
from optikit.harness.results import Results
from optikit.report.analysis import compare
from optikit.report.html import render_html
from optikit.report.summary import summary_markdown


def group_columns(results: Results) -> dict[str, str]:
    """A matrix group's teacher and device (its name is `teacher@device`); nothing for a plain bench."""
    group = str((results.settings.get("matrix") or {}).get("group") or "")
    if not group:
        return {}
    teacher, at, device = group.rpartition("@")
    return {"teacher": teacher, "device": device} if at else {"teacher": group, "device": ""}


def _with_group(frame: Any, results: Results) -> Any:
    for i, (column, value) in enumerate(group_columns(results).items()):
        frame.insert(i, column, value)
    return frame


def results_frame(results: Results) -> Any:
    """`Results.to_frame()`, led by the teacher and device columns of a matrix group."""
    import pandas as pd

    try:
        frame = results.to_frame()
    except (KeyError, StopIteration, TypeError, ZeroDivisionError):
        # to_frame needs a measured baseline; without one the CSV still lists every cell and its error.
        frame = pd.DataFrame([{"variant": v.name, "status": v.status, "format": v.format,
                               "lineage": " → ".join(v.lineage), "error": v.error} for v in results.variants])
    return _with_group(frame, results)


def long_frame(results: Results) -> Any:
    """`Results.to_long_frame()`, led by the teacher and device columns of a matrix group."""
    return _with_group(results.to_long_frame(), results)


def results_csv(results: Results) -> str:
    return str(results_frame(results).to_csv(index=False))


def write_combined(groups: Mapping[str, Results], out: Path) -> dict[str, Path]:
    """One results.csv and one results-long.csv over every teacher×device group of a matrix, under `out`."""
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "results.csv", "long_csv": out / "results-long.csv"}
    for key, frame_of in (("csv", results_frame), ("long_csv", long_frame)):
        frame = pd.concat([frame_of(r) for r in groups.values()], ignore_index=True)
        write_text_atomic(paths[key], frame.to_csv(index=False))
    return paths


def write_outputs(results: Results, out: Path, *, against: Results | None = None, against_name: str | None = None,
                  budget_points: float | None = None, title: str = "optikit bench",
                  write_json: bool = True) -> dict[str, Path]:
    """All five files under `out`; `against` adds what got better or worse since that earlier run."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "csv": out / "results.csv", "long_csv": out / "results-long.csv",
             "md": out / "summary.md", "html": out / "report.html"}
    changes = compare(results, against) if against is not None else None
    if write_json:
        write_json_atomic(paths["json"], results.to_dict())
    write_text_atomic(paths["csv"], results_csv(results))
    write_text_atomic(paths["long_csv"], long_frame(results).to_csv(index=False))
    gate: list[dict[str, Any]] = results.settings.get("gate") or []
    write_text_atomic(paths["md"], summary_markdown({results.settings.get("matrix", {}).get("group", "") or "run": results},
                                                    title=title, gate=gate, changes=changes, against=against_name,
                                                    budget_points=budget_points))
    write_text_atomic(paths["html"], render_html(results, changes=changes, against=against_name,
                                                 budget_points=budget_points))
    return paths
