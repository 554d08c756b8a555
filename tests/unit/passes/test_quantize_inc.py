"""quantize:backend=neural-compressor is INC's PT2E static int8 run by torch.compile: it executes on the tiny teachers,
keeps the validation accuracy within max_loss, stores no pickle, and every load rebuilds the graph it validated."""
from __future__ import annotations

import copy
import importlib.util
import json

import numpy as np
import pytest

import optikit
from optikit.errors import ConfigError, MissingDependencyError, ModelLoadError
from optikit.models import RUNTIME_QUANTIZATION, Encoder, apply_runtime_quantization, load_module
from optikit.passes.base import PassContext, make_pass
from optikit.runners import load_runner
from optikit.variant import Variant
from tests.conftest import pass_context

needs_inc = pytest.mark.skipif(importlib.util.find_spec("neural_compressor") is None,
                               reason="neural-compressor not installed (pip install 'optikit[inc]')")


@pytest.fixture(scope="module")
def inc_ctx(tmp_path_factory: pytest.TempPathFactory) -> PassContext:
    return pass_context(tmp_path_factory.mktemp("inc"))


@pytest.fixture(scope="module")
def inc_digits(digits_teacher: Variant, inc_ctx: PassContext) -> Variant:
    """The digits CNN through INC with an accuracy budget, so the tuning path runs too."""
    return make_pass("quantize:backend=neural-compressor,max_loss=0.02").run(digits_teacher, inc_ctx)


def validation_logits(variant: Variant, ctx: PassContext) -> tuple[np.ndarray, np.ndarray]:
    data = ctx.split(variant, "validation")
    runner = load_runner(optikit.load(variant.path), threads=2)
    logits = np.concatenate([runner.logits(b) for b in Encoder(variant).batches(data, 32)])
    return logits, np.asarray(data.labels)


@needs_inc
def test_inc_static_int8_keeps_the_digits_cnn_within_max_loss(inc_digits: Variant) -> None:
    manifest = json.loads((inc_digits.path / "variant.json").read_text(encoding="utf-8"))
    report = manifest["report"]
    assert (report["backend"], report["mode"]) == ("neural-compressor", "static")
    assert report["baseline_accuracy"] - report["validation_accuracy"] <= 0.02 + 1e-12
    tuning = report["accuracy_aware"]
    assert tuning["tuner"] == "neural_compressor.autotune" and tuning["within_budget"] is True
    assert tuning["trials"] and {"act_algo", "act_sym", "accuracy", "loss"} <= set(tuning["trials"][0])
    assert tuning["kept"] == report["config"] == manifest["architecture"][RUNTIME_QUANTIZATION]["config"]


@needs_inc
def test_inc_variant_stores_fp32_safetensors_and_a_json_recipe_never_a_pickle(inc_digits: Variant,
                                                                             digits_teacher: Variant) -> None:
    assert sorted(p.name for p in inc_digits.path.iterdir()) == ["model.safetensors", "variant.json"]
    assert (inc_digits.path / "model.safetensors").read_bytes() == (digits_teacher.path / "model.safetensors").read_bytes()
    recipe = json.loads((inc_digits.path / "variant.json").read_text(encoding="utf-8"))["architecture"][
        RUNTIME_QUANTIZATION]
    assert recipe["kind"] == "inc-pt2e-static"
    assert recipe["inputs"] == [{"name": "pixel_values", "shape": [32, 1, 8, 8], "dtype": "float32"}]
    # One (scale, zero point) per activation q/dq node; uint8 activations after ReLU start at zero.
    assert len(recipe["activation_qparams"]) >= 8
    assert all(scale > 0 and 0 <= zero_point <= 255 for scale, zero_point in recipe["activation_qparams"])


@needs_inc
def test_inc_reload_gives_the_predictions_the_pass_validated(inc_digits: Variant, inc_ctx: PassContext,
                                                             digits_teacher: Variant) -> None:
    first, labels = validation_logits(inc_digits, inc_ctx)
    second, _ = validation_logits(inc_digits, inc_ctx)
    report = json.loads((inc_digits.path / "variant.json").read_text(encoding="utf-8"))["report"]
    assert float(np.mean(first.argmax(-1) == labels)) == report["validation_accuracy"]
    np.testing.assert_array_equal(first, second)  # two loads, two compilations, the same int8 graph
    teacher, _ = validation_logits(digits_teacher, inc_ctx)
    assert np.mean(first.argmax(-1) == teacher.argmax(-1)) >= 0.95


@needs_inc
def test_inc_recipe_that_does_not_fit_the_graph_is_a_one_line_load_error(inc_digits: Variant,
                                                                         digits_teacher: Variant) -> None:
    recipe = copy.deepcopy(inc_digits.architecture[RUNTIME_QUANTIZATION])
    recipe["activation_qparams"] = recipe["activation_qparams"][:-1]
    with pytest.raises(ModelLoadError) as caught:
        apply_runtime_quantization(load_module(digits_teacher), recipe)
    assert "\n" not in str(caught.value) and "re-run quantize:backend=neural-compressor" in str(caught.value)


@pytest.mark.parametrize(("spec", "expected"), [
    ("quantize:backend=neural-compressor,max_loss=1.5", "max_loss must be in"),
    ("quantize:backend=neural-compressor,max_trials=0", "max_trials must be an integer"),
    ("quantize:backend=neural-compressor,mode=dynamic", "does mode=static only"),
    ("quantize:backend=neural-compressor,mode=weight-only", "'mode' must be one of static"),
    ("quantize:backend=neural-compressor,per_channel=false", "does not use per_channel"),
])
def test_inc_bad_options_are_one_line_config_errors(spec: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make_pass(spec)
    assert expected in str(caught.value) and "\n" not in str(caught.value)


def test_inc_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "neural_compressor" else real(name, *a))
    with pytest.raises(MissingDependencyError, match=r"pip install 'optikit\[inc\]'"):
        make_pass("quantize:backend=neural-compressor")
    with pytest.raises(MissingDependencyError, match=r"optikit\[inc\]"):  # loading an INC variant needs it too
        apply_runtime_quantization(object(), {"kind": "inc-pt2e-static"})  # type: ignore[arg-type]


@needs_inc
@pytest.mark.slow  # ~40 s on 2 cores: two inductor compilations of a BERT
def test_inc_static_int8_runs_on_the_tiny_bert_and_reloads_identically(text_teacher: Variant,
                                                                       inc_ctx: PassContext) -> None:
    q = make_pass("quantize:backend=neural-compressor").run(text_teacher, inc_ctx)
    report = json.loads((q.path / "variant.json").read_text(encoding="utf-8"))["report"]
    assert report["baseline_accuracy"] - report["validation_accuracy"] <= 0.05
    recipe = q.architecture[RUNTIME_QUANTIZATION]
    assert [s["name"] for s in recipe["inputs"]] == list(Encoder(q).encode(["a b"]))
    data = inc_ctx.split(q, "validation")
    feeds = Encoder(q).encode(data.inputs, pad_to=q.task.max_length)
    logits = load_runner(optikit.load(q.path), threads=2).logits(feeds)
    assert float(np.mean(logits.argmax(-1) == np.asarray(data.labels))) == report["validation_accuracy"]
    assert not list(q.path.glob("*.bin")) and not list(q.path.glob("*.pt"))
