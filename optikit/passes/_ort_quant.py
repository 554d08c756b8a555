"""The quantize pass's ONNX Runtime backends (dynamic, static) and optimum's ORTQuantizer: their configs, the
ONNX graph inspection they need, and the accuracy-aware fallback loop (shared with the torch backend)."""
from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from optikit.config import require
from optikit.errors import ConfigError
from optikit.models import Encoder, copy_processor
from optikit.passes.base import PassContext, PassOutput
from optikit.progress import say
from optikit.variant import Variant

# Ops whose int8 kernels pay off on CPU. Static int8 of every op type destroys a BERT classifier (0.97 → 0.58
# accuracy, STACK.md); MatMul (+ Gather) with uint8 activations keeps 0.963, so static stays on the weighted ops.
DEFAULT_OPS = ("MatMul", "Gemm", "Conv", "Gather")
# ONNX Runtime's fused transformer ops (export-onnx:exporter=torchscript,optimize=O2): dynamic int8 has kernels for
# both (QAttention, QEmbedLayerNormalization), so the attention projections and the embedding table go int8 too.
FUSED_DYNAMIC_OPS = ("Attention", "EmbedLayerNormalization")
EMBEDDING_OPS = ("Gather", "EmbedLayerNormalization")
EVAL_BATCH = 32
DEFAULT_PERCENTILE = 99.999
DEFAULT_TRIAL_LOSS = 0.01  # accuracy a mode=auto trial candidate may lose on the validation split (max_loss unset)


@dataclass(frozen=True)
class AccuracyBudget:
    """Options of the backends that can return nodes (modules) to fp32: onnxruntime and torch."""

    exclude_nodes: tuple[str, ...] = ()  # node names (ONNX) or module names (torch) left in fp32
    # Accuracy budget on the validation split vs the input model (0.01 = one point); None: no check.
    max_loss: float | None = None

    def __post_init__(self) -> None:
        require(self.max_loss is None or 0 <= self.max_loss < 1, f"max_loss must be in [0, 1), got {self.max_loss}")


@dataclass(frozen=True)
class OnnxRuntimeOptions(AccuracyBudget):
    """What both ONNX Runtime modes take."""

    backend: Literal["onnxruntime"] = "onnxruntime"
    per_channel: bool = True
    weight_type: Literal["int8", "uint8"] = "int8"  # QInt8 weights: QUInt8 gave no speedup (STACK.md)
    op_types: tuple[str, ...] = ()  # empty: DEFAULT_OPS
    exclude_op_types: tuple[str, ...] = ()
    embeddings: bool = True  # quantize Gather (embedding tables) too
    reduce_range: Literal["auto", "true", "false"] = "auto"

    def op_types_to_quantize(self) -> list[str]:
        ops = [o for o in (self.op_types or self.default_ops()) if self.embeddings or o not in EMBEDDING_OPS]
        return [o for o in ops if o not in self.exclude_op_types]

    def default_ops(self) -> tuple[str, ...]:
        return DEFAULT_OPS


@dataclass(frozen=True)
class OnnxRuntimeAutoConfig(OnnxRuntimeOptions):
    """backend=onnxruntime, mode=auto (the default): static for a graph with convolutions, dynamic otherwise.

    Dynamic quantization turns Conv into ConvInteger, which has no fast kernel in ONNX Runtime (the digits CNN
    ran 8× slower than its fp32 ONNX parent at batch 32, even with VNNI/AMX), while static QDQ convolutions use
    the int8 kernels; a transformer's MatMuls gain from dynamic quantization without calibration data."""

    mode: Literal["auto"] = "auto"
    # Seconds of timing per candidate layer set when the graph and CPU leave a choice (a CNN); 0: no trial, every
    # weighted op int8. See optikit/passes/_ort_auto.py.
    trial_seconds: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        require(0 <= self.trial_seconds <= 60, f"trial_seconds must be in [0, 60], got {self.trial_seconds}")

    def resolve(self, graph: Path) -> tuple[OnnxRuntimeDynamicConfig | OnnxRuntimeStaticConfig, str]:
        """The mode for the graph at `graph`, and why, in one phrase."""
        ops = op_counts(graph)
        convs, matmuls = ops.get("Conv", 0), ops.get("MatMul", 0) + ops.get("Gemm", 0)
        common = {f.name: getattr(self, f.name) for f in dataclasses.fields(OnnxRuntimeOptions)}
        # Convolutions dominate (a CNN): static. A transformer with a convolutional stem (ViT's patch embedding)
        # is its MatMuls, which dynamic int8 serves without calibration.
        if convs > matmuls and "Conv" in self.op_types_to_quantize():
            from optikit.cpu import cpu_features
            from optikit.passes._ort_auto import number_formats

            activation = number_formats(cpu_features()).activation_type
            return (OnnxRuntimeStaticConfig(**common, activation_type=activation),  # type: ignore[arg-type]
                    f"static: the graph has {convs} Conv node(s) against {matmuls} MatMul/Gemm, and dynamic int8 "
                    "convolutions (ConvInteger) have no fast kernel in ONNX Runtime")
        return OnnxRuntimeDynamicConfig(**common), (f"dynamic: {matmuls} MatMul/Gemm node(s) against {convs} Conv; "
                                                    "int8 weights, activations quantized on the fly")


