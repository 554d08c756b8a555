"""Diagnostics: which operators of a variant actually run quantized, and how the device request was served."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

# Operators that compute in integer arithmetic (QOperator format and dynamic quantization) …
QUANTIZED_COMPUTE = {"QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul",
                     "QGemm", "QAttention", "QEmbedLayerNormalization", "MatMulIntegerToFloat", "QLinearAdd",
                     "QLinearMul", "QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearLeakyRelu",
                     "QLinearSigmoid", "QLinearConcat", "QLinearSoftmax", "QLinearWhere"}
# … and the float operators that carry the weight-heavy work. In QDQ graphs one of these counts as quantized
# when a weight input comes from DequantizeLinear: ORT fuses that pattern into an integer kernel.
HEAVY = {"MatMul", "Gemm", "Conv", "ConvTranspose", "Attention", "Gather", "EmbedLayerNormalization"}


def onnx_op_counts(path: Path) -> dict[str, Any]:
    """Node counts by op type, and how many weight-heavy operators are quantized vs float."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    produced_by = {out: node.op_type for node in graph.node for out in node.output}
    initializers = {t.name for t in graph.initializer}
    ops = Counter(node.op_type for node in graph.node)
    quantized = floating = 0
    for node in graph.node:
        if node.op_type in QUANTIZED_COMPUTE:
            quantized += 1
        elif node.op_type in HEAVY:
            from_dq = any(produced_by.get(i) == "DequantizeLinear" for i in node.input)
            has_weight = from_dq or any(i in initializers for i in node.input)
            if from_dq:
                quantized += 1
            elif has_weight or node.op_type in ("MatMul", "Gemm", "Conv"):
                floating += 1
    return {"ops": dict(sorted(ops.items())), "quantized_ops": quantized, "float_ops": floating}


def torch_op_counts(module: Any) -> dict[str, Any]:
    """Leaf module counts by class; a class from a quantized namespace counts as quantized."""
    ops: Counter[str] = Counter()
    quantized = floating = 0
    for sub in module.modules():
        if any(True for _ in sub.children()):
            continue
        name, where = type(sub).__name__, type(sub).__module__
        ops[name] += 1
        if "quantized" in where or "Quantized" in name:
            quantized += 1
        elif name in ("Linear", "Conv1d", "Conv2d", "Conv3d", "Embedding"):
            floating += 1
    return {"ops": dict(sorted(ops.items())), "quantized_ops": quantized, "float_ops": floating}


def op_counts(variant: Any, runner: Any) -> dict[str, Any]:
    own = getattr(runner, "op_counts", None)  # a runtime that compiles its own graph counts it (OpenVINO)
    if callable(own):
        return dict(own())
    if variant.format == "onnx":
        return onnx_op_counts(variant.path / "model.onnx")
    module = getattr(runner, "module", None)
    return torch_op_counts(module) if module is not None else {"ops": {}, "quantized_ops": 0, "float_ops": 0}
