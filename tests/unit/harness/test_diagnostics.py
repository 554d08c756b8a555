"""Diagnostics: quantized vs float operators of an ONNX graph."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from optikit.harness.diagnostics import onnx_op_counts


def test_onnx_op_counts_tell_quantized_from_float(tmp_path: Path) -> None:
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    wq = numpy_helper.from_array(np.ones((4, 4), np.int8), "wq")
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["a"]),  # float
             helper.make_node("DequantizeLinear", ["wq", "s"], ["wd"]),
             helper.make_node("MatMul", ["a", "wd"], ["b"]),  # QDQ: quantized
             helper.make_node("DynamicQuantizeLinear", ["b"], ["bq", "bs", "bz"]),
             helper.make_node("MatMulInteger", ["bq", "wq", "bz"], ["c"]),  # integer kernel: quantized
             helper.make_node("Relu", ["c"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, [1, 4])], [w, wq, scale])
    onnx.save(helper.make_model(graph), str(tmp_path / "m.onnx"))
    counts = onnx_op_counts(tmp_path / "m.onnx")
    assert counts["ops"] == {"DequantizeLinear": 1, "DynamicQuantizeLinear": 1, "MatMul": 2, "MatMulInteger": 1,
                             "Relu": 1}
    assert (counts["quantized_ops"], counts["float_ops"]) == (2, 1)
