"""The journal (R10): append-only, hash-chained events in canonical JSON.

Each event's hash is the SHA-256 of its canonical JSON (sorted keys) *including the previous
event's hash*, so editing, inserting or deleting an event breaks the chain from there on.
``verify`` recomputes the chain and names the first bad event. Stores hold JSON only.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol, get_args

from pydantic import BaseModel, ConfigDict

from planlock._errors import JournalCorrupt, UsageError
from planlock._plan import canonical_json, sha256_hex

__all__ = [
    "EVENT_KINDS",
    "Event",
    "EventKind",
    "Journal",
    "JournalStore",
    "MemoryStore",
    "SQLiteStore",
    "VerifyReport",
    "verify_events",
]

EventKind = Literal[
    "run_started",
    "plan_created",
    "plan_validated",
    "plan_rejected",
    "risk_assessed",
    "approval_requested",
    "approval_granted",
    "approval_denied",
    "approval_refused",
    "llm_called",
    "step_started",
    "step_retrying",
    "step_finished",
    "step_failed",
    "step_skipped",
    "run_finished",
    "run_queued",
    "run_claimed",
    "approval_used",
    "approval_expired",
    "notification_sent",
    "notification_failed",
    "replanned",
    "checkpoint_reviewed",
    "http_request",
]
EVENT_KINDS: tuple[str, ...] = get_args(EventKind)
GENESIS = "0" * 64


class Event(BaseModel):
    """One journal entry."""

    model_config = ConfigDict(frozen=True)

    seq: int
    """Position in the journal, from 1, without gaps."""
    run_id: str
    """The run the event belongs to."""
    kind: EventKind
    """What happened."""
    at: str
    """When, as ISO 8601 UTC."""
    data: dict[str, Any]
    """The event's content (JSON)."""
    prev_hash: str
    """Hash of the previous event (64 zeros for the first)."""
    hash: str
    """SHA-256 of this event's canonical JSON, prev_hash included."""


def _content_hash(
    seq: int, run_id: str, kind: str, at: str, data: dict[str, Any], prev: str
) -> str:
    body = {"seq": seq, "run_id": run_id, "kind": kind, "at": at, "data": data, "prev_hash": prev}
    return sha256_hex(canonical_json(body))


def chain_next(last: tuple[int, str] | None, run_id: str, kind: str, data: dict[str, Any]) -> Event:
    """The event that follows ``last`` (its seq and hash)."""
    if kind not in EVENT_KINDS:
        raise UsageError(f"unknown event kind '{kind}'")
    seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
    at = datetime.now(UTC).isoformat(timespec="microseconds")
    digest = _content_hash(seq, run_id, kind, at, data, prev)
    return Event(seq=seq, run_id=run_id, kind=kind, at=at, data=data, prev_hash=prev, hash=digest)


class JournalStore(Protocol):
    """Where events live. Two methods; ``append`` must be atomic with respect to the chain."""

    def append(self, run_id: str, kind: str, data: dict[str, Any]) -> Event:
        """Chain and store a new event; return it."""
        ...

    def events(self, run_id: str | None = None, after: int = 0) -> Iterator[Event]:
        """Events in order, optionally of one run, with seq greater than ``after``."""
        ...


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

    def events(self, run_id: str | None = None, after: int = 0) -> Iterator[Event]:
        for e in list(self._events[after:]):
            if run_id is None or e.run_id == run_id:
                yield e


QUEUE_SQL = """
        CREATE TABLE runs (
            run_id TEXT PRIMARY KEY,
            plan TEXT NOT NULL,
            plan_hash TEXT NOT NULL,
            inputs TEXT NOT NULL,
            tools TEXT NOT NULL,
            policy TEXT NOT NULL,
            status TEXT NOT NULL,
            submitted_by TEXT NOT NULL,
            submitted_at TEXT NOT NULL,
            claimed_by TEXT,
            claimed_at TEXT,
            finished_at TEXT
        );
        CREATE INDEX runs_status ON runs (status, submitted_at);
        CREATE TABLE approvals (
            id TEXT PRIMARY KEY,
            run_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            plan_hash TEXT NOT NULL,
            step_id TEXT,
            args_hash TEXT,
            request TEXT NOT NULL,
            status TEXT NOT NULL,
            created_at TEXT NOT NULL,
            expires_at TEXT,
            decided_by TEXT,
            decided_via TEXT,
            decided_at TEXT,
            reason TEXT,
            used_at TEXT
        );
        CREATE INDEX approvals_status ON approvals (status, created_at);
        CREATE INDEX approvals_run ON approvals (run_id);
        """
"""The approval queue's tables: portable SQL, the same for SQLite and PostgreSQL."""

_MIGRATIONS: tuple[tuple[str, str], ...] = (
    (
        "0001_events",
        """
        CREATE TABLE events (
            seq INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            at TEXT NOT NULL,
            data TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL
        );
        CREATE INDEX events_run ON events (run_id, seq);
        CREATE TRIGGER events_no_update BEFORE UPDATE ON events
            BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END;
        CREATE TRIGGER events_no_delete BEFORE DELETE ON events
            BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END;
        """,
    ),
    ("0002_queue", QUEUE_SQL),
)


