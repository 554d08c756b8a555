"""Measurement conditions: fake load readings and crafted timings flag a starved or inconsistent run, and the
figures of healthy runs on record never do."""
from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from optikit.errors import ConfigError
from optikit.harness.conditions import (
    Assessment,
    Check,
    CpuSample,
    LoadReading,
    assess,
    batch_cost_checks,
    block_spread_check,
    preflight,
    read_load,
    readings_between,
    sample_cpu,
)
from optikit.harness.latency import Latency

QUIET = LoadReading(cpu_count=2, load_1min=0.2, run_queue=1, steal_fraction=0.0, other_cpu_cores=0.1, window_s=0.08)
HOGGED = LoadReading(cpu_count=2, load_1min=2.9, run_queue=3, steal_fraction=0.0, other_cpu_cores=1.8, window_s=0.08)


def _row(batch_size: int, ms: float, blocks: tuple[float, ...] = ()) -> dict[str, object]:
    return {"batch_size": batch_size, "p50_ms": ms, "steady_p50_ms": ms, "block_p50_ms": list(blocks)}


# --- the starved CI run of optikit issue 12 ---------------------------------------------------------------------

def test_assess_flags_a_batch_1_call_costing_35_times_a_whole_batch_of_32() -> None:
    # The torch baseline's 2 OpenMP threads stalled whenever another process held a core: 60 ms at batch 1 against
    # 1.7 ms for a whole batch of 32. Timed calls, as the harness summarises them.
    latency = [Latency.from_samples(1, [0.060] * 40, blocks=4), Latency.from_samples(32, [0.0017] * 40, blocks=4)]
    a = assess("baseline", 2, latency=latency)
    assert a.inconsistent and a.flagged and not a.starved
    flagged = [c for c in a.checks if c.flagged]
    assert [c.kind for c in flagged] == ["small-batch-cost"] and flagged[0].value == pytest.approx(60 / 1.7)
    assert "baseline" in a.reasons[0] and "batch 1 (60 ms)" in a.reasons[0] and "batch of 32 (1.7 ms)" in a.reasons[0]


def test_assess_flags_an_interleaved_speedup_of_17_5_when_the_medians_say_0_26() -> None:
    base = [_row(1, 0.9), _row(32, 1.7)]
    int8 = [_row(1, 0.4), _row(32, 6.7)]
    a = assess("int8-dynamic", 2, latency=int8, baseline_latency=base,
               speedups=[{"batch_size": 32, "ratio": 17.53, "low": 16.9, "high": 18.2}])
    ratio = next(c for c in a.checks if c.kind == "ratio")
    assert ratio.flagged and ratio.value == pytest.approx(17.53 / (1.7 / 6.7))
    assert a.inconsistent and not a.starved
    assert any("int8-dynamic at batch 32" in r and "17.53×" in r and "0.25×" in r for r in a.reasons)


# --- healthy runs on record are never flagged --------------------------------------------------------------------

# Figures copied from healthy runs: reports/sample/results.json (the CI matrix on this project's 2-core machine),
# a test-suite run of the API doc example and a user's ONNX int8 run. Each is the closest a healthy run came to
# one limit.
HEALTHY: dict[str, dict[str, Any]] = {
    # onnx at batch 32: interleaved 1.71× against medians 1.102 / 0.440 = 2.50× (1.47-fold apart)
    "sample onnx, ratio": dict(latency=[_row(32, 0.44002)], baseline_latency=[_row(32, 1.10198)],
                               speedups=[{"batch_size": 32, "ratio": 1.70923}]),
    # int8 at batch 1 in a test run: interleaved 1.78× against medians 3.27× (1.84-fold apart, the widest on record)
    "api example int8, ratio": dict(latency=[_row(1, 0.041817)], baseline_latency=[_row(1, 0.1366255)],
                                    speedups=[{"batch_size": 1, "ratio": 1.77504}]),
    # int8-dynamic: a batch of 32 costs 5.99 ms, batch 1 0.208 ms (each example 0.90× of batch 1's)
    "sample int8-dynamic, batch cost": dict(latency=[_row(1, 0.20813), _row(32, 5.98941)]),
    # an ONNX int8 CNN whose batch-32 kernels scale badly: each example 1.89× dearer at batch 32
    "onnx int8, per-example growth": dict(latency=[_row(1, 2.07834), _row(32, 125.42485)]),
    # the baseline's first three blocks ran before its allocator settled: slowest block 1.83× the quietest
    "sample baseline, block spread": dict(latency=[_row(1, 0.135876, (0.24406, 0.24913, 0.22591, 0.14347, 0.135876,
                                                                      0.13747))]),
    "sample student-int8, block spread": dict(latency=[_row(1, 0.048283, (0.06795, 0.06842, 0.050130, 0.048283,
                                                                          0.080564, 0.06369))]),
}


