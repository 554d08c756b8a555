"""Serving: the HTTP app that routes each request to an arm, runs the other arm off the request path, logs both.

FastAPI, because its handlers are async (the event loop stays free while inference runs in threads), pydantic
validates request bodies, and the OpenAPI page comes for free; uvicorn serves it (or Ray Serve: ray_engine.py).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import math
import sys
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr

from optikit.config import require
from optikit.errors import ConfigError, OptikitError
from optikit.serve.log import Prediction, RequestLog, RequestRecord
from optikit.serve.metrics import ServeMetrics
from optikit.serve.models import InputError, ServedModel
from optikit.serve.policy import Arm, Decision, Event, Guardrails, Observation, Router, RouterState, ServePlan
from optikit.variant import Variant

KEY_HEADER = "x-user-key"
REMEMBERED_ANSWERS = 200_000  # ids whose answer is kept in memory so /feedback can judge it (about 30 MB)
DRAIN_S = 10.0  # at shutdown, how long mirrored calls still queued may finish before they are given up


@dataclass(frozen=True)
class ServeConfig:
    """Where and how `optikit serve` listens and logs."""

    host: str = "127.0.0.1"
    port: int = 8000
    log: str = "optikit-serve.db"  # a path or a SQLAlchemy URL
    log_inputs: bool = False  # the texts (or images as JSON) themselves; otherwise only their hash
    max_batch: int = 64  # examples in one /predict call; more is a 422
    threads: int | None = None  # inference threads per model (default: the runner's)

    def __post_init__(self) -> None:
        require(bool(self.host.strip()), "host must not be empty: use 127.0.0.1 (this machine only)")
        require(1 <= self.port <= 65535, f"port must be in 1..65535, got {self.port}")
        require(bool(str(self.log).strip()), "log must be a file path or a SQLAlchemy URL, got an empty one")
        require(self.max_batch >= 1, f"max_batch must be at least 1, got {self.max_batch}")
        require(self.threads is None or self.threads >= 1, f"threads must be at least 1, got {self.threads}")


class RouterLike(Protocol):
    """What the app needs of a router: policy.Router, or ray_engine's proxy to one router shared by replicas."""

    def route(self, key: str) -> Decision: ...
    def observe(self, obs: Observation) -> list[Event]: ...
    def feedback(self, served: Arm, correct: bool) -> list[Event]: ...
    def state(self) -> RouterState: ...


class PredictBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: list[Any] | None = None
    input: Any = None


class FeedbackBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: StrictStr
    label: StrictInt | StrictStr


def key_hash(key: str) -> str:
    """What the log keeps of a user's key: never the key itself."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def canonical_json(example: Any) -> str:
    return json.dumps(example, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def input_hash(example: Any) -> str:
    return hashlib.sha256(canonical_json(example).encode()).hexdigest()


def _failure(arm: str, exc: BaseException) -> str:
    first = (str(exc).splitlines() or [""])[0][:300]
    return f"{arm} failed: {type(exc).__name__}: {first}"


def _finite(value: Any) -> Any:
    """JSON has no NaN: a figure not known yet is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class _MirrorJob:
    ids: list[str]
    examples: list[Any]
    served: Arm  # the arm the router chose (whose answer the user got)
    served_predictions: list[Prediction]
    arm: Arm  # the arm to run off the request path


def check_pair(baseline: Variant, candidate: Variant | None, plan: ServePlan) -> None:
    """Refuses, in one line, a candidate that cannot be compared with the baseline, or a mode without one."""
    if plan.mode == "single" and candidate is not None:
        raise ConfigError(f"{candidate.name} is given without a mode: serve it with --shadow, --canary or --ab")
    if plan.mode != "single" and candidate is None:
        raise ConfigError(f"mode {plan.mode} needs a candidate: optikit serve BASELINE --{plan.mode} VARIANT")
    if candidate is None:
        return
    if candidate.task.kind != baseline.task.kind:
        raise ConfigError(f"{candidate.name} takes {candidate.task.kind} but {baseline.name} takes "
                          f"{baseline.task.kind}: serve a candidate made from the baseline")
    if candidate.task.label_names != baseline.task.label_names:
        raise ConfigError(f"{candidate.name} predicts labels ({', '.join(candidate.task.label_names)}) that differ "
                          f"from {baseline.name}'s ({', '.join(baseline.task.label_names)}): serve a candidate "
                          "made from the baseline (same labels, same order)")


