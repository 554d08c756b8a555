"""What the passes that train share (distill, prune-structured's recovery, prune-unstructured's fine-tuning): their
options, validated once, and the one distillation loss."""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from optikit.config import require
from optikit.errors import ConfigError
from optikit.models import torch_forward
from optikit.training import MAX_EPOCHS, TrainConfig, TrainingGuard

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

# A pass's learning rate when neither the user nor a recipe sets one: fine-tuning a transformer wants far less.
DEFAULT_LEARNING_RATE = {"torch": 1e-3, "hf": 5e-5}


@dataclass(frozen=True)
class TrainingOptions:
    """The options of every pass that trains, under one name each; `epochs_option` names the pass's epoch count
    (`epochs`, `recover_epochs`, `finetune_epochs`), which the one validator checks too."""

    learning_rate: float | None = None  # None: 1e-3 for torch models, 5e-5 for hf (distill: the student recipe's)
    batch_size: int | None = None  # None: 32 (distill: the student recipe's)

    epochs_option: ClassVar[str] = "epochs"
    min_epochs: ClassVar[int] = 0

    def __post_init__(self) -> None:
        epochs = getattr(self, self.epochs_option)
        require(epochs is None or self.min_epochs <= epochs <= MAX_EPOCHS,
                f"{self.epochs_option} must be ≥ {self.min_epochs} and ≤ {MAX_EPOCHS}, got {epochs}")
        # inf or nan would train to NaN weights; a finite but huge rate is caught by the training guard instead.
        require(self.learning_rate is None or (math.isfinite(self.learning_rate) and self.learning_rate > 0),
                f"learning_rate must be > 0 and finite, got {self.learning_rate}: e.g. learning_rate=0.001")
        require(self.batch_size is None or self.batch_size >= 1, f"batch_size must be ≥ 1, got {self.batch_size}")

    def training_guard(self, who: str) -> TrainingGuard:
        """The guard of this pass's training, naming the options a user of the pass changes."""
        return TrainingGuard(who, "learning_rate", self.epochs_option)

    def train_config(self, base: TrainConfig, epochs: int, seed: int, **overrides: Any) -> TrainConfig:
        """`base` (a recipe's [train], or the defaults for the model's format) with this pass's options on top."""
        return dataclasses.replace(base, epochs=epochs, seed=seed, learning_rate=self.learning_rate or base.learning_rate,
                                   batch_size=self.batch_size or base.batch_size, **overrides)


def format_defaults(variant_format: str) -> TrainConfig:
    """The training defaults of a pass without a recipe: TrainConfig's, at the format's learning rate."""
    return TrainConfig(learning_rate=DEFAULT_LEARNING_RATE[variant_format])


@dataclass(frozen=True)
class DistillationOptions(TrainingOptions):
    """Training options plus the soft-target terms of `DistillLoss`."""

    temperature: float = 4.0  # softens both distributions so the teacher's ranking of wrong classes shows
    alpha: float = 0.7  # weight of the teacher's soft targets; 1 − alpha goes to the true labels

    def __post_init__(self) -> None:
        super().__post_init__()
        require(math.isfinite(self.temperature) and self.temperature > 0,
                f"temperature must be > 0 and finite, got {self.temperature}: e.g. temperature=4")
        require(0 <= self.alpha <= 1, f"alpha must be in [0, 1] (the share of the loss on the teacher's soft "
                                      f"targets), got {self.alpha}: e.g. alpha=0.5")


class _Capture:
    """Forward hooks that keep the latest output of each watched module (the hidden states the loss compares)."""

    def __init__(self, modules: Sequence[Any]) -> None:
        self.outputs: list[Any] = [None] * len(modules)
        self._handles = [m.register_forward_hook(self._hook(i)) for i, m in enumerate(modules)]

    def _hook(self, index: int) -> Any:
        def keep(_module: Any, _inputs: Any, output: Any) -> None:
            self.outputs[index] = output[0] if isinstance(output, tuple) else output
        return keep

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


class DistillLoss:
    """α·T²·KL(teacher ‖ student) + (1 − α)·CE + hidden_weight·MSE(hidden states), for `training.fit`.

    Teacher logits come from `cache` (by training-example index) unless the teacher must see the batch itself:
    without a cache, when inputs are augmented, or when hidden states (`pairs` of student, teacher modules) are
    compared.
    """

    def __init__(self, teacher: nn.Module, temperature: float, alpha: float, *, cache: torch.Tensor | None = None,
                 hidden_weight: float = 0.0, pairs: Sequence[tuple[Any, Any]] = ()) -> None:
        self.teacher, self.temperature, self.alpha = teacher.eval(), temperature, alpha
        self.cache, self.hidden_weight = cache, hidden_weight
        self.student_hidden = _Capture([s for s, _ in pairs]) if pairs else None
        self.teacher_hidden = _Capture([t for _, t in pairs]) if pairs else None

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor, feeds: dict[str, Any],
                 indices: np.ndarray) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        if self.cache is not None and self.teacher_hidden is None:
            target = self.cache[torch.from_numpy(np.asarray(indices))]
        else:
            with torch.no_grad():
                target = torch_forward(self.teacher, feeds).float()
        t = self.temperature
        soft = F.kl_div(F.log_softmax(logits / t, -1), F.log_softmax(target / t, -1), log_target=True,
                        reduction="batchmean") * t * t
        loss = self.alpha * soft + (1 - self.alpha) * F.cross_entropy(logits, labels)
        if self.student_hidden is not None and self.teacher_hidden is not None:
            mask = feeds.get("attention_mask")
            terms = [_masked_mse(s, h, mask) for s, h in zip(self.student_hidden.outputs, self.teacher_hidden.outputs,
                                                             strict=True)]
            loss = loss + self.hidden_weight * torch.stack(terms).mean()
        return loss

    def close(self) -> None:
        for capture in (self.student_hidden, self.teacher_hidden):
            if capture is not None:
                capture.close()


def _masked_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean squared error over real tokens only: padding positions carry no meaning to imitate."""
    if student.shape != teacher.shape:
        raise ConfigError(f"hidden states differ in shape ({tuple(student.shape)} vs {tuple(teacher.shape)}): "
                          "set distill:hidden_weight=0 for this student")
    if mask is None or student.dim() != 3:
        return ((student - teacher.detach()) ** 2).mean()
    weights = mask.to(student.dtype).unsqueeze(-1)
    return (((student - teacher.detach()) ** 2) * weights).sum() / (weights.sum() * student.shape[-1]).clamp_min(1)
