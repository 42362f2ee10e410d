"""planlock.journal: the append-only, hash-chained record of everything a run does (R10)."""

from planlock.journal._events import (
    EVENT_KINDS,
    GENESIS,
    Event,
    EventKind,
    VerifyReport,
    chain_next,
    row_event,
    verify_events,
)
from planlock.journal._journal import Journal
from planlock.journal._llm_event import llm_called
from planlock.journal._stores import (
    JournalStore,
    MemoryStore,
    PostgresStore,
    SQLiteStore,
    SQLStore,
    database_of,
    open_store,
)

__all__ = [
    "EVENT_KINDS",
    "GENESIS",
    "Event",
    "EventKind",
    "Journal",
    "JournalStore",
    "MemoryStore",
    "PostgresStore",
    "SQLStore",
    "SQLiteStore",
    "VerifyReport",
    "chain_next",
    "database_of",
    "llm_called",
    "open_store",
    "row_event",
    "verify_events",
]
