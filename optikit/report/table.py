"""The terminal table that `optikit bench` and `optikit demo` print."""
from __future__ import annotations

import sys
from typing import Any

from optikit.harness.compare import display_names
from optikit.harness.results import Results


def summary_rows(results: Results) -> tuple[list[str], list[list[str]]]:
    """The report's table as text; a failed variant shows its error instead of figures."""
    from optikit.report.html import table

    headers, rows = table(results)
    keep = [i for i, h in enumerate(headers) if h not in ("lineage", "status", "behavioural", "peak RSS MB")]
    out = []
    for row in rows:
        cells = row["cells"]
        if row["span"] > 1:
            out.append([cells[0].text, cells[2].text, "failed: " + cells[-1].text[:60]])
        else:
            out.append([cells[i].text for i in keep])
    return [headers[i] for i in keep], out


def print_table(results: Results, console: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    # Off a terminal (CI logs, pipes) rich would wrap at 80 columns and cut every figure.
    console = console or Console(width=None if sys.stdout.isatty() else 200)
    headers, rows = summary_rows(results)
    table = Table(title=f"optikit: {len(results.variants)} variants on {results.task.examples} "
                        f"{results.task.split} examples ({results.environment.threads} threads)")
    for h in headers:
        table.add_column(h, justify="left" if h in ("variant", "format") else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    for v, name in zip(results.variants, display_names(results.variants), strict=True):
        for note in v.notes:
            console.print(f"[yellow]note[/yellow] {name}: {note}", highlight=False)
