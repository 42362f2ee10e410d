"""The journal (R10): record events, read them, verify the chain. Stores hold JSON only."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from planlock.journal._events import Event, VerifyReport, verify_events
from planlock.journal._stores import JournalStore, MemoryStore, open_store

__all__ = ["Journal"]


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
