"""ray_engine without a Ray instance: what is refused before anything starts, where the log is for every replica,
and the router actor's body (one Router, restored from the log's events)."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from optikit.errors import ConfigError
from optikit.serve.policy import Event, Guardrails, Observation, ServePlan
from optikit.serve.ray_engine import _check_cluster, _RouterHost, serve_on_ray, shared_log_target


def fake_ray(nodes: int, cpus: float) -> SimpleNamespace:
    return SimpleNamespace(nodes=lambda: [{"Alive": True}] * nodes + [{"Alive": False}],
                           cluster_resources=lambda: {"CPU": cpus})


def test_replicas_below_one_is_one_line_naming_the_option() -> None:
    with pytest.raises(ConfigError, match=r"--replicas must be at least 1, got 0: pass --replicas 2"):
        serve_on_ray(None, None, ServePlan(), Guardrails(), None, replicas=0, address=None)  # type: ignore[arg-type]


def test_a_relative_log_path_is_made_absolute_and_a_server_url_is_kept(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert shared_log_target("serve.db") == str(tmp_path.resolve() / "serve.db")
    assert shared_log_target("sqlite:///logs/serve.db") == f"sqlite:///{tmp_path.resolve()}/logs/serve.db"
    assert shared_log_target("sqlite:////data/serve.db") == "sqlite:////data/serve.db"
    assert shared_log_target("postgresql://me@db/serve") == "postgresql://me@db/serve"


@pytest.mark.parametrize("log", ["/data/serve.db", "sqlite:////data/serve.db"])
def test_a_sqlite_log_on_a_multi_node_cluster_is_refused(log: str) -> None:
    with pytest.raises(ConfigError, match=r"SQLite file, which the replicas on the other nodes of the 2-node Ray "
                                          r"cluster at head:6379 cannot share: pass --log postgresql://"):
        _check_cluster(fake_ray(nodes=2, cpus=8), log, replicas=2, cpus=1, where="head:6379")


def test_a_server_database_or_one_node_is_accepted() -> None:
    _check_cluster(fake_ray(nodes=3, cpus=8), "postgresql://me@db/serve", replicas=2, cpus=1, where="head:6379")
    _check_cluster(fake_ray(nodes=1, cpus=8), "/data/serve.db", replicas=2, cpus=1, where="head:6379")


def test_more_replicas_than_the_cluster_has_cpus_is_refused_before_serve_waits_for_ever() -> None:
    with pytest.raises(ConfigError, match=r"--replicas 3 needs 6 CPUs \(2 each\) and the Ray cluster at head:6379 "
                                          r"has 4: lower --replicas or --threads"):
        _check_cluster(fake_ray(nodes=1, cpus=4), "postgresql://me@db/serve", replicas=3, cpus=2, where="head:6379")


def test_the_router_actor_resumes_a_logged_ramp_and_routes_with_it() -> None:
    plan = ServePlan(mode="canary", ramp=(5.0, 50.0, 100.0), step_requests=1)
    host = _RouterHost(plan, Guardrails(min_samples=1000), (Event("ramp", 50.0, "5% → 50%", 40),))
    assert host.state().percent == 50.0 and host.state().requests == 40
    host.route("user-1")
    [event] = host.observe(Observation("candidate", 1, 1, 1.0, 1.0))
    assert (event.kind, event.percent) == ("ramp", 100.0) and host.state().requests == 41
