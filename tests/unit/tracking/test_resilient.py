"""MLflow logging that survives its server: a call failing for a passing reason is retried, then the variant is left
out with the reason (a warning, a tag, tracking-errors.txt) and the variants after it are logged again."""
from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from optikit.errors import ConfigError
from optikit.tracking._resilient import NOT_LOGGED_FILE, TrackingUnavailable, call_with_retries, is_transient
from optikit.tracking.mlflow import TrackingConfig, default_uri, track
from tests.unit.report.fake import fake_results

mlflow = pytest.importorskip("mlflow")


def _refused() -> Exception:
    """What MlflowClient raises while its server is down (MLflow wraps requests' ConnectionError this way)."""
    from mlflow.exceptions import MlflowException

    return MlflowException("API request to http://127.0.0.1:5000/api/2.0/mlflow/runs/create failed with exception "
                           "HTTPConnectionPool(host='127.0.0.1', port=5000): Max retries exceeded (Connection refused)")


def test_a_call_that_fails_while_the_server_restarts_is_retried_until_it_answers() -> None:
    answers: list[Any] = [_refused(), ConnectionResetError("reset by peer"), "run-1"]
    pauses: list[float] = []

    def create_run() -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert call_with_retries("MLflow create_run", create_run, retry_seconds=30, sleep=pauses.append) == "run-1"
    assert pauses == [0.5, 1.0]  # growing pauses, not a tight loop


def test_retries_end_with_the_call_and_its_cause_named() -> None:
    def down() -> None:
        raise _refused()

    with pytest.raises(TrackingUnavailable, match=r"^MLflow log_batch: MlflowException: API request to .* refused"):
        call_with_retries("MLflow log_batch", down, retry_seconds=0, sleep=lambda s: pytest.fail("no retry budget"))


def test_a_failure_that_cannot_pass_is_raised_at_once() -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    invalid = MlflowException("Param value too long", error_code=INVALID_PARAMETER_VALUE)
    assert not is_transient(invalid) and not is_transient(FileNotFoundError("model.onnx"))
    assert is_transient(_refused()) and is_transient(TimeoutError())

    def reject() -> None:
        raise invalid

    with pytest.raises(MlflowException, match="too long"):
        call_with_retries("MLflow log_batch", reject, retry_seconds=30, sleep=lambda s: pytest.fail("retried"))


class _ServerDownFor:
    """An MlflowClient whose server is down for every call about the run named `run_name` (after it was created)."""

    def __init__(self, client: Any, run_name: str) -> None:
        self.client, self.run_name, self.run_id = client, run_name, None

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.run_id is not None and self.run_id in args:
                raise _refused()
            result = method(*args, **kwargs)
            if name == "create_run" and kwargs.get("run_name") == self.run_name:
                self.run_id = result.info.run_id
            return result
        return call


def test_a_variant_that_cannot_be_logged_is_left_out_with_the_reason_and_the_rest_are_logged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from mlflow.tracking import MlflowClient

    import optikit.tracking.mlflow as tracking

    real = tracking._client
    monkeypatch.setattr(tracking, "_client", lambda uri: _ServerDownFor(real(uri), "int8"))
    pid = track({"run": fake_results()}, {}, tmp_path, config=TrackingConfig(retry_seconds=0), run_name="bench")

    client = MlflowClient(default_uri(tmp_path))
    parent = client.get_run(pid)
    runs = {r.info.run_name: r for r in client.search_runs([parent.info.experiment_id])
            if r.data.tags.get("mlflow.parentRunId") == pid}
    assert runs["baseline"].info.status == "FINISHED" and "accuracy" in runs["baseline"].data.metrics
    assert runs["broken"].info.status == "FAILED"  # logged after the gap: the cell's own failure, as always
    assert runs["int8"].info.status != "FINISHED"  # half logged: marked, never passed off as complete
    assert parent.info.status == "FINISHED"  # the measurements did not fail
    assert parent.data.tags["optikit.tracking_incomplete"].startswith("variant int8: not logged to sqlite:///")
    note = (tmp_path / NOT_LOGGED_FILE).read_text()
    assert "variant int8: not logged to" in note and "Connection refused" in note
    assert "optikit: warning: MLflow: variant int8: not logged to" in capsys.readouterr().err

    monkeypatch.setattr(tracking, "_client", real)
    track({"run": fake_results()}, {}, tmp_path, config=TrackingConfig(retry_seconds=0), run_name="bench")
    assert not (tmp_path / NOT_LOGGED_FILE).exists()  # a run that logged everything clears the old list


def test_a_server_unreachable_from_the_start_is_one_line_naming_the_uri(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        uri = f"http://127.0.0.1:{s.getsockname()[1]}"  # closed again: nothing listens there
    with pytest.raises(ConfigError, match=rf"^cannot start an MLflow run at {uri} \(.*\): check --tracking-uri and "
                                          rf"that the server is running; the results are written in {tmp_path}"):
        track({"run": fake_results()}, {}, tmp_path, config=TrackingConfig(uri, retry_seconds=0), run_name="bench")