@pytest.mark.parametrize("figures", HEALTHY.values(), ids=HEALTHY.keys())
def test_assess_never_flags_the_figures_of_healthy_runs(figures: dict[str, Any]) -> None:
    a = assess("variant", 2, before=QUIET, after=QUIET, **figures)
    assert not a.flagged and a.reasons == () and a.checks, a.reasons
    assert a.summary() == "measured on a quiet machine; its timings agree with each other"


# --- each condition, fed on its own --------------------------------------------------------------------------------

def test_assess_calls_a_run_starved_when_other_load_held_the_cores() -> None:
    a = assess("onnx", 2, before=HOGGED, after=QUIET, latency=[_row(1, 0.04), _row(32, 0.44)])
    assert a.starved and not a.inconsistent
    assert a.reasons == ("onnx: 2 measuring threads + 1.8 cores busy elsewhere > 2 cores before timing: its timings "
                         "were starved; stop other work or pass --threads 1 and measure again.",)
    assert a.summary().startswith("measured on a starved machine: onnx: 2 measuring threads")
    both = assess("onnx", 2, before=HOGGED, after=HOGGED)
    assert len(both.reasons) == 1 and [c.flagged for c in both.checks] == [True, True]  # one sentence, two readings


def test_steal_time_counts_as_cores_busy_elsewhere() -> None:
    stolen = LoadReading(cpu_count=2, steal_fraction=0.4, other_cpu_cores=0.2)
    a = assess("int8-static", 2, after=stolen)
    assert stolen.busy_elsewhere_cores == pytest.approx(1.0)
    assert a.starved and "(40% of the CPU time stolen by the hypervisor)" in a.reasons[0] and "after timing" in a.reasons[0]


def test_the_run_queue_stands_in_when_cpu_use_could_not_be_read() -> None:
    no_psutil = LoadReading(cpu_count=2, run_queue=3)  # the reader and two other runnable threads
    assert no_psutil.busy_elsewhere_cores == 2.0 and assess("onnx", 1, before=no_psutil).starved
    assert LoadReading(cpu_count=2).busy_elsewhere_cores is None and assess("onnx", 2, before=LoadReading(2)).checks == ()


def test_a_little_background_load_is_not_starvation() -> None:
    # Daemons and the reading's own tick granularity: 2 threads + 0.4 cores on 2 cores is within the slack.
    assert not assess("onnx", 2, before=LoadReading(2, other_cpu_cores=0.4)).starved


def test_per_example_cost_growing_many_fold_with_the_batch_is_inconsistent() -> None:
    # 1 ms at batch 1, 200 ms at batch 32: each example costs 6.25× more in the batch (limit 4×).
    checks = {c.kind: c for c in batch_cost_checks("slim-25", 1, 1.0, 32, 200.0)}
    assert checks["per-example-growth"].flagged and checks["per-example-growth"].value == pytest.approx(6.25)
    assert not checks["small-batch-cost"].flagged
    assert "each example cost 6.2× more at batch 32" in (checks["per-example-growth"].reason or "")
    assert batch_cost_checks("slim-25", 1, 0.0, 32, 200.0) == []  # a median of 0 cannot be compared


def test_blocks_of_calls_several_fold_apart_are_noisy() -> None:
    check = block_spread_check("sparse-50", 32, [1.1, 1.2, 1.1, 4.5, 1.15])
    assert check is not None and check.flagged and check.value == pytest.approx(4.5 / 1.1)
    assert "sparse-50 at batch 32: the slowest block of calls took 4.1× the quietest" in (check.reason or "")
    assert block_spread_check("sparse-50", 32, [1.1]) is None  # one block has no spread
    a = assess("sparse-50", 2, latency=[_row(32, 1.1, (1.1, 1.2, 1.1, 4.5, 1.15))])
    assert a.inconsistent and not a.starved


def test_assess_without_figures_or_readings_flags_nothing() -> None:
    a = assess("baseline", 2)
    assert (a.flagged, a.checks, a.reasons) == (False, (), ())


# --- preflight ------------------------------------------------------------------------------------------------------

