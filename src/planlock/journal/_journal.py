"""The journal (R10): record events, read them, verify the chain. Stores hold JSON only."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from planlock import telemetry
from planlock.core import canonical_json
from planlock.db import redact
from planlock.errors import UsageError
from planlock.journal._anchor import (
    CHECKPOINT_RUN,
    Anchor,
    Anchoring,
    append_anchor,
    check_anchored,
    checkpoint_data,
    read_anchors,
)
from planlock.journal._events import (
    EVENT_KINDS,
    GENESIS,
    Event,
    Head,
    VerifyReport,
    now,
    verify_events,
)
from planlock.journal._group import Group
from planlock.journal._stores import JournalStore, MemoryStore, Pending, open_store

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
        self._group = Group(self._append_many, self._published)
        self._grouped = bool(getattr(self.store, "group_commit", False))

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
        """Append one event now: it is durable when this returns (with the events recorded
        before it and not yet committed, in the same transaction, in order)."""
        if not self._grouped:
            event = self.store.append(run_id, kind, data)
            telemetry.note(run_id, kind, data)
            self._published([event])
            return event
        item = _pending(run_id, kind, data)
        telemetry.note(run_id, kind, data)
        return self._group.flush([item])[0]

    async def commit(self, run_id: str, kind: str, data: dict[str, Any]) -> None:
        """Record an event and wait until it is durable. With an SQL store, the events recorded
        during the same turn of the event loop are committed together (group commit, see
        ``planlock.journal._group``); otherwise this is ``record``."""
        loop = self._loop()
        if loop is None:
            self.record(run_id, kind, data)
            return
        item = _pending(run_id, kind, data)
        telemetry.note(run_id, kind, data)  # here: in the span of the step that recorded it
        await self._group.add(item, loop, wait=True)

    def defer(self, run_id: str, kind: str, data: dict[str, Any]) -> None:
        """Record an event without waiting for it to be durable: it is at the next ``commit``
        or ``record`` (of any run), or within ``_group.WINDOW`` seconds. For outcomes, whose
        durability something later waits for (the next step's start, the run's end)."""
        loop = self._loop()
        if loop is None:
            self.record(run_id, kind, data)
            return
        item = _pending(run_id, kind, data)
        telemetry.note(run_id, kind, data)
        self._group.add(item, loop, wait=False)

    def flush(self) -> None:
        """Commit every event recorded and not yet durable."""
        self._group.flush()

    def _loop(self) -> Any:
        """The running asyncio loop when events can be grouped; None to append at once."""
        if not self._grouped or self.anchoring.enabled:
            return None  # anchoring counts every event as it is appended
        import asyncio  # noqa: PLC0415  (imported on first use: `import planlock` stays light)

        try:
            return asyncio.get_running_loop()
        except RuntimeError:
            return None

    def _append_many(self, events: list[Pending]) -> list[Event]:
        return self.store.append_many(events)  # type: ignore[attr-defined, no-any-return]

    def recorded(self, event: Event) -> None:
        """Tell telemetry, the log, listeners and anchoring about an event stored by
        ``insert_event`` in a caller's transaction that committed."""
        telemetry.note(event.run_id, event.kind, event.data)
        self._published([event])

    def _published(self, events: list[Event]) -> None:
        """After events are appended: log them, tell listeners, anchor when due. (Spans hear
        of an event when it is recorded, in the recording task's context.)"""
        listeners, anchoring = self.listeners, self.anchoring.enabled
        if not listeners and not anchoring and not _log.isEnabledFor(logging.INFO):
            return  # nobody to tell (DEBUG is below INFO: no log line either)
        for event in events:
            kind, data, run_id = event.kind, event.data, event.run_id
            level = logging.INFO if kind in _MILESTONES else logging.DEBUG
            if _log.isEnabledFor(level):
                _log.log(level, "run %s #%d %s %s", run_id, event.seq, kind, _brief(data))
            for listener in listeners:
                listener(event)
            if kind != "checkpoint" and anchoring:
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
        self.flush()
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


_KINDS = frozenset(EVENT_KINDS)


def _pending(run_id: str, kind: str, data: dict[str, Any]) -> Pending:
    """An event to append, checked and serialized now: a bad one fails its own caller, not the
    batch it would have joined."""
    if kind not in _KINDS:
        raise UsageError(f"unknown event kind '{kind}'")
    return (run_id, kind, data, now(), canonical_json(data))


def _brief(data: dict[str, Any]) -> str:
    """An event's data in one short line for the log (the journal holds all of it)."""
    keys = ("step", "tool", "status", "error_kind", "error", "by", "reason", "attempt")
    return " ".join(f"{k}={data[k]!r}"[:120] for k in keys if data.get(k) is not None)
