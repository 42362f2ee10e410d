"""Where journal events live: in memory, or in SQL (an SQLite file, or PostgreSQL).

One ``SQLStore`` serves both databases through ``planlock.db``: each append is one transaction
that takes the journal's append lock (``BEGIN IMMEDIATE`` on SQLite, a transaction-scoped
advisory lock on PostgreSQL), reads the head of the chain and inserts the next event, so
several processes appending to one journal keep one unbroken chain (``seq`` is also the primary
key). UPDATE, DELETE (and on PostgreSQL TRUNCATE) are refused by triggers.

A PostgreSQL DSN is a libpq URI; a schema other than ``public`` is chosen with libpq's
``options`` parameter, e.g. ``postgresql://u:p@127.0.0.1:54329/db?options=-csearch_path%3Dteam_a``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from planlock.core import canonical_json
from planlock.db import (
    Database,
    PostgresDB,
    SQLiteDB,
    connect,
    is_dsn,
    migrate,
    redact,
    transact,
)
from planlock.errors import UsageError
from planlock.journal._events import GENESIS, Event, Head, chain_next, now, row_event

__all__ = [
    "Batching",
    "JournalStore",
    "MemoryStore",
    "Pending",
    "PostgresStore",
    "SQLStore",
    "SQLiteStore",
    "database_of",
    "open_store",
]


_HEAD_AT = "SELECT seq, hash, at FROM events ORDER BY seq DESC LIMIT 1"
_ROWS_PER_INSERT = 100
"""Rows per multi-row INSERT of a batch (7 parameters each: within SQLite's oldest limit, 999)."""


Pending = tuple[str, str, dict[str, Any], str, str | None]
"""An event not yet appended: run id, kind, data, ``at`` (when it was recorded), and the data's
canonical JSON when it was written already (None: the store writes it)."""


class JournalStore(Protocol):
    """Where events live. Two methods; ``append`` must be atomic with respect to the chain.
    A store may also have ``append_many`` (``Batching``): several events, one transaction."""

    def append(self, run_id: str, kind: str, data: dict[str, Any]) -> Event:
        """Chain and store a new event; return it."""
        ...

    def events(self, run_id: str | None = None, after: int = 0) -> Iterator[Event]:
        """Events in order, optionally of one run, with seq greater than ``after``."""
        ...


class Batching(Protocol):
    """A store that appends several events at once: in one transaction, all or none."""

    def append_many(self, events: list[Pending]) -> list[Event]: ...


class MemoryStore:
    """An in-memory journal store (tests, throwaway runs)."""

    def __init__(self) -> None:
        self._events: list[Event] = []
        self._lock = threading.Lock()

    def append(self, run_id: str, kind: str, data: dict[str, Any]) -> Event:
        with self._lock:
            last = (self._events[-1].seq, self._events[-1].hash) if self._events else None
            event = chain_next(last, run_id, kind, data)
            self._events.append(event)
            return event

    def append_many(self, events: list[Pending]) -> list[Event]:
        with self._lock:
            out: list[Event] = []
            for run_id, kind, data, at, text in events:
                last = (self._events[-1].seq, self._events[-1].hash) if self._events else None
                out.append(chain_next(last, run_id, kind, data, at=at, data_json=text))
                self._events.append(out[-1])
            return out

    def events(self, run_id: str | None = None, after: int = 0) -> Iterator[Event]:
        for e in list(self._events[after:]):
            if run_id is None or e.run_id == run_id:
                yield e

    def head(self) -> Head:
        with self._lock:
            last = self._events[-1] if self._events else None
        return Head(last.seq, last.hash) if last else Head(0, GENESIS)


class SQLStore:
    """The journal in a SQL database (``planlock.db``), with every planlock table beside it."""

    group_commit = True
    """``Journal.commit`` and ``Journal.defer`` batch events into one transaction (``_group``)."""

    spec: str | Path
    """What opens another connection to the same database (``planlock.db.connect``)."""

    def __init__(self, db: Database, spec: str | Path) -> None:
        self._db = db
        self.spec = spec
        self._lock = threading.Lock()
        try:
            migrate(db)
        except UsageError:
            db.close()
            raise
        except Exception as exc:
            db.close()
            where = redact(spec) if isinstance(spec, str) else spec
            raise UsageError(f"cannot open journal {where}: {exc}") from None

    def append(self, run_id: str, kind: str, data: dict[str, Any]) -> Event:
        """Chain and insert the next event. On PostgreSQL, when the connection is lost, the
        append is resolved, not re-sent blindly: if the event (its seq and hash) is in the
        database, the COMMIT went through; else it runs again on the new head."""
        return self.append_many([(run_id, kind, data, now(), None)])[0]

    def append_many(self, events: list[Pending]) -> list[Event]:
        """Chain and insert events in one transaction (one lock, one head read, one commit):
        all of them or none. The data of each is serialized once, for its hash and its row."""
        texts = [text if text is not None else canonical_json(d) for _, _, d, _, text in events]

        def insert(db: Database) -> list[Event]:
            db.serialize("append")
            row = db.execute(_HEAD_AT).fetchone()
            last = (row[0], row[1]) if row else None
            latest = str(row[2]) if row else ""
            out: list[Event] = []
            for (run_id, kind, data, at, _), text in zip(events, texts, strict=True):
                # ``at`` was taken when the event was recorded; another process may have
                # committed a later one meanwhile: the times stay in seq order.
                latest = max(latest, at)
                event = chain_next(last, run_id, kind, data, at=latest, data_json=text)
                last = (event.seq, event.hash)
                out.append(event)
            rows = [
                (e.seq, e.run_id, e.kind, e.at, text, e.prev_hash, e.hash)
                for e, text in zip(out, texts, strict=True)
            ]
            for i in range(0, len(rows), _ROWS_PER_INSERT):
                chunk = rows[i : i + _ROWS_PER_INSERT]
                values = ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * len(chunk))
                db.execute(f"INSERT INTO events VALUES {values}", [v for r in chunk for v in r])  # noqa: S608
            return out

        def stored(out: list[Event]) -> bool:
            last = out[-1]
            row = self._db.execute("SELECT hash FROM events WHERE seq = ?", (last.seq,)).fetchone()
            return row is not None and row[0] == last.hash

        if not events:
            return []
        with self._lock:
            return transact(self._db, insert, committed=stored)

    def events(self, run_id: str | None = None, after: int = 0) -> Iterator[Event]:
        sql = "SELECT seq, run_id, kind, at, data, prev_hash, hash FROM events WHERE seq > ?"
        params: tuple[Any, ...] = (after,)
        if run_id is not None:
            sql += " AND run_id = ?"
            params += (run_id,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY seq", params).fetchall()
        for seq, rid, kind, at, data, prev, digest in rows:
            yield row_event(seq, rid, kind, at, data, prev, digest)

    def head(self) -> Head:
        """The last event's seq and hash, read without loading the journal."""
        with self._lock:
            row = self._db.execute(
                "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1"
            ).fetchone()
        return Head(int(row[0]), str(row[1])) if row else Head(0, GENESIS)

    def close(self) -> None:
        self._db.close()


class SQLiteStore(SQLStore):
    """The embedded default: one SQLite file in WAL mode, safe across threads and processes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        super().__init__(SQLiteDB(self.path), self.path)


class PostgresStore(SQLStore):
    """The journal in a PostgreSQL database (the schema named by the DSN's search_path)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        super().__init__(PostgresDB(dsn), dsn)


def insert_event(db: Database, run_id: str, kind: str, data: dict[str, Any]) -> Event:
    """Chain and insert the next event inside the caller's transaction of ``db`` (a connection
    to the journal's database): the event is kept exactly when the caller's other writes are.
    Once it committed, pass it to ``Journal.recorded``."""
    db.serialize("append")
    row = db.execute(_HEAD_AT).fetchone()
    at = max(str(row[2]), now()) if row else now()  # times stay in seq order, as in append_many
    event = chain_next((row[0], row[1]) if row else None, run_id, kind, data, at=at)
    db.execute(
        "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            event.seq,
            event.run_id,
            event.kind,
            event.at,
            canonical_json(event.data),
            event.prev_hash,
            event.hash,
        ),
    )
    return event


def open_store(spec: str | Path) -> JournalStore:
    """An SQLite store for a file path, a PostgreSQL store for a ``postgresql://`` DSN."""
    if is_dsn(spec):
        return PostgresStore(str(spec))
    return SQLiteStore(spec)


def database_of(store: JournalStore) -> Database:
    """A new connection to the database that holds ``store``'s journal (the queue's and the
    durable engine's tables live beside it)."""
    if isinstance(store, SQLStore):
        return connect(store.spec)
    raise UsageError("the approval queue needs a journal in an SQLite file or in PostgreSQL")
