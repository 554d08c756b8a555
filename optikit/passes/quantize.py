"""quantize: int8 weights (dynamic) or weights and activations (static, calibrated); each backend (ONNX Runtime,
optimum, torch, Intel Neural Compressor) is a strategy with its own config and takes only its own options."""
from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from optikit.config import build_config, describe_options
from optikit.errors import ConfigError, MissingDependencyError
from optikit.models import RUNTIME_QUANTIZATION
from optikit.passes._inc_quant import NeuralCompressorConfig, quantize_inc
from optikit.passes._ort_quant import (
    OnnxRuntimeAutoConfig,
    OnnxRuntimeDynamicConfig,
    OnnxRuntimeStaticConfig,
    OptimumQuantizeConfig,
    choose_reduce_range,
    quantize_onnxruntime,
    quantize_optimum,
    unquantizable_graph,
)
from optikit.passes._torch_quant import TorchQuantizeConfig, quantize_torch
from optikit.passes.base import Pass, PassContext, PassOutput
from optikit.variant import Variant

QuantizeConfig = (OnnxRuntimeAutoConfig | OnnxRuntimeDynamicConfig | OnnxRuntimeStaticConfig | OptimumQuantizeConfig
                  | TorchQuantizeConfig | NeuralCompressorConfig)
DEFAULT_BACKEND = "onnxruntime"

__all__ = ["Backend", "BACKENDS", "Quantize", "QuantizeConfig", "QuantizeOptions", "choose_reduce_range"]


@dataclass(frozen=True)
class Backend:
    """One quantization strategy: the formats it takes, one config per mode it does, and the function doing it."""

    name: str
    formats: frozenset[str]
    configs: Mapping[str | None, type]  # by `mode`; None: a backend without modes
    apply: Callable[[Any, Variant, PassContext, Path], PassOutput]
    extra: str | None = None  # the pip extra its package comes with, checked before any work
    module: str | None = None

    def config_for(self, mode: str | None) -> type:
        return self.configs[None if None in self.configs else mode or next(iter(self.configs))]


BACKENDS: dict[str, Backend] = {b.name: b for b in (
    Backend("onnxruntime", frozenset({"onnx"}),
            {"auto": OnnxRuntimeAutoConfig, "dynamic": OnnxRuntimeDynamicConfig, "static": OnnxRuntimeStaticConfig},
            quantize_onnxruntime),
    Backend("optimum", frozenset({"onnx"}), {"dynamic": OptimumQuantizeConfig}, quantize_optimum),
    Backend("torch", frozenset({"torch", "hf"}), {"dynamic": TorchQuantizeConfig}, quantize_torch),
    Backend("neural-compressor", frozenset({"torch", "hf"}), {"static": NeuralCompressorConfig}, quantize_inc,
            extra="inc", module="neural_compressor"),
)}


def _option_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init]


class QuantizeOptions:
    """The quantize pass's `Config`: reads `backend` (and `mode`) from the options and builds that strategy's own
    frozen config, refusing any option it would ignore; `optikit passes` lists which backend takes which option."""

    @staticmethod
    def build(options: Mapping[str, Any]) -> QuantizeConfig:
        options = {k.replace("-", "_"): v for k, v in options.items()}
        name = str(options.get("backend", DEFAULT_BACKEND))
        if name not in BACKENDS:
            raise ConfigError(f"pass 'quantize' option 'backend' must be one of {', '.join(BACKENDS)}, got {name!r}")
        backend = BACKENDS[name]
        mode = options.get("mode")
        modes = [m for m in backend.configs if m is not None]
        if mode is not None and modes and str(mode) not in modes:
            if str(mode) in ("auto", "dynamic", "static"):
                raise ConfigError(f"backend={name} does mode={'/'.join(modes)} only: use backend=onnxruntime "
                                  f"for mode={mode}")
            raise ConfigError(f"pass 'quantize' option 'mode' must be one of {', '.join(modes)}, got {mode!r}")
        chosen = None if not modes else str(mode or modes[0])
        cls = backend.config_for(chosen)
        takes = _option_names(cls)
        ignored = sorted(set(options) - set(takes))
        known = {n for b in BACKENDS.values() for c in b.configs.values() for n in _option_names(c)}
        if set(ignored) - known:
            raise ConfigError(f"unknown option {sorted(set(ignored) - known)[0]!r} for pass 'quantize': known "
                              f"options are {', '.join(sorted(known))}")
        if ignored:
            where = f"backend={name}" + (f",mode={chosen}" if len(modes) > 1 else "")
            raise ConfigError(f"quantize:{where} does not use {', '.join(ignored)}: it takes "
                              f"{', '.join(sorted(n for n in takes if n != 'backend')) or 'no options'}")
        return build_config(cls, options, f"pass 'quantize' (backend={name})")

    @staticmethod
    def describe_options() -> list[tuple[str, str, str]]:
        """One row per option, naming the backends (and onnxruntime modes) that take it."""
        rows: dict[str, tuple[str, str, list[str]]] = {}
        for backend in BACKENDS.values():
            modes: dict[str, list[str]] = {}
            for mode, cls in backend.configs.items():
                for opt, kind, default in describe_options(cls):
                    if opt not in ("backend", "mode"):
                        rows.setdefault(opt, (kind, default, []))
                        modes.setdefault(opt, []).append(str(mode))
            for opt, taken in modes.items():
                rows[opt][2].append(backend.name if len(taken) == len(backend.configs)
                                    else f"{backend.name} mode={'/'.join(taken)}")
        formats = "; ".join(f"{b.name} takes {'/'.join(sorted(b.formats))}" for b in BACKENDS.values())
        head = [("backend", "|".join(BACKENDS), f"{DEFAULT_BACKEND!r}  ({formats})"),
                ("mode", "auto|dynamic|static", "'auto' for onnxruntime (static for a graph with convolutions, dynamic "
                 "otherwise), 'dynamic' elsewhere  (static: onnxruntime and neural-compressor)")]
        return head + [(opt, kind, f"{default}  [{', '.join(names)}]") for opt, (kind, default, names) in rows.items()]


