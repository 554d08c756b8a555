"""`optikit serve --replicas 2 --engine ray`: the same app on two Ray Serve replicas of a Ray instance that never
leaves 127.0.0.1 (token auth on). Both replicas answer, both route with the one router actor (one canary ramp, not
one per replica), one log holds every answered request, and Ctrl+C leaves nothing listening."""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.serve")
pytest.importorskip("fastapi")

from optikit.serve.ray_engine import REPLICA_HEADER  # noqa: E402
from tests.integration.test_ray_cluster import (  # noqa: E402
    WAIT_S,
    LoopbackCluster,
    _connections,
    _free_port,
    _wait,
)

REQUESTS = 60  # the ramp reaches 100% after 36 of these keys (policy.bucket), with margin for late observations
RAMP = (20.0, 50.0, 100.0)
STEP_REQUESTS = 4
# The server as a user starts it: its own process, Ray settings from its environment, stopped by SIGINT.
SERVER = """
import sys
from optikit.serve.app import ServeConfig
from optikit.serve.policy import Guardrails, ServePlan
from optikit.serve.ray_engine import serve_on_ray
from optikit.variant import load_variant

baseline, candidate, log, port, address = sys.argv[1:]
plan = ServePlan(mode="canary", ramp=({ramp}), step_requests={step}, mirror_percent=0.0)
# No guardrail judged on this few samples: the ramp advances on request counts alone, which is what is shared.
serve_on_ray(load_variant(baseline), load_variant(candidate), plan, Guardrails(min_samples=10_000),
             ServeConfig(port=int(port), log=log, threads=1), replicas=2, address=address)
""".format(ramp=", ".join(map(str, RAMP)), step=STEP_REQUESTS)


class TwoCpuCluster(LoopbackCluster):
    """One head node with 2 CPUs: a replica each. One node, so the SQLite log is one file for both."""

    def start_head(self) -> None:
        log = self.root / "head.log"
        self.head = self._start(["-m", "ray.scripts.scripts", "start", "--head", "--node-ip-address", "127.0.0.1",
                                 "--port", str(self.port), "--num-cpus", "2", "--include-dashboard=false",
                                 "--temp-dir", self.temp_dir], log, self.env())
        _wait("the head node", lambda: "Ray runtime started" in log.read_text(), self.head, log)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[TwoCpuCluster]:
    c = TwoCpuCluster(tmp_path / "cluster")
    c.root.mkdir()
    try:
        c.start_head()
        yield c
    finally:
        c.stop()


@pytest.fixture
def candidate(digits_teacher, tmp_path: Path):
    import optikit

    return optikit.compress(digits_teacher.path, ["prune-unstructured:amount=0.3"], out=tmp_path / "variants")


def _call(url: str, body: dict[str, Any] | None = None, key: str | None = None) -> tuple[dict[str, Any], str]:
    """(JSON answer, the replica that gave it)."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **({"X-User-Key": key} if key else {})}
    with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=60) as response:
        return json.loads(response.read()), response.headers[REPLICA_HEADER]


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def _stop(proc: subprocess.Popen) -> int:
    """SIGINT, as Ctrl+C; the server shuts Serve down and disconnects."""
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=WAIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"the server did not stop within {WAIT_S:g} s of SIGINT")


@pytest.mark.slow  # a Ray head, Serve and two replicas loading two models each: ~1 min on a busy 2-core machine
def test_two_replicas_share_one_router_and_one_log(cluster: TwoCpuCluster, digits_teacher, candidate,
                                                   tmp_path: Path) -> None:
    from optikit.data import load_digits
    from optikit.serve.log import RequestLog

    port, log_path, out = _free_port(), tmp_path / "serve.db", tmp_path / "server.log"
    base = f"http://127.0.0.1:{port}"
    with out.open("w") as fh:
        proc = subprocess.Popen([sys.executable, "-c", SERVER, str(digits_teacher.path), str(candidate.path),
                                 str(log_path), str(port), cluster.address], env=cluster.env(), stdout=fh,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + WAIT_S
        while not _listening(port) or _health_or_none(base) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the server did not come up ({proc.poll()}): {out.read_text()[-3000:]}")
            time.sleep(0.5)

        images = load_digits().inputs[:REQUESTS]
        answers = [_call(f"{base}/predict", {"input": image.tolist()}, key=f"user-{i}")
                   for i, image in enumerate(images)]
        assert all(len(a["ids"]) == 1 and a["labels"][0] in digits_teacher.task.label_names for a, _ in answers)
        served_by = {replica for _, replica in answers}
        assert len(served_by) == 2, served_by  # Serve spread the requests over both replicas

        # Each replica reports the router's state: both count every request, so both asked the one router.
        seen: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + WAIT_S
        while set(seen) != served_by or any(h["percent"] != RAMP[-1] for h in seen.values()):
            if time.monotonic() > deadline:
                pytest.fail(f"the replicas' /health never agreed on the full ramp: {seen}")
            health, replica = _call(f"{base}/health")
            seen[replica] = health
        assert {h["requests"] for h in seen.values()} == {REQUESTS}, seen
        assert {h["rolled_back"] for h in seen.values()} == {None}

        # Serve's proxy, its controller, the replicas and the router actor: nothing listens beyond 127.0.0.1.
        listening = {(c.laddr.ip, c.laddr.port) for pid in cluster.descendants(cluster.head)
                     for c in _connections(pid) if c.status == "LISTEN"}
        assert ("127.0.0.1", port) in listening
        assert {ip for ip, _ in listening} <= {"127.0.0.1", "::ffff:127.0.0.1"}, listening

        assert _stop(proc) == 0, out.read_text()[-3000:]
        assert not _listening(port)  # Serve's proxy is gone with the server
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    log = RequestLog.open(log_path)
    try:
        logged = {r.id: r for r in log.records()}
        events = log.events()
    finally:
        log.close()
    for answer, _ in answers:
        [request_id] = answer["ids"]
        assert logged[request_id].served == answer["arm"]  # every acknowledged row, with the arm that answered
    # One ramp, stepped once per step: per-replica routers would each have logged their own.
    assert [(e.kind, e.percent) for e in events] == [("ramp", p) for p in RAMP[1:]], events
    assert sorted(e.at_request for e in events) == [e.at_request for e in events]


def _health_or_none(base: str) -> dict[str, Any] | None:
    try:
        return _call(f"{base}/health")[0]
    except OSError:
        return None
