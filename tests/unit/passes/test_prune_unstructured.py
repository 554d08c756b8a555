"""prune-unstructured: magnitude pruning zeroes the asked share of the chosen weights, and nothing else."""
from __future__ import annotations

import pytest
import torch

from optikit.errors import ConfigError
from optikit.models import Encoder, load_module, torch_forward
from optikit.passes.base import make_pass
from optikit.passes.prune_unstructured import UnstructuredPrune, UnstructuredPruneConfig


def _prune(teacher, ctx, **options):
    return UnstructuredPrune(UnstructuredPruneConfig(**options)).run(teacher, ctx)


def _zero_share(weight: torch.Tensor) -> float:
    return float((weight == 0).sum()) / weight.numel()


def _logits(variant, ctx, n: int = 8) -> torch.Tensor:
    data = ctx.split(variant, "validation").take(list(range(n)))
    feeds = {k: torch.from_numpy(v) for k, v in Encoder(variant).encode(data.inputs).items()}
    with torch.inference_mode():
        return torch_forward(load_module(variant), feeds)


def test_unstructured_prune_zeroes_the_amount_of_the_selected_weights(digits_teacher, ctx):
    child = _prune(digits_teacher, ctx, amount=0.5, scope="global")
    pruned = load_module(child)
    layers = child.report["layers"]
    selected = [dict(pruned.named_modules())[name].weight for name in layers]
    zeros = sum(int((w == 0).sum()) for w in selected)
    assert zeros / sum(w.numel() for w in selected) == pytest.approx(0.5, abs=0.005)
    assert child.report["sparsity_selected"] == pytest.approx(0.5, abs=0.005)
    # The non-zero count drops by about amount × the selected weights, not by amount × everything.
    dropped = child.report["nonzero_before"] - child.report["nonzero_after"]
    assert dropped == pytest.approx(0.5 * sum(w.numel() for w in selected), rel=0.02)


def test_unstructured_prune_layer_scope_gives_each_layer_the_amount(digits_teacher, ctx):
    child = _prune(digits_teacher, ctx, amount=0.3, scope="layer")
    assert child.report["layers"]
    for share in child.report["layers"].values():
        assert share == pytest.approx(0.3, abs=0.01)


def test_unstructured_prune_keeps_format_and_output_shape(digits_teacher, ctx):
    child = _prune(digits_teacher, ctx, amount=0.5)
    assert child.format == "torch"
    assert child.architecture == digits_teacher.architecture
    assert _logits(child, ctx).shape == _logits(digits_teacher, ctx).shape == (8, 10)


def test_unstructured_prune_leaves_the_classifier_untouched_by_default(digits_teacher, ctx):
    child = _prune(digits_teacher, ctx, amount=0.8)
    before, after = load_module(digits_teacher), load_module(child)
    assert "13" not in child.report["layers"]  # digits-cnn's last Linear is module 13 of the Sequential
    assert torch.equal(before[13].weight, after[13].weight)
    assert _zero_share(after[10].weight) > 0.5


def test_unstructured_prune_prunes_the_classifier_when_asked(digits_teacher, ctx):
    child = _prune(digits_teacher, ctx, amount=0.5, scope="layer", prune_head=True)
    assert _zero_share(load_module(child)[13].weight) == pytest.approx(0.5, abs=0.01)


def test_unstructured_prune_respects_include_and_exclude(digits_teacher, ctx):
    child = _prune(digits_teacher, ctx, amount=0.5, scope="layer", include=("0", "2", "5"), exclude=("2",))
    before, after = load_module(digits_teacher), load_module(child)
    assert set(child.report["layers"]) == {"0", "5"}
    assert _zero_share(after[0].weight) == pytest.approx(0.5, abs=0.05)
    for index in (2, 13):
        assert torch.equal(before[index].weight, after[index].weight)


def test_unstructured_prune_rejects_patterns_that_match_no_layer(digits_teacher, ctx):
    with pytest.raises(ConfigError, match="no Linear or Conv layer matches"):
        _prune(digits_teacher, ctx, include=("encoder.*",))


def test_unstructured_prune_shrinks_compressed_bytes(digits_teacher, ctx):
    from optikit.harness.size import measure_size

    child = _prune(digits_teacher, ctx, amount=0.7)
    before, after = measure_size(digits_teacher), measure_size(child)
    assert after.compressed_bytes < 0.8 * before.compressed_bytes
    assert after.parameters == before.parameters  # same shapes: the zeros are still stored
    assert after.nonzero_parameters < before.nonzero_parameters


def test_unstructured_prune_report_says_zeros_are_not_faster(digits_teacher, ctx):
    note = _prune(digits_teacher, ctx).report["note"]
    assert "not faster" in note and "compressed bytes" in note


def test_unstructured_prune_finetune_keeps_the_zeros(digits_teacher, ctx):
    child = _prune(digits_teacher, ctx, amount=0.6, finetune_epochs=1)
    assert len(child.report["finetune"]) == 1
    assert child.report["sparsity_selected"] == pytest.approx(0.6, abs=0.005)  # masks stayed on while training
    assert child.report["validation_accuracy_after"] >= child.report["validation_accuracy_pruned"] - 0.02


def test_unstructured_prune_on_hf_keeps_format_tokenizer_and_classifier(text_teacher, ctx):
    from transformers import AutoModelForSequenceClassification

    child = _prune(text_teacher, ctx, amount=0.5)
    assert child.format == "hf"
    assert (child.path / "tokenizer.json").is_file() or (child.path / "vocab.txt").is_file()
    reloaded = AutoModelForSequenceClassification.from_pretrained(str(child.path), local_files_only=True)
    original = load_module(text_teacher)
    assert torch.equal(reloaded.classifier.weight, original.classifier.weight)
    assert not any(name.startswith("classifier") for name in child.report["layers"])
    assert _zero_share(reloaded.bert.encoder.layer[0].intermediate.dense.weight) > 0.2
    assert _logits(child, ctx).shape == _logits(text_teacher, ctx).shape


@pytest.mark.parametrize("spec, message", [
    ("prune-unstructured:amount=1.5", "amount must be in"),
    ("prune-unstructured:amount=0", "amount must be in"),
    ("prune-unstructured:scope=everywhere", "scope"),
    ("prune-unstructured:finetune_epochs=-1", "finetune_epochs"),
])
def test_unstructured_prune_rejects_bad_options(spec, message):
    with pytest.raises(ConfigError, match=message):
        make_pass(spec)
