"""Results: one row per variant, convertible to pandas, JSON and CSV."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from optikit.harness import compare
from optikit.harness.latency import headline_ms

RESULTS_SCHEMA = 2  # 2: significance, quadrant, behavioral, speedup, peak RSS, diagnostics


@dataclass
class VariantResult:
    id: str
    name: str
    format: str
    lineage: list[str]
    parent: str | None
    status: str = "ok"  # ok | failed
    error: str | None = None
    is_baseline: bool = False
    runner: dict[str, Any] = field(default_factory=dict)
    latency: list[dict[str, Any]] = field(default_factory=list)
    tokenization_ms: dict[str, float] = field(default_factory=dict)
    size: dict[str, Any] = field(default_factory=dict)
    alignment: dict[str, Any] = field(default_factory=dict)
    capability: dict[str, Any] = field(default_factory=dict)
    fidelity: dict[str, Any] = field(default_factory=dict)
    pass_report: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    significance: dict[str, Any] = field(default_factory=dict)  # paired bootstrap deltas + McNemar vs the baseline
    quadrant: dict[str, Any] = field(default_factory=dict)
    behavioral: dict[str, Any] = field(default_factory=dict)
    speedup: list[dict[str, Any]] = field(default_factory=list)  # interleaved rounds vs the baseline, per batch size
    peak_rss_mb: float | None = None  # the measuring process's high-water RSS (None when not isolated)
    diagnostics: dict[str, Any] = field(default_factory=dict)

    def latency_at(self, batch_size: int) -> dict[str, Any] | None:
        return next((row for row in self.latency if row["batch_size"] == batch_size), None)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VariantResult:
        """A row of results.json or of a matrix cell's record; keys another harness version added are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class Results:
    """What one bench run measured, for every variant against the same baseline on the same data."""

    variants: list[VariantResult]
    baseline_id: str
    task: dict[str, Any]
    environment: dict[str, Any]
    settings: dict[str, Any]
    schema: int = RESULTS_SCHEMA

    @property
    def baseline(self) -> VariantResult:
        return next(v for v in self.variants if v.id == self.baseline_id)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Results:
        return cls(variants=[VariantResult.from_dict(v) for v in d["variants"]], baseline_id=d["baseline_id"], task=d["task"],
                   environment=d["environment"], settings=d["settings"], schema=d.get("schema", RESULTS_SCHEMA))

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
            if v.status == "ok":
                row.update({
                    "size_mb": v.size["bytes_on_disk"] / 1e6, "size_ratio": compare.size_ratio(v, base),
                    "parameters": v.size["parameters"], "nonzero_parameters": v.size["nonzero_parameters"],
                    "accuracy": v.alignment["accuracy"], "f1_macro": v.alignment["f1_macro"],
                    "f1_weighted": v.alignment["f1_weighted"], "log_loss": v.capability["log_loss"],
                    "ece": v.capability["ece"], "agreement": v.fidelity.get("agreement"),
                    "peak_rss_mb": v.peak_rss_mb, "quadrant": v.quadrant.get("label"),
                    "mcnemar_p": v.significance.get("mcnemar", {}).get("p_value"),
                    "suite_pass_rate": v.behavioral.get("pass_rate"),
                    "suite_regressions": len(v.behavioral["regressions"]) if v.behavioral else None,
                })
                for metric, d in compare.deltas(v, base).items():
                    row[f"{metric}_delta"] = d.value
                    row[f"{metric}_delta_significant"] = d.significant
                paired = [s for lat in v.latency if (s := compare.speedup(v, base, lat["batch_size"]))]
                for s in paired:
                    if s.source == "interleaved":
                        row[f"speedup_low_b{s.batch_size}"], row[f"speedup_high_b{s.batch_size}"] = s.low, s.high
                for lat in v.latency:
                    b = lat["batch_size"]
                    s = next((p for p in paired if p.batch_size == b), None)
                    row[f"ms_b{b}"] = headline_ms(lat)
                    row[f"p50_ms_b{b}"] = lat["p50_ms"]
                    row[f"p99_ms_b{b}"] = lat["p99_ms"]
                    row[f"throughput_b{b}"] = lat["throughput_per_s"]
                    row[f"speedup_b{b}"] = s.ratio if s else None
                    row[f"speedup_source_b{b}"] = s.source if s else None
            else:
                row["error"] = v.error
            rows.append(row)
        return pd.DataFrame(rows)

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
