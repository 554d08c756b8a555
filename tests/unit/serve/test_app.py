"""The serving app, driven in-process through ASGI: what a client sees, what the log receives, what /metrics says."""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import json
import threading
from typing import Any

import pytest

from optikit.data import load_digits
from optikit.errors import ConfigError
from optikit.serve.app import ServeConfig, build_app, key_hash
from optikit.serve.policy import Guardrails, ServePlan


class MemoryLog:
    """A stand-in for RequestLog that keeps everything in memory: these tests are about the app, not storage."""

    def __init__(self) -> None:
        self.rows: dict[str, Any] = {}
        self.mirrored: list[tuple[str, str, Any, str | None]] = []
        self.labels: dict[str, int] = {}
        self.logged_events: list[Any] = []
        self.bumped: dict[str, int] = {}
        self.closed = False

    @staticmethod
    def _done(value: Any) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        future.set_result(value)
        return future

    def record(self, rows):
        self.rows.update({r.id: r for r in rows})
        return self._done(None)

    def add_prediction(self, request_id, arm, prediction, error=None) -> None:
        self.mirrored.append((request_id, arm, prediction, error))

    def feedback(self, request_id, label):
        known = request_id in self.rows
        if known:
            self.labels[request_id] = label
        return self._done(known)

    def event(self, event) -> None:
        self.logged_events.append(event)

    def events(self):
        return list(self.logged_events)

    def counters(self):
        return dict(self.bumped)

    def bump(self, name, n=1) -> None:
        self.bumped[name] = self.bumped.get(name, 0) + n

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


async def call(app, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
               raw: bytes | None = None, content_type: str = "application/json") -> tuple[int, Any]:
    """One HTTP request through the app's ASGI interface; returns (status, JSON body or text)."""
    payload = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"content-type", content_type.encode()), (b"host", b"testserver"),
                         *((k.lower().encode(), v.encode()) for k, v in (headers or {}).items())],
             "client": ("127.0.0.1", 50000), "server": ("testserver", 80)}
    sent = False
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": payload, "more_body": False}
        await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await app(scope, receive, send)
    status = next(m["status"] for m in messages if m["type"] == "http.response.start")
    text = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body").decode()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def serve(app, steps):
    """Runs `steps(app)` inside the app's lifespan (mirror worker started, log drained at the end)."""
    async def main():
        async with app.router.lifespan_context(app):
            return await steps(app)
    return asyncio.run(main())


def images(count: int, start: int = 0) -> list[list]:
    return load_digits().inputs[start:start + count].tolist()


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


@pytest.fixture(scope="module")
def broken_digits(digits_teacher, tmp_path_factory):
    """A copy of the digits teacher with its weights shuffled: same labels, different answers."""
    import shutil

    import numpy as np
    from safetensors.numpy import load_file, save_file

    from optikit.variant import load_variant

    folder = tmp_path_factory.mktemp("broken") / "digits-broken"
    shutil.copytree(digits_teacher.path, folder)
    weights = load_file(str(folder / "model.safetensors"))
    rng = np.random.default_rng(0)
    save_file({k: rng.permutation(v.ravel()).reshape(v.shape) for k, v in weights.items()},
              str(folder / "model.safetensors"))
    manifest = json.loads((folder / "variant.json").read_text())
    manifest.update(id="broken0000", name="digits-broken")
    (folder / "variant.json").write_text(json.dumps(manifest))
    return load_variant(folder)


def make(baseline, candidate, plan: ServePlan, log: MemoryLog | None = None, guardrails: Guardrails | None = None,
         **config: Any):
    log = log or MemoryLog()
    return build_app(baseline, candidate, plan, guardrails or Guardrails(), ServeConfig(**config), log), log


