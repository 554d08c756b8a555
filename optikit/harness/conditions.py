"""Measurement conditions: was the machine starved, and do a variant's timings agree with each other?

The harness reads the machine's load before and after a variant's timing (`read_load`), warns before it starts when
the measuring threads cannot each have a core (`preflight`), and `assess` turns those readings and the variant's own
figures into an `Assessment` that the verdict, the gate and the report read. Two kinds of evidence, kept apart:

- starved: what the machine said. Other processes (or the hypervisor, as steal time) held the cores the measuring
  threads needed. OpenMP-style thread pools wait at every barrier for their slowest thread, so one busy core can
  stall a whole call: a 2-thread model on a 2-core machine ran 35× slower at batch 1 beside one other process.
- inconsistent: what the figures say about themselves. Two measurements of one ratio that disagree many-fold, a
  single example costing more than a whole batch, blocks of calls that differ several-fold: no model does that on
  a free machine, so something the load readings missed (a burst between readings, a noisy neighbour VM) did.

Every check is a pure function over plain numbers, so tests feed fake readings and crafted samples.
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from optikit.config import require
from optikit.harness.records import plain

# Cores a reading may show busy beyond a full house before it counts as starved: a 100 ms window reads CPU time in
# 10 ms ticks (±0.1 core per tick on each side) and an idle machine's daemons stay well under half a core, while
# one CPU hog is a whole core.
SLACK_CORES = 0.5
# Measured over 20 consecutive blocks, the figures of healthy runs in this project's records (reports/sample, the
# CI matrix, the test suite's own runs on a shared 2-core machine) stay inside these limits with a wide margin; the
# starved CI run the limits were set against (optikit issue 12) breaks each of them by an order of magnitude.
RATIO_DISAGREEMENT = 3.0  # interleaved speedup vs ratio of medians: healthy runs up to 1.84×; starved 67×
SMALL_OVER_LARGE = 2.0  # one call at the smallest batch vs a whole larger batch: healthy up to 0.35×; starved 35×
PER_EXAMPLE_GROWTH = 4.0  # per-example cost at a larger batch vs the smallest: healthy up to 1.89× (an int8 CNN)
BLOCK_SPREAD = 3.0  # slowest block median vs the quietest: healthy up to 1.88×
DEFAULT_WINDOW_S = 0.08  # long enough for 8 clock ticks a core, short enough to read twice around every variant

CheckKind = Literal["load", "ratio", "small-batch-cost", "per-example-growth", "block-spread"]
STARVING: tuple[CheckKind, ...] = ("load",)  # what the machine said; every other kind is the figures themselves


@dataclass(frozen=True)
class LoadReading:
    """The machine's load around a timing. Fields the OS does not report are None.

    `other_cpu_cores` is the CPU other processes used during the reading's window, in cores (0.5: half a core
    busy); this process, its children and the pids it was given are left out, so the harness's own measuring
    process never counts against itself. `run_queue` counts runnable threads machine-wide at one instant, the
    reader included.
    """

    cpu_count: int
    load_1min: float | None = None
    run_queue: int | None = None
    steal_fraction: float | None = None  # share of CPU time the hypervisor gave to other guests (Linux only)
    other_cpu_cores: float | None = None
    window_s: float = 0.0

    def __post_init__(self) -> None:
        require(self.cpu_count >= 1, f"a load reading needs cpu_count ≥ 1, got {self.cpu_count}")

    @property
    def busy_elsewhere_cores(self) -> float | None:
        """Cores the measuring threads cannot have: other processes' CPU plus stolen time, or (where CPU use could
        not be read) the other runnable threads of the instant."""
        if self.other_cpu_cores is not None:
            return self.other_cpu_cores + (self.steal_fraction or 0.0) * self.cpu_count
        return float(max(self.run_queue - 1, 0)) if self.run_queue is not None else None

    def to_dict(self) -> dict[str, Any]:
        return plain({"cpu_count": self.cpu_count, "load_1min": self.load_1min, "run_queue": self.run_queue,
                        "steal_fraction": self.steal_fraction, "other_cpu_cores": self.other_cpu_cores,
                        "window_s": self.window_s})

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LoadReading:
        return cls(int(d["cpu_count"]), d.get("load_1min"), d.get("run_queue"), d.get("steal_fraction"),
                   d.get("other_cpu_cores"), float(d.get("window_s") or 0.0))


LoadReader = Callable[[], LoadReading]


@dataclass(frozen=True)
class CpuSample:
    """Cumulative CPU seconds at one instant: machine-wide (all cores together) and of our own process tree."""

    wall_s: float
    busy_s: float  # user, system, irq …: not idle, not waiting for I/O, not stolen
    steal_s: float | None
    total_s: float
    own_s: float  # this process, its children (live or reaped) and the given pids


def readings_between(first: CpuSample, second: CpuSample, cpu_count: int, *, load_1min: float | None = None,
                     run_queue: int | None = None) -> LoadReading:
    """The reading two CPU samples imply: what the machine was busy with, less what we did ourselves."""
    wall = second.wall_s - first.wall_s
    total = second.total_s - first.total_s
    other = steal = None
    if wall > 0:
        busy_elsewhere = (second.busy_s - first.busy_s) - (second.own_s - first.own_s)
        other = min(max(busy_elsewhere / wall, 0.0), float(cpu_count))
    if total > 0 and first.steal_s is not None and second.steal_s is not None:
        steal = min(max((second.steal_s - first.steal_s) / total, 0.0), 1.0)
    return LoadReading(cpu_count, load_1min, run_queue, steal, other, max(wall, 0.0))


def _own_cpu_seconds(psutil: Any, own_pids: tuple[int, ...]) -> float:
    me = psutil.Process()
    times = me.cpu_times()
    seconds = times.children_user + times.children_system  # children that already ended and were waited for
    family: dict[int, Any] = {}
    for pid in (me.pid, *own_pids):
        try:
            root = me if pid == me.pid else psutil.Process(pid)
            family.update({p.pid: p for p in (root, *root.children(recursive=True))})
        except psutil.Error:  # gone, or not ours to read
            continue
    for proc in family.values():
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue
        seconds += t.user + t.system
    return float(seconds)


def sample_cpu(own_pids: Iterable[int] = ()) -> CpuSample | None:
    """The CPU counters now; None without psutil."""
    try:
        import psutil
    except ImportError:
        return None
    t = psutil.cpu_times()
    # Linux counts guest time inside user time already; leave it out of the total so it is not counted twice.
    total = sum(t) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
    steal = getattr(t, "steal", None)
    busy = total - t.idle - getattr(t, "iowait", 0.0) - (steal or 0.0)
    return CpuSample(time.perf_counter(), busy, steal, total, _own_cpu_seconds(psutil, tuple(own_pids)))


def _run_queue() -> int | None:
    try:
        # /proc/loadavg: "0.13 0.14 0.32 1/243 22917"; the 4th field is runnable/all scheduling entities
        return int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
    except (OSError, IndexError, ValueError):
        return None


def _load_1min() -> float | None:
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        try:
            import psutil

            return float(psutil.getloadavg()[0])
        except (ImportError, AttributeError, OSError):
            return None


def read_load(own_pids: Iterable[int] = (), *, window_s: float = DEFAULT_WINDOW_S,
              sleep: Callable[[float], None] = time.sleep) -> LoadReading:
    """The machine's load now: CPU counters read twice, `window_s` apart (about 0.1 s in all).

    `own_pids`: processes whose CPU is ours (with their children), beside this process and its children.
    """
    pids = tuple(own_pids)
    cpu_count = os.cpu_count() or 1
    first = sample_cpu(pids)
    sleep(window_s)
    second = sample_cpu(pids)
    run_queue, load = _run_queue(), _load_1min()
    if first is None or second is None:
        return LoadReading(cpu_count, load, run_queue, None, None, window_s)
    return readings_between(first, second, cpu_count, load_1min=load, run_queue=run_queue)


def _oversubscribed(threads: int, reading: LoadReading) -> float | None:
    """Busy cores elsewhere when the measuring threads plus them exceed the cores (with the slack), else None."""
    busy = reading.busy_elsewhere_cores
    if busy is None or threads + busy <= reading.cpu_count + SLACK_CORES:
        return None
    return busy


def _fewer_threads(threads: int, busy: float, cores: int) -> str:
    if threads <= 1:
        return "stop other work"
    # One thread has no barrier to wait at for a slower sibling, so it suffers least even on a full machine.
    fit = max(1, min(threads - 1, math.floor(cores + SLACK_CORES - busy)))
    return f"stop other work or pass --threads {fit}"


def preflight(threads: int, reading: LoadReading) -> str | None:
    """A one-line warning when `threads` measuring threads plus the machine's other load exceed its cores."""
    busy = _oversubscribed(threads, reading)
    if busy is None:
        return None
    return (f"{threads} measuring thread{'s' if threads != 1 else ''} + {busy:.1f} cores busy elsewhere > "
            f"{reading.cpu_count} cores: timings will be starved; {_fewer_threads(threads, busy, reading.cpu_count)}")


