"""The routing policy: sticky cohorts, the canary ramp and its guardrails, the A/B test and the bandit."""
from __future__ import annotations

import math
import re
import threading

import pytest

from optikit.errors import ConfigError
from optikit.serve.policy import (
    Decision,
    Event,
    Guardrails,
    Observation,
    Router,
    ServePlan,
    ab_stats,
    bucket,
)

KEYS = [f"user-{i}" for i in range(10_000)]


def candidate_served(label: int = 1, ms: float = 10.0) -> Observation:
    return Observation("candidate", baseline_label=label, candidate_label=label, baseline_ms=ms, candidate_ms=ms)


def canary(ramp: tuple[float, ...] = (1, 5, 25), step: int = 50, **guardrails: float) -> Router:
    return Router(ServePlan(mode="canary", ramp=ramp, step_requests=step), Guardrails(**guardrails))


def drive(router: Router, observations: list[Observation]) -> list[Event]:
    events = []
    for obs in observations:
        events += router.observe(obs)
    return events


# --- sticky cohorts -----------------------------------------------------------------------------------------------

def test_bucket_is_stable_and_in_range():
    positions = [bucket(k) for k in KEYS[:500]]
    assert positions == [bucket(k) for k in KEYS[:500]]
    assert all(0.0 <= p < 100.0 for p in positions)
    assert bucket("user-1", salt="other") != bucket("user-1")


def test_canary_key_always_lands_on_the_same_arm_across_calls_and_routers():
    plan = ServePlan(mode="canary", percent=20)
    first, second = Router(plan), Router(plan)
    arms = {k: first.route(k).served for k in KEYS[:2000]}
    for _ in range(3):
        assert all(first.route(k).served == arm for k, arm in arms.items())
    assert all(second.route(k).served == arm for k, arm in arms.items())


@pytest.mark.parametrize("percent", [1, 5, 25, 50])
def test_canary_serves_about_percent_of_keys_from_the_candidate(percent):
    router = Router(ServePlan(mode="canary", percent=percent))
    share = sum(router.route(k).served == "candidate" for k in KEYS) / len(KEYS)
    p = percent / 100
    # Five binomial standard deviations: a loose bound that a wrong hash (or a wrong comparison) still breaks.
    assert abs(share - p) <= 5 * math.sqrt(p * (1 - p) / len(KEYS))


def test_canary_cohort_only_grows_when_the_percent_rises():
    small = {k for k in KEYS if Router(ServePlan(mode="canary", percent=5)).route(k).served == "candidate"}
    large = {k for k in KEYS if Router(ServePlan(mode="canary", percent=25)).route(k).served == "candidate"}
    assert small and small < large


def test_canary_candidate_requests_mirror_the_baseline_and_about_mirror_percent_of_the_rest_mirror():
    router = Router(ServePlan(mode="canary", percent=10, mirror_percent=20))
    decisions = [router.route(k) for k in KEYS]
    assert all(d.mirror for d in decisions if d.served == "candidate")
    baseline = [d for d in decisions if d.served == "baseline"]
    share = sum(d.mirror for d in baseline) / len(baseline)
    assert abs(share - 0.2) <= 5 * math.sqrt(0.2 * 0.8 / len(baseline))


def test_shadow_always_serves_the_baseline_with_a_mirror():
    router = Router(ServePlan(mode="shadow"))
    assert {router.route(k) for k in KEYS[:1000]} == {Decision("baseline", True)}


def test_single_never_mirrors():
    router = Router(ServePlan(mode="single"))
    assert {router.route(k) for k in KEYS[:1000]} == {Decision("baseline", False)}


def test_ab_is_a_sticky_half_split_without_mirroring():
    router = Router(ServePlan(mode="ab"))
    arms = {k: router.route(k) for k in KEYS}
    assert all(router.route(k) == d for k, d in list(arms.items())[:1000])
    assert not any(d.mirror for d in arms.values())
    share = sum(d.served == "candidate" for d in arms.values()) / len(KEYS)
    assert abs(share - 0.5) <= 5 * math.sqrt(0.25 / len(KEYS))
    assert router.state().percent == 50


# --- canary ramp and guardrails -----------------------------------------------------------------------------------

def test_canary_ramp_advances_in_order_after_step_requests_and_stops_at_the_last():
    router = canary(ramp=(1, 5, 25), step=50)
    assert router.state().percent == 1 and router.state().step == 0
    percents = []
    for _ in range(5):
        assert drive(router, [candidate_served()] * 49) == []  # one short of a step: nothing judged yet
        events = router.observe(candidate_served())
        percents += [e.percent for e in events if e.kind == "ramp"]
    assert percents == [5, 25]
    state = router.state()
    assert state.percent == 25 and state.step == 2 and state.rolled_back is None
    assert state.guardrails["agreement"] == 1.0


def test_canary_ramp_counts_only_candidate_served_requests():
    router = canary(step=10)
    baseline_served = Observation("baseline", 1, 1, 5.0, 5.0)
    assert drive(router, [baseline_served] * 100) == []
    assert router.state().percent == 1


