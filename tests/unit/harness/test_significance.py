"""Paired bootstrap, McNemar and the speedup interval against values computed by hand or by scikit-learn."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, brier_score_loss, f1_score, log_loss

from optikit.harness.metrics import expected_calibration_error
from optikit.harness.records import Interval, McNemar
from optikit.harness.significance import (
    METRICS,
    SignificanceConfig,
    bootstrap_indices,
    mcnemar,
    mcnemar_exact_p,
    paired_bootstrap,
    point_metrics,
    ratio_interval,
    significance,
    speedup_verdict,
)


def _probs(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    logits = rng.normal(size=(n, k)) * 2
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _reference(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    preds, k = probs.argmax(1), probs.shape[1]
    return {"accuracy": accuracy_score(labels, preds),
            "f1_macro": f1_score(labels, preds, labels=list(range(k)), average="macro", zero_division=0),
            "f1_weighted": f1_score(labels, preds, labels=list(range(k)), average="weighted", zero_division=0),
            "log_loss": log_loss(labels, probs, labels=list(range(k))),
            "brier": float(np.mean(np.sum((probs - np.eye(k)[labels]) ** 2, axis=1))),
            "ece": expected_calibration_error(probs, labels)[0]}


def test_mcnemar_exact_p_matches_the_binomial_by_hand() -> None:
    # b=1, c=9: P(X ≤ 1 | n=10, ½) = 11/1024, two-sided 22/1024.
    assert mcnemar_exact_p(1, 9) == pytest.approx(0.021484375, abs=1e-12)
    assert mcnemar_exact_p(9, 1) == pytest.approx(0.021484375, abs=1e-12)
    assert mcnemar_exact_p(0, 0) == 1.0
    assert mcnemar_exact_p(5, 5) == pytest.approx(1.0)


def test_mcnemar_counts_discordant_pairs() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2])
    base = np.array([0, 0, 1, 0, 0, 2])  # right, right, right, wrong, wrong, right
    var = np.array([0, 1, 1, 1, 2, 1])  # right, wrong, right, right, right, wrong
    assert mcnemar(labels, base, var) == McNemar(b=2, c=2, p_value=pytest.approx(1.0))


def test_point_metrics_equal_sklearn() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 300)
    probs = _probs(rng, 300, 4)
    ours, ref = point_metrics(labels, probs), _reference(labels, probs)
    for m in METRICS:
        assert ours[m] == pytest.approx(ref[m], abs=1e-9), m
    binary = _probs(rng, 300, 2)
    y = rng.integers(0, 2, 300)
    # Multi-class Brier (sum over classes) is twice sklearn's binary Brier on the positive class.
    assert point_metrics(y, binary)["brier"] == pytest.approx(2 * brier_score_loss(y, binary[:, 1]))


def test_paired_bootstrap_equals_a_loop_over_the_same_resamples() -> None:
    rng = np.random.default_rng(1)
    n, k = 40, 3
    labels = rng.integers(0, k, n)
    base, var = _probs(rng, n, k), _probs(rng, n, k)
    config = SignificanceConfig(resamples=100, seed=7)
    fast = paired_bootstrap(labels, base, var, config)
    deltas = {m: [] for m in METRICS}
    for idx in bootstrap_indices(n, config.resamples, config.seed):
        b, v = _reference(labels[idx], base[idx]), _reference(labels[idx], var[idx])
        for m in METRICS:
            deltas[m].append(v[m] - b[m])
    full_b, full_v = _reference(labels, base), _reference(labels, var)
    for m in METRICS:
        low, high = np.percentile(deltas[m], [2.5, 97.5])
        assert fast[m].delta == pytest.approx(full_v[m] - full_b[m], abs=1e-9), m
        assert fast[m].low == pytest.approx(low, abs=1e-9), m
        assert fast[m].high == pytest.approx(high, abs=1e-9), m


def test_paired_bootstrap_of_identical_models_is_zero_and_not_significant() -> None:
    rng = np.random.default_rng(2)
    labels, probs = rng.integers(0, 3, 50), _probs(rng, 50, 3)
    for d in paired_bootstrap(labels, probs, probs, SignificanceConfig(resamples=100)).values():
        assert (d.delta, d.low, d.high, d.significant) == (0.0, 0.0, 0.0, False)


def test_paired_bootstrap_flags_a_clear_improvement() -> None:
    labels = np.repeat([0, 1], 100)
    wrong = np.tile([[0.3, 0.7], [0.7, 0.3]], (1, 1))[labels]  # confidently wrong everywhere
    right = np.eye(2)[labels] * 0.8 + 0.1  # 0.9 on the truth
    d = paired_bootstrap(labels, wrong, right, SignificanceConfig(resamples=100))
    assert d["accuracy"] == Interval(delta=1.0, low=1.0, high=1.0, significant=True)
    assert d["log_loss"].high < 0 and d["log_loss"].significant


def test_significance_records_seed_and_resamples() -> None:
    rng = np.random.default_rng(3)
    labels, a, b = rng.integers(0, 3, 40), _probs(rng, 40, 3), _probs(rng, 40, 3)
    rec = significance(labels, a, b, SignificanceConfig(resamples=150, seed=11))
    assert rec.seed == 11 and rec.resamples == 150 and set(rec.deltas) == set(METRICS)
    assert rec == significance(labels, a, b, SignificanceConfig(resamples=150, seed=11))  # seeded: reproducible


def test_ratio_interval_of_a_constant_ratio_is_that_ratio() -> None:
    base = np.array([2.0, 4.0, 6.0, 8.0])
    assert ratio_interval(base, base / 2) == (2.0, 2.0, 2.0)
    assert speedup_verdict(1.8, 2.2) == "faster"
    assert speedup_verdict(0.5, 0.9) == "slower"
    assert speedup_verdict(0.9, 1.1) == "no measurable difference"


def test_ratio_interval_holds_one_for_noise_around_equal_times() -> None:
    rng = np.random.default_rng(0)
    a, b = 1 + rng.normal(0, 0.05, 40), 1 + rng.normal(0, 0.05, 40)
    ratio, low, high = ratio_interval(a, b)
    assert low < 1.0 < high and low <= ratio <= high
