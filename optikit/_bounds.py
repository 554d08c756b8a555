"""Bounds on sizes a user sets (threads, batch sizes) and on memory, checked before any work starts."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from optikit.errors import ConfigError

# No CPU classifier here gains throughput past a few thousand inputs per call, while the inputs, activations and
# logits of a batch grow with it: `--batch-size 100000` once ran 13 minutes at 2.9 GB on one baseline.
MAX_BATCH_SIZE = 4096


def check_threads(threads: Any, name: str = "threads") -> int | None:
    """`threads` as given (None: the default), refused in one line unless it is a whole number ≥ 1."""
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"{name} must be a whole number ≥ 1 (or None for the default), got {threads!r}")
    return threads


def check_batch_sizes(batch_sizes: Sequence[Any], name: str = "batch size") -> tuple[int, ...]:
    """Batch sizes as a tuple, each a whole number in [1, MAX_BATCH_SIZE], refused in one line otherwise."""
    if isinstance(batch_sizes, str | bytes) or not isinstance(batch_sizes, Sequence):
        raise ConfigError(f"batch sizes must be a list of whole numbers, e.g. [1, 32], got {batch_sizes!r}")
    for size in batch_sizes:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigError(f"{name} must be a whole number ≥ 1, got {size!r}")
        if size > MAX_BATCH_SIZE:
            raise ConfigError(f"{name} {size} is above optikit's ceiling of {MAX_BATCH_SIZE} (memory grows with the "
                              f"batch; past a few thousand inputs throughput does not): pass {MAX_BATCH_SIZE} or less")
    return tuple(batch_sizes)


def fit_batch_sizes(batch_sizes: Sequence[int], test_examples: int, *, chosen: bool) -> tuple[tuple[int, ...], str | None]:
    """The batch sizes to time on a test split of `test_examples`, and a note when the defaults were capped.

    A batch larger than the test split would repeat examples to fill itself, so it times an input the data never
    holds: a batch size the user chose is refused; a default one is capped to the test split (with a note).
    """
    over = [b for b in batch_sizes if b > test_examples]
    if not over:
        return tuple(batch_sizes), None
    if chosen:
        raise ConfigError(f"batch size {max(over)} is larger than the test split ({test_examples} examples): pass a "
                          f"batch size of {test_examples} or less, or a larger test set (--test-data)")
    capped = tuple(dict.fromkeys(min(b, test_examples) for b in batch_sizes))
    return capped, (f"default batch size {', '.join(map(str, over))} capped to the test split's {test_examples} "
                    "examples")


def available_memory_bytes() -> int | None:
    """Memory this machine can still give a process (MemAvailable on Linux), or None where it cannot be read."""
    try:
        import psutil  # optional: present in most environments, not a dependency of optikit

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    meminfo = Path("/proc/meminfo")
    try:
        for line in meminfo.read_text(encoding="ascii").splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return None


def human_bytes(n: float) -> str:
    """`n` bytes in the largest unit that keeps it at or above 1 (1024-based), e.g. 994.7 GB."""
    unit = "bytes"
    for larger in ("KB", "MB", "GB", "TB"):
        if n < 1024:
            break
        n, unit = n / 1024, larger
    return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"


__all__ = ["MAX_BATCH_SIZE", "available_memory_bytes", "check_batch_sizes", "check_threads", "fit_batch_sizes",
           "human_bytes"]
