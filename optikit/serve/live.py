"""Live comparison: the request log → the same `Results` records bench makes → the same report files.

Which figures come from which requests (each is also stated in the report's data notes):
- fidelity (agreement, KL, flip matrix): every request both models answered (shadow; canary's mirrored ones);
  flips right→wrong / wrong→right: those of them with feedback, the only ones where "right" is known;
- accuracy, F1, log loss, calibration, their paired-bootstrap deltas, McNemar and the quadrant: the requests both
  models answered that got feedback. Where there are none (A/B serves each request by one model only), each model's
  figures are on its own labelled requests, different ones, and the A/B test on the served answers is the comparison;
- latency: each model's logged per-example inference time on every request it ran, served or mirrored.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from optikit.errors import OptikitError
from optikit.harness.latency import Latency, LatencyConfig
from optikit.harness.metrics import alignment, capability, fidelity
from optikit.harness.quadrant import quadrant
from optikit.harness.records import Alignment, CpuInfo, Environment, Fidelity, Significance, Task, plain
from optikit.harness.results import Results, VariantResult
from optikit.harness.significance import SignificanceConfig, significance
from optikit.harness.size import Size
from optikit.serve.log import ARMS, Prediction, RequestLog, RequestRecord
from optikit.serve.policy import ABStats, ServePlan, ab_stats
from optikit.variant import Variant

MAX_FLIPPED = 50  # flipped examples listed (all are counted), as bench
MAX_INPUT_CHARS = 300  # a logged image array is long: the flip table shows its start
NO_FEEDBACK = "no feedback"  # a flip on a request nobody labelled: neither right nor wrong is known


@dataclass(frozen=True)
class Accuracy:
    """Feedback accuracy of one model on `n` labelled requests, with its 95% Wilson interval (NaN when n is 0)."""

    correct: int
    n: int
    accuracy: float
    low: float
    high: float

    @classmethod
    def of(cls, correct: int, n: int) -> Accuracy:
        if n == 0:
            return cls(0, 0, math.nan, math.nan, math.nan)
        from scipy.stats import binomtest

        ci = binomtest(correct, n).proportion_ci(0.95, method="wilson")
        return cls(correct, n, correct / n, float(ci.low), float(ci.high))

    def phrase(self) -> str:
        if self.n == 0:
            return "no feedback yet"
        return f"{self.accuracy:.3f} (95% Wilson {self.low:.3f}–{self.high:.3f}, {self.correct}/{self.n})"


def _arm(r: RequestRecord, arm: str) -> Prediction | None:
    return r.baseline if arm == "baseline" else r.candidate


def _probs(rows: Sequence[RequestRecord], arm: str) -> np.ndarray:
    return np.array([_arm(r, arm).probs for r in rows], dtype=float)  # type: ignore[union-attr]


def _correct(rows: Sequence[RequestRecord], arm: str, truth: dict[str, int]) -> int:
    return sum(1 for r in rows if (p := _arm(r, arm)) is not None and p.label == truth.get(r.id))


def _text(r: RequestRecord) -> str:
    if r.input is None:
        return f"request {r.id}"
    return r.input if len(r.input) <= MAX_INPUT_CHARS else r.input[:MAX_INPUT_CHARS] + "…"


@functools.lru_cache(maxsize=8)
def _variant_and_size(path: str, mtime: float) -> tuple[Variant, Size] | None:
    from optikit.harness.size import measure_size
    from optikit.variant import load_variant

    del mtime  # part of the cache key only: a variant rewritten in place is measured again
    try:
        variant = load_variant(path)
        return variant, measure_size(variant)
    except (OptikitError, OSError, ValueError):
        return None


def _artifact(path: str | None) -> tuple[Variant, Size] | None:
    """The variant and its size, when its folder still exists (the log keeps only its path)."""
    manifest = Path(path or "").expanduser() / "variant.json"
    if not path or not manifest.is_file():
        return None
    return _variant_and_size(str(Path(path).expanduser().resolve()), manifest.stat().st_mtime)


def _latency(rows: Sequence[RequestRecord], arm: str) -> tuple[Latency, ...]:
    seconds = [p.ms / 1e3 for r in rows if (p := _arm(r, arm)) is not None]
    if not seconds:
        return ()
    config = LatencyConfig()  # bench's block settings, so the steady figure means the same thing
    return (Latency.from_samples(1, seconds, config.blocks, config.min_block_calls),)


def _fidelity(paired: Sequence[RequestRecord], truth: dict[str, int]) -> Fidelity:
    """Agreement, KL and the flip matrix on every paired request; flips counted where feedback says which is right."""
    labels = np.array([truth.get(r.id, -1) for r in paired])  # -1: no model is ever "right" on it
    found = fidelity(labels, _probs(paired, "baseline"), _probs(paired, "candidate"), [_text(r) for r in paired],
                     MAX_FLIPPED)
    flipped = tuple(f if f.label != -1 else replace(f, label=NO_FEEDBACK, kind=NO_FEEDBACK) for f in found.flipped)
    return replace(found, flipped=flipped)


@dataclass(frozen=True)
class _Quality:
    alignment: Alignment | None  # None: nothing to score this model on (the row says why in `error`)
    capability: Any = None
    significance: Significance | None = None
    n: int = 0
    error: str | None = None


def _score(rows: Sequence[RequestRecord], arm: str, reference: dict[str, int], label_names: tuple[str, ...],
           against: str | None = None, config: SignificanceConfig | None = None, calibrated: bool = True) -> _Quality:
    """`arm` scored against `reference` labels on `rows`; with `against`, paired deltas against that arm's answers on
    the same rows. `calibrated` False: the reference is not the truth, so log loss and calibration would mislead."""
    if not rows:
        return _Quality(None, error="not scored: no feedback on the requests it answered yet")
    labels = np.array([reference[r.id] for r in rows])
    probs = _probs(rows, arm)
    sig = significance(labels, _probs(rows, against), probs, config or SignificanceConfig()) if against else None
    return _Quality(alignment(labels, probs.argmax(-1), label_names),
                    capability(labels, probs) if calibrated else None, sig, len(rows))


def _qualities(has: dict[str, list[RequestRecord]], paired: list[RequestRecord], truth: dict[str, int],
               names: tuple[str, ...], two: bool, config: SignificanceConfig) -> tuple[_Quality, _Quality, str]:
    """Both rows' quality figures, from the best rows the log has, and the note saying which rows those are."""
    labelled = {arm: [r for r in rows if r.id in truth] for arm, rows in has.items()}
    paired_labelled = [r for r in paired if r.id in truth]
    if two and paired_labelled:  # the same requests, the truth known: bench's comparison
        return (_score(paired_labelled, "baseline", truth, names, "baseline", config),
                _score(paired_labelled, "candidate", truth, names, "baseline", config),
                f"accuracy, F1, log loss, calibration and their deltas (paired bootstrap, McNemar, quadrant): the "
                f"{len(paired_labelled)} requests both models answered that got feedback")
    if labelled["baseline"] or labelled["candidate"]:  # the truth known, on different requests per model (A/B)
        base, cand = (_score(labelled[arm], arm, truth, names) for arm in ARMS)
        return base, cand, ("accuracy, F1, log loss and calibration: " + (
            f"each model on its own labelled requests (baseline {base.n}, candidate {cand.n}): different requests, so "
            "their difference has no paired interval; the A/B test below compares them" if two else
            f"the {base.n} requests that got feedback"))
    # No feedback: the baseline's answers are the only reference, so the figures measure agreement, not correctness.
    own = {r.id: _arm(r, "baseline").label for r in has["baseline"]}  # type: ignore[union-attr]
    if two and paired:
        return (_score(paired, "baseline", own, names, calibrated=False),
                _score(paired, "candidate", own, names, calibrated=False),
                f"no feedback yet: accuracy and F1 are against the baseline's answers on the {len(paired)} requests both "
                "models answered (the baseline scores 100 by construction): they measure agreement, not correctness")
    cand = _Quality(None, error="not scored: no feedback yet and no request ran on both models") if two else _Quality(None)
    return (_score(has["baseline"], "baseline", own, names, calibrated=False), cand,
            "no feedback yet: nothing is scored; the baseline's accuracy and F1 are against its own answers (100 by "
            "construction), only so that its latency can be tabled")


