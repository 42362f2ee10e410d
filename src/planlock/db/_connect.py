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
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from planlock.errors import UsageError

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "DSN_PREFIXES",
    "Cursor",
    "Database",
    "Dialect",
    "PostgresDB",
    "SQLiteDB",
    "connect",
    "is_dsn",
    "pg_connect",
    "redact",
]

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


class SQLiteDB:
    """An SQLite file in WAL mode, safe across threads (callers serialize) and processes."""

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

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        return self._db.execute(sql, tuple(params))

    def script(self, sql: str) -> None:
        for statement in _statements(sql):
            self._db.execute(statement)

    @contextmanager
    def tx(self) -> Iterator[Database]:
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
    """A PostgreSQL database (the schema named by the DSN's ``search_path``)."""

    dialect: Dialect = "postgresql"
    lock = " FOR UPDATE"
    skip_locked = " FOR UPDATE SKIP LOCKED"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._db = pg_connect(dsn)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        # planlock's SQL has no other question marks (nor percent signs).
        return self._db.execute(sql.replace("?", "%s").encode(), tuple(params))

    def script(self, sql: str) -> None:
        self._db.execute(sql.encode())  # several statements, no parameters

    @contextmanager
    def tx(self) -> Iterator[Database]:
        with self._db.transaction():
            yield self

    def serialize(self, name: str) -> None:
        # Scoped to the current schema, so journals in different schemas do not wait for each other.
        self._db.execute(
            "SELECT pg_advisory_xact_lock(hashtext(current_schema() || %s))",
            (f".planlock_{name}",),
        )

    def close(self) -> None:
        self._db.close()

    def __del__(self) -> None:
        # This object owns its connection: close it with the object (psycopg warns otherwise).
        db = getattr(self, "_db", None)
        if db is not None and not db.closed:
            db.close()