class Service:
    """Everything one app holds: the models, the router, the log, the mirror queue, the metrics."""

    def __init__(self, baseline: Variant, candidate: Variant | None, plan: ServePlan, guardrails: Guardrails,
                 config: ServeConfig, log: RequestLog, router: RouterLike | None) -> None:
        check_pair(baseline, candidate, plan)
        self.plan, self.config, self.log = plan, config, log
        self.label_names = baseline.task.label_names
        # Both models load here, once, before the first request: a model that cannot load stops the start.
        self.models: dict[str, ServedModel | None] = {
            "baseline": ServedModel(baseline, config.threads),
            "candidate": ServedModel(candidate, config.threads) if candidate is not None else None}
        if router is None:
            local = Router(plan, guardrails)
            local.restore(log.events())  # a restart keeps the ramp and any rollback
            router = local
        self.router: RouterLike = router
        self.dropped = int(log.counters().get("shadow_dropped", 0))
        self.agreed = self.compared = 0
        self.feedback_counts: dict[str, list[int]] = {"baseline": [0, 0], "candidate": [0, 0]}  # correct, labelled
        self.answers: OrderedDict[str, tuple[str, int]] = OrderedDict()  # id -> (arm that answered, its label)
        self.metrics = ServeMetrics(self)
        self.queue: asyncio.Queue[_MirrorJob] | None = None
        self.worker: asyncio.Task[None] | None = None
        # Off-path work gets its own thread, so a slow mirrored model never holds a thread the served path needs.
        self.mirror_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="optikit-mirror")
        self._serving = 0  # requests on the served path now; the mirror worker runs only at 0 (see start)
        self.idle = asyncio.Event()  # set while _serving is 0
        self.idle.set()

    # -- lifecycle

    def start(self) -> None:
        # Mirrored calls wait until no request is being served: in one interpreter, the mirrored model's Python
        # steps and the served model's (an eager torch model runs Python between its kernels) take turns on the
        # GIL, so running them at once put the int8 shadow's whole inference time onto the served p50 (MiniLM on
        # 2 cores, 10 rps: server p50 11.1 → 15.3 ms). A backlog that outgrows the queue is dropped and counted.
        self.queue = asyncio.Queue(maxsize=self.plan.shadow_queue)
        self.worker = asyncio.get_running_loop().create_task(self._mirror_worker())

    async def stop(self) -> None:
        if self.queue is not None:
            try:
                await asyncio.wait_for(self.queue.join(), DRAIN_S)
            except TimeoutError:
                pass
        if self.worker is not None:
            self.worker.cancel()
        self.mirror_executor.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(self.log.close)  # drains the log's own queue: every answered row is committed

    # -- requests

    def examples(self, body: PredictBody) -> list[Any]:
        given = body.model_fields_set
        if ("inputs" in given) == ("input" in given):
            raise InputError('send {"inputs": [example, ...]} or {"input": example}, one of the two')
        examples = body.inputs if "inputs" in given else [body.input]
        if examples is None or not examples:
            raise InputError('"inputs" is empty: send at least one example')
        if len(examples) > self.config.max_batch:
            raise InputError(f"{len(examples)} inputs in one request, more than the limit of {self.config.max_batch}: "
                             "split them into smaller requests (or start the server with a larger --max-batch)")
        baseline = self.models["baseline"]
        assert baseline is not None
        baseline.check(examples)  # a bad input is the user's 422, never counted as a candidate error
        return examples

    async def answer(self, examples: list[Any], decision: Decision, key: str) -> dict[str, Any]:
        self._serving += 1
        self.idle.clear()
        try:
            return await self._answer(examples, decision, key)
        finally:
            self._serving -= 1
            if self._serving == 0:
                self.idle.set()

    async def _answer(self, examples: list[Any], decision: Decision, key: str) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        served: Arm = decision.served
        answered: Arm = served
        error: str | None = None
        model = self.models[served] or self.models["baseline"]
        assert model is not None
        try:
            predictions, ms = await loop.run_in_executor(None, model.predict, examples)
        except Exception as exc:
            if served == "baseline":
                raise
            # The user still gets an answer: the baseline's. The failure is logged and judged by the guardrails.
            error = _failure("candidate", exc)
            self.metrics.candidate_errors.inc(len(examples))
            answered = "baseline"
            baseline = self.models["baseline"]
            assert baseline is not None
            predictions, ms = await loop.run_in_executor(None, baseline.predict, examples)
        self.metrics.observe_inference(answered, ms, len(examples))
        self.metrics.requests.labels(answered).inc()
        ids = [uuid.uuid4().hex for _ in examples]
        now, hashed = time.time(), key_hash(key)
        # `served` stays the routed arm after a fallback (the user is in the candidate's cohort; `error` says why the
        # baseline answered), so the cohort's size and its error rate stay visible in the log.
        rows = [RequestRecord(id=i, ts=now, served=served, key_hash=hashed, input_hash=input_hash(x),
                              input=(x if isinstance(x, str) else canonical_json(x)) if self.config.log_inputs else None,
                              baseline=p if answered == "baseline" else None,
                              candidate=p if answered == "candidate" else None, error=error)
                for i, x, p in zip(ids, examples, predictions, strict=True)]
        committed = self.log.record(rows)  # queued before any mirrored result for these ids can be
        other: Arm = "candidate" if served == "baseline" else "baseline"
        mirrored = False
        if decision.mirror and error is None and self.models[other] is not None:
            mirrored = self._enqueue(_MirrorJob(ids, examples, served, predictions, other))
        if not mirrored:
            for p in predictions:
                self._observe(Observation(
                    served=served, baseline_label=p.label if answered == "baseline" else None,
                    candidate_label=p.label if answered == "candidate" else None,
                    baseline_ms=p.ms if answered == "baseline" else None,
                    candidate_ms=p.ms if answered == "candidate" else None, candidate_error=error is not None))
        await asyncio.wrap_future(committed)  # acknowledged only once the rows are in the log
        for i, p in zip(ids, predictions, strict=True):
            self.answers[i] = (answered, p.label)
        while len(self.answers) > REMEMBERED_ANSWERS:
            self.answers.popitem(last=False)
        return {"ids": ids, "labels": [self.label_names[p.label] for p in predictions],
                "label_ids": [p.label for p in predictions], "probabilities": [list(p.probs) for p in predictions],
                "arm": answered}

    def _enqueue(self, job: _MirrorJob) -> bool:
        assert self.queue is not None
        try:
            self.queue.put_nowait(job)
            return True
        except asyncio.QueueFull:
            # Never a delay to the user: the mirrored call is dropped and counted.
            self.dropped += len(job.ids)
            self.metrics.dropped.inc(len(job.ids))
            self.log.bump("shadow_dropped", len(job.ids))
            return False

    async def _mirror_worker(self) -> None:
        assert self.queue is not None
        while True:
            job = await self.queue.get()
            await self.idle.wait()
            try:
                await self._run_mirror(job)
            except Exception as exc:  # a bug in one mirrored call must not end mirroring for the rest
                print(f"optikit serve: {_failure('mirror', exc)}", file=sys.stderr, flush=True)
            finally:
                self.queue.task_done()

    async def _run_mirror(self, job: _MirrorJob) -> None:
        model = self.models[job.arm]
        assert model is not None
        error: str | None = None
        mirrored: list[Prediction | None]
        try:
            predictions, ms = await asyncio.get_running_loop().run_in_executor(
                self.mirror_executor, model.predict, job.examples)
            self.metrics.observe_inference(job.arm, ms, len(job.examples))
            mirrored = list(predictions)
        except Exception as exc:
            error = _failure(job.arm, exc)
            if job.arm == "candidate":
                self.metrics.candidate_errors.inc(len(job.examples))
            mirrored = [None] * len(job.examples)
        for request_id, served, other in zip(job.ids, job.served_predictions, mirrored, strict=True):
            self.log.add_prediction(request_id, job.arm, other, error)
            base, cand = (served, other) if job.arm == "candidate" else (other, served)
            self._observe(Observation(
                served=job.served, baseline_label=base.label if base else None,
                candidate_label=cand.label if cand else None, baseline_ms=base.ms if base else None,
                candidate_ms=cand.ms if cand else None, candidate_error=error is not None and job.arm == "candidate"))

    def _observe(self, obs: Observation) -> None:
        if obs.baseline_label is not None and obs.candidate_label is not None:
            self.compared += 1
            self.agreed += int(obs.baseline_label == obs.candidate_label)
        self.handle_events(self.router.observe(obs))

    def handle_events(self, events: Sequence[Event]) -> None:
        for event in events:
            self.log.event(event)
            print(f"optikit serve: {event.describe()}", flush=True)

    def label_id(self, label: int | str) -> int:
        names = self.label_names
        if isinstance(label, int):
            if not 0 <= label < len(names):
                raise InputError(f"label {label} is out of range: send 0..{len(names) - 1} or a name ({', '.join(names)})")
            return label
        if label not in names:
            raise InputError(f"unknown label {label!r}: send one of {', '.join(names)} (or its index)")
        return names.index(label)

    def feedback(self, request_id: str, label: int) -> None:
        """Counts a committed label for the arm whose answer the user got (once per id)."""
        seen = self.answers.pop(request_id, None)
        if seen is None:  # answered before a restart: logged, but the live counters start afresh
            return
        arm, predicted = seen
        counts = self.feedback_counts[arm]
        counts[0] += int(predicted == label)
        counts[1] += 1
        self.handle_events(self.router.feedback(arm, predicted == label))  # type: ignore[arg-type]

    def health(self) -> dict[str, Any]:
        state = self.router.state()
        out: dict[str, Any] = {"status": "ok", "mode": state.mode, "percent": state.percent,
                               "rolled_back": state.rolled_back, "requests": state.requests,
                               "shadow_dropped": self.dropped, "agreement": self.agreement(),
                               "guardrails": _finite(dict(state.guardrails))}
        if state.ab is not None:
            out["ab"] = _finite(asdict(state.ab))
        return out

    def agreement(self) -> float | None:
        return self.agreed / self.compared if self.compared else None

    def accuracy(self, arm: str) -> float | None:
        correct, labelled = self.feedback_counts[arm]
        return correct / labelled if labelled else None

    def report_html(self) -> str:
        from optikit.report.html import render_html
        from optikit.serve.live import live_results

        self.log.flush()
        return render_html(live_results(self.log))


