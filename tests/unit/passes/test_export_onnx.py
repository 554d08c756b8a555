"""export-onnx: the graph matches torch, keeps a dynamic batch, and its optimized forms load and quantize."""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

from optikit.errors import ConfigError, PassError
from optikit.passes.base import make_pass
from optikit.variant import Variant


@pytest.fixture(scope="module")
def mctx(tmp_path_factory: pytest.TempPathFactory):
    from optikit.passes.base import PassContext

    return PassContext(tmp_path_factory.mktemp("evariants"), threads=2, seed=0)


@pytest.fixture(scope="module")
def text_onnx(text_teacher: Variant, mctx) -> Variant:
    return make_pass("export-onnx").run(text_teacher, mctx)


def session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def torch_logits(variant: Variant, feeds: dict[str, np.ndarray]) -> np.ndarray:
    import torch

    from optikit.models import load_module, torch_forward

    with torch.inference_mode():
        return torch_forward(load_module(variant), {k: torch.from_numpy(v) for k, v in feeds.items()}).numpy()


def test_export_digits_matches_torch_at_batch_1_and_5(digits_teacher, mctx):
    from optikit.models import Encoder

    onnx = make_pass("export-onnx").run(digits_teacher, mctx)
    assert onnx.report["validation"]["max_abs_diff"] <= 1e-3
    s = session(onnx.path / "model.onnx")
    data = mctx.split(digits_teacher, "test")
    for n in (1, 5):
        feeds = Encoder(digits_teacher).encode(data.inputs[:n])
        out = s.run(None, feeds)[0]
        assert out.shape == (n, 10)
        np.testing.assert_allclose(out, torch_logits(digits_teacher, feeds), atol=1e-4)


def test_export_text_matches_torch_with_padding_and_named_inputs(text_teacher, text_onnx, mctx):
    from optikit.models import Encoder

    s = session(text_onnx.path / "model.onnx")
    data = mctx.split(text_teacher, "test")
    for n in (1, 5):  # batch 5 pads to its longest text, so the attention mask has zeros
        feeds = Encoder(text_teacher).encode(data.inputs[:n])
        out = s.run(None, {i.name: feeds[i.name] for i in s.get_inputs()})[0]
        np.testing.assert_allclose(out, torch_logits(text_teacher, feeds), atol=1e-4)
    assert (text_onnx.path / "config.json").is_file() and (text_onnx.path / "tokenizer.json").is_file()


@pytest.mark.parametrize("level", ["O1", "O3", "O4"])
def test_transformer_optimize_levels_produce_a_loadable_graph(level, text_teacher, text_onnx, mctx, tmp_path):
    from optikit.models import Encoder
    from optikit.passes.export_onnx import optimize_transformer

    shutil.copytree(text_onnx.path, tmp_path, dirs_exist_ok=True)
    fused = optimize_transformer(tmp_path, level)
    assert isinstance(fused, dict)
    feeds = Encoder(text_teacher).encode(mctx.split(text_teacher, "test").inputs[:4])
    s = session(tmp_path / "model.onnx")
    out = s.run(None, {i.name: feeds[i.name] for i in s.get_inputs()})[0]
    np.testing.assert_allclose(out, torch_logits(text_teacher, feeds), atol=1e-2 if level == "O4" else 1e-3)


def test_export_o2_then_quantize_composes(text_teacher, mctx):
    from optikit.passes.quantize import Quantize  # noqa: F401  (registered pass)

    optimized = make_pass("export-onnx:optimize=O2").run(text_teacher, mctx)
    assert optimized.report["fused_ops"].get("SkipLayerNormalization", 0) > 0
    q = make_pass("quantize").run(optimized, mctx)
    assert q.report["ops_after"].get("MatMulInteger", 0) > 0


def test_quantize_rejects_a_session_fused_graph_before_work(text_onnx, mctx, tmp_path):
    from optikit.passes.export_onnx import optimize_graph

    shutil.copytree(text_onnx.path, tmp_path, dirs_exist_ok=True)
    optimize_graph(tmp_path / "model.onnx", "extended", 2)
    fused = dataclasses.replace(text_onnx, path=tmp_path)
    with pytest.raises(ConfigError, match="session fusions"):
        make_pass("quantize").check(fused)


def test_export_rejects_transformer_levels_for_a_cnn(digits_teacher, mctx):
    with pytest.raises(ConfigError, match="optimize=basic"):
        make_pass("export-onnx:optimize=O2").run(digits_teacher, mctx)


@pytest.mark.parametrize("spec", ["export-onnx:opset=9", "export-onnx:tolerance=0", "export-onnx:optimize=O5"])
def test_export_rejects_bad_options(spec):
    with pytest.raises(ConfigError):
        make_pass(spec)


def test_export_error_names_the_failing_op(tmp_path):
    import torch

    from optikit.passes.export_onnx import ExportOnnxConfig, export_module

    class Unsupported(torch.nn.Module):
        def forward(self, x):
            return torch.linalg.eigvals(x).real  # complex eigenvalues have no ONNX lowering

    with pytest.raises(PassError, match="ONNX export failed at"):
        export_module(Unsupported(), {"pixel_values": np.eye(3, dtype=np.float32)[None].repeat(2, 0)},
                      tmp_path / "m.onnx", ExportOnnxConfig())
