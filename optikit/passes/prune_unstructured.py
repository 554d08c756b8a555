"""prune-unstructured: zeroes the smallest weights of chosen Linear / Conv layers (magnitude pruning), made permanent."""
from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from optikit.config import require
from optikit.errors import ConfigError
from optikit.models import Encoder, count_parameters, load_module, save_module
from optikit.passes._training import TrainingOptions, format_defaults
from optikit.passes.base import Pass, PassContext, PassOutput
from optikit.variant import Variant

if TYPE_CHECKING:
    import torch.nn as nn

SPEED_NOTE = ("zeroed weights are still stored and multiplied: dense kernels are not faster with zeros. The gain is "
              "in compressed bytes (zeros deflate well); use prune-structured for a smaller, faster model.")


@dataclass(frozen=True)
class UnstructuredPruneConfig(TrainingOptions):
    """learning_rate and batch_size (fine-tuning only): see TrainingOptions."""

    amount: float = 0.5  # share of the selected weights set to zero
    scope: Literal["global", "layer"] = "global"  # global: one threshold over all selected layers
    include: tuple[str, ...] = ("*",)  # module-name globs (fnmatch) of the Linear / Conv layers to prune
    exclude: tuple[str, ...] = ()
    prune_head: bool = False  # the classifier head (hf `classifier*`, torch: the last Linear) stays dense unless set
    finetune_epochs: int = 0  # training with the masks in place, on the train split
    batch_size: int = 32

    epochs_option: ClassVar[str] = "finetune_epochs"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(0 < self.amount < 1, f"amount must be in (0, 1), got {self.amount}")
        require(bool(self.include), "include must name at least one module pattern, e.g. include=*")


def head_names(module: nn.Module, variant_format: str) -> set[str]:
    """The classifier head's layers: hf names them `classifier…`; for a torch model it is the last Linear."""
    import torch.nn as nn

    if variant_format == "hf":
        return {n for n, _ in module.named_modules() if n == "classifier" or n.startswith("classifier.")}
    linears = [n for n, m in module.named_modules() if isinstance(m, nn.Linear)]
    return set(linears[-1:])


def select_layers(module: nn.Module, variant_format: str, config: UnstructuredPruneConfig) -> dict[str, Any]:
    """Linear and Conv layers whose names match `include` and not `exclude` (and not the head unless asked)."""
    import torch.nn as nn

    heads = set() if config.prune_head else head_names(module, variant_format)
    chosen: dict[str, Any] = {}
    for name, m in module.named_modules():
        if not isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)) or name in heads:
            continue
        if any(fnmatchcase(name, p) for p in config.include) and not any(fnmatchcase(name, p) for p in config.exclude):
            chosen[name] = m
    return chosen


def sparsity(weight: Any) -> float:
    return float((weight == 0).sum()) / max(weight.numel(), 1)


def magnitude_prune(layers: dict[str, nn.Module], amount: float, scope: str) -> None:
    """Attaches L1-magnitude masks (torch.nn.utils.prune); `prune.remove` later makes them permanent."""
    import torch.nn.utils.prune as prune

    if scope == "global":
        prune.global_unstructured([(m, "weight") for m in layers.values()], pruning_method=prune.L1Unstructured,
                                  amount=amount)
    else:
        for m in layers.values():
            prune.l1_unstructured(m, "weight", amount=amount)


class UnstructuredPrune(Pass):
    """Magnitude pruning of Linear and Conv weights, one global threshold or per layer, then made permanent.

    The saved model has the same shape and the same speed; its zeros make the weight files compress smaller.
    With `finetune_epochs` the masks stay in place while training, so pruned weights stay zero.

    Example:
        optikit compress digits-cnn --pass prune-unstructured:amount=0.7
        optikit compress minilm-tags --pass prune-unstructured:amount=0.5,scope=layer,exclude=*attention*
    """

    name = "prune-unstructured"
    Config = UnstructuredPruneConfig
    accepts: ClassVar[frozenset[str]] = frozenset({"torch", "hf"})
    summary = "magnitude pruning of Linear / Conv weights (global or per layer), made permanent"
    config: UnstructuredPruneConfig

    def apply(self, variant: Variant, ctx: PassContext, out: Path) -> PassOutput:
        import torch.nn.utils.prune as prune

        from optikit.training import evaluate_loss, fit

        c = self.config
        module = load_module(variant)
        layers = select_layers(module, variant.format, c)
        if not layers:
            raise ConfigError(f"no Linear or Conv layer matches include={','.join(c.include)} exclude="
                              f"{','.join(c.exclude) or '-'}: names look like "
                              f"{', '.join(n for n, _ in list(module.named_modules())[1:4])}")
        encoder = Encoder(variant)
        validation = ctx.split(variant, "validation")
        accuracy_before = evaluate_loss(module, validation, encoder)[1]
        nonzero_before = count_parameters(module)[1]
        magnitude_prune(layers, c.amount, c.scope)
        accuracy_pruned = evaluate_loss(module, validation, encoder)[1]
        history: list[dict[str, float]] = []
        if c.finetune_epochs:
            train_config = c.train_config(format_defaults(variant.format), c.finetune_epochs, ctx.seed)
            history = fit(module, ctx.split(variant, "train"), encoder, train_config, validation=validation,
                          desc=f"{self.name} finetune", guard=c.training_guard(f"{self.name} finetune"))
        for m in layers.values():
            prune.remove(m, "weight")
        accuracy_after = evaluate_loss(module, validation, encoder)[1]
        total, nonzero = count_parameters(module)
        pruned_weights = sum(m.weight.numel() for m in layers.values())
        pruned_zeros = sum(int((m.weight == 0).sum()) for m in layers.values())
        save_module(module, variant.format, out, tokenizer_from=variant.path)
        return PassOutput(variant.format, {
            "layers": {n: round(sparsity(m.weight), 4) for n, m in layers.items()},
            "sparsity_selected": round(pruned_zeros / pruned_weights, 4),
            "sparsity_overall": round(1 - nonzero / total, 4),
            "parameters": total, "nonzero_before": nonzero_before, "nonzero_after": nonzero,
            "validation_accuracy_before": round(accuracy_before, 4),
            "validation_accuracy_pruned": round(accuracy_pruned, 4),
            "validation_accuracy_after": round(accuracy_after, 4),
            "finetune": history, "note": SPEED_NOTE,
        })
