"""The search space: which pass chains and settings a trial may pick, as Optuna suggestions → a chain of specs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from optikit.config import require


@dataclass(frozen=True)
class SearchSpace:
    """Orthogonal decisions, each a real lever on latency or loss (see STACK.md):

    shrink (none / structured pruning with fine-tuning / distillation into a student) → runtime (torch / ONNX)
    → quantization (none / dynamic / static with a calibration method, per-channel or not), where a quantize step
    gets `max_loss` so its accuracy-aware fp32 fallback keeps the budget.
    """

    students: tuple[str, ...] = ()  # student recipes for the teacher's format; empty: no distillation
    prune_amount: tuple[float, float] = (0.1, 0.7)
    recover_epochs: tuple[int, int] = (1, 4)
    calibrations: tuple[str, ...] = ("minmax", "entropy", "percentile")
    max_loss: float | None = None  # handed to quantize so its fp32 fallback respects the search's budget
    # The baseline's format: an ONNX-only model (imported from a .onnx file) has no torch weights to prune,
    # distill or export, so its only lever is quantization.
    teacher_format: str = "torch"

    def __post_init__(self) -> None:
        lo, hi = self.prune_amount
        require(0 < lo < hi < 1, f"prune_amount must be 0 < low < high < 1, got {self.prune_amount}")
        require(1 <= self.recover_epochs[0] <= self.recover_epochs[1], "recover_epochs must be 1 ≤ low ≤ high")

    def suggest(self, trial: Any) -> list[str]:
        """One chain of pass specs (`name:key=value,…`) from the trial's choices; empty means the teacher itself."""
        chain: list[str] = []
        onnx_only = self.teacher_format == "onnx"
        shrinks = ["none"] if onnx_only else ["none", "prune", *(["distill"] if self.students else [])]
        shrink = trial.suggest_categorical("shrink", shrinks)
        if shrink == "prune":
            amount = trial.suggest_float("prune_amount", *self.prune_amount, step=0.05)
            epochs = trial.suggest_int("recover_epochs", *self.recover_epochs)
            chain.append(f"prune-structured:amount={amount:.2f},recover=finetune,recover_epochs={epochs}")
        elif shrink == "distill":
            chain.append(f"distill:student={trial.suggest_categorical('student', list(self.students))}")
        runtime = trial.suggest_categorical("runtime", ["onnx"] if onnx_only else ["torch", "onnx"])
        if runtime == "onnx":
            if not onnx_only:
                chain.append("export-onnx")
            quant = trial.suggest_categorical("quantize", ["none", "dynamic", "static"])
            budget = f",max_loss={self.max_loss:g}" if self.max_loss is not None else ""
            per_channel = trial.suggest_categorical("per_channel", [True, False]) if quant != "none" else True
            if quant == "dynamic":
                chain.append(f"quantize:mode=dynamic,per_channel={str(per_channel).lower()}{budget}")
            elif quant == "static":
                calibration = trial.suggest_categorical("calibration", list(self.calibrations))
                chain.append(f"quantize:mode=static,calibration={calibration},"
                             f"per_channel={str(per_channel).lower()}{budget}")
        return chain


def students_for(teacher: Any) -> tuple[str, ...]:
    """Student recipes for a teacher: its format as a string (a CNN teacher gets CNN students, a BERT gets MiniLMs),
    or the teacher Variant itself, which also tells image teachers apart. The any-size image CNN is offered only to
    the image teachers `distill:student=auto` gives it to (Hugging Face image classifiers, CNNs other than
    digits-cnn): they get it alone, since the digits and text students cannot take them."""
    from optikit.passes.distill import AUTO_STUDENTS, auto_student
    from optikit.recipes import builtin_recipes, load_recipe

    image_student = AUTO_STUDENTS["image"]
    if not isinstance(teacher, str):
        if auto_student(teacher) == image_student:
            return (image_student,)
        teacher = teacher.format
    out = []
    for name in sorted(builtin_recipes("students")):
        if name == image_student:
            continue
        try:
            if load_recipe(name, "students").format == teacher:
                out.append(name)
        except Exception:  # noqa: BLE001 - an unreadable recipe is simply not offered
            continue
    return tuple(out)
