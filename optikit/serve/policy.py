"""Routing policy for `optikit serve`: sticky cohorts, the canary ramp and its guardrails, the A/B test with its stop
rule, and a Thompson bandit. Pure logic, no I/O: the app reports what each request produced and logs the events."""
from __future__ import annotations

import hashlib
import math
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from optikit.config import require

Arm = Literal["baseline", "candidate"]
Mode = Literal["single", "shadow", "canary", "ab"]
MODES = ("single", "shadow", "canary", "ab")
BANDITS = ("none", "thompson")
# The latency guardrail compares recent tails: a bounded window keeps memory flat on a server that runs for weeks.
LATENCY_WINDOW = 10_000
# The bandit's share is the candidate's share of the most recent routing decisions.
SHARE_WINDOW = 1_000


def bucket(key: str, salt: str = "optikit") -> float:
    """Stable position in [0, 100) from sha256(salt + key): the same key always lands in the same place."""
    digest = hashlib.sha256((salt + key).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100.0


def _in_unit(value: float, name: str, option: str) -> None:
    require(0.0 <= value <= 1.0, f"{name} must be in [0, 1], got {value}: pass {option} as a fraction, e.g. 0.9")


@dataclass(frozen=True)
class Guardrails:
    """Limits a canary must hold at every ramp step; breaking one rolls the candidate back to 0% for good."""

    min_agreement: float = 0.90  # candidate vs baseline on mirrored requests
    max_error_rate: float = 0.02  # candidate inference errors / candidate calls
    max_p99_ratio: float = 2.0  # candidate p99 latency / baseline p99 latency
    max_accuracy_drop: float = 0.05  # feedback accuracy, baseline minus candidate (absolute)
    min_samples: int = 30  # per check: a guardrail is not judged on fewer observations

    def __post_init__(self) -> None:
        _in_unit(self.min_agreement, "min_agreement", "min_agreement")
        _in_unit(self.max_error_rate, "max_error_rate", "max_error_rate")
        _in_unit(self.max_accuracy_drop, "max_accuracy_drop", "max_accuracy_drop")
        require(math.isfinite(self.max_p99_ratio) and self.max_p99_ratio > 0,
                f"max_p99_ratio must be a positive number, got {self.max_p99_ratio}: e.g. 2.0 allows twice the baseline's p99")
        require(self.min_samples >= 1, f"min_samples must be at least 1, got {self.min_samples}: e.g. 30")


@dataclass(frozen=True)
class ServePlan:
    """What `optikit serve` does with the candidate: nothing (single), shadow it, canary it, or A/B test it."""

    mode: Mode = "single"
    percent: float = 0.0  # canary: share of keys served by the candidate (0–100)
    ramp: tuple[float, ...] = ()  # canary: percents to step through, increasing, each in (0, 100]
    step_requests: int = 200  # canary: candidate-served requests per ramp step before judging it
    mirror_percent: float = 10.0  # canary: share of baseline-served requests also run on the candidate
    bandit: Literal["none", "thompson"] = "none"  # ab: a sticky 50/50 split, or Thompson sampling on feedback
    min_effect: float = 0.05  # ab: smallest accuracy difference worth detecting (stop rule)
    alpha: float = 0.05
    power: float = 0.8
    shadow_queue: int = 256  # shadow/canary mirror: bounded queue; full -> the mirrored call is dropped
    salt: str = "optikit"

    def __post_init__(self) -> None:
        require(self.mode in MODES, f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        require(0.0 <= self.percent <= 100.0, f"percent must be in [0, 100], got {self.percent}: pass --percent 5 for 5%")
        for value in self.ramp:
            require(0.0 < value <= 100.0, f"ramp percent {value} is outside (0, 100]: write e.g. --ramp 1,5,25,50,100")
        require(all(a < b for a, b in zip(self.ramp, self.ramp[1:], strict=False)),
                f"ramp {','.join(f'{v:g}' for v in self.ramp)} is not increasing: write e.g. --ramp 1,5,25,50,100")
        require(self.mode != "canary" or self.percent > 0 or bool(self.ramp),
                "a canary needs a starting share: pass --percent P (e.g. 5) or --ramp 1,5,25,50,100")
        require(self.step_requests >= 1,
                f"step_requests must be at least 1, got {self.step_requests}: pass --step-requests 200")
        require(0.0 <= self.mirror_percent <= 100.0, f"mirror_percent must be in [0, 100], got {self.mirror_percent}")
        require(self.bandit in BANDITS, f"bandit must be one of {', '.join(BANDITS)}, got {self.bandit!r}")
        require(0.0 < self.min_effect < 1.0, f"min_effect must be in (0, 1), got {self.min_effect}: e.g. 0.05 for 5 points")
        require(0.0 < self.alpha < 1.0, f"alpha must be in (0, 1), got {self.alpha}: e.g. 0.05")
        require(0.0 < self.power < 1.0, f"power must be in (0, 1), got {self.power}: e.g. 0.8")
        require(self.shadow_queue >= 1, f"shadow_queue must be at least 1, got {self.shadow_queue}: e.g. 256")
        require(isinstance(self.salt, str) and bool(self.salt), "salt must be non-empty text, e.g. 'optikit'")


@dataclass(frozen=True)
class Decision:
    served: Arm
    mirror: bool  # run the other arm off the path too


@dataclass(frozen=True)
class Observation:
    """What one request produced. Report it once, when every arm that will run on it has run: a mirrored request
    from the mirror worker with both labels; a mirrored call that was dropped or failed with the other label None."""

    served: Arm
    baseline_label: int | None  # None where that model did not run (or failed)
    candidate_label: int | None
    baseline_ms: float | None
    candidate_ms: float | None
    candidate_error: bool = False


@dataclass(frozen=True)
class Event:
    """A ramp step, a rollback or an A/B stop, logged with its reason."""

    kind: Literal["ramp", "rollback", "stop"]
    percent: float
    reason: str
    at_request: int

    def describe(self) -> str:
        """The one line the server prints for this event."""
        if self.kind == "ramp":
            return f"canary: {self.reason}"
        if self.kind == "rollback":
            return f"canary rolled back to 0%: {self.reason}"
        return f"A/B test: {self.reason}"


@dataclass(frozen=True)
class ABStats:
    """The running comparison of feedback accuracy between the two arms."""

    n_baseline: int
    n_candidate: int
    accuracy_baseline: float  # NaN when an arm has no feedback yet
    accuracy_candidate: float
    difference: float  # candidate - baseline
    low: float  # (1 - alpha) interval of the difference (unpooled Wald)
    high: float
    z: float  # pooled two-proportion z-test, two-sided (equals scipy chi2_contingency(correction=False))
    p_value: float
    required_per_arm: int  # fixed-horizon sample size for min_effect at alpha/power around the pooled rate
    enough: bool  # both arms have >= required_per_arm labelled outcomes
    verdict: str


def _required_per_arm(pooled: float, plan: ServePlan) -> int:
    """Two-proportion sample size (Fleiss, no continuity correction) for rates pooled ± min_effect/2."""
    from scipy.stats import norm

    half = plan.min_effect / 2
    centre = min(max(pooled, half), 1.0 - half)
    p1, p2 = centre - half, centre + half
    z_alpha, z_power = float(norm.ppf(1 - plan.alpha / 2)), float(norm.ppf(plan.power))
    root = z_alpha * math.sqrt(2 * centre * (1 - centre)) + z_power * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return max(1, math.ceil(root**2 / plan.min_effect**2))


def ab_stats(correct_baseline: int, n_baseline: int, correct_candidate: int, n_candidate: int,
             plan: ServePlan) -> ABStats:
    """Feedback accuracy per arm, the difference with its interval and test, and whether the sample is enough."""
    from scipy.stats import norm

    nan = float("nan")
    acc_b = correct_baseline / n_baseline if n_baseline else nan
    acc_c = correct_candidate / n_candidate if n_candidate else nan
    diff = acc_c - acc_b
    low = high = z = p_value = nan
    if n_baseline and n_candidate:
        z_crit = float(norm.ppf(1 - plan.alpha / 2))
        se = math.sqrt(acc_b * (1 - acc_b) / n_baseline + acc_c * (1 - acc_c) / n_candidate)
        low, high = diff - z_crit * se, diff + z_crit * se
        pooled = (correct_baseline + correct_candidate) / (n_baseline + n_candidate)
        se0 = math.sqrt(pooled * (1 - pooled) * (1 / n_baseline + 1 / n_candidate))
        # Every outcome alike (all right or all wrong): no evidence of a difference either way.
        z = diff / se0 if se0 > 0 else 0.0
        p_value = float(2 * norm.sf(abs(z)))
    n_total = n_baseline + n_candidate
    pooled_rate = (correct_baseline + correct_candidate) / n_total if n_total else 0.5
    required = _required_per_arm(pooled_rate, plan)
    enough = n_baseline >= required and n_candidate >= required
    if not enough:
        verdict = f"not enough feedback yet: {min(n_baseline, n_candidate)}/{required} per arm"
    else:
        level = f"{(1 - plan.alpha) * 100:g}%"
        interval = f"{level} CI {low * 100:+.1f}…{high * 100:+.1f}, p={p_value:.3g}"
        if p_value < plan.alpha:
            word = "better" if diff > 0 else "worse"
            verdict = f"candidate is {abs(diff) * 100:.1f} points {word} ({interval})"
        else:
            verdict = f"no significant difference: candidate {diff * 100:+.1f} points ({interval})"
    return ABStats(n_baseline, n_candidate, acc_b, acc_c, diff, low, high, z, p_value, required, enough, verdict)


@dataclass(frozen=True)
class RouterState:
    mode: Mode
    percent: float  # candidate share now (canary: after ramp/rollback; ab: 50 or the bandit's)
    step: int  # index into plan.ramp (-1 before the first step)
    rolled_back: str | None  # the reason, once rolled back (then percent is 0 for good)
    requests: int
    guardrails: dict[str, float | None]  # the live value of each guardrail figure (None: not enough samples)
    ab: ABStats | None


def _p99(samples: deque[float]) -> float:
    return float(np.percentile(np.fromiter(samples, dtype=float, count=len(samples)), 99))


class Router:
    """Decides which arm serves each request and judges the canary; one lock guards every counter."""

    def __init__(self, plan: ServePlan, guardrails: Guardrails | None = None, seed: int = 0) -> None:
        self.plan = plan
        self.guardrails = guardrails if guardrails is not None else Guardrails()
        self._lock = threading.Lock()
        self._rng = np.random.default_rng(seed)
        self._requests = 0  # route() calls: the clock events are stamped with
        self._percent, self._step = self._start()
        self._rolled_back: str | None = None
        self._stopped = False
        self._step_served = 0  # candidate-served observations since the last judgement
        self._both = self._agree = 0
        self._candidate_calls = self._candidate_errors = 0
        self._baseline_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._candidate_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._feedback = {"baseline": [0, 0], "candidate": [0, 0]}  # arm -> [correct, total]
        self._recent: deque[bool] = deque(maxlen=SHARE_WINDOW)  # thompson: True where the candidate was picked

    def _start(self) -> tuple[float, int]:
        plan = self.plan
        if plan.mode == "ab":
            return 50.0, -1
        if plan.mode != "canary":
            return 0.0, -1
        percent = plan.percent if plan.percent > 0 else plan.ramp[0]
        return percent, self._step_of(percent)

    def _step_of(self, percent: float) -> int:
        """The last ramp step at or below `percent` (-1: below the first)."""
        below = [i for i, value in enumerate(self.plan.ramp) if value <= percent]
        return below[-1] if below else -1

    def route(self, key: str) -> Decision:
        plan = self.plan
        with self._lock:
            self._requests += 1
            if plan.mode == "single":
                return Decision("baseline", False)
            if plan.mode == "shadow":
                return Decision("baseline", True)
            if plan.mode == "canary":
                if self._rolled_back is None and bucket(key, plan.salt) < self._percent:
                    return Decision("candidate", True)
                # A second, independent draw per request: which baseline-served requests also run the candidate.
                mirror = (self._rolled_back is None
                          and bucket(f"{key}#{self._requests}", plan.salt + ":mirror") < plan.mirror_percent)
                return Decision("baseline", mirror)
            if plan.bandit == "thompson":
                (cb, nb), (cc, nc) = self._feedback["baseline"], self._feedback["candidate"]
                draw_b = self._rng.beta(1 + cb, 1 + nb - cb)
                draw_c = self._rng.beta(1 + cc, 1 + nc - cc)
                pick_candidate = bool(draw_c > draw_b)
                self._recent.append(pick_candidate)
                return Decision("candidate" if pick_candidate else "baseline", False)
            return Decision("candidate" if bucket(key, plan.salt) < 50.0 else "baseline", False)

    def observe(self, obs: Observation) -> list[Event]:
        """Counts what a request produced; in a canary, judges the step every `step_requests` candidate-served
        requests: all guardrails hold (or lack samples) -> the next ramp percent; one breaks -> 0% for good."""
        with self._lock:
            if obs.baseline_label is not None and obs.candidate_label is not None:
                self._both += 1
                self._agree += int(obs.baseline_label == obs.candidate_label)
            if obs.candidate_label is not None or obs.candidate_error:
                self._candidate_calls += 1
                self._candidate_errors += int(obs.candidate_error)
            if obs.baseline_ms is not None:
                self._baseline_ms.append(float(obs.baseline_ms))
            if obs.candidate_ms is not None and not obs.candidate_error:
                self._candidate_ms.append(float(obs.candidate_ms))
            if self.plan.mode != "canary" or self._rolled_back is not None or obs.served != "candidate":
                return []
            self._step_served += 1
            if self._step_served < self.plan.step_requests:
                return []
            served, self._step_served = self._step_served, 0
            return self._judge(served)

    def _judge(self, served: int) -> list[Event]:
        broken = self._broken()
        if broken:
            self._percent, self._rolled_back = 0.0, "; ".join(broken)
            return [Event("rollback", 0.0, self._rolled_back, self._requests)]
        if self._step + 1 >= len(self.plan.ramp):
            return []  # the last step (or no ramp): keep judging, nothing left to raise
        before = self._percent
        self._step += 1
        self._percent = self.plan.ramp[self._step]
        reason = f"{before:g}% → {self._percent:g}% after {served} candidate requests, guardrails hold"
        return [Event("ramp", self._percent, reason, self._requests)]

    def _figures(self) -> dict[str, tuple[float | None, int]]:
        """Each guardrail's live value (None below min_samples) and the number of observations behind it."""
        need = self.guardrails.min_samples
        (cb, nb), (cc, nc) = self._feedback["baseline"], self._feedback["candidate"]
        n_latency = min(len(self._baseline_ms), len(self._candidate_ms))
        figures: dict[str, tuple[float | None, int]] = {
            "agreement": (self._agree / self._both if self._both >= need else None, self._both),
            "error_rate": (self._candidate_errors / self._candidate_calls if self._candidate_calls >= need else None,
                           self._candidate_calls),
            "p99_ratio": (None, n_latency),
            "accuracy_drop": (cb / nb - cc / nc if min(nb, nc) >= need else None, min(nb, nc)),
        }
        if n_latency >= need:
            figures["p99_ratio"] = (_p99(self._candidate_ms) / max(_p99(self._baseline_ms), 1e-9), n_latency)
        return figures

    def _broken(self) -> list[str]:
        g, figures = self.guardrails, self._figures()
        checks = [  # (name, breaks when value is below/above the limit, limit, what the samples are)
            ("agreement", "<", g.min_agreement, "mirrored requests"),
            ("error_rate", ">", g.max_error_rate, "candidate calls"),
            ("p99_ratio", ">", g.max_p99_ratio, "requests per arm"),
            ("accuracy_drop", ">", g.max_accuracy_drop, "feedback labels per arm"),
        ]
        broken = []
        for name, sign, limit, what in checks:
            value, samples = figures[name]
            if value is None or not (value < limit if sign == "<" else value > limit):
                continue
            broken.append(f"{name} {value:.3f} {sign} {limit:g} on {samples} {what}")
        return broken

    def feedback(self, served: Arm, correct: bool) -> list[Event]:
        """Counts a labelled outcome for the arm that served it (A/B stats, the bandit, the canary's accuracy
        guardrail); in A/B mode, returns one "stop" event when both arms first reach the required sample."""
        with self._lock:
            counts = self._feedback[served]
            counts[0] += int(bool(correct))
            counts[1] += 1
            if self.plan.mode != "ab" or self._stopped:
                return []
            stats = self._ab()
            if not stats.enough:
                return []
            self._stopped = True
            return [Event("stop", self._share(), stats.verdict, self._requests)]

    def _ab(self) -> ABStats:
        (cb, nb), (cc, nc) = self._feedback["baseline"], self._feedback["candidate"]
        return ab_stats(cb, nb, cc, nc, self.plan)

    def _share(self) -> float:
        if self.plan.mode == "ab" and self.plan.bandit == "thompson" and self._recent:
            return 100.0 * sum(self._recent) / len(self._recent)
        return self._percent

    def restore(self, events: Sequence[Event]) -> None:
        """After a restart: replays the logged events, so the ramp, a rollback and an A/B stop survive it."""
        with self._lock:
            for event in events:
                if event.kind == "ramp" and self._rolled_back is None:
                    self._percent = event.percent
                    self._step = self._step_of(event.percent)
                elif event.kind == "rollback":
                    self._percent, self._rolled_back = 0.0, event.reason
                elif event.kind == "stop":
                    self._stopped = True
                self._requests = max(self._requests, event.at_request)
            self._step_served = 0

    def state(self) -> RouterState:
        with self._lock:
            figures = {name: value for name, (value, _) in self._figures().items()}
            has_feedback = self._feedback["candidate"][1] > 0
            ab = self._ab() if self.plan.mode == "ab" or has_feedback else None
            return RouterState(self.plan.mode, self._share(), self._step, self._rolled_back, self._requests,
                               figures, ab)
