"""Environment: what a reader needs to interpret latency (CPU, int8 instruction sets, threads, versions)."""
from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from optikit.variant import library_versions

INT8_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16")


def cpu_info() -> dict[str, Any]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and ":" in line:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {"model": model, "machine": platform.machine(), "int8_flags": {f: f in flags for f in INT8_FLAGS}}


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


def environment(threads: int, device: str) -> dict[str, Any]:
    import os

    import onnxruntime as ort

    return {"cpu": cpu_info(), "cpu_count": os.cpu_count(), "threads": threads, "device": device,
            "gpu": gpu_info(device), "python": platform.python_version(), "platform": platform.platform(),
            "onnxruntime_providers": ort.get_available_providers(), "versions": library_versions()}
