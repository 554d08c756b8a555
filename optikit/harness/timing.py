"""Interleaved timing: baseline and variant alternate in one process, so drift hits both equally."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from optikit.config import require

# The speedup interval is bootstrapped over the rounds, whose order alternates (AB, BA): with fewer than four, each
# order appears once at most and the resampling has next to nothing to draw from. The CLI's range says the same.
MIN_SPEEDUP_ROUNDS = 4


@dataclass(frozen=True)
class SpeedupConfig:
    rounds: int = 20  # paired rounds; the interval is bootstrapped over them
    calls_per_round: int = 5  # one round's time is the median of this many calls
    warmup: int = 5
    resamples: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        require(self.rounds >= MIN_SPEEDUP_ROUNDS, f"speedup rounds must be ≥ {MIN_SPEEDUP_ROUNDS}, got {self.rounds}")
        require(self.calls_per_round >= 1, f"calls_per_round must be ≥ 1, got {self.calls_per_round}")


def interleaved_rounds(baseline: Callable[[], Any], variant: Callable[[], Any], config: SpeedupConfig,
                       sync: Callable[[], None] = lambda: None) -> tuple[list[float], list[float]]:
    """Seconds per call of each, round by round. The order alternates (AB, BA, …) so that neither model
    always runs right after the other one warmed the caches."""
    for _ in range(config.warmup):
        baseline(), variant()
    sync()
    times: dict[str, list[float]] = {"a": [], "b": []}
    for r in range(config.rounds):
        order = (("a", baseline), ("b", variant)) if r % 2 == 0 else (("b", variant), ("a", baseline))
        for key, call in order:
            calls = []
            for _ in range(config.calls_per_round):
                start = time.perf_counter()
                call()
                sync()
                calls.append(time.perf_counter() - start)
            times[key].append(statistics.median(calls))
    return times["a"], times["b"]
