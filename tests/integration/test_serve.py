"""`optikit serve` as a user runs it: a real server on 127.0.0.1, driven by optikit's replay, judged from its answers,
its /health and /metrics, and its request log."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from optikit.data import load_digits
from optikit.serve import replay as replay_module
from optikit.serve.log import RequestLog
from optikit.serve.policy import bucket
from optikit.serve.replay import Example, ReplaySettings, run_schedule
from optikit.variant import load_variant

START_S = 180.0  # generous: a busy 2-core machine imports torch slowly; nothing asserts on time
USERS = 40


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:  # only ever 127.0.0.1
        text = response.read().decode()
    return json.loads(text) if text.startswith("{") else text


class Server:
    """`optikit serve ARGS` in its own process; stopped gracefully (SIGTERM) or killed (SIGKILL) by the test."""

    def __init__(self, args: list[str], folder: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.output = folder / f"serve-{self.port}.out"
        with self.output.open("w") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "optikit.cli", "serve", *args, "--port", str(self.port), "--threads", "1"],
                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + START_S
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"optikit serve exited with {self.process.returncode}:\n{self.printed()}")
            try:
                self.health()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.kill()
                    raise AssertionError(f"optikit serve did not answer /health:\n{self.printed()}") from None
                time.sleep(0.2)

    def printed(self) -> str:
        return self.output.read_text() if self.output.exists() else ""

    def health(self) -> dict[str, Any]:
        return get(self.url + "/health")

    def metrics(self) -> dict[str, float]:
        values = {}
        for line in get(self.url + "/metrics").splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
        return values

    def settle(self, done: Any = None) -> dict[str, float]:
        """/metrics once `done(metrics)` holds (default: no mirrored call waiting), or after a minute."""
        done = done or (lambda m: m["optikit_shadow_queue_depth"] == 0)
        deadline = time.monotonic() + 60
        while True:
            time.sleep(0.2)  # a job the worker holds is out of the queue but may still run
            metrics = self.metrics()
            if done(metrics) or time.monotonic() > deadline:
                return metrics

    def stop(self) -> None:
        """SIGTERM: uvicorn shuts down, the app drains its mirror queue and closes (drains) the log."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Any]:
    """Starts servers for one test and stops every one of them afterwards, also when the test fails."""
    started: list[Server] = []

    def start(*args: str) -> Server:
        server = Server(list(args), tmp_path)
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


@pytest.fixture
def answers(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any], str, int, Any]]:
    """Every call replay makes, with the server's answer: (path, body, key, status, answer)."""
    seen: list[tuple[str, dict[str, Any], str, int, Any]] = []
    lock = threading.Lock()
    post = replay_module._Client.post

    def recording(self: Any, path: str, body: dict[str, Any], key: str) -> tuple[int, Any]:
        status, answer = post(self, path, body, key)
        with lock:
            seen.append((path, body, key, status, answer))
        return status, answer

    monkeypatch.setattr(replay_module._Client, "post", recording)
    return seen


def copy_variant(variant: Any, folder: Path, name: str, scramble: bool) -> Any:
    """A copy of `variant` under a new name; `scramble` shuffles its weights, so it disagrees with the original."""
    from safetensors.numpy import load_file, save_file

    target = folder / name
    shutil.copytree(variant.path, target)
    if scramble:
        weights = load_file(str(target / "model.safetensors"))
        rng = np.random.default_rng(0)
        save_file({k: rng.permutation(v.ravel()).reshape(v.shape) for k, v in weights.items()},
                  str(target / "model.safetensors"))
    manifest = json.loads((target / "variant.json").read_text())
    manifest.update(id=f"{name}-0000", name=name)
    (target / "variant.json").write_text(json.dumps(manifest))
    return load_variant(target)


