"""The quantize pass's Intel Neural Compressor backend: INC 3.x PT2E static int8 (x86 inductor), calibrated on the
calibration split, optionally tuned against `max_loss`, and recorded so every load rebuilds the same int8 graph."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from optikit import _inc_runtime as inc
from optikit.config import require
from optikit.models import RUNTIME_QUANTIZATION, Encoder, load_module
from optikit.passes._torch_quant import _copy_artifact
from optikit.passes.base import PassContext, PassOutput
from optikit.variant import Variant

BATCH = 32


@dataclass(frozen=True)
class NeuralCompressorConfig:
    """backend=neural-compressor: INC's PT2E static int8 (uint8 activations per tensor, int8 weights per channel,
    min-max calibration), run by torch.compile's x86 int8 kernels. `max_loss` (validation accuracy, absolute)
    drives INC's autotune over its static-int8 tuning set (KL / min-max × symmetric / asymmetric activations),
    at most `max_trials` trials; the first config within budget is kept, else the most accurate one."""

    backend: Literal["neural-compressor"] = "neural-compressor"
    mode: Literal["static"] = "static"
    max_loss: float | None = None
    max_trials: int = 4

    def __post_init__(self) -> None:
        require(self.max_loss is None or 0 <= self.max_loss < 1, f"max_loss must be in [0, 1), got {self.max_loss}")
        require(isinstance(self.max_trials, int) and self.max_trials >= 1,
                f"max_trials must be an integer ≥ 1, got {self.max_trials}")


def fixed_batches(variant: Variant, data: Any, pad_to: int | None) -> list[dict[str, np.ndarray]]:
    """Batches of one shape (the last one filled with copies of its last row): one compilation serves them all."""
    batches = Encoder(variant).batches(data, BATCH, pad_to)
    for batch in batches:
        for name, array in batch.items():
            missing = BATCH - len(array) if len(batches) > 1 else max(0, 2 - len(array))
            if missing > 0:  # a batch of one would fix the exported batch dim to 1
                batch[name] = np.concatenate([array, np.repeat(array[-1:], missing, axis=0)])
    return batches


def quantize_inc(config: NeuralCompressorConfig, variant: Variant, ctx: PassContext, out: Path) -> PassOutput:
    """INC PT2E static int8, calibrated on the calibration split and re-applied at load time.

    Stored without pickle: the fp32 weights unchanged (safetensors) and, in the architecture, a recipe holding the
    INC config and the scale / zero point of every activation q/dq node. Loading re-exports the module, rebuilds
    the same graph (weight scales follow from the weights) and sets those scales, so it needs no data and gives
    the predictions this pass validated; recording scales rather than re-calibrating keeps it deterministic.
    """
    import torch

    with inc.quiet_inc():
        from neural_compressor.torch.quantization import (
            StaticQuantConfig,
            TuningConfig,
            autotune,
            get_default_static_config,
            quantize,
        )
    fp32 = load_module(variant)
    pad_to = variant.task.max_length if variant.task.kind == "text" else None
    calibration = fixed_batches(variant, ctx.split(variant, "calibration"), pad_to)
    validation_data = ctx.split(variant, "validation")
    validation = fixed_batches(variant, validation_data, pad_to)
    labels, names = np.asarray(validation_data.labels), list(calibration[0])
    example = tuple(torch.from_numpy(a) for a in calibration[0].values())

    def accuracy(module: Any) -> float:
        with torch.no_grad():
            logits = np.concatenate([module(*(torch.from_numpy(b[n]) for n in names)).float().numpy()
                                     for b in validation])
        return float(np.mean(logits[:len(labels)].argmax(-1) == labels))

    def calibrate(prepared: Any) -> None:
        with torch.no_grad():
            for batch in calibration:
                prepared(*(torch.from_numpy(batch[n]) for n in names))

    wrapped = inc.positional(copy.deepcopy(fp32), names)
    exported = inc.export(wrapped, example)
    baseline = accuracy(wrapped)
    report: dict[str, Any] = {}
    with inc.quiet_inc():
        if config.max_loss is None:
            int8 = quantize(exported, get_default_static_config(), run_fn=calibrate, example_inputs=example)
        else:
            trials: list[dict[str, Any]] = []

            def evaluate(model: Any) -> float:
                result = accuracy(model)
                if hasattr(model, "qconfig"):  # not the fp32 baseline INC evaluates first
                    chosen = next(iter(model.qconfig.values()))
                    trials.append({**inc.config_fields(chosen), "accuracy": result, "loss": baseline - result})
                return result

            # INC's tolerable_loss is relative to the baseline; max_loss is absolute, like the other backends.
            tolerable = config.max_loss / baseline if baseline > 0 else 0.0
            tuning = TuningConfig(config_set=[get_default_static_config(), StaticQuantConfig.get_config_set_for_tuning()],
                                  tolerable_loss=tolerable, max_trials=config.max_trials)
            int8 = autotune(exported, tuning, eval_fn=evaluate, run_fn=calibrate, example_inputs=example)
            kept = inc.config_fields(next(iter(int8.qconfig.values())))
            report["accuracy_aware"] = {"max_loss": config.max_loss, "baseline_accuracy": baseline,
                                        "tuner": "neural_compressor.autotune", "trials": trials, "kept": kept}
        chosen = inc.config_fields(next(iter(int8.qconfig.values())))
    recipe = {"kind": inc.RECIPE_KIND, "config": chosen, "inputs": inc.input_specs(calibration[0]),
              "activation_qparams": inc.activation_qparams(int8)}
    # Validated through the load path itself, so the variant's figures are those of what loading gives.
    loaded = inc.rebuild(copy.deepcopy(fp32), recipe)
    validation_accuracy = accuracy(loaded)
    if config.max_loss is not None:
        report["accuracy_aware"]["within_budget"] = baseline - validation_accuracy <= config.max_loss + 1e-12
    _copy_artifact(variant, out)
    return PassOutput(variant.format, {
        **report, "backend": "neural-compressor", "mode": "static", "runtime": "torch.compile (inductor, freezing)",
        "config": chosen, "activation_scales": len(recipe["activation_qparams"]),
        "validation_accuracy": validation_accuracy, "baseline_accuracy": baseline,
        "stored_as": "fp32 weights + the INC config and activation scales, re-applied at load time (no pickle)"},
        architecture={**variant.architecture, RUNTIME_QUANTIZATION: recipe})

