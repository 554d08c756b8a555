"""Ray Serve engine (`optikit serve --replicas N --engine ray`): the same app on N replicas, which route with one
shared router (a named Ray actor) and write one request log."""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optikit.errors import ConfigError, MissingDependencyError

if TYPE_CHECKING:
    from optikit.serve.app import ServeConfig
    from optikit.serve.log import LogMeta
    from optikit.serve.policy import Arm, Decision, Event, Guardrails, Observation, RouterState, ServePlan
    from optikit.variant import Variant

ROUTER_ACTOR = "optikit-serve-router"
NAMESPACE = "optikit-serve"  # the router actor's; Serve keeps its own actors in its own namespace
APP_NAME = "optikit-serve"
DEPLOYMENT_NAME = "optikit-serve-app"
# Which replica answered: the only thing a client can see that tells N replicas apart (tests, load balancer checks).
REPLICA_HEADER = "X-Optikit-Replica"
# Ray 2.60 binds a local instance to the machine's outward address wherever multi-node clusters are on (the Linux
# default), even when told 127.0.0.1; with them off, every Ray process of a local instance listens on 127.0.0.1.
LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
LOOPBACK = "127.0.0.1"


def _ray(local: bool) -> Any:
    if local and "ray" not in sys.modules:
        # Read by Ray at import (ray_constants) and by the processes it starts, so it is set before both. Only for a
        # local instance: a driver of a real cluster must register under an address the other nodes reach.
        os.environ.setdefault(LOCAL_ONLY_ENV, "0")
    try:
        import ray
        from ray import serve  # noqa: F401 - ray without the serve extra imports, but cannot deploy
    except ImportError as exc:
        raise MissingDependencyError("ray[serve]", "serve-ray") from exc
    return ray


def is_url(target: str) -> bool:
    return "://" in target


def shared_log_target(log: str) -> str:
    """The log as every replica must name it: a file path, or a relative SQLite URL's, made absolute (a Ray
    worker's working directory is not the caller's); any other URL as given."""
    if not is_url(log):
        return str(Path(log).expanduser().resolve())
    scheme, sep, rest = log.partition(":///")
    path, query, options = rest.partition("?")
    if sep and scheme.split("+", 1)[0] == "sqlite" and path and not path.startswith("/") and path != ":memory:":
        return f"{scheme}:///{Path(path).expanduser().resolve()}{query}{options}"
    return log


def _is_sqlite(target: str) -> bool:
    return not is_url(target) or target.split("://", 1)[0].split("+", 1)[0] == "sqlite"


class _RouterHost:
    """The body of the router actor: one `policy.Router` that every replica asks, restored from the log's events so
    a restart keeps the ramp (and a rollback)."""

    def __init__(self, plan: ServePlan, guardrails: Guardrails, events: tuple[Event, ...]) -> None:
        from optikit.serve.policy import Router

        self.router = Router(plan, guardrails)
        self.router.restore(events)

    def route(self, key: str) -> Decision:
        return self.router.route(key)

    def observe(self, obs: Observation) -> list[Event]:
        return self.router.observe(obs)

    def feedback(self, served: Arm, correct: bool) -> list[Event]:
        return self.router.feedback(served, correct)

    def state(self) -> RouterState:
        return self.router.state()


class ActorRouter:
    """`app.RouterLike` over the router actor: each call is one round trip to the one Router every replica shares,
    so a canary ramp (or a rollback) is the same on all replicas. Events come back to the replica whose call caused
    them, which logs each once."""

    def __init__(self, actor: Any) -> None:
        self._actor = actor

    def _call(self, method: str, *args: Any) -> Any:
        import ray

        return ray.get(getattr(self._actor, method).remote(*args))

    def route(self, key: str) -> Decision:
        return self._call("route", key)  # type: ignore[no-any-return]

    def observe(self, obs: Observation) -> list[Event]:
        return self._call("observe", obs)  # type: ignore[no-any-return]

    def feedback(self, served: Arm, correct: bool) -> list[Event]:
        return self._call("feedback", served, correct)  # type: ignore[no-any-return]

    def state(self) -> RouterState:
        return self._call("state")  # type: ignore[no-any-return]


