"""The approval queue's connection to its tables, on SQLite or PostgreSQL.

The queue writes SQL once, with ``?`` placeholders; this layer runs it on either database.
On SQLite every transaction is ``BEGIN IMMEDIATE`` (one writer at a time for the whole file).
On PostgreSQL transactions run concurrently, so the queue adds the dialect's row locks where a
read decides a write: ``lock`` (``FOR UPDATE``) on the row it is about to change, and
``skip_locked`` when any free row will do (claiming a run: two workers never wait for, or take,
the same run).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any, Protocol

from planlock._errors import UsageError
from planlock._journal import JournalStore, SQLiteStore
from planlock._journal_pg import PostgresStore, connect

if TYPE_CHECKING:
    import psycopg

__all__ = ["QueueDB", "open_queue_db"]


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class QueueDB(Protocol):
    """A connection to the queue's tables."""

    lock: str
    """Appended to a SELECT whose rows the transaction will update."""
    skip_locked: str
    """Appended to a SELECT that takes any one free row."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor: ...

    def tx(self) -> AbstractContextManager[QueueDB]: ...

    def close(self) -> None: ...


class _SQLite:
    lock = ""
    skip_locked = ""

    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        return self._db.execute(sql, tuple(params))

    @contextmanager
    def tx(self) -> Iterator[QueueDB]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()


class _Postgres:
    lock = " FOR UPDATE"
    skip_locked = " FOR UPDATE SKIP LOCKED"

    def __init__(self, db: psycopg.Connection[tuple[Any, ...]]) -> None:
        self._db = db

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        # The queue's SQL has no other question marks (nor percent signs).
        return self._db.execute(sql.replace("?", "%s").encode(), tuple(params))

    @contextmanager
    def tx(self) -> Iterator[QueueDB]:
        with self._db.transaction():
            yield self

    def close(self) -> None:
        self._db.close()

    def __del__(self) -> None:
        # This object owns its connection: close it with the object (psycopg warns otherwise).
        db = getattr(self, "_db", None)
        if db is not None and not db.closed:
            db.close()


def open_queue_db(store: JournalStore) -> QueueDB:
    """A new connection to the database that holds ``store``'s journal."""
    if isinstance(store, SQLiteStore):
        return _SQLite(str(store.path))
    if isinstance(store, PostgresStore):
        return _Postgres(connect(store.dsn))
    raise UsageError("the approval queue needs a journal in an SQLite file or in PostgreSQL")
