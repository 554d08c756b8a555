"""export-openvino: torch, Hugging Face or ONNX → OpenVINO IR (fp32, a bf16 inference hint, or NNCF int8), checked
against the source's logits; an optional extra (`pip install 'optikit[openvino]'`) for comparing runtimes."""
from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from optikit.config import require
from optikit.errors import ConfigError, MissingDependencyError, PassError
from optikit.models import RUNTIME_QUANTIZATION, Encoder, copy_processor, load_module
from optikit.passes.base import Pass, PassContext, PassOutput
from optikit.passes.export_onnx import (
    _forward_order,
    _LogitsOnly,
    check_agreement,
    compare_logits,
    returns_model_output,
    source_and_export_logits,
)
from optikit.variant import Format, Variant

OPENVINO_XML = "model.xml"
# What the runner passes as INFERENCE_PRECISION_HINT, by the pass's `precision`: int8 graphs keep f32 for the
# operators NNCF left in float, and the CPU's default hint is bf16 wherever it has AMX/AVX-512 BF16.
INFERENCE_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


@dataclass(frozen=True)
class ExportOpenVinoConfig:
    precision: Literal["fp32", "bf16", "int8"] = "fp32"
    # int8: NNCF's preset; auto = NNCF's own choice (mixed for text models, which it quantizes as transformers,
    # performance — symmetric activations — otherwise).
    preset: Literal["auto", "performance", "mixed"] = "auto"
    subset_size: int = 128  # int8: calibration examples (the calibration split holds at most 128)
    max_loss: float | None = None  # int8: most validation accuracy NNCF may lose (quantize_with_accuracy_control)
    tolerance: float = 1e-3  # fp32: max |logit difference| accepted against the source model
    min_agreement: float = 0.995  # fp32: share of validation predictions that must match the source

    def __post_init__(self) -> None:
        require(self.subset_size >= 1, f"subset_size must be ≥ 1, got {self.subset_size}")
        require(self.max_loss is None or 0 <= self.max_loss < 1, f"max_loss must be in [0, 1), got {self.max_loss}")
        require(self.tolerance > 0, f"tolerance must be > 0, got {self.tolerance}")
        require(0 < self.min_agreement <= 1, f"min_agreement must be in (0, 1], got {self.min_agreement}")
        if self.precision != "int8":
            for name, default in (("preset", "auto"), ("max_loss", None), ("subset_size", 128)):
                require(getattr(self, name) == default, f"export-openvino option {name} applies to precision=int8 "
                        f"only, not precision={self.precision}: drop {name} or set precision=int8")


def _pixels_only(module: Any) -> Any:
    """A plain CNN as `pixel_values → logits`, so the IR's input carries the name the encoder feeds."""
    import torch

    class PixelWrapper(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, pixel_values: Any) -> Any:
            return self.inner(pixel_values)

    return PixelWrapper(module).eval()


def convert(variant: Variant, example: dict[str, np.ndarray]) -> Any:
    """The variant as an ov.Model with named inputs (the encoder's names) and one `logits` output, dynamic shapes."""
    import openvino as ov

    if variant.format == "onnx":
        model = ov.convert_model(str(variant.path / "model.onnx"))
    else:
        import torch

        module = load_module(variant).eval()
        if variant.task.kind == "text":
            module = _LogitsOnly.wrap(module)
        elif returns_model_output(variant):
            module = _LogitsOnly.wrap_image(module)
        else:
            module = _pixels_only(module)
        # The converter orders inputs as forward() declares them, whatever the dict's order (tokenizers put
        # token_type_ids second): the dict goes in forward's order and every caller feeds by name.
        names = _forward_order(module, example)
        with torch.inference_mode():
            model = ov.convert_model(module, example_input={n: torch.from_numpy(example[n]) for n in names})
    for port in model.inputs:
        # TorchScript adds numbered aliases ("61"): the encoder's name alone stays, so every reader finds it.
        named = set(port.get_names()) & set(example)
        if len(named) != 1:
            raise PassError(f"the OpenVINO model's input {sorted(port.get_names())} matches none of the encoder's "
                            f"{sorted(example)}: export the model with named inputs (export-onnx first) and convert that")
        port.get_tensor().set_names(named)
    model.outputs[0].get_tensor().set_names({"logits"})
    return model