class Quantize(Pass):
    """int8 quantization; `backend` picks the strategy and its options (`optikit passes` lists which takes what).

    onnxruntime (ONNX models, the default): mode=auto (the default) is static for a graph with convolutions and
    dynamic otherwise; dynamic, or static calibrated on the calibration split, when named. Static defaults
    (MatMul/Gemm/Conv/Gather, uint8 activations, per-channel int8 weights, QDQ) keep a BERT classifier's
    accuracy; `max_loss` returns the most sensitive nodes to fp32 until the validation accuracy is within budget.
    optimum: optimum's ORTQuantizer preset, as shipped (a reference). torch: torch.ao dynamic int8 of the Linear
    layers, re-applied at load time (`max_loss` too). neural-compressor: INC's PT2E static int8 run by
    torch.compile, re-applied at load time (`max_loss` drives INC's autotune).
    An option the chosen backend would ignore is refused.

    Order with export-onnx (measured on a 2-layer BERT, dynamo export): export-onnx:optimize=none|basic|O1|O2|O3
    then quantize works (O2/O3 fuse SkipLayerNormalization and BiasGelu; with a TorchScript export O2 also fuses
    Attention, whose projections then stay fp32). optimize=extended|all (ORT's FusedMatMul/FusedGemm) fail
    quantization's shape inference and O4 is fp16: this pass rejects those before any work.

    Example:
        optikit compress digits-cnn --pass quantize
        optikit compress minilm-tags --pass quantize:mode=static,max_loss=0.01
    """

    name = "quantize"
    Config = QuantizeOptions
    accepts: ClassVar[frozenset[str]] = frozenset({"onnx", "torch", "hf"})
    summary = ("int8 quantization; backend=onnxruntime (dynamic or static, calibrated), optimum, torch or "
               "neural-compressor, each with its own options")
    config: QuantizeConfig

    def __init__(self, config: QuantizeConfig | None = None) -> None:
        super().__init__(config if config is not None else OnnxRuntimeAutoConfig())
        self.backend = BACKENDS[self.config.backend]
        # Before any work, even the earlier passes of a chain: the backend's package must be importable.
        if self.backend.module and importlib.util.find_spec(self.backend.module) is None:
            raise MissingDependencyError(self.backend.module, self.backend.extra or "")

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Pass:
        return cls(QuantizeOptions.build(options))

    def accepted_formats(self) -> frozenset[str]:
        return self.backend.formats

    def check_plan(self, before: Sequence[Pass]) -> None:
        exports = [p for p in before if p.name == "export-onnx"]
        level = getattr(exports[-1].config, "optimize", "none") if exports else "none"
        if self.backend.name == "onnxruntime" and level in ("extended", "all", "O4"):
            raise ConfigError(f"quantize cannot follow export-onnx:optimize={level} ("
                              + ("fp16 graph" if level == "O4" else "ORT session fusions fail its shape inference")
                              + "): use export-onnx:optimize=O1, O2, O3 or basic before quantize")

    def check(self, variant: Variant) -> None:
        if RUNTIME_QUANTIZATION in variant.architecture:
            raise ConfigError(f"{variant.name} is already int8 (quantized by torch at load time): quantize its fp32 parent")
        if variant.format == "onnx" and self.backend.name == "onnxruntime":
            why = unquantizable_graph(variant.path / "model.onnx")
            if why:
                raise ConfigError(f"quantize cannot take {variant.name}: {why}. Export with export-onnx:optimize="
                                  "none, basic or O1–O3, quantize, and let ONNX Runtime apply its session "
                                  "optimizations when it loads the int8 model")

    def apply(self, variant: Variant, ctx: PassContext, out: Path) -> PassOutput:
        return self.backend.apply(self.config, variant, ctx, out)
