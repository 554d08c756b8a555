"""export-onnx: torch or Hugging Face → ONNX (dynamo exporter), validated against the source's logits."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from optikit.config import require
from optikit.errors import ConfigError, PassError
from optikit.models import HF_PRUNED, PIXEL_INPUT, RUNTIME_QUANTIZATION, Encoder, copy_processor, load_module
from optikit.passes._ort_quant import op_counts
from optikit.passes.base import Pass, PassContext, PassOutput
from optikit.variant import Format, Variant

VALIDATION_EXAMPLES = 64


@dataclass(frozen=True)
class ExportOnnxConfig:
    opset: int = 20
    dynamic_batch: bool = True
    dynamic_sequence: bool = True
    tolerance: float = 1e-3  # max |logit difference| accepted against the source model
    min_agreement: float = 0.995  # share of validation predictions that must match the source
    # "basic" / "extended" / "all": ONNX Runtime's session optimizer, saved offline (any model).
    # "O1".."O4": optimum's transformer levels (hf only): O1 general, O2 + attention/LayerNorm/GELU fusions,
    # O3 + fast GELU approximation, O4 + fp16 (GPU only). See the class docstring for which ones quantize takes.
    optimize: Literal["none", "basic", "extended", "all", "O1", "O2", "O3", "O4"] = "none"
    # "dynamo" (torch.export, the default) or "torchscript" (the tracing exporter): ONNX Runtime's transformer
    # fusions recognise attention in a TorchScript export only, so `exporter=torchscript,optimize=O2` gives fused
    # Attention / EmbedLayerNormalization nodes that dynamic int8 turns into QAttention / QEmbedLayerNormalization.
    exporter: Literal["dynamo", "torchscript"] = "dynamo"

    def __post_init__(self) -> None:
        require(13 <= self.opset <= 23, f"opset must be in 13..23, got {self.opset}")
        require(self.tolerance > 0, f"tolerance must be > 0, got {self.tolerance}")
        require(0 < self.min_agreement <= 1, f"min_agreement must be in (0, 1], got {self.min_agreement}")


class _LogitsOnly:
    """Wraps a Hugging Face classifier so the exported graph has named tensor inputs and one `logits` output."""

    @staticmethod
    def wrap(module: Any) -> Any:
        import torch

        class Wrapper(torch.nn.Module):
            def __init__(self, inner: Any) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
                return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                                  token_type_ids=token_type_ids).logits

        return Wrapper(module).eval()

    @staticmethod
    def wrap_image(module: Any) -> Any:
        """An image classifier (Hugging Face or rebuilt from one) as `pixel_values → logits`."""
        import torch

        class ImageWrapper(torch.nn.Module):
            def __init__(self, inner: Any) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, pixel_values: Any) -> Any:
                return self.inner(pixel_values=pixel_values).logits

        return ImageWrapper(module).eval()


def returns_model_output(variant: Variant) -> bool:
    """Whether the variant's module is a Hugging Face model (an output object, keyword inputs), not a plain CNN."""
    return variant.format == "hf" or variant.architecture.get("name") == HF_PRUNED


def export_module(module: Any, feeds: dict[str, np.ndarray], path: Path, config: ExportOnnxConfig) -> None:
    """Exports with torch.export (dynamo); `feeds` must have batch ≥ 2 or the exporter specialises the batch to 1."""
    import logging

    import torch
    from torch.export import Dim

    # The exporter logs a warning per missing torchvision op on every export; none of them matter here.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    names = _forward_order(module, feeds)
    args = tuple(torch.from_numpy(feeds[n]) for n in names)
    batch = Dim("batch", min=1, max=4096) if config.dynamic_batch else None
    sequence = Dim("sequence", min=1, max=4096) if config.dynamic_sequence else None
    shapes: list[Any] = []
    for n in names:
        axes: dict[int, Any] = {}
        if batch is not None:
            axes[0] = batch
        if n != PIXEL_INPUT and sequence is not None:
            axes[1] = sequence
        shapes.append(axes or None)
    if config.exporter == "torchscript":
        _export_torchscript(module, args, names, path, config)
        return
    try:
        program = torch.onnx.export(module, args, dynamo=True, input_names=names, output_names=["logits"],
                                    dynamic_shapes=tuple(shapes), opset_version=config.opset, verbose=False,
                                    optimize=True, report=False)
    except Exception as exc:
        raise PassError(f"ONNX export failed at {_failing_site(exc)}: {_first_line(exc)}; try another opset "
                        "(export-onnx:opset=17) or report the module") from exc
    if program is None:
        raise PassError("the ONNX exporter returned no program: update torch / onnxscript")
    program.save(str(path), external_data=False)


