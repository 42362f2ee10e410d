"""One connection layer for SQLite and PostgreSQL.

Every SQL statement in planlock is written once, with ``?`` placeholders, and runs on either
database through a ``Database``. On SQLite every transaction is ``BEGIN IMMEDIATE`` (one writer
at a time for the whole file). On PostgreSQL transactions run concurrently, so a caller adds the
dialect's row locks where a read decides a write: ``lock`` (``FOR UPDATE``) on the row it is
about to change, and ``skip_locked`` when any free row will do (two workers never wait for, or
take, the same run). ``serialize(name)`` takes a transaction-scoped lock named ``name`` (a no-op
on SQLite, where the transaction already holds the file's write lock).

``psycopg`` (extra ``planlock[postgres]``) is imported only when a PostgreSQL database is opened.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from planlock.db._pool import Pool, is_lost
from planlock.errors import ConnectionLost, UsageError

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "DSN_PREFIXES",
    "Cursor",
    "Database",
    "Dialect",
    "PostgresDB",
    "Rows",
    "SQLiteDB",
    "connect",
    "is_dsn",
    "pg_connect",
    "redact",
    "transact",
]

T = TypeVar("T")
Dialect = Literal["sqlite", "postgresql"]
DSN_PREFIXES = ("postgresql://", "postgres://")


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Database(Protocol):
    """A connection to planlock's tables: ``execute`` and ``tx``, whatever the database."""

    dialect: Dialect
    lock: str
    """Appended to a SELECT whose rows the transaction will update."""
    skip_locked: str
    """Appended to a SELECT that takes any one free row."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor: ...

    def script(self, sql: str) -> None:
        """Run several statements with no parameters (a migration)."""
        ...

    def tx(self) -> AbstractContextManager[Database]: ...

    def serialize(self, name: str) -> None:
        """Inside ``tx``: take the lock ``name``, held until the transaction ends."""
        ...

    def close(self) -> None: ...


def transact(
    db: Database,
    body: Callable[[Database], T],
    *,
    committed: Callable[[T], bool] | None = None,
    attempts: int = 5,
) -> T:
    """Run ``body`` in a transaction of ``db``; when the connection is lost, run it again on a
    new one (each attempt waits up to the reconnect wait for the database).

    A transaction lost before its COMMIT was sent left nothing behind, so it is simply retried.
    One lost *during* COMMIT may have been kept: ``committed(result)`` re-reads the database to
    tell (then ``result`` is returned as is, or the body runs again); without ``committed``,
    ``ConnectionLost`` is raised. ``body`` must not have effects outside the database."""
    for attempt in range(1, attempts + 1):
        result: list[T] = []
        try:
            with db.tx() as tx:
                result.append(body(tx))
            return result[0]
        except ConnectionLost as exc:
            if exc.commit_unknown and result:
                if committed is None:
                    raise
                if committed(result[0]):
                    return result[0]
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def is_dsn(spec: str | Path) -> bool:
    """Whether ``spec`` names a PostgreSQL database rather than an SQLite file."""
    return isinstance(spec, str) and spec.startswith(DSN_PREFIXES)


def redact(dsn: str) -> str:
    """The DSN without its password, for messages."""
    head, sep, tail = dsn.rpartition("@")
    if not sep or "://" not in head:
        return dsn
    scheme, _, userinfo = head.partition("://")
    return f"{scheme}://{userinfo.split(':', 1)[0]}@{tail}"


def connect(spec: str | Path) -> Database:
    """A new connection: PostgreSQL for a ``postgresql://`` DSN, else the SQLite file ``spec``."""
    if is_dsn(spec):
        return PostgresDB(str(spec))
    return SQLiteDB(spec)


_FILE_LOCKS: dict[Path, threading.RLock] = {}
_FILE_LOCKS_GUARD = threading.Lock()


def _file_lock(path: Path) -> threading.RLock:
    """One lock per database file in this process, shared by its connections: threads take
    turns (no busy-waiting on SQLite's file lock between connections of one process)."""
    key = path.resolve()
    with _FILE_LOCKS_GUARD:
        return _FILE_LOCKS.setdefault(key, threading.RLock())


