"""One matrix cell in its own process: teacher → pass chain → bench against the teacher → a JSON record.

Run as `python -m optikit.matrix.cell SPEC.json`. The parent reads the record the cell writes; if the process dies
(an exception, a segfault in a native library, a timeout) the parent records the cell as failed instead.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optikit._io import write_json_atomic

if TYPE_CHECKING:
    from optikit.harness.bench import BenchConfig


def _row(result: Any) -> dict[str, Any]:
    return dataclasses.asdict(result)


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
            "task": results.task, "environment": results.environment, "settings": results.settings,
            "variant_path": str(variant.path), "variant_id": variant.id}


def main(argv: list[str]) -> int:
    from optikit._quiet import quiet_libraries

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