def _keep_replica_grpc_on_loopback() -> None:
    """Ray Serve 2.60 replicas open their inter-deployment gRPC server on [::]:0 (every interface; token-checked)
    whatever their node's address. On a node that lives on 127.0.0.1, as a local instance does, nothing off the
    machine may reach it, so it is bound there; on a real cluster it is left as Ray has it."""
    import ray

    try:
        from ray.serve._private import replica as replica_module
    except ImportError:
        return
    bind = getattr(replica_module, "add_port_to_grpc_server", None)
    if bind is None or getattr(bind, "loopback", False) or ray.util.get_node_ip_address() != LOOPBACK:
        return

    def bind_loopback(server: Any, address: str) -> Any:
        return bind(server, f"{LOOPBACK}:{address[5:]}" if address.startswith("[::]:") else address)

    bind_loopback.loopback = True  # type: ignore[attr-defined]
    replica_module.add_port_to_grpc_server = bind_loopback


def _replica_class(serve: Any) -> type:
    """The deployment class. Ray Serve needs an ingress app when the class is defined; ours is built per replica at
    start (models load there), which `@serve.ingress()` with `__serve_build_asgi_app__` allows (Ray 2.60)."""

    @serve.ingress()
    class OptikitReplica:
        def __init__(self, baseline: Variant, candidate: Variant | None, plan: ServePlan, guardrails: Guardrails,
                     config: ServeConfig, meta: LogMeta, router: Any) -> None:
            _keep_replica_grpc_on_loopback()  # before Serve starts that server, right after this constructor
            self._args = (baseline, candidate, plan, guardrails, config)
            self._meta = meta
            self._router = router

        def __serve_build_asgi_app__(self) -> Any:
            from optikit.serve.app import build_app
            from optikit.serve.log import RequestLog

            baseline, candidate, plan, guardrails, config = self._args
            log = RequestLog.open(config.log, self._meta)
            try:
                # From here the app owns the log: its shutdown (which Serve runs when the replica stops) drains it.
                app = build_app(baseline, candidate, plan, guardrails, config, log, router=ActorRouter(self._router))
            except BaseException:
                log.close()
                raise
            replica = serve.get_replica_context().replica_id.unique_id

            @app.middleware("http")
            async def name_the_replica(request: Any, call_next: Callable[[Any], Any]) -> Any:
                response = await call_next(request)
                response.headers[REPLICA_HEADER] = replica
                return response

            return app

    return OptikitReplica  # type: ignore[no-any-return]


def _connect(ray: Any, address: str | None, num_cpus: int) -> bool:
    """Connects to `address`, or starts a local instance on 127.0.0.1 without the dashboard; True when this call
    started or connected Ray (and must shut it down)."""
    if ray.is_initialized():
        return False
    if address is None:
        ray.init(_node_ip_address=LOOPBACK, include_dashboard=False, log_to_driver=False, num_cpus=num_cpus)
        return True
    from optikit.matrix.executors import connect_ray

    connect_ray(address)  # one line for an unreachable cluster or a refused token
    return True


def _check_cluster(ray: Any, target: str, replicas: int, cpus: int, where: str) -> None:
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) > 1 and _is_sqlite(target):
        raise ConfigError(f"the log {target} is a SQLite file, which the replicas on the other nodes of the {len(nodes)}-"
                          f"node Ray cluster at {where} cannot share: pass --log postgresql://USER@HOST/DB (a server "
                          "database every node reaches)")
    total = ray.cluster_resources().get("CPU", 0)
    if replicas * cpus > total:
        raise ConfigError(f"--replicas {replicas} needs {replicas * cpus} CPUs ({cpus} each) and the Ray cluster at "
                          f"{where} has {total:g}: lower --replicas or --threads, or add nodes")


