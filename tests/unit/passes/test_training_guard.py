"""Every pass that trains checks what it made: a diverged or chance-level model fails the pass in one line naming
the option to change, and nothing is cached (issue 12)."""
from __future__ import annotations

from pathlib import Path

import pytest

from optikit.errors import ConfigError, TrainingError
from optikit.passes.base import PassContext, make_pass

TRAINING_PASSES = ("distill", "prune-structured", "prune-unstructured")
# One spec per loop that trains inside a pass, with the smallest run that still trains.
DIVERGING = [
    ("distill:student=cnn-small,epochs=2,learning_rate=1e6", r"distill diverged"),
    ("prune-structured:amount=0.5,recover=finetune,recover_epochs=1,learning_rate=1e6",
     r"prune-structured recover=finetune diverged"),
    ("prune-structured:amount=0.5,recover=distill,recover_epochs=1,learning_rate=1e6",
     r"prune-structured recover=distill diverged"),
    ("prune-unstructured:amount=0.5,finetune_epochs=1,learning_rate=1e6", r"prune-unstructured finetune diverged"),
]


def _nothing_cached(workdir: Path) -> bool:
    """No variant, and no half-written `.partial` folder either."""
    return not workdir.exists() or not any(workdir.iterdir())


def test_distill_with_a_learning_rate_of_1e6_fails_in_one_line_and_caches_nothing(digits_teacher, tmp_path):
    workdir = tmp_path / "variants"
    with pytest.raises(TrainingError) as info:
        make_pass("distill:student=cnn-small,epochs=2,learning_rate=1e6").run(digits_teacher, PassContext(workdir))
    assert str(info.value) == "distill diverged: loss became nan at epoch 1 step 3; lower learning_rate (got 1e+06)"
    assert _nothing_cached(workdir)


@pytest.mark.parametrize(("spec", "who"), DIVERGING[1:])
def test_every_pass_that_trains_fails_a_diverged_run_and_caches_nothing(digits_teacher, tmp_path, spec, who):
    workdir = tmp_path / "variants"
    with pytest.raises(TrainingError, match=rf"^{who}: .*; lower learning_rate \(got 1e\+06\)$") as info:
        make_pass(spec).run(digits_teacher, PassContext(workdir))
    assert "\n" not in str(info.value)
    assert _nothing_cached(workdir)


def test_a_learning_rate_typed_1e4_that_stays_finite_is_caught_at_chance(digits_teacher, tmp_path):
    # The typo: losses stay finite, but the student answers one class (validation accuracy 0.1).
    workdir = tmp_path / "variants"
    with pytest.raises(TrainingError, match=r"^distill learnt nothing: validation accuracy 0\.100 is at chance .*; "
                                            r"the learning rate is too high: lower learning_rate \(got 10000\)$"):
        make_pass("distill:student=cnn-small,epochs=2,learning_rate=1e4").run(digits_teacher, PassContext(workdir))
    assert _nothing_cached(workdir)


def test_a_run_too_short_to_learn_anything_is_caught_naming_epochs(digits_teacher, tmp_path):
    # One epoch of cnn-small at its recipe's rate leaves the student answering one class: not a model to ship.
    workdir = tmp_path / "variants"
    with pytest.raises(TrainingError, match=r"^distill learnt nothing: .*; training is too short: raise epochs "
                                            r"\(got 1\) or learning_rate \(got 0\.005\)$"):
        make_pass("distill:student=cnn-small,epochs=1").run(digits_teacher, PassContext(workdir))
    assert _nothing_cached(workdir)


def test_a_distillation_that_learns_passes_the_guard(digits_teacher, tmp_path):
    student = make_pass("distill:student=cnn-small,epochs=1,learning_rate=0.02,batch_size=16").run(
        digits_teacher, PassContext(tmp_path / "variants"))
    assert student.report["val_accuracy"] > 0.5


@pytest.mark.parametrize("name", TRAINING_PASSES)
@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_a_learning_rate_that_is_not_finite_is_refused_at_construction(name, value):
    with pytest.raises(ConfigError, match=rf"learning_rate must be > 0 and finite, got {value}:"):
        make_pass(f"{name}:learning_rate={value}")


@pytest.mark.parametrize(("spec", "message"), [
    ("distill:epochs=100000", "epochs must be ≥ 1 and ≤ 1000, got 100000"),
    ("prune-structured:recover_epochs=5000", "recover_epochs must be ≥ 0 and ≤ 1000, got 5000"),
    ("prune-unstructured:finetune_epochs=5000", "finetune_epochs must be ≥ 0 and ≤ 1000, got 5000"),
    ("distill:temperature=inf", "temperature must be > 0 and finite, got inf"),
    ("prune-structured:temperature=nan", "temperature must be > 0 and finite, got nan"),
    ("distill:alpha=nan", r"alpha must be in \[0, 1\]"),
    ("distill:hidden_weight=inf", "hidden_weight must be ≥ 0 and finite, got inf"),
])
def test_training_options_out_of_bounds_are_refused_before_any_work(spec, message):
    with pytest.raises(ConfigError, match=message):
        make_pass(spec)


def test_cli_compress_with_a_diverging_distill_exits_2_with_one_line(digits_teacher, tmp_path, capsys):
    from optikit.cli import main

    with pytest.raises(SystemExit) as info:
        main(["compress", str(digits_teacher.path), "--pass", "distill:student=cnn-small,epochs=2,learning_rate=1e6",
              "--out", str(tmp_path / "variants")])
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line]
    assert info.value.code == 2 and "Traceback" not in err
    assert lines == ["optikit: error: distill diverged: loss became nan at epoch 1 step 3; lower learning_rate "
                     "(got 1e+06)"]
    assert _nothing_cached(tmp_path / "variants")

