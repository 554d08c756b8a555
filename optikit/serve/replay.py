"""Replay: a bounded, open-loop load generator that sends a file's (or a request log's) examples to one `optikit
serve` URL at a fixed rate, optionally with their true labels as feedback, and stops by itself."""
from __future__ import annotations

import http.client
import json
import math
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from optikit.config import require
from optikit.errors import ConfigError, DataError

# A send that cannot start within this many seconds of its slot is dropped, so a slow server never builds a backlog.
LATE_SECONDS = 1.0
SQLITE_MAGIC = b"SQLite format 3\x00"


@dataclass(frozen=True)
class Example:
    """One row to send: its input, its true label (None: no feedback for it) and its row number in the source."""

    input: Any
    label: int | str | None
    row: int
    key: str | None = None  # the user key from --user-col, if any


@dataclass(frozen=True)
class ReplaySettings:
    """The schedule and target of one replay, validated before anything is sent."""

    url: str
    rps: float
    duration: float
    users: int = 100
    concurrency: int = 16
    timeout: float = 10.0
    loop: bool = False

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        require(parts.scheme in ("http", "https") and bool(parts.hostname) and not parts.query and not parts.fragment,
                f"replay target {self.url!r} is not an http(s) URL: pass --to http://127.0.0.1:8000")
        require(math.isfinite(self.rps) and self.rps > 0, f"rps must be a positive number, got {self.rps}: pass --rps 20")
        require(math.isfinite(self.duration) and self.duration > 0,
                f"duration must be a positive number of seconds, got {self.duration}: pass --duration 60")
        require(self.users >= 1, f"users must be at least 1, got {self.users}: e.g. 100")
        require(self.concurrency >= 1, f"concurrency must be at least 1, got {self.concurrency}: e.g. 16")
        require(self.timeout > 0, f"timeout must be positive, got {self.timeout}: e.g. 10")


@dataclass(frozen=True)
class ReplayStats:
    """What one replay sent and got back, measured at the client."""

    url: str
    rps: float  # the rate asked for
    duration: float
    sent: int  # /predict calls started
    answered: int  # /predict calls answered with 200
    errors: int  # /predict calls that failed (an HTTP error status, a refused or broken connection, a timeout)
    dropped_late: int  # slots that could not start within LATE_SECONDS (every worker busy)
    feedback_sent: int  # /feedback calls answered with 200
    feedback_errors: int
    achieved_rps: float  # answered per second of the replay's wall time
    client_p50_ms: float  # NaN when nothing was answered
    client_p99_ms: float
    answers_by_arm: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    def summary(self) -> str:
        arms = ", ".join(f"{arm} {n}" for arm, n in sorted(self.answers_by_arm.items())) or "none"
        return (f"replay: {self.sent} sent to {self.url} at {self.rps:g} rps for up to {self.duration:g} s: "
                f"{self.answered} answered ({arms}), {self.errors} errors, {self.dropped_late} dropped late, "
                f"{self.feedback_sent} feedback; {self.achieved_rps:.1f} rps achieved, client p50 "
                f"{self.client_p50_ms:.1f} ms, p99 {self.client_p99_ms:.1f} ms")


def _is_request_log(source: str | Path) -> bool:
    if "://" in str(source):
        return True
    path = Path(source).expanduser()
    if not path.is_file():
        return False
    with path.open("rb") as handle:
        return handle.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC


def _label(value: Any) -> int | str | None:
    """A label as /feedback takes it: a class id or a label name; None where the row has none."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool):
        return str(value)
    if hasattr(value, "item"):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value if isinstance(value, int) else str(value)


def _log_examples(target: str | Path, user_col: str | None) -> list[Example]:
    from optikit.serve.log import RequestLog

    log = RequestLog.open(target)
    try:
        frame, kind = log.frame(), log.meta.kind
    finally:
        log.close()
    if frame.empty:
        raise DataError(f"request log {target} holds no requests: replay a log that served traffic, or a CSV")
    if frame["input"].isna().all():
        raise DataError(f"request log {target} has no inputs (written without --log-inputs): restart "
                        "`optikit serve` with --log-inputs, or replay the CSV the traffic came from")
    if user_col is not None and user_col not in frame.columns:
        raise DataError(f"request log {target} has no column {user_col!r}: its columns are {', '.join(frame.columns)}; "
                        "use --user-col key_hash to replay the logged users")
    examples = []
    for row, record in enumerate(frame.to_dict("records")):
        if record["input"] is None or (isinstance(record["input"], float) and math.isnan(record["input"])):
            continue
        value = json.loads(record["input"]) if kind == "image" else record["input"]
        key = str(record[user_col]) if user_col else None
        examples.append(Example(value, _label(record.get("feedback_label")), row, key))
    return examples


def _table_examples(path: Path, text_cols: tuple[str, ...], label_col: str | None,
                    user_col: str | None) -> list[Example]:
    from optikit.datafiles import detect_source, read_frame, table_columns

    if not text_cols:
        raise DataError(f"{path.name} is a table: name its text columns with --text-cols A,B")
    frame = read_frame(path, detect_source(path))
    table_columns(frame, path, (*text_cols, *((label_col,) if label_col else ()), *((user_col,) if user_col else ())))
    # Joined as optikit.data joins them, so the server sees the texts `bench` measured.
    texts = frame[list(text_cols)].fillna("").astype(str).agg(" ".join, axis=1).str.strip()
    labels = frame[label_col].tolist() if label_col else [None] * len(frame)
    keys = frame[user_col].astype(str).tolist() if user_col else [None] * len(frame)
    return [Example(text, _label(label), row, key)
            for row, (text, label, key) in enumerate(zip(texts, labels, keys, strict=True)) if text]


def load_examples(source: str | Path, *, text_cols: Sequence[str] = (), label_col: str | None = None,
                  user_col: str | None = None) -> list[Example]:
    """The examples of a table (CSV, TSV, Parquet, JSON Lines) or of a request log written with --log-inputs."""
    if _is_request_log(source):
        examples = _log_examples(source, user_col)
    else:
        examples = _table_examples(Path(source).expanduser(), tuple(text_cols), label_col, user_col)
    if not examples:
        raise DataError(f"{source} has no examples to send: every row's text is empty")
    return examples


class _Client:
    """One keep-alive connection per worker thread, to the one host the replay targets; never follows redirects
    and never goes through a proxy (http.client honours neither), so nothing else is ever contacted."""

    def __init__(self, url: str, timeout: float) -> None:
        parts = urlsplit(url)
        self.https = parts.scheme == "https"
        self.host, self.port = parts.hostname or "", parts.port
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self._local = threading.local()

    def post(self, path: str, body: dict[str, Any], key: str) -> tuple[int, Any]:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            kind = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
            conn = self._local.conn = kind(self.host, self.port, timeout=self.timeout)
        payload = json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json", "X-User-Key": key}
        try:
            conn.request("POST", self.prefix + path, body=payload, headers=headers)
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            self._local.conn = None
            raise
        try:
            return response.status, json.loads(data) if data else None
        except ValueError:
            return response.status, None


class _Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent = self.answered = self.errors = self.feedback_sent = self.feedback_errors = 0
        self.latencies_ms: list[float] = []
        self.arms: Counter[str] = Counter()


def _send(client: _Client, example: Example, key: str, feedback: bool, tally: _Tally) -> None:
    started = time.perf_counter()
    try:
        status, answer = client.post("/predict", {"inputs": [example.input]}, key)
    except (OSError, http.client.HTTPException):
        status, answer = 0, None
    elapsed_ms = (time.perf_counter() - started) * 1000
    ok = status == 200 and isinstance(answer, dict)
    with tally.lock:
        if not ok:
            tally.errors += 1
            return
        tally.answered += 1
        tally.latencies_ms.append(elapsed_ms)
        tally.arms[str(answer.get("arm", "unknown"))] += 1
    if not feedback or example.label is None:
        return
    for request_id in answer.get("ids") or []:
        try:
            fb_status, _ = client.post("/feedback", {"id": request_id, "label": example.label}, key)
        except (OSError, http.client.HTTPException):
            fb_status = 0
        with tally.lock:
            if fb_status == 200:
                tally.feedback_sent += 1
            else:
                tally.feedback_errors += 1


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    import numpy as np

    return float(np.percentile(values, q))


def run_schedule(examples: Sequence[Example], settings: ReplaySettings, *, user_col_keys: bool = False,
                 feedback: bool = False) -> ReplayStats:
    """Sends `examples` at fixed slots (slot i at i / rps seconds) from a pool of `concurrency` workers."""
    client = _Client(settings.url, settings.timeout)
    tally = _Tally()
    free = threading.Semaphore(settings.concurrency)
    dropped_late = 0

    def work(example: Example, key: str) -> None:
        try:
            _send(client, example, key, feedback, tally)
        finally:
            free.release()

    slots = math.ceil(settings.duration * settings.rps)
    if not settings.loop:
        slots = min(slots, len(examples))
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix="optikit-replay") as pool:
        for slot in range(slots):
            due = start + slot / settings.rps
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
                now = time.monotonic()
            wait = due + LATE_SECONDS - now
            if wait <= 0 or not free.acquire(timeout=wait):
                dropped_late += 1
                continue
            example = examples[slot % len(examples)]
            key = example.key if user_col_keys and example.key is not None else f"user-{example.row % settings.users}"
            with tally.lock:
                tally.sent += 1
            pool.submit(work, example, key)
    elapsed = max(time.monotonic() - start, 1e-9)
    return ReplayStats(settings.url, settings.rps, settings.duration, tally.sent, tally.answered, tally.errors,
                       dropped_late, tally.feedback_sent, tally.feedback_errors, tally.answered / elapsed,
                       _percentile(tally.latencies_ms, 50), _percentile(tally.latencies_ms, 99), dict(tally.arms))


def replay(source: str | Path, url: str, *, rps: float, duration: float, text_cols: Sequence[str] = (),
           label_col: str | None = None, feedback: bool = False, user_col: str | None = None, users: int = 100,
           concurrency: int = 16, seed: int = 0, loop: bool = False, timeout: float = 10.0) -> ReplayStats:
    """Replays a table's rows (or a request log's logged inputs) against `optikit serve` at `url`.

    Each row is one POST {url}/predict with header X-User-Key (from `user_col`, else `user-{row % users}`, so a
    row always comes from the same user); with `feedback`, each answered id gets POST {url}/feedback with the row's
    true label. Stops after `duration` seconds or when the rows run out (`loop` cycles them). `seed` shuffles
    the order of the rows (0 keeps the file's order).

        stats = replay("test.csv", "http://127.0.0.1:8000", rps=20, duration=60, text_cols=("title",),
                       label_col="tag", feedback=True)
        print(stats.summary())
    """
    settings = ReplaySettings(url, float(rps), float(duration), users, concurrency, timeout, loop)
    if feedback and label_col is None and not _is_request_log(source):
        raise ConfigError("feedback needs the true labels: pass --label-col with --feedback")
    examples = load_examples(source, text_cols=text_cols, label_col=label_col, user_col=user_col)
    if seed:
        import random

        examples = list(examples)
        random.Random(seed).shuffle(examples)
    return run_schedule(examples, settings, user_col_keys=user_col is not None, feedback=feedback)