def test_preflight_warns_when_threads_plus_other_load_exceed_the_cores() -> None:
    assert preflight(2, HOGGED) == ("2 measuring threads + 1.8 cores busy elsewhere > 2 cores: timings will be "
                                    "starved; stop other work or pass --threads 1")
    assert preflight(8, LoadReading(8, other_cpu_cores=3.0)) == (
        "8 measuring threads + 3.0 cores busy elsewhere > 8 cores: timings will be starved; stop other work or pass "
        "--threads 5")
    assert preflight(1, LoadReading(2, other_cpu_cores=2.0)) == (
        "1 measuring thread + 2.0 cores busy elsewhere > 2 cores: timings will be starved; stop other work")


def test_preflight_is_silent_on_a_quiet_machine_or_without_a_reading() -> None:
    assert preflight(2, QUIET) is None
    assert preflight(1, LoadReading(2, other_cpu_cores=1.2)) is None  # one thread, one core free
    assert preflight(2, LoadReading(2)) is None


# --- reading the machine --------------------------------------------------------------------------------------------

def test_readings_leave_our_own_process_tree_out() -> None:
    # 80 ms in which the machine was busy 0.16 s across its cores, 0.08 s of it our own measuring child: one other core.
    first = CpuSample(wall_s=10.0, busy_s=100.0, steal_s=5.0, total_s=400.0, own_s=3.0)
    second = CpuSample(wall_s=10.08, busy_s=100.16, steal_s=5.016, total_s=400.16, own_s=3.08)
    r = readings_between(first, second, 2, load_1min=1.5, run_queue=2)
    assert r.other_cpu_cores == pytest.approx(1.0) and r.steal_fraction == pytest.approx(0.1)
    assert (r.cpu_count, r.load_1min, r.run_queue, r.window_s) == (2, 1.5, 2, pytest.approx(0.08))
    # A child reaped mid-window adds its whole life to our own time: never below zero busy elsewhere.
    reaped = CpuSample(wall_s=10.08, busy_s=100.16, steal_s=None, total_s=400.16, own_s=9.0)
    r = readings_between(first, reaped, 2)
    assert r.other_cpu_cores == 0.0 and r.steal_fraction is None


def test_sample_cpu_counts_our_children_as_our_own() -> None:
    child = subprocess.Popen([sys.executable, "-c", "sum(i * i for i in range(2_000_000)); print('done', flush=True); "
                              "input()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "done"
        import psutil

        me, kid = psutil.Process().cpu_times(), psutil.Process(child.pid).cpu_times()
        sample = sample_cpu()
        assert sample is not None
        assert sample.own_s >= me.user + me.system + kid.user + kid.system - 1e-6
        gone = subprocess.run([sys.executable, "-c", "pass"], check=True)  # an exited pid is skipped, not an error
        assert gone.returncode == 0 and sample_cpu(own_pids=(child.pid, 2**22 + 7)) is not None
    finally:
        child.communicate(input="\n", timeout=30)


def test_read_load_reads_this_machine_within_range() -> None:
    r = read_load(window_s=0.02)
    assert r.cpu_count >= 1 and r.window_s > 0
    assert r.other_cpu_cores is None or 0.0 <= r.other_cpu_cores <= r.cpu_count
    assert r.steal_fraction is None or 0.0 <= r.steal_fraction <= 1.0
    assert r.run_queue is None or r.run_queue >= 0
    instant = read_load(sleep=lambda _: None)  # no time between the samples: still a reading, never a division by 0
    assert instant.cpu_count == r.cpu_count


def test_a_reading_needs_at_least_one_core() -> None:
    with pytest.raises(ConfigError, match="cpu_count ≥ 1, got 0"):
        LoadReading(cpu_count=0)


# --- JSON -----------------------------------------------------------------------------------------------------------

def test_an_assessment_round_trips_through_strict_json() -> None:
    a = assess("int8-dynamic", 2, before=HOGGED, after=QUIET, latency=[_row(1, 60.0, (55.0, 60.0)), _row(32, 6.7)],
               baseline_latency=[_row(32, 1.7)], speedups=[{"batch_size": 32, "ratio": 17.53}])
    text = json.dumps(a.to_dict(), allow_nan=False)
    assert Assessment.from_dict(json.loads(text)) == a


def test_non_finite_figures_are_written_as_null() -> None:
    a = Assessment("onnx", 2, False, True, ("x",), LoadReading(2, other_cpu_cores=float("nan")), None,
                   (Check("ratio", 32, float("inf"), 3.0, True, (("interleaved", float("inf")),), "x"),))
    d = json.loads(json.dumps(a.to_dict(), allow_nan=False))
    assert d["checks"][0]["value"] is None and d["checks"][0]["figures"] == {"interleaved": None}
    assert d["before"]["other_cpu_cores"] is None
