"""quantize's backends are separate strategies: each takes its own options and refuses the ones it would ignore."""
from __future__ import annotations

import pytest

from optikit.config import config_to_dict, describe_options
from optikit.errors import ConfigError
from optikit.passes._inc_quant import NeuralCompressorConfig
from optikit.passes.base import make_pass
from optikit.passes.quantize import BACKENDS, Quantize, QuantizeOptions


@pytest.mark.parametrize(("spec", "ignored"), [
    ("quantize:backend=neural-compressor,per_channel=false", "per_channel"),
    ("quantize:backend=optimum,max_loss=0.01", "max_loss"),
    ("quantize:backend=optimum,exclude_nodes=a", "exclude_nodes"),
    ("quantize:backend=optimum,weight_type=uint8", "weight_type"),
    ("quantize:backend=torch,calibration=entropy", "calibration"),
    ("quantize:backend=torch,weight_type=uint8", "weight_type"),
    ("quantize:backend=torch,op_types=MatMul", "op_types"),
    ("quantize:backend=torch,optimum_preset=avx2", "optimum_preset"),
    ("quantize:optimum_preset=avx2", "optimum_preset"),
    ("quantize:mode=dynamic,calibration=entropy", "calibration"),
    ("quantize:mode=dynamic,activation_type=int8", "activation_type"),
    ("quantize:format=qoperator", "format"),
    ("quantize:calibration_samples=64", "calibration_samples"),
    ("quantize:percentile=99.9", "percentile"),
])
def test_quantize_refuses_an_option_its_backend_ignores(spec: str, ignored: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make_pass(spec)
    message = str(caught.value)
    backend = spec.partition("backend=")[2].split(",")[0] or "onnxruntime"
    assert "\n" not in message and f"backend={backend}" in message and f"does not use {ignored}" in message
    assert "it takes" in message


def test_quantize_refusal_names_what_the_backend_takes() -> None:
    with pytest.raises(ConfigError, match=r"backend=torch does not use calibration: it takes exclude_nodes, "
                                          r"max_loss, mode, per_channel"):
        make_pass("quantize:backend=torch,calibration=entropy")
    with pytest.raises(ConfigError, match="backend=neural-compressor does mode=static only: use backend=onnxruntime "
                                          "for mode=dynamic"):
        make_pass("quantize:backend=neural-compressor,mode=dynamic")


def test_quantize_percentile_needs_percentile_calibration() -> None:
    with pytest.raises(ConfigError, match="percentile applies to calibration=percentile only"):
        make_pass("quantize:mode=static,percentile=99.9")
    assert make_pass("quantize:mode=static,calibration=percentile,percentile=99.9").config.percentile == 99.9


def test_quantize_lineage_holds_only_the_options_its_backend_uses() -> None:
    assert set(config_to_dict(make_pass("quantize:backend=torch").config)) == {
        "backend", "mode", "per_channel", "exclude_nodes", "max_loss"}
    assert set(config_to_dict(make_pass("quantize:backend=optimum").config)) == {
        "backend", "mode", "per_channel", "optimum_preset"}
    assert set(config_to_dict(NeuralCompressorConfig())) == {"backend", "mode", "max_loss", "max_trials"}
    auto = config_to_dict(make_pass("quantize").config)
    dynamic = config_to_dict(make_pass("quantize:mode=dynamic").config)
    static = config_to_dict(make_pass("quantize:mode=static").config)
    assert {"calibration", "activation_type", "format", "percentile", "calibration_samples"} <= set(static) - set(dynamic)
    assert "optimum_preset" not in dynamic and dynamic["mode"] == "dynamic"
    # auto takes the options both modes take, and how long its layer trial may time each candidate
    assert auto["mode"] == "auto" and set(auto) == set(dynamic) | {"trial_seconds"}


def test_quantize_keeps_the_cli_spelling_and_the_python_default() -> None:
    assert Quantize().config == make_pass("quantize").config == make_pass("quantize:backend=onnxruntime").config
    assert make_pass("quantize:mode=static,op_types=MatMul,Gather").config.op_types == ("MatMul", "Gather")
    assert make_pass(("quantize", {"backend": "torch", "per_channel": False})).config.per_channel is False
    with pytest.raises(ConfigError, match="unknown option 'amount' for pass 'quantize'"):
        make_pass("quantize:amount=0.5")


def test_quantize_options_listing_names_the_backends_of_each_option() -> None:
    rows = {name: (kind, default) for name, kind, default in describe_options(QuantizeOptions)}
    assert rows["mode"][0] == "auto|dynamic|static"
    assert rows["backend"][0] == "|".join(BACKENDS)
    assert rows["max_loss"][1].endswith("[onnxruntime, torch, neural-compressor]")
    assert rows["calibration"][1].endswith("[onnxruntime mode=static]")
    assert rows["optimum_preset"][1].endswith("[optimum]")