@dataclass(frozen=True)
class OnnxRuntimeDynamicConfig(OnnxRuntimeOptions):
    """backend=onnxruntime, mode=dynamic: int8 weights, activations quantized on the fly (nothing to calibrate)."""

    mode: Literal["dynamic"] = "dynamic"

    def default_ops(self) -> tuple[str, ...]:
        return DEFAULT_OPS + FUSED_DYNAMIC_OPS


@dataclass(frozen=True)
class OnnxRuntimeStaticConfig(OnnxRuntimeOptions):
    """backend=onnxruntime, mode=static: weights and activations, calibrated on the calibration split."""

    mode: Literal["static"] = "static"
    activation_type: Literal["uint8", "int8"] = "uint8"  # S8S8 QDQ ran slower than fp32 (STACK.md)
    calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    calibration_samples: int = 128
    percentile: float = DEFAULT_PERCENTILE  # calibration=percentile only
    format: Literal["qdq", "qoperator"] = "qdq"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.calibration_samples >= 1, f"calibration_samples must be ≥ 1, got {self.calibration_samples}")
        require(50 < self.percentile <= 100, f"percentile must be in (50, 100], got {self.percentile}")
        require(self.calibration == "percentile" or self.percentile == DEFAULT_PERCENTILE,
                f"percentile applies to calibration=percentile only, not calibration={self.calibration}: "
                "drop percentile or set calibration=percentile")


@dataclass(frozen=True)
class OptimumQuantizeConfig:
    """backend=optimum: optimum's ORTQuantizer with one of its presets, as shipped (the reference to compare with)."""

    backend: Literal["optimum"] = "optimum"
    mode: Literal["dynamic"] = "dynamic"
    per_channel: bool = True
    optimum_preset: Literal["avx512_vnni", "avx512", "avx2", "arm64"] = "avx512_vnni"


def choose_reduce_range(setting: str) -> tuple[bool, str]:
    """7-bit weights avoid u8×s8 overflow in AVX2/AVX-512 kernels without VNNI; with VNNI, full range is safe."""
    from optikit.cpu import cpu_features
    from optikit.passes._ort_auto import number_formats

    formats = number_formats(cpu_features(), setting)
    return formats.reduce_range, formats.reduce_range_reason


def op_counts(path: Path) -> dict[str, int]:
    """Node counts by op type (the harness's counter: optikit.harness.diagnostics)."""
    from optikit.harness.diagnostics import onnx_op_counts

    return dict(onnx_op_counts(path)["ops"])


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
    weight_input = {"MatMul": 1, "Gemm": 1, "Conv": 1, "Gather": 0, "Attention": 1, "EmbedLayerNormalization": 2}
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