def _plan(d: dict[str, Any]) -> ServePlan:
    known = {f.name for f in fields(ServePlan)}
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in known}
    try:
        return ServePlan(**values)
    except (OptikitError, TypeError):
        return ServePlan()


def _ab(rows: Sequence[RequestRecord], truth: dict[str, int], plan: ServePlan) -> ABStats:
    """The A/B test on what users got: each labelled request scored by the model that answered it."""
    counts = {arm: [0, 0] for arm in ARMS}
    for r in rows:
        p = _arm(r, r.served)
        if r.id in truth and p is not None:
            counts[r.served][0] += int(p.label == truth[r.id])
            counts[r.served][1] += 1
    (cb, nb), (cc, nc) = counts["baseline"], counts["candidate"]
    return ab_stats(cb, nb, cc, nc, plan)


def live_results(log: RequestLog, *, resamples: int = 1000, seed: int = 0) -> Results:
    """The log as bench's `Results`: a baseline row and (when served with one) a candidate row, with notes saying
    which requests each figure comes from, the log's counts, the router's events and the A/B test."""
    meta = log.meta
    names = meta.label_names
    k = len(names)
    config = SignificanceConfig(resamples=resamples, seed=seed)

    def usable(p: Prediction | None) -> bool:
        return p is not None and len(p.probs) == k

    every = log.records()
    records = [r for r in every if all(usable(_arm(r, a)) or _arm(r, a) is None for a in ARMS)]
    truth = {rid: label for rid, label in log.labels().items() if 0 <= label < k}
    has = {arm: [r for r in records if _arm(r, arm) is not None] for arm in ARMS}
    labelled = {arm: [r for r in has[arm] if r.id in truth] for arm in ARMS}
    paired = [r for r in has["baseline"] if r.candidate is not None]
    paired_labelled = [r for r in paired if r.id in truth]

    two = meta.candidate is not None
    base_q, cand_q, quality_note = _qualities(has, paired, truth, names, two, config)
    rows: list[VariantResult] = []
    for arm, q, meta_name, meta_path in (("baseline", base_q, meta.baseline, meta.baseline_path),
                                         ("candidate", cand_q, meta.candidate, meta.candidate_path)):
        if meta_name is None:
            continue
        found = _artifact(meta_path)
        variant = found[0] if found else None
        vid = variant.id if variant else f"live-{meta_name}"
        if arm == "candidate" and rows and vid == rows[0].id:
            vid += "-candidate"  # the same model served as both arms: two rows still need two ids
        rows.append(VariantResult(
            id=vid, name=meta_name, format=variant.format if variant else "?",
            lineage=tuple(s.label() for s in variant.lineage) if variant else (),
            parent=variant.parent if variant else None, is_baseline=arm == "baseline", latency=_latency(has[arm], arm),
            size=found[1] if found else None, alignment=q.alignment, capability=q.capability, error=q.error,
            fidelity=_fidelity(paired, truth) if arm == "candidate" and paired else None,
            significance=q.significance, quadrant=quadrant(q.significance.deltas) if q.significance else None))

    accuracy = {arm: Accuracy.of(_correct(labelled[arm], arm, truth), len(labelled[arm])) for arm in ARMS}
    served = {arm: sum(r.served == arm for r in records) for arm in ARMS}
    counters = log.counters()
    events = log.events()
    ab = _ab(records, truth, _plan(meta.plan)) if two and served["candidate"] else None
    mirroring = (f"; {len(paired)} ran on both models; {counters.get('shadow_dropped', 0)} mirrored calls dropped "
                 f"(queue full), {len(log.mirror_errors())} failed") if two else ""
    notes = [f"live traffic from the request log {log.where} ({meta.mode} mode): {len(every)} requests, "
             f"{served['baseline']} answered by {meta.baseline}"
             + (f", {served['candidate']} by {meta.candidate}" if two else "") + mirroring
             + f"; {len(truth)} got feedback; {sum(r.error is not None for r in every)} inference errors"]
    if two and not paired:
        notes.append("no request ran on both models, so no agreement or flips are measured")
    elif two:
        notes.append(f"agreement, KL and the flip matrix: the {len(paired)} requests both models answered; flips "
                     f"right→wrong and wrong→right: the {len(paired_labelled)} of them with feedback")
    notes.append(quality_note)
    notes.append("latency: each model's logged inference time per example (its batch's time / batch size) on every "
                 f"request it ran, served or mirrored ({', '.join(f'{a} {len(has[a])}' for a in ARMS if has[a])}), "
                 "measured by the server under live load; batch 1 in the tables means per example")
    notes.append("feedback accuracy on the labelled requests each model ran (served or mirrored): "
                 + "; ".join(f"{name} {accuracy[arm].phrase()}" for arm, name in zip(ARMS, (meta.baseline, meta.candidate),
                                                                                     strict=True) if name is not None))
    if ab is not None and not (ab.n_baseline and ab.n_candidate):
        notes.append(f"A/B test on the answers users got: {ab.verdict}")
    elif ab is not None:
        notes.append(f"A/B test on the answers users got (each labelled request scored by the model that served it; "
                     f"pooled two-proportion z-test): {ab.verdict}; baseline {ab.accuracy_baseline:.3f} on {ab.n_baseline}, "
                     f"candidate {ab.accuracy_candidate:.3f} on {ab.n_candidate}, difference {ab.difference * 100:+.1f} "
                     f"points (95% CI {ab.low * 100:+.1f}…{ab.high * 100:+.1f}), z={ab.z:.2f}, p={ab.p_value:.3g}")
    notes += [f"router at request {e.at_request}: {e.describe()}" for e in events]
    if len(records) < len(every):
        notes.append(f"{len(every) - len(records)} requests skipped: their probabilities do not have {k} classes")
    task = Task(kind=meta.kind, label_names=names, split="live", examples=len(every),
                data={"log": log.where, "mode": meta.mode}, split_rule="live", notes=tuple(notes))
    environment = Environment(cpu=CpuInfo("not recorded: latencies were measured by the server that wrote the log"),
                              threads=0)
    settings = {"live": {"log": log.where, "mode": meta.mode, "plan": meta.plan, "counters": counters,
                         "requests": len(every), "served": served, "paired": len(paired),
                         "paired_with_feedback": len(paired_labelled), "feedback": len(truth),
                         "feedback_accuracy": plain(accuracy), "ab": plain(ab) if ab else None,
                         "events": plain(events)},
                "significance": plain(config)}
    return Results(variants=rows, baseline_id=rows[0].id, task=task, environment=environment, settings=settings)


def write_live_report(log_target: str | Path, out: Path) -> dict[str, Path]:
    """`optikit report --live LOG --out DIR`: results.json, the CSVs, summary.md and report.html, as bench writes them."""
    from optikit.api import write_report

    log = RequestLog.open(log_target)
    try:
        results = live_results(log)
        title = f"optikit live: {log.meta.baseline}" + (f" vs {log.meta.candidate}" if log.meta.candidate else "")
    finally:
        log.close()
    return write_report(results, out, title=title)
