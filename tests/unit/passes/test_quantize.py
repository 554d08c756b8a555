"""quantize: int8 weights really are int8, accuracy holds, the accuracy budget returns nodes to fp32."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from optikit.errors import ConfigError, MissingDependencyError
from optikit.passes._ort_quant import accuracy_aware
from optikit.passes.base import make_pass, plan_chain
from optikit.variant import Variant


def _ctx(tmp_path_factory: pytest.TempPathFactory):
    from optikit.passes.base import PassContext

    return PassContext(tmp_path_factory.mktemp("qvariants"), threads=2, seed=0)


@pytest.fixture(scope="module")
def mctx(tmp_path_factory: pytest.TempPathFactory):
    return _ctx(tmp_path_factory)


@pytest.fixture(scope="module")
def digits_onnx(digits_teacher: Variant, mctx) -> Variant:
    return make_pass("export-onnx").run(digits_teacher, mctx)


@pytest.fixture(scope="module")
def text_onnx(text_teacher: Variant, mctx) -> Variant:
    return make_pass("export-onnx").run(text_teacher, mctx)


def predictions(variant: Variant, ctx, split: str = "test") -> np.ndarray:
    from optikit.models import Encoder
    from optikit.runners import load_runner

    runner = load_runner(variant, 2)
    batches = Encoder(variant).batches(ctx.split(variant, split), 32)
    return np.concatenate([runner.logits(b) for b in batches]).argmax(-1)


def initializer_types(path: Path) -> dict[str, int]:
    import onnx

    return {i.name: i.data_type for i in onnx.load(str(path)).graph.initializer}


def weight_bytes(path: Path) -> int:
    import onnx

    return sum(len(i.SerializeToString()) for i in onnx.load(str(path)).graph.initializer)


# trial_seconds=0: every weighted op int8 (a timed trial may keep some in fp32: tests/unit/passes/test_quantize_auto.py)
@pytest.mark.parametrize("spec", ["quantize:mode=dynamic", "quantize:mode=static", "quantize:trial_seconds=0"])
def test_quantize_digits_keeps_predictions_and_stores_int8_weights(spec, digits_onnx, mctx):
    import onnx

    q = make_pass(spec).run(digits_onnx, mctx)
    types = initializer_types(q.path / "model.onnx")
    assert {"0.weight", "2.weight", "5.weight"}.isdisjoint(types)  # no fp32 copy of the conv weights is left
    assert sum(t == onnx.TensorProto.INT8 for t in types.values()) >= 5  # 3 convs + 2 dense layers
    assert np.mean(predictions(q, mctx) == predictions(digits_onnx, mctx)) >= 0.95
    assert q.report["ops_before"]["Conv"] == 3 and q.report["reduce_range_reason"]
    if "dynamic" not in spec:  # static, named or chosen by mode=auto for this convolutional graph
        assert q.report["calibration"]["method"] == "minmax" and q.report["calibration"]["samples"] >= 1
        assert q.report["ops_after"]["QuantizeLinear"] > 0
    else:
        assert q.report["ops_after"]["ConvInteger"] == 3
        # Weights shrink ~4x; the file also holds the graph, which is a large share of this 6k-parameter CNN.
        assert weight_bytes(digits_onnx.path / "model.onnx") >= 3 * weight_bytes(q.path / "model.onnx")
        assert (digits_onnx.path / "model.onnx").stat().st_size >= 2.5 * (q.path / "model.onnx").stat().st_size


def test_quantize_static_qoperator_makes_cnn_file_3x_smaller(digits_onnx, mctx):
    q = make_pass("quantize:mode=static,format=qoperator").run(digits_onnx, mctx)
    assert (digits_onnx.path / "model.onnx").stat().st_size >= 3 * (q.path / "model.onnx").stat().st_size
    assert q.report["ops_after"]["QLinearConv"] == 3


@pytest.mark.parametrize("spec", ["quantize", "quantize:mode=static"])
def test_quantize_tiny_bert_keeps_agreement(spec, text_onnx, mctx):
    q = make_pass(spec).run(text_onnx, mctx)
    assert np.mean(predictions(q, mctx) == predictions(text_onnx, mctx)) >= 0.95
    assert q.report["ops_after"].get("MatMulInteger", 0) + q.report["ops_after"].get("QuantizeLinear", 0) > 0
    assert (text_onnx.path / "model.onnx").stat().st_size >= 3 * (q.path / "model.onnx").stat().st_size


def test_quantize_static_caps_calibration_samples_at_the_split_and_says_so(digits_onnx, mctx):
    # More samples than the calibration split holds: calibrated on the whole split, both numbers in the report.
    held = len(digits_onnx.splits.calibration)
    q = make_pass("quantize:mode=static,calibration_samples=100000").run(digits_onnx, mctx)
    calibration = q.report["calibration"]
    assert (calibration["samples"], calibration["samples_asked"]) == (held, 100000)
    assert calibration["note"] == (f"calibration_samples=100000 but the calibration split holds {held}: calibrated "
                                   f"on {held} (set calibration_samples ≤ {held} to silence this)")


def test_calibration_count_takes_what_is_asked_when_the_split_holds_it():
    from optikit.passes._ort_quant import calibration_count

    assert calibration_count(16, 128) == (16, None) and calibration_count(128, 128) == (128, None)
    assert calibration_count(500, 31)[0] == 31


def test_quantize_max_loss_returns_sensitive_nodes_to_fp32(digits_onnx, mctx):
    # One calibration example: activation ranges are far too narrow, so the first try misses a 0-point budget.
    q = make_pass("quantize:mode=static,calibration_samples=1,max_loss=0.0").run(digits_onnx, mctx)
    report = q.report["accuracy_aware"]
    assert report["steps"][0]["loss"] > 0
    assert report["fp32_nodes"] and report["within_budget"]
    assert report["steps"][-1]["accuracy"] >= report["baseline_accuracy"]
    assert len(report["steps"]) == len(report["fp32_nodes"]) + 1
    assert set(report["sensitivity"]) >= set(report["fp32_nodes"])


def test_accuracy_aware_returns_nodes_most_sensitive_first():
    damage = {"a": 0.01, "b": 0.05, "c": 0.002}
    result = accuracy_aware(list(damage), 0.9, 0.02, lambda ex: 0.9 - sum(v for k, v in damage.items() if k not in ex),
                            lambda node: damage[node])
    assert result.fp32_nodes == ["b"] and result.within_budget
    assert [round(s["accuracy"], 3) for s in result.steps] == [0.838, 0.888]


def test_accuracy_aware_skips_sensitivity_when_first_try_is_within_budget():
    result = accuracy_aware(["a"], 0.9, 0.01, lambda ex: 0.9, lambda node: pytest.fail("not needed"))
    assert result.fp32_nodes == [] and result.within_budget and result.sensitivity == {}


def test_quantize_torch_backend_stores_fp32_weights_and_a_load_recipe(digits_teacher, mctx):
    import torch

    from optikit.models import load_module

    q = make_pass("quantize:backend=torch").run(digits_teacher, mctx)
    assert q.format == "torch" and q.report["modules_quantized"] == 2
    module = load_module(q)
    assert any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in module.modules())
    assert np.mean(predictions(q, mctx) == predictions(digits_teacher, mctx)) >= 0.95
    assert not list(q.path.glob("*.pt")) and not list(q.path.glob("*.bin"))  # nothing pickled
    with pytest.raises(ConfigError, match="export first"):
        make_pass("export-onnx").run(q, mctx)


def test_quantize_backend_decides_the_accepted_formats():
    assert [p.name for p, _ in plan_chain("torch", [make_pass("quantize")])] == ["export-onnx", "quantize"]
    assert [p.name for p, _ in plan_chain("hf", [make_pass("quantize:backend=torch")])] == ["quantize"]
    with pytest.raises(ConfigError, match="cannot take a onnx"):
        plan_chain("onnx", [make_pass("quantize:backend=torch")])


@pytest.mark.skipif(importlib.util.find_spec("neural_compressor") is not None, reason="neural-compressor installed")
def test_quantize_neural_compressor_names_the_missing_extra():
    with pytest.raises(MissingDependencyError, match=r"optikit\[inc\]"):
        make_pass("quantize:backend=neural-compressor")


@pytest.mark.parametrize("spec", ["quantize:mode=foo", "quantize:calibration_samples=0", "quantize:backend=tvm",
                                  "quantize:max_loss=-0.1", "quantize:backend=torch,mode=static",
                                  "quantize:calibration=median", "quantize:percentile=10"])
def test_quantize_rejects_bad_options(spec):
    with pytest.raises(ConfigError):
        make_pass(spec)


@pytest.mark.parametrize("level", ["extended", "all", "O4"])
def test_quantize_rejects_unquantizable_export_levels_when_planning(level):
    with pytest.raises(ConfigError, match="O1, O2, O3"):
        plan_chain("hf", [make_pass(f"export-onnx:optimize={level}"), make_pass("quantize")])


def test_quantize_optimum_backend_applies_its_preset_to_the_same_onnx_file(text_teacher, ctx):
    import optikit

    onnx_fp32, reference = optikit.compress_chain(text_teacher, ["export-onnx", "quantize:backend=optimum"],
                                                  out=ctx.workdir)
    assert reference.parent == onnx_fp32.id
    assert reference.report["backend"] == "optimum" and reference.report["preset"] == "avx512_vnni"
    assert reference.report["ops_after"].get("MatMulInteger", 0) > 0
    assert (reference.path / "model.onnx").stat().st_size < (onnx_fp32.path / "model.onnx").stat().st_size / 3


def test_quantize_optimum_backend_has_no_accuracy_budget():
    from optikit.errors import ConfigError
    from optikit.passes.base import make_pass

    with pytest.raises(ConfigError, match="backend=optimum does not use max_loss"):
        make_pass("quantize:backend=optimum,max_loss=0.01")


def test_quantize_with_no_options_is_static_for_a_cnn_and_dynamic_for_a_transformer(digits_onnx, text_onnx, mctx):
    # optikit issue 14: dynamic int8 makes ConvInteger, which has no fast ONNX Runtime kernel (the digits CNN ran
    # 8× slower than its fp32 parent); `quantize` with no options must not choose it for a convolutional graph.
    cnn, bert = make_pass("quantize").run(digits_onnx, mctx), make_pass("quantize").run(text_onnx, mctx)
    assert cnn.report["mode"] == "static" and cnn.report["mode_requested"] == "auto"
    assert "Conv node(s)" in cnn.report["mode_reason"] and cnn.report["calibration"]["split"] == "calibration"
    assert "ConvInteger" not in cnn.report["ops_after"] and cnn.report["ops_after"].get("QuantizeLinear", 0) > 0
    assert bert.report["mode"] == "dynamic" and bert.report["mode_reason"].startswith("dynamic: ")
    assert cnn.lineage[-1].label().startswith("quantize:") and "mode=auto" in cnn.lineage[-1].label()


def test_an_explicit_mode_always_wins_over_auto(digits_onnx, mctx):
    dynamic = make_pass("quantize:mode=dynamic").run(digits_onnx, mctx)
    assert dynamic.report["mode"] == "dynamic" and "mode_requested" not in dynamic.report
    assert dynamic.report["ops_after"].get("ConvInteger", 0) > 0  # what auto avoids


def test_a_torchscript_export_fuses_attention_and_dynamic_int8_quantizes_it(text_teacher, mctx):
    # optikit issue 14: fused Attention used to stay fp32 (dynamo exports do not fuse it; nothing quantized it).
    fused = make_pass("export-onnx:exporter=torchscript,optimize=O2").run(text_teacher, mctx)
    attention = fused.report["ops"].get("Attention", 0)
    assert fused.report["exporter"] == "torchscript" and attention >= 1
    q = make_pass("quantize").run(fused, mctx)
    ops = q.report["ops_after"]
    assert q.report["mode"] == "dynamic" and ops.get("QAttention", 0) == attention and "Attention" not in ops
    if fused.report["ops"].get("EmbedLayerNormalization"):  # the embedding table goes int8 with it
        assert ops.get("QEmbedLayerNormalization", 0) >= 1 and "EmbedLayerNormalization" not in ops
    assert np.mean(predictions(q, mctx) == predictions(fused, mctx)) >= 0.9