def test_shadow_serves_the_baselines_answer_and_logs_the_candidates_off_path(digits_teacher, broken_digits) -> None:
    app, log = make(digits_teacher, broken_digits, ServePlan(mode="shadow"))
    baseline_alone, _ = make(digits_teacher, None, ServePlan())

    async def steps(app):
        return [await call(app, "POST", "/predict", {"inputs": images(8)}) for _ in range(3)]

    answers = serve(app, steps)
    alone = serve(baseline_alone, lambda a: call(a, "POST", "/predict", {"inputs": images(8)}))
    for status, body in answers:
        assert status == 200
        assert body["arm"] == "baseline"
        assert body["label_ids"] == alone[1]["label_ids"]
        assert body["labels"] == [str(i) for i in body["label_ids"]]
    assert len(log.rows) == 24 and log.closed
    assert all(r.baseline is not None and r.candidate is None and r.served == "baseline" for r in log.rows.values())
    assert sorted(m[0] for m in log.mirrored) == sorted(log.rows)
    assert all(arm == "candidate" and p is not None for _, arm, p, _ in log.mirrored)
    assert {r.key_hash for r in log.rows.values()} == {key_hash("127.0.0.1")}


def test_a_bad_body_is_a_422_with_one_line(digits_teacher) -> None:
    app, _ = make(digits_teacher, None, ServePlan(), max_batch=4)

    async def steps(app):
        return [await call(app, "POST", "/predict", body) for body in (
            {"inputs": [[[0.0] * 8] * 8]}, {"inputs": images(5)}, {"inputs": images(1), "input": images(1)[0]},
            {"pixels": []}, {"inputs": []})] + [
            await call(app, "POST", "/predict", raw=b"{not json"),
            await call(app, "POST", "/predict", {"inputs": images(1)}, content_type="application/x-www-form-urlencoded")]

    replies = serve(app, steps)
    for status, body in replies:
        assert status == 422
        assert isinstance(body["detail"], str) and "\n" not in body["detail"], body
    shape, batch = replies[:2]
    assert "1×8×8" in shape[1]["detail"]
    assert "limit of 4" in batch[1]["detail"]
    assert "Content-Type: application/json" in replies[-1][1]["detail"]


def test_one_example_and_a_batch_both_answer(digits_teacher) -> None:
    app, log = make(digits_teacher, None, ServePlan())

    async def steps(app):
        return await call(app, "POST", "/predict", {"input": images(1)[0]})

    status, body = serve(app, steps)
    assert status == 200 and len(body["ids"]) == 1 and len(body["probabilities"][0]) == 10
    assert list(log.rows) == body["ids"]


def test_a_failing_candidate_falls_back_to_the_baseline_and_is_counted(digits_teacher, broken_digits) -> None:
    app, log = make(digits_teacher, broken_digits, ServePlan(mode="ab"))

    def fail(inputs):
        raise RuntimeError("candidate exploded")

    app.state.service.models["candidate"].predict = fail

    async def steps(app):
        out = [await call(app, "POST", "/predict", {"inputs": images(2)}, {"X-User-Key": f"user-{i}"})
               for i in range(20)]
        return out, (await call(app, "GET", "/metrics"))[1]

    answers, metrics = serve(app, steps)
    assert all(status == 200 and body["arm"] == "baseline" for status, body in answers)
    failed = [r for r in log.rows.values() if r.error]
    assert failed, "some user keys land on the candidate arm"
    assert all(r.served == "candidate" and "candidate exploded" in r.error and r.baseline is not None
               for r in failed)
    assert metric(metrics, "optikit_candidate_errors_total") == len(failed)


def test_a_full_mirror_queue_drops_and_counts_never_delays(digits_teacher, broken_digits) -> None:
    app, log = make(digits_teacher, broken_digits, ServePlan(mode="shadow", shadow_queue=1))
    service = app.state.service
    release = threading.Event()
    slow = service.models["candidate"].predict

    def held(inputs):
        release.wait(30)
        return slow(inputs)

    service.models["candidate"].predict = held

    async def steps(app):
        statuses = []
        for i in range(4):
            statuses.append((await call(app, "POST", "/predict", {"inputs": images(1, i)}))[0])
            for _ in range(100):  # let the worker take the first job before the next request
                if service.queue.qsize() == 0 or i > 0:
                    break
                await asyncio.sleep(0.01)
        metrics = (await call(app, "GET", "/metrics"))[1]
        health = (await call(app, "GET", "/health"))[1]
        release.set()
        return statuses, metrics, health

    statuses, metrics, health = serve(app, steps)
    assert statuses == [200] * 4
    # one job running, one waiting in the queue of 1, the other two dropped
    assert log.bumped == {"shadow_dropped": 2}
    assert metric(metrics, "optikit_shadow_dropped_total") == 2
    assert health["shadow_dropped"] == 2
    assert len(log.mirrored) == 2


