"""quantize: int8 weights (dynamic) or int8 weights and activations (static, calibrated) with ONNX Runtime."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from optikit.config import require
from optikit.models import Encoder, copy_tokenizer
from optikit.passes.base import Pass, PassContext, PassOutput
from optikit.variant import Variant

# Ops whose int8 kernels pay off on CPU. Static int8 of every op type destroys a BERT classifier
# (0.97 → 0.58 accuracy, see STACK.md): the defaults stay on the matrix multiplies, convolutions and gathers.
DEFAULT_DYNAMIC_OPS = ("MatMul", "Gemm", "Conv", "Gather")
DEFAULT_STATIC_OPS = ("MatMul", "Gemm", "Conv")


@dataclass(frozen=True)
class QuantizeConfig:
    mode: Literal["dynamic", "static"] = "dynamic"
    backend: Literal["onnxruntime"] = "onnxruntime"
    per_channel: bool = True
    weight_type: Literal["int8", "uint8"] = "int8"
    activation_type: Literal["uint8", "int8"] = "uint8"
    calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    calibration_samples: int = 128
    format: Literal["qdq", "qoperator"] = "qdq"
    op_types: tuple[str, ...] = ()  # empty: the defaults above for the mode
    exclude_op_types: tuple[str, ...] = ()
    exclude_nodes: tuple[str, ...] = ()
    embeddings: bool = True  # quantize Gather (embedding tables) too
    reduce_range: Literal["auto", "true", "false"] = "auto"

    def __post_init__(self) -> None:
        require(self.calibration_samples >= 1, f"calibration_samples must be ≥ 1, got {self.calibration_samples}")


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


class _CalibrationReader:
    """Feeds calibration examples one small batch at a time (ONNX Runtime's CalibrationDataReader protocol)."""

    def __init__(self, batches: list[dict[str, np.ndarray]], input_names: list[str]) -> None:
        self._iter = iter([{k: b[k] for k in input_names if k in b} for b in batches])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)

    def rewind(self) -> None:  # newer ORT calls this between calibration passes
        pass


class Quantize(Pass):
    """int8 quantization of an ONNX model with ONNX Runtime (weights only, or weights and activations).

    Example:
        optikit compress --pass quantize
        optikit compress minilm-tags --pass quantize:mode=static,calibration=percentile
    """

    name = "quantize"
    Config = QuantizeConfig
    accepts: ClassVar[frozenset[str]] = frozenset({"onnx"})
    summary = "int8 dynamic or static (calibrated) quantization with ONNX Runtime"
    config: QuantizeConfig

    def _op_types(self) -> list[str]:
        c = self.config
        ops = list(c.op_types or (DEFAULT_DYNAMIC_OPS if c.mode == "dynamic" else DEFAULT_STATIC_OPS))
        if not c.embeddings:
            ops = [o for o in ops if o != "Gather"]
        return [o for o in ops if o not in c.exclude_op_types]

    def apply(self, variant: Variant, ctx: PassContext, out: Path) -> PassOutput:
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process

        c = self.config
        source = variant.path / "model.onnx"
        prepared = out / "model.prepared.onnx"
        # auto_merge: BERT exports fail symbolic shape inference without it (STACK.md).
        quant_pre_process(str(source), str(prepared), auto_merge=True, skip_optimization=False)
        reduce_range, why = choose_reduce_range(c.reduce_range)
        types = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
        ops = self._op_types()
        target = out / "model.onnx"
        if c.mode == "dynamic":
            quantize_dynamic(str(prepared), str(target), op_types_to_quantize=ops, per_channel=c.per_channel,
                             reduce_range=reduce_range, weight_type=types[c.weight_type],
                             nodes_to_exclude=list(c.exclude_nodes),
                             extra_options={"MatMulConstBOnly": True})
        else:
            from onnxruntime.quantization import CalibrationMethod

            methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                       "percentile": CalibrationMethod.Percentile}
            calib = ctx.split(variant, "calibration")
            calib = calib.take(list(range(min(c.calibration_samples, len(calib)))))
            import onnx

            names = [i.name for i in onnx.load(str(prepared), load_external_data=False).graph.input]
            reader = _CalibrationReader(Encoder(variant).batches(calib, 8), names)
            quantize_static(str(prepared), str(target), reader, quant_format=QuantFormat.QDQ if c.format == "qdq"
                            else QuantFormat.QOperator, op_types_to_quantize=ops, per_channel=c.per_channel,
                            reduce_range=reduce_range, activation_type=types[c.activation_type],
                            weight_type=types[c.weight_type], nodes_to_exclude=list(c.exclude_nodes),
                            calibrate_method=methods[c.calibration],
                            extra_options={"MatMulConstBOnly": True, "CalibMovingAverage": True})
        prepared.unlink()
        for leftover in out.glob("*.onnx.data"):
            leftover.unlink()
        copy_tokenizer(variant.path, out)
        return PassOutput("onnx", {"reduce_range": reduce_range, "reduce_range_reason": why, "op_types": ops,
                                   "ops_after": op_counts(target), "ops_before": op_counts(source)})
