"""distill: a smaller student learns from the teacher; hf students stay plain transformers checkpoints."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import optikit
from optikit.errors import ConfigError
from optikit.models import Encoder, load_module, torch_forward
from optikit.passes.base import make_pass
from optikit.passes.distill import Distill, DistillConfig, evenly_spaced, load_student
from optikit.recipes import builtin_recipes
from tests.conftest import teach_recipe_text

# A digits teacher clearly better than cnn-small can be on its own, so the teacher has something to teach
# (the session's 6-epoch digits_teacher is about as good as the student and would teach it its mistakes).
STRONG_DIGITS_RECIPE = """
name = "digits-cnn-strong"
description = "digits-cnn 16/32/32, for distillation tests"
format = "torch"
[architecture]
name = "digits-cnn"
channels = [16, 32, 32]
hidden = 64
num_classes = 10
[data]
source = "digits"
[train]
epochs = 15
learning_rate = 0.005
batch_size = 64
seed = 0
"""

ONE_LAYER_STUDENT = """
name = "bert-l1"
description = "keeps one layer of a 2-layer test BERT"
format = "hf"
checkpoint = "teacher"
[student]
kind = "layer-subset"
layers = 1
"""

TEXT_OPTIONS = {"epochs": 3, "learning_rate": 0.003, "batch_size": 8}
# One digits distillation shared by several tests (same config → same variant id → reused from digits_out).
DISTILLED = "distill:student=cnn-small,epochs=20,temperature=4,alpha=0.7"


@pytest.fixture(scope="module")
def strong_teacher(tmp_path_factory: pytest.TempPathFactory, optikit_home: Path):
    return teach_recipe_text(tmp_path_factory, "digits-cnn-strong.toml", STRONG_DIGITS_RECIPE)


@pytest.fixture(scope="module")
def digits_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("distill-digits")


@pytest.fixture(scope="module")
def distilled(strong_teacher, digits_out):
    return optikit.compress(strong_teacher, [DISTILLED], out=digits_out)


@pytest.fixture(scope="module")
def one_layer_student(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("students") / "bert-l1.toml"
    path.write_text(ONE_LAYER_STUDENT)
    return str(path)


def _logits(variant, data) -> np.ndarray:
    import torch

    module, encoder = load_module(variant), Encoder(variant)
    with torch.inference_mode():
        return np.concatenate([torch_forward(module, {k: torch.from_numpy(v) for k, v in feeds.items()}).numpy()
                               for feeds in encoder.batches(data, 64)])


@pytest.mark.parametrize("name", sorted(builtin_recipes("students")))
def test_student_recipes_parse_into_a_known_kind(name: str) -> None:
    recipe, spec = load_student(name)
    assert recipe.name == name
    assert spec.kind == {"torch": "architecture", "hf": "layer-subset"}[recipe.format]


def test_student_recipes_are_listed_by_the_cli() -> None:
    from click.testing import CliRunner

    from optikit.cli import cli

    result = CliRunner().invoke(cli, ["students"])
    assert result.exit_code == 0
    assert {"cnn-small", "minilm-l2", "minilm-l3"} <= {line.split(":")[0] for line in result.output.splitlines()}


def test_evenly_spaced_keeps_the_first_and_last_layers() -> None:
    assert evenly_spaced(6, 3) == (0, 3, 5)
    assert evenly_spaced(6, 2) == (0, 5)
    assert evenly_spaced(12, 4) == (0, 4, 7, 11)
    assert evenly_spaced(2, 1) == (0,)


def test_distill_student_is_smaller_and_keeps_the_task(strong_teacher, distilled, ctx) -> None:
    student, report = distilled, distilled.report
    validation = ctx.split(strong_teacher, "validation")

    assert student.format == "torch"
    assert student.architecture["name"] == "digits-cnn" and student.architecture["num_classes"] == 10
    assert report["student_parameters"] < report["teacher_parameters"] / 4
    assert student.task.label_names == strong_teacher.task.label_names
    assert _logits(student, validation).shape == (len(validation), 10)
    assert report["teacher_logits_cached"] and 1 <= len(report["history"]) <= 20


def test_distill_matches_or_beats_the_same_student_trained_without_the_teacher(strong_teacher, distilled,
                                                                               digits_out) -> None:
    # alpha=0 is plain cross-entropy on the labels: the same student, seed and schedule, without the teacher.
    alone = optikit.compress(strong_teacher, [DISTILLED.replace("alpha=0.7", "alpha=0")], out=digits_out).report
    report = distilled.report

    assert report["val_accuracy"] > 0.8  # chance is 0.1
    assert report["val_loss"] <= alone["val_loss"] * 1.05
    assert report["teacher_val_accuracy"] == alone["teacher_val_accuracy"] > 0.9


def test_distill_hf_student_keeps_a_layer_subset_and_reloads_with_from_pretrained(
        text_teacher, one_layer_student, ctx) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    student = Distill(DistillConfig(student=one_layer_student, **TEXT_OPTIONS)).run(text_teacher, ctx)
    report = student.report
    reloaded = AutoModelForSequenceClassification.from_pretrained(str(student.path), local_files_only=True)

    assert student.format == "hf"
    assert report["layers_kept"] == [0]
    assert reloaded.config.num_hidden_layers == 1 and len(reloaded.bert.encoder.layer) == 1
    assert reloaded.config.id2label == load_module(text_teacher).config.id2label
    assert report["student_parameters"] < report["teacher_parameters"]
    assert AutoTokenizer.from_pretrained(str(student.path), local_files_only=True).vocab_size > 1000
    assert report["val_accuracy"] > 0.6  # three classes: chance is 1/3


def test_distill_hidden_state_loss_pairs_each_student_layer_with_its_source(text_teacher, one_layer_student,
                                                                             ctx) -> None:
    report = Distill(DistillConfig(student=one_layer_student, hidden_weight=1.0, **TEXT_OPTIONS)).run(
        text_teacher, ctx).report

    assert report["hidden_pairs"] == 1
    assert not report["teacher_logits_cached"]  # hidden states need the teacher on every batch
    assert all(math.isfinite(row["train_loss"]) for row in report["history"])


def test_distill_rejects_a_student_with_as_many_layers_as_the_teacher(text_teacher, tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"keeps 2 layers but teacher .* has only 2: use a recipe with \[student\] "
                                          r"layers < 2"):
        optikit.compress_chain(text_teacher, ["distill:student=minilm-l2"], out=tmp_path)


def test_distill_rejects_a_student_made_for_the_other_format(text_teacher, tmp_path) -> None:
    with pytest.raises(ConfigError, match="needs a torch teacher.*distill:student=minilm-l3"):
        optikit.compress_chain(text_teacher, ["distill:student=cnn-small"], out=tmp_path)


def test_distill_after_quantize_is_rejected_when_planning() -> None:
    from optikit.passes.base import plan_chain

    with pytest.raises(ConfigError, match="move distill before quantize"):
        plan_chain("torch", [make_pass("quantize:backend=torch"), make_pass("distill:student=cnn-small")])


def test_distill_hidden_weight_needs_layers_of_equal_width(strong_teacher, ctx) -> None:
    with pytest.raises(ConfigError, match="hidden_weight=0"):
        Distill(DistillConfig(student="cnn-small", hidden_weight=1.0, epochs=1)).run(strong_teacher, ctx)


@pytest.mark.parametrize(("spec", "fix"), [
    ("distill:alpha=2", r"alpha must be in \[0, 1\]"),
    ("distill:temperature=0", "temperature must be > 0"),
    ("distill:student=no-such-student", "known students are cnn-small, image-cnn-small, minilm-l2, minilm-l3"),
    ("distill:epochs=0", "epochs must be ≥ 1"),
])
def test_distill_config_rejects_bad_options_naming_the_fix(spec: str, fix: str) -> None:
    with pytest.raises(ConfigError, match=fix):
        make_pass(spec)


def test_distill_config_records_the_student_recipe_so_edits_change_the_variant_id(tmp_path) -> None:
    path = tmp_path / "bert-l1.toml"
    path.write_text(ONE_LAYER_STUDENT)
    before = DistillConfig(student=str(path))
    path.write_text(ONE_LAYER_STUDENT.replace("layers = 1", "layers = [1]"))
    after = DistillConfig(student=str(path))

    assert before.recipes["student"]["extra"] == {"kind": "layer-subset", "layers": 1}
    assert before != after


def test_distill_chains_with_export_onnx_and_quantize(strong_teacher, distilled, digits_out) -> None:
    produced = optikit.compress_chain(strong_teacher, [DISTILLED, "export-onnx", "quantize"], out=digits_out)

    assert [v.format for v in produced] == ["torch", "onnx", "onnx"]
    assert produced[0].id == distilled.id
    assert [s.pass_name for s in produced[-1].lineage] == ["distill", "export-onnx", "quantize"]
    assert (produced[-1].path / "model.onnx").is_file()
    assert produced[1].report["validation"]["agreement"] >= 0.995


def test_subset_layers_renumbers_pruned_heads_so_the_student_round_trips(tmp_path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

    from optikit.passes.distill import subset_layers

    torch.manual_seed(0)
    teacher = BertForSequenceClassification(BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=16, num_labels=3)).eval()
    teacher.prune_heads({2: [0, 1]})  # what prune-structured leaves behind
    student = subset_layers(teacher, (0, 2))
    student.save_pretrained(str(tmp_path), safe_serialization=True)
    reloaded = AutoModelForSequenceClassification.from_pretrained(str(tmp_path), local_files_only=True).eval()
    ids = torch.tensor([[1, 5, 7, 2], [1, 9, 2, 0]])

    assert student.config.pruned_heads == {1: [0, 1]} and student.config.num_hidden_layers == 2
    assert len(teacher.bert.encoder.layer) == 3  # the teacher is left whole
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, student(input_ids=ids).logits)