@dataclass(frozen=True)
class Check:
    """One comparison behind an assessment: the figures compared, the statistic, its limit, and the verdict."""

    kind: CheckKind
    batch_size: int | None
    value: float  # the statistic compared with `limit` (a factor, or cores over capacity for "load")
    limit: float
    flagged: bool
    figures: tuple[tuple[str, float | None], ...] = ()
    reason: str | None = None  # the sentence a user reads when flagged

    def to_dict(self) -> dict[str, Any]:
        return plain({"kind": self.kind, "batch_size": self.batch_size, "value": self.value, "limit": self.limit,
                        "flagged": self.flagged, "figures": dict(self.figures), "reason": self.reason})

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Check:
        value = d.get("value")
        return cls(d["kind"], d.get("batch_size"), float("nan") if value is None else float(value), float(d["limit"]),
                   bool(d["flagged"]), tuple((d.get("figures") or {}).items()), d.get("reason"))


def _usable(*values: float | None) -> bool:
    return all(v is not None and math.isfinite(v) and v > 0 for v in values)


def load_check(variant: str, threads: int, reading: LoadReading | None, when: str) -> Check | None:
    """Starved when `threads` plus the cores busy elsewhere exceed the machine's cores by more than SLACK_CORES."""
    if reading is None or reading.busy_elsewhere_cores is None:
        return None
    busy = reading.busy_elsewhere_cores
    figures = (("threads", float(threads)), ("busy_elsewhere_cores", busy), ("cpu_count", float(reading.cpu_count)),
               ("steal_fraction", reading.steal_fraction), ("run_queue", _float(reading.run_queue)))
    over = threads + busy - reading.cpu_count
    flagged = _oversubscribed(threads, reading) is not None
    steal = (f" ({reading.steal_fraction:.0%} of the CPU time stolen by the hypervisor)"
             if reading.steal_fraction and reading.steal_fraction * reading.cpu_count >= 0.1 else "")
    reason = (f"{variant}: {threads} measuring thread{'s' if threads != 1 else ''} + {busy:.1f} cores busy elsewhere"
              f"{steal} > {reading.cpu_count} cores {when} timing: its timings were starved; "
              f"{_fewer_threads(threads, busy, reading.cpu_count)} and measure again.") if flagged else None
    return Check("load", None, over, SLACK_CORES, flagged, figures, reason)


