"""The request log: rows come back as written, group commit shares transactions, reopening checks what it was for."""
from __future__ import annotations

import json
import sqlite3
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from optikit.errors import ConfigError
from optikit.serve.log import SCHEMA_VERSION, LogMeta, Prediction, RequestLog, RequestRecord
from optikit.serve.policy import Event

META = LogMeta(baseline="teacher", candidate="int8", baseline_path="/models/teacher", candidate_path="/models/int8",
               label_names=("cat", "dog", "owl"), mode="shadow", plan={"mode": "shadow", "ramp": []}, kind="text")


def record(i: int = 0, *, served: str = "baseline", candidate: bool = True, text: str | None = "a text") -> RequestRecord:
    return RequestRecord(id=uuid.uuid4().hex, ts=1_700_000_000.0 + i, served=served, key_hash=f"{i:016x}",
                         input_hash="ab" * 32, input=text,
                         baseline=Prediction(1, (0.1, 0.7, 0.2), 1.25 + i),
                         candidate=Prediction(2, (0.2, 0.3, 0.5), 0.5) if candidate else None)


@pytest.fixture
def log(tmp_path: Path):
    opened = RequestLog.open(tmp_path / "serve.db", META)
    yield opened
    opened.close()


def test_records_round_trip_exactly(log: RequestLog) -> None:
    rows = [record(0), record(1, served="candidate", text=None), record(2, candidate=False)]
    assert log.record(rows).result(timeout=30) is None
    assert log.records() == rows


def test_a_mirrored_prediction_arriving_later_joins_its_request(log: RequestLog) -> None:
    row = record(candidate=False)
    log.record([row]).result(timeout=30)
    log.add_prediction(row.id, "candidate", Prediction(0, (0.9, 0.05, 0.05), 3.5))
    log.add_prediction("unknown-id", "candidate", None, error="timeout")
    (back,) = log.records()
    assert back.candidate == Prediction(0, (0.9, 0.05, 0.05), 3.5)
    assert back.baseline == row.baseline
    assert log.mirror_errors() == {"unknown-id": "timeout"}


def test_feedback_is_true_for_a_logged_request_and_false_for_an_unknown_id(log: RequestLog) -> None:
    row = record()
    log.record([row])  # not awaited: feedback queued after it still finds it (one writer, in order)
    assert log.feedback(row.id, 2).result(timeout=30) is True
    assert log.feedback("no-such-request", 1).result(timeout=30) is False
    assert log.feedback(row.id, 0).result(timeout=30) is True  # a correction: the latest label wins
    assert log.labels() == {row.id: 0}


def test_frame_has_one_row_per_request_with_its_feedback(log: RequestLog) -> None:
    a, b = record(0), record(1, candidate=False)
    log.record([a, b]).result(timeout=30)
    log.feedback(a.id, 1).result(timeout=30)
    frame = log.frame().set_index("id")
    assert list(frame.index) == [a.id, b.id]
    assert frame.loc[a.id, "feedback_label"] == 1 and frame.loc[a.id, "candidate_label"] == 2
    assert frame.loc[b.id, "feedback_label"] != frame.loc[b.id, "feedback_label"]  # NaN: no feedback
    assert frame.loc[a.id, "baseline_probs"] == [0.1, 0.7, 0.2]


def test_events_and_counters_persist_across_reopening(tmp_path: Path) -> None:
    with RequestLog.open(tmp_path / "serve.db", META) as log:
        log.event(Event("ramp", 5.0, "1% → 5% after 200 requests, guardrails hold", 200))
        log.event(Event("rollback", 0.0, "agreement 0.62 < 0.90 on 40 mirrored requests", 240))
        for _ in range(3):
            log.bump("shadow_dropped")
        log.bump("shadow_dropped", 4)
    with RequestLog.open(tmp_path / "serve.db") as again:  # close drained the queue: nothing was awaited
        assert [(e.kind, e.percent, e.at_request) for e in again.events()] == [("ramp", 5.0, 200), ("rollback", 0.0, 240)]
        assert again.counters() == {"shadow_dropped": 7}
        assert again.meta == META