def test_canary_starting_percent_between_ramp_steps_continues_above_it():
    router = Router(ServePlan(mode="canary", percent=10, ramp=(1, 5, 25, 50), step_requests=5))
    assert router.state().step == 1
    events = drive(router, [candidate_served()] * 5)
    assert [e.percent for e in events] == [25]


def test_disagreeing_candidate_is_rolled_back_to_zero_for_good_with_the_agreement_in_the_reason():
    router = canary(ramp=(50, 100), step=40, min_agreement=0.9, min_samples=30)
    disagreeing = Observation("candidate", baseline_label=1, candidate_label=2, baseline_ms=5.0, candidate_ms=5.0)
    events = drive(router, [disagreeing] * 40)
    assert [e.kind for e in events] == ["rollback"]
    reason = events[0].reason
    assert "agreement" in reason and "0.000" in reason and "0.9" in reason
    assert events[0].percent == 0
    state = router.state()
    assert state.percent == 0 and state.rolled_back == reason
    assert all(router.route(k).served == "baseline" for k in KEYS[:2000])
    assert drive(router, [candidate_served()] * 200) == []  # no second rollback, no ramp
    assert "rolled back to 0%" in events[0].describe()


def test_error_rate_guardrail_rolls_back():
    router = canary(step=40, max_error_rate=0.02, min_samples=30)
    failing = Observation("candidate", 1, None, 5.0, None, candidate_error=True)
    events = drive(router, [candidate_served()] * 30 + [failing] * 10)
    assert [e.kind for e in events] == ["rollback"]
    assert "error_rate" in events[0].reason and "0.250" in events[0].reason and "0.02" in events[0].reason


def test_p99_ratio_guardrail_rolls_back():
    router = canary(step=40, max_p99_ratio=2.0, min_samples=30)
    slow = Observation("candidate", 1, 1, baseline_ms=10.0, candidate_ms=50.0)
    events = drive(router, [slow] * 40)
    assert [e.kind for e in events] == ["rollback"]
    assert "p99_ratio" in events[0].reason and "5.000" in events[0].reason and "2" in events[0].reason


def test_feedback_accuracy_guardrail_rolls_back_at_the_next_judgement():
    router = canary(step=40, max_accuracy_drop=0.05, min_samples=30)
    for _ in range(30):
        router.feedback("baseline", True)
        router.feedback("candidate", False)
    assert router.state().guardrails["accuracy_drop"] == 1.0
    events = drive(router, [candidate_served()] * 40)
    assert [e.kind for e in events] == ["rollback"] and "accuracy_drop" in events[0].reason


def test_guardrail_with_fewer_than_min_samples_does_not_trigger():
    router = canary(ramp=(1, 5), step=20, min_samples=30)
    bad = Observation("candidate", 1, 2, baseline_ms=1.0, candidate_ms=100.0)
    events = drive(router, [bad] * 20)
    assert [e.kind for e in events] == ["ramp"]
    state = router.state()
    assert state.guardrails["agreement"] is None and state.guardrails["p99_ratio"] is None


def test_restore_reproduces_the_ramp_after_a_restart():
    router = canary(ramp=(1, 5, 25), step=10)
    events = drive(router, [candidate_served()] * 10)
    restarted = canary(ramp=(1, 5, 25), step=10)
    restarted.restore(events)
    assert restarted.state().percent == 5 and restarted.state().step == 1
    more = drive(restarted, [candidate_served()] * 10)
    assert [e.percent for e in more] == [25]
    assert more[0].at_request >= events[0].at_request


def test_restore_keeps_a_rollback():
    rolled = [Event("ramp", 5, "1% → 5%", 100), Event("rollback", 0, "agreement 0.500 < 0.9 on 40 mirrored requests", 200)]
    router = canary()
    router.restore(rolled)
    state = router.state()
    assert state.percent == 0 and state.rolled_back == rolled[1].reason and state.requests == 200
    assert all(router.route(k).served == "baseline" for k in KEYS[:2000])


