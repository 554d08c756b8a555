"""Specification of runners: one interface over torch and ONNX Runtime."""
import numpy as np
import pytest

from optikit.models import Encoder
from optikit.runners import OrtRunner, TorchRunner, default_threads, load_runner, measurement_threads
from optikit.teach import dataset_for


def test_torch_and_onnx_runners_agree(digits_teacher, ctx):
    from optikit.api import compress

    onnx_variant = compress(digits_teacher, ["export-onnx"], out=ctx.workdir)
    data = dataset_for(digits_teacher).take(digits_teacher.splits.test[:40])
    feeds = Encoder(digits_teacher).encode(data.inputs)
    torch_runner, ort_runner = load_runner(digits_teacher, 1), load_runner(onnx_variant, 1)
    assert isinstance(torch_runner, TorchRunner) and isinstance(ort_runner, OrtRunner)
    np.testing.assert_allclose(torch_runner.logits(feeds), ort_runner.logits(feeds), atol=1e-4)


def test_runner_records_explicit_thread_count(digits_teacher):
    runner = load_runner(digits_teacher, threads=1)
    assert runner.info() == {"backend": "torch", "threads": 1, "device": "cpu"}


def test_text_batches_pad_to_their_own_longest_sequence(text_teacher):
    encoder = Encoder(text_teacher)
    short = encoder.encode(["vision", "image model"])
    longer = encoder.encode(["vision", "an image model for segmentation of very long documents and photos"])
    assert short["input_ids"].shape[1] < longer["input_ids"].shape[1] < 128
    assert set(short) <= {"input_ids", "attention_mask", "token_type_ids"}


def test_fixed_shape_mode_pads_to_the_given_length(text_teacher):
    assert Encoder(text_teacher).encode(["vision"], pad_to=24)["input_ids"].shape == (1, 24)


@pytest.mark.parametrize(("cores", "work", "timing"), [(1, 1, 1), (2, 2, 1), (4, 4, 3), (16, 8, 8)])
def test_timing_leaves_a_core_to_the_os_and_work_uses_them_all(monkeypatch, cores, work, timing):
    monkeypatch.setattr("optikit.runners._cores", lambda: cores)
    assert (default_threads(), measurement_threads()) == (work, timing)
