"""Latency summaries from known samples; timing loops obey their iteration counts (never their wall-clock)."""
from __future__ import annotations

import pytest

from optikit.harness.bench import _interference
from optikit.harness.latency import Latency, LatencyConfig, time_calls
from optikit.harness.timing import SpeedupConfig, interleaved_rounds


def test_latency_from_samples_by_hand() -> None:
    lat = Latency.from_samples(4, [0.001, 0.002, 0.003, 0.004, 0.005])
    assert (lat.samples, lat.p50_ms, lat.mean_ms) == (5, pytest.approx(3.0), pytest.approx(3.0))
    assert lat.stdev_ms == pytest.approx(1.5811388, rel=1e-6) and lat.cv == pytest.approx(1.5811388 / 3, rel=1e-6)
    assert lat.throughput_per_s == pytest.approx(4 / 0.003)


def test_steady_median_is_the_quietest_block_of_consecutive_calls() -> None:
    # 12 calls in 3 blocks of 4: a quiet stretch, a busy one (interference doubles the time), a quiet one.
    ms = [1, 1, 2, 1] + [2, 3, 2, 2] + [1, 1, 1, 2]
    lat = Latency.from_samples(1, [m / 1e3 for m in ms], blocks=3, min_block_calls=4)
    assert lat.block_p50_ms == pytest.approx((1.0, 2.0, 1.0))
    assert lat.steady_p50_ms == pytest.approx(1.0) and lat.p50_ms == pytest.approx(1.5)
    assert lat.interference == pytest.approx(0.0)  # the typical block (median of 1, 2, 1) is a quiet one
    busy = Latency.from_samples(1, [m / 1e3 for m in [2] * 8 + [1] * 4], blocks=3, min_block_calls=4)
    assert busy.steady_p50_ms == pytest.approx(1.0) and busy.interference == pytest.approx(1.0)


def test_processes_pool_their_calls_and_take_the_median_steady_figure() -> None:
    # Three processes that keep their own speed for life (1, 2 and 1.5 ms a call): percentiles pool all 30 calls,
    # the steady figure is the middle process, and each process's figure is kept.
    lat = Latency.from_processes(1, [[0.001] * 10, [0.002] * 10, [0.0015] * 10], blocks=2, min_block_calls=5)
    assert lat.samples == 30 and lat.p90_ms == pytest.approx(2.0) and lat.mean_ms == pytest.approx(1.5)
    assert lat.process_steady_ms == pytest.approx((1.0, 2.0, 1.5)) and lat.steady_p50_ms == pytest.approx(1.5)
    assert len(lat.block_p50_ms) == 6 and lat.interference == pytest.approx(0.0)
    single = Latency.from_processes(1, [[0.001] * 10], blocks=2)
    assert single == Latency.from_samples(1, [0.001] * 10, blocks=2)


def test_too_few_calls_make_fewer_blocks_never_tiny_ones() -> None:
    lat = Latency.from_samples(1, [0.001] * 9, blocks=20, min_block_calls=5)
    assert len(lat.block_p50_ms) == 1 and lat.steady_p50_ms == lat.p50_ms
    assert len(Latency.from_samples(1, [0.001] * 100, blocks=20, min_block_calls=5).block_p50_ms) == 20


def test_headline_is_the_steady_figure_and_reads_older_results() -> None:
    assert Latency.from_dict({"batch_size": 1, "p50_ms": 2.0, "steady_p50_ms": 1.5}).headline_ms == 1.5
    assert Latency.from_dict({"batch_size": 1, "p50_ms": 2.0}).headline_ms == 2.0  # written before the steady figure


def test_disturbed_timing_gets_a_note_and_quiet_timing_none() -> None:
    quiet = Latency.from_samples(1, [0.001] * 40, blocks=4, min_block_calls=5)
    busy = Latency.from_samples(32, [0.001] * 10 + [0.003] * 30, blocks=4, min_block_calls=5)
    notes = _interference([quiet, busy])
    assert len(notes) == 1 and "batch 32: +200%" in notes[0] and "batch 1:" not in notes[0]


def test_warm_up_lasts_at_least_its_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    monkeypatch.setattr("optikit.harness.latency.time.perf_counter", lambda: now[0])

    def call() -> None:  # every call takes exactly 10 ms of the fake clock
        now[0] += 0.01

    warm = LatencyConfig(min_iterations=3, min_seconds=0, warmup_min=2, warmup_max=500, warmup_seconds=0.5)
    samples = time_calls(call, warm)
    # Identical calls are "settled" after 10, but warm-up goes on until half a second has passed: 50 calls.
    assert len(samples) == 3 and now[0] == pytest.approx(0.53)


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
