"""distill: trains a smaller student (a recipe in `students/`) to mimic the teacher, torch or Hugging Face."""
from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from optikit.config import require
from optikit.errors import ConfigError
from optikit.models import (
    RUNTIME_QUANTIZATION,
    Encoder,
    architectures,
    build_architecture,
    copy_processor,
    count_parameters,
    load_module,
    save_module,
    torch_forward,
)
from optikit.passes._training import DistillationOptions, DistillLoss
from optikit.passes.base import Pass, PassContext, PassOutput
from optikit.recipes import Recipe, builtin_recipes, load_recipe
from optikit.training import TrainConfig, evaluate_loss, fit, seed_everything
from optikit.variant import Format, Variant

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

    from optikit.data import Dataset

StudentKind = Literal["layer-subset", "architecture"]
# student = "auto": the digits CNN's own small copy, a 3-layer cut of a text transformer, and a small any-size
# CNN for every other image teacher (Hugging Face image classifiers, other torch CNNs).
AUTO_STUDENTS = {"torch": "cnn-small", "hf": "minilm-l3", "image": "image-cnn-small"}
DIGITS_ARCHITECTURE = "digits-cnn"


def auto_student(variant: Variant) -> str:
    """The student `student=auto` picks for this teacher."""
    if variant.task.kind == "image" and (variant.format == "hf"
                                        or variant.architecture.get("name") != DIGITS_ARCHITECTURE):
        return AUTO_STUDENTS["image"]
    return AUTO_STUDENTS[variant.format]
TEACHER_BATCH = 64


@dataclass(frozen=True)
class StudentSpec:
    """A student recipe's `[student]` table, checked: how the student is made from (or beside) the teacher."""

    kind: StudentKind
    layers: int | tuple[int, ...] | None = None  # layer-subset: a count, or the teacher layer indices to keep


def load_student(name: str) -> tuple[Recipe, StudentSpec]:
    """The recipe and student spec of a built-in student name or a recipe path; ConfigError says what to fix."""
    recipe = load_recipe(name, "students")
    table = dict(recipe.extra)
    kind = table.pop("kind", None)
    layers = table.pop("layers", None)
    where = f"student recipe {recipe.source}"
    if table:
        raise ConfigError(f"{where} has unknown [student] key(s) {', '.join(sorted(table))}: "
                          "known keys are kind, layers")
    if kind == "architecture":
        if recipe.format != "torch":
            raise ConfigError(f"{where}: kind = \"architecture\" builds a torch model; set format = \"torch\"")
        return recipe, StudentSpec("architecture")
    if kind == "layer-subset":
        if recipe.format != "hf":
            raise ConfigError(f"{where}: kind = \"layer-subset\" cuts a Hugging Face teacher; set format = \"hf\"")
        if isinstance(layers, int) and not isinstance(layers, bool) and layers >= 1:
            return recipe, StudentSpec("layer-subset", layers)
        if isinstance(layers, list) and layers and all(isinstance(i, int) and i >= 0 for i in layers) \
                and len(set(layers)) == len(layers):
            return recipe, StudentSpec("layer-subset", tuple(sorted(layers)))
        raise ConfigError(f"{where}: layers must be a count ≥ 1 (layers = 3) or distinct layer indices "
                          f"(layers = [0, 2, 4]), got {layers!r}")
    raise ConfigError(f"{where} needs [student] kind = \"layer-subset\" (hf) or \"architecture\" (torch), got {kind!r}")


def evenly_spaced(total: int, keep: int) -> tuple[int, ...]:
    """`keep` of `total` layer indices, first and last included: the ends of a stack matter most to its output."""
    if keep == 1:
        return (0,)
    return tuple(int(np.floor(i * (total - 1) / (keep - 1) + 0.5)) for i in range(keep))


def encoder_layers(module: Any) -> tuple[Any, str]:
    """The ModuleList of transformer blocks in a Hugging Face classifier, and the attribute path to it."""
    base = getattr(module, "base_model", module)
    for path in ("encoder.layer", "transformer.layer", "encoder.layers", "layers"):
        owner: Any = base
        for part in path.split("."):
            owner = getattr(owner, part, None)
        if owner is not None:
            return owner, path
    raise ConfigError(f"cannot find the encoder layers of {type(module).__name__}: layer-subset students support "
                      "BERT-style models (encoder.layer); use another student kind")


