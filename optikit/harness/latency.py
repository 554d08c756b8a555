"""Latency: warm up until stable, then time at least N calls and T seconds; summarise as percentiles."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from optikit.config import require


@dataclass(frozen=True)
class LatencyConfig:
    batch_sizes: tuple[int, ...] = (1, 32)
    warmup_min: int = 5  # at least this many untimed calls …
    warmup_max: int = 200  # … and at most this many while waiting for the times to settle
    min_iterations: int = 30
    min_seconds: float = 1.0
    max_iterations: int = 5000

    def __post_init__(self) -> None:
        require(all(b >= 1 for b in self.batch_sizes) and self.batch_sizes, "batch_sizes must be ≥ 1")
        require(self.min_iterations >= 3, f"min_iterations must be ≥ 3, got {self.min_iterations}")
        require(self.min_seconds >= 0, f"min_seconds must be ≥ 0, got {self.min_seconds}")
        require(self.max_iterations >= self.min_iterations, "max_iterations must be ≥ min_iterations")


@dataclass(frozen=True)
class Latency:
    """One batch size's timing of model calls (tokenization excluded), in milliseconds per call."""

    batch_size: int
    samples: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    stdev_ms: float
    cv: float
    throughput_per_s: float  # examples per second at the median

    @classmethod
    def from_samples(cls, batch_size: int, seconds: list[float] | np.ndarray) -> Latency:
        ms = np.asarray(seconds, dtype=float) * 1e3
        if ms.size == 0:
            raise ValueError("no latency samples")
        p50, p90, p99 = np.percentile(ms, [50, 90, 99])
        mean = float(ms.mean())
        stdev = float(ms.std(ddof=1)) if ms.size > 1 else 0.0
        return cls(batch_size, int(ms.size), float(p50), float(p90), float(p99), mean, stdev,
                   stdev / mean if mean else 0.0, batch_size / (float(p50) / 1e3) if p50 else 0.0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _settled(times: list[float], window: int = 5) -> bool:
    """Warm-up ends when the median of the last window is within 5% of the window before it."""
    if len(times) < 2 * window:
        return False
    recent = statistics.median(times[-window:])
    before = statistics.median(times[-2 * window:-window])
    return abs(recent - before) <= 0.05 * before


def time_calls(call: Callable[[], Any], config: LatencyConfig, sync: Callable[[], None] = lambda: None) -> list[float]:
    """Warm-up until settled, then the timed calls; `sync` waits for device work before each clock read."""
    warm: list[float] = []
    while len(warm) < config.warmup_max:
        start = time.perf_counter()
        call()
        sync()
        warm.append(time.perf_counter() - start)
        if len(warm) >= config.warmup_min and _settled(warm):
            break
    samples: list[float] = []
    begin = time.perf_counter()
    while len(samples) < config.max_iterations and (
            len(samples) < config.min_iterations or time.perf_counter() - begin < config.min_seconds):
        start = time.perf_counter()
        call()
        sync()
        samples.append(time.perf_counter() - start)
    return samples
