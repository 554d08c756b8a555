"""Comparison against the baseline: speedups, deltas, the loss budget, size, and the best variant for an objective.

Every figure and every pick the outputs state (the verdict, `Results.best`, the table and `to_frame`, the gate, the
search objective, MLflow) comes from here, so two of them cannot disagree about one run.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from optikit.harness.records import Interval
    from optikit.harness.results import Results, VariantResult

Objective = Literal["latency", "size", "throughput"]
OBJECTIVES: tuple[Objective, ...] = ("latency", "size", "throughput")
# A point estimate (two separately measured medians, or bytes on disk) must gain this much to count as a gain;
# an interleaved speedup counts when its whole 95% interval lies above 1.
MIN_GAIN = 1.05
ALIGNMENT = ("accuracy", "f1_macro", "f1_weighted")
_EPS = 1e-9  # in points: the baseline's own metric read back through JSON must not fall outside the budget


def ok(v: VariantResult) -> bool:
    return v.measured


def baseline(results: Results) -> VariantResult | None:
    """The measured baseline row, or None when it failed."""
    base = next((v for v in results.variants if v.id == results.baseline_id and v.is_baseline), None)
    base = base or next((v for v in results.variants if v.id == results.baseline_id), None)
    return base if base is not None and ok(base) else None


def batch_sizes(results: Results) -> list[int]:
    base = baseline(results)
    rows = base.latency if base is not None else [lat for v in results.variants for lat in v.latency]
    return sorted({lat.batch_size for lat in rows})


def headline_batch(results: Results) -> int | None:
    """The batch size a verdict speaks of when none is named: the largest the baseline was measured at."""
    sizes = batch_sizes(results)
    return max(sizes) if sizes else None


@dataclass(frozen=True)
class Speedup:
    """Baseline time / variant time at one batch size (> 1: the variant is faster).

    `source` says where it comes from: the interleaved rounds (with their 95% interval `low`–`high`), or the ratio of
    the two headline medians when no rounds were run (no interval).
    """

    ratio: float
    low: float | None
    high: float | None
    batch_size: int
    source: Literal["interleaved", "medians"]

    @property
    def has_interval(self) -> bool:
        return self.low is not None and self.high is not None

    @property
    def faster(self) -> bool:
        """A speed claim: the interval's low end above 1, or (medians only) a ratio of at least MIN_GAIN."""
        return self.low > 1.0 if self.low is not None and self.high is not None else self.ratio >= MIN_GAIN

    @property
    def slower(self) -> bool:
        return self.high < 1.0 if self.low is not None and self.high is not None else self.ratio <= 1 / MIN_GAIN

    def phrase(self) -> str:
        """`1.60× faster at batch 32`, `4.35× slower at batch 32`, or `no measurable speed difference at batch 32`."""
        if self.faster:
            return f"{self.ratio:.2f}× faster at batch {self.batch_size}"
        if self.slower:
            return f"{1 / self.ratio:.2f}× slower at batch {self.batch_size}"
        return f"no measurable speed difference at batch {self.batch_size}"

    def detail(self) -> str:
        """The figure behind the phrase: `speedup 1.60× at batch 32 (interleaved rounds, 95% CI 1.50–1.70)`."""
        how = (f"interleaved rounds, 95% CI {self.low:.2f}–{self.high:.2f}" if self.low is not None and
               self.high is not None else "ratio of steady medians, no interval")
        return f"speedup {self.ratio:.2f}× at batch {self.batch_size} ({how})"


def speedup(v: VariantResult, base: VariantResult, batch: int | None) -> Speedup | None:
    """The speedup of `v` at `batch`: interleaved when measured, else the ratio of headline medians."""
    if batch is None or not ok(v):
        return None
    row = v.measured_speedup(batch)
    if row is not None and row.ratio == row.ratio:
        finite = row.low == row.low and row.high == row.high
        return Speedup(row.ratio, row.low if finite else None, row.high if finite else None, batch, "interleaved")
    mine, ref = v.latency_at(batch), base.latency_at(batch)
    if not mine or not ref or not mine.headline_ms:
        return None
    return Speedup(ref.headline_ms / mine.headline_ms, None, None, batch, "medians")


