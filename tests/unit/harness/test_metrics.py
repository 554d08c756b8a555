"""Alignment equals scikit-learn; ECE on a constructed case; flips on a toy pair."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from optikit.harness.metrics import alignment, capability, expected_calibration_error, fidelity
from optikit.harness.records import Flip


def test_alignment_equals_sklearn_on_the_same_predictions() -> None:
    rng = np.random.default_rng(0)
    labels, preds = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    a = alignment(labels, preds, ("a", "b", "c", "d"))
    assert a.accuracy == accuracy_score(labels, preds)
    assert a.f1_macro == pytest.approx(f1_score(labels, preds, average="macro"))
    assert a.f1_weighted == pytest.approx(f1_score(labels, preds, average="weighted"))
    p, r, f, s = precision_recall_fscore_support(labels, preds)
    assert [a.per_class[n].f1 for n in "abcd"] == pytest.approx(list(f))
    assert [a.per_class[n].support for n in "abcd"] == list(s)


def test_ece_on_a_constructed_case() -> None:
    # Four examples at confidence 0.9 (bin 0.8–0.9], three right: |0.75 − 0.9| = 0.15, weight 4/6.
    # Two at confidence 0.6 (bin 0.5–0.6], one right: |0.5 − 0.6| = 0.1, weight 2/6.
    # ECE = 4/6 · 0.15 + 2/6 · 0.1 = 0.1 + 0.0333… = 0.1333…
    probs = np.array([[0.9, 0.1]] * 4 + [[0.6, 0.4]] * 2)
    labels = np.array([0, 0, 0, 1, 0, 1])
    ece, bins = expected_calibration_error(probs, labels)
    assert ece == pytest.approx(0.4 / 3)
    assert (bins[8].low, bins[8].high, bins[8].count, bins[8].accuracy, bins[8].confidence) == (
        pytest.approx(0.8), pytest.approx(0.9), 4, 0.75, pytest.approx(0.9))
    assert bins[5].count == 2 and bins[5].accuracy == 0.5
    assert sum(b.count for b in bins) == 6
    assert capability(labels, probs).ece == pytest.approx(ece)


def test_ece_of_a_perfectly_calibrated_confident_model_is_zero() -> None:
    labels = np.array([0, 1, 2])
    assert expected_calibration_error(np.eye(3)[labels], labels)[0] == 0.0


def test_fidelity_flips_on_a_toy_pair() -> None:
    labels = np.array([0, 1, 2, 0, 1])
    base = np.eye(3)[[0, 1, 0, 1, 2]]  # right, right, wrong, wrong, wrong
    var = np.eye(3)[[0, 2, 2, 2, 0]]  # right, wrong, right, wrong, wrong
    texts = ["a", "b", "c", "d", "e"]
    f = fidelity(labels, base * 0.9 + 0.1 / 3, var * 0.9 + 0.1 / 3, texts)
    assert f.agreement == pytest.approx(0.2)
    assert (f.flips_right_to_wrong, f.flips_wrong_to_right) == (1, 1)
    # rows: baseline prediction, columns: variant prediction
    assert f.flip_matrix == ((1, 0, 1), (0, 0, 2), (1, 0, 0))
    assert f.flipped == (
        Flip(index=1, text="b", label=1, baseline=1, variant=2, kind="right_to_wrong"),
        Flip(index=2, text="c", label=2, baseline=0, variant=2, kind="wrong_to_right"),
        Flip(index=3, text="d", label=0, baseline=1, variant=2, kind="wrong_to_wrong"),
        Flip(index=4, text="e", label=1, baseline=2, variant=0, kind="wrong_to_wrong"),
    )
    assert f.kl_mean > 0


def test_fidelity_to_itself_has_no_flips() -> None:
    probs = np.array([[0.7, 0.3], [0.2, 0.8]])
    f = fidelity(np.array([0, 0]), probs, probs)
    assert f.agreement == 1.0 and f.flipped == () and f.kl_mean == pytest.approx(0.0)
    assert f.flip_matrix == ((1, 0), (0, 1))
