"""The report's plotly figures, built from Results; every label is HTML-escaped because plotly renders markup."""
from __future__ import annotations

import html
from typing import Any

from optikit.harness.latency import headline_ms
from optikit.harness.results import Results, VariantResult
from optikit.report.analysis import base_of, batch_sizes, f1_interval_points, field, headline_batch, ok

LAYOUT = {"margin": {"l": 60, "r": 20, "t": 40, "b": 60}, "height": 420, "template": "plotly_white"}


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def latency_vs_f1(results: Results) -> Any:
    """Steady median latency (error bar to p90) against macro-F1 (error bar: bootstrap CI) per batch size, with the Pareto
    frontier at the headline batch size: the variants nothing else beats on both axes."""
    import plotly.graph_objects as go

    base = base_of(results)
    fig = go.Figure()
    measured = [v for v in results.variants if ok(v)]
    for b in batch_sizes(results):
        pts = [(v, v.latency_at(b)) for v in measured if v.latency_at(b)]
        if not pts:
            continue
        ys, lo, hi = [], [], []
        for v, _ in pts:
            y = v.alignment["f1_macro"] * 100
            ys.append(y)
            ci = f1_interval_points(v)
            if ci and base is not None:
                delta = y - base.alignment["f1_macro"] * 100
                lo.append(max(delta - ci[0], 0.0))
                hi.append(max(ci[1] - delta, 0.0))
            else:
                lo.append(0.0)
                hi.append(0.0)
        fig.add_trace(go.Scatter(
            x=[headline_ms(lat) for _, lat in pts], y=ys, mode="markers+text", name=f"batch {b}",
            text=[_esc(v.name) for v, _ in pts], textposition="top center",
            error_x={"type": "data", "symmetric": False, "array": [max(lat["p90_ms"] - headline_ms(lat), 0.0) for _, lat in pts],
                     "arrayminus": [0.0] * len(pts)},
            error_y={"type": "data", "symmetric": False, "array": hi, "arrayminus": lo, "visible": any(hi + lo)},
            hovertemplate="%{text}<br>%{x:.3f} ms<br>macro-F1 %{y:.2f}<extra>batch " + str(b) + "</extra>"))
    b = headline_batch(results)
    if b is not None:
        front = pareto(measured, b)
        if len(front) > 1:
            fig.add_trace(go.Scatter(x=[headline_ms(v.latency_at(b)) for v in front],
                                     y=[v.alignment["f1_macro"] * 100 for v in front], mode="lines",
                                     name=f"Pareto frontier (batch {b})", line={"dash": "dot", "color": "#444"}))
    fig.update_layout(**LAYOUT, title="Latency (steady median, bar to p90) vs macro-F1", xaxis_title="latency per call (ms)",
                      yaxis_title="macro-F1 (%)")
    fig.update_xaxes(type="log")
    return fig


def pareto(variants: list[VariantResult], batch: int) -> list[VariantResult]:
    """Variants not beaten on both latency (lower) and macro-F1 (higher), sorted by latency."""
    pts = sorted((v for v in variants if v.latency_at(batch)), key=lambda v: headline_ms(v.latency_at(batch)))
    front, best = [], -1.0
    for v in pts:
        if v.alignment["f1_macro"] > best:
            front.append(v)
            best = v.alignment["f1_macro"]
    return front


def size_bars(results: Results) -> Any:
    import plotly.graph_objects as go

    measured = [v for v in results.variants if ok(v) and v.size.get("bytes_on_disk")]
    names = [_esc(v.name) for v in measured]
    fig = go.Figure(go.Bar(x=names, y=[v.size["bytes_on_disk"] / 1e6 for v in measured], name="on disk"))
    if any(v.size.get("compressed_bytes") for v in measured):
        fig.add_trace(go.Bar(x=names, y=[(v.size.get("compressed_bytes") or 0) / 1e6 for v in measured],
                             name="compressed (zip)"))
    fig.update_layout(**LAYOUT, title="Size", yaxis_title="MB", barmode="group")
    return fig


