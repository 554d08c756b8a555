"""What the reports say about Results: deltas, speedups, the ship verdict, and the changes between two runs.

Every optional harness field (significance, speedup, quadrant, behavioural, per-slice …) is read with a default,
so a report renders from results written before or after those fields existed.
"""
from __future__ import annotations

from dataclasses import dataclass

from optikit.harness.compare import (
    MIN_GAIN,
    Choice,
    baseline,
    best,
    delta,
    display_names,
    headline_batch,
    ok,
    size_phrase,
    size_ratio,
    timing_doubts,
)
from optikit.harness.compare import speedup as _speedup
from optikit.harness.results import Results, VariantResult

__all__ = ["Change", "Verdict", "compare", "verdict"]


@dataclass(frozen=True)
class Verdict:
    """The one sentence a user acts on (`headline`), the figures behind it, and how sure it is.

    `objective` is what the shipped variant was picked for ("latency" at `batch_size`, or "size"); None when the
    baseline is kept.
    """

    ship: str | None  # the variant to ship (its display name), or None: keep the baseline
    headline: str
    reasons: tuple[str, ...]
    confidence: str
    budget_points: float
    objective: str | None = None
    batch_size: int | None = None


def _speed_words(choice: Choice) -> str:
    s = choice.speedup
    return s.phrase() if s is not None else f"speed not measured at batch {choice.batch_size}"


def _why_not(results: Results, base: VariantResult, batch: int | None, budget_points: float) -> list[str]:
    """For a kept baseline: each variant's reason, in one phrase."""
    out = []
    names = dict(zip(map(id, results.variants), display_names(results.variants), strict=True))
    for v in results.variants:
        if v is base or not ok(v):
            continue
        d = delta(v, base)
        s = _speedup(v, base, batch)
        gains = f"{s.phrase() if s else 'speed not measured'}, {size_phrase(size_ratio(v, base))}"
        if d is not None and -d.points > budget_points:
            out.append(f"{names[id(v)]}: {gains}, but loses {-d.points:.2f} points of macro-F1")
        else:
            out.append(f"{names[id(v)]}: {gains}")
    return out


def verdict(results: Results, budget_points: float = 1.0) -> Verdict:
    """Ship the fastest variant at the headline batch within the macro-F1 budget; when none is measurably faster,
    the smallest (saying how much slower it is); else keep the baseline and say why.

    The picks are `optikit.harness.compare.best`'s, the same as `Results.best`, the gate's and the search's.
    """
    base = baseline(results)
    if base is None:
        return Verdict(None, "No verdict: the baseline could not be measured.", (), "", budget_points)
    batch = headline_batch(results)
    speed = best(results, "latency", batch_size=batch, budget_points=budget_points)
    size = best(results, "size", batch_size=batch, budget_points=budget_points)
    assert speed is not None and size is not None  # the baseline was measured
    if not speed.is_baseline:
        choice, headline = speed, (f"Ship {speed.name} for speed: {_speed_words(speed)}, "
                                   f"{size_phrase(speed.size_ratio)}.")
    elif not size.is_baseline:
        choice, headline = size, f"Ship {size.name} for size: {size_phrase(size.size_ratio)}, {_speed_words(size)}."
    else:
        why = _why_not(results, base, batch, budget_points)
        doubts = timing_doubts(*results.variants)
        return Verdict(None, f"Keep the baseline: no variant is faster at batch {batch} or at least {MIN_GAIN:g}× "
                             f"smaller while losing at most {budget_points:g} point(s) of macro-F1.",
                       tuple(why) + doubts, _doubtful(doubts) if doubts else "", budget_points)
    reasons = [choice.speedup.detail()] if choice.speedup is not None else []
    reasons.append(choice.budget.delta.phrase())
    if doubts := timing_doubts(choice.variant, base):
        # The figures behind the pick contradict each other or were starved: no sentence to act on, only the
        # pick these figures would make and why it cannot be trusted.
        return Verdict(None, "No verdict: the timings behind it were not measured in fair conditions; measure again "
                             "on a quiet machine.", (f"On these figures: {headline}", *reasons, *doubts),
                       _doubtful(doubts), budget_points, choice.objective, batch)
    others = timing_doubts(*results.variants)  # another variant's timings: it may be ranked wrongly
    return Verdict(choice.name, headline, tuple(reasons) + others,
                   _doubtful(others) if others else choice.budget.sentence(), budget_points, choice.objective, batch)


def _doubtful(doubts: tuple[str, ...]) -> str:
    """The confidence line when the timings behind a verdict cannot be trusted: never "Confident"."""
    more = f" (and {len(doubts) - 1} more reason(s) below)" if len(doubts) > 1 else ""
    return f"Not certain: the timings were not measured in fair conditions: {doubts[0]}{more}"


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
    old_by = dict(zip(display_names(old.variants), old.variants, strict=True))
    new_by = dict(zip(display_names(new.variants), new.variants, strict=True))
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
        if not ok(v) or v.alignment is None or o.alignment is None:
            continue
        f_new, f_old = v.alignment.f1_macro * 100, o.alignment.f1_macro * 100
        diff = f_new - f_old
        changes.append(Change(name, "f1_macro (points)", f_old, f_new,
                              "same" if abs(diff) < F1_SAME_POINTS else "better" if diff > 0 else "worse"))
        for lat in v.latency:
            ref = o.latency_at(lat.batch_size)
            if ref and ref.headline_ms:
                rel = lat.headline_ms / ref.headline_ms - 1
                changes.append(Change(name, f"ms b{lat.batch_size}", ref.headline_ms, lat.headline_ms,
                                      "same" if abs(rel) < LATENCY_SAME else "better" if rel < 0 else "worse"))
        s_new = v.size.bytes_on_disk if v.size else None
        s_old = o.size.bytes_on_disk if o.size else None
        if s_new and s_old:
            rel = s_new / s_old - 1
            changes.append(Change(name, "size bytes", s_old, s_new,
                                  "same" if abs(rel) < 0.01 else "better" if rel < 0 else "worse"))
    order = {"worse": 0, "removed": 1, "better": 2, "added": 3, "same": 4}
    return sorted(changes, key=lambda c: (order[c.verdict], c.variant, c.metric))
