"""The report's plotly figures, built from Results; every label is HTML-escaped because plotly renders markup."""
from __future__ import annotations

import html
from typing import Any

from optikit.harness.compare import baseline as base_of
from optikit.harness.compare import batch_sizes, display_names, headline_batch, interval_points, ok
from optikit.harness.results import Results, VariantResult

LAYOUT = {"margin": {"l": 60, "r": 20, "t": 40, "b": 60}, "height": 420, "template": "plotly_white"}


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x", "star")
# Plotly's own palette, indexed by the variant's row: a variant keeps its colour from chart to chart.
PALETTE = ("#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3", "#ff6692", "#b6e880", "#ff97ff", "#fecb52")


def latency_vs_f1(results: Results) -> Any:
    """Steady median latency (error bar to p90) against macro-F1 (error bar: bootstrap CI), one trace per variant with
    a marker per batch size, and the Pareto frontier at the headline batch size: the variants nothing else beats on
    both axes. Names go to the legend and the hover, never on the plot: ten labels there overlap."""
    import plotly.graph_objects as go

    base = base_of(results)
    fig = go.Figure()
    sizes = batch_sizes(results)
    symbol = {b: SYMBOLS[i % len(SYMBOLS)] for i, b in enumerate(sizes)}
    for i, (v, name) in enumerate(zip(results.variants, display_names(results.variants), strict=True)):
        pts = [(b, lat) for b in sizes if ok(v) and (lat := v.latency_at(b))]
        if not pts or v.alignment is None:
            continue
        y = v.alignment.f1_macro * 100
        ci = interval_points(v, "f1_macro")
        delta = y - _f1(base) * 100 if base is not None else 0.0
        lo, hi = (max(delta - ci[0], 0.0), max(ci[1] - delta, 0.0)) if ci and base is not None else (0.0, 0.0)
        fig.add_trace(go.Scatter(
            x=[lat.headline_ms for _, lat in pts], y=[y] * len(pts), mode="markers", name=_esc(name),
            marker={"symbol": [symbol[b] for b, _ in pts], "size": 10, "color": PALETTE[i % len(PALETTE)]},
            customdata=[f"batch {b}" for b, _ in pts],
            error_x={"type": "data", "symmetric": False, "array": [max(lat.p90_ms - lat.headline_ms, 0.0) for _, lat in pts],
                     "arrayminus": [0.0] * len(pts)},
            error_y={"type": "data", "symmetric": False, "array": [hi] * len(pts), "arrayminus": [lo] * len(pts),
                     "visible": bool(hi or lo)},
            hovertemplate=_esc(name) + "<br>%{customdata}<br>%{x:.3f} ms<br>macro-F1 %{y:.2f}<extra></extra>"))
    b = headline_batch(results)
    if b is not None:
        front = pareto([v for v in results.variants if ok(v)], b)
        if len(front) > 1:
            fig.add_trace(go.Scatter(x=[_ms(v, b) for v in front],
                                     y=[_f1(v) * 100 for v in front], mode="lines",
                                     name=f"Pareto frontier (batch {b})", line={"dash": "dot", "color": "#444"}))
    shapes = ", ".join(f"{symbol[b]} = batch {b}" for b in sizes)
    fig.update_layout(**LAYOUT, title=f"Latency (steady median, bar to p90) vs macro-F1 ({shapes})",
                      xaxis_title="latency per call (ms)", yaxis_title="macro-F1 (%)", legend={"title": {"text": "variant"}})
    fig.update_xaxes(type="log")
    return fig


def _ms(v: VariantResult, batch: int) -> float:
    lat = v.latency_at(batch)
    return lat.headline_ms if lat else float("inf")


def _f1(v: VariantResult) -> float:
    return v.alignment.f1_macro if v.alignment is not None else float("nan")


def pareto(variants: list[VariantResult], batch: int) -> list[VariantResult]:
    """Variants not beaten on both latency (lower) and macro-F1 (higher), sorted by latency."""
    pts = sorted((v for v in variants if v.latency_at(batch)), key=lambda v: _ms(v, batch))
    front, best = [], -1.0
    for v in pts:
        if _f1(v) > best:
            front.append(v)
            best = _f1(v)
    return front


