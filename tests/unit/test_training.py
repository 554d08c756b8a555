"""Specification of the training loop's class weighting: what macro-F1 asks of a loss on imbalanced data."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from optikit.data import load_digits
from optikit.errors import ConfigError
from optikit.models import Encoder
from optikit.training import TrainConfig, balanced_class_weights, fit


def test_balanced_weights_by_hand():
    # 6 of class 0, 2 of class 1, none of class 2: n / (classes × count) = 8/18, 8/6, and 0 for the absent class.
    weights = balanced_class_weights(np.array([0, 0, 0, 0, 0, 0, 1, 1]), 3)
    assert weights == pytest.approx([8 / 18, 8 / 6, 0.0])


def test_unknown_class_weight_is_refused():
    with pytest.raises(ConfigError, match="class_weight must be 'none' or 'balanced'"):
        TrainConfig(class_weight="inverse")


class BiasOnly(nn.Module):
    """Logits that ignore the input: training can only learn the class prior, which makes the optimum known."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(x.shape[0], -1)


@pytest.mark.parametrize(("class_weight", "odds"), [("none", 9.0), ("balanced", 1.0)])
def test_balanced_loss_learns_equal_odds_where_plain_loss_learns_the_prior(digits_teacher, class_weight, odds):
    # 90 zeros and 10 ones: plain cross-entropy is minimised at p(0)/p(1) = 9, the balanced one at 1.
    digits = load_digits()
    idx = np.concatenate([np.flatnonzero(digits.labels == 0)[:90], np.flatnonzero(digits.labels == 1)[:10]])
    model = BiasOnly(len(digits.label_names))
    fit(model, digits.take(idx), Encoder(digits_teacher),
        TrainConfig(epochs=150, learning_rate=0.1, batch_size=100, class_weight=class_weight))
    learned = float(torch.exp(model.bias[0] - model.bias[1]).detach())
    assert learned == pytest.approx(odds, rel=0.15)
