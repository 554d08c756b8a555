"""Environment: what a reader needs to interpret latency (CPU, int8 instruction sets, threads, versions)."""
from __future__ import annotations

import platform
from typing import Any

from optikit.cpu import cpu_features
from optikit.harness.records import CpuInfo, Environment
from optikit.variant import library_versions


def gpu_info(device: str) -> dict[str, Any]:
    """What a CUDA request found; on a CPU-only machine a note says the figures are CPU figures, not a failure."""
    if device == "cpu":
        return {"requested": False}
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return {"requested": True, "available": False, "note": "torch is not installed: measured on the CPU"}
    if not torch.cuda.is_available():
        return {"requested": True, "available": False,
                "note": f"{device} was requested but this machine has no CUDA device: every figure is a CPU figure"}
    index = torch.device(device).index or 0
    return {"requested": True, "available": True, "name": torch.cuda.get_device_name(index),
            "cuda": torch.version.cuda, "timing": "torch.cuda.synchronize() around each perf_counter reading"}


def environment(threads: int, device: str) -> Environment:
    import os

    import onnxruntime as ort

    cpu = cpu_features()
    return Environment(cpu=CpuInfo(cpu.model, cpu.machine, cpu.int8_flags()), threads=threads, device=device,
                       cpu_count=os.cpu_count(), gpu=gpu_info(device), python=platform.python_version(),
                       platform=platform.platform(), onnxruntime_providers=tuple(ort.get_available_providers()),
                       versions=library_versions())
