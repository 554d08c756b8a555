"""quantize: int8 weights (dynamic) or weights and activations (static, calibrated), with ONNX Runtime or torch."""
from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from optikit.config import require
from optikit.errors import ConfigError, MissingDependencyError
from optikit.models import RUNTIME_QUANTIZATION, Encoder, copy_processor
from optikit.passes._ort_quant import (
    CalibrationReader,
    accuracy_aware,
    choose_reduce_range,
    mean_kl,
    name_nodes,
    op_counts,
    quantizable_nodes,
    session_logits,
    strip_node_metadata,
    unquantizable_graph,
)
from optikit.passes.base import Pass, PassContext, PassOutput
from optikit.variant import Variant

# Ops whose int8 kernels pay off on CPU. Static int8 of every op type destroys a BERT classifier (0.97 → 0.58
# accuracy, STACK.md); MatMul (+ Gather) with uint8 activations keeps 0.963, so static stays on the weighted ops.
DEFAULT_DYNAMIC_OPS = ("MatMul", "Gemm", "Conv", "Gather")
DEFAULT_STATIC_OPS = ("MatMul", "Gemm", "Conv", "Gather")
BACKEND_FORMATS = {"onnxruntime": frozenset({"onnx"}), "optimum": frozenset({"onnx"}), "torch": frozenset({"torch", "hf"}),
                   "neural-compressor": frozenset({"torch", "hf"})}
EVAL_BATCH = 32

__all__ = ["Quantize", "QuantizeConfig", "choose_reduce_range", "op_counts"]


@dataclass(frozen=True)
class QuantizeConfig:
    mode: Literal["dynamic", "static"] = "dynamic"
    backend: Literal["onnxruntime", "optimum", "torch", "neural-compressor"] = "onnxruntime"
    per_channel: bool = True
    weight_type: Literal["int8", "uint8"] = "int8"  # QInt8 weights: QUInt8 gave no speedup (STACK.md)
    activation_type: Literal["uint8", "int8"] = "uint8"  # S8S8 QDQ ran slower than fp32 (STACK.md)
    calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    calibration_samples: int = 128
    percentile: float = 99.999  # calibration=percentile only
    format: Literal["qdq", "qoperator"] = "qdq"
    op_types: tuple[str, ...] = ()  # empty: the defaults above for the mode
    exclude_op_types: tuple[str, ...] = ()
    exclude_nodes: tuple[str, ...] = ()
    embeddings: bool = True  # quantize Gather (embedding tables) too
    reduce_range: Literal["auto", "true", "false"] = "auto"
    # Accuracy budget on the validation split vs the input model (0.01 = one point); None: no check.
    max_loss: float | None = None
    # backend=optimum only: the AutoQuantizationConfig preset optimum's ORTQuantizer applies (for comparisons).
    optimum_preset: Literal["avx512_vnni", "avx512", "avx2", "arm64"] = "avx512_vnni"

    def __post_init__(self) -> None:
        require(self.mode in ("dynamic", "static"), f"mode must be dynamic or static, got {self.mode!r}")
        require(self.backend in BACKEND_FORMATS,
                f"backend must be one of {', '.join(BACKEND_FORMATS)}, got {self.backend!r}")
        require(self.calibration_samples >= 1, f"calibration_samples must be ≥ 1, got {self.calibration_samples}")
        require(50 < self.percentile <= 100, f"percentile must be in (50, 100], got {self.percentile}")
        require(self.max_loss is None or 0 <= self.max_loss < 1, f"max_loss must be in [0, 1), got {self.max_loss}")
        require(self.backend == "onnxruntime" or self.mode == "dynamic",
                f"backend={self.backend} does mode=dynamic only: use backend=onnxruntime for static int8")
        require(self.backend != "optimum" or self.max_loss is None,
                "backend=optimum has no accuracy budget: use backend=onnxruntime with max_loss")


