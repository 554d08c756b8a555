"""Specification of the training loop: class weighting (what macro-F1 asks of a loss on imbalanced data), and the
guard that fails a run which diverged or learnt nothing."""
import re

import numpy as np
import pytest
import torch
import torch.nn as nn

from optikit.data import load_digits
from optikit.errors import ConfigError, TrainingError
from optikit.models import Encoder
from optikit.training import TrainConfig, TrainingGuard, balanced_class_weights, fit


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


# The training guard (issue 12): what a run made is checked before anyone can save it.

class LinearWithSpare(nn.Module):
    """A linear digits classifier plus a parameter its forward never reads: training cannot repair what it holds."""

    def __init__(self, classes: int, spare: float) -> None:
        super().__init__()
        self.linear = nn.Linear(64, classes)
        self.spare = nn.Parameter(torch.full((3,), spare))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


def _digits_halves():
    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits))
    return digits, digits.take(order[:600]), digits.take(order[600:900])


def test_a_weight_that_is_not_finite_after_training_fails_the_run(digits_teacher):
    digits, train, validation = _digits_halves()
    model = LinearWithSpare(len(digits.label_names), spare=float("nan"))
    with pytest.raises(TrainingError, match=r"^digits diverged: weight spare holds 3 non-finite values after training; "
                                            r"lower learning_rate \(got 0\.01\)$"):
        fit(model, train, Encoder(digits_teacher), TrainConfig(epochs=2, learning_rate=0.01),
            validation=validation, guard=TrainingGuard("digits"))


def test_a_model_that_learns_passes_the_guard(digits_teacher):
    digits, train, validation = _digits_halves()
    model = LinearWithSpare(len(digits.label_names), spare=0.0)
    history = fit(model, train, Encoder(digits_teacher), TrainConfig(epochs=2, learning_rate=0.01),
                  validation=validation, guard=TrainingGuard("digits"))
    assert history[-1]["val_accuracy"] > 0.5


def test_a_model_that_only_learns_the_class_prior_is_at_chance(digits_teacher):
    # BiasOnly can only learn to answer the most common class: its validation accuracy is that class's share.
    digits, train, validation = _digits_halves()
    with pytest.raises(TrainingError, match=r"^digits learnt nothing: validation accuracy 0\.\d+ is at chance \(always "
                                            r"answering the most common class scores 0\.\d+, training loss "):
        fit(BiasOnly(len(digits.label_names)), train, Encoder(digits_teacher),
            TrainConfig(epochs=2, learning_rate=0.1), validation=validation, guard=TrainingGuard("digits"))


@pytest.mark.parametrize(("accuracy", "refused"), [(0.10, True), (0.14, True), (0.15, False), (0.9, False)])
def test_chance_is_skill_over_the_majority_class_rate(accuracy, refused):
    labels = np.repeat(np.arange(10), 18)  # the digits validation split: 180 examples, 10 even classes
    guard, config = TrainingGuard("t"), TrainConfig()
    if refused:
        with pytest.raises(TrainingError, match="at chance"):
            guard.check_accuracy(accuracy, labels, config, first_loss=2.3, last_loss=2.3)
    else:
        guard.check_accuracy(accuracy, labels, config, first_loss=2.3, last_loss=2.3)
    guard.check_accuracy(0.5, np.zeros(30, dtype=np.int64), config, 2.3, 2.3)  # one class: nothing to judge
    guard.check_accuracy(0.4, np.array([0, 0, 1, 1, 2]), config, 2.3, 2.3)  # 5 examples: too few for a verdict


@pytest.mark.parametrize(("options", "message"), [
    ({"learning_rate": float("inf")}, "learning_rate must be > 0 and finite, got inf"),
    ({"learning_rate": float("nan")}, "learning_rate must be > 0 and finite, got nan"),
    ({"epochs": 10_000}, r"epochs must be in \[0, 1000\], got 10000"),
    ({"weight_decay": float("nan")}, "weight_decay must be ≥ 0 and finite, got nan"),
])
def test_train_config_refuses_values_that_cannot_train(options, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**options)


def _diverging_teacher() -> str:
    """The tests' fast digits recipe with the learning rate typed a million times too high."""
    from tests.conftest import FAST_DIGITS_RECIPE

    return (FAST_DIGITS_RECIPE.replace('name = "digits-cnn-fast"', 'name = "digits-cnn-diverging"')
            .replace("epochs = 6", "epochs = 1").replace("learning_rate = 0.005", "learning_rate = 1e6"))


def test_a_diverging_teacher_names_its_recipe_and_caches_nothing(tmp_path):
    from optikit.teach import teach

    recipe = tmp_path / "diverging.toml"
    recipe.write_text(_diverging_teacher())
    with pytest.raises(TrainingError, match=rf"^teacher digits-cnn-diverging (diverged|learnt nothing): .*; .*lower "
                                            rf"\[train\] learning_rate in {re.escape(str(recipe))} \(got 1e\+06\)$"):
        teach(str(recipe), cache=tmp_path / "teachers")
    assert not any((tmp_path / "teachers").iterdir())
