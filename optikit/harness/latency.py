"""Latency: warm up until stable, then time at least N calls and T seconds; summarise as percentiles.

The percentiles describe every timed call, interference included. Interference on a shared machine (another
process, a neighbour on the same host, a frequency change) comes in stretches, and a one-second measurement can
fall inside one. So the timed calls are also cut into consecutive blocks, and `steady_p50_ms` is the median of
the quietest block: timing noise only ever adds time, so the least disturbed stretch is the best estimate of
what the model itself costs, and it is the figure that repeats from run to run (Chen & Revels, "Robust
benchmarking in noisy environments", 2016). `interference` says how far the typical block sat above it.
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from optikit.config import require

# Two seconds of timed calls per batch size: long enough that a stretch of interference rarely covers every block.
DEFAULT_MIN_SECONDS = 2.0


@dataclass(frozen=True)
class LatencyConfig:
    batch_sizes: tuple[int, ...] = (1, 32)
    warmup_min: int = 5  # at least this many untimed calls …
    warmup_max: int = 200  # … and at most this many while waiting for the times to settle
    warmup_seconds: float = 0.25  # … for at least this long: allocators, caches and clocks settle in time, not calls
    min_iterations: int = 30
    min_seconds: float = DEFAULT_MIN_SECONDS
    max_iterations: int = 5000
    blocks: int = 20  # the timed calls are cut into this many consecutive blocks for the steady estimate …
    min_block_calls: int = 5  # … of at least this many calls each (fewer blocks when there are fewer calls)

    def __post_init__(self) -> None:
        require(bool(self.batch_sizes) and all(b >= 1 for b in self.batch_sizes), "batch_sizes must be ≥ 1")
        require(self.min_iterations >= 3, f"min_iterations must be ≥ 3, got {self.min_iterations}")
        require(self.min_seconds >= 0, f"min_seconds must be ≥ 0, got {self.min_seconds}")
        require(self.max_iterations >= self.min_iterations, "max_iterations must be ≥ min_iterations")
        require(self.warmup_seconds >= 0, f"warmup_seconds must be ≥ 0, got {self.warmup_seconds}")
        require(self.blocks >= 1, f"blocks must be ≥ 1, got {self.blocks}")
        require(self.min_block_calls >= 1, f"min_block_calls must be ≥ 1, got {self.min_block_calls}")


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
    steady_p50_ms: float  # the median of the quietest block of consecutive calls
    block_p50_ms: tuple[float, ...]  # every block's median, in the order they were timed
    interference: float  # median block median / steady_p50_ms - 1: 0 on a quiet machine
    process_steady_ms: tuple[float, ...] = ()  # each measuring process's steady figure (see from_processes)

    @classmethod
    def from_samples(cls, batch_size: int, seconds: list[float] | np.ndarray, blocks: int = 1,
                     min_block_calls: int = 5) -> Latency:
        """`seconds` in the order they were timed: blocks are consecutive calls, never a resampling."""
        ms = np.asarray(seconds, dtype=float) * 1e3
        if ms.size == 0:
            raise ValueError("no latency samples")
        p50, p90, p99 = np.percentile(ms, [50, 90, 99])
        mean = float(ms.mean())
        stdev = float(ms.std(ddof=1)) if ms.size > 1 else 0.0
        n_blocks = max(1, min(blocks, ms.size // min_block_calls))
        block_p50 = tuple(float(np.median(chunk)) for chunk in np.array_split(ms, n_blocks))
        steady = min(block_p50)
        return cls(batch_size, int(ms.size), float(p50), float(p90), float(p99), mean, stdev,
                   stdev / mean if mean else 0.0, batch_size / (float(p50) / 1e3) if p50 else 0.0,
                   steady, block_p50, float(np.median(block_p50)) / steady - 1 if steady else 0.0, (steady,))

    @classmethod
    def from_processes(cls, batch_size: int, per_process: list[list[float]], blocks: int = 1,
                       min_block_calls: int = 5) -> Latency:
        """One summary of the same timing done in several fresh processes. A process keeps its state for life (the
        core it runs on, its memory layout), so processes differ more than stretches within one; as in pyperf,
        the percentiles pool every call, and the steady figure is the median of the processes' steady figures."""
        runs = [cls.from_samples(batch_size, s, blocks, min_block_calls) for s in per_process]
        if len(runs) == 1:
            return runs[0]
        pooled = cls.from_samples(batch_size, [x for s in per_process for x in s], 1, min_block_calls)
        steady = float(np.median([r.steady_p50_ms for r in runs]))
        block_p50 = tuple(b for r in runs for b in r.block_p50_ms)
        return dataclasses.replace(pooled, steady_p50_ms=steady, block_p50_ms=block_p50,
                                   interference=max(float(np.median(block_p50)) / steady - 1, 0.0) if steady else 0.0,
                                   process_steady_ms=tuple(r.steady_p50_ms for r in runs))

    @property
    def headline_ms(self) -> float:
        """The latency every table, comparison and ranking uses: the steady median. It is the figure that repeats
        from run to run on a machine with interference (results written before it existed read it as the median)."""
        return self.steady_p50_ms

    @property
    def per_example_ms(self) -> float:
        return self.headline_ms / self.batch_size

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["block_p50_ms"] = list(self.block_p50_ms)
        d["process_steady_ms"] = list(self.process_steady_ms)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Latency:
        """A row of results.json from any harness version: fields it did not record get neutral values (the steady
        median is the plain median, no blocks, no interference)."""
        from optikit.harness.records import num

        p50 = num(d["p50_ms"])
        mean = num(d.get("mean_ms"), p50)
        return cls(int(d["batch_size"]), int(d.get("samples", 0)), p50, num(d.get("p90_ms"), p50),
                   num(d.get("p99_ms"), p50), mean, num(d.get("stdev_ms"), 0.0), num(d.get("cv"), 0.0),
                   num(d.get("throughput_per_s"), int(d["batch_size"]) / p50 * 1e3 if p50 else 0.0),
                   num(d.get("steady_p50_ms") or p50), tuple(float(x) for x in d.get("block_p50_ms") or ()),
                   num(d.get("interference"), 0.0), tuple(float(x) for x in d.get("process_steady_ms") or ()))


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
    began = time.perf_counter()
    while len(warm) < config.warmup_max:
        start = time.perf_counter()
        call()
        sync()
        warm.append(time.perf_counter() - start)
        if (len(warm) >= config.warmup_min and time.perf_counter() - began >= config.warmup_seconds
                and _settled(warm)):
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