def hf_layer_count(path: Path) -> int:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    return int(getattr(config, "num_hidden_layers", 0) or getattr(config, "n_layers", 0))


def subset_layers(teacher: nn.Module, keep: tuple[int, ...]) -> nn.Module:
    """A copy of `teacher` with only the encoder layers `keep`, so save_pretrained / from_pretrained round-trip."""
    import torch.nn as nn

    student = copy.deepcopy(teacher)
    layers, path = encoder_layers(student)
    owner: Any = getattr(student, "base_model", student)
    *parents, last = path.split(".")
    for part in parents:
        owner = getattr(owner, part)
    kept = nn.ModuleList([layers[i] for i in keep])
    for new_index, layer in enumerate(kept):
        for sub in layer.modules():  # attention caches index layers by position
            if hasattr(sub, "layer_idx"):
                setattr(sub, "layer_idx", new_index)  # noqa: B010 - a plain attribute, not a submodule
    setattr(owner, last, kept)
    config: Any = student.config
    for attr in ("num_hidden_layers", "n_layers"):
        if hasattr(config, attr):
            setattr(config, attr, len(keep))
    # Head pruning is recorded per layer index; from_pretrained re-applies it, so the indices must follow the cut.
    pruned = {int(k): v for k, v in (getattr(config, "pruned_heads", None) or {}).items()}
    config.pruned_heads = {new: pruned[old] for new, old in enumerate(keep) if old in pruned}
    return student


def feature_modules(module: nn.Module) -> list[nn.Module]:
    """Conv/linear layers in order, without the last one (its output is the logits, already matched by KL)."""
    import torch.nn as nn

    layers: list[nn.Module] = [m for m in module.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))]
    return layers[:-1]


def _width(m: Any) -> int:
    return int(getattr(m, "out_channels", None) or getattr(m, "out_features", None) or 0)


def teacher_logits(teacher: nn.Module, data: Dataset, encoder: Encoder) -> torch.Tensor:
    """The teacher's logits for every example, in order: computed once, since the training split is fixed."""
    import torch

    out = []
    with torch.inference_mode():
        for feeds in encoder.batches(data, TEACHER_BATCH):
            out.append(torch_forward(teacher, {k: torch.from_numpy(v) for k, v in feeds.items()}))
    return torch.cat(out).float()


@dataclass(frozen=True)
class DistillConfig(DistillationOptions):
    """learning_rate, batch_size (None: the student recipe's [train] values), temperature and alpha: see
    DistillationOptions, shared with prune-structured's recovery."""

    student: str = "auto"  # a name from `optikit students`, a recipe path, or auto (see Distill)
    hidden_weight: float = 0.0  # weight of the hidden-state MSE (layers of equal width only)
    epochs: int | None = None  # None: the student recipe's [train] value (likewise patience)
    patience: int | None = None  # early stopping on validation loss (0 = off)
    seed: int = 0
    # The resolved student recipe(s), set on construction: recorded in the lineage and part of the variant id,
    # so editing a recipe file never reuses a student trained from the old one.
    recipes: dict[str, Any] = field(init=False, default_factory=dict, repr=False)

    min_epochs: ClassVar[int] = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        require(math.isfinite(self.hidden_weight) and self.hidden_weight >= 0,
                f"hidden_weight must be ≥ 0 and finite, got {self.hidden_weight}")
        require(self.patience is None or self.patience >= 0, f"patience must be ≥ 0, got {self.patience}")
        require(self.student == "auto" or bool(self.student.strip()), "student must be a name from `optikit "
                f"students` ({', '.join(sorted(builtin_recipes('students')))}) or a recipe path")
        # An unknown or malformed student fails here, before any work.
        names = AUTO_STUDENTS if self.student == "auto" else {"student": self.student}
        object.__setattr__(self, "recipes", {key: load_student(name)[0].to_dict() for key, name in names.items()})

    def student_train_config(self, recipe: Recipe, kind: str) -> TrainConfig:
        base = recipe.train
        return self.train_config(base, self.epochs or base.epochs, self.seed,
                                 patience=base.patience if self.patience is None else self.patience,
                                 shift_augment=base.shift_augment if kind == "image" else 0)