def _export_torchscript(module: Any, args: tuple[Any, ...], names: list[str], path: Path,
                        config: ExportOnnxConfig) -> None:
    """The tracing exporter, with the same input names and dynamic axes as the dynamo path."""
    import torch

    axes: dict[str, dict[int, str]] = {}
    for n in names:
        axes[n] = {**({0: "batch"} if config.dynamic_batch else {}),
                   **({1: "sequence"} if n != PIXEL_INPUT and config.dynamic_sequence else {})}
    axes["logits"] = {0: "batch"} if config.dynamic_batch else {}
    try:
        torch.onnx.export(module, args, str(path), dynamo=False, input_names=names, output_names=["logits"],
                          dynamic_axes={k: v for k, v in axes.items() if v}, opset_version=min(config.opset, 17),
                          do_constant_folding=True)
    except Exception as exc:
        raise PassError(f"ONNX export (torchscript) failed at {_failing_site(exc)}: {_first_line(exc)}; try "
                        "export-onnx:exporter=dynamo") from exc


def _forward_order(module: Any, feeds: dict[str, np.ndarray]) -> list[str]:
    """Feed names in the order of `forward`'s parameters: the exporter passes them positionally, and the
    tokenizer's order (input_ids, token_type_ids, attention_mask) would hand the type ids to the mask."""
    import inspect

    params = list(inspect.signature(module.forward).parameters)
    if all(n in params for n in feeds):
        return sorted(feeds, key=params.index)
    return list(feeds)


def _first_line(exc: BaseException) -> str:
    """The exporter's own summary line (`<class 'X'>: why`) when it has one, else the first line."""
    import re

    text = str(exc).strip()
    summary = re.search(r"<class '([\w.]+)'>: (.+)", text)
    if summary:
        return f"{summary.group(1).rsplit('.', 1)[-1]}: {summary.group(2)[:300]}"
    return re.sub(r"\x1b\[[0-9;]*m", "", text.splitlines()[0])[:300] if text else type(exc).__name__


def _failing_site(exc: BaseException) -> str:
    """The module or op the exporter names in its traceback, so the user knows what to look at."""
    import re

    text = "".join(str(e) for e in (exc, exc.__cause__, exc.__context__) if e)
    for pattern in (r"(aten::[\w.]+)", r"(torch\.ops\.[\w.]+)", r"module '([\w.]+)'", r"in (\w+Module|\w+\.forward)"):
        match = re.search(pattern, text)
        if match:
            return match.group(1)
    return type(exc).__name__


