"""MLflow logging that survives its server: calls retried while the failure may pass, then a record of what was left
out (a warning, the runs' `optikit.tracking_incomplete` tag, NOT_LOGGED_FILE beside the report)."""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Tracking must never cost the measurements it reports. A call that fails for a reason that passes (the server
# restarting, a timeout, a rate limit) is retried for `retry_seconds`; after that the variant is left out, and why is
# recorded: a warning, the parent run's `optikit.tracking_incomplete` tag and NOT_LOGGED_FILE beside the report.
TRANSIENT_ERROR_CODES = frozenset({"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "DEADLINE_EXCEEDED",
                                   "REQUEST_LIMIT_EXCEEDED", "RESOURCE_EXHAUSTED"})
NOT_LOGGED_FILE = "tracking-errors.txt"
MAX_RETRY_DELAY_S = 8.0
# MLflow's own HTTP retries (7, exponential: minutes per call) and timeout (120 s) while optikit logs, unless set:
# optikit's retries bound the wait instead, call by call, and a dead server costs seconds, not hours.
HTTP_SETTINGS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


class TrackingUnavailable(Exception):
    """An MLflow call that kept failing for a passing reason until its retries ran out."""


def _is_a(exc: BaseException, class_name: str) -> bool:
    """`exc` is an instance of the class so named (requests' or MLflow's, without importing them)."""
    return any(c.__name__ == class_name for c in type(exc).__mro__)


def is_transient(exc: BaseException) -> bool:
    """A failure that may pass: the connection (refused, reset, timed out) or the server's 5xx / 429 answers, which
    MLflow reports as these error codes. A missing file or a refused permission is not retried."""
    return (isinstance(exc, ConnectionError | TimeoutError) or _is_a(exc, "RequestException")
            or getattr(exc, "error_code", None) in TRANSIENT_ERROR_CODES)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300] if text else ''}"


def call_with_retries(what: str, call: Any, *args: Any, retry_seconds: float, sleep: Any = None,
                      **kwargs: Any) -> Any:
    """`call(*args, **kwargs)`, retried with growing pauses (0.5 s, 1 s, 2 s … at most MAX_RETRY_DELAY_S) while it
    fails for a transient reason and `retry_seconds` last; then TrackingUnavailable naming `what` and the cause."""
    import time

    pause = sleep or time.sleep
    start, delay = time.monotonic(), 0.5
    while True:
        try:
            return call(*args, **kwargs)
        except Exception as exc:
            if not is_transient(exc):
                raise
            if time.monotonic() - start + delay > retry_seconds:
                raise TrackingUnavailable(f"{what}: {first_line(exc)}") from exc
            pause(delay)
            delay = min(delay * 2, MAX_RETRY_DELAY_S)


class RetryingClient:
    """An MlflowClient whose every call goes through `call_with_retries`; `once(name, …)` is a single best-effort try
    (closing a run that could not be logged) that never raises."""

    def __init__(self, client: Any, retry_seconds: float) -> None:
        self.client, self.retry_seconds = client, retry_seconds

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            with _http_settings():
                return call_with_retries(f"MLflow {name}", method, *args, retry_seconds=self.retry_seconds, **kwargs)
        return call

    def once(self, name: str, *args: Any, **kwargs: Any) -> None:
        try:
            with _http_settings():
                getattr(self.client, name)(*args, **kwargs)
        except Exception:  # noqa: BLE001, S110 - best effort on a server already known to be failing
            pass


def is_logging_failure(exc: BaseException) -> bool:
    """What a variant's logging may fail with and be left out for: MLflow's errors and the transport's. Anything
    else is a bug in optikit and keeps its traceback."""
    return isinstance(exc, TrackingUnavailable | OSError) or _is_a(exc, "MlflowException")


class NotLogged:
    """What could not be logged and why: warned at once, and kept for the parent run and NOT_LOGGED_FILE."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.lines: list[str] = []

    def add(self, what: str, exc: BaseException) -> None:
        from optikit.progress import warn

        why = str(exc) if isinstance(exc, TrackingUnavailable) else first_line(exc)
        self.lines.append(f"{what}: not logged to {self.uri}: {why}")
        warn(f"MLflow: {self.lines[-1]}")

    def write(self, out: Path) -> None:
        """NOT_LOGGED_FILE lists this run's gaps; a run that logged everything removes an older one's list."""
        path = out / NOT_LOGGED_FILE
        if self.lines:
            from optikit._io import write_text_atomic

            write_text_atomic(path, "MLflow tracking left these out; the measurements and the report are complete:\n"
                              + "\n".join(self.lines) + "\n")
        else:
            path.unlink(missing_ok=True)


@contextlib.contextmanager
def _http_settings() -> Iterator[None]:
    """HTTP_SETTINGS in os.environ for one call (where the user has not set them; MLflow reads them per request)."""
    added = [k for k in HTTP_SETTINGS if k not in os.environ]
    os.environ.update({k: HTTP_SETTINGS[k] for k in added})
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def leave_out(client: RetryingClient, not_logged: NotLogged, what: str, run: Any, exc: BaseException) -> None:
    """A variant whose logging failed: recorded, and its half-logged run (if any) marked as such, best effort."""
    not_logged.add(what, exc)
    if run is not None:
        client.once("set_tag", run.info.run_id, "optikit.tracking_incomplete", not_logged.lines[-1][:5000])
        client.once("set_terminated", run.info.run_id, "KILLED")


def close_parent(client: RetryingClient, not_logged: NotLogged, pid: str, status: str, out: Path) -> None:
    """Ends the parent run, tagged with what was left out, and writes (or clears) NOT_LOGGED_FILE."""
    try:
        if not_logged.lines:
            client.set_tag(pid, "optikit.tracking_incomplete", "; ".join(not_logged.lines)[:5000])
        client.set_terminated(pid, status)
    except Exception as exc:
        if not is_logging_failure(exc):
            raise
        not_logged.add("the end of the parent run (it stays RUNNING)", exc)
    not_logged.write(out)
