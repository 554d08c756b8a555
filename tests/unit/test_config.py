"""Specification of option parsing: `name:key=value,...` into frozen, validated configs."""
from dataclasses import dataclass
from typing import Literal

import pytest

from optikit.config import build_config, parse_pass_spec, require
from optikit.errors import ConfigError


@dataclass(frozen=True)
class Example:
    amount: float = 0.5
    epochs: int = 0
    mode: Literal["dynamic", "static"] = "dynamic"
    per_channel: bool = True
    ops: tuple[str, ...] = ()
    name: str | None = None

    def __post_init__(self) -> None:
        require(0 < self.amount < 1, f"amount must be in (0, 1), got {self.amount}")


def test_parse_pass_spec_splits_name_and_options():
    assert parse_pass_spec("quantize:mode=static,per_channel=false") == ("quantize", {"mode": "static", "per_channel": "false"})


def test_parse_pass_spec_without_options():
    assert parse_pass_spec("export-onnx") == ("export-onnx", {})


def test_parse_pass_spec_bare_item_extends_a_list():
    assert parse_pass_spec("quantize:ops=MatMul,Gather,mode=static") == ("quantize", {"ops": "MatMul,Gather", "mode": "static"})


@pytest.mark.parametrize("spec", ["quantize:mode", "quantize:=static", "quantize:", ":mode=static", "quantize:mode="])
def test_parse_pass_spec_rejects_malformed_options(spec):
    with pytest.raises(ConfigError):
        parse_pass_spec(spec)


def test_build_config_coerces_text_to_field_types():
    config = build_config(Example, {"amount": "0.25", "epochs": "3", "mode": "static", "per_channel": "no",
                                    "ops": "MatMul,Gather", "name": "none"}, "pass 'x'")
    assert config == Example(0.25, 3, "static", False, ("MatMul", "Gather"), None)


def test_build_config_unknown_key_names_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown option 'amout'.*amount, epochs, mode"):
        build_config(Example, {"amout": "0.5"}, "pass 'x'")


@pytest.mark.parametrize("options, message", [
    ({"amount": "1.5"}, r"amount must be in \(0, 1\), got 1.5"),
    ({"epochs": "two"}, "must be an integer"),
    ({"mode": "fast"}, "must be one of dynamic, static"),
    ({"per_channel": "maybe"}, "must be true or false"),
])
def test_build_config_rejects_bad_values_in_one_line(options, message):
    with pytest.raises(ConfigError, match=message) as info:
        build_config(Example, options, "pass 'x'")
    assert "\n" not in str(info.value)


def test_configs_are_frozen():
    config = Example()
    with pytest.raises(AttributeError):
        config.amount = 0.9  # type: ignore[misc]
