"""The request log: every served request, both models' answers, later feedback and the router's events, in SQLite
(WAL, group commit) or a server database given as a SQLAlchemy URL. `live.py` turns it into bench's comparison.

One writer thread per log drains a queue and commits every caller's rows waiting there in one transaction (group
commit); a caller's future completes only after that commit, so a request the server acknowledged is on disk. SQLite
runs in WAL mode with synchronous=NORMAL: a committed transaction survives the process being killed (only a power
cut can lose the last ones). Mirrored results arriving later go to their own append-only table instead of updating
the request's row: no acknowledged row is ever rewritten, and the two may arrive in either order. No pickle anywhere:
probabilities and the metadata are JSON text.
"""
from __future__ import annotations

import atexit
import dataclasses
import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optikit.errors import ConfigError
from optikit.serve._logdb import (
    COLUMNS,
    DDL,
    INSERT_COUNTER,
    INSERT_EVENT,
    INSERT_FEEDBACK,
    INSERT_PREDICTION,
    INSERT_REQUEST,
    Database,
    SqlAlchemy,
    Sqlite,
    sqlite_file,
)

if TYPE_CHECKING:
    import pandas

    from optikit.serve.policy import Event

SCHEMA_VERSION = 1
ARMS = ("baseline", "candidate")
MAX_GROUP = 4096  # queued writes per transaction: bounds how long one commit holds the database
_IDENTITY = ("baseline", "candidate", "label_names", "kind")  # what a reopened log must have been written for
_log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Prediction:
    label: int
    probs: tuple[float, ...]
    ms: float  # that model's inference time for this example's batch, per example


@dataclass(frozen=True)
class RequestRecord:
    id: str  # uuid4 hex, one per example (a batch request gets one id per example)
    ts: float  # time.time()
    served: str  # "baseline" | "candidate"
    key_hash: str  # sha256(key)[:16]
    input_hash: str  # sha256 of the example's canonical JSON
    input: str | None  # the text (or JSON of the image array) only with --log-inputs
    baseline: Prediction | None  # None where it did not run (yet: a mirrored result may come later)
    candidate: Prediction | None
    error: str | None = None  # an inference error of the served arm


@dataclass(frozen=True)
class LogMeta:
    """Written once when a log is created; a reopened log must be for the same models and labels."""

    baseline: str
    candidate: str | None  # variant names
    baseline_path: str
    candidate_path: str | None
    label_names: tuple[str, ...]
    mode: str
    plan: dict[str, Any] = field(default_factory=dict)  # dataclasses.asdict(ServePlan)
    kind: str = "text"  # "text" | "image"

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LogMeta:
        d = json.loads(text)
        return cls(str(d["baseline"]), d.get("candidate"), str(d.get("baseline_path", "")), d.get("candidate_path"),
                   tuple(str(x) for x in d.get("label_names") or ()), str(d.get("mode", "single")),
                   dict(d.get("plan") or {}), str(d.get("kind", "text")))


@dataclass
class _Write:
    kind: str  # requests | prediction | feedback | event | bump | flush
    params: Any
    future: Future[Any] | None = None


_STOP = _Write("stop", None)


def _prediction_params(p: Prediction | None) -> tuple[int | None, str | None, float | None]:
    return (None, None, None) if p is None else (int(p.label), json.dumps([float(x) for x in p.probs]), float(p.ms))


def _prediction(label: Any, probs: Any, ms: Any) -> Prediction | None:
    if label is None:
        return None
    return Prediction(int(label), tuple(float(x) for x in json.loads(probs or "[]")), float(ms or 0.0))


