"""Latency summaries from known samples; timing loops obey their iteration counts (never their wall-clock)."""
from __future__ import annotations

import pytest

from optikit.harness.latency import Latency, LatencyConfig, time_calls
from optikit.harness.timing import SpeedupConfig, interleaved_rounds


def test_latency_from_samples_by_hand() -> None:
    lat = Latency.from_samples(4, [0.001, 0.002, 0.003, 0.004, 0.005])
    assert (lat.samples, lat.p50_ms, lat.mean_ms) == (5, pytest.approx(3.0), pytest.approx(3.0))
    assert lat.stdev_ms == pytest.approx(1.5811388, rel=1e-6) and lat.cv == pytest.approx(1.5811388 / 3, rel=1e-6)
    assert lat.throughput_per_s == pytest.approx(4 / 0.003)


def test_time_calls_takes_at_least_min_iterations() -> None:
    calls = []
    samples = time_calls(lambda: calls.append(1), LatencyConfig(min_iterations=7, min_seconds=0, warmup_min=2,
                                                                 warmup_max=3))
    assert len(samples) == 7 and len(calls) == 10


def test_interleaved_rounds_alternate_and_pair() -> None:
    order: list[str] = []
    a, b = interleaved_rounds(lambda: order.append("a"), lambda: order.append("b"),
                              SpeedupConfig(rounds=4, calls_per_round=1, warmup=0))
    assert len(a) == len(b) == 4
    assert "".join(order) == "abbaabba"
