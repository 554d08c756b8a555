"""Results: one row per variant, convertible to pandas (a wide headline table, or one row per figure), JSON and CSV."""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from optikit.harness import compare
from optikit.harness.conditions import Assessment
from optikit.harness.latency import Latency
from optikit.harness.records import (
    Alignment,
    BatchQuality,
    Behavioral,
    Capability,
    Diagnostics,
    Environment,
    Fidelity,
    MeasuredSpeedup,
    Quadrant,
    RunnerInfo,
    Significance,
    Task,
    opt,
    plain,
)
from optikit.harness.size import Size

RESULTS_SCHEMA = 3  # 2: significance, quadrant, behavioral, speedup, peak RSS, diagnostics; 3: conditions, quality by batch


@dataclass(frozen=True)
class VariantResult:
    """Everything measured for one variant: typed records (records.py, latency.py, size.py), None (or empty) where
    a figure was not measured — a failed variant has only its error. `pass_report` is the pass's own report, as
    free-form as each pass makes it. JSON only at `to_dict`/`from_dict`."""

    id: str
    name: str
    format: str
    lineage: tuple[str, ...]
    parent: str | None
    status: str = "ok"  # ok | failed
    error: str | None = None
    is_baseline: bool = False
    runner: RunnerInfo | None = None
    latency: tuple[Latency, ...] = ()  # one per batch size, in the order measured
    tokenization_ms: Mapping[int, float] = field(default_factory=dict)  # per batch size, text variants only
    size: Size | None = None
    alignment: Alignment | None = None
    capability: Capability | None = None
    fidelity: Fidelity | None = None
    pass_report: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    significance: Significance | None = None  # paired bootstrap deltas + McNemar vs the baseline
    quadrant: Quadrant | None = None
    behavioral: Behavioral | None = None
    speedup: tuple[MeasuredSpeedup, ...] = ()  # interleaved rounds vs the baseline, per batch size
    peak_rss_mb: float | None = None  # the measuring process's high-water RSS (None when not isolated)
    diagnostics: Diagnostics | None = None
    conditions: Assessment | None = None  # whether the machine was starved, or the timings disagree with each other
    quality_by_batch: tuple[BatchQuality, ...] = ()  # predictions made in each timed batch size

    @property
    def measured(self) -> bool:
        """Measured and scored: the row has its quality figures (a failed row has only its error)."""
        return self.status == "ok" and self.alignment is not None

    def latency_at(self, batch_size: int) -> Latency | None:
        return next((row for row in self.latency if row.batch_size == batch_size), None)

    def quality_at(self, batch_size: int) -> BatchQuality | None:
        return next((q for q in self.quality_by_batch if q.batch_size == batch_size), None)

    @property
    def batch_dependent(self) -> bool:
        """Its predictions change with the batch they are made in."""
        return any(q.same_as_eval < 1.0 for q in self.quality_by_batch)

    def measured_speedup(self, batch_size: int) -> MeasuredSpeedup | None:
        return next((s for s in self.speedup if s.batch_size == batch_size), None)

    def to_dict(self) -> dict[str, Any]:
        """The row of results.json: a record not measured is written as {}, as schema 2 always wrote it."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = {} if value is None and f.name in _RECORDS else plain(value)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> VariantResult:
        """A row of results.json or of a matrix cell's record, from any harness version: a record it did not write
        (or wrote as {}) is None; keys another harness version added are ignored."""
        def record(name: str) -> Any:
            value = d.get(name)
            return _RECORDS[name](value) if value else None

        return cls(id=str(d["id"]), name=str(d["name"]), format=str(d.get("format", "?")),
                   lineage=tuple(d.get("lineage") or ()), parent=d.get("parent"), status=str(d.get("status", "ok")),
                   error=d.get("error"), is_baseline=bool(d.get("is_baseline", False)), runner=record("runner"),
                   latency=tuple(Latency.from_dict(x) for x in d.get("latency") or ()),
                   tokenization_ms={int(k): float(v) for k, v in (d.get("tokenization_ms") or {}).items()},
                   size=record("size"), alignment=record("alignment"), capability=record("capability"),
                   fidelity=record("fidelity"), pass_report=dict(d.get("pass_report") or {}),
                   notes=tuple(d.get("notes") or ()), significance=record("significance"),
                   quadrant=record("quadrant"), behavioral=record("behavioral"),
                   speedup=tuple(MeasuredSpeedup.from_dict(x) for x in d.get("speedup") or ()),
                   peak_rss_mb=opt(d.get("peak_rss_mb")), diagnostics=record("diagnostics"),
                   conditions=record("conditions"),
                   quality_by_batch=tuple(BatchQuality.from_dict(q) for q in d.get("quality_by_batch") or ()))


_RECORDS: dict[str, Any] = {"runner": RunnerInfo.from_dict, "size": Size.from_dict, "alignment": Alignment.from_dict,
                            "capability": Capability.from_dict, "fidelity": Fidelity.from_dict,
                            "significance": Significance.from_dict, "quadrant": Quadrant.from_dict,
                            "behavioral": Behavioral.from_dict, "diagnostics": Diagnostics.from_dict,
                            "conditions": Assessment.from_dict}


@dataclass(frozen=True)
class Figure:
    """One figure of one variant, a row of `Results.to_long_frame()`: `value` in `unit`, at `batch_size` (None for a
    figure without one), with the 95% interval `low`–`high` where the harness measured one and, for a speedup, its
    `source` ("interleaved" rounds or the ratio of "medians")."""

    figure: str
    value: float
    unit: str
    batch_size: int | None = None
    low: float | None = None
    high: float | None = None
    source: str | None = None


# (figure, the row's field, the key in it, unit): the variant's own figures, in the order the long frame lists them.
_OWN: tuple[tuple[str, str, str, str], ...] = (
    ("size_bytes", "size", "bytes_on_disk", "bytes"), ("weight_bytes", "size", "weight_bytes", "bytes"),
    ("compressed_bytes", "size", "compressed_bytes", "bytes"), ("parameters", "size", "parameters", "count"),
    ("nonzero_parameters", "size", "nonzero_parameters", "count"),
    *((m, "alignment", m, "fraction") for m in ("accuracy", "precision_macro", "recall_macro", "f1_macro",
                                                "precision_weighted", "recall_weighted", "f1_weighted")),
    ("log_loss", "capability", "log_loss", "nats"), ("brier", "capability", "brier", "score"),
    ("ece", "capability", "ece", "fraction"),
    ("agreement", "fidelity", "agreement", "fraction"), ("kl_mean", "fidelity", "kl_mean", "nats"),
    ("flips_right_to_wrong", "fidelity", "flips_right_to_wrong", "count"),
    ("flips_wrong_to_right", "fidelity", "flips_wrong_to_right", "count"),
    ("suite_pass_rate", "behavioral", "pass_rate", "fraction"),
)
UNITS = {name: unit for name, _, _, unit in _OWN}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return None
    return float(value)


# The columns of `Results.to_long_frame()`, in order.
LONG_COLUMNS = ("variant", "display_name", "variant_id", "batch_size", "figure", "value", "low", "high", "unit",
                "source")


@dataclass
class Results:
    """What one bench run measured, for every variant against the same baseline on the same data."""

    variants: list[VariantResult]
    baseline_id: str
    task: Task
    environment: Environment
    settings: dict[str, Any]  # the run's configuration as recorded, plus what a matrix, its gate or a search adds
    schema: int = RESULTS_SCHEMA

    @property
    def baseline(self) -> VariantResult:
        return next(v for v in self.variants if v.id == self.baseline_id)

    def to_dict(self) -> dict[str, Any]:
        """results.json: strict JSON values (a non-finite figure is null)."""
        return {"variants": [v.to_dict() for v in self.variants], "baseline_id": self.baseline_id,
                "task": plain(self.task), "environment": plain(self.environment), "settings": plain(self.settings),
                "schema": RESULTS_SCHEMA}  # written in the current format, whichever it was read from

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Results:
        """Any results.json optikit wrote (schema 1 to 3): what an older version did not record is None or empty."""
        return cls(variants=[VariantResult.from_dict(v) for v in d["variants"]], baseline_id=str(d["baseline_id"]),
                   task=Task.from_dict(d["task"]), environment=Environment.from_dict(d["environment"]),
                   settings=dict(d.get("settings") or {}), schema=int(d.get("schema", RESULTS_SCHEMA)))

    @classmethod
    def load(cls, path: str | Path) -> Results:
        from optikit.errors import ConfigError

        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise ConfigError(f"results file {path} does not exist: pass a results.json written by optikit bench") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path} is not an optikit results file ({type(exc).__name__}): "
                              "pass a results.json written by optikit bench") from None

    def to_frame(self) -> Any:
        """One row per variant: the headline figures, with ratios against the baseline (`optikit.harness.compare`).

        `variant` is the display name (options added where siblings share a name); `speedup_b{N}` is the interleaved
        ratio when measured, else the ratio of steady medians, and `speedup_source_b{N}` says which.
        """
        import pandas as pd

        base = self.baseline
        rows = []
        for v, name in zip(self.variants, compare.display_names(self.variants), strict=True):
            row: dict[str, Any] = {"variant": name, "format": v.format, "status": v.status,
                                   "lineage": " → ".join(v.lineage) or "baseline"}
            if v.measured:
                size, a, c = v.size, v.alignment, v.capability
                mcnemar = v.significance.mcnemar if v.significance else None
                row.update({
                    "size_mb": size.bytes_on_disk / 1e6 if size else None, "size_ratio": compare.size_ratio(v, base),
                    "parameters": size.parameters if size else None,
                    "nonzero_parameters": size.nonzero_parameters if size else None,
                    "accuracy": a.accuracy if a else None, "f1_macro": a.f1_macro if a else None,
                    "f1_weighted": a.f1_weighted if a else None, "log_loss": c.log_loss if c else None,
                    "ece": c.ece if c else None, "agreement": v.fidelity.agreement if v.fidelity else None,
                    "peak_rss_mb": v.peak_rss_mb, "quadrant": v.quadrant.label if v.quadrant else None,
                    "mcnemar_p": mcnemar.p_value if mcnemar else None,
                    "suite_pass_rate": v.behavioral.pass_rate if v.behavioral else None,
                    "suite_regressions": len(v.behavioral.regressions) if v.behavioral else None,
                })
                for metric, d in compare.deltas(v, base).items():
                    row[f"{metric}_delta"] = d.value
                    row[f"{metric}_delta_significant"] = d.significant
                paired = [s for lat in v.latency if (s := compare.speedup(v, base, lat.batch_size))]
                for s in paired:
                    if s.source == "interleaved":
                        row[f"speedup_low_b{s.batch_size}"], row[f"speedup_high_b{s.batch_size}"] = s.low, s.high
                for lat in v.latency:
                    b = lat.batch_size
                    s = next((p for p in paired if p.batch_size == b), None)
                    row[f"ms_b{b}"] = lat.headline_ms
                    row[f"p50_ms_b{b}"] = lat.p50_ms
                    row[f"p99_ms_b{b}"] = lat.p99_ms
                    row[f"throughput_b{b}"] = lat.throughput_per_s
                    row[f"speedup_b{b}"] = s.ratio if s else None
                    row[f"speedup_source_b{b}"] = s.source if s else None
            else:
                row["error"] = v.error
            rows.append(row)
        return pd.DataFrame(rows)

    def figures(self, v: VariantResult) -> list[Figure]:
        """Every figure of `v` with its unit, and its comparison against the baseline (speedups, size ratio, metric
        deltas with their intervals, all from `optikit.harness.compare`): `v`'s rows of `to_long_frame`. None for a
        failed variant; no comparison when the baseline was not measured."""
        if not v.measured:
            return []
        base = compare.baseline(self)
        out: list[Figure] = []
        for lat in sorted(v.latency, key=lambda row: row.batch_size):
            b = lat.batch_size
            out.append(Figure("latency_ms", lat.headline_ms, "ms", b))
            out += [Figure(key, x, "ms", b) for key in ("p50_ms", "p90_ms", "p99_ms")
                    if (x := _number(getattr(lat, key))) is not None]
            for key, unit in (("throughput_per_s", "per_s"), ("interference", "fraction")):
                if (x := _number(getattr(lat, key))) is not None:
                    out.append(Figure(key, x, unit, b))
            if (x := _number(v.tokenization_ms.get(b))) is not None:
                out.append(Figure("tokenization_ms", x, "ms", b))
            s = compare.speedup(v, base, b) if base is not None else None
            if s is not None:
                out.append(Figure("speedup", s.ratio, "ratio", b, s.low, s.high, s.source))
            if (q := v.quality_at(b)) is not None:  # the predictions made in batches of this size
                out += [Figure("accuracy_at_batch", q.accuracy, "fraction", b),
                        Figure("f1_macro_at_batch", q.f1_macro, "fraction", b),
                        Figure("same_predictions_as_eval", q.same_as_eval, "fraction", b)]
        if base is not None and (r := compare.size_ratio(v, base)) is not None:
            out.append(Figure("size_ratio", r, "ratio"))
        for name, part, key, unit in _OWN:
            if (x := _number(getattr(getattr(v, part), key, None))) is not None:
                out.append(Figure(name, x, unit))
        if base is not None:
            found = compare.deltas(v, base)
            for metric in ("accuracy", "f1_macro"):  # results without bootstrap intervals still state these
                if metric not in found and (d := compare.delta(v, base, metric)) is not None:
                    found[metric] = d
            for metric, d in found.items():
                if metric in compare.ALIGNMENT:
                    low, high = d.interval_points or (None, None)
                    out.append(Figure(f"{metric}_delta_points", d.points, "points", None, low, high))
                else:
                    out.append(Figure(f"{metric}_delta", d.value, UNITS.get(metric, "?"), None, d.low, d.high))
        p = _number(v.significance.mcnemar.p_value if v.significance and v.significance.mcnemar else None)
        if p is not None:
            out.append(Figure("mcnemar_p", p, "probability"))
        if (x := _number(v.peak_rss_mb)) is not None:
            out.append(Figure("peak_rss_mb", x, "MiB"))
        return out

    def to_long_frame(self) -> Any:
        """One row per variant × batch size × figure (the columns of LONG_COLUMNS), tidy for plotting and joins.

        `variant` is the row's own name, `display_name` the one that tells siblings apart; `batch_size` is empty for
        a figure without one; `low`–`high` is the 95% interval where the harness measured one (interleaved
        speedups, paired-bootstrap metric deltas); `unit` is ms, per_s, bytes, ratio, fraction, points (deltas of
        accuracy and F1: ×100), count, nats, score, probability or MiB; `source` says where a speedup comes from.
        A failed variant has no rows (`to_frame` keeps its error).
        """
        import pandas as pd

        rows = [{"variant": v.name, "display_name": name, "variant_id": v.id, **asdict(f)}
                for v, name in zip(self.variants, compare.display_names(self.variants), strict=True)
                for f in self.figures(v)]
        frame = pd.DataFrame(rows, columns=list(LONG_COLUMNS))
        frame["batch_size"] = frame["batch_size"].astype("Int64")
        return frame

    def best(self, max_loss: float = 0.01, *, metric: str = "f1_macro", objective: compare.Objective = "latency",
             batch_size: int | None = None) -> VariantResult | None:
        """The fastest (or smallest) measured variant, baseline included, that loses at most `max_loss` of `metric`.

        `max_loss` is a fraction of the metric, as in quantize's `max_loss` (0.01 = one point of macro-F1 or
        accuracy); `metric` is "f1_macro" or "accuracy"; `objective` is "latency" (the speedup at `batch_size`,
        default the largest batch measured), "size" (bytes on disk) or "throughput" (examples per second at each
        variant's best batch size). A variant wins only with a real gain (see `optikit.harness.compare.best`, which
        the report's verdict, the gate and the search also use); otherwise the baseline. None when the baseline
        was not measured.
        """
        from optikit.config import require

        require(max_loss >= 0, f"max_loss must be ≥ 0, got {max_loss}")
        choice = compare.best(self, objective, batch_size=batch_size, budget_points=max_loss * 100, metric=metric)
        return choice.variant if choice else None
