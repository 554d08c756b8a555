"""Each of the five quadrant labels, from the signs and significance of the accuracy and log-loss deltas."""
from __future__ import annotations

import pytest

from optikit.harness.quadrant import BEST, MISALIGNED, NO_CHANGE, SOME, WORST, quadrant, quadrant_label
from optikit.harness.records import Interval, Quadrant


@pytest.mark.parametrize(("acc", "loss", "expected"), [
    (-0.05, 0.2, "large errors on lots of data (worst case)"),
    (-0.05, -0.1, "small errors on lots of data (misaligned)"),
    (0.03, 0.1, "large errors on some data"),
    (0.03, -0.1, "no/few errors (best case)"),
])
def test_quadrant_label_when_both_deltas_are_significant(acc: float, loss: float, expected: str) -> None:
    assert quadrant_label(acc, loss, True, True) == expected


def test_quadrant_label_is_no_significant_change_when_neither_delta_is() -> None:
    assert quadrant_label(-0.05, 0.2, False, False) == NO_CHANGE == "no significant change"


def test_quadrant_label_uses_signs_when_one_delta_is_significant() -> None:
    assert quadrant_label(0.0, 0.1, False, True) == SOME
    assert quadrant_label(-0.01, -0.01, True, False) == MISALIGNED


def test_quadrant_record_from_significance_deltas() -> None:
    deltas = {"accuracy": Interval.of(-0.1, -0.2, -0.05), "log_loss": Interval.of(0.3, 0.1, 0.5)}
    assert quadrant(deltas) == Quadrant(WORST, accuracy_delta=-0.1, log_loss_delta=0.3)
    assert BEST != WORST
