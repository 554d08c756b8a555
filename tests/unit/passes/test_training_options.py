"""The passes that train share one set of training options, one validator and one distillation loss."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from optikit.errors import ConfigError
from optikit.passes._training import DistillationOptions, DistillLoss, TrainingOptions, format_defaults
from optikit.passes.base import make_pass
from optikit.passes.distill import DistillConfig
from optikit.passes.prune_structured import StructuredPruneConfig
from optikit.passes.prune_unstructured import UnstructuredPruneConfig

TRAINING_PASSES = ("distill", "prune-structured", "prune-unstructured")


def test_every_pass_that_trains_takes_the_shared_options() -> None:
    for config in (DistillConfig, StructuredPruneConfig, UnstructuredPruneConfig):
        assert issubclass(config, TrainingOptions)
        assert {"learning_rate", "batch_size"} <= {f.name for f in dataclasses.fields(config)}
    assert issubclass(DistillConfig, DistillationOptions) and issubclass(StructuredPruneConfig, DistillationOptions)


@pytest.mark.parametrize("name", TRAINING_PASSES)
@pytest.mark.parametrize(("option", "message"), [("learning_rate=0", "learning_rate must be > 0"),
                                                 ("batch_size=0", "batch_size must be ≥ 1")])
def test_shared_options_are_validated_once_with_one_message(name: str, option: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_pass(f"{name}:{option}")


@pytest.mark.parametrize(("spec", "message"), [
    ("distill:epochs=0", "epochs must be ≥ 1"), ("prune-structured:recover_epochs=-1", "recover_epochs must be ≥ 0"),
    ("prune-unstructured:finetune_epochs=-1", "finetune_epochs must be ≥ 0"),
    ("distill:alpha=2", r"alpha must be in \[0, 1\]"), ("prune-structured:alpha=2", r"alpha must be in \[0, 1\]"),
    ("distill:temperature=0", "temperature must be > 0"), ("prune-structured:temperature=0", "temperature must be > 0"),
])
def test_epoch_counts_and_distillation_terms_share_the_validator(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_pass(spec)


def test_cli_names_and_defaults_are_unchanged() -> None:
    assert make_pass("prune-structured").config.batch_size == 32
    assert (make_pass("prune-structured").config.temperature, make_pass("prune-structured").config.alpha) == (2.0, 0.5)
    assert make_pass("prune-unstructured:finetune_epochs=1,learning_rate=0.01").config.learning_rate == 0.01
    c = make_pass("distill:student=cnn-small,learning_rate=0.01,batch_size=16").config
    assert (c.learning_rate, c.batch_size, c.temperature, c.alpha) == (0.01, 16, 4.0, 0.7)


def test_train_config_puts_the_pass_options_over_the_format_defaults() -> None:
    base = format_defaults("hf")
    assert base.learning_rate == 5e-5 and format_defaults("torch").learning_rate == 1e-3
    config = UnstructuredPruneConfig(finetune_epochs=3, learning_rate=None, batch_size=8)
    tc = config.train_config(base, config.finetune_epochs, seed=7)
    assert (tc.epochs, tc.learning_rate, tc.batch_size, tc.seed) == (3, 5e-5, 8, 7)


def test_one_distillation_loss_serves_distill_and_prune_recovery() -> None:
    import inspect

    import torch
    import torch.nn.functional as F

    import optikit.passes.distill as distill
    import optikit.passes.prune_structured as prune

    assert distill.DistillLoss is prune.DistillLoss is DistillLoss
    assert "kl_div" not in inspect.getsource(distill) + inspect.getsource(prune)

    torch.manual_seed(0)
    teacher = torch.nn.Linear(4, 3).eval()
    x, labels = torch.randn(8, 4), torch.randint(0, 3, (8,))
    student_logits = torch.randn(8, 3)
    feeds = {"pixel_values": x}
    loss = DistillLoss(teacher, temperature=2.0, alpha=0.25)
    with torch.no_grad():
        t = teacher(x)
    kl = F.kl_div(F.log_softmax(student_logits / 2, -1), F.softmax(t / 2, -1), reduction="batchmean") * 4
    expected = 0.25 * kl + 0.75 * F.cross_entropy(student_logits, labels)
    assert torch.allclose(loss(student_logits, labels, feeds, np.arange(8)), expected, atol=1e-6)
    cached = DistillLoss(teacher, 2.0, 0.25, cache=t)
    assert torch.allclose(cached(student_logits, labels, feeds, np.arange(8)), expected, atol=1e-6)
