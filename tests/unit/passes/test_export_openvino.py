"""export-openvino: an OpenVINO IR that matches its torch or ONNX source in fp32, runs in bf16 and NNCF int8, and
refuses what it cannot do (options for another precision, an already int8 model, a missing extra) before any work."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from optikit.errors import ConfigError, MissingDependencyError
from optikit.models import Encoder, count_parameters, load_module, torch_forward
from optikit.passes.base import make_pass, plan_chain
from optikit.variant import Variant, load_variant
from tests.conftest import pass_context

pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def ovctx(tmp_path_factory: pytest.TempPathFactory):
    return pass_context(tmp_path_factory.mktemp("ovariants"))


@pytest.fixture(scope="module")
def digits_ov(digits_teacher: Variant, ovctx) -> Variant:
    return make_pass("export-openvino").run(digits_teacher, ovctx)


def torch_logits(variant: Variant, feeds: dict[str, np.ndarray]) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return torch_forward(load_module(variant), {k: torch.from_numpy(v) for k, v in feeds.items()}).numpy()


def ov_logits(variant: Variant, feeds: dict[str, np.ndarray]) -> np.ndarray:
    from optikit.runners import OpenVinoRunner

    return OpenVinoRunner(variant, threads=1).logits(feeds)


def test_fp32_export_of_the_digits_cnn_matches_torch_at_batch_1_and_7(digits_teacher, digits_ov, ovctx):
    assert digits_ov.format == "openvino" and load_variant(digits_ov.path).format == "openvino"
    assert (digits_ov.path / "model.xml").is_file() and (digits_ov.path / "model.bin").is_file()
    assert digits_ov.report["validation"]["agreement"] == 1.0
    assert digits_ov.report["validation"]["max_abs_diff"] <= 1e-3
    data = ovctx.split(digits_teacher, "test")
    for n in (1, 7):  # a dynamic batch: the IR was converted from a batch of 2
        feeds = Encoder(digits_teacher).encode(data.inputs[:n])
        got, want = ov_logits(digits_ov, feeds), torch_logits(digits_teacher, feeds)
        assert got.shape == (n, 10)
        np.testing.assert_array_equal(got.argmax(-1), want.argmax(-1))
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_fp32_export_runs_in_f32_even_where_the_cpu_defaults_to_bf16(digits_ov):
    from optikit.runners import OpenVinoRunner

    info = OpenVinoRunner(digits_ov, threads=1).info()
    assert (info["precision_requested"], info["precision"]) == ("f32", "f32")
    assert digits_ov.report["inference_precision"] == "f32"


def test_an_onnx_variant_converts_and_matches_its_source(digits_teacher, ovctx):
    onnx = make_pass("export-onnx").run(digits_teacher, ovctx)
    ov = make_pass("export-openvino").run(onnx, ovctx)
    assert ov.report["source_format"] == "onnx" and ov.report["inputs"] == ["pixel_values"]
    feeds = Encoder(digits_teacher).encode(ovctx.split(digits_teacher, "test").inputs[:20])
    np.testing.assert_allclose(ov_logits(ov, feeds), torch_logits(digits_teacher, feeds), atol=1e-4)


def test_size_counts_the_ir_files_and_the_same_parameters_as_torch(digits_teacher, digits_ov):
    from optikit.harness.size import measure_size

    size = measure_size(digits_ov)
    assert set(size.files) == {"model.xml", "model.bin"}
    assert size.weight_bytes == size.bytes_on_disk == sum(size.files.values())
    assert size.parameters == count_parameters(load_module(digits_teacher))[0]


def test_int8_quantizes_with_nncf_and_stays_near_the_teacher(digits_teacher, ovctx):
    pytest.importorskip("nncf")
    import openvino as ov

    int8 = make_pass("export-openvino:precision=int8").run(digits_teacher, ovctx)
    ops = {op.get_type_name() for op in ov.Core().read_model(str(int8.path / "model.xml")).get_ordered_ops()}
    assert "FakeQuantize" in ops
    assert int8.report["nncf"]["calibration"] == {"split": "calibration", "samples": 128}
    test = ovctx.split(digits_teacher, "test")
    feeds = Encoder(digits_teacher).encode(test.inputs)
    teacher_acc = np.mean(torch_logits(digits_teacher, feeds).argmax(-1) == test.labels)
    int8_acc = np.mean(ov_logits(int8, feeds).argmax(-1) == test.labels)
    assert int8_acc >= teacher_acc - 0.05


def test_int8_with_max_loss_reports_the_accuracy_it_measured(digits_teacher, ovctx):
    pytest.importorskip("nncf")
    int8 = make_pass("export-openvino:precision=int8,max_loss=0.02").run(digits_teacher, ovctx)
    aware = int8.report["nncf"]["accuracy_aware"]
    assert aware["max_loss"] == 0.02
    assert aware["loss"] == pytest.approx(aware["baseline_accuracy"] - aware["accuracy"])
    assert aware["within_budget"] == (aware["loss"] <= 0.02 + 1e-12)
    assert aware["baseline_accuracy"] > 0.5  # the fp32 IR on the validation split: the tiny CNN is trained


def test_bf16_runs_and_records_which_precision_the_cpu_used(digits_teacher, ovctx):
    import openvino as ov

    bf16 = make_pass("export-openvino:precision=bf16").run(digits_teacher, ovctx)
    assert bf16.report["inference_precision"] == "bf16"
    # Where the CPU has no bf16, OpenVINO compiles in f32; the runner reports what was compiled either way.
    has_bf16 = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    from optikit.runners import OpenVinoRunner

    info = OpenVinoRunner(bf16, threads=1).info()
    assert info["precision_requested"] == "bf16" and info["precision"] == ("bf16" if has_bf16 else "f32")
    assert bf16.report["inference_precision_here"] == info["precision"]
    assert bf16.report["validation"]["agreement"] >= 0.95


def test_text_model_exports_and_its_predictions_agree(text_teacher, ovctx):
    ov = make_pass("export-openvino").run(text_teacher, ovctx)
    assert set(ov.report["inputs"]) == {"input_ids", "attention_mask", "token_type_ids"}
    assert (ov.path / "tokenizer.json").is_file() or (ov.path / "vocab.txt").is_file()
    texts = list(ovctx.split(text_teacher, "test").inputs[:24])
    feeds = Encoder(ov).encode(texts)  # the IR's own tokenizer, padded batch
    got, want = ov_logits(ov, feeds), torch_logits(text_teacher, feeds)
    np.testing.assert_array_equal(got.argmax(-1), want.argmax(-1))
    np.testing.assert_allclose(got, want, atol=1e-3)


def test_text_model_int8_is_quantized_as_a_transformer(text_teacher, ovctx):
    pytest.importorskip("nncf")
    int8 = make_pass("export-openvino:precision=int8,subset_size=32").run(text_teacher, ovctx)
    assert int8.report["nncf"]["model_type"] == "transformer"
    assert int8.report["nncf"]["calibration"]["samples"] <= 32
    assert int8.report["validation"]["agreement"] >= 0.8


@pytest.mark.parametrize("spec", ["export-openvino:max_loss=0.01", "export-openvino:precision=bf16,preset=mixed",
                                  "export-openvino:subset_size=10"])
def test_int8_only_options_are_refused_for_other_precisions(spec):
    with pytest.raises(ConfigError, match=r"applies to precision=int8 only.*set precision=int8"):
        make_pass(spec)


def test_an_already_quantized_model_is_refused_for_int8_before_any_work(digits_teacher, ovctx):
    from optikit.passes.base import run_chain

    *_, int8 = run_chain(digits_teacher, [make_pass("export-onnx"), make_pass("quantize:mode=dynamic")], ovctx)
    with pytest.raises(ConfigError, match="already quantized"):
        make_pass("export-openvino:precision=int8").run(int8, ovctx)


def test_nothing_can_follow_it_in_a_chain():
    with pytest.raises(ConfigError, match=r"cannot take a openvino model at step 2"):
        plan_chain("torch", [make_pass("export-openvino"), make_pass("prune-unstructured")])


@pytest.mark.parametrize(("spec", "module"), [("export-openvino", "openvino"),
                                              ("export-openvino:precision=int8", "nncf")])
def test_a_missing_extra_is_named_before_any_work(monkeypatch, spec, module):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == module else real(name, *a))
    with pytest.raises(MissingDependencyError, match=rf"^{module} is not installed: pip install 'optikit\[openvino\]'$"):
        make_pass(spec)


def test_fp32_does_not_need_nncf(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nncf" else real(name, *a))
    assert make_pass("export-openvino").config.precision == "fp32"
