"""Serving: from `optikit serve`'s options to a running server (the plan, the two models, the log, uvicorn)."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from optikit.config import build_config
from optikit.errors import ConfigError, MissingDependencyError
from optikit.serve.policy import Guardrails, ServePlan
from optikit.variant import Variant

if TYPE_CHECKING:
    from optikit.serve.log import LogMeta

LOOPBACK = ("127.0.0.1", "localhost", "::1")
# Options that belong to one mode: given with another, they are refused, never silently dropped.
MODE_OPTIONS = {"percent": "canary", "ramp": "canary", "step_requests": "canary", "mirror_percent": "canary",
                "bandit": "ab"}


def parse_ramp(text: str | None) -> tuple[float, ...]:
    if not text:
        return ()
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"--ramp {text!r} is not a list of percents: write e.g. --ramp 1,5,25,50,100") from None


def parse_guardrails(items: Sequence[str]) -> Guardrails:
    """`--guardrail min_agreement=0.95` (repeatable) on top of the defaults."""
    options: dict[str, str] = {}
    for item in items:
        name, eq, value = item.partition("=")
        if not eq or not name.strip() or not value.strip():
            raise ConfigError(f"--guardrail {item!r}: write NAME=VALUE, e.g. --guardrail min_agreement=0.95")
        options[name.strip()] = value.strip()
    return build_config(Guardrails, options, "--guardrail")


def serve_plan(modes: Mapping[str, str | None], options: Mapping[str, Any]) -> tuple[ServePlan, str | None]:
    """The plan and the candidate spec from --shadow/--canary/--ab and the mode options given (None = not given)."""
    chosen = {mode: spec for mode, spec in modes.items() if spec}
    if len(chosen) > 1:
        raise ConfigError(f"--{' and --'.join(chosen)} given together: serve one candidate in one mode at a time")
    mode, candidate = next(iter(chosen.items())) if chosen else ("single", None)
    given = {k: v for k, v in options.items() if v is not None}
    for name in given:
        needs = MODE_OPTIONS.get(name)
        if needs is not None and needs != mode:
            raise ConfigError(f"--{name.replace('_', '-')} applies to --{needs} only")
    if "shadow_queue" in given and mode not in ("shadow", "canary"):
        raise ConfigError("--shadow-queue applies to --shadow and --canary only (the off-path calls)")
    if "ramp" in given:
        given["ramp"] = parse_ramp(given["ramp"])
    try:
        return ServePlan(mode=mode, **given), candidate  # type: ignore[arg-type]
    except TypeError as exc:
        raise ConfigError(f"serve: {exc}") from None


def describe(plan: ServePlan, baseline: Variant, candidate: Variant | None) -> str:
    if candidate is None:
        return f"serving {baseline.name}"
    if plan.mode == "shadow":
        return f"shadow: {baseline.name} answers, {candidate.name} runs beside it"
    if plan.mode == "canary":
        ramp = f", ramp {','.join(f'{p:g}' for p in plan.ramp)} every {plan.step_requests}" if plan.ramp else ""
        start = plan.percent if plan.percent > 0 else plan.ramp[0]
        return f"canary: {candidate.name} serves {start:g}% of users{ramp}, {baseline.name} the rest"
    bandit = " (Thompson bandit)" if plan.bandit == "thompson" else ""
    return f"A/B: {baseline.name} vs {candidate.name}{bandit}"


def url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def require_free_port(host: str, port: int) -> None:
    """A port already taken is one line before the models load, not uvicorn's traceback after."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror or exc}): pass another --port "
                              "or --host") from None


def serve_local(baseline: Variant, candidate: Variant | None, plan: ServePlan, guardrails: Guardrails,
                config: Any, echo: Callable[[str], None], warn: Callable[[str], None]) -> None:
    """Opens the log, loads both models, prints where it listens, and serves until interrupted (uvicorn)."""
    try:
        import uvicorn

        from optikit.serve.app import build_app
    except ImportError as exc:
        raise MissingDependencyError(exc.name or "fastapi", "serve") from None
    from optikit.serve.log import RequestLog

    require_free_port(config.host, config.port)
    log = RequestLog.open(config.log, log_meta(baseline, candidate, plan))
    try:
        app = build_app(baseline, candidate, plan, guardrails, config, log)
    except BaseException:
        log.close()
        raise
    if config.host not in LOOPBACK:
        warn(f"optikit serve: warning: listening on {config.host}: the API has no authentication; anyone who can "
             "reach this port can send requests and feedback")
    echo(f"optikit serve: {url(config.host, config.port)} ({describe(plan, baseline, candidate)}), log {config.log}")
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning", access_log=False)


def log_meta(baseline: Variant, candidate: Variant | None, plan: ServePlan) -> LogMeta:
    """What a log records about the models it holds; every replica reopens the log with the same, so the check on
    reopen passes for them and fails for a log of other models."""
    from optikit.serve.log import LogMeta

    return LogMeta(baseline=baseline.name, candidate=candidate.name if candidate else None,
                   baseline_path=str(baseline.path), candidate_path=str(candidate.path) if candidate else None,
                   label_names=tuple(baseline.task.label_names), mode=plan.mode, plan=dataclasses.asdict(plan),
                   kind=baseline.task.kind)
