"""The journal (R10): record events, read them, verify the chain. Stores hold JSON only."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from planlock import telemetry
from planlock.db import redact
from planlock.journal._anchor import (
    CHECKPOINT_RUN,
    Anchor,
    Anchoring,
    append_anchor,
    check_anchored,
    checkpoint_data,
    read_anchors,
)
from planlock.journal._events import GENESIS, Event, Head, VerifyReport, verify_events
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


@runtime_checkable
class _HasHead(Protocol):
    def head(self) -> Head: ...


@runtime_checkable
class _Closable(Protocol):
    def close(self) -> None: ...


class Journal:
    """A journal over a store: record events, read them, verify the chain, anchor its head."""

    def __init__(
        self, store: JournalStore | None = None, anchoring: Anchoring | None = None
    ) -> None:
        self.store: JournalStore = store if store is not None else MemoryStore()
        self.anchoring = anchoring if anchoring is not None else Anchoring()
        """When and where the head is anchored (nothing by default; see ``Anchoring``)."""
        self.listeners: list[Callable[[Event], None]] = []
        """Called with every event this journal records (progress display, streaming)."""
        self._unanchored = False
        self._anchor_lock = threading.Lock()

    @classmethod
    def open(cls, path: str | Path, anchoring: Anchoring | None = None) -> Journal:
        """A journal in an SQLite file (created if missing), or in PostgreSQL for a
        ``postgresql://`` DSN (see ``PostgresStore``). Without ``anchoring``, it is read from
        the environment (``Anchoring.from_env``: ``PLANLOCK_ANCHOR_KEY``...)."""
        anchoring = Anchoring.from_env() if anchoring is None else anchoring
        journal = cls(open_store(path), anchoring)
        _log.info("journal: %s", redact(path) if isinstance(path, str) else path)
        return journal

    def record(self, run_id: str, kind: str, data: dict[str, Any]) -> Event:
        event = self.store.append(run_id, kind, data)
        self.recorded(event)
        return event

    def recorded(self, event: Event) -> None:
        """Tell the log, telemetry, listeners and anchoring about an event that is stored: one
        ``record`` stored, or one ``insert_event`` stored in a caller's transaction that
        committed."""
        run_id, kind, data = event.run_id, event.kind, event.data
        level = logging.INFO if kind in _MILESTONES else logging.DEBUG
        if _log.isEnabledFor(level):
            _log.log(level, "run %s #%d %s %s", run_id, event.seq, kind, _brief(data))
        telemetry.note(run_id, kind, data)
        for listener in self.listeners:
            listener(event)
        if kind != "checkpoint" and self.anchoring.enabled:
            self._unanchored = True
            if event.seq % self.anchoring.every == 0:
                self.anchor()

    def events(self, run_id: str | None = None, after: int = 0) -> list[Event]:
        return list(self.store.events(run_id, after))

    def runs(self) -> list[str]:
        """Run ids in the order they started."""
        return [e.run_id for e in self.store.events() if e.kind == "run_started"]

    def head(self) -> Head:
        """The last event's seq and hash (``Head(0, GENESIS)`` for an empty journal)."""
        if isinstance(self.store, _HasHead):
            return self.store.head()
        last = None
        for last in self.store.events():  # noqa: B007  (only the last one is wanted)
            pass
        return Head(last.seq, last.hash) if last else Head(0, GENESIS)

    def signed_head(self) -> Anchor:
        """The head as an anchor: with the MAC when ``anchoring`` has a key."""
        return Anchor.of(self.head(), self.anchoring.key)

    def anchor(self, file: str | Path | None = None) -> Anchor:
        """Anchor the head now: with a key, record a ``checkpoint`` event (the head and its
        MAC); then append the (new) head to ``file``, or to ``anchoring.file``, if any."""
        with self._anchor_lock:
            key = self.anchoring.key
            if key is not None:
                self.record(CHECKPOINT_RUN, "checkpoint", checkpoint_data(self.head(), key))
            anchor = self.signed_head()
            target = file if file is not None else self.anchoring.file
            if target is not None:
                append_anchor(target, anchor)
            self._unanchored = False
            return anchor

    def close(self) -> None:
        """Anchor the head if events were recorded since the last anchor (when anchoring is
        configured), then close the store's connection."""
        if self._unanchored:
            self.anchor()
        if isinstance(self.store, _Closable):
            self.store.close()

    def verify(
        self, anchor: str | Path | Iterable[Anchor] | None = None, key: bytes | None = None
    ) -> VerifyReport:
        """Recompute the hash chain. With ``anchor`` (an anchor file, or anchors) and/or
        ``key``, also check the anchors against the chain (a truncated tail, a rewritten chain)
        and, with the key, every ``checkpoint`` event's MAC (``check_anchored``)."""
        if anchor is None and key is None:
            return verify_events(self.store.events())
        anchors = read_anchors(anchor) if isinstance(anchor, str | Path) else list(anchor or ())
        return check_anchored(self.events(), anchors, key)


def _brief(data: dict[str, Any]) -> str:
    """An event's data in one short line for the log (the journal holds all of it)."""
    keys = ("step", "tool", "status", "error_kind", "error", "by", "reason", "attempt")
    return " ".join(f"{k}={data[k]!r}"[:120] for k in keys if data.get(k) is not None)