class Quantize(Pass):
    """int8 quantization: ONNX Runtime on ONNX models (dynamic or static), or torch dynamic on torch / hf.

    Static defaults (MatMul/Gemm/Conv/Gather, uint8 activations, per-channel int8 weights, QDQ) keep a BERT
    classifier's accuracy; `max_loss` returns the most sensitive nodes to fp32 until the validation accuracy is
    within budget.

    Order with export-onnx (measured on a 2-layer BERT, dynamo export): export-onnx:optimize=none|basic|O1|O2|O3
    then quantize works (O2/O3 fuse SkipLayerNormalization and BiasGelu; with a TorchScript export O2 also fuses
    Attention, whose projections then stay fp32). optimize=extended|all (ORT's FusedMatMul/FusedGemm) fail
    quantization's shape inference and O4 is fp16: this pass rejects those before any work.

    Example:
        optikit compress digits-cnn --pass quantize
        optikit compress minilm-tags --pass quantize:mode=static,max_loss=0.01
    """

    name = "quantize"
    Config = QuantizeConfig
    accepts: ClassVar[frozenset[str]] = frozenset({"onnx", "torch", "hf"})
    summary = "int8 dynamic or static (calibrated) quantization with ONNX Runtime or torch"
    config: QuantizeConfig

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        # Before any work, even the earlier passes of a chain: the backend's package must be importable.
        if self.config.backend == "neural-compressor" and importlib.util.find_spec("neural_compressor") is None:
            raise MissingDependencyError("neural_compressor", "inc")

    def accepted_formats(self) -> frozenset[str]:
        return BACKEND_FORMATS[self.config.backend]

    def check_plan(self, before: Sequence[Pass]) -> None:
        exports = [p for p in before if p.name == "export-onnx"]
        level = getattr(exports[-1].config, "optimize", "none") if exports else "none"
        if self.config.backend == "onnxruntime" and level in ("extended", "all", "O4"):
            raise ConfigError(f"quantize cannot follow export-onnx:optimize={level} ("
                              + ("fp16 graph" if level == "O4" else "ORT session fusions fail its shape inference")
                              + "): use export-onnx:optimize=O1, O2, O3 or basic before quantize")

    def check(self, variant: Variant) -> None:
        if RUNTIME_QUANTIZATION in variant.architecture:
            raise ConfigError(f"{variant.name} is already int8 (quantize:backend=torch): quantize its fp32 parent")
        if variant.format == "onnx" and self.config.backend == "onnxruntime":
            why = unquantizable_graph(variant.path / "model.onnx")
            if why:
                raise ConfigError(f"quantize cannot take {variant.name}: {why}. Export with export-onnx:optimize="
                                  "none, basic or O1–O3, quantize, and let ONNX Runtime apply its session "
                                  "optimizations when it loads the int8 model")

    def _op_types(self) -> list[str]:
        c = self.config
        ops = list(c.op_types or (DEFAULT_DYNAMIC_OPS if c.mode == "dynamic" else DEFAULT_STATIC_OPS))
        if not c.embeddings:
            ops = [o for o in ops if o != "Gather"]
        return [o for o in ops if o not in c.exclude_op_types]

    def apply(self, variant: Variant, ctx: PassContext, out: Path) -> PassOutput:
        if self.config.backend == "torch":
            from optikit.passes._torch_quant import quantize_torch

            return quantize_torch(self.config, variant, ctx, out)
        if self.config.backend == "neural-compressor":
            from optikit.passes._torch_quant import quantize_inc

            return quantize_inc(self.config, variant, ctx, out)
        if self.config.backend == "optimum":
            return self._apply_optimum(variant, out)
        return self._apply_onnxruntime(variant, ctx, out)

    def _apply_optimum(self, variant: Variant, out: Path) -> PassOutput:
        """optimum's ORTQuantizer with one of its presets, as shipped: the reference optikit is compared with."""
        from optimum.onnxruntime import ORTQuantizer
        from optimum.onnxruntime.configuration import AutoQuantizationConfig

        if not (variant.path / "config.json").is_file():
            raise ConfigError(f"backend=optimum needs a Hugging Face export with config.json; {variant.name} has "
                              "none: use backend=onnxruntime")
        preset = getattr(AutoQuantizationConfig, self.config.optimum_preset)(
            is_static=False, per_channel=self.config.per_channel)
        quantizer = ORTQuantizer.from_pretrained(str(variant.path), file_name="model.onnx")
        staging = out / "optimum"
        quantizer.quantize(save_dir=str(staging), quantization_config=preset)
        produced = next(staging.glob("*.onnx"))
        produced.replace(out / "model.onnx")
        import shutil

        shutil.rmtree(staging)
        copy_processor(variant.path, out)
        shutil.copy2(variant.path / "config.json", out / "config.json")
        return PassOutput("onnx", {"backend": "optimum", "preset": self.config.optimum_preset, "mode": "dynamic",
                                   "ops_after": op_counts(out / "model.onnx"),
                                   "ops_before": op_counts(variant.path / "model.onnx")})

    def _apply_onnxruntime(self, variant: Variant, ctx: PassContext, out: Path) -> PassOutput:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        c = self.config
        source = variant.path / "model.onnx"
        prepared = out / "model.prepared.onnx"
        # auto_merge: BERT exports fail symbolic shape inference without it (STACK.md).
        quant_pre_process(str(source), str(prepared), auto_merge=True, skip_optimization=False)
        name_nodes(prepared)
        reduce_range, why = choose_reduce_range(c.reduce_range)
        ops = self._op_types()
        target = out / "model.onnx"
        calibration: dict[str, Any] = {}
        if c.mode == "static":
            calib = ctx.split(variant, "calibration")
            calib = calib.take(list(range(min(c.calibration_samples, len(calib)))))
            batches = Encoder(variant).batches(calib, 8)
            calibration = {"method": c.calibration, "samples": len(calib), "split": "calibration",
                           **({"percentile": c.percentile} if c.calibration == "percentile" else {})}
        else:
            batches = []

        def build(path: Path, exclude: list[str], only: list[str] | None = None) -> None:
            self._quantize_file(prepared, path, ops, reduce_range, list(c.exclude_nodes) + exclude, only, batches)

        report: dict[str, Any] = {}
        if c.max_loss is None:
            build(target, [])
        else:
            report["accuracy_aware"] = self._fallback(variant, ctx, source, prepared, target, ops, build)
        prepared.unlink()
        for leftover in [*out.glob("*.onnx.data"), out / "model.probe.onnx"]:
            leftover.unlink(missing_ok=True)
        strip_node_metadata(target)
        copy_processor(variant.path, out)
        if (variant.path / "config.json").is_file():  # keeps the folder loadable by optimum's ORTModel
            import shutil

            shutil.copy2(variant.path / "config.json", out / "config.json")
        return PassOutput("onnx", {**report, "backend": "onnxruntime", "mode": c.mode, "reduce_range": reduce_range,
                                   "reduce_range_reason": why, "op_types": ops, "calibration": calibration,
                                   "ops_after": op_counts(target), "ops_before": op_counts(source)})

    def _quantize_file(self, prepared: Path, target: Path, ops: list[str], reduce_range: bool, exclude: list[str],
                       only: list[str] | None, batches: list[dict[str, np.ndarray]]) -> None:
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

        c = self.config
        types = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
        # Dynamic mode first splits Gemm into MatMul + Add, renaming the node `<name>_MatMul`: name both.
        exclude = [*exclude, *(f"{n}_MatMul" for n in exclude)]
        only = [*only, *(f"{n}_MatMul" for n in only)] if only else only
        if c.mode == "dynamic":
            quantize_dynamic(str(prepared), str(target), op_types_to_quantize=ops, per_channel=c.per_channel,
                             reduce_range=reduce_range, weight_type=types[c.weight_type], nodes_to_exclude=exclude,
                             nodes_to_quantize=only, extra_options={"MatMulConstBOnly": True})
            return
        import onnx
        from onnxruntime.quantization import CalibrationMethod

        methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                   "percentile": CalibrationMethod.Percentile}
        names = [i.name for i in onnx.load(str(prepared), load_external_data=False).graph.input]
        quantize_static(str(prepared), str(target), CalibrationReader(batches, names),
                        quant_format=QuantFormat.QDQ if c.format == "qdq" else QuantFormat.QOperator,
                        op_types_to_quantize=ops, per_channel=c.per_channel, reduce_range=reduce_range,
                        activation_type=types[c.activation_type], weight_type=types[c.weight_type],
                        nodes_to_exclude=exclude, nodes_to_quantize=only, calibrate_method=methods[c.calibration],
                        extra_options={"MatMulConstBOnly": True, "CalibMovingAverage": True,
                                       "CalibPercentile": c.percentile})

    def _fallback(self, variant: Variant, ctx: PassContext, source: Path, prepared: Path, target: Path,
                  ops: list[str], build: Any) -> dict[str, Any]:
        """Accuracy-aware quantization on the validation split (see `_ort_quant.accuracy_aware`)."""
        assert self.config.max_loss is not None
        data = ctx.split(variant, "validation")
        batches = Encoder(variant).batches(data, EVAL_BATCH)
        base_logits = session_logits(source, batches, ctx.threads)
        baseline = float(np.mean(base_logits.argmax(-1) == data.labels))
        probe = target.with_name("model.probe.onnx")

        def quantize(excluded: list[str]) -> float:
            build(target, excluded)
            return float(np.mean(session_logits(target, batches, ctx.threads).argmax(-1) == data.labels))

        def sensitivity(node: str) -> float:
            build(probe, [], [node])
            return mean_kl(base_logits, session_logits(probe, batches, ctx.threads))

        candidates = [n for n in quantizable_nodes(prepared, ops) if n not in self.config.exclude_nodes]
        result = accuracy_aware(candidates, baseline, self.config.max_loss, quantize, sensitivity)
        return result.to_report(self.config.max_loss)