def test_concurrent_records_are_all_committed_in_shared_transactions(tmp_path: Path) -> None:
    path = tmp_path / "serve.db"
    log = RequestLog.open(path, META)
    try:
        before = log.transactions
        # Another connection holds the write lock while every caller queues its rows, so the writer cannot commit
        # them one by one: at most what it took before blocking goes alone, the rest shares one transaction.
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        with ThreadPoolExecutor(16) as pool:
            futures = list(pool.map(lambda i: log.record([record(i), record(i + 1000)]), range(64)))
        assert not any(f.done() for f in futures)  # not acknowledged before the commit
        blocker.execute("ROLLBACK")
        blocker.close()
        for f in futures:
            f.result(timeout=60)
        assert len(log.records()) == 128
        assert log.transactions - before <= 2 < 64
    finally:
        log.close()


def test_reopening_for_other_models_names_the_difference(tmp_path: Path) -> None:
    RequestLog.open(tmp_path / "serve.db", META).close()
    other = LogMeta("teacher", "pruned", "/models/teacher", "/models/pruned", META.label_names, "shadow")
    with pytest.raises(ConfigError, match=r"candidate 'int8' in the log, 'pruned' now.*new --log path"):
        RequestLog.open(tmp_path / "serve.db", other)


def test_a_log_of_an_older_schema_is_refused_in_one_line(tmp_path: Path) -> None:
    RequestLog.open(tmp_path / "serve.db", META).close()
    with sqlite3.connect(tmp_path / "serve.db") as conn:
        conn.execute("UPDATE meta SET schema_version = ?", (SCHEMA_VERSION - 1,))
    with pytest.raises(ConfigError, match="older optikit") as err:
        RequestLog.open(tmp_path / "serve.db", META)
    assert "\n" not in str(err.value)


def test_a_missing_folder_or_log_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist: create it"):
        RequestLog.open(tmp_path / "nowhere" / "serve.db", META)
    with pytest.raises(ConfigError, match="no request log at"):
        RequestLog.open(tmp_path / "serve.db")
    (tmp_path / "data.csv").write_text("text,label\nhello,1\n" * 200)
    with pytest.raises(ConfigError, match="not an SQLite request log"):
        RequestLog.open(tmp_path / "data.csv", META)


def test_the_sqlalchemy_path_writes_the_same_log(tmp_path: Path) -> None:
    pytest.importorskip("sqlalchemy")
    url = f"sqlite:///{tmp_path / 'serve.db'}"
    rows = [record(0), record(1)]
    with RequestLog.open(url, META) as log:
        log.record(rows).result(timeout=30)
        assert log.feedback(rows[0].id, 1).result(timeout=30) is True
        assert log.feedback("no-such-request", 1).result(timeout=30) is False
        log.bump("shadow_dropped", 2)
    with RequestLog.open(tmp_path / "serve.db") as plain:  # the same schema: the default reader opens it
        assert plain.records() == rows
        assert plain.labels() == {rows[0].id: 1}
        assert plain.counters() == {"shadow_dropped": 2}
    with pytest.raises(ConfigError, match="another comparison"):
        RequestLog.open(url, LogMeta("other", None, "/x", None, ("a", "b"), "single"))


def test_probabilities_and_metadata_are_stored_as_json(tmp_path: Path) -> None:
    with RequestLog.open(tmp_path / "serve.db", META) as log:
        log.record([record()]).result(timeout=30)
    with sqlite3.connect(tmp_path / "serve.db") as conn:
        (probs,) = conn.execute("SELECT baseline_probs FROM requests").fetchone()
        (body,) = conn.execute("SELECT body FROM meta").fetchone()
    assert json.loads(probs) == [0.1, 0.7, 0.2]
    assert json.loads(body)["label_names"] == ["cat", "dog", "owl"]


def test_writing_after_close_is_refused(log: RequestLog) -> None:
    log.close()
    with pytest.raises(RuntimeError, match="closed"):
        log.record([record()])
