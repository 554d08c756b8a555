"""The harness: every variant measured against the baseline on the same test split, by the same code path.

Each variant is measured in a process of its own (isolation.py); the parent turns the probabilities the
children return into every quality figure and every comparison with the baseline.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from optikit.config import require
from optikit.errors import ConfigError, MeasurementError, OptikitError
from optikit.harness.behavioral import Suite, auto_suite, behavioral, case_outcomes, load_suite
from optikit.harness.conditions import LoadReading, assess, preflight, read_load
from optikit.harness.environment import environment
from optikit.harness.isolation import Measured, measure_variant
from optikit.harness.latency import Latency, LatencyConfig
from optikit.harness.metrics import alignment, capability, fidelity
from optikit.harness.quadrant import quadrant
from optikit.harness.records import BatchQuality, Diagnostics, Interval, MeasuredSpeedup, RunnerInfo, Task
from optikit.harness.results import Results, VariantResult
from optikit.harness.significance import (
    SignificanceConfig,
    paired_bootstrap,
    point_metrics,
    ratio_interval,
    significance,
    speedup_verdict,
)
from optikit.harness.size import Size
from optikit.harness.slices import per_slice, slice_masks
from optikit.harness.timing import SpeedupConfig
from optikit.progress import say
from optikit.runners import measurement_threads
from optikit.variant import Variant


@dataclass(frozen=True)
class BenchConfig:
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    speedup: SpeedupConfig = field(default_factory=SpeedupConfig)
    significance: SignificanceConfig = field(default_factory=SignificanceConfig)
    threads: int = 0  # 0: one less than the cores, at most 8 (runners.measurement_threads says why)
    device: str = "cpu"
    split: str = "test"
    eval_batch_size: int = 64
    pad_to: int | None = None  # text only: fixed-shape mode pads every batch to this length
    isolate: bool = True  # one fresh process per variant; False measures in this process (debugging only)
    processes: int = 1  # latency timed in this many fresh processes per variant, pooled (Latency.from_processes)
    timeout_s: float = 3600.0  # a child that runs longer is recorded as failed
    suite: str = "auto"  # "auto" (the built-in suite for the task, if any), "none", a built-in name or a path
    slices: tuple[str, ...] = ()  # column filters: "tag=mlops", "words<20"; callables go through the API
    max_flipped: int = 50  # flipped examples listed per variant (all are counted)

    def __post_init__(self) -> None:
        require(self.threads >= 0, f"threads must be ≥ 0, got {self.threads}")
        require(self.split in ("test", "validation", "calibration", "train"), f"unknown split {self.split!r}")
        require(self.device == "cpu" or self.device.startswith("cuda"), f"device must be cpu or cuda, got {self.device!r}")
        require(self.eval_batch_size >= 1, f"eval_batch_size must be ≥ 1, got {self.eval_batch_size}")
        require(self.pad_to is None or self.pad_to >= 2, f"pad_to must be ≥ 2, got {self.pad_to}")
        require(self.timeout_s > 0, f"timeout_s must be > 0, got {self.timeout_s}")
        require(self.processes >= 1, f"processes must be ≥ 1, got {self.processes}")

    def settings(self, threads: int) -> dict[str, Any]:
        d = asdict(self)
        d["threads"] = threads
        return d


def _job(variant: Variant, baseline: Variant | None, config: BenchConfig, threads: int) -> dict[str, Any]:
    return {"variant": str(variant.path), "variant_id": variant.id, "variant_name": variant.name,
            "baseline": str(baseline.path) if baseline is not None else None, "threads": threads,
            "device": config.device, "eval_batch_size": config.eval_batch_size, "pad_to": config.pad_to,
            "latency": asdict(config.latency), "speedup": asdict(config.speedup),
            "quality_batch_sizes": list(config.latency.batch_sizes)}


def _suite(config: BenchConfig, baseline: Variant, full: Any, split: Any) -> Suite | None:
    spec = config.suite
    if spec == "auto":
        spec = auto_suite(split.kind, tuple(split.label_names), baseline.data.source) or "none"
    if spec == "none":
        return None
    return load_suite(spec, tuple(split.label_names), full, baseline.splits.train, split)


def _speedup(measured: Measured, config: SpeedupConfig) -> tuple[MeasuredSpeedup, ...]:
    out = []
    for r in measured.figures.get("speedup_rounds", []):
        ratio, low, high = ratio_interval(np.array(r["baseline"]), np.array(r["variant"]), config.resamples, config.seed)
        out.append(MeasuredSpeedup(int(r["batch_size"]), ratio, low, high, len(r["variant"]), speedup_verdict(low, high)))
    return tuple(out)


def quality_by_batch(labels: np.ndarray, measured: Measured, base: Measured, batch_sizes: Sequence[int],
                     config: SignificanceConfig, eval_deltas: Mapping[str, Interval]) -> tuple[BatchQuality, ...]:
    """The predictions made in each timed batch size, scored, compared with the eval-batch predictions and (paired
    bootstrap, accuracy and macro-F1) with the baseline's at the same batch size. Where both models gave the same
    probabilities as in evaluation batches, the bootstrap is the evaluation's (`eval_deltas`: same data, same seed)."""
    out = []
    eval_preds = measured.probs.argmax(-1)
    for b in batch_sizes:
        probs = measured.probs_by_batch.get(b, measured.probs)
        base_probs = base.probs_by_batch.get(b, base.probs)
        point = point_metrics(labels, probs)
        same = np.array_equal(probs, measured.probs) and np.array_equal(base_probs, base.probs)
        intervals = eval_deltas if same else paired_bootstrap(labels, base_probs, probs, config)
        deltas = {m: d for m, d in intervals.items() if m in ("accuracy", "f1_macro")}
        out.append(BatchQuality(b, point["accuracy"], point["f1_macro"],
                                float(np.mean(probs.argmax(-1) == eval_preds)), deltas))
    return tuple(out)


