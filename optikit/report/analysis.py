"""What the reports say about Results: deltas, speedups, the ship verdict, and the changes between two runs.

Every optional harness field (significance, speedup, quadrant, behavioural, per-slice …) is read with a default,
so a report renders from results written before or after those fields existed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from optikit.harness.latency import headline_ms
from optikit.harness.results import Results, VariantResult


def field(v: VariantResult, name: str, default: Any = None) -> Any:
    value = getattr(v, name, None)
    return default if value is None else value


def ok(v: VariantResult) -> bool:
    return v.status == "ok" and bool(v.alignment)


def base_of(results: Results) -> VariantResult | None:
    base = next((v for v in results.variants if v.id == results.baseline_id and v.is_baseline), None)
    base = base or next((v for v in results.variants if v.id == results.baseline_id), None)
    return base if base is not None and ok(base) else None


def batch_sizes(results: Results) -> list[int]:
    base = base_of(results)
    sizes = {lat["batch_size"] for v in results.variants for lat in v.latency}
    return sorted({lat["batch_size"] for lat in base.latency} if base else sizes)


def headline_batch(results: Results) -> int | None:
    sizes = batch_sizes(results)
    return max(sizes) if sizes else None


def f1_delta_points(v: VariantResult, base: VariantResult) -> float | None:
    if not (ok(v) and ok(base)):
        return None
    return (v.alignment.get("f1_macro", 0.0) - base.alignment.get("f1_macro", 0.0)) * 100


def f1_interval_points(v: VariantResult) -> tuple[float, float] | None:
    """The harness's paired-bootstrap interval of the macro-F1 delta, in points, when it measured one."""
    d = field(v, "significance", {}).get("deltas", {}).get("f1_macro")
    if not d or d.get("low") is None or d.get("high") is None:
        return None
    return d["low"] * 100, d["high"] * 100


def speedup(v: VariantResult, base: VariantResult, batch: int | None) -> tuple[float | None, float | None, float | None]:
    """(ratio, low, high) of baseline / variant latency at `batch`; the interval only when the harness gave one."""
    if batch is None or not ok(v):
        return None, None, None
    for row in field(v, "speedup", []):
        if row.get("batch_size") == batch and row.get("ratio") is not None:
            return row["ratio"], row.get("low"), row.get("high")
    mine, ref = v.latency_at(batch), base.latency_at(batch)
    if not mine or not ref or not mine.get("p50_ms"):
        return None, None, None
    return headline_ms(ref) / headline_ms(mine), None, None


def size_ratio(v: VariantResult, base: VariantResult, key: str = "bytes_on_disk") -> float | None:
    """How many times smaller `v` is: `bytes_on_disk` (the whole artifact) or `weight_bytes`."""
    mine, ref = v.size.get(key), base.size.get(key)
    return ref / mine if mine and ref else None


@dataclass(frozen=True)
class Verdict:
    ship: str | None  # the variant to ship, or None: keep the baseline
    headline: str
    reasons: tuple[str, ...]
    confidence: str
    budget_points: float


def verdict(results: Results, budget_points: float = 1.0) -> Verdict:
    """The fastest variant (then the smallest) whose macro-F1 loss stays within the budget and that gains something."""
    base = base_of(results)
    if base is None:
        return Verdict(None, "No verdict: the baseline could not be measured.", (), "", budget_points)
    batch = headline_batch(results)
    candidates = []
    for v in results.variants:
        if v is base or not ok(v):
            continue
        delta = f1_delta_points(v, base) or 0.0
        ratio = speedup(v, base, batch)[0] or 0.0
        size = size_ratio(v, base) or 0.0
        if delta >= -budget_points and (ratio > 1.05 or size > 1.05):
            candidates.append((ratio, size, v))
    if not candidates:
        return Verdict(None, "Keep the baseline.", (f"no variant gains speed or size while losing at most "
                                                    f"{budget_points:g} point(s) of macro-F1",), "", budget_points)
    ratio, size, best = max(candidates, key=lambda c: (round(c[0], 2), c[1]))
    delta = f1_delta_points(best, base) or 0.0
    interval = f1_interval_points(best)
    reasons = [f"{ratio:.2f}× faster (batch {batch})", f"{size:.2f}× smaller on disk",
               f"macro-F1 {delta:+.2f} points" + (f" (95% CI {interval[0]:+.2f} to {interval[1]:+.2f})" if interval else "")]
    if interval is None:
        confidence = "Not certain: no confidence interval was measured for the F1 delta (point estimate only)."
    elif interval[0] >= -budget_points:
        confidence = (f"Confident: the whole 95% interval of the F1 delta stays within the {budget_points:g}-point "
                      "budget.")
    else:
        confidence = (f"Not certain: the 95% interval reaches {interval[0]:+.2f} points, past the "
                      f"{budget_points:g}-point budget; measure on more data before shipping.")
    return Verdict(best.name, f"Ship {best.name}.", tuple(reasons), confidence, budget_points)


@dataclass(frozen=True)
class Change:
    variant: str
    metric: str
    old: float | None
    new: float | None
    verdict: str  # better | worse | same | added | removed


F1_SAME_POINTS = 0.5  # changes smaller than these are noise on the data sets optikit benches
LATENCY_SAME = 0.05


def compare(new: Results, old: Results) -> list[Change]:
    """What got better or worse per variant (by name) between two runs: macro-F1, latency per batch, size."""
    changes: list[Change] = []
    old_by = {v.name: v for v in old.variants}
    new_by = {v.name: v for v in new.variants}
    for name in new_by.keys() - old_by.keys():
        changes.append(Change(name, "variant", None, None, "added"))
    for name in old_by.keys() - new_by.keys():
        changes.append(Change(name, "variant", None, None, "removed"))
    for name, v in new_by.items():
        o = old_by.get(name)
        if o is None:
            continue
        if ok(v) != ok(o):
            changes.append(Change(name, "status", None, None, "better" if ok(v) else "worse"))
            continue
        if not ok(v):
            continue
        f_new, f_old = v.alignment["f1_macro"] * 100, o.alignment["f1_macro"] * 100
        diff = f_new - f_old
        changes.append(Change(name, "f1_macro (points)", f_old, f_new,
                              "same" if abs(diff) < F1_SAME_POINTS else "better" if diff > 0 else "worse"))
        for lat in v.latency:
            ref = o.latency_at(lat["batch_size"])
            if ref and ref.get("p50_ms"):
                rel = headline_ms(lat) / headline_ms(ref) - 1
                changes.append(Change(name, f"ms b{lat['batch_size']}", headline_ms(ref), headline_ms(lat),
                                      "same" if abs(rel) < LATENCY_SAME else "better" if rel < 0 else "worse"))
        s_new, s_old = v.size.get("bytes_on_disk"), o.size.get("bytes_on_disk")
        if s_new and s_old:
            rel = s_new / s_old - 1
            changes.append(Change(name, "size bytes", s_old, s_new,
                                  "same" if abs(rel) < 0.01 else "better" if rel < 0 else "worse"))
    order = {"worse": 0, "removed": 1, "better": 2, "added": 3, "same": 4}
    return sorted(changes, key=lambda c: (order[c.verdict], c.variant, c.metric))
