"""Helpers of the quantize pass: CPU capability, ONNX graph inspection, and the accuracy-aware fallback loop."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def choose_reduce_range(setting: str) -> tuple[bool, str]:
    """7-bit weights avoid u8×s8 overflow in AVX2/AVX-512 kernels without VNNI; with VNNI, full range is safe."""
    if setting != "auto":
        return setting == "true", "set by the user"
    flags = cpu_flags()
    if flags & {"avx512_vnni", "avx_vnni", "amx_int8"}:
        return False, "CPU has VNNI/AMX int8 instructions: full 8-bit range"
    return True, "CPU has no VNNI: 7-bit weights avoid int16 saturation in AVX2 kernels"


def op_counts(path: Path) -> dict[str, int]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


# ORT fusions that quantization was measured to get through (optimum O2/O3 on BERT, dynamo or TorchScript
# export). ONNX Runtime's session-level fusions (FusedMatMul, FusedGemm, NCHWc, from optimize=extended/all) fail
# its symbolic shape inference ("Incomplete symbolic shape inference").
QUANTIZABLE_FUSIONS = frozenset({"Attention", "BiasGelu", "FastGelu", "Gelu", "SkipLayerNormalization",
                                 "EmbedLayerNormalization"})


def unquantizable_graph(path: Path) -> str | None:
    """Why ONNX Runtime quantization cannot take this graph (fp16 weights, session-level fusions), or None."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    if any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer):
        return "it holds fp16 weights (export-onnx:optimize=O4)"
    fused = sorted({n.op_type for n in model.graph.node if n.domain.startswith("com.microsoft")
                    and n.op_type not in QUANTIZABLE_FUSIONS})
    if fused:
        return f"it holds ONNX Runtime session fusions ({', '.join(fused[:4])}) from optimize=extended or all"
    return None


def name_nodes(path: Path) -> None:
    """Gives every unnamed node a unique name in place: nodes_to_exclude / nodes_to_quantize match by name,
    and the dynamo exporter leaves some names empty."""
    import onnx

    model = onnx.load(str(path))
    taken = {n.name for n in model.graph.node if n.name}
    changed = False
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in taken:
                name += "_"
            node.name, changed = name, True
            taken.add(name)
    if changed:
        onnx.save(model, str(path))


def quantizable_nodes(path: Path, op_types: Sequence[str]) -> list[str]:
    """Names of nodes of `op_types` whose weight is a constant: the ones int8 quantization will touch."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    constants = {i.name for i in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    weight_input = {"MatMul": 1, "Gemm": 1, "Conv": 1, "Gather": 0, "Attention": 1}
    names = []
    for node in model.graph.node:
        if node.op_type in op_types:
            index = weight_input.get(node.op_type, 1)
            if len(node.input) > index and node.input[index] in constants:
                names.append(node.name)
    return names


def strip_node_metadata(path: Path) -> None:
    """Drops the exporter's per-node provenance strings (~800 bytes a node): on a small model they outweigh the
    int8 weights, and the quantizer's new nodes carry none anyway."""
    import onnx

    model = onnx.load(str(path))
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    onnx.save(model, str(path))


class CalibrationReader:
    """Feeds calibration batches one at a time (ONNX Runtime's CalibrationDataReader protocol)."""

    def __init__(self, batches: list[dict[str, np.ndarray]], input_names: list[str]) -> None:
        self._batches = [{k: b[k] for k in input_names if k in b} for b in batches]
        self._iter = iter(self._batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)

    def rewind(self) -> None:  # newer ORT calls this between calibration passes
        self._iter = iter(self._batches)


def session_logits(path: Path, batches: list[dict[str, np.ndarray]], threads: int) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return np.concatenate([np.asarray(session.run(None, {k: b[k] for k in names if k in b})[0], np.float32)
                           for b in batches])


def mean_kl(base_logits: np.ndarray, logits: np.ndarray) -> float:
    """KL(fp32 ‖ quantized) averaged over examples: a continuous sensitivity where accuracy is too coarse."""
    from optikit.harness.metrics import softmax

    p = np.clip(softmax(base_logits), 1e-12, 1.0)
    q = np.clip(softmax(logits), 1e-12, 1.0)
    return float(np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1)))


@dataclass
class FallbackResult:
    """What the accuracy-aware loop did: the nodes left in fp32 and the accuracy after every attempt."""

    fp32_nodes: list[str]
    steps: list[dict[str, Any]]
    baseline_accuracy: float
    within_budget: bool
    sensitivity: dict[str, float] = field(default_factory=dict)

    def to_report(self, max_loss: float) -> dict[str, Any]:
        return {"max_loss": max_loss, "baseline_accuracy": self.baseline_accuracy,
                "within_budget": self.within_budget, "fp32_nodes": self.fp32_nodes, "steps": self.steps,
                "sensitivity": {k: round(v, 6) for k, v in self.sensitivity.items()}}


def accuracy_aware(candidates: Sequence[str], baseline_accuracy: float, max_loss: float,
                   quantize: Callable[[list[str]], float], sensitivity: Callable[[str], float]) -> FallbackResult:
    """Quantizes with every candidate, then returns nodes to fp32, most sensitive first, until the accuracy
    loss is within `max_loss`.

    `quantize(excluded)` builds the model with `excluded` left in fp32 and returns its validation accuracy;
    `sensitivity(node)` scores the damage of quantizing `node` alone (bigger is worse). Sensitivities are only
    computed when the first attempt misses the budget, since they cost one quantization per candidate.
    """
    excluded: list[str] = []
    accuracy = quantize(excluded)
    steps = [{"fp32_nodes": 0, "accuracy": accuracy, "loss": baseline_accuracy - accuracy}]
    scores: dict[str, float] = {}
    if baseline_accuracy - accuracy > max_loss + 1e-12:
        scores = {node: sensitivity(node) for node in candidates}
        ranked = sorted(candidates, key=lambda n: -scores[n])
        while baseline_accuracy - accuracy > max_loss + 1e-12 and ranked:
            excluded.append(ranked.pop(0))
            accuracy = quantize(list(excluded))
            steps.append({"fp32_nodes": len(excluded), "returned": excluded[-1], "accuracy": accuracy,
                          "loss": baseline_accuracy - accuracy})
    return FallbackResult(excluded, steps, baseline_accuracy, baseline_accuracy - accuracy <= max_loss + 1e-12,
                          scores)