def data_notes(baseline: Variant, full: Any, split: Any, test: Any = None) -> list[str]:
    """What a reader must know about the examples behind every figure: how the test set was chosen, and whether it
    can overlap what the model was trained on."""
    spec = baseline.data
    notes = list(dict.fromkeys([*getattr(full, "notes", ()), *getattr(test, "notes", ())]))
    if test is not None:
        notes.insert(0, f"measured on the test set given at bench time ({len(split)} examples), not the split the "
                        "variants recorded")
    elif spec.split_rule == "test-file":
        notes.insert(0, f"test set: every row of the user's test file {Path(spec.test_path or '').name} "
                        f"({len(split)} examples)")
    elif spec.split_rule == "split-col":
        notes.insert(0, f"test set: the rows marked test in column {spec.split_col!r} ({len(split)} examples)")
    elif baseline.origin != "teacher" or baseline.report.get("source") == "from_module":
        notes.insert(0, f"the test split is optikit's own seeded split of {Path(spec.path or '').name or 'the data'}: "
                        f"{baseline.name} was trained elsewhere, so if it saw this file the test split may overlap "
                        "its training data; pass --test-data FILE or --split-col COL to measure on held-out rows")
    return notes


def bench(variants: Sequence[Variant], config: BenchConfig | None = None, *, data: Any = None, test: Any = None,
          fail_fast: bool = False, slices: Mapping[str, str | Callable[[Any], Any]] | None = None,
          load_reader: Callable[[], LoadReading | None] = read_load) -> Results:
    """Measures `variants` (the first is the baseline) on the baseline's split; a failing variant is recorded.

    `test` (a Dataset) replaces the split: the user's own test set given at bench time.
    `slices` adds named subsets: a spec string (`"tag=mlops"`, `"words<20"`) or a callable frame → bool mask.
    `load_reader` reads the machine's load before and after each variant's timing (conditions.py); every row's
    `conditions` says whether it was starved or its timings disagree with each other.
    """
    from optikit.teach import dataset_for

    if not variants:
        raise ConfigError("nothing to bench: give at least one variant")
    config = config or BenchConfig()
    threads = config.threads or measurement_threads()
    baseline = variants[0]
    for v in variants[1:]:
        if v.task.label_names != baseline.task.label_names:
            raise ConfigError(f"{v.name} predicts other labels than {baseline.name}: bench variants of one teacher")
    full = data if data is not None else dataset_for(baseline)
    split = test if test is not None else full.take(getattr(baseline.splits, config.split))
    # User errors (a bad suite file, a slice on a missing column) surface before minutes of measuring.
    suite = _suite(config, baseline, full, split)
    masks = slice_masks(split.frame, split.texts() if split.kind == "text" else None,
                        {**{s: s for s in config.slices}, **(slices or {})}, len(split))
    texts = split.texts()
    warning = preflight(threads, reading) if (reading := load_reader()) is not None else None
    if warning:
        say(f"warning: {warning}")
    rows: list[VariantResult] = []
    base: tuple[VariantResult, Measured] | None = None
    base_outcomes: dict[str, bool] | None = None
    for v in variants:
        say(f"measuring {v.name} ({v.format}) …")
        row = VariantResult(id=v.id, name=v.name, format=v.format, lineage=tuple(s.label() for s in v.lineage),
                            parent=v.parent, pass_report=v.report)
        before = load_reader()
        try:
            measured = measure_variant(_job(v, baseline if base is not None else None, config, threads), split.inputs,
                                       suite.inputs if suite is not None else None, isolate=config.isolate,
                                       timeout_s=config.timeout_s, processes=config.processes)
        except OptikitError as exc:
            if fail_fast:
                raise
            rows.append(replace(row, status="failed", error=str(exc)))
            if base is None:
                raise MeasurementError(f"the baseline {baseline.name} could not be measured: {exc}") from None
            continue
        after = load_reader()
        f = measured.figures
        probs, labels = measured.probs, split.labels
        preds = probs.argmax(-1)
        outcomes = (case_outcomes(suite, measured.suite_probs)
                    if suite is not None and measured.suite_probs is not None else None)
        is_baseline = base is None
        base_probs = probs if base is None else base[1].probs
        sig = significance(labels, base_probs, probs, config.significance)
        row = replace(
            row, is_baseline=is_baseline, runner=RunnerInfo.from_dict(f["runner"]),
            latency=tuple(Latency.from_dict(x) for x in f["latency"]),
            tokenization_ms={int(b): float(ms) for b, ms in f["tokenization_ms"].items()},
            size=Size.from_dict(f["size"]), diagnostics=Diagnostics.from_dict(f["diagnostics"]),
            peak_rss_mb=f["peak_rss_mb"], notes=tuple(f["notes"]),
            alignment=alignment(labels, preds, split.label_names,
                                per_slice(labels, preds, masks, len(split.label_names))),
            capability=capability(labels, probs), fidelity=fidelity(labels, base_probs, probs, texts, config.max_flipped),
            significance=sig, quadrant=quadrant(sig.deltas), speedup=_speedup(measured, config.speedup),
            behavioral=(behavioral(suite, outcomes, None if is_baseline else base_outcomes)
                        if suite is not None and outcomes is not None else None))
        row = replace(row, quality_by_batch=quality_by_batch(labels, measured, measured if base is None else base[1],
                                                             config.latency.batch_sizes, config.significance,
                                                             sig.deltas))
        row = replace(row, conditions=assess(v.name, threads, before=before, after=after, latency=row.latency,
                                             baseline_latency=() if is_baseline or base is None else base[0].latency,
                                             speedups=row.speedup))
        if base is None:
            base, base_outcomes = (row, measured), outcomes
        rows.append(row)
    rows = _with_notes(rows, baseline.id)
    return Results(variants=rows, baseline_id=baseline.id,
                   task=Task(kind=split.kind, label_names=tuple(split.label_names), split=config.split,
                             examples=len(split), data=baseline.data.to_dict(),
                             split_rule="bench-test-file" if test is not None else baseline.splits.rule,
                             notes=tuple(data_notes(baseline, full, split, test)),
                             slices={name: int(m.sum()) for name, m in masks.items()}),
                   environment=environment(threads, config.device),
                   settings={**config.settings(threads), "preflight": warning})