@pytest.fixture(scope="module")
def candidates(digits_teacher: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("candidates")
    return {"same": copy_variant(digits_teacher, folder, "digits-same", scramble=False),
            "broken": copy_variant(digits_teacher, folder, "digits-broken", scramble=True)}


DIGITS = load_digits()


def examples(count: int, users: int = USERS) -> list[Example]:
    """Digits images as nested lists (1×8×8), their true labels, and `users` sticky users."""
    return [Example(DIGITS.inputs[i].tolist(), int(DIGITS.labels[i]), i, f"user-{i % users}") for i in range(count)]


def drive(url: str, count: int, rps: float = 150.0, feedback: bool = False, **settings: Any) -> Any:
    stats = run_schedule(examples(count), ReplaySettings(url, rps, duration=count / rps + 30, **settings),
                         user_col_keys=True, feedback=feedback)
    assert stats.answered > 0, stats.summary()
    return stats


def baseline_labels(teacher: Any, inputs: list[Any]) -> list[int]:
    from optikit.serve.models import ServedModel

    predictions, _ = ServedModel(teacher, threads=1).predict(inputs)
    return [p.label for p in predictions]


def predictions(seen: list[tuple[str, dict[str, Any], str, int, Any]]) -> list[tuple[Any, str, dict[str, Any]]]:
    """(input, key, answer) of every answered /predict call."""
    return [(body["inputs"][0], key, answer) for path, body, key, status, answer in seen
            if path == "/predict" and status == 200]


def test_shadow_serves_the_baseline_logs_both_models_and_counts_drops(
        servers: Any, answers: list[Any], digits_teacher: Any, candidates: dict[str, Any], tmp_path: Path) -> None:
    log_path = tmp_path / "shadow.db"
    server = servers(str(digits_teacher.path), "--shadow", str(candidates["broken"].path), "--log", str(log_path),
                     "--log-inputs", "--shadow-queue", "2")
    stats = drive(server.url, 200, rps=400.0, concurrency=16)
    metrics = server.settle(lambda m: m["optikit_compared"] + m["optikit_shadow_dropped_total"] == stats.answered)
    health = server.health()
    server.stop()

    served = predictions(answers)
    assert len(served) == stats.answered and stats.answers_by_arm == {"baseline": stats.answered}
    direct = baseline_labels(digits_teacher, [x for x, _, _ in served])
    assert [answer["label_ids"][0] for _, _, answer in served] == direct
    with RequestLog.open(log_path) as log:
        records, dropped = log.records(), log.counters().get("shadow_dropped", 0)
    assert len(records) == stats.answered
    missing = [r for r in records if r.candidate is None]
    assert all(r.served == "baseline" and r.baseline is not None for r in records)
    # every request not dropped holds both models; the drops are counted alike in the log, /metrics and /health
    assert len(missing) == dropped == metrics["optikit_shadow_dropped_total"] == health["shadow_dropped"]
    broken_labels = [r.candidate.label for r in records if r.candidate is not None]
    assert broken_labels, "with a queue of 2, most mirrored calls still run"
    assert metrics["optikit_compared"] == len(broken_labels)


def test_canary_keeps_each_user_on_one_arm_and_ramps_while_guardrails_hold(
        servers: Any, answers: list[Any], digits_teacher: Any, candidates: dict[str, Any], tmp_path: Path) -> None:
    log_path = tmp_path / "canary.db"
    # An identical candidate agrees everywhere; the p99 guardrail is off because on a shared machine two identical
    # models' tail latencies differ by chance, and this test is about the ramp, not about latency.
    server = servers(str(digits_teacher.path), "--canary", str(candidates["same"].path), "--ramp", "10,50,100",
                     "--step-requests", "10", "--guardrail", "max_p99_ratio=1000", "--log", str(log_path))
    drive(server.url, 240, rps=150.0, concurrency=4)
    server.settle()
    health = server.health()
    server.stop()

    arms: dict[str, list[str]] = defaultdict(list)
    for _, key, answer in predictions(answers):
        arms[key].append(answer["arm"])
    for key, sequence in arms.items():
        # sticky: a user in the first 10% is always the candidate's; one who joins later never goes back
        if bucket(key) < 10:
            assert set(sequence) == {"candidate"}, key
        first = sequence.index("candidate") if "candidate" in sequence else len(sequence)
        assert set(sequence[first:]) <= {"candidate"}, (key, sequence)
    with RequestLog.open(log_path) as log:
        events = log.events()
    assert [(e.kind, e.percent) for e in events] == [("ramp", 50.0), ("ramp", 100.0)]
    assert health["percent"] == 100 and health["rolled_back"] is None
    assert "canary: 10% → 50%" in server.printed()


def test_ab_statistic_matches_scipy_on_the_logged_outcomes_and_feedback_moves_live_accuracy(
        servers: Any, answers: list[Any], digits_teacher: Any, candidates: dict[str, Any], tmp_path: Path) -> None:
    from scipy.stats import chi2_contingency

    log_path = tmp_path / "ab.db"
    server = servers(str(digits_teacher.path), "--ab", str(candidates["broken"].path), "--log", str(log_path))
    before = server.metrics()
    stats = drive(server.url, 160, rps=150.0, feedback=True, concurrency=4)
    metrics, health = server.metrics(), server.health()
    page = get(server.url + "/report")
    server.stop()
    assert page.lstrip().lower().startswith("<!doctype html") and "digits-broken" in page

    assert stats.feedback_sent == stats.answered
    arms: dict[str, set[str]] = defaultdict(set)
    for _, key, answer in predictions(answers):
        arms[key].add(answer["arm"])
    assert all(len(a) == 1 for a in arms.values()), "a user key always lands on the same arm"
    assert set().union(*arms.values()) == {"baseline", "candidate"}
    with RequestLog.open(log_path) as log:
        records, truth = log.records(), log.labels()
    table = {"baseline": [0, 0], "candidate": [0, 0]}  # correct, wrong
    for r in records:
        prediction = r.baseline if r.served == "baseline" else r.candidate
        table[r.served][0 if prediction.label == truth[r.id] else 1] += 1
    chi2, p_value, _, _ = chi2_contingency([table["baseline"], table["candidate"]], correction=False)
    ab = health["ab"]
    assert ab["n_baseline"] == sum(table["baseline"]) and ab["n_candidate"] == sum(table["candidate"])
    assert ab["z"] ** 2 == pytest.approx(chi2, rel=1e-9)
    assert ab["p_value"] == pytest.approx(p_value, rel=1e-6, abs=1e-300)
    # /feedback moved the live accuracy from nothing to the logged one, per arm
    assert np.isnan(before['optikit_feedback_accuracy{arm="baseline"}'])
    for arm, (correct, wrong) in table.items():
        assert metrics[f'optikit_feedback_accuracy{{arm="{arm}"}}'] == pytest.approx(correct / (correct + wrong))


def test_a_killed_server_loses_no_acknowledged_row_and_keeps_its_rollback(
        servers: Any, answers: list[Any], digits_teacher: Any, candidates: dict[str, Any], tmp_path: Path) -> None:
    log_path = tmp_path / "killed.db"
    args = (str(digits_teacher.path), "--canary", str(candidates["broken"].path), "--percent", "50",
            "--step-requests", "20", "--guardrail", "min_samples=10", "--log", str(log_path))
    server = servers(*args)
    # The replay cycles the rows until it stops by itself; the server is killed well before that.
    settings = ReplaySettings(server.url, 150.0, duration=8.0, concurrency=8, loop=True)
    replaying = threading.Thread(target=run_schedule, args=(examples(300), settings),
                                 kwargs={"user_col_keys": True}, daemon=True)
    replaying.start()
    while not (len(predictions(answers)) >= 100 and server.health()["rolled_back"]):
        assert replaying.is_alive(), f"the replay ended before the rollback:\n{server.printed()}"
        time.sleep(0.05)
    server.kill()  # SIGKILL, mid-replay: no shutdown, no drain
    assert replaying.is_alive(), "killed mid-replay"
    assert "canary rolled back to 0%: agreement" in server.printed()

    again = servers(*args)
    health = again.health()
    again.stop()
    replaying.join(60)
    acknowledged = {i for _, _, answer in predictions(answers) for i in answer["ids"]}
    assert len(acknowledged) >= 100
    assert health["percent"] == 0 and health["rolled_back"].startswith("agreement")
    with RequestLog.open(log_path) as log:
        logged, events = {r.id for r in log.records()}, log.events()
    assert acknowledged - logged == set()
    assert [e.kind for e in events] == ["rollback"] and "agreement" in events[0].reason


def test_report_live_writes_the_bench_report_of_a_log(servers: Any, digits_teacher: Any, candidates: dict[str, Any],
                                                      tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.integration.conftest import run_cli

    log_path = tmp_path / "live.db"
    server = servers(str(digits_teacher.path), "--shadow", str(candidates["same"].path), "--log", str(log_path))
    drive(server.url, 40, feedback=True, concurrency=2)
    server.stop()
    out = tmp_path / "report"
    assert run_cli("report", "--live", str(log_path), "--out", str(out)) == 0
    assert {"results.json", "summary.md", "report.html"} <= {p.name for p in out.iterdir()}
    assert "digits-same" in (out / "summary.md").read_text()
    assert str(out / "report.html") in capsys.readouterr().out


@pytest.mark.parametrize(("args", "message"), [
    (["serve", "digits-cnn", "--shadow", "a", "--ab", "b"], "--shadow and --ab given together"),
    (["serve", "digits-cnn", "--percent", "5"], "--percent applies to --canary only"),
    (["serve", "digits-cnn", "--ab", "b", "--ramp", "1,5"], "--ramp applies to --canary only"),
    (["serve", "digits-cnn", "--canary", "b", "--ramp", "5,x"], "--ramp '5,x' is not a list of percents"),
    (["serve", "digits-cnn", "--guardrail", "min_agreement"], "write NAME=VALUE"),
    (["serve", "digits-cnn", "--guardrail", "min_agreemnt=0.9"], "unknown option 'min_agreemnt'"),
    (["serve", "digits-cnn", "--replicas", "2"], "--replicas and --address need --engine ray"),
    (["report"], "report needs RESULTS.json"),
    (["report", "results.json", "--live", "serve.db"], "--live takes the log alone"),
])
def test_serve_and_report_refuse_wrong_options_in_one_line(args: list[str], message: str,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from tests.integration.conftest import run_cli

    assert run_cli(*args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_serve_refuses_a_port_in_use_before_loading_models(digits_teacher: Any, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from tests.integration.conftest import run_cli

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        assert run_cli("serve", str(digits_teacher.path), "--port", port, "--log", str(tmp_path / "x.db")) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and "--port" in err
