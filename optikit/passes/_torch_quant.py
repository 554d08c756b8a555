"""The quantize pass's torch backend: torch dynamic int8, re-applied at load time, with its config (Intel Neural
Compressor's backend is in _inc_quant)."""
from __future__ import annotations

import copy
import io
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from optikit.models import RUNTIME_QUANTIZATION, Encoder, apply_runtime_quantization, load_module, torch_forward
from optikit.passes._ort_quant import AccuracyBudget, accuracy_aware, mean_kl_logits
from optikit.passes.base import PassContext, PassOutput
from optikit.variant import MANIFEST, Variant, artifact_files

if TYPE_CHECKING:
    import torch.nn as nn


@dataclass(frozen=True)
class TorchQuantizeConfig(AccuracyBudget):
    """backend=torch: torch.ao dynamic int8 of every nn.Linear (`exclude_nodes`: module names left in fp32)."""

    backend: Literal["torch"] = "torch"
    mode: Literal["dynamic"] = "dynamic"
    per_channel: bool = True


def _copy_artifact(variant: Variant, out: Path) -> None:
    """The int8 variant keeps the fp32 weight files byte for byte: its manifest says how to quantize them."""
    for path in artifact_files(variant.path):
        if path.name != MANIFEST:
            target = out / path.relative_to(variant.path)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


def _logits(module: nn.Module, batches: list[dict[str, np.ndarray]]) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return np.concatenate([torch_forward(module, {k: torch.from_numpy(v) for k, v in b.items()}).float().numpy()
                               for b in batches])


def _state_bytes(module: nn.Module) -> int:
    """Serialized size of the in-memory int8 state (a measurement only: nothing is written with pickle)."""
    import torch

    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    return buffer.tell()


def quantize_torch(config: TorchQuantizeConfig, variant: Variant, ctx: PassContext, out: Path) -> PassOutput:
    """torch.ao dynamic int8 of every nn.Linear (minus `exclude_nodes`, module names), recorded for load time."""
    import torch

    fp32 = load_module(variant)
    linears = [n for n, m in fp32.named_modules() if isinstance(m, torch.nn.Linear) and n not in config.exclude_nodes]
    data = ctx.split(variant, "validation")
    batches = Encoder(variant).batches(data, 32)
    base_logits = _logits(fp32, batches)
    baseline = float(np.mean(base_logits.argmax(-1) == data.labels))

    def recipe(modules: list[str]) -> dict[str, Any]:
        return {"kind": "torch-dynamic", "dtype": "qint8", "per_channel": config.per_channel, "modules": modules}

    def build(modules: list[str]) -> nn.Module:
        return apply_runtime_quantization(copy.deepcopy(fp32), recipe(modules))

    report: dict[str, Any] = {}
    kept = linears
    if config.max_loss is not None:
        def quantize(excluded: list[str]) -> float:
            logits = _logits(build([n for n in linears if n not in excluded]), batches)
            return float(np.mean(logits.argmax(-1) == data.labels))

        def sensitivity(name: str) -> float:
            return mean_kl_logits(base_logits, _logits(build([name]), batches))

        result = accuracy_aware(linears, baseline, config.max_loss, quantize, sensitivity)
        kept = [n for n in linears if n not in result.fp32_nodes]
        report["accuracy_aware"] = result.to_report(config.max_loss)
    int8 = build(kept)
    _copy_artifact(variant, out)
    return PassOutput(variant.format, {
        **report, "backend": "torch", "mode": "dynamic", "modules_quantized": len(kept),
        "validation_accuracy": float(np.mean(_logits(int8, batches).argmax(-1) == data.labels)),
        "baseline_accuracy": baseline, "fp32_state_bytes": _state_bytes(fp32), "int8_state_bytes": _state_bytes(int8),
        "stored_as": "fp32 weights + a load-time quantization recipe (torch's int8 modules only pickle)"},
        architecture={**variant.architecture, RUNTIME_QUANTIZATION: recipe(kept)})

