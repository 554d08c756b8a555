"""Specification of the pass contract the base class owns: planning, caching, atomic writes, lineage."""
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from optikit.errors import ConfigError, PassError
from optikit.passes.base import Pass, PassContext, PassOutput, make_pass, passes, plan_chain, run_chain


@dataclass(frozen=True)
class ExplodeConfig:
    when: str = "always"


class Explode(Pass):
    """A pass that writes a file and then fails, to check that nothing half-written survives."""

    name = "explode-for-test"
    Config = ExplodeConfig
    accepts: ClassVar[frozenset[str]] = frozenset({"torch"})

    def apply(self, variant, ctx, out: Path) -> PassOutput:
        (out / "model.safetensors").write_bytes(b"partial")
        raise RuntimeError("boom")


def test_plan_inserts_export_where_a_pass_needs_onnx():
    planned = plan_chain("torch", [make_pass("quantize")])
    assert [(p.name, auto) for p, auto in planned] == [("export-onnx", True), ("quantize", False)]


def test_plan_keeps_an_explicit_export():
    planned = plan_chain("hf", [make_pass("export-onnx"), make_pass("quantize:mode=static")])
    assert [(p.name, auto) for p, auto in planned] == [("export-onnx", False), ("quantize", False)]


def test_plan_rejects_torch_pass_after_export_naming_the_move():
    Explode.accepts = frozenset({"torch"})
    passes.register(Explode.name, Explode)
    try:
        with pytest.raises(ConfigError, match=f"move {Explode.name} before export-onnx"):
            plan_chain("torch", [make_pass("export-onnx"), make_pass(Explode.name)])
    finally:
        passes.unregister(Explode.name)


def test_chain_records_lineage_and_auto_steps(digits_teacher, ctx):
    produced = run_chain(digits_teacher, [make_pass("quantize")], ctx)
    onnx_fp32, int8 = produced
    assert onnx_fp32.lineage[-1].pass_name == "export-onnx" and onnx_fp32.lineage[-1].auto
    assert int8.parent == onnx_fp32.id and onnx_fp32.parent == digits_teacher.id
    assert [s.pass_name for s in int8.lineage] == ["export-onnx", "quantize"]
    assert int8.lineage[-1].config["mode"] == "auto" and int8.report["mode"] == "static"  # a CNN: auto → static


def test_rerunning_a_pass_reuses_its_result(digits_teacher, ctx):
    first = make_pass("export-onnx").run(digits_teacher, ctx)
    mtime = (first.path / "model.onnx").stat().st_mtime_ns
    second = make_pass("export-onnx").run(digits_teacher, ctx)
    assert second.path == first.path and (second.path / "model.onnx").stat().st_mtime_ns == mtime


def test_failed_pass_leaves_nothing_behind_and_input_untouched(digits_teacher, tmp_path):
    before = {p.name: p.stat().st_mtime_ns for p in digits_teacher.path.iterdir()}
    ctx = PassContext(tmp_path / "variants")
    with pytest.raises(PassError, match="pass explode-for-test failed on .*RuntimeError: boom"):
        Explode().run(digits_teacher, ctx)
    assert not any((tmp_path / "variants").iterdir())
    assert {p.name: p.stat().st_mtime_ns for p in digits_teacher.path.iterdir()} == before


def test_pass_rejects_a_format_it_cannot_take(digits_teacher, ctx):
    with pytest.raises(ConfigError, match="cannot take a torch model"):
        make_pass("quantize").run(digits_teacher, ctx)