class RequestLog:
    """The log of one served comparison. Open it with `RequestLog.open`; close it (or use `with`) to drain it."""

    def __init__(self, db: Database, meta: LogMeta) -> None:
        self.meta, self.where, self._db = meta, db.where, db
        self.transactions = 0  # commits made by this log's writer: fewer than record() calls when they group
        self._queue: queue.SimpleQueue[_Write] = queue.SimpleQueue()
        self._closed = False
        self._gate = threading.Lock()  # nothing is queued after the stop marker
        self._writer = threading.Thread(target=self._drain, name="optikit-request-log", daemon=True)
        self._writer.start()
        atexit.register(self.close)  # a forgotten close still writes what was queued

    @classmethod
    def open(cls, target: str | Path, meta: LogMeta | None = None) -> RequestLog:
        """A path is a SQLite file, a URL with "://" a SQLAlchemy database. With `meta` the log is created if new,
        and must have been written for the same models and labels if not; without it the log must exist."""
        text = str(target)
        db: Database = SqlAlchemy(text) if "://" in text else sqlite_file(Path(text), create=meta is not None)
        try:
            return cls(db, _checked_meta(db, meta))
        except BaseException:
            db.close()
            raise

    # -- writes: queued to the writer thread -------------------------------------------------------------------

    def record(self, rows: Sequence[RequestRecord]) -> Future[None]:
        """Queues `rows`; the future completes once they are committed (await it before answering the request)."""
        params = []
        for r in rows:
            if r.served not in ARMS:
                raise ValueError(f"served must be baseline or candidate, got {r.served!r}")
            b_label, b_probs, b_ms = _prediction_params(r.baseline)
            c_label, c_probs, c_ms = _prediction_params(r.candidate)
            params.append({"id": r.id, "ts": float(r.ts), "served": r.served, "key_hash": r.key_hash,
                           "input_hash": r.input_hash, "input_text": r.input, "baseline_label": b_label,
                           "baseline_probs": b_probs, "baseline_ms": b_ms, "candidate_label": c_label,
                           "candidate_probs": c_probs, "candidate_ms": c_ms, "error": r.error})
        return self._put("requests", params, Future())

    def add_prediction(self, request_id: str, arm: str, prediction: Prediction | None, error: str | None = None) -> None:
        """A mirrored (off-path) result arriving after its request; queued, not awaited."""
        if arm not in ARMS:
            raise ValueError(f"arm must be baseline or candidate, got {arm!r}")
        label, probs, ms = _prediction_params(prediction)
        self._put("prediction", {"request_id": request_id, "arm": arm, "ts": time.time(), "label": label,
                                 "probs": probs, "ms": ms, "error": error})

    def feedback(self, request_id: str, label: int) -> Future[bool]:
        """The true label of an earlier request: True once committed, False for an id the log does not hold."""
        return self._put("feedback", {"request_id": request_id, "label": int(label), "ts": time.time()}, Future())

    def event(self, event: Event) -> None:
        self._put("event", {"ts": time.time(), "kind": event.kind, "percent": float(event.percent),
                            "reason": event.reason, "at_request": int(event.at_request)})

    def bump(self, name: str, n: int = 1) -> None:
        """Adds `n` to a persistent counter (e.g. shadow_dropped); bumps queued together are written as one row."""
        self._put("bump", (name, int(n)))

    def flush(self) -> None:
        """Returns once everything queued before it is committed."""
        if not self._closed:
            self._put("flush", None, Future()).result()

    def close(self) -> None:
        """Drains the queue (every queued write is committed), then releases the database."""
        with self._gate:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._writer.join()
        self._db.close()
        atexit.unregister(self.close)

    def __enter__(self) -> RequestLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _put(self, kind: str, params: Any, future: Future[Any] | None = None) -> Future[Any]:
        future = future if future is not None else Future()
        with self._gate:
            if self._closed:
                raise RuntimeError(f"the request log {self.where} is closed")
            self._queue.put(_Write(kind, params, future))
        return future

    def _drain(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < MAX_GROUP:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            work = [w for w in batch if w is not _STOP]
            if work:
                self._commit(work)
            if len(work) < len(batch):
                return

    def _commit(self, work: list[_Write]) -> None:
        if all(w.kind == "flush" for w in work):  # everything queued before them is already committed
            outcomes: list[Any] = [None] * len(work)
        else:
            try:
                outcomes = self._apply(work)
            except Exception as exc:
                if len(work) > 1:  # one bad write must not fail the others: each alone, in its own transaction
                    for w in work:
                        self._commit([w])
                    return
                if work[0].kind in ("prediction", "event", "bump"):  # nobody awaits these: say so
                    _log.warning("request log %s: a %s could not be written: %s", self.where, work[0].kind, exc)
                if work[0].future is not None:
                    work[0].future.set_exception(exc)
                return
            self.transactions += 1
        for w, outcome in zip(work, outcomes, strict=True):
            if w.future is not None:
                w.future.set_result(outcome)

    def _apply(self, work: list[_Write]) -> list[Any]:
        outcomes: list[Any] = []
        bumps: dict[str, int] = {}
        now = time.time()
        with self._db.transaction() as tx:
            for w in work:
                outcome: Any = None
                if w.kind == "requests" and w.params:
                    tx.run(INSERT_REQUEST, w.params)
                elif w.kind == "prediction":
                    tx.run(INSERT_PREDICTION, w.params)
                elif w.kind == "feedback":
                    # Same transaction as earlier-queued requests, so an id recorded just before is found.
                    outcome = tx.first("SELECT 1 FROM requests WHERE id = :id", {"id": w.params["request_id"]}) is not None
                    if outcome:
                        tx.run(INSERT_FEEDBACK, w.params)
                elif w.kind == "event":
                    tx.run(INSERT_EVENT, w.params)
                elif w.kind == "bump":
                    bumps[w.params[0]] = bumps.get(w.params[0], 0) + w.params[1]
                outcomes.append(outcome)
            if bumps:
                tx.run(INSERT_COUNTER, [{"name": k, "n": n, "ts": now} for k, n in bumps.items()])
        return outcomes

    # -- reads: what is committed (each read first commits what this process queued) ---------------------------

    def events(self) -> list[Event]:
        from optikit.serve.policy import Event

        self.flush()
        rows = self._db.read("SELECT kind, percent, reason, at_request FROM events ORDER BY ts, at_request")
        return [Event(kind, float(percent), str(reason), int(at)) for kind, percent, reason, at in rows]

    def counters(self) -> dict[str, int]:
        self.flush()
        return {str(name): int(n) for name, n in self._db.read("SELECT name, SUM(n) FROM counters GROUP BY name")}

    def labels(self) -> dict[str, int]:
        """The feedback label of each request that has one (the latest, when a request got several)."""
        self.flush()
        return {str(rid): int(label) for rid, label in
                self._db.read("SELECT request_id, label FROM feedback ORDER BY ts")}

    def mirror_errors(self) -> dict[str, str]:
        """The error of each mirrored (off-path) call that failed, by request id."""
        self.flush()
        return {rid: error for (rid, _), (_, error) in self._mirrored().items() if error is not None}

    def _mirrored(self) -> dict[tuple[str, str], tuple[Prediction | None, str | None]]:
        rows = self._db.read("SELECT request_id, arm, label, probs, ms, error FROM predictions ORDER BY ts")
        return {(str(rid), str(arm)): (_prediction(label, probs, ms), error)
                for rid, arm, label, probs, ms, error in rows}

    def _rows(self) -> tuple[list[RequestRecord], dict[str, str]]:
        """Every request with its mirrored result merged in, and the mirrored calls' errors by request id."""
        self.flush()
        mirrored = self._mirrored()
        records, mirror_errors = [], {}
        for row in self._db.read(f"SELECT {', '.join(COLUMNS)} FROM requests ORDER BY ts, id"):
            d = dict(zip(COLUMNS, row, strict=True))
            rid = str(d["id"])
            arms = {}
            for arm in ARMS:
                own = _prediction(d[f"{arm}_label"], d[f"{arm}_probs"], d[f"{arm}_ms"])
                late, error = mirrored.get((rid, arm), (None, None))
                arms[arm] = own or late
                if error is not None:
                    mirror_errors[rid] = error
            records.append(RequestRecord(rid, float(d["ts"]), str(d["served"]), str(d["key_hash"]),
                                         str(d["input_hash"]), d["input_text"], arms["baseline"], arms["candidate"],
                                         d["error"]))
        return records, mirror_errors

    def records(self) -> list[RequestRecord]:
        """Every request in time order, with mirrored results merged in; feedback labels are in `labels()`."""
        return self._rows()[0]

    def frame(self) -> pandas.DataFrame:
        """One row per request: ids, arms, both models' labels, per-example ms and probabilities, the served arm's
        error, a mirrored call's error, and the feedback label (NaN where none came)."""
        import pandas as pd

        records, mirror_errors = self._rows()
        labels = self.labels()
        nan = float("nan")
        rows = [{"id": r.id, "ts": r.ts, "served": r.served, "key_hash": r.key_hash, "input_hash": r.input_hash,
                 "input": r.input,
                 "baseline_label": r.baseline.label if r.baseline else nan, "baseline_ms": r.baseline.ms if r.baseline else nan,
                 "candidate_label": r.candidate.label if r.candidate else nan,
                 "candidate_ms": r.candidate.ms if r.candidate else nan, "error": r.error,
                 "mirror_error": mirror_errors.get(r.id), "feedback_label": labels.get(r.id, nan),
                 "baseline_probs": list(r.baseline.probs) if r.baseline else None,
                 "candidate_probs": list(r.candidate.probs) if r.candidate else None} for r in records]
        columns = ["id", "ts", "served", "key_hash", "input_hash", "input", "baseline_label", "baseline_ms",
                   "candidate_label", "candidate_ms", "error", "mirror_error", "feedback_label", "baseline_probs",
                   "candidate_probs"]
        return pd.DataFrame(rows, columns=columns)


def _read_meta(db: Database) -> tuple[int, LogMeta] | None:
    if "meta" not in db.tables():
        return None
    rows = db.read("SELECT schema_version, body FROM meta WHERE id = 1")
    if not rows:
        return None
    try:
        return int(rows[0][0]), LogMeta.from_json(str(rows[0][1]))
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"the request log {db.where} has unreadable metadata ({type(exc).__name__}): "
                          "pass a new --log path") from None


