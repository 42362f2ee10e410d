"""planlock.journal: the append-only, hash-chained record of everything a run does (R10)."""

from planlock.journal._anchor import (
    Anchor,
    Anchoring,
    anchor_mac,
    check_anchored,
    read_anchors,
)
from planlock.journal._events import (
    EVENT_KINDS,
    GENESIS,
    Event,
    EventKind,
    Head,
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
    insert_event,
    open_store,
)

__all__ = [
    "EVENT_KINDS",
    "GENESIS",
    "Anchor",
    "Anchoring",
    "Event",
    "EventKind",
    "Head",
    "Journal",
    "JournalStore",
    "MemoryStore",
    "PostgresStore",
    "SQLStore",
    "SQLiteStore",
    "VerifyReport",
    "anchor_mac",
    "chain_next",
    "check_anchored",
    "database_of",
    "insert_event",
    "llm_called",
    "open_store",
    "read_anchors",
    "row_event",
    "verify_events",
]
