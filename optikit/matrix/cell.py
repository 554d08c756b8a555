"""One matrix cell in its own process: teacher → pass chain → bench against the teacher → a JSON record.

Run as `python -m optikit.matrix.cell SPEC.json`. The parent reads the record the cell writes; if the process dies
(an exception, a segfault in a native library, a timeout) the parent records the cell as failed instead.
"""
from __future__ import annotations

import contextlib
import ctypes
import importlib
import json
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optikit._io import write_json_atomic

if TYPE_CHECKING:
    from optikit.harness.bench import BenchConfig


def _row(result: Any) -> dict[str, Any]:
    return result.to_dict()


def _bench_config(spec: dict[str, Any]) -> BenchConfig:
    """The cell's BenchConfig from its (JSON) spec."""
    from optikit.harness.bench import BenchConfig
    from optikit.harness.latency import LatencyConfig

    lat = spec["latency"]
    return BenchConfig(latency=LatencyConfig(batch_sizes=tuple(spec["batch_sizes"]),
                                             min_iterations=lat["min_iterations"], min_seconds=lat["min_seconds"],
                                             warmup_max=max(lat["warmup_max"], 5)),
                       threads=spec["threads"], device=spec["device"], processes=lat.get("processes", 1))


def run_cell(spec: dict[str, Any]) -> dict[str, Any]:
    """Does the cell's work and returns its record; raises on failure (the caller records the error)."""
    from optikit import api
    from optikit.harness.bench import bench
    from optikit.harness.records import plain

    for module in spec.get("plugins", []):
        importlib.import_module(module)  # a plugin module registers its passes on import
    options = spec["teacher"].get("options") or {"data": spec["teacher"].get("data")}
    teacher = api.resolve_model(spec["teacher"]["recipe"], options=api.data_options(**options))
    variant = teacher
    if spec["chain"]:
        produced = api.compress_chain(teacher, spec["chain"], threads=spec["threads"] or None)
        variant = produced[-1]
    results = bench([teacher] if variant is teacher else [teacher, variant], _bench_config(spec))
    row = results.variants[-1]
    base = results.variants[0]
    return {"status": row.status, "error": row.error, "row": _row(row), "baseline": _row(base),
            "task": plain(results.task), "environment": plain(results.environment), "settings": plain(results.settings),
            "variant_path": str(variant.path), "variant_id": variant.id}


# The pid of the matrix process that started this cell (set by runner.run_cell_process): the cell ends with it.
PARENT_PID_VARIABLE = "OPTIKIT_CELL_PARENT"
PARENT_POLL_S = 0.5
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ends this cell, and every process it started, as soon as the matrix process that started it dies (kill -9
    included), so a --resume never finds an orphaned cell still writing its log and record.

    Two ways, because neither covers everything alone. On Linux the kernel sends SIGTERM the moment the parent dies
    (PR_SET_PDEATHSIG, armed here rather than in a preexec_fn, which is unsafe in a threaded parent such as a Ray
    worker; the parent thread that started us waits for us, so it cannot end first). Everywhere, a daemon thread
    sees within PARENT_POLL_S that this process was re-parented, which also works where there is no prctl and
    while the main thread is held in native code. Either way the end is SIGKILL to this process group, which the
    runner made this process lead: the measuring processes the cell started end with it. Without the variable (a
    cell run by hand) nothing is watched.
    """
    parent = int(os.environ.get(PARENT_PID_VARIABLE) or 0)
    if not parent:
        return
    signal.signal(signal.SIGTERM, lambda *_: _end_process_group())
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the signal was armed
        _end_process_group()
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="optikit-parent-watch").start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    _end_process_group()


def _end_process_group() -> None:
    if hasattr(os, "killpg") and os.getpgrp() == os.getpid():
        os.killpg(0, signal.SIGKILL)  # this process included; never the group of a cell run by hand
    os._exit(128 + signal.SIGTERM)


def main(argv: list[str]) -> int:
    from optikit._quiet import quiet_libraries

    die_with_parent()
    quiet_libraries()
    spec = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    start = time.perf_counter()
    try:
        record = run_cell(spec)
    except Exception as exc:  # noqa: BLE001 - a cell records every failure; the matrix goes on
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        traceback.print_exc(file=sys.stderr)  # into the cell's log, for the person who debugs it
        record = {"status": "failed", "error": f"{type(exc).__name__}: {first}" if not _is_user_error(exc) else first}
    record.update({"key": spec["key"], "variant": spec["variant"], "teacher": spec["teacher"]["label"],
                   "device": spec["device"], "chain": spec["chain"], "seconds": round(time.perf_counter() - start, 2),
                   "finished": time.time()})
    write_json_atomic(Path(spec["record"]), record)
    return 0 if record["status"] == "ok" else 1


def _is_user_error(exc: BaseException) -> bool:
    from optikit.errors import OptikitError

    return isinstance(exc, OptikitError)  # already one readable line


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