def _create(db: Database, meta: LogMeta) -> None:
    with db.transaction() as tx:
        if isinstance(db, Sqlite) and tx.first("SELECT 1 FROM sqlite_master WHERE name = 'meta'", {}) is None \
                and tx.first("SELECT 1 FROM sqlite_master WHERE type = 'table'", {}) is not None:
            raise ConfigError(f"{db.where} is an SQLite database but not an optikit request log: pass a new --log path")
        for ddl in DDL:
            tx.run(ddl, {})
        if tx.first("SELECT 1 FROM meta WHERE id = 1", {}) is None:
            tx.run("INSERT INTO meta (id, schema_version, body) VALUES (1, :version, :body)",
                   {"version": SCHEMA_VERSION, "body": meta.to_json()})


def _checked_meta(db: Database, meta: LogMeta | None) -> LogMeta:
    """The log's metadata, after creating it (with `meta`) or checking the log was written for the same comparison."""
    try:
        found = _read_meta(db)
        if found is None and meta is not None:
            try:
                _create(db, meta)
            except Exception:
                if _read_meta(db) is None:  # not a replica that created it at the same moment: a real failure
                    raise
            found = _read_meta(db)
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"{db.where} is not an SQLite request log ({exc}): pass the --log file that optikit "
                          "serve wrote, or a new path") from None
    if found is None:
        raise ConfigError(f"{db.where} holds no optikit request log: pass the --log that optikit serve wrote")
    version, stored = found
    if version < SCHEMA_VERSION:
        raise ConfigError(f"the request log {db.where} was written by an older optikit (log schema {version}, this one "
                          f"writes {SCHEMA_VERSION}): pass a new --log path")
    if version > SCHEMA_VERSION:
        raise ConfigError(f"the request log {db.where} was written by a newer optikit (log schema {version}, this one "
                          f"reads {SCHEMA_VERSION}): upgrade optikit, or pass a new --log path")
    if meta is not None:
        differs = [f"{name} {getattr(stored, name)!r} in the log, {getattr(meta, name)!r} now"
                   for name in _IDENTITY if getattr(stored, name) != getattr(meta, name)]
        if differs:
            raise ConfigError(f"the request log {db.where} was written for another comparison ({'; '.join(differs)}): "
                              "pass a new --log path, or serve the same models as before")
    return stored