@contextlib.contextmanager
def _nncf_quiet() -> Iterator[Any]:
    """NNCF logs every step and draws progress bars on stdout; the pass says what it did in its report."""
    import logging

    import nncf

    nncf.set_log_level(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield nncf


def _examples(encoder: Encoder, inputs: Any, labels: Any = None) -> list[Any]:
    """One item per example (batch 1, unpadded texts): NNCF's subset_size then counts examples."""
    feeds = [encoder.encode(inputs[i:i + 1]) for i in range(len(inputs))]
    return feeds if labels is None else [(f, int(y)) for f, y in zip(feeds, labels, strict=True)]


def _accuracy(compiled: Any, items: Any) -> tuple[float, list[float]]:
    """NNCF's validation_fn: accuracy over (feeds, label) items and the per-example 0/1 it ranks operators by."""
    hits = [float(np.argmax(compiled(feeds)[0]) == label) for feeds, label in items]
    return (float(np.mean(hits)) if hits else 0.0), hits


def quantize_int8(model: Any, variant: Variant, ctx: PassContext, config: ExportOpenVinoConfig) -> tuple[Any, dict[str, Any]]:
    """NNCF post-training int8 on the calibration split; within `max_loss` of validation accuracy when set."""
    encoder = Encoder(variant)
    calib = ctx.split(variant, "calibration")
    count = min(config.subset_size, len(calib))
    items = _examples(encoder, calib.inputs[:count])
    with _nncf_quiet() as nncf:
        kwargs: dict[str, Any] = {"subset_size": count}
        if variant.task.kind == "text":
            kwargs["model_type"] = nncf.ModelType.TRANSFORMER
        if config.preset != "auto":
            kwargs["preset"] = nncf.QuantizationPreset(config.preset)
        report: dict[str, Any] = {"preset": config.preset, "model_type": "transformer" if "model_type" in kwargs
                                  else "default", "calibration": {"split": "calibration", "samples": count}}
        if count < config.subset_size:
            report["calibration"]["note"] = (f"subset_size={config.subset_size} but the calibration split holds "
                                             f"{count}: calibrated on {count}")
        if config.max_loss is None:
            return nncf.quantize(model, nncf.Dataset(items), **kwargs), report
        import openvino as ov

        validation = ctx.split(variant, "validation")
        checked = nncf.Dataset(_examples(encoder, validation.inputs, validation.labels), lambda item: item[0])
        quantized = nncf.quantize_with_accuracy_control(model, nncf.Dataset(items), checked, _accuracy,
                                                        max_drop=config.max_loss, **kwargs)
        # NNCF returns its best attempt even when it misses the budget (it only logs that): measure both here.
        core = ov.Core()
        accuracy = {name: _accuracy(core.compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}),
                                    checked.get_data())[0] for name, m in (("fp32", model), ("int8", quantized))}
    report["accuracy_aware"] = {"max_loss": config.max_loss, "baseline_accuracy": accuracy["fp32"],
                                "accuracy": accuracy["int8"], "loss": accuracy["fp32"] - accuracy["int8"],
                                "within_budget": accuracy["fp32"] - accuracy["int8"] <= config.max_loss + 1e-12}
    return quantized, report


def validate_openvino(source: Variant, exported: Variant, ctx: PassContext,
                      config: ExportOpenVinoConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Source vs IR on validation examples: (max |Δlogit| and agreement, the runner's info); fp32 must agree."""
    from optikit.runners import OpenVinoRunner

    runner = OpenVinoRunner(exported, ctx.threads)
    reference, logits = source_and_export_logits(source, runner, ctx)
    # bf16 and int8 change the logits by design: their differences are recorded, and int8 has max_loss.
    check = (check_agreement(reference, logits, config, source.name, "the OpenVINO model", "export-openvino")
             if config.precision == "fp32" else compare_logits(reference, logits))
    return check, runner.info()


class ExportOpenVino(Pass):
    """Converts a torch, Hugging Face or ONNX classifier to OpenVINO IR (model.xml + model.bin) and checks it.

    precision=fp32 keeps f32 inference (the CPU default is bf16 where the CPU has it); bf16 records a bf16
    inference hint that the runner applies (a CPU without bf16 runs f32: the runner's info says which ran);
    int8 quantizes with NNCF on the calibration split (text models as transformers), within `max_loss` of
    validation accuracy when set. Inputs are matched by name. Needs `pip install 'optikit[openvino]'`.

    Example:
        optikit compress digits-cnn --pass export-openvino
        optikit compress minilm-tags --pass export-openvino:precision=int8,max_loss=0.01
    """

    name = "export-openvino"
    Config = ExportOpenVinoConfig
    accepts: ClassVar[frozenset[str]] = frozenset({"torch", "hf", "onnx"})
    summary = "torch / HF / ONNX → OpenVINO IR (fp32, bf16 hint or NNCF int8), validated against the source logits"
    config: ExportOpenVinoConfig

    def __init__(self, config: ExportOpenVinoConfig | None = None) -> None:
        super().__init__(config)
        # Before any work, even the earlier passes of a chain: the extra's packages must be importable.
        for module in ("openvino", *(("nncf",) if self.config.precision == "int8" else ())):
            if importlib.util.find_spec(module) is None:
                raise MissingDependencyError(module, "openvino")

    def output_format(self, input_format: str) -> Format:
        return "openvino"

    def check(self, variant: Variant) -> None:
        if RUNTIME_QUANTIZATION in variant.architecture:
            raise ConfigError(f"{variant.name} is quantized by torch at load time and cannot be converted: convert "
                              "its fp32 parent (export-openvino:precision=int8 quantizes with NNCF)")
        if self.config.precision == "int8" and any(s.pass_name == "quantize" for s in variant.lineage):
            raise ConfigError(f"{variant.name} is already quantized: use export-openvino:precision=fp32 on it, or "
                              "precision=int8 on its fp32 parent")

    def apply(self, variant: Variant, ctx: PassContext, out: Path) -> PassOutput:
        import shutil

        import openvino as ov

        sample = ctx.split(variant, "calibration")
        # Two examples: a batch of one lets the tracer specialise shapes to 1.
        model = convert(variant, Encoder(variant).encode(sample.inputs[:2]))
        report: dict[str, Any] = {"precision": self.config.precision, "source_format": variant.format,
                                  "inference_precision": INFERENCE_PRECISION[self.config.precision],
                                  "inputs": [sorted(i.get_names())[0] for i in model.inputs]}
        if self.config.precision == "int8":
            model, report["nncf"] = quantize_int8(model, variant, ctx, self.config)
        copy_processor(variant.path, out)
        if (variant.path / "config.json").is_file():
            shutil.copy2(variant.path / "config.json", out / "config.json")
        # fp16 weight compression is the saver's default; it would make an fp32 export differ from its source.
        ov.save_model(model, str(out / OPENVINO_XML), compress_to_fp16=False)
        exported = dataclasses.replace(variant, format="openvino", path=out, report=report)
        report["validation"], runner = validate_openvino(variant, exported, ctx, self.config)
        report["inference_precision_here"] = runner["precision"]
        report["openvino"] = runner["version"]
        return PassOutput("openvino", report)