class SQLiteStore:
    """The embedded default: one SQLite file in WAL mode, safe across threads and processes.

    Each append is its own ``BEGIN IMMEDIATE`` transaction, so two processes appending to the
    same file keep one unbroken chain. UPDATE and DELETE are refused by triggers.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise UsageError(f"cannot open journal {self.path}: {exc}") from None
        self._lock = threading.Lock()

    def _migrate(self) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, at TEXT)")
            done = {r[0] for r in db.execute("SELECT name FROM migrations")}
            for name, sql in _MIGRATIONS:
                if name not in done:
                    for statement in _statements(sql):
                        db.execute(statement)
                    db.execute(
                        "INSERT INTO migrations VALUES (?, ?)",
                        (name, datetime.now(UTC).isoformat()),
                    )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def append(self, run_id: str, kind: str, data: dict[str, Any]) -> Event:
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute(
                    "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1"
                ).fetchone()
                event = chain_next(row, run_id, kind, data)
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
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return event

    def events(self, run_id: str | None = None, after: int = 0) -> Iterator[Event]:
        sql = "SELECT seq, run_id, kind, at, data, prev_hash, hash FROM events WHERE seq > ?"
        params: tuple[Any, ...] = (after,)
        if run_id is not None:
            sql += " AND run_id = ?"
            params += (run_id,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY seq", params).fetchall()
        for seq, rid, kind, at, data, prev, digest in rows:
            yield _row_event(seq, rid, kind, at, data, prev, digest)

    def close(self) -> None:
        self._db.close()


def _statements(sql: str) -> list[str]:
    """Split a migration into statements, keeping trigger bodies whole."""
    out: list[str] = []
    buf = ""
    for line in sql.strip().splitlines():
        buf += line + "\n"
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    return out


def _row_event(seq: int, rid: str, kind: Any, at: str, data: str, prev: str, digest: str) -> Event:
    try:
        parsed = json.loads(data)
        if not isinstance(parsed, dict):
            parsed = {"__not_an_object__": parsed}
    except json.JSONDecodeError:
        parsed = {"__unparseable__": data}
    return Event.model_construct(
        seq=seq, run_id=rid, kind=kind, at=at, data=parsed, prev_hash=prev, hash=digest
    )


@dataclass(frozen=True)
class VerifyReport:
    """The result of verifying a chain."""

    ok: bool
    count: int
    """Events checked."""
    first_bad: int | None = None
    """Sequence number of the first bad event."""
    reason: str = ""

    def raise_if_bad(self) -> None:
        if not self.ok:
            raise JournalCorrupt(self.first_bad or 0, self.reason)


def verify_events(events: Iterable[Event]) -> VerifyReport:
    """Recompute the hash chain; report the first event that does not match."""
    prev_seq, prev_hash, count = 0, GENESIS, 0
    for e in events:
        count += 1
        if e.seq != prev_seq + 1:
            return VerifyReport(
                False, count, e.seq, f"expected event {prev_seq + 1}, found {e.seq}"
            )
        if e.prev_hash != prev_hash:
            return VerifyReport(False, count, e.seq, "prev_hash does not match the previous event")
        if e.kind not in EVENT_KINDS:
            return VerifyReport(False, count, e.seq, f"unknown event kind '{e.kind}'")
        if _content_hash(e.seq, e.run_id, e.kind, e.at, e.data, e.prev_hash) != e.hash:
            return VerifyReport(False, count, e.seq, "content does not match its hash")
        prev_seq, prev_hash = e.seq, e.hash
    return VerifyReport(True, count)


class Journal:
    """A journal over a store: record events, read them, verify the chain."""

    def __init__(self, store: JournalStore | None = None) -> None:
        self.store: JournalStore = store if store is not None else MemoryStore()
        self.listeners: list[Callable[[Event], None]] = []
        """Called with every event this journal records (progress display, streaming)."""

    @classmethod
    def open(cls, path: str | Path) -> Journal:
        """A journal in an SQLite file (created if missing), or in PostgreSQL for a
        ``postgresql://`` DSN (see ``PostgresStore``)."""
        from planlock._journal_pg import open_store  # noqa: PLC0415  (imports this module)

        return cls(open_store(path))

    def record(self, run_id: str, kind: str, data: dict[str, Any]) -> Event:
        event = self.store.append(run_id, kind, data)
        for listener in self.listeners:
            listener(event)
        return event

    def events(self, run_id: str | None = None, after: int = 0) -> list[Event]:
        return list(self.store.events(run_id, after))

    def runs(self) -> list[str]:
        """Run ids in the order they started."""
        return [e.run_id for e in self.store.events() if e.kind == "run_started"]

    def verify(self) -> VerifyReport:
        return verify_events(self.store.events())