def size_ratio(v: VariantResult, base: VariantResult, key: str = "bytes_on_disk") -> float | None:
    """How many times smaller `v` is: `bytes_on_disk` (the whole artifact) or `weight_bytes`."""
    if v.size is None or base.size is None:
        return None
    mine, ref = getattr(v.size, key), getattr(base.size, key)
    return ref / mine if mine and ref else None


def size_phrase(ratio: float | None) -> str:
    if ratio is None:
        return "size not measured"
    return f"{ratio:.2f}× smaller" if ratio >= 1 else f"{1 / ratio:.2f}× larger"


def throughput(v: VariantResult, batch: int | None = None) -> float | None:
    """Examples per second from the headline median: at `batch`, or at the variant's best batch size."""
    rows = [lat for lat in v.latency if batch is None or lat.batch_size == batch]
    rates = [lat.batch_size / lat.headline_ms * 1e3 for lat in rows if lat.headline_ms]
    return max(rates) if rates else None


def throughput_ratio(v: VariantResult, base: VariantResult, batch: int | None = None) -> float | None:
    mine, ref = throughput(v, batch), throughput(base, batch)
    return mine / ref if mine and ref else None


@dataclass(frozen=True)
class Delta:
    """Variant − baseline of one metric, in the metric's unit (a fraction for accuracy and F1), with the paired
    bootstrap's 95% interval when the harness measured one."""

    metric: str
    value: float
    low: float | None
    high: float | None
    batch_size: int | None = None  # the predictions made in batches of this size (None: evaluation batches)

    @property
    def points(self) -> float:
        return self.value * 100

    @property
    def interval_points(self) -> tuple[float, float] | None:
        return (self.low * 100, self.high * 100) if self.low is not None and self.high is not None else None

    @property
    def significant(self) -> bool:
        """The interval excludes zero; a zero-width interval at 0 (identical models) does not."""
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)

    def phrase(self, label: str = "macro-F1") -> str:
        ci = self.interval_points
        at = f" at batch {self.batch_size}" if self.batch_size is not None else ""
        return f"{label} {self.points:+.2f} points{at}" + (f" (95% CI {ci[0]:+.2f} to {ci[1]:+.2f})" if ci else "")


def _metric(v: VariantResult, metric: str) -> float | None:
    record = v.alignment if metric in ALIGNMENT else v.capability
    value = getattr(record, metric, None)
    return None if value is None or value != value else float(value)


def _significance(v: VariantResult, metric: str) -> Interval | None:
    sig = v.significance.deltas.get(metric) if v.significance is not None else None
    return sig if sig is not None and sig.low == sig.low and sig.high == sig.high else None


def interval_points(v: VariantResult, metric: str = "f1_macro") -> tuple[float, float] | None:
    """The paired-bootstrap 95% interval of `v`'s delta of `metric`, in points, when the harness measured one."""
    sig = _significance(v, metric)
    return (sig.low * 100, sig.high * 100) if sig is not None else None


def delta(v: VariantResult, base: VariantResult, metric: str = "f1_macro", batch_size: int | None = None) -> Delta | None:
    """The point change from the two rows' own figures; the interval from `significance` (absent in old results).

    With `batch_size`, accuracy and macro-F1 are those of the predictions made in batches of that size, where the
    harness recorded them and either model's predictions depend on the batch (quality_by_batch)."""
    if not (ok(v) and ok(base)):
        return None
    mine_q, ref_q = (v.quality_at(batch_size), base.quality_at(batch_size)) if batch_size is not None else (None, None)
    if (mine_q is not None and ref_q is not None and metric in ("accuracy", "f1_macro")
            and (v.batch_dependent or base.batch_dependent)):
        interval = mine_q.deltas.get(metric)
        value = getattr(mine_q, metric) - getattr(ref_q, metric)
        return Delta(metric, value, interval.low if interval else None, interval.high if interval else None, batch_size)
    sig = _significance(v, metric)
    mine, ref = _metric(v, metric), _metric(base, metric)
    own = mine - ref if mine is not None and ref is not None else None
    # Alignment deltas are the difference of the figures the table shows; the others are the bootstrap's own point
    # (sklearn's log loss renormalises clipped probabilities, so it can sit a hair off the interval's centre).
    value = own if metric in ALIGNMENT or sig is None else sig.delta
    if value is None:
        return None
    return Delta(metric, float(value), sig.low if sig else None, sig.high if sig else None)


