"""The contract of every registered pass: a new variant directory with its manifest, a lineage one step longer that
records the pass's full config, the format the pass declares, and a variant that loads and runs again.

A pass registered without minimal settings in SETTINGS fails here: add one entry when you add a pass."""
from __future__ import annotations

import importlib.util
import json
from typing import Any

import numpy as np
import pytest

import optikit
from optikit.config import config_to_dict
from optikit.passes import passes
from optikit.passes.base import Pass, PassContext, make_pass
from optikit.variant import Variant

# Pass name → cases of (input fixture, options): the cheapest settings that still do the pass's work on the tiny
# fixtures (digits_teacher: a small CNN, torch; text_teacher: a 2-layer BERT, hf; digits_onnx: the CNN as ONNX).
# quantize has one case per backend: each is its own strategy with its own options.
SETTINGS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "export-onnx": [("digits_teacher", {})],
    "export-openvino": [("digits_teacher", {}), ("digits_teacher", {"precision": "int8"})],
    "quantize": [("digits_onnx", {"backend": "onnxruntime", "mode": "dynamic"}),
                 ("digits_onnx", {"backend": "onnxruntime", "mode": "static", "calibration_samples": 16}),
                 ("digits_teacher", {"backend": "torch"}),
                 ("text_onnx", {"backend": "optimum"}),
                 ("digits_teacher", {"backend": "neural-compressor"})],  # a BERT compiles twice: > 40 s
    "prune-unstructured": [("text_teacher", {"amount": 0.5})],
    "prune-structured": [("digits_teacher", {"amount": 0.25})],
    # One epoch at the recipe's rate leaves cnn-small at chance, which the training guard refuses (issue 12).
    "distill": [("digits_teacher", {"student": "cnn-small", "epochs": 1, "learning_rate": 0.02, "batch_size": 16})],
}
# Backends whose package is an optional extra: their case runs where it is installed.
OPTIONAL = {("quantize", "neural-compressor"): "neural_compressor", ("export-openvino", "None"): "openvino"}


def settings_for(name: str) -> list[tuple[str, dict[str, Any]]]:
    if name not in SETTINGS:
        pytest.fail(f"pass {name!r} is registered but has no minimal settings: add an entry to SETTINGS in "
                    f"{__file__} (an input fixture and the cheapest options that do its work)", pytrace=False)
    return SETTINGS[name]


@pytest.fixture(scope="module")
def contract_ctx(tmp_path_factory: pytest.TempPathFactory) -> PassContext:
    return PassContext(tmp_path_factory.mktemp("contract"), threads=2, seed=0)


@pytest.fixture(scope="module")
def digits_onnx(digits_teacher: Variant, contract_ctx: PassContext) -> Variant:
    return make_pass("export-onnx").run(digits_teacher, contract_ctx)


@pytest.fixture(scope="module")
def text_onnx(text_teacher: Variant, contract_ctx: PassContext) -> Variant:
    return make_pass("export-onnx").run(text_teacher, contract_ctx)


def assert_contract(p: Pass, parent: Variant, child: Variant, ctx: PassContext) -> None:
    assert child.path.is_dir() and child.path != parent.path and child.path.parent == ctx.workdir
    manifest = json.loads((child.path / "variant.json").read_text(encoding="utf-8"))
    assert child.parent == parent.id and len(child.lineage) == len(parent.lineage) + 1
    step = child.lineage[-1]
    assert (step.pass_name, step.auto) == (p.name, False)
    # The full config, defaults included, in the object and on disk: what makes the variant id honest.
    full = json.loads(json.dumps(config_to_dict(p.config)))
    assert step.config == full and manifest["lineage"][-1]["config"] == full
    assert child.format == p.output_format(parent.format) == manifest["format"]
    loaded = optikit.load(child.path)
    assert (loaded.id, loaded.format, loaded.lineage) == (child.id, child.format, child.lineage)
    from optikit.models import Encoder
    from optikit.runners import load_runner

    sample = ctx.split(loaded, "test").take([0, 1])
    logits = load_runner(loaded, threads=1).logits(Encoder(loaded).encode(sample.inputs))
    assert logits.shape == (2, len(loaded.task.label_names)) and np.isfinite(logits).all()


@pytest.mark.parametrize("name", passes.names())
def test_registered_pass_keeps_the_contract(name: str, request: pytest.FixtureRequest,
                                            contract_ctx: PassContext) -> None:
    ran = 0
    for fixture, options in settings_for(name):
        module = OPTIONAL.get((name, str(options.get("backend"))))
        if module and importlib.util.find_spec(module) is None:
            continue
        parent = request.getfixturevalue(fixture)
        p = make_pass((name, options))
        assert_contract(p, parent, p.run(parent, contract_ctx), contract_ctx)
        ran += 1
    assert ran, f"no case of {name} could run here"


def test_every_quantize_backend_has_a_contract_case() -> None:
    from optikit.passes.quantize import BACKENDS

    assert {str(o.get("backend")) for _, o in SETTINGS["quantize"]} == set(BACKENDS)


def test_a_pass_without_settings_fails_with_what_to_add() -> None:
    with pytest.raises(pytest.fail.Exception, match=r"add an entry to SETTINGS"):
        settings_for("a-new-pass")


def test_settings_name_only_registered_passes() -> None:
    assert set(SETTINGS) <= set(passes.names())
