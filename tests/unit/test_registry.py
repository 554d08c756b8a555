"""Specification of the plugin registry fed by entry points."""
import pytest

from optikit._registry import Registry
from optikit.errors import ConfigError, UnknownPluginError
from optikit.passes import passes


def test_builtin_passes_arrive_through_entry_points():
    assert {"export-onnx", "quantize"} <= set(passes.names())
    assert passes.get("quantize").name == "quantize"


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(UnknownPluginError, match=r"unknown pass 'quantise': known passes are .*quantize"):
        passes.get("quantise")


def test_register_adds_a_plugin_and_rejects_a_duplicate():
    registry: Registry[int] = Registry("optikit.tests-nothing", "thing")
    registry.register("one", 1)
    assert registry.get("one") == 1 and registry.names() == ["one"]
    with pytest.raises(ConfigError, match="already registered"):
        registry.register("one", 2)