def _slower_than_parent(r: VariantResult, parent: VariantResult, baseline_id: str) -> list[str]:
    """Uses the interleaved speedup intervals: against the baseline directly, or, for a parent that is itself a
    variant, when the two intervals against the baseline do not overlap (a conservative reading)."""
    notes = []
    for s in r.speedup:
        b = s.batch_size
        if parent.id == baseline_id:
            slower = s.verdict == "slower"
        else:
            ref = parent.measured_speedup(b)
            slower = ref is not None and s.high < ref.low
        if slower:
            notes.append(f"slower than its parent {parent.name} at batch {b} (speedup vs baseline {s.ratio:.2f}×, "
                         f"95% CI {s.low:.2f}–{s.high:.2f})")
    return notes


INTERFERENCE_NOTE = 0.10  # a typical block this far above the quietest one means the machine was busy


def _interference(latency: Sequence[Latency]) -> list[str]:
    busy = [lat for lat in latency if lat.interference > INTERFERENCE_NOTE]
    if not busy:
        return []
    where = ", ".join(f"batch {lat.batch_size}: +{lat.interference:.0%} (p50 {lat.p50_ms:.3g} ms, steady "
                      f"{lat.steady_p50_ms:.3g} ms)" for lat in busy)
    return [f"the machine was busy while timing; the typical stretch ran slower than the quietest ({where}). Tables "
            "use the steady figure; the interleaved speedups are unaffected"]


def _batch_dependence(r: VariantResult) -> list[str]:
    if not r.batch_dependent or r.alignment is None:
        return []
    each = ", ".join(f"{q.f1_macro * 100:.2f} at batch {q.batch_size} ({q.same_as_eval:.1%} of predictions as in "
                     "evaluation batches)" for q in r.quality_by_batch)
    return [f"its predictions depend on the batch they are made in: macro-F1 {each}; "
            f"{r.alignment.f1_macro * 100:.2f} in evaluation batches. The verdict uses the batch size it names"]


def _with_notes(rows: list[VariantResult], baseline_id: str) -> list[VariantResult]:
    """Plain warnings a reader needs: a compressed variant that is slower than its parent, sparse weights in dense kernels."""
    by_id = {r.id: r for r in rows}
    out = []
    for r in rows:
        if r.status != "ok":
            out.append(r)
            continue
        notes = list(r.notes)
        parent = by_id.get(r.parent or "")
        if parent and parent.status == "ok":
            notes += _slower_than_parent(r, parent, baseline_id)
        notes += _interference(r.latency)
        notes += _batch_dependence(r)
        size = r.size
        if size is not None and size.parameters and size.nonzero_parameters < 0.9 * size.parameters:
            notes.append("zeros in dense kernels do not make inference faster: this sparsity saves compressed "
                         "bytes, not time")
        out.append(replace(r, notes=tuple(notes)))
    return out
