"""One ECE, one KL, one ONNX op counter: every figure of each kind comes from the same function."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from optikit.harness.metrics import (
    confidence_bins,
    expected_calibration_error,
    fidelity,
    mean_kl,
    resampled_ece,
    softmax,
)
from optikit.harness.significance import point_metrics


def _probs(seed: int, n: int = 200, k: int = 4) -> np.ndarray:
    return softmax(np.random.default_rng(seed).normal(size=(n, k)) * 3)


def test_confidence_bins_are_left_open_with_the_first_closed() -> None:
    assert confidence_bins(np.array([0.0, 0.1, 0.1000001, 0.95, 1.0])).tolist() == [0, 0, 1, 9, 9]


def test_the_reported_ece_and_the_bootstrapped_ece_are_one_computation() -> None:
    probs, labels = _probs(0), np.random.default_rng(1).integers(0, 4, 200)
    ece, table = expected_calibration_error(probs, labels)
    assert ece == point_metrics(labels, probs)["ece"]
    # The reliability table is what the ECE sums: Σ count/n · |accuracy − confidence|.
    assert abs(ece - sum(b.count / 200 * abs(b.accuracy - b.confidence) for b in table)) < 1e-12
    bins = confidence_bins(probs.max(-1))
    correct = (probs.argmax(-1) == labels).astype(float)
    idx = np.stack([np.arange(200), np.arange(200)[::-1]])
    assert np.allclose(resampled_ece(bins, correct, probs.max(-1), idx), ece)


def test_fidelity_kl_and_quantize_sensitivity_are_the_same_kl() -> None:
    from optikit.passes._ort_quant import mean_kl_logits

    logits_a = np.random.default_rng(2).normal(size=(50, 3))
    logits_b = logits_a + np.random.default_rng(3).normal(scale=0.5, size=(50, 3))
    labels = np.zeros(50, dtype=np.int64)
    kl = mean_kl(softmax(logits_a), softmax(logits_b))
    assert kl > 0 and mean_kl(softmax(logits_a), softmax(logits_a)) == 0.0
    assert fidelity(labels, softmax(logits_a), softmax(logits_b)).kl_mean == kl == mean_kl_logits(logits_a, logits_b)


def test_passes_count_onnx_ops_with_the_harness_counter(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    from optikit.harness.diagnostics import onnx_op_counts
    from optikit.passes._ort_quant import op_counts

    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Relu", ["y"], ["z"]),
             helper.make_node("Relu", ["z"], ["out"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor("w", TensorProto.FLOAT, [2, 2], [1.0, 0.0, 0.0, 1.0])])
    onnx.save(helper.make_model(graph), str(tmp_path / "m.onnx"))
    assert op_counts(tmp_path / "m.onnx") == onnx_op_counts(tmp_path / "m.onnx")["ops"] == {"MatMul": 1, "Relu": 2}