def ratio_check(variant: str, batch_size: int, interleaved: float | None, medians_ratio: float | None) -> Check | None:
    """Inconsistent when the interleaved speedup and the ratio of the two medians differ more than RATIO_DISAGREEMENT-
    fold. Both measure baseline time / variant time; they differ a little on a free machine (the interleaved rounds
    share one process and its caches), never many-fold."""
    if not _usable(interleaved, medians_ratio):
        return None
    assert interleaved is not None and medians_ratio is not None
    factor = max(interleaved / medians_ratio, medians_ratio / interleaved)
    flagged = factor > RATIO_DISAGREEMENT
    reason = (f"{variant} at batch {batch_size}: the interleaved speedup ({interleaved:.2f}×) and the ratio of the two "
              f"medians ({medians_ratio:.2f}×) differ {factor:.1f}-fold (limit {RATIO_DISAGREEMENT:g}×), so at least one "
              "of them timed a starved machine; measure again with other work stopped.") if flagged else None
    return Check("ratio", batch_size, factor, RATIO_DISAGREEMENT, flagged,
                 (("interleaved", interleaved), ("medians_ratio", medians_ratio)), reason)


def batch_cost_checks(variant: str, small_batch: int, small_ms: float | None, large_batch: int,
                      large_ms: float | None) -> list[Check]:
    """Two checks of how a call's cost grows with the batch: a larger batch does all of a smaller one's work and
    more, so its call cannot cost far less (SMALL_OVER_LARGE), and batching shares work, so each example cannot cost
    many times more (PER_EXAMPLE_GROWTH). Either breach means one of the two timings was starved."""
    if not _usable(small_ms, large_ms) or large_batch <= small_batch:
        return []
    assert small_ms is not None and large_ms is not None
    figures = ((f"batch_{small_batch}_ms", small_ms), (f"batch_{large_batch}_ms", large_ms))
    over = small_ms / large_ms
    growth = (large_ms / large_batch) / (small_ms / small_batch)
    small_reason = (f"{variant}: one call at batch {small_batch} ({small_ms:.3g} ms) cost {over:.1f}× a whole batch "
                    f"of {large_batch} ({large_ms:.3g} ms), which no model does on a free machine: the batch-"
                    f"{small_batch} timing was starved; stop other work or pass --threads 1 and measure again.")
    growth_reason = (f"{variant}: each example cost {growth:.1f}× more at batch {large_batch} ({large_ms:.3g} ms a "
                     f"call) than at batch {small_batch} ({small_ms:.3g} ms a call) (limit {PER_EXAMPLE_GROWTH:g}×): "
                     f"the batch-{large_batch} timing was starved; stop other work and measure again.")
    return [Check("small-batch-cost", large_batch, over, SMALL_OVER_LARGE, over > SMALL_OVER_LARGE, figures,
                  small_reason if over > SMALL_OVER_LARGE else None),
            Check("per-example-growth", large_batch, growth, PER_EXAMPLE_GROWTH, growth > PER_EXAMPLE_GROWTH, figures,
                  growth_reason if growth > PER_EXAMPLE_GROWTH else None)]


