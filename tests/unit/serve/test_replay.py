"""Replay: an open-loop load generator that only contacts the URL given, sends feedback and stops by itself."""
from __future__ import annotations

import json
import math
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest

from optikit.errors import ConfigError, DataError
from optikit.serve.replay import ReplayStats, load_examples, replay


class FakeApp:
    """A stdlib server on 127.0.0.1 that answers like `optikit serve` and records every request it receives."""

    def __init__(self, predict_status: int = 200, delay_s: float = 0.0, redirect_to: str | None = None) -> None:
        self.requests: list[dict] = []
        self.ids: set[str] = set()
        self.lock = threading.Lock()
        app = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with app.lock:
                    app.requests.append({"path": self.path, "key": self.headers.get("X-User-Key"),
                                         "host": self.headers.get("Host"), "body": body})
                time.sleep(delay_s)
                if redirect_to is not None:
                    self.send_response(307)
                    self.send_header("Location", redirect_to + self.path)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.path == "/predict":
                    ids = [uuid.uuid4().hex for _ in body["inputs"]]
                    with app.lock:
                        app.ids.update(ids)
                    self.answer(predict_status, {"ids": ids, "labels": ["a"] * len(ids), "label_ids": [0] * len(ids),
                                                 "probabilities": [[1.0, 0.0]] * len(ids), "arm": "baseline"})
                elif self.path == "/feedback":
                    self.answer(200 if body["id"] in app.ids else 404, {"ok": body["id"] in app.ids})
                else:
                    self.answer(404, {"detail": "not found"})

            def answer(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    def paths(self, path: str) -> list[dict]:
        return [r for r in self.requests if r["path"] == path]


@pytest.fixture
def serve_fake() -> Iterator:
    started: list[FakeApp] = []

    def start(**options) -> FakeApp:
        app = FakeApp(**options)
        app.thread.start()
        started.append(app)
        return app

    yield start
    for app in started:
        app.server.shutdown()
        app.server.server_close()


@pytest.fixture
def table(tmp_path: Path) -> Path:
    rows = [{"title": f"title {i}", "description": f"text {i}", "tag": ["mlops", "nlp", "cv"][i % 3],
             "user": f"u{i % 4}"} for i in range(30)]
    path = tmp_path / "test.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_replay_sends_every_row_once_and_feedback_with_its_true_label(serve_fake, table):
    app = serve_fake()
    stats = replay(table, app.url, rps=500, duration=30, text_cols=("title", "description"), label_col="tag",
                   feedback=True)
    assert (stats.sent, stats.answered, stats.errors, stats.dropped_late) == (30, 30, 0, 0)
    assert stats.feedback_sent == 30 and stats.answers_by_arm == {"baseline": 30}
    sent_texts = [r["body"]["inputs"] for r in app.paths("/predict")]
    assert sorted(sent_texts) == sorted([[f"title {i} text {i}"] for i in range(30)])
    # Each feedback names an id the server gave and the label of the row that id answered.
    label_of = {f"title {i} text {i}": ["mlops", "nlp", "cv"][i % 3] for i in range(30)}
    feedback = [r["body"] for r in app.paths("/feedback")]
    assert {f["id"] for f in feedback} == app.ids
    assert sorted(f["label"] for f in feedback) == sorted(label_of.values())
    assert math.isfinite(stats.client_p50_ms) and stats.client_p99_ms >= stats.client_p50_ms
    assert stats.to_dict()["answered"] == 30 and "\n" not in stats.summary() and "30 answered" in stats.summary()


def test_replay_without_feedback_sends_no_feedback(serve_fake, table):
    app = serve_fake()
    stats = replay(table, app.url, rps=500, duration=30, text_cols=("title",), label_col="tag")
    assert stats.feedback_sent == 0 and app.paths("/feedback") == []


def test_same_row_always_comes_from_the_same_user_key(serve_fake, table):
    app = serve_fake()
    replay(table, app.url, rps=500, duration=0.12, text_cols=("title",), users=7, loop=True)
    requests = app.paths("/predict")
    assert len(requests) > 30  # it cycled: some rows were sent twice
    keys: dict[str, set[str]] = {}
    for r in requests:
        keys.setdefault(r["body"]["inputs"][0], set()).add(r["key"])
    assert all(len(k) == 1 for k in keys.values())
    assert keys["title 8"] == {"user-1"}  # row 8 of 7 users


def test_user_column_gives_the_key_header(serve_fake, table):
    app = serve_fake()
    replay(table, app.url, rps=500, duration=30, text_cols=("title",), user_col="user")
    assert {(r["body"]["inputs"][0], r["key"]) for r in app.paths("/predict")} == {
        (f"title {i}", f"u{i % 4}") for i in range(30)}


def test_duration_bounds_the_number_of_slots_when_looping(serve_fake, table):
    app = serve_fake()
    stats = replay(table, app.url, rps=40, duration=0.5, text_cols=("title",), loop=True)
    assert stats.sent + stats.dropped_late == 20  # 0.5 s at 40 rps, then it stops by itself
    assert len(app.paths("/predict")) == stats.sent


def test_only_the_given_url_is_contacted_even_when_it_redirects(serve_fake, table):
    elsewhere = serve_fake()
    app = serve_fake(redirect_to=elsewhere.url)
    stats = replay(table, app.url, rps=500, duration=30, text_cols=("title",), label_col="tag", feedback=True)
    assert elsewhere.requests == []
    assert stats.errors == stats.sent == 30 and stats.answered == 0
    host = app.url.removeprefix("http://")
    assert {r["path"] for r in app.requests} == {"/predict"} and {r["host"] for r in app.requests} == {host}


def test_dead_url_counts_errors_instead_of_crashing(table):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    stats = replay(table, f"http://127.0.0.1:{port}", rps=500, duration=30, text_cols=("title",), concurrency=2)
    assert isinstance(stats, ReplayStats)
    assert stats.sent == 30 and stats.errors == 30 and stats.answered == 0
    assert math.isnan(stats.client_p50_ms) and stats.achieved_rps == 0


def test_http_error_answers_are_errors(serve_fake, table):
    app = serve_fake(predict_status=503)
    stats = replay(table, app.url, rps=500, duration=30, text_cols=("title",))
    assert stats.errors == 30 and stats.answered == 0


def test_sends_that_cannot_start_within_a_second_are_dropped_not_queued(serve_fake, table):
    app = serve_fake(delay_s=3.0)  # the one worker stays busy well past every later slot's second
    stats = replay(table, app.url, rps=100, duration=0.05, text_cols=("title",), concurrency=1)
    assert (stats.sent, stats.dropped_late) == (1, 4)
    assert len(app.paths("/predict")) == 1


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x", "file:///etc/passwd", "127.0.0.1:8000", "http://", ""])
def test_non_http_url_is_a_one_line_config_error(table, url):
    with pytest.raises(ConfigError) as info:
        replay(table, url, rps=1, duration=1, text_cols=("title",))
    assert "http" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("options,word", [({"rps": 0}, "rps"), ({"duration": -1}, "duration"),
                                          ({"concurrency": 0}, "concurrency")])
def test_bad_schedule_is_a_config_error(table, options, word):
    settings = {"rps": 1, "duration": 1, **options}
    with pytest.raises(ConfigError, match=word):
        replay(table, "http://127.0.0.1:1", text_cols=("title",), **settings)


def test_feedback_without_a_label_column_is_a_config_error(table):
    with pytest.raises(ConfigError, match="--label-col"):
        replay(table, "http://127.0.0.1:1", rps=1, duration=1, text_cols=("title",), feedback=True)


def test_table_without_text_columns_or_with_unknown_ones_is_a_data_error(table):
    with pytest.raises(DataError, match="--text-cols"):
        load_examples(table)
    with pytest.raises(DataError, match="no column 'body'"):
        load_examples(table, text_cols=("body",))


def test_examples_from_a_request_log_with_inputs(tmp_path):
    log_module = pytest.importorskip("optikit.serve.log")
    from optikit.serve.policy import ServePlan

    meta = log_module.LogMeta(baseline="teacher", candidate="int8", baseline_path="/t", candidate_path="/c",
                              label_names=("cv", "nlp"), mode="shadow", plan=ServePlan(mode="shadow").__dict__,
                              kind="text")
    log = log_module.RequestLog.open(tmp_path / "serve.db", meta)
    records = [log_module.RequestRecord(id=f"id{i}", ts=float(i), served="baseline", key_hash=f"k{i % 2}",
                                        input_hash=f"h{i}", input=f"text {i}",
                                        baseline=log_module.Prediction(i % 2, (0.5, 0.5), 1.0), candidate=None)
               for i in range(4)]
    log.record(records).result(timeout=30)
    assert log.feedback("id1", 0).result(timeout=30)
    log.close()
    examples = load_examples(tmp_path / "serve.db", user_col="key_hash")
    assert [e.input for e in examples] == [f"text {i}" for i in range(4)]
    assert [e.label for e in examples] == [None, 0, None, None]
    assert [e.key for e in examples] == ["k0", "k1", "k0", "k1"]