def test_feedback_updates_the_live_accuracy_and_refuses_unknown_ids_and_labels(digits_teacher) -> None:
    app, log = make(digits_teacher, None, ServePlan())
    digits = load_digits()

    async def steps(app):
        _, body = await call(app, "POST", "/predict", {"inputs": digits.inputs[:10].tolist()})
        replies = [await call(app, "POST", "/feedback", {"id": i, "label": int(y)})
                   for i, y in zip(body["ids"], digits.labels[:10], strict=True)]
        replies += [await call(app, "POST", "/feedback", {"id": "nope", "label": 1}),
                    await call(app, "POST", "/feedback", {"id": body["ids"][0], "label": "eleven"}),
                    await call(app, "POST", "/feedback", {"id": body["ids"][0], "label": 10})]
        return body, replies, (await call(app, "GET", "/metrics"))[1]

    body, replies, metrics = serve(app, steps)
    assert [s for s, _ in replies[:10]] == [200] * 10
    assert [s for s, _ in replies[10:]] == [404, 422, 422]
    assert "/predict" in replies[10][1]["detail"]
    correct = sum(p == y for p, y in zip(body["label_ids"], digits.labels[:10], strict=True))
    assert metric(metrics, 'optikit_feedback_accuracy{arm="baseline"}') == pytest.approx(correct / 10)
    assert log.labels == dict(zip(body["ids"], (int(y) for y in digits.labels[:10]), strict=True))


def test_a_canary_rolls_back_a_disagreeing_candidate_and_logs_why(digits_teacher, broken_digits) -> None:
    plan = ServePlan(mode="canary", percent=50, ramp=(50, 100), step_requests=10)
    app, log = make(digits_teacher, broken_digits, plan, guardrails=Guardrails(min_samples=10))

    async def steps(app):
        for i in range(60):
            await call(app, "POST", "/predict", {"inputs": images(1, i)}, {"X-User-Key": f"user-{i}"})
        for _ in range(200):
            if app.state.service.queue.qsize() == 0:
                break
            await asyncio.sleep(0.01)
        return (await call(app, "GET", "/health"))[1]

    health = serve(app, steps)
    assert [e.kind for e in log.logged_events] == ["rollback"]
    assert "agreement" in log.logged_events[0].reason
    assert health["percent"] == 0 and "agreement" in health["rolled_back"]


def test_a_restarted_app_keeps_a_rollback_from_its_log(digits_teacher, broken_digits) -> None:
    from optikit.serve.policy import Event

    log = MemoryLog()
    log.logged_events.append(Event("rollback", 0.0, "agreement 0.100 < 0.9 on 40 mirrored requests", 7))
    app, _ = make(digits_teacher, broken_digits, ServePlan(mode="canary", percent=50), log=log)

    async def steps(app):
        answers = [await call(app, "POST", "/predict", {"inputs": images(1)}, {"X-User-Key": f"u{i}"})
                   for i in range(10)]
        return answers, (await call(app, "GET", "/health"))[1]

    answers, health = serve(app, steps)
    assert {body["arm"] for _, body in answers} == {"baseline"}
    assert health["rolled_back"].startswith("agreement")


def test_a_candidate_with_other_labels_is_refused_at_start(digits_teacher, broken_digits) -> None:
    relabelled = dataclasses.replace(broken_digits, task=dataclasses.replace(
        broken_digits.task, label_names=tuple("abcdefghij")))
    with pytest.raises(ConfigError, match="labels .* differ"):
        make(digits_teacher, relabelled, ServePlan(mode="shadow"))
    with pytest.raises(ConfigError, match="needs a candidate"):
        make(digits_teacher, None, ServePlan(mode="shadow"))


def test_serve_config_refuses_bad_settings_in_one_line() -> None:
    with pytest.raises(ConfigError, match="port"):
        ServeConfig(port=0)
    with pytest.raises(ConfigError, match="max_batch"):
        ServeConfig(max_batch=0)
