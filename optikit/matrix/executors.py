"""Executors: where matrix cells run — one after another here (local), or as Ray tasks on a cluster (ray).

Both run the same `run_cell_process` (a fresh interpreter per cell) and return the same records, so the report,
the gate and --resume do not know which executor ran a cell.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from optikit.config import require
from optikit.errors import MissingDependencyError

if TYPE_CHECKING:
    from optikit.matrix.runner import Cell
    from optikit.matrix.spec import Matrix

ExecutorName = Literal["local", "ray"]
# Settings a cell process reads from its environment: a Ray worker started elsewhere must see the driver's.
FORWARDED_ENV = ("OPTIKIT_HOME", "OPTIKIT_QUIET", "OPTIKIT_MADEWITHML", "HF_HUB_OFFLINE", "PYTHONPATH")


@dataclass(frozen=True)
class ExecutorConfig:
    name: ExecutorName = "local"
    address: str | None = None  # ray only: "auto", "ray://head:10001", or None for the running / a local instance

    def __post_init__(self) -> None:
        require(self.name in ("local", "ray"), f"executor must be local or ray, got {self.name!r}")
        require(self.address is None or self.name == "ray", "--address needs --executor ray")


def _forwarded_env() -> dict[str, str]:
    return {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}


def _ray_cell(cell: Cell, matrix: Matrix, env: dict[str, str]) -> dict[str, Any]:
    """Runs on a Ray worker: the same isolated cell process as the local executor."""
    from optikit.matrix.runner import run_cell_process

    os.environ.update(env)
    return run_cell_process(cell, matrix)


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise MissingDependencyError("ray", "ray") from exc
    return ray


def run_ray(cells: Sequence[Cell], matrix: Matrix, address: str | None,
            stop: Callable[[dict[str, Any]], bool]) -> Iterator[tuple[Cell, dict[str, Any]]]:
    """Submits every cell as a Ray task (CPUs = the matrix's threads) and yields (cell, record) as each finishes.

    `stop(record)` true (fail-fast) cancels the cells not yet finished. Records are written here by the driver as
    well, so --resume works even when the workers' disks are not the driver's.
    """
    from optikit._io import write_json_atomic
    from optikit.runners import default_threads

    ray = _ray()
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    remote = ray.remote(_ray_cell).options(num_cpus=matrix.threads or default_threads(), max_retries=0)
    env = _forwarded_env()
    pending = {remote.remote(c, matrix, env): c for c in cells}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        cell = pending.pop(done[0])
        try:
            record = ray.get(done[0])
        except Exception as exc:  # noqa: BLE001 - a lost worker or a cancelled task is that cell's failure
            from optikit.matrix.runner import _died

            record = _died(cell, None, cell.record.with_suffix(".log"), 0.0,
                           f"ray task failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")
        write_json_atomic(cell.record, record)
        yield cell, record
        if stop(record):
            # Like the local executor after a failure: the cells not finished yet are not run (nor recorded).
            for ref in pending:
                ray.cancel(ref, force=True)
            return
