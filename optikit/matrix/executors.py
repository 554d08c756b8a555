"""Executors: where matrix cells run — one after another here (local), or as Ray tasks on a cluster (ray).

Both run the same `run_cell_process` (a fresh interpreter per cell) and return the same records, so the report,
the gate and --resume do not know which executor ran a cell.
"""
from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from optikit.config import require
from optikit.errors import ConfigError, MissingDependencyError

if TYPE_CHECKING:
    from optikit.matrix.runner import Cell
    from optikit.matrix.spec import Matrix

ExecutorName = Literal["local", "ray"]
# Settings a cell process reads from its environment: a Ray worker started elsewhere must see the driver's.
# Ray's own token (RAY_AUTH_TOKEN …) is not one of them: a cell never talks to Ray, the workers have the token their
# node was started with, and a task argument would carry the secret through the cluster's object store.
FORWARDED_ENV = ("OPTIKIT_HOME", "OPTIKIT_QUIET", "OPTIKIT_MADEWITHML", "HF_HUB_OFFLINE", "PYTHONPATH")
# Where Ray 2.60 reads its token authentication (ray/_private/authentication): the mode, then the token itself or a
# file holding it (default ~/.ray/auth_token). An explicit address never turns token mode on by itself.
RAY_AUTH_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
# A cell whose Ray worker or node died is run again this many times (Ray's max_retries: system failures only; a cell
# that fails on its own returns a failed record, which is never retried). After that it is recorded as failed.
NODE_LOSS_RETRIES = 1
PROBE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ExecutorConfig:
    name: ExecutorName = "local"
    # ray only: "HOST:PORT" (what `ray start --head` printed), "auto", "ray://head:10001", or None for the running /
    # a new local instance
    address: str | None = None

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


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of "HOST:PORT" or "ray://HOST:PORT"; None for "auto", "local" and forms only Ray understands."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    return (host.strip("[]"), int(port)) if sep and host and port.isdigit() else None


def probe_ray_address(address: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Fails at once, in one line, when nothing listens at `address`; `ray.init` would retry there for minutes."""
    where = _host_port(address)
    if where is None:
        return
    try:
        with socket.create_connection(where, timeout=timeout_s):
            pass
    except OSError as exc:
        why = (f"no answer in {timeout_s:g} s" if isinstance(exc, TimeoutError)
               else "unknown host" if isinstance(exc, socket.gaierror) else exc.strerror or type(exc).__name__)
        raise ConfigError(f"no Ray cluster answers at {address} ({why.lower()}): "
                          f"start one there (`ray start --head --port {where[1]}`) or pass the address "
                          "`ray start --head` printed to --address") from None


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    return chain


def ray_connect_error(address: str, exc: BaseException) -> str:
    """The one line for a failed `ray.init(address)`: which address, why (Ray buries an authentication failure in the
    traceback text of a ConnectionError's cause), and what to set."""
    chain = _causes(exc)
    text = "\n".join(f"{type(e).__name__}: {e}" for e in chain)
    get_token = "`ray get-auth-token` on the head node prints it"
    if "AuthenticationError" in text or "InvalidAuthToken" in text:
        if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
            return (f"the Ray cluster at {address} needs its authentication token and none was sent (RAY_AUTH_MODE is "
                    f"not token): set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN to the cluster's token ({get_token}), "
                    "or RAY_AUTH_TOKEN_PATH to a file holding it")
        if "no authentication token was found" in text:
            return (f"RAY_AUTH_MODE=token but no Ray token is set: set RAY_AUTH_TOKEN to the token of the cluster at "
                    f"{address} ({get_token}), or RAY_AUTH_TOKEN_PATH to a file holding it")
        source = next((k for k in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH") if os.environ.get(k)), "~/.ray/auth_token")
        return (f"the Ray cluster at {address} rejected the token from {source}: set RAY_AUTH_TOKEN to the "
                f"cluster's token ({get_token})")
    first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    return (f"cannot connect to the Ray cluster at {address}: {first}: check --address (the address "
            "`ray start --head` printed, or auto on a node of the cluster) and that the cluster runs the same Ray "
            "and Python versions as this machine")


def connect_ray(address: str | None) -> Any:
    """The `ray` module, connected: to the cluster at `address`, or a local instance when it is None. A cluster that
    cannot be reached or refuses the token is a ConfigError, never a traceback."""
    ray = _ray()
    if ray.is_initialized():
        return ray
    if address is None:
        ray.init(include_dashboard=False, log_to_driver=False)
        return ray
    probe_ray_address(address)
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError or its own types
        raise ConfigError(ray_connect_error(address, exc)) from None
    return ray


def lost_cell_error(exc: BaseException, retries: int = NODE_LOSS_RETRIES) -> str:
    """Why a cell's Ray task returned no record: a worker or a whole node died under it (after `retries` reruns)."""
    first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    name = type(exc).__name__
    lost = ("its Ray node died" if name == "NodeDiedError"
            else "the Ray worker running it died" if name in ("WorkerCrashedError", "LocalRayletDiedError") else "")
    # Ray retries only these system failures; an exception raised in the task itself ran once.
    what = f"{lost} (tried {retries + 1} times)" if lost and retries else lost or "its Ray task raised"
    return f"ray task failed: {what}: {name}: {first}; `--resume` runs it again"


def run_ray(cells: Sequence[Cell], matrix: Matrix, address: str | None,
            stop: Callable[[dict[str, Any]], bool]) -> Iterator[tuple[Cell, dict[str, Any]]]:
    """Submits every cell as a Ray task (CPUs = the matrix's threads) and yields (cell, record) as each finishes.

    `stop(record)` true (fail-fast) cancels the cells not yet finished. A cell whose worker or node dies is run
    again (NODE_LOSS_RETRIES), then recorded as failed with the reason. Records are written here by the driver as
    well, so --resume works even when the workers' disks are not the driver's.
    """
    from optikit._io import write_json_atomic
    from optikit.runners import default_threads

    ray = connect_ray(address)
    remote = ray.remote(_ray_cell).options(num_cpus=matrix.threads or default_threads(),
                                           max_retries=NODE_LOSS_RETRIES)
    env = _forwarded_env()
    pending = {remote.remote(c, matrix, env): c for c in cells}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        cell = pending.pop(done[0])
        try:
            record = ray.get(done[0])
        except Exception as exc:  # noqa: BLE001 - a lost worker or node, or a cancelled task, is that cell's failure
            from optikit.matrix.runner import _died

            record = _died(cell, None, cell.record.with_suffix(".log"), 0.0, lost_cell_error(exc))
        write_json_atomic(cell.record, record)
        yield cell, record
        if stop(record):
            # Like the local executor after a failure: the cells not finished yet are not run (nor recorded).
            for ref in pending:
                ray.cancel(ref, force=True)
            return