def _serve_running() -> bool:
    # serve.status() reads the same for "not started" and "started, no application"; only the controller tells.
    from ray.serve.context import _get_global_client

    return _get_global_client(raise_if_no_controller_running=False) is not None


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (`kill`, a process manager) and SIGINT stop the server the way Ctrl+C does, wherever it is blocked.
    SIGINT is set explicitly too: a process started in the background by a non-interactive shell inherits it
    ignored, and Python then leaves it ignored, so Ctrl+C's signal (or `kill -INT`) would never stop the server."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.default_int_handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve_on_ray(baseline: Variant, candidate: Variant | None, plan: ServePlan, guardrails: Guardrails,
                 config: ServeConfig, *, replicas: int, address: str | None) -> None:
    """Serves `build_app(...)` on `replicas` Ray Serve replicas at http://HOST:PORT of `config` until interrupted.

    Every replica routes through one router actor (one canary ramp, one A/B split) and writes the same log: a
    SQLAlchemy URL, or on one machine the SQLite file (WAL lets several processes write it). `address` None starts
    a local Ray on 127.0.0.1 (stopped on exit); otherwise the cluster there is used, Serve is shut down on exit and
    the cluster keeps running.

    Example:
        serve_on_ray(load_variant("teacher"), load_variant("int8"), ServePlan("shadow"), Guardrails(),
                     ServeConfig(log="serve.db"), replicas=2, address=None)
    """
    import dataclasses

    from optikit.serve.log import RequestLog
    from optikit.serve.run import LOOPBACK as LOOPBACK_HOSTS
    from optikit.serve.run import log_meta, require_free_port

    if replicas < 1:
        raise ConfigError(f"--replicas must be at least 1, got {replicas}: pass --replicas 2")
    if config.host not in LOOPBACK_HOSTS:
        print(f"optikit serve: warning: listening on {config.host}: the API has no authentication; anyone who can "
              "reach this port can send requests and feedback", file=sys.stderr, flush=True)
    cpus = config.threads or 1
    if address is None or address.startswith((LOOPBACK, "localhost")):
        require_free_port(config.host, config.port)  # Serve's proxy would retry a taken port for ever
    config = dataclasses.replace(config, log=shared_log_target(config.log))
    meta = log_meta(baseline, candidate, plan)
    # Created (or checked against a log of other models) once, here, so a mismatch is one line before any replica.
    log = RequestLog.open(config.log, meta)
    try:
        events = tuple(log.events())
    finally:
        log.close()

    ray = _ray(local=address is None)
    from ray import serve

    with _sigterm_interrupts():
        _run(ray, serve, baseline, candidate, plan, guardrails, config, meta, events, replicas, cpus, address)


def _run(ray: Any, serve: Any, baseline: Variant, candidate: Variant | None, plan: ServePlan, guardrails: Guardrails,
         config: ServeConfig, meta: LogMeta, events: tuple[Event, ...], replicas: int, cpus: int,
         address: str | None) -> None:
    from optikit.serve.run import describe, url

    where = address or "a local Ray instance"
    owns_ray = owns_serve = False
    router = None
    try:
        owns_ray = _connect(ray, address, num_cpus=max(os.cpu_count() or 1, replicas * cpus))
        _check_cluster(ray, config.log, replicas, cpus, where)
        if _serve_running():
            raise ConfigError(f"Ray Serve already runs on the cluster at {where} (its HTTP host and port cannot "
                              "change): run `serve shutdown` there first, or pass another --address")
        try:
            router = ray.remote(num_cpus=0)(_RouterHost).options(name=ROUTER_ACTOR, namespace=NAMESPACE).remote(
                plan, guardrails, events)
        except ValueError as exc:  # Ray: the name is taken
            raise ConfigError(f"another `optikit serve --engine ray` runs on the cluster at {where} ({exc}): stop it "
                              "first") from None
        owns_serve = True
        serve.start(proxy_location="HeadOnly", http_options={"host": config.host, "port": config.port})
        deployment = serve.deployment(_replica_class(serve), name=DEPLOYMENT_NAME, num_replicas=replicas,
                                      ray_actor_options={"num_cpus": cpus})
        serve.run(deployment.bind(baseline, candidate, plan, guardrails, config, meta, router), name=APP_NAME,
                  route_prefix="/", blocking=False)
        print(f"optikit serve: {url(config.host, config.port)} ({describe(plan, baseline, candidate)}), {replicas} Ray "
              f"Serve replicas on {where}, log {config.log}; Ctrl+C stops", flush=True)
        while True:
            time.sleep(60)
    except KeyboardInterrupt:
        pass  # Ctrl+C or SIGTERM, even while the replicas start: the way to stop; Serve and Ray go below
    finally:
        if owns_serve:
            serve.shutdown()
        if router is not None:
            ray.kill(router)
        if owns_ray:
            ray.shutdown()