def deltas(v: VariantResult, base: VariantResult) -> dict[str, Delta]:
    """Every metric with a bootstrap interval, in the harness's order."""
    names = v.significance.deltas.keys() if v.significance is not None else ()
    found = {m: delta(v, base, m) for m in names}
    return {m: d for m, d in found.items() if d is not None}


@dataclass(frozen=True)
class BudgetCheck:
    """Whether a variant stays within a loss budget of `metric`, and how sure that is."""

    metric: str
    budget_points: float
    delta: Delta

    @property
    def within(self) -> bool:
        return -self.delta.points <= self.budget_points + _EPS

    @property
    def confident(self) -> bool:
        """The whole 95% interval of the delta stays within the budget."""
        ci = self.delta.interval_points
        return ci is not None and ci[0] >= -self.budget_points - _EPS

    def sentence(self) -> str:
        ci = self.delta.interval_points
        label = "F1" if self.metric == "f1_macro" else self.metric
        if ci is None:
            return f"Not certain: no confidence interval was measured for the {label} delta (point estimate only)."
        if self.confident:
            return (f"Confident: the whole 95% interval of the {label} delta stays within the "
                    f"{self.budget_points:g}-point budget.")
        return (f"Not certain: the 95% interval reaches {ci[0]:+.2f} points, past the {self.budget_points:g}-point "
                "budget; measure on more data before shipping.")


_LABELS = {"f1_macro": "macro-F1", "accuracy": "accuracy"}


def budget_check(v: VariantResult, base: VariantResult, budget_points: float,
                 metric: str = "f1_macro", batch_size: int | None = None) -> BudgetCheck | None:
    d = delta(v, base, metric, batch_size)
    return None if d is None else BudgetCheck(metric, budget_points, d)


@dataclass(frozen=True)
class Choice:
    """The best variant for an objective: the baseline itself when nothing gains within the budget.

    `figure` is the objective's ratio against the baseline (×faster at `batch_size`, ×smaller, or ×throughput);
    `speedup` and `size_ratio` are given whatever the objective, so a pick for size also says how fast it is.
    """

    variant: VariantResult
    name: str  # the display name (see display_names)
    objective: Objective
    batch_size: int | None
    figure: float
    speedup: Speedup | None
    size_ratio: float | None
    budget: BudgetCheck
    is_baseline: bool


def _gain(objective: Objective, v: VariantResult, base: VariantResult,
          batch: int | None) -> tuple[float | None, bool, float]:
    """(figure, whether it is a real gain, tie-breaker) of `v` for `objective`."""
    if objective == "latency":
        s = speedup(v, base, batch)
        return (s.ratio, s.faster, size_ratio(v, base) or 0.0) if s else (None, False, 0.0)
    if objective == "size":
        r = size_ratio(v, base)
        s = speedup(v, base, batch)
        return (r, r is not None and r >= MIN_GAIN, s.ratio if s else 0.0)
    t = throughput_ratio(v, base)
    return (t, t is not None and t >= MIN_GAIN, size_ratio(v, base) or 0.0)


