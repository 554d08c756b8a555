"""Passes on Hugging Face image classifiers (a tiny ResNet and ViT, made here): export-onnx, dynamic and static
int8, prune-structured (ResNet channels, rebuilt without pickle), distill into an any-size CNN, and the refusals."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from optikit.errors import ConfigError
from optikit.models import HF_PRUNED, Encoder, count_parameters, load_module, torch_forward
from optikit.passes.base import make_pass
from optikit.runners import load_runner
from optikit.training import evaluate_loss
from tests.image_helpers import (
    folder_dataset,
    image_context,
    image_variant,
    save_tiny_resnet,
    save_tiny_vit,
    train_briefly,
    write_shapes_folder,
)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return folder_dataset(write_shapes_folder(tmp_path_factory.mktemp("img") / "shapes"))


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory, shapes: Any) -> Any:
    return image_context(tmp_path_factory.mktemp("variants"), shapes)


@pytest.fixture(scope="module")
def resnet(tmp_path_factory: pytest.TempPathFactory, shapes: Any) -> Any:
    """The tiny ResNet, fitted a few epochs on the shapes so its predictions are not coin flips."""
    root = tmp_path_factory.mktemp("resnet")
    variant = image_variant(save_tiny_resnet(root / "saved"), root / "teacher", shapes)
    train_briefly(variant, shapes, epochs=6)
    return variant


@pytest.fixture(scope="module")
def vit(tmp_path_factory: pytest.TempPathFactory, shapes: Any) -> Any:
    root = tmp_path_factory.mktemp("vit")
    return image_variant(save_tiny_vit(root / "saved"), root / "teacher", shapes, name="tiny-vit")


@pytest.fixture(scope="module")
def resnet_onnx(resnet: Any, ctx: Any) -> Any:
    return make_pass("export-onnx").run(resnet, ctx)


def _logits(variant: Any, data: Any) -> np.ndarray:
    runner, encoder = load_runner(variant, 2), Encoder(variant)
    return np.concatenate([runner.logits(f) for f in encoder.batches(data, 8)])


def _one_line_refusal(spec: str, variant: Any, ctx: Any, match: str) -> None:
    before = set(ctx.workdir.iterdir()) if ctx.workdir.exists() else set()
    with pytest.raises(ConfigError, match=match) as exc:
        make_pass(spec).run(variant, ctx)
    assert "\n" not in str(exc.value)
    assert (set(ctx.workdir.iterdir()) if ctx.workdir.exists() else set()) == before  # refused before any work


def test_export_onnx_takes_pixel_values_with_a_dynamic_batch_and_keeps_the_processor(resnet: Any, resnet_onnx: Any,
                                                                                     shapes: Any) -> None:
    import onnxruntime as ort

    assert resnet_onnx.format == "onnx"
    assert resnet_onnx.report["validation"]["max_abs_diff"] < 1e-4
    assert resnet_onnx.report["validation"]["agreement"] == 1.0
    assert (resnet_onnx.path / "preprocessor_config.json").read_bytes() == \
        (resnet.path / "preprocessor_config.json").read_bytes()
    session = ort.InferenceSession(str(resnet_onnx.path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["pixel_values"]
    test = shapes.take(resnet.splits.test)
    for n in (1, 5):  # exported with a batch of 2: other batch sizes must run and match torch
        feeds = Encoder(resnet).encode(test.inputs[:n])
        got = session.run(None, feeds)[0]
        with torch.inference_mode():
            want = torch_forward(load_module(resnet), {"pixel_values": torch.from_numpy(feeds["pixel_values"])})
        np.testing.assert_allclose(got, want.numpy(), atol=1e-4)


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_int8_quantization_of_the_resnet_export_keeps_its_predictions(resnet_onnx: Any, ctx: Any, shapes: Any,
                                                                      mode: str) -> None:
    int8 = make_pass(f"quantize:mode={mode}").run(resnet_onnx, ctx)
    quantized = {"dynamic": "ConvInteger", "static": "QuantizeLinear"}[mode]
    assert int8.report["ops_after"].get(quantized, 0) > 0
    assert (int8.path / "preprocessor_config.json").is_file()
    test = shapes.take(resnet_onnx.splits.test)
    fp32, q = _logits(resnet_onnx, test), _logits(int8, test)
    assert np.mean(fp32.argmax(-1) == q.argmax(-1)) >= 0.9
    assert np.abs(fp32 - q).max() < 0.25 * np.abs(fp32).max()


def test_vit_exports_and_quantizes(vit: Any, ctx: Any) -> None:
    exported = make_pass("export-onnx").run(vit, ctx)
    assert exported.report["validation"]["agreement"] == 1.0
    int8 = make_pass("quantize").run(exported, ctx)
    assert int8.report["ops_after"].get("MatMulInteger", 0) > 0


def test_prune_structured_narrows_resnet_channels_into_a_rebuildable_torch_variant(resnet: Any, ctx: Any,
                                                                                  shapes: Any) -> None:
    pruned = make_pass("prune-structured:amount=0.5").run(resnet, ctx)
    report = pruned.report
    assert pruned.format == "torch" and pruned.architecture["name"] == HF_PRUNED
    assert report["channels_after"] == [max(1, c // 2) for c in report["channels_before"]]
    assert report["parameters_after"] < 0.6 * report["parameters_before"]
    assert report["macs_after"] < 0.6 * report["macs_before"]
    assert report["reload_max_abs_diff"] == 0.0
    # Reloaded from the manifest and safetensors alone (no pickle anywhere), classes kept, normalisation kept.
    assert sorted(p.name for p in pruned.path.iterdir()) == ["model.safetensors", "preprocessor_config.json",
                                                             "variant.json"]
    module = load_module(pruned)
    assert count_parameters(module)[0] == report["parameters_after"]
    accuracy = evaluate_loss(module, shapes.take(pruned.splits.validation), Encoder(pruned))[1]
    assert accuracy == pytest.approx(report["validation_accuracy_pruned"])
    # The pruned model still goes on: ONNX export matches it.
    exported = make_pass("export-onnx").run(pruned, ctx)
    assert exported.report["validation"]["max_abs_diff"] < 1e-4


def test_prune_structured_refuses_vit_in_one_line_before_any_work(vit: Any, ctx: Any) -> None:
    _one_line_refusal("prune-structured", vit, ctx, "conv channels of resnet image classifiers, not 'vit'")


def test_distill_auto_trains_an_image_cnn_student_shaped_by_the_teacher(resnet: Any, ctx: Any, shapes: Any) -> None:
    student = make_pass("distill:epochs=3").run(resnet, ctx)
    assert student.format == "torch"
    assert student.report["student"] == "image-cnn-small"
    arch = student.architecture
    assert (arch["name"], arch["in_channels"], arch["image_size"], arch["num_classes"]) == ("image-cnn", 3, 32, 3)
    assert student.report["student_parameters"] < student.report["teacher_parameters"] * 40  # a real, small CNN
    # The student learnt on normalised pixels, so it carries the teacher's processor and gets the same inputs.
    pixels = shapes.inputs[:4]
    np.testing.assert_array_equal(Encoder(student).encode(pixels)["pixel_values"],
                                  Encoder(resnet).encode(pixels)["pixel_values"])
    assert _logits(student, shapes.take(student.splits.test)).shape == (len(student.splits.test), 3)


def test_distill_refuses_students_that_cannot_take_an_image_teacher(vit: Any, ctx: Any) -> None:
    _one_line_refusal("distill:student=cnn-small", vit, ctx, "fixed input channel count.*student=image-cnn-small")
    _one_line_refusal("distill:student=minilm-l3", vit, ctx, "image classifier: use distill:student=image-cnn-small")
