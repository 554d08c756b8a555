"""A starved machine or self-contradicting timings never produce a confident verdict, and the gate says why."""
from __future__ import annotations

from dataclasses import replace

from optikit.harness.conditions import LoadReading, assess
from optikit.harness.latency import Latency
from optikit.harness.records import MeasuredSpeedup
from optikit.harness.results import Results, VariantResult
from optikit.matrix.gate import FAIR_CONDITIONS, conditions_outcome
from optikit.report.analysis import verdict
from optikit.report.html import render_html
from optikit.report.summary import summary_markdown
from tests.unit.report.fake import baseline_row, fake_row, results_of

QUIET = LoadReading(cpu_count=2, load_1min=0.1, run_queue=1, steal_fraction=0.0, other_cpu_cores=0.05)
BUSY = LoadReading(cpu_count=2, load_1min=2.9, run_queue=4, steal_fraction=0.0, other_cpu_cores=1.0)


def _lat(batch: int, ms: float) -> Latency:
    return Latency.from_samples(batch, [ms / 1e3] * 40, blocks=4, min_block_calls=5)


def _assessed(row: VariantResult, base: VariantResult | None, before: LoadReading, after: LoadReading) -> VariantResult:
    return replace(row, conditions=assess(row.name, 2, before=before, after=after, latency=row.latency,
                                          baseline_latency=base.latency if base is not None else (),
                                          speedups=row.speedup))


def _starved_run() -> Results:
    """The CI matrix of optikit issue 12 on a loaded 2-core machine: the torch baseline's batch-1 median 60 ms against
    1.7 ms at batch 32, the interleaved ratio 17.5× while the medians at batch 32 say 0.26× (6.7 ms vs 1.7 ms)."""
    base = replace(baseline_row(), latency=(_lat(1, 60.0), _lat(32, 1.7)))
    int8 = replace(fake_row("int8-dynamic", f1=0.9, acc=0.9, p50=1.0, size=1_000_000, lineage=["export-onnx", "quantize"],
                            ci=(-0.002, 0.002)),
                   latency=(_lat(1, 0.9), _lat(32, 6.7)),
                   speedup=(MeasuredSpeedup(1, 66.0, 60.0, 70.0, 20, "faster"),
                            MeasuredSpeedup(32, 17.53, 16.0, 19.0, 20, "faster")))
    base = _assessed(base, None, BUSY, BUSY)
    return results_of([base, _assessed(int8, base, BUSY, QUIET)])


def test_the_issues_starved_run_is_flagged_and_its_verdict_is_never_confident() -> None:
    res = _starved_run()
    base, int8 = res.variants
    assert base.conditions is not None and base.conditions.starved and base.conditions.inconsistent
    assert int8.conditions is not None and int8.conditions.inconsistent
    v = verdict(res, 1.0)
    assert v.ship is None and v.headline.startswith("No verdict: the timings behind it were not measured in fair")
    assert v.reasons[0].startswith("On these figures: Ship int8-dynamic for speed")
    assert v.confidence.startswith("Not certain: the timings were not measured in fair conditions")
    assert not v.confidence.startswith("Confident")
    assert any("17.53" in r and "0.25" in r for r in v.reasons)  # the interleaved ratio against the medians' ratio
    md, page = summary_markdown({"run": res}), render_html(res)
    assert "Not certain: the timings were not measured in fair conditions" in md
    assert 'id="conditions"' in page and "a starved machine" in page and "inconsistent figures" in page


def test_the_gate_fails_on_unfair_conditions_unless_noise_is_allowed() -> None:
    res = _starved_run()
    strict = conditions_outcome({"run": res})
    assert strict.rule == FAIR_CONDITIONS and not strict.passed
    assert "int8-dynamic" in strict.detail and "--allow-noisy" in strict.detail
    allowed = conditions_outcome({"run": res}, allow_noisy=True)
    assert allowed.passed and allowed.detail.startswith("allowed by --allow-noisy: 2 variant(s)")


def test_a_quiet_consistent_run_keeps_its_confident_verdict_and_passes() -> None:
    base = replace(baseline_row(), latency=(_lat(1, 1.0), _lat(32, 8.0)))
    int8 = replace(fake_row("int8", f1=0.9, acc=0.9, p50=1.0, size=1_000_000, lineage=["export-onnx", "quantize"],
                            ci=(-0.002, 0.002)),
                   latency=(_lat(1, 0.5), _lat(32, 4.0)),
                   speedup=(MeasuredSpeedup(1, 2.0, 1.9, 2.1, 20, "faster"), MeasuredSpeedup(32, 2.0, 1.9, 2.1, 20, "faster")))
    base = _assessed(base, None, QUIET, QUIET)
    res = results_of([base, _assessed(int8, base, QUIET, QUIET)])
    assert not any(v.conditions.flagged for v in res.variants if v.conditions)
    assert verdict(res, 1.0).confidence.startswith("Confident")
    assert conditions_outcome({"run": res}) == conditions_outcome({"run": res}, allow_noisy=True)
    assert conditions_outcome({"run": res}).passed


def test_conditions_survive_results_json() -> None:
    res = _starved_run()
    back = Results.from_dict(res.to_dict())
    assert back.variants[1].conditions == res.variants[1].conditions
    assert verdict(back, 1.0).confidence == verdict(res, 1.0).confidence


def test_a_flagged_variant_that_was_not_picked_leaves_the_pick_but_not_its_certainty() -> None:
    base = replace(baseline_row(), latency=(_lat(1, 1.0), _lat(32, 8.0)))
    fast = replace(fake_row("int8", f1=0.9, acc=0.9, p50=1.0, size=1_000_000, lineage=["export-onnx", "quantize"],
                            ci=(-0.002, 0.002)),
                   latency=(_lat(1, 0.5), _lat(32, 4.0)),
                   speedup=(MeasuredSpeedup(1, 2.0, 1.9, 2.1, 20, "faster"), MeasuredSpeedup(32, 2.0, 1.9, 2.1, 20, "faster")))
    slow = replace(fake_row("sparse", f1=0.9, acc=0.9, p50=1.0, size=4_000_000, lineage=["prune"], ci=(-0.002, 0.002)),
                   latency=(_lat(1, 1.0), _lat(32, 8.0)))
    base = _assessed(base, None, QUIET, QUIET)
    res = results_of([base, _assessed(fast, base, QUIET, QUIET), _assessed(slow, base, BUSY, BUSY)])
    v = verdict(res, 1.0)
    assert v.ship == "int8" and v.confidence.startswith("Not certain") and any("sparse" in r for r in v.reasons)
