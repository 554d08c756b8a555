"""The Ray executor's failures are one line naming the address, the cause and the fix — no cluster needed: an unused
loopback port, and the exceptions Ray 2.60 raises (an authentication failure buried in a ConnectionError's cause)."""
from __future__ import annotations

import socket
import textwrap
from pathlib import Path

import pytest

from optikit.errors import ConfigError
from optikit.matrix.executors import (
    FORWARDED_ENV,
    RAY_AUTH_ENV,
    lost_cell_error,
    probe_ray_address,
    ray_connect_error,
)


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there


def _ray_auth_failure(address: str) -> ConnectionError:
    """What `ray.init(address=…)` raises when the cluster refuses the token: the reason is only in the cause."""
    cause = RuntimeError("Failed to connect to GCS. Last connection error: Traceback (most recent call last):\n"
                         "ray.exceptions.AuthenticationError: RPC error: InvalidAuthToken: Authentication token is "
                         "missing or incorrect.")
    try:
        raise ConnectionError(f"Failed to connect to Ray cluster at {address}") from cause
    except ConnectionError as exc:
        return exc


@pytest.fixture
def no_ray_auth(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in RAY_AUTH_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_probe_names_the_address_and_how_to_start_a_cluster_when_nothing_listens() -> None:
    port = _unused_port()
    with pytest.raises(ConfigError, match=rf"no Ray cluster answers at 127\.0\.0\.1:{port} \(connection refused\): "
                                          rf"start one there \(`ray start --head --port {port}`\)"):
        probe_ray_address(f"127.0.0.1:{port}")
    with pytest.raises(ConfigError, match=f"ray://127.0.0.1:{port}"):
        probe_ray_address(f"ray://127.0.0.1:{port}")


def test_probe_leaves_auto_and_forms_only_ray_understands_to_ray() -> None:
    for address in ("auto", "local", "ray://head", "anyscale://my-cluster"):
        probe_ray_address(address)  # no exception, no connection attempted


def test_bench_on_an_unreachable_cluster_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    from optikit.cli import main

    port = _unused_port()
    matrix = tmp_path / "m.toml"
    matrix.write_text(textwrap.dedent("""
        name = "m"
        teachers = ["digits-cnn"]
        [variants]
        onnx = ["export-onnx"]
    """))
    with pytest.raises(SystemExit) as exit_:
        main(["bench", str(matrix), "--out", str(tmp_path / "out"), "--executor", "ray",
              "--address", f"127.0.0.1:{port}"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    [line] = [ln for ln in err.splitlines() if ln.startswith("optikit: error:")]
    assert f"127.0.0.1:{port}" in line and "connection refused" in line and "ray start --head" in line
    assert "Traceback" not in err


def test_a_missing_token_says_to_set_ray_auth_mode_and_token(no_ray_auth: pytest.MonkeyPatch) -> None:
    message = ray_connect_error("10.0.0.5:6379", _ray_auth_failure("10.0.0.5:6379"))
    assert message.startswith("the Ray cluster at 10.0.0.5:6379 needs its authentication token and none was sent")
    assert "set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN to the cluster's token" in message
    assert "ray get-auth-token" in message and "\n" not in message


def test_a_wrong_token_names_where_it_came_from(no_ray_auth: pytest.MonkeyPatch) -> None:
    no_ray_auth.setenv("RAY_AUTH_MODE", "token")
    no_ray_auth.setenv("RAY_AUTH_TOKEN", "not-the-clusters")
    message = ray_connect_error("10.0.0.5:6379", _ray_auth_failure("10.0.0.5:6379"))
    assert message.startswith("the Ray cluster at 10.0.0.5:6379 rejected the token from RAY_AUTH_TOKEN")
    assert "not-the-clusters" not in message  # the secret itself is never printed


def test_token_mode_without_any_token_says_which_variable_to_set(no_ray_auth: pytest.MonkeyPatch) -> None:
    no_ray_auth.setenv("RAY_AUTH_MODE", "token")
    ray = pytest.importorskip("ray")
    missing = ray.exceptions.AuthenticationError("Token authentication is enabled but no authentication token was "
                                                 "found")
    message = ray_connect_error("10.0.0.5:6379", missing)
    assert message.startswith("RAY_AUTH_MODE=token but no Ray token is set: set RAY_AUTH_TOKEN")


def test_any_other_connection_failure_names_the_address_and_what_to_check(no_ray_auth: pytest.MonkeyPatch) -> None:
    message = ray_connect_error("10.0.0.5:6379", ConnectionError("Failed to connect to Ray cluster at 10.0.0.5:6379"))
    assert message.startswith("cannot connect to the Ray cluster at 10.0.0.5:6379: Failed to connect")
    assert "check --address" in message


def test_the_ray_token_is_never_forwarded_to_cells() -> None:
    # Cells never talk to Ray; a task argument would carry the secret through the cluster's object store.
    assert not set(RAY_AUTH_ENV) & set(FORWARDED_ENV)


def test_a_cell_lost_with_its_node_is_recorded_with_the_reason_and_the_way_to_rerun_it() -> None:
    class NodeDiedError(Exception):
        pass

    error = lost_cell_error(NodeDiedError("Task failed because the node running it died unexpectedly"), retries=1)
    assert error.startswith("ray task failed: its Ray node died (tried 2 times): NodeDiedError:")
    assert error.endswith("`--resume` runs it again")


def test_an_exception_inside_the_task_is_not_reported_as_retried() -> None:
    error = lost_cell_error(OSError("No such file or directory: '/data/train.csv'"), retries=1)
    assert error.startswith("ray task failed: its Ray task raised: OSError: No such file")
    assert "tried" not in error