def quadrant(results: Results) -> Any:
    """Capability (log-loss change, right is better) against alignment (accuracy change): four readable corners."""
    import plotly.graph_objects as go

    base = base_of(results)
    xs, ys, names, labels = [], [], [], []
    for v in results.variants:
        if not ok(v) or base is None or v is base:
            continue
        q = field(v, "quadrant", {})
        acc = q.get("accuracy_delta", v.alignment["accuracy"] - base.alignment["accuracy"])
        ll = q.get("log_loss_delta", v.capability.get("log_loss", 0.0) - base.capability.get("log_loss", 0.0))
        xs.append(-ll)
        ys.append(acc * 100)
        names.append(_esc(v.name))
        labels.append(_esc(q.get("label", "")))
    fig = go.Figure(go.Scatter(x=xs, y=ys, mode="markers+text", text=names, textposition="top center",
                               customdata=labels, name="variants",
                               hovertemplate="%{text}<br>%{customdata}<br>log-loss gain %{x:.4f}"
                                             "<br>accuracy Δ %{y:.2f} pts<extra></extra>"))
    span = max([abs(x) for x in xs] + [0.01]) * 1.3
    yspan = max([abs(y) for y in ys] + [0.5]) * 1.3
    for x, y, text in ((span, yspan, "better calibrated, more accurate"), (-span, yspan, "more accurate, less sure"),
                       (span, -yspan, "surer, less accurate"), (-span, -yspan, "worse on both")):
        fig.add_annotation(x=x, y=y, text=text, showarrow=False, xanchor="right" if x > 0 else "left",
                           font={"color": "#888"})
    fig.add_hline(y=0, line_color="#bbb")
    fig.add_vline(x=0, line_color="#bbb")
    fig.update_layout(**LAYOUT, title="Capability vs alignment (change against the baseline)",
                      xaxis_title="log-loss reduction (capability)", yaxis_title="accuracy Δ (points, alignment)",
                      xaxis_range=[-span, span], yaxis_range=[-yspan, yspan], showlegend=False)
    return fig


def _heatmap(title: str, rows: list[str], cols: list[str], z: list[list[float | None]], hover: str) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure(go.Heatmap(z=z, x=[_esc(c) for c in cols], y=[_esc(r) for r in rows], colorscale="RdBu",
                               zmid=0, colorbar={"title": "Δ pts"},
                               hovertemplate="%{y} · %{x}<br>" + hover + " %{z:+.2f} pts<extra></extra>"))
    fig.update_layout(**{**LAYOUT, "height": 120 + 40 * max(len(rows), 1)}, title=title)
    return fig


def per_class(results: Results) -> Any | None:
    base = base_of(results)
    if base is None or not base.alignment.get("per_class"):
        return None
    classes = list(base.alignment["per_class"])
    rows, z = [], []
    for v in results.variants:
        if ok(v) and v is not base:
            pc = v.alignment.get("per_class", {})
            rows.append(v.name)
            z.append([(pc[c]["f1"] - base.alignment["per_class"][c]["f1"]) * 100 if c in pc else None
                      for c in classes])
    return _heatmap("Per-class F1 change against the baseline", rows, classes, z, "F1 Δ") if rows else None


def per_slice(results: Results) -> Any | None:
    base = base_of(results)
    slices = (base.alignment.get("per_slice") or {}) if base is not None else {}
    if not slices:
        return None
    names = list(slices)
    rows, z = [], []
    for v in results.variants:
        if ok(v) and v is not base:
            mine = v.alignment.get("per_slice") or {}
            rows.append(v.name)
            # An empty slice has f1_macro None (n=0): its cell stays blank instead of failing the whole report.
            z.append([((mine[s]["f1_macro"] - slices[s]["f1_macro"]) * 100)
                      if s in mine and mine[s].get("f1_macro") is not None and slices[s].get("f1_macro") is not None
                      else None for s in names])
    labels = [f"{s} (n={slices[s].get('n', '?')})" for s in names]
    return _heatmap("Per-slice macro-F1 change against the baseline", rows, labels, z, "macro-F1 Δ") if rows else None


def all_figures(results: Results) -> list[tuple[str, str, Any]]:
    """(id, heading, figure) for every chart the data supports, in report order."""
    out = [("latency", "Latency vs macro-F1", latency_vs_f1(results)), ("size", "Size", size_bars(results)),
           ("quadrant", "Capability vs alignment", quadrant(results))]
    for key, heading, fn in (("per-class", "Per-class deltas", per_class), ("per-slice", "Per-slice deltas", per_slice)):
        fig = fn(results)
        if fig is not None:
            out.append((key, heading, fig))
    return out