def size_bars(results: Results) -> Any:
    import plotly.graph_objects as go

    named = [(v.size, n) for v, n in zip(results.variants, display_names(results.variants), strict=True)
             if ok(v) and v.size is not None and v.size.bytes_on_disk]
    sizes = [s for s, _ in named if s is not None]
    names = [_esc(n) for _, n in named]
    fig = go.Figure(go.Bar(x=names, y=[s.bytes_on_disk / 1e6 for s in sizes], name="on disk"))
    if any(s.compressed_bytes for s in sizes):
        fig.add_trace(go.Bar(x=names, y=[s.compressed_bytes / 1e6 for s in sizes], name="compressed (zip)"))
    fig.update_layout(**LAYOUT, title="Size", yaxis_title="MB", barmode="group")
    return fig


def quadrant(results: Results) -> Any:
    """Capability (log-loss change, right is better) against alignment (accuracy change): four readable corners."""
    import plotly.graph_objects as go

    base = base_of(results)
    fig = go.Figure()
    xs: list[float] = []
    ys: list[float] = []
    for i, (v, name) in enumerate(zip(results.variants, display_names(results.variants), strict=True)):
        if not ok(v) or base is None or v is base:
            continue
        q = v.quadrant
        if q is not None:
            acc, ll, label = q.accuracy_delta, q.log_loss_delta, q.label
        else:  # results written before the quadrant was recorded: the two rows' own figures
            acc = (v.alignment.accuracy if v.alignment else 0.0) - (base.alignment.accuracy if base.alignment else 0.0)
            ll = (v.capability.log_loss if v.capability else 0.0) - (base.capability.log_loss if base.capability else 0.0)
            label = ""
        xs.append(-ll)
        ys.append(acc * 100)
        # One trace per variant: its name in the legend and the hover, not as text on the plot.
        fig.add_trace(go.Scatter(x=[-ll], y=[acc * 100], mode="markers", name=_esc(name),
                                 marker={"size": 11, "color": PALETTE[i % len(PALETTE)]},
                                 hovertemplate=_esc(name) + "<br>" + _esc(label) +
                                 "<br>log-loss gain %{x:.4f}<br>accuracy Δ %{y:.2f} pts<extra></extra>"))
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
                      xaxis_range=[-span, span], yaxis_range=[-yspan, yspan], showlegend=True,
                      legend={"title": {"text": "variant"}})
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
    ref = base.alignment.per_class if base is not None and base.alignment is not None else {}
    if not ref:
        return None
    classes = list(ref)
    rows, z = [], []
    for v, name in zip(results.variants, display_names(results.variants), strict=True):
        if ok(v) and v is not base and v.alignment is not None:
            pc = v.alignment.per_class
            rows.append(name)
            z.append([(pc[c].f1 - ref[c].f1) * 100 if c in pc else None for c in classes])
    return _heatmap("Per-class F1 change against the baseline", rows, classes, z, "F1 Δ") if rows else None


def _slice_delta(mine: float | None, ref: float | None) -> float | None:
    # An empty slice has f1_macro None (n=0): its cell stays blank instead of failing the whole report.
    return (mine - ref) * 100 if mine is not None and ref is not None else None


def per_slice(results: Results) -> Any | None:
    base = base_of(results)
    slices = base.alignment.per_slice if base is not None and base.alignment is not None else {}
    if not slices:
        return None
    names = list(slices)
    rows, z = [], []
    for v, name in zip(results.variants, display_names(results.variants), strict=True):
        if ok(v) and v is not base and v.alignment is not None:
            mine = v.alignment.per_slice
            rows.append(name)
            z.append([_slice_delta(mine[s].f1_macro, slices[s].f1_macro) if s in mine else None for s in names])
    labels = [f"{s} (n={slices[s].n})" for s in names]
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
