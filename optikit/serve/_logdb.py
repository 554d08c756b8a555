"""The request log's storage: its SQL (one dialect-neutral text for SQLite and PostgreSQL) and two backends that run
it, the standard library's sqlite3 for the default file and SQLAlchemy Core for a URL. `log.py` is the only user."""
from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol

from optikit.errors import ConfigError, MissingDependencyError

# Portable SQL (SQLite and PostgreSQL alike): DOUBLE PRECISION, since PostgreSQL's REAL is 4 bytes.
DDL = (
    "CREATE TABLE IF NOT EXISTS meta (id INTEGER PRIMARY KEY, schema_version INTEGER NOT NULL, body TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS requests (id TEXT PRIMARY KEY, ts DOUBLE PRECISION NOT NULL, served TEXT NOT NULL, "
    "key_hash TEXT NOT NULL, input_hash TEXT NOT NULL, input_text TEXT, baseline_label INTEGER, baseline_probs TEXT, "
    "baseline_ms DOUBLE PRECISION, candidate_label INTEGER, candidate_probs TEXT, candidate_ms DOUBLE PRECISION, "
    "error TEXT)",
    "CREATE TABLE IF NOT EXISTS predictions (request_id TEXT NOT NULL, arm TEXT NOT NULL, ts DOUBLE PRECISION NOT NULL, "
    "label INTEGER, probs TEXT, ms DOUBLE PRECISION, error TEXT)",
    "CREATE INDEX IF NOT EXISTS predictions_request ON predictions (request_id)",
    "CREATE TABLE IF NOT EXISTS feedback (request_id TEXT NOT NULL, label INTEGER NOT NULL, ts DOUBLE PRECISION NOT NULL)",
    "CREATE INDEX IF NOT EXISTS feedback_request ON feedback (request_id)",
    "CREATE TABLE IF NOT EXISTS events (ts DOUBLE PRECISION NOT NULL, kind TEXT NOT NULL, percent DOUBLE PRECISION "
    "NOT NULL, reason TEXT NOT NULL, at_request BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS counters (name TEXT NOT NULL, n BIGINT NOT NULL, ts DOUBLE PRECISION NOT NULL)",
)
COLUMNS = ("id", "ts", "served", "key_hash", "input_hash", "input_text", "baseline_label", "baseline_probs",
           "baseline_ms", "candidate_label", "candidate_probs", "candidate_ms", "error")
INSERT_REQUEST = f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES ({', '.join(':' + c for c in COLUMNS)})"
INSERT_PREDICTION = ("INSERT INTO predictions (request_id, arm, ts, label, probs, ms, error) "
                     "VALUES (:request_id, :arm, :ts, :label, :probs, :ms, :error)")
INSERT_FEEDBACK = "INSERT INTO feedback (request_id, label, ts) VALUES (:request_id, :label, :ts)"
INSERT_EVENT = ("INSERT INTO events (ts, kind, percent, reason, at_request) "
                "VALUES (:ts, :kind, :percent, :reason, :at_request)")
INSERT_COUNTER = "INSERT INTO counters (name, n, ts) VALUES (:name, :n, :ts)"


