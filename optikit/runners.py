"""Runners: one interface (`logits(feeds)`) over torch eager, ONNX Runtime and OpenVINO, so every measurement is one
code path."""
from __future__ import annotations

import importlib.util
import os
from abc import ABC, abstractmethod
from collections import Counter
from typing import Any

import numpy as np

from optikit.errors import MeasurementError, MissingDependencyError, ModelLoadError
from optikit.models import PIXEL_INPUT, TEXT_INPUTS, load_module, torch_forward
from optikit.variant import Variant

ENCODER_INPUTS = frozenset({*TEXT_INPUTS, PIXEL_INPUT})


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_threads() -> int:
    """Threads for work where only throughput matters (training, calibration, export): every core, at most 8."""
    return max(1, min(_cores(), 8))


def measurement_threads() -> int:
    """Threads for timing: one core is left to the OS and the harness. A model whose threads fill every core
    waits for the slowest of them whenever anything else runs, so its latency jumps from stretch to stretch
    (on a 2-core VM: batch-1 medians swinging between 0.32 and 0.60 ms with 2 threads, within 2% with 1)."""
    return max(1, min(_cores() - 1, 8))


class Runner(ABC):
    """Loads a variant for inference; `logits` takes the encoder's named arrays and returns float32 logits."""

    backend: str

    def __init__(self, variant: Variant, threads: int, device: str = "cpu") -> None:
        self.variant = variant
        self.threads = threads
        self.device = device

    @abstractmethod
    def logits(self, feeds: dict[str, np.ndarray]) -> np.ndarray: ...

    def synchronize(self) -> None:
        """Waits for queued device work; a no-op on the CPU."""

    def info(self) -> dict[str, Any]:
        return {"backend": self.backend, "threads": self.threads, "device": self.device}


class TorchRunner(Runner):
    backend = "torch"

    def __init__(self, variant: Variant, threads: int, device: str = "cpu") -> None:
        import torch

        super().__init__(variant, threads, device)
        torch.set_num_threads(threads)
        self._torch = torch
        self.module = load_module(variant).to(device)

    def logits(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            tensors = {k: torch.from_numpy(v).to(self.device) for k, v in feeds.items()}
            out = torch_forward(self.module, tensors)
        return out.float().cpu().numpy()

    def synchronize(self) -> None:
        if self.device.startswith("cuda"):
            self._torch.cuda.synchronize()


class OrtRunner(Runner):
    backend = "onnxruntime"

    def __init__(self, variant: Variant, threads: int, device: str = "cpu") -> None:
        import onnxruntime as ort

        # A variant may run fastest on fewer threads than offered (quantize's trial measured it): use no more.
        cap = int((variant.report.get("runtime") or {}).get("intra_op_threads") or threads)
        threads = max(1, min(threads, cap))
        super().__init__(variant, threads, device)
        options = ort.SessionOptions()
        # Explicit thread counts: ORT's default takes every core, which makes runs incomparable across machines.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        # Spin-wait inside a call, never after it: spinning threads left running after run() steal the cores of
        # whatever runs next (another model in the interleaved speedup rounds, the tokenizer in a server), while
        # no spinning at all makes every operator wake its threads (measured on MiniLM int8, 2 threads, batch 1:
        # 3.15 ms without spinning, 2.19 ms spinning only inside the call, 2.53 ms on one thread).
        options.add_session_config_entry("session.force_spinning_stop", "1")
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise MeasurementError("onnxruntime has no CUDA provider here: install onnxruntime-gpu or use --device cpu")
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(variant.path / "model.onnx"), options, providers=providers)
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
            raise ModelLoadError(f"onnxruntime cannot load {variant.path / 'model.onnx'}: "
                                 f"{str(exc).splitlines()[0][:200]}") from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.providers = self.session.get_providers()

    def logits(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        out = self.session.run(None, {k: feeds[k] for k in self.input_names if k in feeds})[0]
        return np.asarray(out, dtype=np.float32)

    def info(self) -> dict[str, Any]:
        return {**super().info(), "providers": self.providers}


class OpenVinoRunner(Runner):
    """An OpenVINO IR on the CPU, latency hint, explicit threads, and the inference precision its export recorded."""

    backend = "openvino"

    def __init__(self, variant: Variant, threads: int, device: str = "cpu") -> None:
        if importlib.util.find_spec("openvino") is None:
            raise MissingDependencyError("openvino", "openvino")
        import openvino as ov

        super().__init__(variant, threads, device)
        if device != "cpu":
            raise MeasurementError(f"OpenVINO variants run on the CPU here, not {device}: bench {variant.name} "
                                   "with --device cpu")
        # Explicit f32 unless the export asked for bf16: the CPU plugin's default is bf16 wherever the CPU has it,
        # which would quietly make an "fp32" variant a bf16 one on AMX machines.
        self.precision_requested = "bf16" if variant.report.get("inference_precision") == "bf16" else "f32"
        try:
            self.compiled = ov.Core().compile_model(str(variant.path / "model.xml"), "CPU", {
                "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_PRECISION_HINT": self.precision_requested})
        except RuntimeError as exc:
            raise ModelLoadError(f"OpenVINO cannot load {variant.path / 'model.xml'}: "
                                 f"{str(exc).strip().splitlines()[0][:200]}") from None
        # A CPU without bf16 compiles in f32 instead: what ran is what the compiled model reports.
        self.precision = self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        # An IR from elsewhere may give one input several names: the encoder's, where one of them is.
        self.input_names = [min(i.get_names(), key=lambda n: (n not in ENCODER_INPUTS, n)) for i in self.compiled.inputs]
        self.request = self.compiled.create_infer_request()
        self.version = ov.get_version().split("-")[0]

    def logits(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        # By name: a converted Hugging Face model orders its inputs as forward() does, not as the tokenizer does.
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise MeasurementError(f"{self.variant.name} takes inputs {', '.join(self.input_names)} but got no "
                                   f"{', '.join(missing)}: re-export it from a model that uses the same encoder")
        self.request.infer({n: feeds[n] for n in self.input_names})
        return np.array(self.request.get_output_tensor(0).data, dtype=np.float32)  # a copy: the buffer is reused

    def op_counts(self) -> dict[str, Any]:
        """Executed operators by type, and how many weight-heavy ones run in int8 (the runtime graph's view)."""
        ops: Counter[str] = Counter()
        quantized = floating = 0
        for op in self.compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            kind, precision = str(info["layerType"].astype(str)), str(info["runtimePrecision"].astype(str))
            ops[kind] += 1
            if kind in ("Convolution", "FullyConnected", "MatMul", "Deconvolution"):
                if precision.lower() in ("i8", "u8"):
                    quantized += 1
                else:
                    floating += 1
        return {"ops": dict(sorted(ops.items())), "quantized_ops": quantized, "float_ops": floating}

    def info(self) -> dict[str, Any]:
        return {**super().info(), "precision": self.precision, "precision_requested": self.precision_requested,
                "version": self.version}


def load_runner(variant: Variant, threads: int | None = None, device: str = "cpu") -> Runner:
    threads = threads or default_threads()
    if variant.format in ("torch", "hf"):
        return TorchRunner(variant, threads, device)
    if variant.format == "onnx":
        return OrtRunner(variant, threads, device)
    if variant.format == "openvino":
        return OpenVinoRunner(variant, threads, device)
    raise ModelLoadError(f"no runner for format {variant.format!r}")
