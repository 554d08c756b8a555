"""The CI gate: each rule of the matrix checked against every group's Results, with a one-line reason."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from optikit.cpu import VNNI
from optikit.harness.compare import (
    baseline,
    delta,
    display_names,
    headline_batch,
    ok,
    size_ratio,
    speedup,
    timing_doubts,
)
from optikit.harness.results import Results, VariantResult
from optikit.matrix.spec import BASELINE, GateRule, MaxF1Drop, MinSizeRatio, MinSpeedup, NoFailures


@dataclass(frozen=True)
class RuleOutcome:
    rule: str
    passed: bool
    detail: str
    advisory: bool = False  # a target shown in the report; a miss does not fail the gate

    def to_dict(self) -> dict[str, object]:
        return {"rule": self.rule, "passed": self.passed, "detail": self.detail,
                **({"advisory": True} if self.advisory else {})}


def _cpu_skips(rule: GateRule, results: Results) -> str | None:
    """Why a CPU-specific rule does not apply to the machine that measured `results`, or None when it does."""
    wanted = getattr(rule, "cpu", "")
    if not wanted:
        return None
    flags = results.environment.cpu.int8_flags
    if not flags:
        return "skipped: the CPU's instruction sets were not recorded"
    has = any(flags.get(name) for name in VNNI)
    if has == (wanted == "vnni"):
        return None
    return f"skipped: a target for {wanted} CPUs, and {results.environment.cpu.model} {'has' if has else 'lacks'} VNNI/AMX"


def _check(rule: GateRule, group: str, results: Results) -> list[str]:
    """The failures of `rule` in one group, each a readable phrase; empty when the rule holds."""
    where = f"{group}: " if group else ""
    if isinstance(rule, NoFailures):
        return [f"{where}{v.name} failed ({v.error})" for v in results.variants if v.status != "ok"]
    base = baseline(results)
    if base is None:
        return [f"{where}the baseline was not measured"]
    by_name = {v.name: v for v in results.variants}
    if isinstance(rule, MaxF1Drop):
        names = rule.variants or tuple(v.name for v in results.variants if v.name != BASELINE)
        bad = []
        for name in names:
            v = by_name.get(name)
            if v is None or not ok(v):
                if rule.variants:  # a named variant must have been measured; "every" means every measured one
                    bad.append(f"{where}{name} was not measured")
                continue
            d = delta(v, base)
            lost = -d.points if d is not None else 0.0
            if lost > rule.points:
                bad.append(f"{where}{name} lost {lost:.2f} points macro-F1 (at most {rule.points:g} allowed)")
        return bad
    v = by_name.get(rule.variant)
    if v is None or not ok(v):
        return [f"{where}{rule.variant} was not measured"]
    if isinstance(rule, MinSpeedup):
        return _speed_check(rule, v, base, by_name, results, where)
    if isinstance(rule, MinSizeRatio):
        ratio = size_ratio(v, base, "weight_bytes" if rule.of == "weights" else "bytes_on_disk")
        if ratio is None or ratio < rule.ratio:
            got = "no size" if ratio is None else f"{ratio:.2f}×"
            return [f"{where}{rule.variant}'s {rule.of} is {got} smaller (at least {rule.ratio:g}× required)"]
        return []
    raise TypeError(f"unknown gate rule {rule!r}")


def _speed_check(rule: MinSpeedup, v: VariantResult, base: VariantResult, by_name: Mapping[str, VariantResult],
                 results: Results, where: str) -> list[str]:
    batch = rule.batch_size or headline_batch(results)
    s = speedup(v, base, batch)
    if s is None:
        return [f"{where}{rule.variant} has no latency at batch {batch}"]
    # (point, most favourable) readings; an interleaved interval gives the second, a ratio of medians has none.
    point, best = s.ratio, s.high if s.high is not None else s.ratio
    than = ""
    if rule.against:  # both timed against the same baseline in one run: their ratio is v against `against`
        ref_row = by_name.get(rule.against)
        ref = speedup(ref_row, base, batch) if ref_row is not None and ok(ref_row) else None
        if ref is None or ref.ratio <= 0:
            return [f"{where}{rule.against} was not measured at batch {batch}"]
        point, best = point / ref.ratio, best / (ref.low if ref.low else ref.ratio)
        than = f" against {rule.against}"
    if (best if rule.significant else point) >= rule.ratio:
        return []
    noise = f", {best:.2f}× at best within the intervals" if rule.significant else ""
    return [f"{where}{rule.variant} is {point:.2f}×{than} at batch {batch}{noise} (at least {rule.ratio:g}× required)"]


FAIR_CONDITIONS = "measured-in-fair-conditions"


def conditions_outcome(groups: Mapping[str, Results], allow_noisy: bool = False) -> RuleOutcome:
    """The gate's own rule: no variant's timing was starved or inconsistent (`VariantResult.conditions`). A figure
    measured on a starved machine can be off many-fold either way, so no speed rule can hold on it; `allow_noisy`
    keeps the run passing and says what it let through."""
    flagged = [f"{(g + ': ') if len(groups) > 1 else ''}{name}: {'; '.join(doubts)}"
               for g, res in groups.items()
               for v, name in zip(res.variants, display_names(res.variants), strict=True)
               if (doubts := timing_doubts(v))]
    if not flagged:
        return RuleOutcome(FAIR_CONDITIONS, True, "holds")
    if allow_noisy:
        return RuleOutcome(FAIR_CONDITIONS, True, f"allowed by --allow-noisy: {len(flagged)} variant(s) measured in "
                                                  f"unfair conditions ({' | '.join(flagged)})")
    return RuleOutcome(FAIR_CONDITIONS, False, f"{' | '.join(flagged)} (rerun on a quiet machine, or pass "
                                               "--allow-noisy to accept these figures)")


def evaluate(rules: tuple[GateRule, ...], groups: Mapping[str, Results]) -> list[RuleOutcome]:
    """One outcome per rule, over every group (the group name is added only when there are several)."""
    outcomes = []
    for rule in rules:
        skips = {g: _cpu_skips(rule, res) for g, res in groups.items()}
        applies = {g: res for g, res in groups.items() if skips[g] is None}
        if not applies:
            outcomes.append(RuleOutcome(rule.name, True, next(iter(skips.values())) or "skipped"))
            continue
        failures = [f for g, res in applies.items() for f in _check(rule, g if len(groups) > 1 else "", res)]
        if getattr(rule, "advisory", False):
            detail = f"target missed: {'; '.join(failures)}" if failures else "target met"
            outcomes.append(RuleOutcome(rule.name, True, detail, advisory=True))
            continue
        outcomes.append(RuleOutcome(rule.name, not failures, "; ".join(failures) if failures else "holds"))
    return outcomes