def compare_logits(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    return {"max_abs_diff": float(np.max(np.abs(a - b))) if a.size else 0.0,
            "agreement": float(np.mean(a.argmax(-1) == b.argmax(-1))) if a.size else 1.0}


def check_agreement(reference: np.ndarray, exported: np.ndarray, config: Any, source: str,
                    what: str = "the ONNX export", option: str = "export-onnx") -> dict[str, float]:
    """max |Δlogit| and prediction agreement of an export against its source; PassError beyond the bounds of
    `config` (its `tolerance` and `min_agreement`)."""
    check = compare_logits(reference, exported)
    if check["max_abs_diff"] > config.tolerance or check["agreement"] < config.min_agreement:
        raise PassError(f"{what} differs from {source}: max |Δlogit| {check['max_abs_diff']:.2e} "
                        f"(tolerance {config.tolerance:g}), agreement {check['agreement']:.3f}; raise "
                        f"{option}:tolerance=… only if that difference is acceptable")
    return check


def source_and_export_logits(source: Variant, exported: Any, ctx: PassContext) -> tuple[np.ndarray, np.ndarray]:
    """Logits of `source` and of `exported` (a runner) on the first validation examples, batch by batch."""
    from optikit.runners import load_runner

    data = ctx.split(source, "validation")
    data = data.take(list(range(min(VALIDATION_EXAMPLES, len(data)))))
    ref_runner = load_runner(source, ctx.threads)
    ref, new = [], []
    for feeds in Encoder(source).batches(data, 16):
        ref.append(ref_runner.logits(feeds))
        new.append(exported.logits(feeds))
    return np.concatenate(ref), np.concatenate(new)


def validate_against(source: Variant, exported: Variant, ctx: PassContext, config: ExportOnnxConfig) -> dict[str, float]:
    """Runs source and export on validation examples; returns max |Δlogit| and agreement, or raises PassError."""
    from optikit.runners import load_runner

    reference, logits = source_and_export_logits(source, load_runner(exported, ctx.threads), ctx)
    return check_agreement(reference, logits, config, source.name)


def optimize_graph(path: Path, level: str, threads: int) -> None:
    """Saves ONNX Runtime's optimized graph in place of the exported one."""
    import onnxruntime as ort

    levels = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    options = ort.SessionOptions()
    options.graph_optimization_level = levels[level]
    options.intra_op_num_threads = threads
    optimized = path.with_name("model.optimized.onnx")
    options.optimized_model_filepath = str(optimized)
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    optimized.replace(path)


TRANSFORMER_LEVELS = ("O1", "O2", "O3", "O4")


def optimize_transformer(directory: Path, level: str) -> dict[str, int]:
    """Rewrites `directory/model.onnx` with optimum's ORTOptimizer at `level`; needs `config.json` beside it.

    Returns the fused operators found afterwards (e.g. {"SkipLayerNormalization": 4}).
    """
    import shutil

    from optimum.onnxruntime import ORTOptimizer
    from optimum.onnxruntime.configuration import AutoOptimizationConfig

    # O4 is O3 + fp16, which optimum only builds for a GPU; asking for it on purpose is the user's choice.
    config = AutoOptimizationConfig.with_optimization_level(level, for_gpu=level == "O4")
    scratch = directory / "_optimum"
    try:
        ORTOptimizer.from_pretrained(directory, file_names=["model.onnx"]).optimize(config, scratch, file_suffix=None)
        (scratch / "model.onnx").replace(directory / "model.onnx")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return ORTOptimizer.get_fused_operators(directory / "model.onnx")


class ExportOnnx(Pass):
    """Exports a torch or Hugging Face classifier to ONNX and checks it against the source.

    `optimize` saves an optimized graph: ONNX Runtime's levels (basic/extended/all) for any model, optimum's
    O1–O4 for transformers. Composition with quantize, measured on a 2-layer BERT: none, basic, O1, O2 and O3
    quantize fine (dynamic and static, agreement 1.0); extended/all leave FusedMatMul/FusedGemm that fail
    quantization's symbolic shape inference, and O4 is fp16 — quantize rejects both when planning the chain.
    To have both, export with O1–O3, quantize, and let ONNX Runtime fuse the int8 graph at load time.

    Example:
        optikit compress digits-cnn --pass export-onnx
        optikit compress minilm-tags --pass export-onnx:opset=18,tolerance=1e-4
        optikit compress ./my-resnet-variant --pass export-onnx     # input pixel_values (N, C, H, W), dynamic N
    """

    name = "export-onnx"
    Config = ExportOnnxConfig
    accepts: ClassVar[frozenset[str]] = frozenset({"torch", "hf"})
    summary = "torch / HF → ONNX (dynamo exporter), validated against the source logits"
    config: ExportOnnxConfig

    def output_format(self, input_format: str) -> Format:
        return "onnx"

    def check(self, variant: Variant) -> None:
        if self.config.optimize in TRANSFORMER_LEVELS and variant.format != "hf":
            raise ConfigError(f"export-onnx:optimize={self.config.optimize} is for Hugging Face transformers; "
                              f"{variant.name} is {variant.format}: use optimize=basic, extended or all")
        if RUNTIME_QUANTIZATION in variant.architecture:
            raise ConfigError(f"{variant.name} is quantized by torch at load time and cannot be exported: export "
                              "first and quantize the ONNX model (quantize:backend=onnxruntime)")

    def apply(self, variant: Variant, ctx: PassContext, out: Path) -> PassOutput:
        import dataclasses
        import shutil

        module = load_module(variant)
        encoder = Encoder(variant)
        sample = ctx.split(variant, "validation")
        sample = sample.take(list(range(min(2, len(sample)))))
        feeds = encoder.encode(sample.inputs)
        if returns_model_output(variant):
            module = _LogitsOnly.wrap_image(module) if variant.task.kind == "image" else _LogitsOnly.wrap(module)
        # The tokenizer or the image processor (its normalisation) goes with the ONNX file.
        copy_processor(variant.path, out)
        if variant.format == "hf":
            # config.json makes the folder loadable by optimum's ORTModelFor…Classification and ORTOptimizer.
            shutil.copy2(variant.path / "config.json", out / "config.json")
        export_module(module, feeds, out / "model.onnx", self.config)
        fused: dict[str, int] = {}
        if self.config.optimize in TRANSFORMER_LEVELS:
            fused = optimize_transformer(out, self.config.optimize)
        elif self.config.optimize != "none":
            optimize_graph(out / "model.onnx", self.config.optimize, ctx.threads)
        exported = dataclasses.replace(variant, format="onnx", path=out)
        check = validate_against(variant, exported, ctx, self.config)
        return PassOutput("onnx", {"validation": check, "opset": self.config.opset, "exporter": self.config.exporter,
                                   "optimize": self.config.optimize, "fused_ops": fused,
                                   "ops": op_counts(out / "model.onnx")})