class Tx(Protocol):
    def run(self, sql: str, params: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> None: ...
    def first(self, sql: str, params: Mapping[str, Any]) -> tuple[Any, ...] | None: ...


class Database(Protocol):
    where: str  # for messages: the path, or the URL without its password

    def transaction(self) -> AbstractContextManager[Tx]: ...
    def read(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]: ...
    def tables(self) -> set[str]: ...
    def close(self) -> None: ...


class SqliteTx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def run(self, sql: str, params: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> None:
        if isinstance(params, Mapping):
            self.conn.execute(sql, params)
        else:
            self.conn.executemany(sql, params)

    def first(self, sql: str, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        row = self.conn.execute(sql, params).fetchone()
        return None if row is None else tuple(row)


class Sqlite:
    """A SQLite file through the standard library: no extra dependency for the default log."""

    def __init__(self, path: Path) -> None:
        self.path, self.where = path, str(path)
        self._writer: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # the write connection: one transaction at a time

    def _connect(self) -> sqlite3.Connection:
        # Autocommit mode with explicit BEGIN IMMEDIATE: the write lock is taken up front, so several writer
        # processes (Ray replicas on one machine) queue on busy_timeout instead of failing on a lock upgrade.
        conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self._lock:
            if self._writer is None:
                self._writer = self._connect()
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield SqliteTx(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def read(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.path, timeout=60.0)  # WAL: readers never wait for the writer
        try:
            return [tuple(row) for row in conn.execute(sql, params or {}).fetchall()]
        finally:
            conn.close()

    def tables(self) -> set[str]:
        return {str(r[0]) for r in self.read("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def close(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None


class SqlAlchemyTx:
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def run(self, sql: str, params: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> None:
        from sqlalchemy import text

        self.conn.execute(text(sql), params if isinstance(params, Mapping) else list(params))

    def first(self, sql: str, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        from sqlalchemy import text

        row = self.conn.execute(text(sql), params).first()
        return None if row is None else tuple(row)


class SqlAlchemy:
    """Any database SQLAlchemy reaches (sqlite:///…, postgresql://…), through Core with the same SQL."""

    def __init__(self, url: str) -> None:
        try:
            import sqlalchemy
        except ImportError:
            raise MissingDependencyError("sqlalchemy", "serve") from None
        try:
            parsed = sqlalchemy.make_url(url)
        except sqlalchemy.exc.ArgumentError:
            raise ConfigError("the log URL is not a SQLAlchemy URL: pass a path, or a URL such as sqlite:///serve.db "
                              "or postgresql://user@host/db") from None
        self.where = parsed.render_as_string(hide_password=True)
        try:
            self.engine = sqlalchemy.create_engine(parsed, pool_pre_ping=True)
        except ImportError as exc:
            raise ConfigError(f"the database driver for {self.where} is not installed ({exc}): pip install it (e.g. "
                              "'psycopg[binary]' for postgresql://)") from None
        except sqlalchemy.exc.ArgumentError as exc:
            raise ConfigError(f"cannot use the log URL {self.where} ({exc}): pass e.g. sqlite:///serve.db or "
                              "postgresql://user@host/db") from None
        if self.engine.dialect.name == "sqlite":
            self._sqlite_pragmas(sqlalchemy)
        self._lock = threading.Lock()

    def _sqlite_pragmas(self, sqlalchemy: Any) -> None:
        # The same settings as the default log; BEGIN IMMEDIATE for the reason Sqlite gives.
        @sqlalchemy.event.listens_for(self.engine, "connect")
        def _connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None
            for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=60000"):
                dbapi_conn.execute(f"PRAGMA {pragma}")

        @sqlalchemy.event.listens_for(self.engine, "begin")
        def _begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self._lock, self.engine.begin() as conn:
            yield SqlAlchemyTx(conn)

    def read(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(sql), dict(params or {}))]

    def tables(self) -> set[str]:
        import sqlalchemy

        try:  # the first contact with the server: an unreachable one is a one-line error, not a traceback
            return set(sqlalchemy.inspect(self.engine).get_table_names())
        except sqlalchemy.exc.DBAPIError as exc:
            raise ConfigError(f"cannot reach the log database {self.where} ({type(exc.orig).__name__}: "
                              f"{str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else ''}): "
                              "check the URL and that the server runs") from None

    def close(self) -> None:
        self.engine.dispose()


def sqlite_file(path: Path, create: bool) -> Sqlite:
    path = path.expanduser()
    if path.is_dir():
        raise ConfigError(f"the request log {path} is a folder: pass a file path such as {path / 'serve.db'}")
    if not path.parent.is_dir():
        raise ConfigError(f"the folder {path.parent} of the request log does not exist: create it "
                          f"(mkdir -p {path.parent}) or pass another --log path")
    if not create and not path.is_file():
        raise ConfigError(f"no request log at {path}: pass the --log file that optikit serve wrote")
    return Sqlite(path)