class SQLiteDB:
    """An SQLite file in WAL mode, safe across threads (a statement or a transaction holds the
    file's lock in this process) and processes (SQLite's own locking)."""

    dialect: Dialect = "sqlite"
    lock = ""
    skip_locked = ""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._db = sqlite3.connect(
                self.path, isolation_level=None, timeout=30, check_same_thread=False
            )
            _wal(self._db)
            self._db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.DatabaseError as exc:
            raise UsageError(f"cannot open journal {self.path}: {exc}") from None
        self._lock = _file_lock(self.path)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        with self._lock:
            cur = self._db.execute(sql, tuple(params))
            return Rows(cur.fetchall(), cur.rowcount)

    def script(self, sql: str) -> None:
        with self._lock:
            for statement in _statements(sql):
                self._db.execute(statement)

    @contextmanager
    def tx(self) -> Iterator[Database]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def serialize(self, name: str) -> None:
        """``BEGIN IMMEDIATE`` already holds the file's only write lock."""

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _wal(db: sqlite3.Connection, timeout: float = 30) -> None:
    """Switch to WAL mode. SQLite does not wait on its busy timeout for this switch: when
    another process opens the same new file at the same moment, it fails at once with
    "database is locked" (seen with two workers started together). So: retry, bounded."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _statements(sql: str) -> list[str]:
    """Split a script into statements, keeping trigger bodies whole."""
    out: list[str] = []
    buf = ""
    for line in sql.strip().splitlines():
        buf += line + "\n"
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    return out


def pg_connect(dsn: str) -> psycopg.Connection[tuple[Any, ...]]:
    """An autocommit psycopg connection (transactions are explicit); a clear error if impossible."""
    try:
        import psycopg  # noqa: PLC0415  (optional dependency)
    except ImportError:
        raise UsageError(
            "a PostgreSQL journal needs psycopg: pip install 'planlock[postgres]'"
        ) from None
    try:
        return psycopg.connect(dsn, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        raise UsageError(f"cannot open journal {redact(dsn)}: {exc}".strip()) from None


class PostgresDB:
    """A PostgreSQL database (the schema named by the DSN's ``search_path``), through a pool of
    connections that survives a server restart (``planlock.db._pool``).

    Safe across threads: a transaction binds one connection to the thread that opened it (so
    ``execute`` on this object inside ``tx`` runs in that transaction, as with one connection);
    outside a transaction each statement takes a healthy connection and gives it back.

    When the connection breaks, nothing is retried blindly: a transaction whose COMMIT was not
    sent raises ``ConnectionLost(commit_unknown=False)`` (the server rolled it back); one that
    broke during COMMIT, or a write outside a transaction, raises it with ``commit_unknown=True``
    (the caller re-reads to know). A read outside a transaction is retried on a new connection.
    """

    dialect: Dialect = "postgresql"
    lock = " FOR UPDATE"
    skip_locked = " FOR UPDATE SKIP LOCKED"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.pool = Pool(dsn, redact(dsn), pg_connect(dsn))
        self._local = threading.local()

    def _bound(self) -> psycopg.Connection[tuple[Any, ...]] | None:
        conn: psycopg.Connection[tuple[Any, ...]] | None = getattr(self._local, "conn", None)
        return conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        # planlock's SQL has no other question marks (nor percent signs).
        query = sql.replace("?", "%s").encode()
        conn = self._bound()
        if conn is not None:
            return conn.execute(query, tuple(params))
        read = sql.lstrip()[:6].upper() == "SELECT" and " FOR UPDATE" not in sql
        for attempt in (1, 2):
            conn = self.pool.take()
            try:
                cur = conn.execute(query, tuple(params))
                return Rows(cur.fetchall() if cur.description else [], cur.rowcount)
            except Exception as exc:
                if not is_lost(conn):
                    raise
                if not read or attempt == 2:
                    raise self._lost(exc, commit_unknown=not read) from exc
            finally:
                self.pool.give(conn)
        raise AssertionError("unreachable")  # pragma: no cover

    def script(self, sql: str) -> None:
        self.execute(sql)  # several statements, no parameters (and no question marks)

    @contextmanager
    def tx(self) -> Iterator[Database]:
        outer = self._bound()
        if outer is not None:  # nested: a savepoint in the thread's transaction
            with outer.transaction():
                yield self
            return
        conn = self.pool.take()
        self._local.conn = conn
        sent_commit = False
        try:
            with conn.transaction():
                yield self
                sent_commit = True
        except Exception as exc:
            if is_lost(conn):
                raise self._lost(exc, commit_unknown=sent_commit) from exc
            raise
        finally:
            self._local.conn = None
            self.pool.give(conn)

    def _lost(self, exc: BaseException, *, commit_unknown: bool) -> ConnectionLost:
        cause = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return ConnectionLost(self.pool.where, cause, commit_unknown=commit_unknown)

    def serialize(self, name: str) -> None:
        # Scoped to the current schema, so journals in different schemas do not wait for each other.
        self.execute(
            "SELECT pg_advisory_xact_lock(hashtext(current_schema() || ?))", (f".planlock_{name}",)
        )

    def close(self) -> None:
        self.pool.close()

    def __del__(self) -> None:
        # This object owns its connections: close them with the object (psycopg warns otherwise).
        pool = getattr(self, "pool", None)
        if pool is not None:
            pool.close()


class Rows:
    """A statement's rows, read in full (the connection went back to its pool)."""

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self._next = 0
        self.rowcount = rowcount

    def fetchone(self) -> Any:
        if self._next >= len(self._rows):
            return None
        self._next += 1
        return self._rows[self._next - 1]

    def fetchall(self) -> list[Any]:
        rest, self._next = self._rows[self._next :], len(self._rows)
        return rest