def test_router_counts_every_request_under_concurrent_use():
    router = Router(ServePlan(mode="canary", percent=50, step_requests=10**9))

    def work(offset: int) -> None:
        for i in range(500):
            router.route(f"user-{offset + i}")
            router.observe(candidate_served())

    threads = [threading.Thread(target=work, args=(n * 500,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert router.state().requests == 4000 and router.state().guardrails["agreement"] == 1.0


# --- A/B statistics -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("counts", [(80, 100, 60, 100), (412, 500, 430, 510), (50, 90, 51, 85)])
def test_ab_stats_matches_scipy_chi_square_and_a_hand_computed_interval(counts):
    from scipy.stats import chi2_contingency, norm

    cb, nb, cc, nc = counts
    stats = ab_stats(cb, nb, cc, nc, ServePlan(mode="ab"))
    chi2, p, _, _ = chi2_contingency([[cb, nb - cb], [cc, nc - cc]], correction=False)
    assert stats.p_value == pytest.approx(p, rel=1e-9)
    assert stats.z**2 == pytest.approx(chi2, rel=1e-9)
    pb, pc = cb / nb, cc / nc
    half = norm.ppf(0.975) * math.sqrt(pb * (1 - pb) / nb + pc * (1 - pc) / nc)
    assert stats.difference == pytest.approx(pc - pb)
    assert (stats.low, stats.high) == pytest.approx((pc - pb - half, pc - pb + half))
    assert (stats.accuracy_baseline, stats.accuracy_candidate) == pytest.approx((pb, pc))


@pytest.mark.parametrize("pooled_counts,min_effect,alpha,power", [((150, 200), 0.05, 0.05, 0.8), ((90, 200), 0.1, 0.01, 0.9)])
def test_required_per_arm_is_the_textbook_two_proportion_sample_size(pooled_counts, min_effect, alpha, power):
    from scipy.stats import norm

    correct, total = pooled_counts
    plan = ServePlan(mode="ab", min_effect=min_effect, alpha=alpha, power=power)
    stats = ab_stats(correct // 2, total // 2, correct - correct // 2, total - total // 2, plan)
    p_bar = correct / total
    p1, p2 = p_bar - min_effect / 2, p_bar + min_effect / 2
    n = (norm.ppf(1 - alpha / 2) * math.sqrt(2 * p_bar * (1 - p_bar))
         + norm.ppf(power) * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))) ** 2 / min_effect**2
    assert stats.required_per_arm == math.ceil(n)


def test_ab_enough_and_verdict_flip_when_both_arms_reach_the_required_count():
    plan = ServePlan(mode="ab", min_effect=0.2)
    seen = set()
    for n in range(10, 300, 10):
        stats = ab_stats(9 * n // 10, n, n // 2, n, plan)  # 90% vs 50% right: a pooled rate of 70% at every n
        assert stats.enough == (n >= stats.required_per_arm)
        if stats.enough:
            assert re.fullmatch(r"candidate is 40\.0 points worse \(95% CI -\d+\.\d…-\d+\.\d, p=.+\)", stats.verdict)
        else:
            assert stats.verdict == f"not enough feedback yet: {n}/{stats.required_per_arm} per arm"
        seen.add(stats.enough)
    assert seen == {False, True}
    one_arm_short = ab_stats(900, 1000, 5, 10, plan)
    assert not one_arm_short.enough and one_arm_short.verdict.startswith("not enough feedback yet: 10/")
    same = ab_stats(700, 1000, 700, 1000, plan)
    assert same.enough and same.verdict.startswith("no significant difference: candidate +0.0 points")


def test_ab_stats_without_feedback_are_nan_and_not_enough():
    stats = ab_stats(0, 0, 0, 0, ServePlan(mode="ab"))
    assert math.isnan(stats.accuracy_baseline) and math.isnan(stats.p_value) and not stats.enough


def test_ab_router_emits_one_stop_event_when_feedback_is_enough():
    router = Router(ServePlan(mode="ab", min_effect=0.3))
    events = []
    for i in range(200):
        events += router.feedback("baseline", i % 10 < 9)
        events += router.feedback("candidate", i % 10 < 5)
    assert [e.kind for e in events] == ["stop"] and "worse" in events[0].reason
    state = router.state()
    assert state.ab is not None and state.ab.n_baseline == 200 and state.ab.enough


def test_thompson_moves_traffic_to_the_clearly_better_arm_deterministically():
    def run(seed: int) -> list[str]:
        router = Router(ServePlan(mode="ab", bandit="thompson"), seed=seed)
        served = []
        for i in range(600):
            arm = router.route(f"user-{i}").served
            served.append(arm)
            # The candidate is right 90% of the time, the baseline 40%.
            router.feedback(arm, (i % 10) < (9 if arm == "candidate" else 4))
        return served

    served = run(seed=3)
    assert served == run(seed=3)
    assert served[-200:].count("candidate") >= 180


# --- validation ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("make,words", [
    (lambda: ServePlan(mode="canary", percent=120), "percent"),
    (lambda: ServePlan(mode="canary", ramp=(5, 1)), "not increasing"),
    (lambda: ServePlan(mode="canary", ramp=(0, 5)), "outside"),
    (lambda: ServePlan(mode="canary", percent=5, step_requests=0), "step_requests"),
    (lambda: ServePlan(mode="canary"), "--percent"),
    (lambda: ServePlan(mode="ab", alpha=0), "alpha"),
    (lambda: ServePlan(mode="ab", bandit="ucb"), "bandit"),
    (lambda: ServePlan(mode="blue-green"), "mode"),
    (lambda: Guardrails(min_agreement=1.5), "min_agreement"),
    (lambda: Guardrails(max_p99_ratio=0), "max_p99_ratio"),
    (lambda: Guardrails(min_samples=0), "min_samples"),
])
def test_bad_plans_and_guardrails_are_one_line_config_errors(make, words):
    with pytest.raises(ConfigError) as info:
        make()
    message = str(info.value)
    assert words in message and "\n" not in message
