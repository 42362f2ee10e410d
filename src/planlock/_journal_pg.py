"""The journal on PostgreSQL: the same chain, tables and migrations as the SQLite store.

Several processes on several machines may append at once: each append is one transaction that
first takes a transaction-scoped advisory lock for the journal's schema, then reads the head of
the chain and inserts the next event, so the chain never forks (``seq`` is also the primary
key). Triggers refuse UPDATE, DELETE and TRUNCATE on ``events``. ``psycopg`` (extra
``planlock[postgres]``) is imported only when a store is opened.

The DSN is a libpq URI; a schema other than ``public`` is chosen with libpq's ``options``
parameter, e.g. ``postgresql://u:p@127.0.0.1:54329/db?options=-csearch_path%3Dteam_a``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from planlock._errors import UsageError
from planlock._journal import (
    QUEUE_SQL,
    Event,
    JournalStore,
    SQLiteStore,
    _row_event,
    chain_next,
)
from planlock._plan import canonical_json

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresStore", "is_dsn", "open_store"]

DSN_PREFIXES = ("postgresql://", "postgres://")

_MIGRATIONS: tuple[tuple[str, str], ...] = (
    (
        "0001_events",
        """
        CREATE TABLE events (
            seq BIGINT PRIMARY KEY,
            run_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            at TEXT NOT NULL,
            data TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL
        );
        CREATE INDEX events_run ON events (run_id, seq);
        CREATE FUNCTION planlock_append_only() RETURNS trigger LANGUAGE plpgsql AS
            'BEGIN RAISE EXCEPTION ''the journal is append-only''; END';
        CREATE TRIGGER events_no_update BEFORE UPDATE OR DELETE ON events
            FOR EACH ROW EXECUTE FUNCTION planlock_append_only();
        CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
            FOR EACH STATEMENT EXECUTE FUNCTION planlock_append_only();
        """,
    ),
    ("0002_queue", QUEUE_SQL),
)

# Advisory lock keys, scoped to the current schema so that journals in different schemas of
# one database do not wait for each other.
_APPEND_LOCK = "SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.planlock_append'))"
_MIGRATE_LOCK = "SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.planlock_migrate'))"


def is_dsn(spec: str | Path) -> bool:
    """Whether ``spec`` names a PostgreSQL database rather than an SQLite file."""
    return isinstance(spec, str) and spec.startswith(DSN_PREFIXES)


def open_store(spec: str | Path) -> JournalStore:
    """An SQLite store for a file path, a PostgreSQL store for a ``postgresql://`` DSN."""
    if is_dsn(spec):
        return PostgresStore(str(spec))
    return SQLiteStore(spec)


def redact(dsn: str) -> str:
    """The DSN without its password, for messages."""
    head, sep, tail = dsn.rpartition("@")
    if not sep or "://" not in head:
        return dsn
    scheme, _, userinfo = head.partition("://")
    return f"{scheme}://{userinfo.split(':', 1)[0]}@{tail}"


def connect(dsn: str) -> psycopg.Connection[tuple[Any, ...]]:
    """An autocommit connection (transactions are explicit); a clear error if impossible."""
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


class PostgresStore:
    """The journal in a PostgreSQL database (the schema named by the DSN's search_path)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._db = connect(dsn)
        self._lock = threading.Lock()
        try:
            self._migrate()
        except Exception as exc:
            self._db.close()
            raise UsageError(f"cannot open journal {redact(dsn)}: {exc}") from None

    def _migrate(self) -> None:
        with self._db.transaction():
            self._db.execute(_MIGRATE_LOCK)
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, at TEXT)"
            )
            done = {r[0] for r in self._db.execute("SELECT name FROM migrations")}
            for name, sql in _MIGRATIONS:
                if name not in done:
                    self._db.execute(sql.encode())  # several statements, no parameters
                    self._db.execute(
                        "INSERT INTO migrations VALUES (%s, %s)",
                        (name, datetime.now(UTC).isoformat()),
                    )

    def append(self, run_id: str, kind: str, data: dict[str, Any]) -> Event:
        with self._lock, self._db.transaction():
            self._db.execute(_APPEND_LOCK)
            row = self._db.execute(
                "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1"
            ).fetchone()
            event = chain_next(row, run_id, kind, data)
            self._db.execute(
                "INSERT INTO events VALUES (%s, %s, %s, %s, %s, %s, %s)",
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

    def events(self, run_id: str | None = None, after: int = 0) -> Iterator[Event]:
        sql = "SELECT seq, run_id, kind, at, data, prev_hash, hash FROM events WHERE seq > %s"
        params: tuple[Any, ...] = (after,)
        if run_id is not None:
            sql += " AND run_id = %s"
            params += (run_id,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY seq", params).fetchall()
        for seq, rid, kind, at, data, prev, digest in rows:
            yield _row_event(seq, rid, kind, at, data, prev, digest)

    def close(self) -> None:
        self._db.close()

    def __del__(self) -> None:
        # The store owns its connection: close it with the store (psycopg warns otherwise).
        db = getattr(self, "_db", None)
        if db is not None and not db.closed:
            db.close()
