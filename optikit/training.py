"""Training loop shared by teachers, fine-tuning after pruning, and distillation: seeded, with a progress bar."""
from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from optikit.config import require
from optikit.errors import TrainingError

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

    from optikit.data import Dataset
    from optikit.models import Encoder

# loss(logits, labels, feeds, batch_indices) -> scalar tensor; distillation passes its own.
LossFn = Callable[["torch.Tensor", "torch.Tensor", dict[str, Any], np.ndarray], "torch.Tensor"]

# No recipe here trains for more than 40 epochs; a count above this is a typo (an extra zero or two) that would run
# for hours, so it is refused before any work rather than discovered later.
MAX_EPOCHS = 1000
# "At chance" is judged by skill over the majority-class baseline, (accuracy − majority) / (1 − majority), as Cohen's
# kappa judges agreement over chance: a model that learnt nothing answers one class (skill ≤ 0; the diverged runs
# of issue 12 score exactly that class's share), while even one short epoch that learnt something scores far above
# (cnn-small distilled for one epoch: 0.62 accuracy on digits, skill 0.58). 0.05 leaves room for a near-constant
# model right on a few more examples by luck (digits, 180 validation examples: refused up to 0.145 against 0.1).
CHANCE_SKILL = 0.05
# Below this many validation examples there is no verdict: a model that learnt (80% accurate) still lands on the
# majority rate by luck too often (2 of 5 right, with a 40% majority class: 1 run in 17); from 20 on, 1 in 10,000.
MIN_VALIDATION_FOR_CHANCE = 20
# A run at chance whose last epoch's mean loss ends above this multiple of its first step's loss was pushed away by
# too high a rate (issue 12's 1e4: 6.2 → 3400); one that learns too slowly ends near where it started (6.2 → 6.24).
DIVERGED_LOSS_RATIO = 2.0


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    learning_rate: float = 1e-3
    batch_size: int = 32
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    seed: int = 0
    patience: int = 0  # early stopping: epochs without a better validation loss before stopping (0 = off)
    shift_augment: int = 0  # images only: shift each training image by up to this many pixels
    # "balanced" weighs each class's cross-entropy by n / (classes × its count), so a rare class counts as much
    # as a common one: what macro-F1 rewards. Applies to the default loss, not to a loss_fn (distillation).
    class_weight: str = "none"

    def __post_init__(self) -> None:
        require(0 <= self.epochs <= MAX_EPOCHS, f"epochs must be in [0, {MAX_EPOCHS}], got {self.epochs}")
        require(math.isfinite(self.learning_rate) and self.learning_rate > 0,
                f"learning_rate must be > 0 and finite, got {self.learning_rate}: e.g. learning_rate = 0.001")
        require(self.batch_size >= 1, f"batch_size must be ≥ 1, got {self.batch_size}")
        require(math.isfinite(self.weight_decay) and self.weight_decay >= 0,
                f"weight_decay must be ≥ 0 and finite, got {self.weight_decay}")
        require(0 <= self.warmup_ratio < 1, f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        require(self.patience >= 0, f"patience must be ≥ 0, got {self.patience}")
        require(self.shift_augment >= 0, f"shift_augment must be ≥ 0, got {self.shift_augment}")
        require(self.class_weight in ("none", "balanced"),
                f"class_weight must be 'none' or 'balanced', got {self.class_weight!r}")


@dataclass(frozen=True)
class TrainingGuard:
    """Checks what a training run made, and says who trained and which options to change when it went wrong.

    A loss that is not finite, weights that are not finite, or a validation accuracy at chance raise one
    TrainingError line, e.g. `distill diverged: loss became nan at epoch 1 step 3; lower learning_rate (got 1e+06)`.
    """

    who: str  # "distill", "prune-structured recover=finetune", "teacher digits-cnn"
    learning_rate_option: str = "learning_rate"  # as the user sets it: a pass option, or a recipe's [train] key
    epochs_option: str = "epochs"

    def check_loss(self, value: float, config: TrainConfig, where: str) -> None:
        if not math.isfinite(value):
            raise TrainingError(f"{self.who} diverged: {where}; lower {self.learning_rate_option} "
                                f"(got {config.learning_rate:g})")

    def check_weights(self, module: nn.Module, config: TrainConfig) -> None:
        """Every floating-point parameter and buffer (batch-norm statistics too) must be finite."""
        import torch

        for name, tensor in module.state_dict().items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                bad = int((~torch.isfinite(tensor)).sum())
                self.check_loss(math.nan, config, f"weight {name} holds {bad} non-finite value{'s' * (bad != 1)} "
                                                  "after training")

    def check_accuracy(self, accuracy: float, labels: np.ndarray, config: TrainConfig, first_loss: float,
                       last_loss: float) -> None:
        """Refuses a validation accuracy no better than always answering the most common class (see CHANCE_SKILL);
        the training loss from the first step to the last epoch tells a rate too high from a run too short."""
        if len(labels) < MIN_VALIDATION_FOR_CHANCE:
            return
        majority = float(np.bincount(labels).max()) / len(labels)
        if majority >= 1.0:  # one class only: no model can beat answering it, so there is nothing to judge
            return
        if (accuracy - majority) / (1 - majority) > CHANCE_SKILL:
            return
        trend = f"training loss {first_loss:.3g} → {last_loss:.3g}"
        fix = (f"the learning rate is too high: lower {self.learning_rate_option} (got {config.learning_rate:g})"
               if last_loss > DIVERGED_LOSS_RATIO * first_loss else
               f"training is too short: raise {self.epochs_option} (got {config.epochs}) or "
               f"{self.learning_rate_option} (got {config.learning_rate:g})")
        raise TrainingError(f"{self.who} learnt nothing: validation accuracy {accuracy:.3f} is at chance (always "
                            f"answering the most common class scores {majority:.3f}, {trend}); {fix}")


def shift_images(images: np.ndarray, max_shift: int, rng: np.random.Generator) -> np.ndarray:
    """Moves each image by a random offset in [-max_shift, max_shift]², filling with zeros (the background)."""
    out = np.zeros_like(images)
    h, w = images.shape[-2:]
    for i, (dy, dx) in enumerate(rng.integers(-max_shift, max_shift + 1, size=(len(images), 2))):
        ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
        xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
        out[i, ..., yd, xd] = images[i, ..., ys, xs]
    return out


def balanced_class_weights(labels: np.ndarray, classes: int) -> np.ndarray:
    """n / (classes × count) per class (scikit-learn's "balanced"); a class absent from `labels` weighs 0."""
    counts = np.bincount(labels, minlength=classes).astype(np.float64)
    with np.errstate(divide="ignore"):
        weights = np.where(counts > 0, len(labels) / (classes * counts), 0.0)
    return weights.astype(np.float32)


def seed_everything(seed: int) -> None:
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _to_tensors(feeds: dict[str, np.ndarray]) -> dict[str, Any]:
    import torch

    return {k: torch.from_numpy(v) for k, v in feeds.items()}


def evaluate_loss(module: nn.Module, data: Dataset, encoder: Encoder, batch_size: int = 64) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of `module` on `data`."""
    import torch
    import torch.nn.functional as F

    from optikit.models import torch_forward

    module.eval()
    total = correct = 0.0
    with torch.inference_mode():
        for start, feeds in zip(range(0, len(data), batch_size), encoder.batches(data, batch_size), strict=True):
            labels = torch.from_numpy(data.labels[start:start + batch_size])
            logits = torch_forward(module, _to_tensors(feeds))
            total += float(F.cross_entropy(logits, labels, reduction="sum"))
            correct += float((logits.argmax(-1) == labels).sum())
    return total / max(len(data), 1), correct / max(len(data), 1)


def fit(module: nn.Module, train: Dataset, encoder: Encoder, config: TrainConfig, *,
        validation: Dataset | None = None, loss_fn: LossFn | None = None, desc: str = "training",
        guard: TrainingGuard | None = None) -> list[dict[str, float]]:
    """Trains `module` in place with AdamW and a linear schedule; keeps the best validation-loss weights.

    `guard` (default: one named `desc`) fails the run at the first loss that is not finite, and after training if
    the kept weights are not finite or their validation accuracy is at chance: nothing broken is returned.
    """
    import torch
    import torch.nn.functional as F

    from optikit.models import torch_forward
    from optikit.progress import progress_bar

    seed_everything(config.seed)
    rng = np.random.default_rng(config.seed)
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total_steps = max(1, steps_per_epoch * config.epochs)
    warmup = int(total_steps * config.warmup_ratio)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (total_steps - s) / max(1, total_steps - warmup)))
    history: list[dict[str, float]] = []
    best_loss, best_state, stale = math.inf, None, 0
    guard = guard or TrainingGuard(desc)
    kept_accuracy: float | None = None
    first_loss = math.nan
    weight = (torch.from_numpy(balanced_class_weights(train.labels, len(train.label_names)))
              if config.class_weight == "balanced" else None)
    with progress_bar(desc, total_steps) as advance:
        for epoch in range(config.epochs):
            module.train()
            order = rng.permutation(len(train))
            running = 0.0
            for step, start in enumerate(range(0, len(order), config.batch_size), 1):
                idx = order[start:start + config.batch_size]
                batch = train.take(idx)
                inputs = batch.inputs
                if config.shift_augment and batch.kind == "image":
                    inputs = shift_images(inputs, config.shift_augment, rng)
                feeds = _to_tensors(encoder.encode(inputs))
                labels = torch.from_numpy(batch.labels)
                logits = torch_forward(module, feeds)
                loss = loss_fn(logits, labels, feeds, idx) if loss_fn else F.cross_entropy(logits, labels, weight=weight)
                value = float(loss.detach())
                guard.check_loss(value, config, f"loss became {value} at epoch {epoch + 1} step {step}")
                first_loss = value if math.isnan(first_loss) else first_loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                schedule.step()
                running += value * len(idx)
                advance(1)
            row = {"epoch": epoch + 1, "train_loss": running / len(train)}
            if validation is not None and len(validation):
                row["val_loss"], row["val_accuracy"] = evaluate_loss(module, validation, encoder)
                guard.check_loss(row["val_loss"], config, f"validation loss became {row['val_loss']} at epoch {epoch + 1}")
                if row["val_loss"] < best_loss - 1e-6:
                    best_loss, stale, kept_accuracy = row["val_loss"], 0, row["val_accuracy"]
                    best_state = copy.deepcopy(module.state_dict())
                else:
                    stale += 1
            history.append(row)
            if config.patience and stale >= config.patience:
                break
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    if history:  # judge only what training made: zero epochs leave the model as it came
        guard.check_weights(module, config)
        if validation is not None and kept_accuracy is not None:
            guard.check_accuracy(kept_accuracy, validation.labels, config, first_loss, history[-1]["train_loss"])
    return history
