"""Specification of the OpenVINO runner: dispatched by format, feeds inputs by name, says what it ran and refuses
what it cannot run in one line."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from optikit.errors import MeasurementError, MissingDependencyError
from optikit.models import Encoder
from optikit.passes.base import make_pass
from optikit.runners import OpenVinoRunner, load_runner
from optikit.variant import Variant
from tests.conftest import pass_context

pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def rctx(tmp_path_factory: pytest.TempPathFactory):
    return pass_context(tmp_path_factory.mktemp("ovrunner"))


@pytest.fixture(scope="module")
def text_ov(text_teacher: Variant, rctx) -> Variant:
    return make_pass("export-openvino").run(text_teacher, rctx)


@pytest.fixture(scope="module")
def digits_ov(digits_teacher: Variant, rctx) -> Variant:
    return make_pass("export-openvino").run(digits_teacher, rctx)


def test_load_runner_dispatches_openvino_and_records_what_it_runs(digits_ov):
    runner = load_runner(digits_ov, threads=1)
    assert isinstance(runner, OpenVinoRunner)
    info = runner.info()
    assert {k: info[k] for k in ("backend", "threads", "device", "precision")} == {
        "backend": "openvino", "threads": 1, "device": "cpu", "precision": "f32"}
    assert info["version"].split(".")[0].isdigit()
    assert runner.compiled.get_property("INFERENCE_NUM_THREADS") == 1


def test_runner_feeds_inputs_by_name_whatever_the_dict_order(text_teacher, text_ov, rctx):
    texts = list(rctx.split(text_teacher, "test").inputs[:6])
    feeds = Encoder(text_ov).encode(texts)
    runner = load_runner(text_ov, threads=1)
    # The trap this guards against: the IR declares forward()'s order, the tokenizer another one.
    assert runner.input_names == ["input_ids", "attention_mask", "token_type_ids"]
    assert list(feeds) != runner.input_names
    reordered = dict(reversed(list(feeds.items())))
    np.testing.assert_array_equal(runner.logits(feeds), runner.logits(reordered))
    torch_logits = load_runner(text_teacher, threads=1).logits(feeds)
    np.testing.assert_allclose(runner.logits(reordered), torch_logits, atol=1e-3)


def test_runner_returns_a_copy_not_the_reused_output_buffer(digits_teacher, digits_ov, rctx):
    runner = load_runner(digits_ov, threads=1)
    encoder = Encoder(digits_teacher)
    data = rctx.split(digits_teacher, "test").inputs
    first = runner.logits(encoder.encode(data[:3]))
    kept = first.copy()
    runner.logits(encoder.encode(data[3:6]))
    np.testing.assert_array_equal(first, kept)


def test_a_missing_input_is_named(text_ov):
    feeds = Encoder(text_ov).encode(["a tool for image segmentation"])
    del feeds["attention_mask"]
    with pytest.raises(MeasurementError, match="got no attention_mask"):
        load_runner(text_ov, threads=1).logits(feeds)


def test_a_gpu_request_is_refused_with_the_fix(digits_ov):
    with pytest.raises(MeasurementError, match="run on the CPU here, not cuda.*--device cpu"):
        load_runner(digits_ov, threads=1, device="cuda")


def test_missing_openvino_names_the_extra(digits_ov, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    with pytest.raises(MissingDependencyError, match=r"pip install 'optikit\[openvino\]'"):
        load_runner(digits_ov, threads=1)


def test_op_counts_show_int8_kernels_only_after_nncf(digits_teacher, digits_ov, rctx):
    pytest.importorskip("nncf")
    int8 = make_pass("export-openvino:precision=int8").run(digits_teacher, rctx)
    fp32_ops, int8_ops = load_runner(digits_ov, 1).op_counts(), load_runner(int8, 1).op_counts()
    assert fp32_ops["quantized_ops"] == 0 and fp32_ops["float_ops"] == 5  # 3 convolutions, 2 linear layers
    assert int8_ops["quantized_ops"] + int8_ops["float_ops"] == 5 and int8_ops["quantized_ops"] >= 3
