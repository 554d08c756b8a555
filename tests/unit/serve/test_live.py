"""The live comparison: a log whose agreement, flips and feedback accuracy are known by construction gives exactly
those figures, in bench's records, and the same report files."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from optikit.harness.results import Results
from optikit.serve.live import NO_FEEDBACK, live_results, write_live_report
from optikit.serve.log import LogMeta, Prediction, RequestLog, RequestRecord
from optikit.serve.policy import ServePlan, ab_stats

LABELS = ("cat", "dog", "owl")
N, LABELLED = 20, 15  # requests 0..19; feedback on the first 15
BASELINE_WRONG = {0, 5}
CANDIDATE_WRONG = {5, 7, 9, 12, 17}  # 5: wrong like the baseline (no flip); 17: a flip nobody labelled


def truth(i: int) -> int:
    return i % 3


def answer(i: int, wrong: set[int], ms: float) -> Prediction:
    label = (truth(i) + 1) % 3 if i in wrong else truth(i)
    probs = np.full(3, 0.1)
    probs[label] = 0.8
    return Prediction(label, tuple(float(p) for p in probs), ms)


def meta(mode: str, candidate_path: str = "/gone/int8", baseline_path: str = "/gone/teacher") -> LogMeta:
    return LogMeta("teacher", "int8", baseline_path, candidate_path, LABELS, mode,
                   {"mode": mode, "ramp": [], "min_effect": 0.05, "alpha": 0.05, "power": 0.8}, "text")


def shadow_log(path: Path, *, feedback: bool = True, **paths: str) -> Path:
    with RequestLog.open(path, meta("shadow", **paths)) as log:
        rows = [RequestRecord(f"req{i:02d}", 1_700_000_000.0 + i, "baseline", "k" * 16, "h" * 64, f"text number {i}",
                              answer(i, BASELINE_WRONG, 2.0 + i % 4), answer(i, CANDIDATE_WRONG, 1.0 + i % 3))
                for i in range(N)]
        log.record(rows).result(timeout=30)
        if feedback:
            assert all(log.feedback(f"req{i:02d}", truth(i)).result(timeout=30) for i in range(LABELLED))
        log.bump("shadow_dropped", 3)
    return path


def test_shadow_log_gives_the_agreement_and_flips_it_was_built_with(tmp_path: Path) -> None:
    with RequestLog.open(shadow_log(tmp_path / "serve.db")) as log:
        results = live_results(log, resamples=200)
    base, cand = results.variants
    assert base.is_baseline and results.baseline_id == base.id != cand.id
    # Disagreements: 0 (baseline wrong), 7, 9, 12 (candidate wrong), 17 (candidate wrong, unlabelled) of 20.
    assert cand.fidelity is not None and cand.fidelity.agreement == pytest.approx(15 / 20)
    assert (cand.fidelity.flips_right_to_wrong, cand.fidelity.flips_wrong_to_right) == (3, 1)
    kinds = {f.text: f.kind for f in cand.fidelity.flipped}
    assert kinds == {"text number 7": "right_to_wrong", "text number 9": "right_to_wrong",
                     "text number 12": "right_to_wrong", "text number 0": "wrong_to_right",
                     "text number 17": NO_FEEDBACK}
    # Accuracy on the 15 labelled requests both answered: baseline wrong on 0, 5; candidate on 5, 7, 9, 12.
    assert base.alignment.accuracy == pytest.approx(13 / 15) and cand.alignment.accuracy == pytest.approx(11 / 15)
    assert cand.significance.mcnemar.b == 3 and cand.significance.mcnemar.c == 1
    assert cand.quadrant is not None and cand.capability is not None
    live = results.settings["live"]
    assert live["feedback_accuracy"]["baseline"]["correct"] == 13
    assert live["feedback_accuracy"]["candidate"]["correct"] == 11
    assert live["feedback_accuracy"]["candidate"]["low"] < 11 / 15 < live["feedback_accuracy"]["candidate"]["high"]
    assert live["counters"] == {"shadow_dropped": 3} and live["paired_with_feedback"] == 15
    assert [lat.samples for lat in base.latency] == [20] and [lat.samples for lat in cand.latency] == [20]
    assert base.latency[0].p50_ms == pytest.approx(float(np.median([2.0 + i % 4 for i in range(N)])))
    assert any("the 15 requests both models answered that got feedback" in n for n in results.task.notes)
    assert any("3 mirrored calls dropped" in n for n in results.task.notes)


def test_without_feedback_the_figures_are_agreement_and_say_so(tmp_path: Path) -> None:
    with RequestLog.open(shadow_log(tmp_path / "serve.db", feedback=False)) as log:
        results = live_results(log, resamples=200)
    base, cand = results.variants
    assert base.alignment.accuracy == 1.0 and cand.alignment.accuracy == pytest.approx(15 / 20)
    assert cand.capability is None and cand.significance is None
    assert (cand.fidelity.flips_right_to_wrong, cand.fidelity.flips_wrong_to_right) == (0, 0)
    assert any("they measure agreement, not correctness" in n for n in results.task.notes)


def test_ab_log_reports_each_arms_feedback_and_the_ab_test(tmp_path: Path) -> None:
    plan = ServePlan(mode="ab")
    with RequestLog.open(tmp_path / "ab.db", meta("ab")) as log:
        rows = []
        for i in range(40):
            served = "baseline" if i % 2 else "candidate"
            p = answer(i, {1, 3} if served == "baseline" else {0, 2, 4, 6}, 1.0)
            rows.append(RequestRecord(f"r{i}", 1_700_000_000.0 + i, served, "k" * 16, "h" * 64, None,
                                      p if served == "baseline" else None, p if served == "candidate" else None))
        log.record(rows).result(timeout=30)
        for i in range(30):  # baseline: 15 labelled (odd i < 30), wrong on 1, 3; candidate: 15, wrong on 0, 2, 4, 6
            log.feedback(f"r{i}", truth(i)).result(timeout=30)
        results = live_results(log, resamples=200)
    base, cand = results.variants
    assert cand.fidelity is None and cand.significance is None  # no request ran on both: nothing paired
    assert base.alignment.accuracy == pytest.approx(13 / 15) and cand.alignment.accuracy == pytest.approx(11 / 15)
    expected = ab_stats(13, 15, 11, 15, plan)
    assert results.settings["live"]["ab"]["p_value"] == pytest.approx(expected.p_value)
    assert results.settings["live"]["ab"]["difference"] == pytest.approx(-2 / 15)
    assert any(n.startswith("A/B test on the answers users got") and expected.verdict in n for n in results.task.notes)
    assert any("no request ran on both models" in n for n in results.task.notes)


def test_live_report_is_written_by_the_bench_writer(tmp_path: Path) -> None:
    paths = write_live_report(shadow_log(tmp_path / "serve.db"), tmp_path / "report")
    assert set(paths) == {"json", "csv", "long_csv", "md", "html"}
    results = Results.load(paths["json"])
    assert [v.name for v in results.variants] == ["teacher", "int8"] and results.task.split == "live"
    html = paths["html"].read_text(encoding="utf-8")
    assert "text number 7" in html and "right_to_wrong" in html  # the flipped examples, inputs logged
    assert "3 mirrored calls dropped" in html and "Wilson" in html
    assert '<table id="variants"' in html and html.count('class="variant-row') == 2
    summary = paths["md"].read_text(encoding="utf-8")
    assert summary.startswith("## optikit live: teacher vs int8") and "| int8 |" in summary
    long = paths["long_csv"].read_text(encoding="utf-8")
    assert "agreement" in long and "p99_ms" in long
    assert json.loads(paths["json"].read_text())["settings"]["live"]["feedback"] == LABELLED


def test_size_and_lineage_come_from_variant_folders_that_still_exist(tmp_path: Path, digits_teacher) -> None:
    target = shadow_log(tmp_path / "serve.db", baseline_path=str(digits_teacher.path),
                        candidate_path=str(tmp_path / "deleted"))
    with RequestLog.open(target) as log:
        results = live_results(log, resamples=200)
    base, cand = results.variants
    assert base.id == digits_teacher.id and base.format == digits_teacher.format
    assert base.size is not None and base.size.parameters > 0
    assert cand.size is None and cand.format == "?"