def build_app(baseline: Variant, candidate: Variant | None, plan: ServePlan, guardrails: Guardrails,
              config: ServeConfig, log: RequestLog, router: RouterLike | None = None) -> FastAPI:
    """The app: loads both models now, routes with `router` (default: a local Router restored from the log's
    events), and closes (drains) the log when it shuts down."""
    service = Service(baseline, candidate, plan, guardrails, config, log, router)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(title="optikit serve", lifespan=lifespan)
    app.state.service = service

    @app.exception_handler(RequestValidationError)
    async def bad_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        sent = request.headers.get("content-type", "")
        if sent and "json" not in sent:  # curl -d sends a form: FastAPI reads JSON only when it is told so
            return JSONResponse({"detail": f"bad body: the request says Content-Type {sent}: send JSON with "
                                           "Content-Type: application/json"}, status_code=422)
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        shape = '{"id": "...", "label": "name" or index}' if request.url.path == "/feedback" else \
            '{"inputs": [example, ...]} or {"input": example}'
        return JSONResponse({"detail": f"bad body: {where}: {first.get('msg', 'invalid')}; send {shape}"},
                            status_code=422)

    @app.exception_handler(InputError)
    async def bad_input(request: Request, exc: InputError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.post("/predict")
    async def predict(body: PredictBody, request: Request) -> JSONResponse:
        examples = service.examples(body)
        key = request.headers.get(KEY_HEADER) or (request.client.host if request.client else "unknown")
        return JSONResponse(await service.answer(examples, service.router.route(key), key))

    @app.post("/feedback")
    async def feedback(body: FeedbackBody) -> JSONResponse:
        label = service.label_id(body.label)
        if not await asyncio.wrap_future(service.log.feedback(body.id, label)):
            return JSONResponse({"detail": f"unknown request id {body.id!r}: send an id that /predict returned"},
                                status_code=404)
        service.feedback(body.id, label)
        return JSONResponse({"ok": True})

    @app.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse(service.health())

    @app.get("/metrics")
    async def metrics() -> Response:
        body, content_type = service.metrics.render()
        return Response(body, media_type=content_type)

    @app.get("/report")
    async def report() -> Response:
        try:
            html = await asyncio.to_thread(service.report_html)
        except OptikitError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=409)
        return HTMLResponse(html)

    return app