def open_session(path: Path, threads: int) -> Any:
    """A CPU session set up as the harness's runner sets one up (explicit threads, no spinning after a call)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.force_spinning_stop", "1")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def session_logits(path: Path, batches: list[dict[str, np.ndarray]], threads: int) -> np.ndarray:
    session = open_session(path, threads)
    names = [i.name for i in session.get_inputs()]
    return np.concatenate([np.asarray(session.run(None, {k: b[k] for k in names if k in b})[0], np.float32)
                           for b in batches])


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
    steps: list[dict[str, Any]] = [{"fp32_nodes": 0, "accuracy": accuracy, "loss": baseline_accuracy - accuracy}]
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


def mean_kl_logits(base_logits: np.ndarray, logits: np.ndarray) -> float:
    """KL(fp32 ‖ quantized) averaged over examples: a continuous sensitivity where accuracy is too coarse."""
    from optikit.harness.metrics import mean_kl, softmax

    return mean_kl(softmax(base_logits), softmax(logits))


def calibration_count(asked: int, available: int) -> tuple[int, str | None]:
    """How many calibration samples static quantization uses, and a note when that is fewer than asked.

    Capped, not refused: the split holds at most CALIBRATION_MAX (128) rows, fewer on small data, and the default
    (128) must work there too; ranges from fewer samples are still ranges, and the report keeps both numbers.
    """
    if asked <= available:
        return asked, None
    return available, (f"calibration_samples={asked} but the calibration split holds {available}: calibrated on "
                       f"{available} (set calibration_samples ≤ {available} to silence this)")


def quantize_onnxruntime(config: OnnxRuntimeAutoConfig | OnnxRuntimeDynamicConfig | OnnxRuntimeStaticConfig,
                         variant: Variant, ctx: PassContext, out: Path) -> PassOutput:
    """ONNX Runtime's quantize_dynamic / quantize_static on the pre-processed graph, within `max_loss` if set;
    mode=auto picks one of the two for this graph first, and says which and why."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source = variant.path / "model.onnx"
    chosen: dict[str, Any] = {}
    if isinstance(config, OnnxRuntimeAutoConfig):
        resolved, why_mode = config.resolve(source)
        say(f"quantize: mode=auto chose {why_mode}")
        chosen = {"mode_requested": "auto", "mode_reason": why_mode}
    else:
        resolved = config
    c: OnnxRuntimeDynamicConfig | OnnxRuntimeStaticConfig = resolved
    prepared = out / "model.prepared.onnx"
    calibration: dict[str, Any] = {}
    batches: list[dict[str, np.ndarray]] = []
    if isinstance(c, OnnxRuntimeStaticConfig):  # checked against the data before any work on the graph
        calib = ctx.split(variant, "calibration")
        count, note = calibration_count(c.calibration_samples, len(calib))
        if note:
            say(f"quantize: {note}")
        calib = calib.take(list(range(count)))
        batches = Encoder(variant).batches(calib, 8)
        calibration = {"method": c.calibration, "samples": len(calib), "split": "calibration",
                       **({"percentile": c.percentile} if c.calibration == "percentile" else {}),
                       **({"samples_asked": c.calibration_samples, "note": note} if note else {})}
    # auto_merge: BERT exports fail symbolic shape inference without it (STACK.md).
    quant_pre_process(str(source), str(prepared), auto_merge=True, skip_optimization=False)
    name_nodes(prepared)
    reduce_range, why = choose_reduce_range(c.reduce_range)
    ops = c.op_types_to_quantize()
    target = out / "model.onnx"
    if isinstance(config, OnnxRuntimeAutoConfig) and isinstance(c, OnnxRuntimeStaticConfig):
        from optikit.passes._ort_auto import layer_trial

        def build_layers(path: Path, op_types: list[str], exclude: list[str]) -> None:
            _quantize_file(c, prepared, path, op_types, reduce_range, exclude, None, batches)

        c, ops, trial = layer_trial(config.trial_seconds, c, variant, ctx, source, prepared, ops, batches,
                                    build_layers)
        chosen.update({"trial": trial} if trial else {})
        if trial and trial.get("intra_op_threads"):  # read by the runner (optikit.runners.OrtRunner)
            chosen["runtime"] = {"intra_op_threads": trial["intra_op_threads"],
                                 "reason": f"timed faster on {trial['intra_op_threads']} intra-op thread than on "
                                           f"{ctx.threads} by quantize's trial on {trial['cpu']}"}

    def build(path: Path, exclude: list[str], only: list[str] | None = None) -> None:
        _quantize_file(c, prepared, path, ops, reduce_range, list(c.exclude_nodes) + exclude, only, batches)

    report: dict[str, Any] = {}
    if c.max_loss is None:
        build(target, [])
    else:
        report["accuracy_aware"] = _fallback(c, variant, ctx, source, prepared, target, ops, build)
    prepared.unlink()
    for leftover in [*out.glob("*.onnx.data"), out / "model.probe.onnx"]:
        leftover.unlink(missing_ok=True)
    strip_node_metadata(target)
    copy_processor(variant.path, out)
    if (variant.path / "config.json").is_file():  # keeps the folder loadable by optimum's ORTModel
        shutil.copy2(variant.path / "config.json", out / "config.json")
    from optikit.cpu import cpu_features

    cpu = cpu_features()
    activation = {"activation_type": c.activation_type} if isinstance(c, OnnxRuntimeStaticConfig) else {}
    return PassOutput("onnx", {**report, **chosen, "backend": "onnxruntime", "mode": c.mode,
                               "reduce_range": reduce_range, **activation,
                               # The machine the choices were made on: a report measured elsewhere compares them.
                               "made_on": {"model": cpu.model, "machine": cpu.machine, "int8_flags": cpu.int8_flags()},
                               "reduce_range_reason": why, "op_types": ops, "calibration": calibration,
                               "ops_after": op_counts(target), "ops_before": op_counts(source)})


