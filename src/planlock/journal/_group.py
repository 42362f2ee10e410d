"""Group commit for the SQL journals: events recorded during one turn of the event loop are
appended in one transaction (one lock, one head read, one COMMIT), and the chain is the same
as if they had been appended one by one.

The guarantee is the one of a commit per event: an event a caller *waits* for
(``Journal.commit``) is durable when the wait returns, and so is every event recorded before it
(a batch is appended in order, all or none). The walk waits for the ``step_started`` of a
side-effecting tool before it calls the tool, so the call's record, and every outcome recorded
before it (the outputs it reads), are durable before the side effect. Outcomes
(``Journal.defer``: ``step_finished``...) and the start of a read-only step (which runs again if
its record is lost) do not wait: they are durable at the next commit anyone waits for, or after
``WINDOW`` seconds at most, and listeners see them only then. A step's outcome is therefore
durable before any side effect that depends on it, and before the run reports it
(``run_finished`` waits).

Threads that append at once (``Journal.record`` from a server's request threads, or several
workers) are grouped too: each queues its events and waits for the writer lock; whoever gets it
commits every queued event in one transaction (its own and the others', in the order they were
queued), and the others find theirs committed when they get the lock (leader and followers).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from planlock.journal._events import Event
from planlock.journal._stores import Pending

if TYPE_CHECKING:
    import asyncio

__all__ = ["WINDOW", "Group"]

_Waiter = tuple["asyncio.AbstractEventLoop", "asyncio.Future[None]", int]
"""A caller waiting for its event to be durable: its loop, its future, its loop's thread."""

WINDOW = 0.002
"""How long at most an event nobody waits for stays in memory before its batch is committed."""


class Group:
    """The pending batch of one journal, and when and by whom it is committed.

    ``append(events) -> list[Event]`` commits a batch (the store's ``append_many``);
    ``published(events)`` runs after each commit (logging, listeners). Every method may be called
    from any thread; the timers and the waiters live on the event loop that recorded the events.
    """

    def __init__(
        self,
        append: Callable[[list[Pending]], list[Event]],
        published: Callable[[list[Event]], None],
    ) -> None:
        self._append = append
        self._published = published
        self.lock = threading.RLock()
        """Held while a batch is taken and committed: one writer at a time, in order."""
        self._pending: list[Pending] = []
        self._waiters: list[_Waiter] = []
        self._soon: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
        """Loops with a flush scheduled at the end of their current turn."""
        self._timer: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
        """Loops with a flush scheduled within ``WINDOW``."""
        self._lost: BaseException | None = None
        self._queue_lock = threading.Lock()
        """Guards ``_queued`` and ``_lost`` (held only for a moment, never while committing)."""
        self._queued: list[_Ticket] = []
        """Threads' events waiting for whoever commits next (``flush(extra)``)."""

    def add(self, item: Pending, loop: asyncio.AbstractEventLoop, wait: bool) -> Any:
        """Queue ``item``; with ``wait``, return a future done when it is durable."""
        with self.lock:
            self._raise_lost()
            self._pending.append(item)
            future = None
            if wait:
                future = loop.create_future()
                self._waiters.append((loop, future, threading.get_ident()))
                if loop not in self._soon:  # at the end of this turn: whoever records joins in
                    self._soon.add(loop)
                    loop.call_soon(self._scheduled, self._soon, loop)
            elif loop not in self._timer:
                self._timer.add(loop)
                loop.call_later(WINDOW, self._scheduled, self._timer, loop)
            return future

    def _scheduled(self, flag: weakref.WeakSet[asyncio.AbstractEventLoop], loop: Any) -> None:
        with self.lock:
            flag.discard(loop)
        try:
            self.flush()
        except Exception:  # reported to the waiters; kept for the next caller when none
            return

    def flush(self, extra: list[Pending] | None = None) -> list[Event]:
        """Commit what is pending (and ``extra`` after it) in one transaction; return the
        events of ``extra``. On failure every waiter of the batch gets the error. ``extra`` from
        several threads at once is committed together, by whichever gets the lock first."""
        if not extra:
            with self.lock:
                self._commit([], raising=True)
            return []
        ticket = _Ticket(extra)
        with self._queue_lock:
            lost, self._lost = self._lost, None
            if lost is None:
                self._queued.append(ticket)
        if lost is not None:
            raise RuntimeError(f"journal events recorded earlier were not committed: {lost}")
        with self.lock:
            if not ticket.done:  # nobody committed it meanwhile: commit every queued ticket
                with self._queue_lock:
                    tickets, self._queued = self._queued, []
                self._commit(tickets, raising=False)
        if ticket.error is not None:
            raise ticket.error
        return ticket.events

    def _commit(self, tickets: list[_Ticket], *, raising: bool) -> None:
        """Append the pending events, then the tickets' (with ``self.lock`` held)."""
        batch, waiters = self._pending, self._waiters
        self._pending, self._waiters = [], []
        items = batch + [item for t in tickets for item in t.items]
        if not items:
            return
        try:
            events = self._append(items)
        except BaseException as exc:
            _settle(waiters, exc)
            for t in tickets:
                t.error, t.done = exc, True
            if not waiters and not tickets:  # nobody else hears of it: the next writer will
                with self._queue_lock:
                    self._lost = exc
            if raising:
                raise
            return
        _settle(waiters, None)
        pos = len(batch)
        for t in tickets:
            t.events, t.done = events[pos : pos + len(t.items)], True
            pos += len(t.items)
        self._published(events)

    def _raise_lost(self) -> None:
        """Events nobody waited for could not be committed: say so to the next writer."""
        with self._queue_lock:
            lost, self._lost = self._lost, None
        if lost is not None:
            raise RuntimeError(f"journal events recorded earlier were not committed: {lost}")


class _Ticket:
    """One thread's events for ``Group.flush``: done (with its events, or the error) once
    whoever held the writer lock committed them."""

    __slots__ = ("done", "error", "events", "items")

    def __init__(self, items: list[Pending]) -> None:
        self.items = items
        self.done = False
        self.events: list[Event] = []
        self.error: BaseException | None = None


def _settle(waiters: list[_Waiter], exc: BaseException | None) -> None:
    here = threading.get_ident()
    for loop, future, thread in waiters:

        def done(future: asyncio.Future[None] = future) -> None:
            if not future.done():  # a waiter that was cancelled has gone
                if exc is None:
                    future.set_result(None)
                else:
                    future.set_exception(exc)
                    future.exception()  # it is raised to the waiter; never "not retrieved"

        if thread == here:
            done()
        else:
            loop.call_soon_threadsafe(done)
