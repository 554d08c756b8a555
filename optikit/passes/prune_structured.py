"""prune-structured: removes whole CNN channels (optikit CNNs, Hugging Face ResNets) or BERT heads and FFN neurons
with Torch-Pruning, so the model shrinks."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from optikit.config import require
from optikit.errors import ConfigError, PassError
from optikit.models import (
    HF_PRUNED,
    Encoder,
    build_architecture,
    count_parameters,
    hf_pruned,
    layer_shape,
    load_module,
    save_module,
    torch_forward,
)
from optikit.passes._training import DistillationOptions, DistillLoss, format_defaults
from optikit.passes.base import Pass, PassContext, PassOutput
from optikit.variant import Format, Variant

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

TARGETS = ("heads", "ffn")
# Architectures whose pruned shape can be written back into a rebuildable description (kwargs or a config.json).
REBUILDABLE_ARCHITECTURES = ("digits-cnn", "image-cnn")
REBUILDABLE_HF_TYPES = ("bert",)
# Hugging Face image classifiers whose conv channels Torch-Pruning narrows cleanly (residual-coupled channels go
# together). ViT would need its head bookkeeping rewritten as for BERT: not supported yet.
PRUNABLE_HF_IMAGE_TYPES = ("resnet",)
# Global ranking may empty a layer that matters little; a layer never loses more than this share.
GLOBAL_MAX_LAYER_AMOUNT = 0.9
RELOAD_TOLERANCE = 1e-4


@dataclass(frozen=True)
class StructuredPruneConfig(DistillationOptions):
    """learning_rate, batch_size, temperature and alpha (recover=distill only): see DistillationOptions."""

    amount: float = 0.5  # share of channels (CNN) or of heads and FFN neurons (BERT) removed
    importance: Literal["l1", "l2", "taylor", "random"] = "l2"
    scope: Literal["uniform", "global"] = "uniform"  # global ranks across layers (BERT: heads only, see below)
    targets: tuple[str, ...] = TARGETS  # hf only: what to prune, heads and/or ffn
    recover: Literal["none", "finetune", "distill"] = "none"
    recover_epochs: int = 2
    batch_size: int = 32
    temperature: float = 2.0
    alpha: float = 0.5
    taylor_batches: int = 4  # taylor only: training batches whose gradients score the weights

    epochs_option: ClassVar[str] = "recover_epochs"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(0 < self.amount < 1, f"amount must be in (0, 1), got {self.amount}")
        require(bool(self.targets) and set(self.targets) <= set(TARGETS),
                f"targets must be some of {', '.join(TARGETS)}, got {','.join(self.targets) or 'nothing'}")
        require(self.taylor_batches >= 1, f"taylor_batches must be ≥ 1, got {self.taylor_batches}")


def make_importance(name: str) -> Any:
    import torch_pruning as tp

    if name == "l1":
        return tp.importance.GroupMagnitudeImportance(p=1)
    if name == "l2":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if name == "taylor":
        return tp.importance.GroupTaylorImportance()
    return tp.importance.RandomImportance()


def accumulate_gradients(module: nn.Module, variant: Variant, ctx: PassContext, encoder: Encoder,
                         batches: int, batch_size: int) -> None:
    """Taylor importance scores weight × gradient: fill `.grad` from a few training batches (dropout off)."""
    import torch
    import torch.nn.functional as F

    train = ctx.split(variant, "train")
    module.eval()
    module.zero_grad(set_to_none=True)
    for start in range(0, min(len(train), batches * batch_size), batch_size):
        chunk = train.take(list(range(start, min(start + batch_size, len(train)))))
        feeds = {k: torch.from_numpy(v) for k, v in encoder.encode(chunk.inputs).items()}
        F.cross_entropy(torch_forward(module, feeds), torch.from_numpy(chunk.labels)).backward()


def _attention_modules(module: nn.Module) -> dict[int, Any]:
    """Layer index → BERT self-attention (the module holding query/key/value and the head bookkeeping)."""
    found = {}
    for name, m in module.named_modules():
        if name.endswith("attention.self") and hasattr(m, "query") and hasattr(m, "num_attention_heads"):
            found[int(name.split("layer.")[1].split(".")[0])] = m
    return dict(sorted(found.items()))


def _ffn_modules(module: nn.Module) -> dict[int, Any]:
    found = {int(n.split("layer.")[1].split(".")[0]): m for n, m in module.named_modules()
             if n.endswith("intermediate.dense")}
    return dict(sorted(found.items()))


def _hf_ignored(module: nn.Module, targets: tuple[str, ...]) -> list[nn.Module]:
    """Everything whose output is the hidden size (or the classes) stays: only heads and FFN width can go."""
    ignored = [m for n, m in module.named_modules()
               if n.endswith(("embeddings", "pooler", "classifier", "attention.output.dense"))
               or (n.endswith("output.dense") and "attention" not in n)]
    if "heads" not in targets:
        ignored += [lin for att in _attention_modules(module).values() for lin in (att.query, att.key, att.value)]
    if "ffn" not in targets:
        ignored += list(_ffn_modules(module).values())
    return ignored


def _hf_model_type(variant: Variant) -> str | None:
    if variant.architecture.get("name") == HF_PRUNED:
        return variant.architecture.get("config", {}).get("model_type")
    try:
        return json.loads((variant.path / "config.json").read_text()).get("model_type")
    except (OSError, ValueError):
        return None


def _is_hf_image(variant: Variant) -> bool:
    return variant.task.kind == "image" and (variant.format == "hf" or variant.architecture.get("name") == HF_PRUNED)


class StructuredPrune(Pass):
    """Removes whole channels (optikit CNNs, Hugging Face ResNets) or attention heads and FFN neurons (BERT) with
    Torch-Pruning.

    The result is a smaller dense model (fewer parameters and MACs, faster), rebuilt exactly from its manifest
    (torch) or by a plain `from_pretrained` (hf). Recovery by fine-tuning or distillation from the parent is optional.
    BERT keeps one FFN width for all layers (config.json has one `intermediate_size`), so `scope=global` ranks
    heads across layers and prunes FFN neurons uniformly.

    A pruned Hugging Face ResNet becomes a *torch* variant, not an hf one: ResNetConfig has one width per stage
    (`hidden_sizes`) and derives every inner width from it, so it cannot describe the per-layer widths pruning
    leaves (global scope, rounding, bottleneck reductions), and a pickled module is not an option. The manifest
    records the HF config plus the shape of every narrowed layer (architecture `hf-pruned`); loading builds the
    model from that config, swaps in the narrowed layers and reads the weights from safetensors. optikit loads it
    like any variant; for other tools chain export-onnx (pixel_values → logits). ViT and other image
    architectures are refused before any work.

    Example:
        optikit compress digits-cnn --pass prune-structured:amount=0.5,recover=finetune
        optikit compress minilm-tags --pass prune-structured:targets=heads,ffn,recover=distill,recover_epochs=3
    """

    name = "prune-structured"
    Config = StructuredPruneConfig
    accepts: ClassVar[frozenset[str]] = frozenset({"torch", "hf"})
    summary = "removes CNN channels or BERT heads / FFN neurons (Torch-Pruning), with optional recovery"
    config: StructuredPruneConfig

    def output_format(self, input_format: str) -> Format:
        return input_format  # type: ignore[return-value]  # hf image models become torch: only `apply` knows the task

    def check(self, variant: Variant) -> None:
        if _is_hf_image(variant):
            model_type = _hf_model_type(variant)
            if model_type not in PRUNABLE_HF_IMAGE_TYPES:
                raise ConfigError(f"prune-structured prunes the conv channels of {', '.join(PRUNABLE_HF_IMAGE_TYPES)} "
                                  f"image classifiers, not {model_type!r}: use prune-unstructured or quantize for "
                                  "this model")
        elif variant.format == "torch":
            arch = variant.architecture.get("name")
            if arch not in REBUILDABLE_ARCHITECTURES:
                raise ConfigError(f"prune-structured can rebuild {', '.join(REBUILDABLE_ARCHITECTURES)} only, not "
                                  f"{arch!r}: use prune-unstructured, or register a rebuild for that architecture")
        else:
            try:
                model_type = json.loads((variant.path / "config.json").read_text()).get("model_type")
            except (OSError, ValueError):
                model_type = None
            if model_type not in REBUILDABLE_HF_TYPES:
                raise ConfigError(f"prune-structured prunes {', '.join(REBUILDABLE_HF_TYPES)} transformers, not "
                                  f"{model_type!r}: use prune-unstructured for this model")

    def apply(self, variant: Variant, ctx: PassContext, out: Path) -> PassOutput:
        import torch
        import torch_pruning as tp

        from optikit.training import evaluate_loss

        c = self.config
        encoder = Encoder(variant)
        validation = ctx.split(variant, "validation")
        example = {k: torch.from_numpy(v) for k, v in encoder.encode(validation.take([0, 1]).inputs).items()}
        hf_image = _is_hf_image(variant)
        example_input: Any = example if variant.format == "hf" and not hf_image else example["pixel_values"]
        module = load_module(variant)
        parent = load_module(variant)  # kept unpruned: the distillation teacher and the reference numbers
        params_before = count_parameters(module)[0]
        macs_before, _ = tp.utils.count_ops_and_params(module, example_input)
        accuracy_before = evaluate_loss(parent, validation, encoder)[1]
        if c.importance == "taylor":
            accumulate_gradients(module, variant, ctx, encoder, c.taylor_batches, c.batch_size)

        out_format: Format = "torch" if hf_image else variant.format
        if hf_image:
            shape_report, architecture = self._prune_hf_image(module, example_input)
        elif variant.format == "torch":
            shape_report, architecture = self._prune_cnn(module, example_input, variant.architecture)
        else:
            shape_report, architecture = self._prune_bert(module, example_input), None
        module.zero_grad(set_to_none=True)

        params_after = count_parameters(module)[0]
        macs_after, _ = tp.utils.count_ops_and_params(module, example_input)
        accuracy_pruned = evaluate_loss(module, validation, encoder)[1]
        history = self._recover(module, parent, variant, ctx, encoder)
        accuracy_after = evaluate_loss(module, validation, encoder)[1]

        # tokenizer_from also carries an image model's preprocessor_config.json (its normalisation).
        save_module(module, out_format, out, tokenizer_from=variant.path)
        reload_diff = self._check_reload(module, out, architecture, example)
        return PassOutput(out_format, {
            "parameters_before": params_before, "parameters_after": params_after,
            "macs_before": int(macs_before), "macs_after": int(macs_after),
            "validation_accuracy_before": round(accuracy_before, 4),
            "validation_accuracy_pruned": round(accuracy_pruned, 4),
            "validation_accuracy_after": round(accuracy_after, 4),
            "recovery": history, "reload_max_abs_diff": reload_diff, **shape_report,
        }, architecture)

    def _pruner(self, module: nn.Module, example: Any, ignored: list[nn.Module], **extra: Any) -> Any:
        import torch_pruning as tp

        c = self.config
        return tp.pruner.MetaPruner(
            module, example, importance=make_importance(c.importance), global_pruning=c.scope == "global",
            pruning_ratio=c.amount, ignored_layers=ignored,
            max_pruning_ratio=GLOBAL_MAX_LAYER_AMOUNT if c.scope == "global" else 1.0, **extra)

    def _prune_cnn(self, module: nn.Module, example: torch.Tensor,
                   architecture: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        import torch.nn as nn

        convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
        linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
        before = {"channels": [m.out_channels for m in convs], "hidden": linears[0].out_features}
        classes = linears[-1].out_features
        # The last Linear produces the classes: its outputs must all stay.
        self._pruner(module, example, [linears[-1]]).step()
        after = {"channels": [m.out_channels for m in convs], "hidden": linears[0].out_features}
        if linears[-1].out_features != classes:
            raise PassError("structured pruning changed the number of classes")
        return ({"channels_before": before["channels"], "channels_after": after["channels"],
                 "hidden_before": before["hidden"], "hidden_after": after["hidden"]}, {**architecture, **after})

    def _prune_hf_image(self, module: Any, example: torch.Tensor) -> tuple[dict[str, Any], dict[str, Any]]:
        """Narrows a Hugging Face ResNet's conv channels; returns its shape report and `hf-pruned` architecture."""
        import torch.nn as nn

        config = module.config.to_dict()
        convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
        classifier = [m for m in module.modules() if isinstance(m, nn.Linear)][-1]
        classes = classifier.out_features
        before = [m.out_channels for m in convs]
        # The classifier's outputs are the classes: they all stay (its inputs narrow with the last stage).
        self._pruner(module, example, [classifier], output_transform=lambda o: o.logits).step()
        if classifier.out_features != classes:
            raise PassError("structured pruning changed the number of classes")
        reference = {n: layer_shape(m) for n, m in hf_pruned(config, {}).named_modules()}
        shapes = {n: spec for n, m in module.named_modules()
                  if (spec := layer_shape(m)) is not None and spec != reference.get(n)}
        return ({"channels_before": before, "channels_after": [m.out_channels for m in convs],
                 "layers_narrowed": len(shapes)}, {"name": HF_PRUNED, "config": config, "shapes": shapes})

    def _prune_bert(self, module: Any, example: dict[str, torch.Tensor]) -> dict[str, Any]:
        import torch_pruning as tp

        c = self.config
        attention, ffn = _attention_modules(module), _ffn_modules(module)
        heads_before = {i: a.num_attention_heads for i, a in attention.items()}
        ffn_before = {i: m.out_features for i, m in ffn.items()}
        num_heads = {lin: a.num_attention_heads for a in attention.values() for lin in (a.query, a.key, a.value)}
        query_layer = {a.query: i for i, a in attention.items()}
        pruner = self._pruner(
            module, example, _hf_ignored(module, c.targets), num_heads=num_heads, prune_num_heads=True,
            prune_head_dims=False, head_pruning_ratio=c.amount if "heads" in c.targets else 0.0,
            # One scope per FFN layer keeps every layer at the same width even when heads are ranked globally.
            pruning_ratio_dict={m: c.amount for m in ffn.values()}, output_transform=lambda o: o.logits)
        removed: dict[int, list[int]] = {}
        for group in pruner.step(interactive=True):
            for dep, idxs in group:
                layer = query_layer.get(dep.target.module)
                if layer is None or not pruner.DG.is_out_channel_pruning_fn(dep.handler):
                    continue
                att = attention[layer]
                heads = sorted({int(i) // att.attention_head_size for i in idxs})
                if len(heads) >= att.num_attention_heads:  # global ranking emptied a layer: keep its strongest head
                    keep = _strongest_head(att)
                    heads = [h for h in heads if h != keep]
                    size = att.attention_head_size
                    group = pruner.DG.get_pruning_group(att.query, tp.prune_linear_out_channels,
                                                        [h * size + j for h in heads for j in range(size)])
                removed[layer] = heads
                break
            group.prune()
        self._write_bert_shape(module, attention, removed)
        return {"heads_before": list(heads_before.values()),
                "heads_after": [a.num_attention_heads for a in attention.values()],
                "ffn_neurons_before": list(ffn_before.values()),
                "ffn_neurons_after": [m.out_features for m in ffn.values()],
                "pruned_heads": {str(k): v for k, v in sorted(module.config.pruned_heads.items())}}

    @staticmethod
    def _write_bert_shape(module: Any, attention: dict[int, Any], removed: dict[int, list[int]]) -> None:
        """Makes the module and its config agree with the pruned weights, so from_pretrained rebuilds it exactly.

        `config.num_attention_heads` keeps the original count: from_pretrained builds the full layer and then
        drops `config.pruned_heads` (indices in the original numbering), as transformers' own prune_heads does.
        """
        config = module.config
        pruned = {int(k): list(v) for k, v in (config.pruned_heads or {}).items()}
        for layer, att in attention.items():
            alive = [h for h in range(config.num_attention_heads) if h not in set(pruned.get(layer, []))]
            if removed.get(layer):
                pruned[layer] = sorted(set(pruned.get(layer, [])) | {alive[h] for h in removed[layer]})
            att.all_head_size = att.query.out_features
            att.num_attention_heads = att.all_head_size // att.attention_head_size
            owner: Any = module.get_submodule(_attention_owner(module, att))
            owner.pruned_heads = set(pruned.get(layer, []))
        config.pruned_heads = {k: v for k, v in pruned.items() if v}
        widths = {m.out_features for m in _ffn_modules(module).values()}
        if len(widths) != 1:
            raise PassError(f"FFN widths differ across layers ({sorted(widths)}): BERT's config cannot describe that")
        config.intermediate_size = widths.pop()

    def _recover(self, module: nn.Module, parent: nn.Module, variant: Variant, ctx: PassContext,
                 encoder: Encoder) -> list[dict[str, float]]:
        from optikit.training import fit

        c = self.config
        if c.recover == "none" or c.recover_epochs == 0:
            return []
        train_config = c.train_config(format_defaults(variant.format), c.recover_epochs, ctx.seed)
        loss_fn = DistillLoss(parent, c.temperature, c.alpha) if c.recover == "distill" else None
        return fit(module, ctx.split(variant, "train"), encoder, train_config,
                   validation=ctx.split(variant, "validation"), loss_fn=loss_fn, desc=f"{self.name} {c.recover}",
                   guard=c.training_guard(f"{self.name} recover={c.recover}"))

    @staticmethod
    def _check_reload(module: nn.Module, out: Path, architecture: dict[str, Any] | None,
                      example: dict[str, torch.Tensor]) -> float:
        """Rebuilds the saved model the way every later step will, and insists on the same logits."""
        import torch
        from safetensors.torch import load_file

        from optikit.models import load_hf_classifier

        if architecture is not None:
            rebuilt = build_architecture(architecture)
            rebuilt.load_state_dict(load_file(str(out / "model.safetensors")))
        else:
            rebuilt = load_hf_classifier(out)
        with torch.inference_mode():
            diff = float((torch_forward(module.eval(), example) - torch_forward(rebuilt.eval(), example)).abs().max())
        if diff > RELOAD_TOLERANCE:
            raise PassError(f"the pruned model does not reload to the same logits (max |Δ| {diff:.2e})")
        return diff


def _strongest_head(att: Any) -> int:
    """The head with the largest query/key/value weight norm."""
    size = att.attention_head_size
    norms = sum(lin.weight.detach().view(-1, size, lin.weight.shape[1]).pow(2).sum((1, 2))
                for lin in (att.query, att.key, att.value))
    return int(norms.argmax())


def _attention_owner(module: nn.Module, att: nn.Module) -> str:
    """The BertAttention that owns `att`: it records pruned heads for transformers' own prune_heads."""
    for name, m in module.named_modules():
        if m is att:
            return name.rsplit(".", 1)[0]
    raise PassError("attention module not found in its model")