def best(results: Results, objective: Objective = "latency", *, batch_size: int | None = None,
         budget_points: float = 1.0, metric: str = "f1_macro") -> Choice | None:
    """The variant with the largest gain for `objective` among those losing at most `budget_points` of `metric`.

    A gain counts only when it is real: an interleaved speedup whose 95% interval lies above 1, or a point estimate
    (medians, bytes, throughput) of at least MIN_GAIN×. When no variant gains, the baseline is the choice. None
    when the baseline was not measured.
    """
    from optikit.config import require

    require(objective in OBJECTIVES, f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    require(metric in _LABELS, f"metric must be f1_macro or accuracy, got {metric!r}")
    require(budget_points >= 0, f"the loss budget must be ≥ 0, got {budget_points}")
    base = baseline(results)
    if base is None:
        return None
    batch = batch_size or headline_batch(results)
    names = display_names(results.variants)
    picks: list[tuple[float, float, int]] = []
    for i, v in enumerate(results.variants):
        check = budget_check(v, base, budget_points, metric, batch) if v is not base else None
        if v is base or not ok(v) or check is None or not check.within:
            continue
        figure, gains, tie = _gain(objective, v, base, batch)
        if figure is not None and gains:
            picks.append((figure, tie, i))
    index = max(picks)[2] if picks else next(i for i, v in enumerate(results.variants) if v is base)
    v = results.variants[index]
    figure = _gain(objective, v, base, batch)[0] if v is not base else 1.0
    check = budget_check(v, base, budget_points, metric, batch)
    assert check is not None  # v is measured
    return Choice(v, names[index], objective, batch, figure or 1.0, speedup(v, base, batch), size_ratio(v, base),
                  check, v is base)


def timing_doubts(*rows: VariantResult) -> tuple[str, ...]:
    """Why the timings of `rows` cannot be trusted (a starved machine, figures that contradict each other): every
    reason their measurement-condition checks flagged, in order, each once. Empty when all ran quietly."""
    reasons: dict[str, None] = {}
    for v in rows:
        if v.conditions is not None and v.conditions.flagged:
            reasons.update(dict.fromkeys(v.conditions.reasons or (v.conditions.summary(),)))
    return tuple(reasons)


def _steps(lineage: Sequence[str]) -> list[tuple[str, dict[str, str]]]:
    """Lineage labels (`quantize:mode=static,per_channel=True`) as (pass, options)."""
    steps = []
    for label in lineage:
        name, _, opts = label.partition(":")
        options: dict[str, str] = {}
        last = None
        for part in opts.split(",") if opts else []:
            key, eq, value = part.partition("=")
            if eq and key:
                options[key], last = value, key
            elif last is not None:  # a comma inside a value
                options[last] += "," + part
        steps.append((name, options))
    return steps


def _distinguished(name: str, lineage: Sequence[str], differing: dict[int, list[str]]) -> str:
    steps = _steps(lineage)
    if not any(differing.get(i) and any(k in o for k in differing[i]) for i, (_, o) in enumerate(steps)):
        return name
    parts = [p + (":" + ",".join(f"{k}={o[k]}" for k in differing[i] if k in o) if differing.get(i) else "")
             for i, (p, o) in enumerate(steps)]
    suffix = "+" + "+".join(p for p, _ in steps)
    if steps and name.endswith(suffix):  # teacher+export-onnx+quantize → teacher+export-onnx+quantize:mode=static
        return name[: -len(suffix)] + "+" + "+".join(parts)
    return f"{name} ({' → '.join(p for p in parts if ':' in p) or 'same chain'})"


def display_names(variants: Sequence[VariantResult]) -> list[str]:
    """A name per variant that tells it apart from its siblings, in the same order.

    A unique name (a matrix's variant name, a chain's name) stays as it is. Variants sharing a name get the
    options that differ between them from their lineage labels (`…+quantize:mode=static`, `…+quantize:mode=dynamic`);
    any still alike get a short id.
    """
    counts = Counter(v.name for v in variants)
    out = [v.name for v in variants]
    for shared in (n for n, c in counts.items() if c > 1):
        group = [i for i, v in enumerate(variants) if v.name == shared]
        steps = {i: _steps(variants[i].lineage) for i in group}
        differing: dict[int, list[str]] = {}
        for s in range(max(len(st) for st in steps.values())):
            at = [steps[i][s] if s < len(steps[i]) else ("", {}) for i in group]
            keys = list(dict.fromkeys(k for _, o in at for k in o))
            if len({p for p, _ in at}) > 1:
                differing[s] = keys
            else:
                differing[s] = [k for k in keys if len({o.get(k) for _, o in at}) > 1]
        for i in group:
            out[i] = _distinguished(shared, variants[i].lineage, differing)
    for rename in (lambda i, name: f"{name} #{variants[i].id[:8]}", lambda i, name: f"{name} ({i + 1})"):
        seen = Counter(out)  # still alike (the same chain benched twice): a short id, then the position
        out = [rename(i, name) if seen[name] > 1 else name for i, name in enumerate(out)]
    return out


def display_name(results: Results, v: VariantResult) -> str:
    return display_names(results.variants)[next(i for i, r in enumerate(results.variants) if r is v)]

