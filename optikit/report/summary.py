"""summary.md: the verdict, one line per variant, the gate and what changed, short enough for a PR comment."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from optikit.harness.compare import baseline, delta, display_names, headline_batch, ok, size_ratio, speedup
from optikit.harness.results import Results
from optikit.report.analysis import Change, verdict
from optikit.report.machine import choices

MAX_ERROR_CHARS = 160


def _md(text: Any) -> str:
    """Table-safe text: a `|` or newline from an error message must not break the Markdown table."""
    return str(text).replace("|", "\\|").replace("\n", " ").replace("<", "&lt;")


def summary_markdown(groups: Mapping[str, Results], *, title: str = "optikit bench",
                     gate: list[dict[str, Any]] | None = None, changes: list[Change] | None = None,
                     against: str | None = None, budget_points: float | None = None) -> str:
    lines = [f"## {_md(title)}", ""]
    for group, results in groups.items():
        budget = budget_points if budget_points is not None else \
            (results.settings.get("matrix") or {}).get("f1_budget_points", 1.0)
        v = verdict(results, budget)
        head = f"**{_md(group)}**: " if len(groups) > 1 else ""
        lines.append(f"{head}**{_md(v.headline)}** " + "; ".join(_md(r) for r in v.reasons))
        if v.confidence:
            lines.append(f"_{_md(v.confidence)}_")
        lines.append("")
        base = baseline(results)
        b = headline_batch(results)
        lines += [f"| variant | macro-F1 | ΔF1 pts | ×faster b{b} | ×smaller | status |", "|---|---:|---:|---:|---:|---|"]
        for row, name in zip(results.variants, display_names(results.variants), strict=True):
            if ok(row) and base is not None:
                d, s, size = delta(row, base), speedup(row, base, b), size_ratio(row, base)
                f1 = row.alignment.f1_macro if row.alignment is not None else float("nan")
                lines.append(f"| {_md(name)} | {f1 * 100:.2f} | "
                             f"{'—' if d is None else f'{d.points:+.2f}'} | "
                             f"{'—' if s is None else f'{s.ratio:.2f}'} | {'—' if size is None else f'{size:.2f}'} | ok |")
            else:
                err = _md((row.error or "not measured")[:MAX_ERROR_CHARS])
                lines.append(f"| {_md(name)} | — | — | — | — | failed: {err} |")
        lines.append("")
        lines += [f"> {_md(note)}" for note in results.task.notes]
        if results.task.notes:
            lines.append("")
        misfit = [f"> {_md(c.name)} does not fit this machine: {_md(m)}" for c in choices(results) for m in c.misfits]
        lines += [*misfit, ""] if misfit else []
    if gate:
        failed = [g for g in gate if not g["passed"]]
        lines.append(f"**Gate: {'FAILED' if failed else 'passed'}** ({len(gate) - len(failed)}/{len(gate)} rules hold)")
        lines += [f"- ❌ `{_md(g['rule'])}`: {_md(g['detail'])}" for g in failed]
        lines += [f"- ⚠️ `{_md(g['rule'])}` (a target, not gating): {_md(g['detail'])}" for g in gate
                  if g.get("advisory") and str(g.get("detail", "")).startswith("target missed")]
        lines.append("")
    if changes is not None:
        moved = [c for c in changes if c.verdict != "same"]
        lines.append(f"**Against {_md(against or 'the previous run')}**: "
                     f"{sum(c.verdict in ('worse', 'removed') for c in moved)} worse, "
                     f"{sum(c.verdict in ('better', 'added') for c in moved)} better")
        for c in moved[:12]:
            figures = "" if c.old is None or c.new is None else f": {c.old:.4g} → {c.new:.4g}"
            lines.append(f"- {c.verdict}: {_md(c.variant)} {_md(c.metric)}{figures}")
        lines.append("")
    return "\n".join(lines)
