"""The journal (R10): record events, read them, verify the chain. Stores hold JSON only."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from planlock.db import redact
from planlock.journal._events import Event, VerifyReport, verify_events
from planlock.journal._stores import JournalStore, MemoryStore, open_store

__all__ = ["Journal"]

_log = logging.getLogger("planlock.journal")
_MILESTONES = frozenset(
    {
        "run_started",
        "run_finished",
        "run_claimed",
        "step_failed",
        "approval_requested",
        "approval_granted",
        "approval_denied",
        "replanned",
    }
)
"""Events logged at INFO (``-v``); every other event is logged at DEBUG (``-vv``)."""


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
        journal = cls(open_store(path))
        _log.info("journal: %s", redact(path) if isinstance(path, str) else path)
        return journal

    def record(self, run_id: str, kind: str, data: dict[str, Any]) -> Event:
        event = self.store.append(run_id, kind, data)
        level = logging.INFO if kind in _MILESTONES else logging.DEBUG
        if _log.isEnabledFor(level):
            _log.log(level, "run %s #%d %s %s", run_id, event.seq, kind, _brief(data))
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


def _brief(data: dict[str, Any]) -> str:
    """An event's data in one short line for the log (the journal holds all of it)."""
    keys = ("step", "tool", "status", "error_kind", "error", "by", "reason", "attempt")
    return " ".join(f"{k}={data[k]!r}"[:120] for k in keys if data.get(k) is not None)