def _quantize_file(c: OnnxRuntimeOptions, prepared: Path, target: Path, ops: list[str], reduce_range: bool,
                   exclude: list[str], only: list[str] | None, batches: list[dict[str, np.ndarray]]) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    types = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    # Dynamic mode first splits Gemm into MatMul + Add, renaming the node `<name>_MatMul`: name both.
    exclude = [*exclude, *(f"{n}_MatMul" for n in exclude)]
    only = [*only, *(f"{n}_MatMul" for n in only)] if only else only
    if not isinstance(c, OnnxRuntimeStaticConfig):
        quantize_dynamic(str(prepared), str(target), op_types_to_quantize=ops, per_channel=c.per_channel,
                         reduce_range=reduce_range, weight_type=types[c.weight_type], nodes_to_exclude=exclude,
                         nodes_to_quantize=only,
                         # DefaultTensorType: shape inference leaves com.microsoft ops' outputs untyped (fp32 here).
                         extra_options={"MatMulConstBOnly": True, "DefaultTensorType": 1})
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


def _fallback(c: OnnxRuntimeOptions, variant: Variant, ctx: PassContext, source: Path, prepared: Path,
              target: Path, ops: list[str], build: Any) -> dict[str, Any]:
    """Accuracy-aware quantization on the validation split (see `accuracy_aware`)."""
    assert c.max_loss is not None
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
        return mean_kl_logits(base_logits, session_logits(probe, batches, ctx.threads))

    candidates = [n for n in quantizable_nodes(prepared, ops) if n not in c.exclude_nodes]
    return accuracy_aware(candidates, baseline, c.max_loss, quantize, sensitivity).to_report(c.max_loss)


def quantize_optimum(config: OptimumQuantizeConfig, variant: Variant, ctx: PassContext, out: Path) -> PassOutput:
    """optimum's ORTQuantizer with one of its presets, as shipped: the reference optikit is compared with."""
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    if not (variant.path / "config.json").is_file():
        raise ConfigError(f"backend=optimum needs a Hugging Face export with config.json; {variant.name} has "
                          "none: use backend=onnxruntime")
    preset = getattr(AutoQuantizationConfig, config.optimum_preset)(is_static=False, per_channel=config.per_channel)
    quantizer = ORTQuantizer.from_pretrained(str(variant.path), file_name="model.onnx")
    staging = out / "optimum"
    quantizer.quantize(save_dir=str(staging), quantization_config=preset)
    next(staging.glob("*.onnx")).replace(out / "model.onnx")
    shutil.rmtree(staging)
    copy_processor(variant.path, out)
    shutil.copy2(variant.path / "config.json", out / "config.json")
    return PassOutput("onnx", {"backend": "optimum", "preset": config.optimum_preset, "mode": "dynamic",
                               "ops_after": op_counts(out / "model.onnx"),
                               "ops_before": op_counts(variant.path / "model.onnx")})
