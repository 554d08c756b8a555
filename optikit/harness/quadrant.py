"""Quadrant: where a variant's accuracy and log-loss changes put it, read from their bootstrap intervals."""
from __future__ import annotations

from collections.abc import Mapping

from optikit.harness.records import Interval, Quadrant

WORST = "large errors on lots of data (worst case)"
MISALIGNED = "small errors on lots of data (misaligned)"
SOME = "large errors on some data"
BEST = "no/few errors (best case)"
NO_CHANGE = "no significant change"
LABELS = (WORST, MISALIGNED, SOME, BEST, NO_CHANGE)


def quadrant_label(accuracy_delta: float, log_loss_delta: float, accuracy_significant: bool,
                   log_loss_significant: bool) -> str:
    """Accuracy counts errors, log loss weighs how confident they are; together they say what kind of change it is.

    When only one delta is significant the sign of the other still places the variant: a significant loss
    increase at unchanged accuracy is still larger errors.
    """
    if not (accuracy_significant or log_loss_significant):
        return NO_CHANGE
    down, loss_up = accuracy_delta < 0, log_loss_delta > 0
    if down:
        return WORST if loss_up else MISALIGNED
    return SOME if loss_up else BEST


def quadrant(deltas: Mapping[str, Interval]) -> Quadrant:
    """The `quadrant` record from the `significance.deltas` record."""
    acc, loss = deltas["accuracy"], deltas["log_loss"]
    return Quadrant(quadrant_label(acc.delta, loss.delta, acc.significant, loss.significant), acc.delta, loss.delta)