def block_spread_check(variant: str, batch_size: int, block_ms: Iterable[float]) -> Check | None:
    """Noisy when the slowest block of consecutive calls took more than BLOCK_SPREAD× the quietest. A block's
    figure is the median of its calls, so one slow call cannot move it: most of a block ran slow."""
    blocks = [b for b in block_ms if _usable(b)]
    if len(blocks) < 2:
        return None
    spread = max(blocks) / min(blocks)
    flagged = spread > BLOCK_SPREAD
    reason = (f"{variant} at batch {batch_size}: the slowest block of calls took {spread:.1f}× the quietest "
              f"({max(blocks):.3g} ms vs {min(blocks):.3g} ms a call, limit {BLOCK_SPREAD:g}×): the machine was busy "
              "during the timing; stop other work or pass --threads 1 and measure again.") if flagged else None
    return Check("block-spread", batch_size, spread, BLOCK_SPREAD, flagged,
                 (("slowest_block_ms", max(blocks)), ("quietest_block_ms", min(blocks)), ("blocks", float(len(blocks)))),
                 reason)


@dataclass(frozen=True)
class Assessment:
    """Whether one variant's timings can be trusted, with the reasons and the evidence behind them.

    `starved`: a load reading showed the measuring threads could not each have a core. `inconsistent`: the variant's
    own figures contradict each other. Either one means no speed claim about this variant is confident.
    """

    variant: str
    threads: int
    starved: bool
    inconsistent: bool
    reasons: tuple[str, ...] = ()
    before: LoadReading | None = None
    after: LoadReading | None = None
    checks: tuple[Check, ...] = field(default=())

    @property
    def flagged(self) -> bool:
        return self.starved or self.inconsistent

    def summary(self) -> str:
        """`measured on a starved machine and inconsistent: <first reason> (+1 more)`, or `measured on a quiet machine`."""
        if not self.flagged:
            return "measured on a quiet machine; its timings agree with each other"
        what = " and ".join(w for w, on in (("on a starved machine", self.starved), ("inconsistent", self.inconsistent))
                            if on)
        more = f" (+{len(self.reasons) - 1} more)" if len(self.reasons) > 1 else ""
        return f"measured {what}: {self.reasons[0] if self.reasons else 'no reason recorded'}{more}"

    def to_dict(self) -> dict[str, Any]:
        return {"variant": self.variant, "threads": self.threads, "starved": self.starved,
                "inconsistent": self.inconsistent, "reasons": list(self.reasons),
                "before": self.before.to_dict() if self.before else None,
                "after": self.after.to_dict() if self.after else None,
                "checks": [c.to_dict() for c in self.checks]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Assessment:
        before, after = (LoadReading.from_dict(d[k]) if d.get(k) else None for k in ("before", "after"))
        return cls(d["variant"], int(d["threads"]), bool(d["starved"]), bool(d["inconsistent"]),
                   tuple(d.get("reasons") or ()), before, after,
                   tuple(Check.from_dict(c) for c in d.get("checks") or ()))


def _get(row: Any, name: str) -> Any:
    """A figure from a result row: a dict (results.json) or a dataclass (Latency, Speedup) alike."""
    return row.get(name) if isinstance(row, Mapping) else getattr(row, name, None)


def _headline_ms(row: Any) -> float | None:
    """The figure tables compare (latency.headline_ms): the steady median, else the plain one."""
    value = _get(row, "steady_p50_ms") or _get(row, "p50_ms")
    return None if value is None else float(value)


def assess(variant: str, threads: int, *, before: LoadReading | None = None, after: LoadReading | None = None,
           latency: Iterable[Any] = (), baseline_latency: Iterable[Any] = (),
           speedups: Iterable[Any] = ()) -> Assessment:
    """Every check on one variant's measurement.

    Args:
        variant: the name the reasons use.
        threads: the measuring threads.
        before, after: load readings taken just before and just after the variant's timing.
        latency: the variant's latency rows (`Latency` or its dict): `batch_size`, `steady_p50_ms` / `p50_ms`,
            `block_p50_ms`.
        baseline_latency: the baseline's rows, for the ratio of medians (empty for the baseline itself).
        speedups: the interleaved speedup rows (dicts or objects with `batch_size` and `ratio`).
    """
    checks: list[Check] = []
    for reading, when in ((before, "before"), (after, "after")):
        check = load_check(variant, threads, reading, when)
        if check is not None:
            checks.append(check)
    mine = {int(_get(r, "batch_size")): r for r in latency}
    base = {int(_get(r, "batch_size")): r for r in baseline_latency}
    for row in speedups:
        b = int(_get(row, "batch_size"))
        if b in mine and b in base:
            mine_ms, base_ms = _headline_ms(mine[b]), _headline_ms(base[b])
            medians = base_ms / mine_ms if mine_ms is not None and base_ms is not None and _usable(mine_ms) else None
            ratio = _get(row, "ratio")
            check = ratio_check(variant, b, None if ratio is None else float(ratio), medians)
            if check is not None:
                checks.append(check)
    sizes = sorted(mine)
    for large in sizes[1:]:
        checks += batch_cost_checks(variant, sizes[0], _headline_ms(mine[sizes[0]]), large, _headline_ms(mine[large]))
    for b in sizes:
        check = block_spread_check(variant, b, [float(x) for x in _get(mine[b], "block_p50_ms") or ()])
        if check is not None:
            checks.append(check)
    load = [c for c in checks if c.kind in STARVING and c.flagged]
    figures = [c for c in checks if c.kind not in STARVING and c.flagged]
    # Before and after usually say the same: one sentence, from the busier reading.
    worst_load = max(load, key=lambda c: c.value, default=None)
    reasons = tuple(c.reason for c in ([worst_load] if worst_load else []) + figures if c.reason)
    return Assessment(variant, threads, bool(load), bool(figures), reasons, before, after, tuple(checks))


def _float(value: int | float | None) -> float | None:
    return None if value is None else float(value)
