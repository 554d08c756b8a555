"""prune-structured: whole channels, heads and FFN neurons go; the smaller model reloads exactly and exports."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from optikit.errors import ConfigError
from optikit.models import Encoder, build_architecture, count_parameters, load_module, torch_forward
from optikit.passes.base import make_pass
from optikit.passes.prune_structured import StructuredPrune, StructuredPruneConfig
from optikit.training import evaluate_loss


def _prune(teacher, ctx, **options):
    return StructuredPrune(StructuredPruneConfig(**options)).run(teacher, ctx)


def _validation_accuracy(variant, ctx) -> float:
    return evaluate_loss(load_module(variant), ctx.split(variant, "validation"), Encoder(variant))[1]


def test_structured_prune_cnn_removes_channels_and_lowers_parameters_and_macs(digits_teacher, ctx):
    child = _prune(digits_teacher, ctx, amount=0.5)
    report = child.report
    assert report["channels_before"] == [8, 16, 16] and report["channels_after"] == [4, 8, 8]
    assert report["hidden_before"] == 32 and report["hidden_after"] == 16
    assert report["parameters_after"] < 0.5 * report["parameters_before"]
    assert report["macs_after"] < 0.5 * report["macs_before"]


def test_structured_prune_cnn_architecture_rebuilds_the_saved_weights_exactly(digits_teacher, ctx):
    child = _prune(digits_teacher, ctx, amount=0.5)
    assert child.architecture == {**digits_teacher.architecture, "channels": [4, 8, 8], "hidden": 16}
    module = load_module(child)  # strict load_state_dict into build_architecture(child.architecture)
    assert count_parameters(module)[0] == child.report["parameters_after"]
    assert count_parameters(build_architecture(child.architecture))[0] == child.report["parameters_after"]
    images = ctx.split(child, "validation").inputs[:5]
    assert torch_forward(module, {"pixel_values": torch.from_numpy(images)}).shape == (5, 10)  # classes kept
    assert child.report["reload_max_abs_diff"] == 0.0


@pytest.mark.parametrize("importance", ["l1", "l2", "taylor", "random"])
def test_structured_prune_accepts_every_importance(digits_teacher, ctx, importance):
    child = _prune(digits_teacher, ctx, amount=0.5, importance=importance)
    assert child.report["channels_after"] == [4, 8, 8]


def test_structured_prune_global_scope_ranks_channels_across_layers(digits_teacher, ctx):
    child = _prune(digits_teacher, ctx, amount=0.5, scope="global")
    report = child.report
    assert report["parameters_after"] < report["parameters_before"]
    assert all(c >= 1 for c in report["channels_after"])
    # One threshold for all layers: the layers need not lose the same share.
    kept = [a / b for a, b in zip(report["channels_after"], report["channels_before"], strict=True)]
    assert kept != [0.5, 0.5, 0.5] or report["hidden_after"] != 16
    load_module(child)


def test_structured_prune_recovery_improves_or_keeps_validation_accuracy(digits_teacher, ctx):
    plain = _validation_accuracy(_prune(digits_teacher, ctx, amount=0.5), ctx)
    finetuned = _prune(digits_teacher, ctx, amount=0.5, recover="finetune", recover_epochs=2)
    distilled = _prune(digits_teacher, ctx, amount=0.5, recover="distill", recover_epochs=2)
    assert len(finetuned.report["recovery"]) == 2 and len(distilled.report["recovery"]) == 2
    assert _validation_accuracy(finetuned, ctx) >= plain
    assert _validation_accuracy(distilled, ctx) >= plain
    assert distilled.report["validation_accuracy_after"] == pytest.approx(_validation_accuracy(distilled, ctx), abs=1e-4)


def test_structured_prune_bert_removes_heads_and_ffn_neurons_keeping_hidden_size(text_teacher, ctx):
    child = _prune(text_teacher, ctx, amount=0.5)
    report = child.report
    assert report["heads_before"] == [4, 4] and report["heads_after"] == [2, 2]
    assert report["ffn_neurons_before"] == [128, 128] and report["ffn_neurons_after"] == [64, 64]
    assert report["parameters_after"] < report["parameters_before"]
    assert report["macs_after"] < 0.6 * report["macs_before"]
    module = load_module(child)
    assert module.config.hidden_size == 64 and module.config.intermediate_size == 64
    assert module.bert.encoder.layer[0].attention.output.dense.out_features == 64
    assert module.classifier.out_features == 3


def test_structured_prune_bert_reloads_with_plain_from_pretrained_exactly(text_teacher, ctx):
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    child = _prune(text_teacher, ctx, amount=0.5)
    assert child.report["reload_max_abs_diff"] == 0.0  # the pass compared the live pruned model with a reload
    model, info = AutoModelForSequenceClassification.from_pretrained(str(child.path), output_loading_info=True)
    assert not any(info.values()), info  # every weight came from the file, none freshly initialised
    saved = load_file(str(child.path / "model.safetensors"))
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved.items() if k in state)
    feeds = {k: torch.from_numpy(v) for k, v in Encoder(child).encode(["camera image detection", "docker"]).items()}
    again = AutoModelForSequenceClassification.from_pretrained(str(child.path)).eval()
    with torch.inference_mode():
        assert torch.equal(model.eval()(**feeds).logits, again(**feeds).logits)


def test_structured_prune_bert_targets_heads_only_keeps_the_ffn(text_teacher, ctx):
    child = _prune(text_teacher, ctx, amount=0.5, targets=("heads",))
    assert child.report["heads_after"] == [2, 2]
    assert child.report["ffn_neurons_after"] == [128, 128]


def test_structured_prune_bert_twice_records_heads_in_the_original_numbering(text_teacher, ctx):
    once = _prune(text_teacher, ctx, amount=0.5, targets=("heads",))
    twice = _prune(once, ctx, amount=0.5, targets=("heads",))
    assert twice.report["heads_after"] == [1, 1]
    for layer, heads in twice.report["pruned_heads"].items():
        assert set(once.report["pruned_heads"][layer]) < set(heads) and len(heads) == 3
    assert twice.report["reload_max_abs_diff"] == 0.0


@pytest.mark.parametrize("fixture", ["digits_teacher", "text_teacher"])
def test_structured_prune_exports_to_onnx_via_the_chain(fixture, request, tmp_path):
    import optikit

    teacher = request.getfixturevalue(fixture)
    pruned, exported = optikit.compress_chain(teacher, ["prune-structured:amount=0.5", "export-onnx"],
                                              out=tmp_path, threads=1)
    assert pruned.format == teacher.format and exported.format == "onnx"
    assert (exported.path / "model.onnx").is_file()
    assert exported.report["validation"]["agreement"] == 1.0


def test_structured_prune_refuses_an_architecture_it_cannot_rebuild(digits_teacher, ctx):
    other = dataclasses.replace(digits_teacher, architecture={"name": "resnet-tiny"})
    with pytest.raises(ConfigError, match="can rebuild digits-cnn, image-cnn only"):
        StructuredPrune().run(other, ctx)


@pytest.mark.parametrize("spec, message", [
    ("prune-structured:amount=1.5", "amount must be in"),
    ("prune-structured:importance=hessian", "importance"),
    ("prune-structured:targets=heads,layers", "targets must be"),
    ("prune-structured:recover=retrain", "recover"),
    ("prune-structured:alpha=2", "alpha"),
])
def test_structured_prune_rejects_bad_options(spec, message):
    with pytest.raises(ConfigError, match=message):
        make_pass(spec)
