"""The terminal table that `optikit bench` and `optikit demo` print."""
from __future__ import annotations

import sys
from typing import Any

from optikit.harness.results import Results


def summary_rows(results: Results) -> tuple[list[str], list[list[str]]]:
    frame = results.to_frame()
    batch_sizes = [lat["batch_size"] for lat in results.baseline.latency]
    headers = ["variant", "format", "size MB", "×smaller", "acc", "F1 macro", "log loss", "agree"]
    for b in batch_sizes:
        headers += [f"p50 ms b{b}", f"×faster b{b}"]
    rows = []
    for _, r in frame.iterrows():
        if r["status"] != "ok":
            rows.append([str(r["variant"]), str(r["format"]), "failed: " + str(r.get("error", ""))[:60]])
            continue
        row = [str(r["variant"]), str(r["format"]), f"{r['size_mb']:.3f}", f"{r['size_ratio']:.2f}",
               f"{r['accuracy']:.4f}", f"{r['f1_macro']:.4f}", f"{r['log_loss']:.4f}", f"{r['agreement']:.4f}"]
        for b in batch_sizes:
            row += [f"{r[f'p50_ms_b{b}']:.3f}", f"{r[f'speedup_b{b}']:.2f}"]
        rows.append(row)
    return headers, rows


def print_table(results: Results, console: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    # Off a terminal (CI logs, pipes) rich would wrap at 80 columns and cut every figure.
    console = console or Console(width=None if sys.stdout.isatty() else 200)
    headers, rows = summary_rows(results)
    table = Table(title=f"optikit: {len(results.variants)} variants on {results.task['examples']} "
                        f"{results.task['split']} examples ({results.environment['threads']} threads)")
    for h in headers:
        table.add_column(h, justify="left" if h in ("variant", "format") else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    for v in results.variants:
        for note in v.notes:
            console.print(f"[yellow]note[/yellow] {v.name}: {note}", highlight=False)