class Distill(Pass):
    """Trains a student from `students/` on the teacher's soft targets (and optionally its hidden states).

    `student=auto` picks cnn-small for the digits CNN, minilm-l3 for a text transformer and image-cnn-small
    (in_channels, image_size and classes from the teacher's data) for any other image classifier, Hugging Face
    ones included: a torch student that keeps the teacher's preprocessor_config.json, so it sees the same inputs.

    Example:
        optikit compress digits-cnn --pass distill:student=cnn-small --pass export-onnx
        optikit compress minilm-tags --pass distill:student=minilm-l3,temperature=4,hidden_weight=1
    """

    name = "distill"
    Config = DistillConfig
    accepts: ClassVar[frozenset[str]] = frozenset({"torch", "hf"})
    summary = "trains a smaller student (optikit students) to mimic the teacher: KL + CE (+ hidden-state MSE)"
    config: DistillConfig

    def student_name(self, teacher: Variant) -> str:
        return auto_student(teacher) if self.config.student == "auto" else self.config.student

    def output_format(self, input_format: str) -> Format:
        if self.config.student == "auto":
            # Planning knows the format only: an hf image teacher's auto student is in fact torch (both take the
            # same later passes, and each pass checks the real variant before any work).
            return input_format  # type: ignore[return-value]
        return load_student(self.config.student)[0].format

    def check_plan(self, before: Sequence[Pass]) -> None:
        if any(p.name == "quantize" for p in before):
            raise ConfigError("distill trains the student in float32 from a float32 teacher: move distill before "
                              "quantize (e.g. --pass distill --pass quantize)")

    def check(self, variant: Variant) -> None:
        recipe, spec = load_student(self.student_name(variant))
        image = variant.task.kind == "image"
        if spec.kind == "layer-subset" and image:
            raise ConfigError(f"student {recipe.name} (layer-subset) cuts a text transformer's layers, but "
                              f"{variant.name} is an image classifier: use distill:student={AUTO_STUDENTS['image']}")
        if spec.kind == "architecture" and image and variant.format == "hf":
            self._check_builder(recipe, variant)
        wanted = "hf" if spec.kind == "layer-subset" else "torch"
        if variant.format != wanted and not (image and spec.kind == "architecture"):
            other = auto_student(variant)
            raise ConfigError(f"student {recipe.name} ({spec.kind}) needs a {wanted} teacher, but {variant.name} is "
                              f"{variant.format}: use distill:student={other} or another from `optikit students`")
        if RUNTIME_QUANTIZATION in variant.architecture:
            raise ConfigError(f"{variant.name} is quantized at load time; distill its float32 parent instead "
                              "(move distill before quantize)")
        if spec.kind == "layer-subset":
            total = hf_layer_count(variant.path)
            asked = spec.layers if isinstance(spec.layers, int) else len(spec.layers or ())
            if asked >= total:
                raise ConfigError(f"student {recipe.name} keeps {asked} layers but teacher {variant.name} has only "
                                  f"{total}: use a recipe with [student] layers < {total} (e.g. a copy of "
                                  f"{recipe.source} with layers = {max(1, total // 2)})")
            if isinstance(spec.layers, tuple) and max(spec.layers) >= total:
                raise ConfigError(f"student {recipe.name} names layer {max(spec.layers)} but teacher {variant.name} "
                                  f"has layers 0..{total - 1}: fix [student] layers")

    @staticmethod
    def _check_builder(recipe: Recipe, variant: Variant) -> None:
        """A Hugging Face image teacher may have any channel count: the student's builder must take in_channels."""
        import inspect

        name = recipe.architecture.get("name")
        params = inspect.signature(architectures.get(str(name))).parameters
        if "in_channels" not in params:
            raise ConfigError(f"student {recipe.name} ({name}) has a fixed input channel count; {variant.name} is a "
                              f"Hugging Face image classifier: use distill:student={AUTO_STUDENTS['image']}")

    def build_student(self, teacher: nn.Module, variant: Variant, recipe: Recipe, spec: StudentSpec,
                      inputs: np.ndarray | None = None) -> tuple[nn.Module, dict[str, Any], tuple[int, ...] | None]:
        """(student module, its architecture record, teacher layers kept); `inputs` are training images, whose
        shape gives builders that take them their in_channels and image_size (what the teacher sees)."""
        if spec.kind == "architecture":
            import inspect

            arch = dict(recipe.architecture)
            arch.setdefault("num_classes", len(variant.task.label_names))
            if "image_size" in variant.architecture:
                arch.setdefault("image_size", variant.architecture["image_size"])
            params = inspect.signature(architectures.get(str(arch["name"]))).parameters
            if inputs is not None and getattr(inputs, "ndim", 0) == 4:
                channels, height, width = (int(d) for d in inputs.shape[1:])
                if "in_channels" in params:
                    arch.setdefault("in_channels", channels)
                if "image_size" in params:
                    arch.setdefault("image_size", height if height == width else [height, width])
            seed_everything(self.config.seed)
            return build_architecture(arch), arch, None
        total = len(encoder_layers(teacher)[0])
        keep = spec.layers if isinstance(spec.layers, tuple) else evenly_spaced(total, int(spec.layers or 1))
        arch = {**variant.architecture, "student": recipe.name, "layers_kept": list(keep)}
        return subset_layers(teacher, keep), arch, keep

    def hidden_pairs(self, student: nn.Module, teacher: nn.Module, keep: tuple[int, ...] | None,
                     name: str) -> list[tuple[Any, Any]]:
        """(student module, teacher module) whose outputs are compared: layer i ↔ the teacher layer it came from."""
        if keep is not None:
            return list(zip(encoder_layers(student)[0], [encoder_layers(teacher)[0][i] for i in keep], strict=True))
        pairs = [(s, t) for s, t in zip(feature_modules(student), feature_modules(teacher), strict=False)
                 if _width(s) == _width(t)]
        if not pairs:
            raise ConfigError(f"student {name} has no layer as wide as the teacher's at the same depth, so there "
                              "are no hidden states to match: set distill:hidden_weight=0")
        return pairs

    def apply(self, variant: Variant, ctx: PassContext, out: Path) -> PassOutput:
        recipe, spec = load_student(self.student_name(variant))
        c = self.config
        teacher = load_module(variant)
        for p in teacher.parameters():
            p.requires_grad_(False)
        encoder = Encoder(variant)
        train, validation = ctx.split(variant, "train"), ctx.split(variant, "validation")
        student, arch, keep = self.build_student(teacher, variant, recipe, spec,
                                                 train.inputs if variant.task.kind == "image" else None)
        for p in student.parameters():
            p.requires_grad_(True)
        pairs = self.hidden_pairs(student, teacher, keep, recipe.name) if c.hidden_weight > 0 else []
        train_config = c.student_train_config(recipe, variant.task.kind)
        # Augmented inputs or hidden states need the teacher on each batch; otherwise its logits never change.
        cache = teacher_logits(teacher, train, encoder) if not (train_config.shift_augment or pairs) else None
        loss = DistillLoss(teacher, c.temperature, c.alpha, cache=cache, hidden_weight=c.hidden_weight, pairs=pairs)
        try:
            history = fit(student, train, encoder, train_config, validation=validation, loss_fn=loss,
                          desc=f"distill {recipe.name}", guard=c.training_guard(self.name))
        finally:
            loss.close()
        student_loss, student_acc = evaluate_loss(student, validation, encoder)
        teacher_loss, teacher_acc = evaluate_loss(teacher, validation, encoder)
        save_module(student, recipe.format, out, tokenizer_from=variant.path if recipe.format == "hf" else None)
        # The student learnt on the teacher's encoded inputs: it keeps the teacher's image normalisation.
        copy_processor(variant.path, out)
        student_params, teacher_params = count_parameters(student)[0], count_parameters(teacher)[0]
        report = {
            "student": recipe.name, "kind": spec.kind, "student_parameters": student_params,
            "teacher_parameters": teacher_params, "parameter_ratio": round(student_params / max(teacher_params, 1), 4),
            "layers_kept": list(keep) if keep is not None else None, "hidden_pairs": len(pairs),
            "teacher_logits_cached": cache is not None, "train": {
                "epochs": train_config.epochs, "learning_rate": train_config.learning_rate,
                "batch_size": train_config.batch_size, "patience": train_config.patience},
            "history": history, "val_loss": student_loss, "val_accuracy": student_acc,
            "teacher_val_loss": teacher_loss, "teacher_val_accuracy": teacher_acc,
        }
        return PassOutput(recipe.format, report, architecture=arch)
